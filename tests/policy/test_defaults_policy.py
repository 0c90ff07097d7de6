"""`defaults:` in policy files (policy/defaultspec.py) and in the plan (policy/plan.judge_body):
what the loader refuses, with the file's line, and what each rollout mode does with them.
"""

from __future__ import annotations

import json

import pytest

from dockgate.auth.identity import ANONYMOUS_IDENTITY, BASIC, Identity
from dockgate.body import gojson
from dockgate.check import admissions_for, parse_head
from dockgate.http.request import RequestHead
from dockgate.observe.audit import injected_fields
from dockgate.ownership.operations import OWNER_LABEL
from dockgate.policy.loader import PolicyError, parse_policy_text
from dockgate.policy.plan import HoldBody, JudgedBody, Trace, judge_body, plan_request
from dockgate.policy.rules import PolicySet
from dockgate.refusal import Refusal
from dockgate.startup.doctor import policy_facts

MIB = 1024 * 1024


def policy_file(defaults: str, extra: str = "") -> str:
    return (
        "policies:\n  p:\n    rules: [{allow: {sections: ['*']}}]\n"
        + extra
        + "    defaults:\n"
        + "".join(f"      {line}\n" for line in defaults.splitlines())
    )


@pytest.mark.parametrize(
    ("defaults", "extra", "problem"),
    [
        ("memory: 5m", "", "memory must be at least 6m"),
        ("memory: lots", "", "is not a size"),
        ("memory: 2g", "    guardrails: {max_memory: 1g}\n", "over the guardrails' max_memory"),
        ("cpus: 0.001", "", "cpus must be at least 0.01"),
        ("cpus: 4", "    guardrails: {max_cpus: 2}\n", "over the guardrails' max_cpus"),
        ("pids: 0", "", "pids must be a positive number"),
        ("labels: {io.dockgate.owner: x}", "", "labels under io.dockgate. are dockgate's"),
        ("labels: {a: x}\nforce_labels: {a: y}", "", "is in labels and force_labels"),
        (
            "force_labels: {team: ops}",
            "    guardrails: {required_labels: {team: 'web-*'}}\n",
            "does not match the guardrails' required_labels pattern",
        ),
        ("log_options: {max-size: 1m}", "", "log_options need a log_driver"),
        ("force_log_driver: true", "", "force_log_driver needs a log_driver"),
        ("log_driver: none", "    ownership: true\n", "the build steps' driver"),
        ("cgroup_parent: ''", "", "cgroup_parent must be a cgroup path"),
        ("pids: '10'", "", "pids"),
        ("no_such_default: 1", "", "no_such_default"),
    ],
)
def test_the_loader_refuses_defaults_that_could_not_hold(
    defaults: str, extra: str, problem: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(policy_file(defaults, extra), "p.yaml")
    assert problem in str(caught.value)
    assert caught.value.line is not None


def test_docker_sizes_and_integers_are_read_as_bytes() -> None:
    for text, expected in (("512m", 512 * MIB), ("1.5g", 1536 * MIB), ("67108864", 64 * MIB)):
        policies = parse_policy_text(policy_file(f"memory: {text}"), "p.yaml")
        defaults = policies.policies["p"].defaults
        assert defaults is not None and defaults.memory == expected


def test_empty_defaults_are_none() -> None:
    policies = parse_policy_text(policy_file("labels: {}"), "p.yaml")
    assert policies.policies["p"].defaults is None


# ----- the plan ---------------------------------------------------------------------------------

DEFAULTS = "labels: {team: web}\nmemory: 64m\nno_new_privileges: true"


def create(body: bytes) -> RequestHead:
    lines = [
        "POST /v1.41/containers/create HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    return parse_head(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


def judged(
    policies: PolicySet, body: bytes, who: Identity = ANONYMOUS_IDENTITY
) -> tuple[Refusal | JudgedBody, Trace]:
    head = create(body)
    admission = admissions_for(policies, credentials_required=False).judge(head, who, "127.0.0.1")
    step = plan_request(head, admission, policies.owners)
    assert isinstance(step, HoldBody)
    trace: Trace = []
    return judge_body(step, body, trace), trace


BODY = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": False}}).encode()


def labels_of(body: bytes) -> dict[str, object] | None:
    parsed = gojson.parse(body)
    assert isinstance(parsed, gojson.GoObject)
    return gojson.mapping((parsed,), "Labels")


@pytest.mark.parametrize("mode", ["enforce", "warn"])
def test_enforce_and_warn_mode_write_the_defaults(mode: str) -> None:
    policies = parse_policy_text(policy_file(DEFAULTS, f"    mode: {mode}\n"), "p.yaml")
    result, trace = judged(policies, BODY)
    assert isinstance(result, JudgedBody)
    assert labels_of(result.body) == {"team": "web"}
    assert result.allowed.injected == {
        "labels": {"team": "web"},
        "memory": 64 * MIB,
        "no_new_privileges": True,
    }
    assert injected_fields(result.allowed) == {"injected": result.allowed.injected}
    assert ("defaults", "added labels team=web; memory 67108864; no new privileges true") in trace


def test_audit_mode_writes_nothing_and_records_what_it_would() -> None:
    """Audit mode: the request reaches the daemon as it came (modes.py); the record's
    `would_inject` says what enforce would have written."""
    policies = parse_policy_text(policy_file(DEFAULTS, "    mode: audit\n"), "p.yaml")
    result, trace = judged(policies, BODY)
    assert isinstance(result, JudgedBody)
    assert result.body == BODY
    fields = injected_fields(result.allowed)
    assert list(fields) == ["would_inject"] and fields["would_inject"] is not None
    assert trace[-1][0] == "defaults" and trace[-1][1].startswith("audit mode: would add")


def test_without_guardrails_the_body_is_still_held_for_the_defaults() -> None:
    policies = parse_policy_text(policy_file(DEFAULTS, "    guardrails: false\n"), "p.yaml")
    result, _ = judged(policies, BODY)
    assert isinstance(result, JudgedBody) and labels_of(result.body) == {"team": "web"}


def test_a_body_the_guardrails_refuse_gets_no_defaults() -> None:
    """The caller's body is judged first, as it came: a privileged create is refused for what
    it asked, not helped along."""
    policies = parse_policy_text(policy_file(DEFAULTS), "p.yaml")
    body = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()
    result, trace = judged(policies, body)
    assert isinstance(result, Refusal) and result.status == 403
    assert not any(step == "defaults" for step, _ in trace)


def test_the_owner_label_survives_the_defaults() -> None:
    policies = parse_policy_text(policy_file(DEFAULTS, "    ownership: true\n"), "p.yaml")
    result, _ = judged(policies, BODY, Identity("alice", BASIC))
    assert isinstance(result, JudgedBody)
    assert labels_of(result.body) == {OWNER_LABEL: "user:alice", "team": "web"}


GUARDED = (
    "    guardrails:\n"
    "      max_memory: 128m\n"
    "      required_labels: {team: '*'}\n"
    "      require_no_new_privileges: true\n"
)


def test_the_guardrails_judge_the_body_with_its_defaults() -> None:
    """A caller that sets no memory limit, no required label and no no-new-privileges passes
    guardrails that require them when the defaults give them: what is judged is what runs."""
    policies = parse_policy_text(policy_file(DEFAULTS, GUARDED), "p.yaml")
    result, trace = judged(policies, BODY)
    assert isinstance(result, JudgedBody)
    assert ("guardrails", "body accepted") in trace
    assert labels_of(result.body) == {"team": "web"}


def test_a_callers_own_value_is_still_judged_as_it_came() -> None:
    """A caller's own limit above the maximum is kept by the defaults, so refused; a caller's
    no-new-privileges=false is taken out before the guardrails see it."""
    policies = parse_policy_text(policy_file(DEFAULTS, GUARDED), "p.yaml")
    over = json.dumps({"Image": "busybox", "HostConfig": {"Memory": 256 * MIB}}).encode()
    result, _ = judged(policies, over)
    assert isinstance(result, Refusal) and result.status == 403
    assert "a memory limit of at most 134217728 bytes is required" in result.message
    off = {"Image": "busybox", "HostConfig": {"SecurityOpt": ["no-new-privileges=false"]}}
    passed, _ = judged(policies, json.dumps(off).encode())
    assert isinstance(passed, JudgedBody)


def test_audit_mode_judges_with_the_defaults_but_forwards_the_body_as_it_came() -> None:
    """What audit mode records is what enforce would decide (the defaults judged with the
    body), while nothing is written."""
    policies = parse_policy_text(policy_file(DEFAULTS, GUARDED + "    mode: audit\n"), "p.yaml")
    result, _ = judged(policies, BODY)
    assert isinstance(result, JudgedBody)
    assert result.body == BODY and result.allowed.verdict.would_deny is None


def test_doctor_names_the_defaults_of_each_policy() -> None:
    policies = parse_policy_text(policy_file(DEFAULTS), "p.yaml")
    (row,) = policy_facts(policies, authenticated=False).rows
    assert row.defaults == "labels team=web; memory 67108864; no new privileges true"
    plain = parse_policy_text("policies:\n  p:\n    rules: [{allow: {sections: ['*']}}]\n", "p")
    assert policy_facts(plain, authenticated=False).rows[0].defaults == ""
