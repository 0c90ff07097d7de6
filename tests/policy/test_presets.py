"""Presets (`preset: NAME`) and `extends: NAME` in policy files: every shipped preset loads and
says what it is; how a policy built on another merges, key by key; the mistakes (unknown names,
cycles, a preset taken whole and changed) are loader errors at their line."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from dockgate.api.routes import OPERATIONS, RouteMatch
from dockgate.policy.loader import PolicyError, parse_policy_text
from dockgate.policy.presetfiles import preset_names, read_preset
from dockgate.policy.rules import Policy
from support.paths import REPO

SRC = REPO / "src"

# The presets a test here proves with the real client, and that test.
PROVEN = {
    "traefik": "tests/clients/test_preset_traefik.py",
    "prometheus": "tests/clients/test_preset_prometheus.py",
    "traefik-swarm": "tests/clients/test_preset_swarm_clients.py",
    "prometheus-swarm": "tests/clients/test_preset_swarm_clients.py",
    "testcontainers": "tests/clients/test_preset_testcontainers.py",
    "act": "tests/clients/test_preset_act.py",
    "docker-compose": "tests/clients/test_preset_compose.py",
}
NOT_PROVEN = "From documentation, not proven here"


def _policy(text: str, name: str = "p", *, toml: bool = False) -> Policy:
    return parse_policy_text(text, "test.yaml", toml=toml).policies[name]


def _allows(policy: Policy, operation: str) -> bool:
    op = OPERATIONS[operation]
    return policy.decide(op.method, RouteMatch(op, None, {}), op.path).allowed


def _error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, "test.yaml")
    return caught.value


def test_the_presets_of_the_issue_are_shipped() -> None:
    """The proven presets and those written from documentation are all there (a rename
    would empty the tests below)."""
    assert set(preset_names()) >= {
        "traefik",
        "traefik-swarm",
        "prometheus",
        "prometheus-swarm",
        "portainer",
        "watchtower",
        "homepage",
        "dozzle",
        "gitlab-runner",
        "act",
        "testcontainers",
        "docker-compose",
    }


@pytest.mark.parametrize("name", preset_names())
def test_each_preset_is_a_whole_policy_and_says_what_it_is(name: str) -> None:
    """`policies: {x: {preset: NAME}}` loads; the header names the client, the versions and
    the API calls, and says either which test proves it or that it is from documentation."""
    policy = _policy(f"policies:\n  p: {{preset: {name}}}\n")
    assert policy.rules
    preset = read_preset(name)
    assert preset is not None
    header = "\n".join(preset.header)
    assert "Client:" in header and "API calls:" in header, header
    if name in PROVEN:
        assert preset.proven and NOT_PROVEN not in header
        assert PROVEN[name] in header
        assert (REPO / PROVEN[name]).is_file()
    else:
        assert not preset.proven and NOT_PROVEN in header, header


@pytest.mark.parametrize("name", sorted(set(PROVEN) - {"testcontainers", "act", "docker-compose"}))
def test_the_proven_read_only_presets_allow_no_write(name: str) -> None:
    """The discovery clients only read: no operation that changes anything is allowed."""
    policy = _policy(f"policies:\n  p: {{preset: {name}}}\n")
    assert policy.read_only
    writes = [op for op, o in OPERATIONS.items() if o.writes and _allows(policy, op)]
    assert writes == []


# What each proven client asked for through a wide policy (the audit log, docs/presets.md),
# plus the image pulls the library's code makes when an image is missing (no registry here).
USED = {
    "traefik": "SystemPingHead SystemVersion ContainerList ContainerInspect SystemEvents",
    "prometheus": "SystemPingHead ContainerList NetworkList",
    "traefik-swarm": "SystemPingHead SystemVersion ServiceList TaskList NetworkList NodeInspect",
    "prometheus-swarm": "SystemPingHead ServiceList TaskList NodeList NetworkList",
    "testcontainers": "SystemVersion ContainerCreate ContainerStart ContainerInspect "
    "ContainerLogs ContainerDelete ContainerExec ExecStart ExecInspect  ImageCreate ImageInspect",
    "act": "SystemPingHead SystemVersion SystemInfo ImageInspect ContainerList ContainerCreate "
    "ContainerStart ContainerDelete PutContainerArchive ContainerArchive ContainerExec ExecStart "
    "ExecInspect VolumeList VolumeDelete  ImageCreate",
}


@pytest.mark.parametrize("name", sorted(USED))
def test_a_proven_preset_is_exactly_what_its_client_used(name: str) -> None:
    """No whole sections and nothing more: widening a proven preset means proving it again
    (docker-compose's documented second rule is the exception, said in its header)."""
    policy = _policy(f"policies:\n  p: {{preset: {name}}}\n")
    allowed = {op for op in OPERATIONS if _allows(policy, op)}
    assert allowed == set(USED[name].split())


def test_a_preset_name_is_never_a_path() -> None:
    """`extends: ../../x` reads no file: names are checked before anything is opened."""
    for name in ("../traefik", "traefik.yaml", "/etc/passwd", "Traefik", ""):
        assert read_preset(name) is None


# ----- mistakes: loader errors at their line --------------------------------------------------


def test_unknown_preset_is_an_error_at_its_line() -> None:
    error = _error("policies:\n  p:\n    preset: traefk\n")
    assert error.line == 3
    assert "preset 'traefk'" in error.problem and "traefik" in error.problem


def test_unknown_extends_is_an_error_at_its_line() -> None:
    error = _error("policies:\n  p:\n    rules: []\n    extends: nothing\n")
    assert error.line == 4
    assert "no policy of this file and no preset" in error.problem


def test_a_preset_taken_whole_cannot_be_changed() -> None:
    """`preset:` with rules (or read_only, guardrails, redact, ownership) is refused, pointing
    at `extends:`."""
    error = _error(
        "policies:\n  p:\n    preset: traefik\n"
        "    rules:\n      - allow: {operations: [ImageList]}\n"
    )
    assert error.line == 4
    assert "extends: traefik" in error.problem
    error = _error("policies:\n  p:\n    preset: traefik\n    read_only: false\n")
    assert error.line == 4


def test_preset_and_extends_together_are_refused() -> None:
    error = _error("policies:\n  p:\n    preset: traefik\n    extends: prometheus\n")
    assert error.line == 4


def test_a_cycle_of_extends_is_an_error_naming_it() -> None:
    error = _error(
        "default: a\npolicies:\n  a: {extends: b}\n  b: {extends: c}\n  c:\n    extends: a\n"
    )
    assert "a -> b -> c -> a" in error.problem
    assert error.line is not None


def test_a_policy_extending_its_own_name_means_the_preset() -> None:
    """`traefik: {extends: traefik}` is the natural way to write it: the preset, no cycle."""
    policy = _policy(
        "policies:\n  traefik:\n    extends: traefik\n"
        "    rules:\n      - allow: {operations: [NetworkList]}\n",
        "traefik",
    )
    assert _allows(policy, "NetworkList") and _allows(policy, "ContainerList")


# ----- how keys merge ----------------------------------------------------------------------


def test_extends_puts_own_rules_first_then_the_bases() -> None:
    """Own rules are numbered first; the inherited ones follow, explained by the line they
    were written at (the base policy's) or by the `extends:` line for a preset's."""
    text = (
        "default: child\npolicies:\n"
        "  base:\n"
        "    rules:\n"
        "      - allow: {operations: [ImageList]}\n"  # line 5
        "  child:\n"
        "    extends: base\n"
        "    rules:\n"
        "      - allow: {operations: [VolumeList]}\n"  # line 9
        "  other:\n"
        "    extends: prometheus\n"  # line 11
    )
    policies = parse_policy_text(text, "test.yaml").policies
    child = policies["child"]
    assert [(r.number, r.line) for r in child.rules] == [(1, 9), (2, 5)]
    assert _allows(child, "ImageList") and _allows(child, "VolumeList")
    assert not _allows(policies["base"], "VolumeList")
    assert [r.line for r in policies["other"].rules] == [11]


def test_a_deny_of_the_base_still_wins_over_an_own_allow() -> None:
    """Denies win over allows whatever their order (rules.py): extending adds, it does not
    reopen what the base denies."""
    policy = _policy(
        "policies:\n  p:\n    extends: gitlab-runner\n"
        "    rules:\n      - allow: {operations: [ContainerPrune, SecretList, ImageSearch]}\n"
    )
    assert not _allows(policy, "ContainerPrune") and not _allows(policy, "SecretList")
    assert _allows(policy, "ImageSearch") and _allows(policy, "ContainerCreate")


def test_own_keys_override_and_guardrails_merge_key_by_key() -> None:
    """`read_only` is the policy's own when given; `guardrails:` keys given replace the base's
    (a list whole), the others stay the base's; `redact:` likewise."""
    base = _policy("policies:\n  p: {preset: gitlab-runner}\n")
    assert base.guardrails is not None and base.guardrails.require_no_new_privileges
    policy = _policy(
        "policies:\n  p:\n    extends: gitlab-runner\n"
        "    guardrails:\n"
        "      host_paths: [{path: /srv/ci-cache, read_only: true}]\n"
        "      max_memory: 4g\n"
    )
    guardrails = policy.guardrails
    assert guardrails is not None
    assert [(r.prefix, r.read_only) for r in guardrails.host_paths] == [("/srv/ci-cache", True)]
    assert guardrails.max_memory == 4 * 1024**3
    assert guardrails.require_no_new_privileges  # the preset's, kept
    assert guardrails.network_drivers == frozenset()

    dozzle = _policy("policies:\n  p:\n    extends: dozzle\n    redact: {mounts: true}\n")
    assert dozzle.redaction.env and dozzle.redaction.mounts  # env the preset's, mounts own
    opened = _policy("policies:\n  p:\n    extends: dozzle\n    read_only: false\n")
    assert not opened.read_only and dozzle.read_only


def test_guardrails_false_replaces_the_bases_whole() -> None:
    policy = _policy("policies:\n  p:\n    extends: gitlab-runner\n    guardrails: false\n")
    assert policy.guardrails is None
    assert _policy("policies:\n  p: {preset: gitlab-runner}\n").guardrails is not None


def test_a_chain_of_extends_in_the_file() -> None:
    """c extends b extends the traefik preset: each adds its rules, all are kept."""
    text = (
        "default: c\npolicies:\n"
        "  b:\n    extends: traefik\n    rules:\n      - allow: {operations: [NetworkList]}\n"
        "  c:\n    extends: b\n    rules:\n      - allow: {operations: [ImageList]}\n"
    )
    policy = _policy(text, "c")
    for operation in ("ImageList", "NetworkList", "ContainerList", "SystemEvents"):
        assert _allows(policy, operation), operation
    assert policy.read_only and policy.redaction.env


def test_the_rollout_mode_is_never_inherited_but_limits_are() -> None:
    """b (warn, with limits) is extended by c: c takes b's rules and limits, not its mode; a
    policy taking a preset whole may still say its own mode."""
    text = (
        "default: c\npolicies:\n"
        "  b:\n    extends: traefik\n    mode: warn\n    limits: {rate: 5}\n"
        "  c:\n    extends: b\n"
        "  d:\n    preset: traefik\n    mode: audit\n"
    )
    policies = parse_policy_text(text, "test.yaml").policies
    assert policies["b"].mode == "warn"
    assert policies["c"].mode == "enforce"
    assert policies["c"].limits is not None and policies["c"].limits.rate == 5
    assert policies["d"].mode == "audit"


def test_toml_files_take_presets_too() -> None:
    policy = _policy('[policies.p]\npreset = "prometheus"\n', toml=True)
    assert _allows(policy, "NetworkList") and not _allows(policy, "ContainerInspect")


def test_a_preset_policy_can_be_bound() -> None:
    """A preset policy is a policy like any other: bindings name it."""
    text = (
        "policies:\n  traefik: {preset: traefik}\n  prom: {preset: prometheus}\n"
        "bindings:\n  - {policy: traefik, users: [t]}\n  - {policy: prom, users: [p]}\n"
    )
    policies = parse_policy_text(text, "test.yaml")
    assert set(policies.policies) == {"traefik", "prom"}


def test_presets_are_package_data() -> None:
    """The wheel carries them: pyproject's package data names the directory they are in."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"dockgate.policy" = ["presets/*.yaml"]' in pyproject
    directory = REPO / "src" / "dockgate" / "policy" / "presets"
    assert {p.stem for p in directory.glob("*.yaml")} == set(preset_names())


# ----- the command line: what a preset is and what it expands to ------------------------------


def _dockgate(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "dockgate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_policy_presets_lists_each_with_its_proof() -> None:
    listed = _dockgate("policy", "presets")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines() if line.strip()}
    for name in preset_names():
        assert name in rows
        assert ("proven" in rows[name].split()) == (name in PROVEN), rows[name]


def test_policy_presets_name_shows_the_file_and_what_it_allows() -> None:
    shown = _dockgate("policy", "presets", "prometheus")
    assert shown.returncode == 0, shown.stderr
    assert "- NetworkList" in shown.stdout
    assert '# allows: policy "prometheus": read: containers (some)' in shown.stdout
    missing = _dockgate("policy", "presets", "nope")
    assert missing.returncode == 1 and "no preset 'nope'" in missing.stderr


def test_check_says_what_the_policy_was_built_on(tmp_path: pathlib.Path) -> None:
    """`dockgate check` names the preset, and the deciding rule's line is the `preset:` line."""
    policy = tmp_path / "p.yaml"
    policy.write_text("# Traefik\npolicies:\n  traefik:\n    preset: traefik\n")
    checked = _dockgate("check", "--policy", str(policy), "GET /v1.41/containers/json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"policy:    traefik (from {policy}; preset traefik)" in checked.stdout
    assert "(line 4)" in checked.stdout, checked.stdout
    denied = _dockgate("check", "--policy", str(policy), "POST /v1.41/containers/create")
    assert denied.returncode == 1, denied.stdout


def test_doctor_says_what_each_policy_was_built_on(tmp_path: pathlib.Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "default: ci\npolicies:\n  base: {extends: gitlab-runner}\n  ci: {extends: base}\n"
    )
    policies = parse_policy_text(policy.read_text(), str(policy)).policies
    assert policies["base"].basis == "extends preset gitlab-runner"
    assert policies["ci"].basis == "extends base, extends preset gitlab-runner"
    report = _dockgate(
        "doctor", "--policy", str(policy), "--listen", "unix:///tmp/dg-presets-doctor.sock"
    )
    assert "ci: (extends base, extends preset gitlab-runner)" in report.stdout, report.stdout


def test_a_policy_extending_itself_without_such_a_preset_is_told_so() -> None:
    error = _error("policies:\n  mine:\n    extends: mine\n")
    assert error.line == 3
    assert "cannot extend itself" in error.problem


def test_a_toml_inline_preset_explains_its_rules_by_a_line() -> None:
    """TOML keeps no positions: an inline table's rule still gets a line of the file."""
    text = 'default = "a"\n[policies]\na = {preset = "traefik"}\nb = {extends = "a"}\n'
    policies = parse_policy_text(text, "test.toml", toml=True).policies
    assert all(rule.line is not None for rule in policies["b"].rules)
    assert policies["b"].basis == "extends a, preset traefik"


def test_a_broken_preset_is_an_error_naming_its_file_and_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A preset that does not parse (say, edited in an installed copy) stops the load with the
    preset's own file and line, not a line of the policy file."""
    from dockgate.policy import loader  # noqa: PLC0415
    from dockgate.policy.presetfiles import PresetFile  # noqa: PLC0415

    broken = PresetFile("x", "preset x (/p/x.yaml)", "# x\nread_only: true\nrulez: []\n")
    monkeypatch.setattr(loader, "read_preset", lambda name: broken if name == "x" else None)
    with pytest.raises(PolicyError) as caught:
        parse_policy_text("policies:\n  p: {preset: x}\n", "test.yaml")
    assert caught.value.source == "preset x (/p/x.yaml)"
    assert caught.value.line == 3 and "rulez" in caught.value.problem
