"""Rollout modes (src/dockgate/policy/modes.py), pure: the policy file's `mode:` keys, and what
admission and the plan make of a refusal in warn and audit mode. The gateway carries these
plans out; tests/policy/test_rollout_modes_e2e.py shows it with the docker CLI and the daemon.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from dockgate.auth.identity import ANONYMOUS_IDENTITY, BASIC, Identity
from dockgate.check import admissions_for, parse_head
from dockgate.cli import main
from dockgate.http.request import RequestHead
from dockgate.observe.audit import AuditRecord, render
from dockgate.observe.metrics import RequestCounts
from dockgate.observe.metrics import render as render_metrics
from dockgate.observe.modefields import mode_fields
from dockgate.policy.loader import PolicyError, parse_policy_text
from dockgate.policy.plan import (
    Answer,
    Forward,
    HoldBody,
    JudgedBody,
    Step,
    answer_handling,
    judge_body,
    plan_request,
)
from dockgate.policy.rules import PolicySet
from dockgate.refusal import Refusal

POLICY = """\
bindings:
  - {policy: strict, users: [erin]}
  - {policy: strict, users: [wanda], mode: warn}
  - {policy: trial, users: [walt]}
  - {policy: trial, users: [eve], mode: enforce}
  - {policy: owned, users: [olga]}
  - {policy: watched, users: [aude]}
  - {policy: owned, anonymous: true}
policies:
  strict:
    read_only: true
    rules:
      - allow: {sections: [containers, volumes, ping]}
      - deny: {operations: [ContainerLogs]}
  trial:
    mode: warn
    redact: {env: true}
    rules:
      - allow: {sections: [containers, volumes, ping]}
  owned:
    mode: warn
    ownership: true
    rules:
      - allow: {sections: ["*"]}
  watched:
    mode: audit
    ownership: true
    rules:
      - allow: {sections: ["*"]}
"""

ERIN, WANDA = Identity("erin", BASIC), Identity("wanda", BASIC)
WALT, EVE = Identity("walt", BASIC), Identity("eve", BASIC)
OLGA, AUDE = Identity("olga", BASIC), Identity("aude", BASIC)
PRIVILEGED = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return parse_policy_text(POLICY, "policy.yaml")


def head(
    method: str, target: str, body: bytes | None = None, content_type: str = ""
) -> RequestHead:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    if body is not None:
        lines.append(f"Content-Type: {content_type or 'application/json'}")
        lines.append(f"Content-Length: {len(body)}")
    return parse_head(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))


def plan(policies: PolicySet, request: RequestHead, who: Identity) -> Step:
    admission = admissions_for(policies, credentials_required=False).judge(
        request, who, "127.0.0.1"
    )
    return plan_request(request, admission, policies.owners)


# ----- the file ---------------------------------------------------------------------------------


def test_modes_are_read_per_policy_and_per_binding(policies: PolicySet) -> None:
    """A policy without `mode:` enforces; a binding's mode is its policy in that mode, for the
    callers it binds only."""
    assert policies.policies["strict"].mode == "enforce"
    assert policies.policies["trial"].mode == "warn"
    assert policies.policy_for(ERIN, "x").mode == "enforce"  # type: ignore[union-attr]
    assert policies.policy_for(WANDA, "x").mode == "warn"  # type: ignore[union-attr]
    assert policies.policy_for(EVE, "x").mode == "enforce"  # type: ignore[union-attr]
    assert policies.policy_for(WALT, "x") is policies.policies["trial"]


def test_an_unknown_mode_is_an_error_at_its_line() -> None:
    text = "policies:\n  p:\n    mode: lenient\n    rules: []\n"
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, "p.yaml")
    assert caught.value.line == 3 and "mode" in caught.value.problem


def test_startup_names_every_policy_and_binding_not_enforcing(policies: PolicySet) -> None:
    lines = policies.mode_warnings(audited=False)
    assert any(line.startswith("policy 'trial' is in warn mode") for line in lines)
    assert any(line.startswith("policy 'watched' is in audit mode") for line in lines)
    assert any(line.startswith("binding 2 (policy 'strict') is in warn mode") for line in lines)
    assert not any("binding 4" in line for line in lines)  # eve: enforce, no warning
    assert "--audit-log is off" in lines[-1]
    only_enforcing = parse_policy_text("policies: {p: {rules: []}}\n", "p.yaml")
    assert only_enforcing.mode_warnings(audited=False) == []


# ----- admission and the plan ---------------------------------------------------------------


def test_a_rule_denial_in_warn_mode_is_forwarded_carrying_it(policies: PolicySet) -> None:
    request = head("DELETE", "/v1.41/volumes/v")
    enforced = plan(policies, request, ERIN)
    assert isinstance(enforced, Refusal) and enforced.reason == "read-only"
    step = plan(policies, request, WANDA)
    assert isinstance(step, Forward) and step.head is request
    verdict = step.allowed.verdict
    assert verdict.allowed and verdict.would_deny == enforced
    assert verdict.label == "warn:strict:read-only" and verdict.decision == "warn"


def test_a_deny_rule_in_warn_mode_names_the_rule(policies: PolicySet) -> None:
    step = plan(policies, head("GET", "/v1.41/containers/x/logs"), WANDA)
    assert isinstance(step, Forward)
    assert step.allowed.verdict.label == "warn:strict:rule-2"


def test_what_is_not_the_policys_is_enforced_in_warn_mode(policies: PolicySet) -> None:
    """The route table cannot place it; a form body; a browser's cross-site request; an
    upgrade of an operation that cannot switch protocols: refused in every mode."""
    unknown = plan(policies, head("GET", "/v1.41/nothing/here"), WALT)
    assert isinstance(unknown, Refusal) and unknown.status == 403
    form = head("POST", "/v1.41/containers/create", b"a=b", "application/x-www-form-urlencoded")
    shaped = plan(policies, form, WALT)
    assert isinstance(shaped, Refusal) and (shaped.status, shaped.stage) == (400, "content")
    raw = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil\r\n\r\n"
    browser = plan(policies, parse_head(raw), WALT)
    assert isinstance(browser, Refusal) and browser.stage == "browser"


def test_a_body_the_guardrails_refuse_is_forwarded_in_warn_mode(policies: PolicySet) -> None:
    step = plan(policies, head("POST", "/v1.41/containers/create", PRIVILEGED), WALT)
    assert isinstance(step, HoldBody)
    judged = judge_body(step, PRIVILEGED)
    assert isinstance(judged, JudgedBody) and judged.body == PRIVILEGED
    refusal = judged.allowed.verdict.would_deny
    assert refusal is not None and refusal.stage == "guardrails" and "privileged" in refusal.reason
    assert judged.allowed.verdict.label == "warn:trial:guardrails"
    # The same body, for eve (bound to the same policy in enforce mode): refused.
    enforced = plan(policies, head("POST", "/v1.41/containers/create", PRIVILEGED), EVE)
    assert isinstance(enforced, HoldBody)
    assert judge_body(enforced, PRIVILEGED) == refusal


def test_a_body_the_daemon_would_misread_is_refused_in_warn_mode(policies: PolicySet) -> None:
    body = b'{"Image": "busybox"} {"HostConfig": {"Privileged": true}}'
    step = plan(policies, head("POST", "/v1.41/containers/create", body), WALT)
    assert isinstance(step, HoldBody)
    refused = judge_body(step, body)
    assert isinstance(refused, Refusal) and refused.status == 400


def test_warn_mode_rewrites_no_answer_and_says_what_it_would_hide(policies: PolicySet) -> None:
    step = plan(policies, head("GET", "/v1.41/containers/x/json"), WALT)
    assert isinstance(step, Forward)
    assert step.allowed.redaction is None
    assert answer_handling(step.allowed, 200) is Answer.RELAY
    assert step.allowed.would_hide == ["env"]
    enforced = plan(policies, head("GET", "/v1.41/containers/x/json"), EVE)
    assert isinstance(enforced, Forward)
    assert answer_handling(enforced.allowed, 200) is Answer.HOLD
    assert enforced.allowed.would_hide == []


def test_ownership_in_warn_mode_labels_creates_but_narrows_no_list(policies: PolicySet) -> None:
    listed = plan(policies, head("GET", "/v1.41/containers/json"), OLGA)
    assert isinstance(listed, Forward) and listed.head.target == "/v1.41/containers/json"
    assert listed.allowed.would_hide == ["objects of other owners"]
    body = json.dumps({"Image": "busybox"}).encode()
    step = plan(policies, head("POST", "/v1.41/containers/create", body), OLGA)
    assert isinstance(step, HoldBody)
    judged = judge_body(step, body)
    assert isinstance(judged, JudgedBody)
    assert b"user:olga" in judged.body and judged.allowed.verdict.would_deny is None


def test_ownership_refusals_are_recorded_in_warn_mode(policies: PolicySet) -> None:
    """An anonymous caller owns nothing: enforce refuses it what concerns objects; warn lets
    it through, recorded."""
    step = plan(policies, head("POST", "/v1.41/containers/x/stop"), ANONYMOUS_IDENTITY)
    assert isinstance(step, Forward)
    refusal = step.allowed.verdict.would_deny
    assert refusal is not None and refusal.stage == "ownership"
    assert step.allowed.verdict.label == "warn:owned:ownership"


def test_audit_mode_forwards_a_create_as_it_came(policies: PolicySet) -> None:
    body = json.dumps({"Image": "busybox", "Labels": {"a": "b"}}).encode()
    step = plan(policies, head("POST", "/v1.41/containers/create", body), AUDE)
    assert isinstance(step, HoldBody)
    judged = judge_body(step, body)
    assert isinstance(judged, JudgedBody) and judged.body == body and not judged.needs_daemon


# ----- what is recorded -------------------------------------------------------------------------


def test_the_audit_record_and_the_metric_carry_the_would_deny(policies: PolicySet) -> None:
    step = plan(policies, head("DELETE", "/v1.41/volumes/v"), WANDA)
    assert isinstance(step, Forward)
    allowed = step.allowed
    record = AuditRecord(
        0.0, "wanda", "basic", "", "127.0.0.1", "127.0.0.1:1", "DELETE", "/v1.41/volumes/v",
        "VolumeDelete", "v", True, "strict", "", 204, 0, 0, 0.0,
        **mode_fields(allowed.policy, allowed.verdict, allowed),
    )  # fmt: skip
    line = json.loads(render(record))
    assert line["mode"] == "warn" and line["decision"] == "allow"
    assert line["would_deny"]["reason"] == "read-only"
    assert line["would_deny"]["stage"] == "policy" and line["would_deny"]["status"] == 403
    counts = RequestCounts()
    refusal = allowed.verdict.would_deny
    assert refusal is not None
    counts.record_would_deny("strict", "VolumeDelete", refusal)
    text = render_metrics(RequestCounts.from_json(counts.to_json()), 1).decode()
    expected = (
        'dockgate_would_deny_total{operation="VolumeDelete",policy="strict",reason="read-only"} 1.0'
    )
    assert expected in text


def test_an_enforcing_policys_audit_record_is_as_before(policies: PolicySet) -> None:
    step = plan(policies, head("GET", "/v1.41/containers/json"), ERIN)
    assert isinstance(step, Forward)
    assert mode_fields(step.allowed.policy, step.allowed.verdict, step.allowed) == {}


# ----- dockgate check ---------------------------------------------------------------------------


def test_check_says_the_gateway_forwards_and_what_it_records(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Check answers what the gateway does: forward (exit 0), with the refusal recorded."""
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    code = main(["check", "--policy", str(path), "--as", "user:wanda", "DELETE", "/volumes/v"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mode:      warn" in out
    assert "warn:      would deny, 403: dockgate: VolumeDelete denied by policy strict" in out
    assert "decision:  allow (warn:strict:read-only)" in out
    code = main(["check", "--policy", str(path), "--as", "user:erin", "DELETE", "/volumes/v"])
    assert code == 1
