"""In-process admission (policy/admission.py) for tests: request heads, an `Admissions` on a policy
with a throttle on a fake clock, and the admission of one head, password check included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dockgate.auth.authenticator import Authenticator
from dockgate.auth.htpasswd import Htpasswd
from dockgate.auth.identity import (
    ANONYMOUS_IDENTITY,
    Identity,
)
from dockgate.auth.sourceaddr import AddressList, parse_address_list
from dockgate.auth.throttle import FailureThrottle, ThrottleSettings
from dockgate.auth.tokens import Tokens
from dockgate.http.request import RequestHead, parse_head
from dockgate.policy.admission import Admission, Admissions, ConnectionFacts, PendingAdmission
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.rules import PolicySet

POLICY = """\
sources:
  deny: [192.0.2.0/24]
groups:
  ops: [carol]
bindings:
  - policy: admin
    users: [alice]
  - policy: readonly
    users: [bob]
  - policy: ci
    tokens: [ci-runner]
  - policy: admin
    groups: [ops]
    sources: {allow: [10.50.0.0/16]}
  - policy: admin
    certificates: [deploy]
    sources: {allow: [10.50.0.0/16]}
policies:
  admin:
    rules:
      - allow: {sections: ["*"]}
  readonly:
    read_only: true
    rules:
      - allow: {sections: ["*"]}
  ci:
    rules:
      - allow: {sections: [images]}
"""


LIST = "/v1.41/containers/json"


CLIENT = "198.51.100.7"


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def head(
    method: str = "GET",
    target: str = LIST,
    authorization: str | None = None,
    forwarded_for: Iterable[str] = (),
) -> RequestHead:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    lines.extend(f"X-Forwarded-For: {value}" for value in forwarded_for)
    return parse_head(("\r\n".join(lines) + "\r\n\r\n").encode())


def admissions(
    authenticator: Authenticator,
    policy: str = POLICY,
    *,
    trusted: AddressList | None = None,
    settings: ThrottleSettings | None = None,
    clock: FakeClock | None = None,
    proxy_protocol: bool = False,
) -> Admissions:
    policies: PolicySet = parse_policy_text(policy, "test.yaml")
    return Admissions(
        policies,
        Gatekeeper(policies, authenticated=authenticator.required),
        authenticator,
        FailureThrottle(settings or ThrottleSettings(3, 5, 60.0), clock or FakeClock()),
        trusted if trusted is not None else parse_address_list(["10.0.0.0/24"]),
        proxy_protocol=proxy_protocol,
    )


def facts(source: str = CLIENT, certificate: Identity | None = None) -> ConnectionFacts:
    return ConnectionFacts(source, source, certificate)


def admit(
    gate: Admissions, request: RequestHead, conn: ConnectionFacts | None = None, now: float = 0.0
) -> Admission:
    """The admission, after the password check when one runs (in the pool, on a loop)."""

    async def admitted() -> Admission:
        found = gate.admit(request, conn or facts(), now)
        if isinstance(found, PendingAdmission):
            await asyncio.wait([found.future])
            return found.admission()
        return found

    return asyncio.run(admitted())


def assert_refused(
    admission: Admission, status: int, message: str, label: str, reason: str
) -> None:
    verdict = admission.verdict
    assert not verdict.allowed
    assert (verdict.status, verdict.message, verdict.label, verdict.reason) == (
        status,
        message,
        label,
        reason,
    )
    assert verdict.operation == "-"
    assert verdict.policy is None


def throttled_gate(
    htpasswd: Htpasswd, tokens: Tokens, per_source: int = 3, per_user: int = 5
) -> tuple[Admissions, FakeClock]:
    clock = FakeClock()
    gate = admissions(
        Authenticator(htpasswd, tokens),
        settings=ThrottleSettings(per_source, per_user, 60.0),
        clock=clock,
    )
    return gate, clock


def assert_throttled(admission: Admission, retry_after: int) -> None:
    assert admission.identity == ANONYMOUS_IDENTITY
    assert admission.retry_after == retry_after
    assert_refused(
        admission,
        429,
        "dockgate: too many failed attempts; try again later",
        "deny:-:throttled",
        "throttled",
    )
