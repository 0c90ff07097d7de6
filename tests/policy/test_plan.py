"""The pure plan (src/dockgate/policy/plan.py): one request head and its admission in, one step
out, without any I/O. The gateway carries these steps out and `dockgate check` prints them, so
these tests pin the decisions both share; tests/policy/test_check_differential.py checks that the
gateway's answers on the wire agree.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from dockgate.auth.identity import ANONYMOUS_IDENTITY, BASIC, Identity
from dockgate.check import admissions_for, parse_head
from dockgate.http.request import RequestHead, without_body
from dockgate.policy.admission import Admission
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.plan import (
    Answer,
    DrainBody,
    Forward,
    HoldBody,
    JudgedBody,
    LookUp,
    Step,
    answer_handling,
    judge_body,
    judge_drained,
    plan_admitted,
    plan_request,
)
from dockgate.policy.rules import PolicySet
from dockgate.refusal import Refusal

POLICY = """\
version: 1
bindings:
  - {policy: guarded, users: [alice]}
  - {policy: owned, users: [olga]}
  - {policy: owned, anonymous: true}
  - {policy: hidden, users: [hana]}
  - {policy: readonly, users: [rita]}
policies:
  guarded:
    rules:
      - allow: {sections: ["*"]}
  owned:
    ownership: true
    rules:
      - allow: {sections: ["*"]}
  hidden:
    redact: {env: true, labels: true}
    rules:
      - allow: {sections: ["*"]}
  readonly:
    read_only: true
    rules:
      - allow: {sections: [containers]}
"""

ALICE = Identity("alice", BASIC)
OLGA = Identity("olga", BASIC)


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


def admit(policies: PolicySet, request: RequestHead, who: Identity = ALICE) -> Admission:
    admissions = admissions_for(policies, credentials_required=False)
    return admissions.judge(request, who, "127.0.0.1")


def plan(policies: PolicySet, request: RequestHead, who: Identity = ALICE) -> Step:
    return plan_request(request, admit(policies, request, who), policies.owners)


def test_a_policy_denial_is_the_admissions_refusal(policies: PolicySet) -> None:
    step = plan(policies, head("POST", "/v1.41/containers/x/stop"), Identity("rita", BASIC))
    assert isinstance(step, Refusal)
    assert (step.status, step.stage) == (403, "policy")
    assert "ContainerStop" in step.message


def test_a_plain_read_is_forwarded_as_it_is(policies: PolicySet) -> None:
    request = head("GET", "/v1.41/containers/json")
    step = plan(policies, request)
    assert isinstance(step, Forward) and step.head is request and step.replayable


def test_a_form_body_is_refused_whatever_the_operation(policies: PolicySet) -> None:
    request = head("POST", "/v1.41/containers/create", b"a=b", "application/x-www-form-urlencoded")
    step = plan(policies, request)
    assert isinstance(step, Refusal)
    assert (step.status, step.stage) == (400, "content")


def test_a_body_the_handler_never_reads_is_drained_then_judged(policies: PolicySet) -> None:
    """ContainerStart reads no body from API 1.24 on; below it, a HostConfig that replaces the
    container's: drained, and refused unless it is empty JSON."""
    request = head("POST", "/v1.41/containers/x/start", b'{"Binds": ["/:/host"]}')
    step = plan(policies, request)
    assert isinstance(step, DrainBody)
    refused = judge_drained(step.allowed, b'{"Binds": ["/:/host"]}')
    assert isinstance(refused, Refusal) and refused.status == 403
    assert judge_drained(step.allowed, b"{}") is None
    after = plan_admitted(without_body(step.head), step.allowed)
    assert isinstance(after, (HoldBody, Forward))


def test_a_create_is_held_and_judged_by_the_guardrails(policies: PolicySet) -> None:
    body = json.dumps({"Image": "busybox", "HostConfig": {"Privileged": True}}).encode()
    step = plan(policies, head("POST", "/v1.41/containers/create", body))
    assert isinstance(step, HoldBody) and step.guardrails is not None
    refused = judge_body(step, body)
    assert isinstance(refused, Refusal)
    assert refused.status == 403 and refused.stage == "guardrails"
    assert refused.message.startswith("dockgate: ContainerCreate denied by policy guarded: ")
    fine = json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode()
    judged = judge_body(step, fine)
    assert isinstance(judged, JudgedBody) and judged.body == fine and not judged.needs_daemon


def test_a_declared_length_over_the_limit_is_refused_before_reading(policies: PolicySet) -> None:
    raw = b"POST /v1.41/containers/create HTTP/1.1\r\nHost: localhost\r\n"
    raw += b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n"
    step = plan(policies, parse_head(raw))
    assert isinstance(step, Refusal) and step.status == 413


def test_a_query_checked_operation_is_decided_on_its_head(policies: PolicySet) -> None:
    step = plan(policies, head("POST", "/v1.41/build?networkmode=host"))
    assert isinstance(step, Refusal) and step.status == 403 and step.stage == "guardrails"


def test_ownership_narrows_lists_and_looks_up_named_objects(policies: PolicySet) -> None:
    listed = plan(policies, head("GET", "/v1.41/containers/json"), OLGA)
    assert isinstance(listed, Forward)
    assert "io.dockgate.owner" in listed.head.target
    inspected = plan(policies, head("GET", "/v1.41/containers/web/json"), OLGA)
    assert isinstance(inspected, LookUp)
    assert inspected.objects.references == ("web",) and inspected.objects.status == 404


def test_ownership_labels_a_create_and_asks_about_its_image(policies: PolicySet) -> None:
    body = json.dumps({"Image": "busybox"}).encode()
    step = plan(policies, head("POST", "/v1.41/containers/create", body), OLGA)
    assert isinstance(step, HoldBody)
    judged = judge_body(step, body)
    assert isinstance(judged, JudgedBody)
    assert b"io.dockgate.owner" in judged.body and judged.check_image


def test_anonymous_callers_own_nothing(policies: PolicySet) -> None:
    step = plan(policies, head("GET", "/v1.41/containers/json"), ANONYMOUS_IDENTITY)
    assert isinstance(step, Refusal) and step.status == 403 and step.stage == "ownership"
    pinged = plan(policies, head("GET", "/_ping"), ANONYMOUS_IDENTITY)
    assert isinstance(pinged, Forward)


def test_a_label_filter_is_refused_where_labels_are_hidden(policies: PolicySet) -> None:
    who = Identity("hana", BASIC)
    target = "/v1.41/containers/json?filters=" + quote('{"label":["secret=1"]}')
    step = plan(policies, head("GET", target), who)
    assert isinstance(step, Refusal) and step.stage == "redaction"
    listed = plan(policies, head("GET", "/v1.41/containers/json"), who)
    assert isinstance(listed, Forward)
    assert answer_handling(listed.allowed, 200) is Answer.HOLD
    assert answer_handling(listed.allowed, 404) is Answer.RELAY
    events = plan(policies, head("GET", "/v1.41/events"), who)
    assert isinstance(events, Forward)
    assert answer_handling(events.allowed, 200) is Answer.REWRITE_STREAM


def test_nothing_is_held_without_redaction_or_ownership(policies: PolicySet) -> None:
    step = plan(policies, head("GET", "/v1.41/containers/json"))
    assert isinstance(step, Forward)
    assert answer_handling(step.allowed, 200) is Answer.RELAY
