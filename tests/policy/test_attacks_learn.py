"""Attacks on `dockgate learn` (issue 15) by a caller whose requests reach the audit log: the
learned policy must grant no more than the recorded session did, to no one else.

Each record is handmade as observe/audit.py writes it; the effect of a learned policy is shown
by the gateway's own decision code (`learndiff.diff`, as `dockgate check` decides) on a request
the session never sent. The five findings (each was a strict xfail) are fixed; their tests and
the attacks that held pass."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from dockgate.body.guardrails import BodyRefused, Guardrails, HostPathRule, check_request
from dockgate.observe.audit import MAX_STRING_CHARS, body_details
from dockgate.policy.learn import Learner
from dockgate.policy.learndiff import PARTIAL_BODY, diff
from dockgate.policy.loader import load_policy_file
from dockgate.policy.rules import PolicySet


def rec(operation: str, method: str, path: str, **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "identity": "mallory",
        "auth": "basic",
        "source": "10.0.0.9",
        "peer": "10.0.0.9:4000",
        "method": method,
        "path": path,
        "operation": operation,
        "decision": "allow",
        "status": 201,
    }
    record.update(extra)
    return record


def create(**details: object) -> dict[str, object]:
    return rec("ContainerCreate", "POST", "/v1.41/containers/create", details=details)


def learn(
    records: list[dict[str, object]], tmp_path: pathlib.Path, **kw: str
) -> tuple[str, PolicySet]:
    learner = Learner()
    for record in records:
        learner.add(record)
    text = learner.document(**kw)
    path = tmp_path / "learned.yaml"
    path.write_text(text)
    return text, load_policy_file(str(path))  # valid, as `dockgate policy validate` says


def allowed(policies: PolicySet, record: dict[str, object]) -> bool:
    """Allowed by `policies`, as far as the record shows (a create's body passes on its
    recorded fields: learn --policy counts it apart, PARTIAL_BODY)."""
    result = diff([record], policies)
    assert result.decided == 1
    return result.allowed == 1 or PARTIAL_BODY in result.undecided


# ----- findings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("image", ["*.*/*", "*", "[a-z]*/*"])
def test_an_image_name_with_wildcards_is_not_learned_as_a_pattern(
    tmp_path: pathlib.Path, image: str
) -> None:
    seen = create(image="busybox:1.36")
    bogus = {**create(image=image), "status": 400}
    also = {**create(image=image), "status": 201}  # (not learned either, whatever its status)
    _, policies = learn([seen, bogus, also], tmp_path)
    if image == "*.*/*":
        validate = [sys.executable, "-m", "dockgate", "policy", "validate"]
        proc = subprocess.run(
            [*validate, str(tmp_path / "learned.yaml")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert allowed(policies, create(image="busybox:1.36"))  # what the session ran
    never = "ghcr.io/evil/miner:1" if "." in image else "docker.io/library/ubuntu:24.04"
    if image == "[a-z]*/*":
        never = "docker.io/evil/miner:1"
    assert not allowed(policies, create(image=never))


def test_one_harmless_device_does_not_open_every_device(tmp_path: pathlib.Path) -> None:
    """(Found: one create asking for /dev/null learned `devices: true`, which then passed
    /dev/sda. `devices` opens every device or none, so learn now leaves it closed and says
    why in a comment: the operator decides.)"""
    document, policies = learn([create(image="busybox", devices=["/dev/null"])], tmp_path)
    assert not allowed(policies, create(image="busybox", devices=["/dev/sda"]))
    assert "/dev/null" in document and "devices: false" in document


def test_learn_policy_does_not_count_as_allowed_what_the_gateway_refuses(
    tmp_path: pathlib.Path,
) -> None:
    """(Found: learn --policy rebuilt a create from the audited fields only and counted it
    allowed, where the gateway refuses its SecurityOpt; now counted as not decided here.)"""
    current = tmp_path / "current.yaml"
    current.write_text(
        "policies:\n  ci:\n    rules:\n      - allow: {operations: [ContainerCreate]}\n"
        "bindings:\n  - {policy: ci, users: [mallory]}\n"
    )
    body = b'{"Image": "busybox", "HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}'
    with pytest.raises(BodyRefused):  # what the gateway does with the real body
        check_request(Guardrails(), "ContainerCreate", "", body)
    # ...and what the audit log keeps of it (body_details has no security options)
    record = create(**(body_details("ContainerCreate", body, False) or {}))
    result = diff([record], load_policy_file(str(current)))
    assert result.allowed == 0, "reported allowed, refused by the gateway"


# ----- attacks that held ------------------------------------------------------------------------

_BREAKOUTS = [
    "x\ndefault: evil",
    "x\u2028bindings: [{policy: p, anonymous: true}]",
    "x\x85  - {policy: mallory, anonymous: true}",
    "x\u2029y",
    "x\ry",
    "x\x00y",
    'x"]}, {policy: mallory, anonymous: true',
    "x # c",
    "x: y",
    "\ufeffx",
    "x\ud800y",
]


@pytest.mark.parametrize("evil", _BREAKOUTS)
def test_client_text_cannot_add_keys_bindings_or_rules(tmp_path: pathlib.Path, evil: str) -> None:
    records = [
        rec("SystemPing", "GET", "/_ping", identity=evil, user_agent=evil),
        rec("SystemPing", "GET", "/_ping", user_agent=evil),
        rec("unknown", "GET", "/v1.41/x" + evil),
        create(
            image="busybox",
            binds=[f"/srv/{evil}:/a:ro"],
            devices=[f"/dev/{evil}"],
            cap_add=[evil],
        ),
        rec("ContainerExec", "POST", "/v1.41/containers/c/exec", details={"user": evil}),
        rec("ContainerStart", "POST", "/v1.41/containers/x/start", object=evil),
        rec(
            "ContainerCreate",
            "POST",
            "/v1.41/containers/create",
            object=evil,
            details={"image": "busybox:" + evil},
        ),
    ]
    _, policies = learn(records, tmp_path)
    assert policies.default is None or policies.default == ""
    bound = sorted(
        (b.policy, sorted(b.users), sorted(b.certificates), b.anonymous) for b in policies.bindings
    )
    assert len(bound) == 2
    assert all(not anonymous for *_, anonymous in bound)
    assert sorted(users[0] for _, users, _, _ in bound) == sorted(["mallory", evil])
    # the caller named `evil` did only a ping
    other = next(name for name, users, _, _ in bound if users == [evil])
    assert len(policies.policies[other].rules) == 1
    assert not allowed(policies, create(image="busybox", binds=["/etc:/a"]))


def test_refused_requests_teach_nothing(tmp_path: pathlib.Path) -> None:
    refused = {
        **create(
            image="busybox",
            privileged=True,
            cap_add=["SYS_ADMIN"],
            binds=["/:/host"],
            namespaces=["pid"],
            devices=["/dev/sda"],
        ),
        "decision": "deny",
        "status": 403,
    }
    text, policies = learn([create(image="busybox"), refused], tmp_path)
    assert "privileged: false" in text
    assert "capabilities: []" in text
    assert "host_paths: []" in text
    assert "devices: false" in text
    for body in (
        {"privileged": True},
        {"cap_add": ["SYS_ADMIN"]},
        {"binds": ["/:/host"]},
        {"namespaces": ["pid"]},
    ):
        assert not allowed(policies, create(image="busybox", **body)), body


@pytest.mark.parametrize("source", ["/srv/data/", "/srv/data//", "/srv/./data"])
def test_host_paths_are_not_widened_by_their_spelling(tmp_path: pathlib.Path, source: str) -> None:
    _, policies = learn([create(image="busybox", binds=[f"{source}:/a:ro"])], tmp_path)
    assert allowed(policies, create(image="busybox", binds=["/srv/data:/a:ro"]))
    for never in ("/srv/database:/a:ro", "/srv:/a:ro", "/srv/data:/a", "/srv/data:/a:rw"):
        assert not allowed(policies, create(image="busybox", binds=[never])), never
    assert not allowed(
        policies,
        create(image="busybox", mounts=[{"type": "bind", "source": "/srv/data", "target": "/a"}]),
    )


def test_another_identity_is_not_merged_in(tmp_path: pathlib.Path) -> None:
    alice = {**create(image="busybox", privileged=True, binds=["/var/run:/r"]), "identity": "alice"}
    mine = create(image="busybox")
    _, policies = learn([alice, mine], tmp_path, only="mallory")
    assert [b.policy for b in policies.bindings] == ["mallory"]
    assert not allowed(policies, alice)
    assert not allowed(policies, create(image="busybox", privileged=True))
    # the certificate named like a password user is a different caller with its own policy
    cert = {**create(image="busybox", privileged=True), "auth": "certificate"}
    _, both = learn([cert, mine], tmp_path)
    assert not allowed(both, create(image="busybox", privileged=True))


def test_a_cut_bind_is_not_learned_read_write(tmp_path: pathlib.Path) -> None:
    # "/a/./././...": the daemon cleans the container path back to /a
    bind = "/srv/data:/a" + "/." * (MAX_STRING_CHARS // 2) + ":ro"
    body = json.dumps({"Image": "busybox", "HostConfig": {"Binds": [bind]}}).encode()
    # the gateway lets it through a policy where /srv/data is read-only: a read-only mount
    check_request(
        Guardrails(host_paths=(HostPathRule("/srv/data", read_only=True),)),
        "ContainerCreate",
        "",
        body,
    )
    record = create(**(body_details("ContainerCreate", body, False) or {}))
    _, policies = learn([record], tmp_path)
    assert not allowed(policies, create(image="busybox", binds=["/srv/data:/a"]))


def test_identity_selection_does_not_add_an_anonymous_binding(tmp_path: pathlib.Path) -> None:
    user = rec("SystemPing", "GET", "/_ping", identity="anonymous", auth="basic")
    stranger = {
        **create(image="busybox", privileged=True),
        "identity": "anonymous",
        "auth": "anonymous",
    }
    _, policies = learn([user, stranger], tmp_path, only="anonymous")
    assert not any(b.anonymous for b in policies.bindings)
    assert not allowed(policies, stranger)


def test_go_json_duplicates_are_learned_as_the_daemon_reads_them(tmp_path: pathlib.Path) -> None:
    """Last key wins, case-insensitively: the audit record says what the daemon ran."""
    body = (
        b'{"Image": "busybox", "HostConfig": {"Binds": ["/srv/x:/a:ro"], "binds": ["/srv/x:/a"],'
        b' "Privileged": false, "privileged": true}}'
    )
    details = body_details("ContainerCreate", body, False)
    assert details == {"image": "busybox", "binds": ["/srv/x:/a"], "privileged": True}
    text, _ = learn([create(**details)], tmp_path)
    assert "{path: /srv/x, read_only: false}" in text


def test_identities_that_sanitize_alike_keep_their_own_policies(tmp_path: pathlib.Path) -> None:
    ops = rec("SystemPing", "GET", "/_ping", identity="ops")
    twin = {**create(image="busybox", privileged=True), "identity": "ops."}
    dash = {**create(image="busybox", binds=["/:/h"]), "identity": "-ops"}
    _, policies = learn([twin, dash, ops], tmp_path)
    assert len({b.policy for b in policies.bindings}) == 3
    assert not allowed(policies, {**create(image="busybox", privileged=True), "identity": "ops"})
    assert not allowed(policies, {**create(image="busybox", binds=["/:/h"]), "identity": "ops"})
    assert not allowed(policies, {**create(image="busybox", privileged=True), "identity": "-ops"})
    assert allowed(policies, twin)
