"""Admission of one request: where it comes from, who sends it, which policy applies, and
that policy's verdict. Pure logic over the request head and what the connection knows; the
proxy does the I/O and the logging.

The order is fixed, and each step can refuse:

1. the source address (after a trusted X-Forwarded-For) must pass the global allow/deny lists
   (403), so a refused network never gets to try passwords;
2. credentials, when the request carries an Authorization header: throttled sources and user
   names get 429 without a check; wrong ones 401 (the same answer for an unknown user, a
   wrong password and an unknown token). Without the header, a verified client certificate
   names the caller; without either, the caller is anonymous, which is asked for credentials
   (401) where authentication is configured and no binding takes anonymous callers;
3. the binding: the first binding for this identity and source names the policy; none is 403;
4. the policy's verdict on the request (gatekeeper.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dockgate.auth.authenticator import Authenticator, claimed_user
from dockgate.auth.throttle import FailureThrottle
from dockgate.caching import remember
from dockgate.errors import ClientProtocolError
from dockgate.gatekeeper import Gatekeeper, Verdict
from dockgate.http.request import RequestHead
from dockgate.identity import ANONYMOUS_IDENTITY, NO_AUTH_IDENTITY, Identity
from dockgate.policy.rules import Policy, PolicySet
from dockgate.sourceaddr import AddressList, SourceRules, forwarded_client

# Source addresses whose verdict under the global lists is remembered (bounded).
SOURCE_CACHE_ENTRIES = 4096


@dataclass(slots=True)
class ConnectionFacts:
    """What a client connection knows about its caller before any request."""

    peer: str  # the connected peer's address, "unix" for the unix socket
    source: str  # the client's address: the peer, or what a trusted PROXY header said
    certificate: Identity | None = None  # from a verified client certificate
    # The last Authorization header that succeeded on this connection, with the credential
    # files' generation then: keep-alive clients repeat it on every request.
    remembered: tuple[bytes, int, Identity] | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    identity: Identity
    source: str
    retry_after: int | None = None  # seconds, for a 429
    policy: Policy | None = None  # the bound policy, once one decided


def _refusal(status: int, message: str, label: str, reason: str) -> Verdict:
    return Verdict(False, status, message, "-", label, reason=reason)


class Admissions:
    """Per-process admission state: policies, credentials, throttle, trusted proxies."""

    def __init__(
        self,
        policies: PolicySet,
        gatekeeper: Gatekeeper,
        authenticator: Authenticator,
        throttle: FailureThrottle,
        trusted_proxies: AddressList,
    ) -> None:
        self.policies = policies
        self.gatekeeper = gatekeeper
        self.authenticator = authenticator
        self.throttle = throttle
        self.trusted_proxies = trusted_proxies
        self._anonymous_bound = policies.bindings is not None and any(
            b.anonymous for b in policies.bindings
        )
        # Decided once: most deployments use neither, and the hot path then skips both.
        self._trusts_proxies = bool(trusted_proxies)
        self._source_rules = policies.sources if policies.sources else None
        self._permits: dict[str, bool] = {}

    def _permitted(self, rules: SourceRules, source: str) -> bool:
        permitted = self._permits.get(source)
        if permitted is None:
            permitted = rules.permits(source)
            remember(self._permits, source, permitted, SOURCE_CACHE_ENTRIES)
        return permitted

    def admit(self, head: RequestHead, facts: ConnectionFacts, now: float) -> Admission:
        source = facts.source
        if self._trusts_proxies and self.trusted_proxies.contains(source):
            forwarded = [v for n, v in head.headers() if n == b"x-forwarded-for"]
            if forwarded:
                try:
                    source = forwarded_client(source, forwarded, self.trusted_proxies)
                except ClientProtocolError as exc:
                    verdict = _refusal(400, f"dockgate: {exc.message}", "deny:-:bad-xff", "bad")
                    return Admission(verdict, NO_AUTH_IDENTITY, source)
        sources = self._source_rules
        if sources is not None and not self._permitted(sources, source):
            message = f"dockgate: requests from {source} are not allowed"
            verdict = _refusal(403, message, "deny:-:source", "source denied")
            return Admission(verdict, NO_AUTH_IDENTITY, source)

        identity, refusal = self._identify(head, facts, source, now)
        if refusal is not None:
            return refusal

        policy = self.policies.policy_for(identity, source)
        if policy is None:
            message = f"dockgate: no policy is bound to {identity.describe()}"
            if identity.authenticated:
                message += f" from {source}" if _has_source_rules(self.policies) else ""
            return Admission(
                _refusal(403, message, "deny:-:no-binding", "no binding"), identity, source
            )
        verdict = self.gatekeeper.check_cached(
            head.method,
            head.target,
            head.host,
            head.origin,
            head.upgrade_header,
            policy=policy,
            authenticated=identity.authenticated,
        )
        return Admission(verdict, identity, source, policy=policy)

    def _identify(
        self, head: RequestHead, facts: ConnectionFacts, source: str, now: float
    ) -> tuple[Identity, Admission | None]:
        authenticator = self.authenticator
        authorization = head.authorization
        if authorization is not None and authenticator.required:
            authenticator.refresh(now)
            remembered = facts.remembered
            if (
                remembered is not None
                and remembered[0] == authorization
                and remembered[1] == authenticator.generation
            ):
                return remembered[2], None
            user = claimed_user(authorization)
            wait = self.throttle.retry_after(source, user)
            if wait is not None:
                message = "dockgate: too many failed attempts; try again later"
                verdict = _refusal(429, message, "deny:-:throttled", "throttled")
                return ANONYMOUS_IDENTITY, Admission(
                    verdict, ANONYMOUS_IDENTITY, source, max(1, math.ceil(wait))
                )
            identity = authenticator.authenticate(authorization)
            if identity is None:
                self.throttle.failed(source, user)
                verdict = _refusal(
                    401,
                    "dockgate: invalid credentials",
                    "deny:-:unauthenticated",
                    "bad credentials",
                )
                return ANONYMOUS_IDENTITY, Admission(verdict, ANONYMOUS_IDENTITY, source)
            self.throttle.succeeded(user)
            facts.remembered = (authorization, authenticator.generation, identity)
            return identity, None
        if facts.certificate is not None:
            return facts.certificate, None
        if not authenticator.required:
            return NO_AUTH_IDENTITY, None
        if self._anonymous_bound and self.policies.binding_for(ANONYMOUS_IDENTITY, source):
            return ANONYMOUS_IDENTITY, None
        verdict = _refusal(
            401, "dockgate: authentication required", "deny:-:unauthenticated", "no credentials"
        )
        return ANONYMOUS_IDENTITY, Admission(verdict, ANONYMOUS_IDENTITY, source)


def _has_source_rules(policies: PolicySet) -> bool:
    return any(b.sources is not None for b in policies.bindings or ())
