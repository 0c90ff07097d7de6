"""Admission of one request: where it comes from, who sends it, which policy applies, and
that policy's verdict. Pure logic over the request head and what the connection knows; the
proxy does the I/O and the logging.

The order is fixed, and each step can refuse:

0. on a TLS connection, the client certificate must still be valid: not expired, its CA still
   in the client CA file as reloaded (auth/clientcerts.py); otherwise 401, and the connection ends
   after the answer;
1. the source address (after a trusted X-Forwarded-For, which is never read on a gateway with
   `--proxy-protocol`) must pass the global allow/deny lists (403), so a refused network never
   gets to try passwords;
2. credentials, when the request carries an Authorization header: throttled sources and user
   names get 429 without a check; wrong ones 401 (the same answer for an unknown user, a
   wrong password and an unknown token). A password that needs its hash checked is counted as
   a failure first, then checked in a worker thread (auth/checks.py): `admit` answers a
   `PendingAdmission`, and the connection waits for it, paused (503 when too many checks are
   already waiting). A password that succeeded before is decided at once. Without the
   header, a verified client certificate names the caller (401 when it names several: two
   CNs); without either, the caller is anonymous, which is asked for credentials (401) where
   authentication is configured and no binding takes anonymous callers;
   where bindings name unix-socket peers (container, service, uids, gids), a unix-socket
   caller without credentials is named by its peer: its container (a binding or 403, never
   the anonymous binding), or a host process a uid/gid binding names (others stay anonymous);
   a peer that could not be identified is refused (403, or 502 when the daemon could not be
   asked);
3. the binding: the first binding for this identity and source names the policy; none is 403;
4. the policy's verdict on the request (policy/gatekeeper.py).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from dockgate.auth.authenticator import Authenticator, PasswordCheck, claimed_user
from dockgate.auth.checks import CheckPool
from dockgate.auth.clientcerts import PeerCertificate, TrustSet
from dockgate.auth.identity import ANONYMOUS_IDENTITY, CONTAINER, NO_AUTH_IDENTITY, Identity
from dockgate.auth.sourceaddr import UNIX_SOURCE, AddressList, SourceRules, forwarded_client
from dockgate.auth.throttle import UNIX_UID_PREFIX, Charge, FailureThrottle
from dockgate.caching import remember
from dockgate.http.errors import ClientProtocolError
from dockgate.http.request import HEAD_CACHE_MAX_HEAD_BYTES, RequestHead
from dockgate.policy.gatekeeper import Gatekeeper, Verdict, refused_before_policy
from dockgate.policy.modes import ENFORCE, waive
from dockgate.policy.rules import Policy, PolicySet
from dockgate.refusal import Refusal

# Source addresses whose verdict under the global lists is remembered (bounded).
SOURCE_CACHE_ENTRIES = 4096
# Decisions past the caller's identification, remembered (bounded; see Admissions._decide).
ADMISSION_CACHE_ENTRIES = 4096


@dataclass(slots=True)
class ConnectionFacts:
    """What a client connection knows about its caller before any request."""

    peer: str  # the connected peer's address, "unix" for the unix socket
    source: str  # the client's address: the peer, or what a trusted PROXY header said
    certificate: Identity | None = None  # from a verified client certificate
    # A unix-socket client's uid (SO_PEERCRED): its throttle key, so that one local user's
    # failures do not throttle the others (they all have the source "unix").
    uid: int | None = None
    # The last Authorization header that succeeded on this connection, with the credential
    # files' generation then: keep-alive clients repeat it on every request.
    remembered: tuple[bytes, int, Identity] | None = None
    # The verified client certificate, checked again on every request (auth/clientcerts.py) ...
    peer_certificate: PeerCertificate | None = None
    # ... and why it names no one, when it is ambiguous (tls.SeveralNames).
    certificate_refusal: str | None = None
    # The last request without credentials admitted on this connection: the generation of
    # the `Admissions` that admitted it, its head, its source, and its admission
    # (`Admissions.admit`: a keep-alive client repeats its head).
    admitted: tuple[int, RequestHead, str, Admission] | None = None
    # A unix-socket client's caller as its peer names it (auth/peerlookup.py), once known:
    # its container, or a host process; or why its requests are refused (a peer that could
    # not be identified, a daemon that could not be asked). None: not identified (a TCP
    # client, or no binding names peers). Fixed for the connection's life, as SO_PEERCRED is.
    caller: Identity | Refusal | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    identity: Identity
    source: str
    policy: Policy | None = None  # the bound policy, once one decided
    close: bool = False  # end the connection after the answer (its certificate is no longer valid)

    @property
    def retry_after(self) -> int | None:
        """Seconds, for a 429 or 503: its refusal's Retry-After."""
        refusal = self.verdict.refusal
        return None if refusal is None else refusal.retry_after


@dataclass(slots=True)
class PendingAdmission:
    """A request waiting for its password check. Once `future` is done, `admission()` is the
    request's admission (the throttle and the success cache were settled by then, by a callback
    that runs whether or not the client is still connected)."""

    future: asyncio.Future[bool]
    _decide: Callable[[], Admission]

    def admission(self) -> Admission:
        return self._decide()


def _refusal(
    status: int, message: str, label: str, reason: str, retry_after: int | None = None
) -> Verdict:
    """`label` is `deny:-:STAGE`: refused before any policy decided."""
    stage = label.rsplit(":", 1)[-1]
    return refused_before_policy(Refusal(status, message, stage, reason, retry_after))


# A unix-socket caller asked about before its peer is identified (the relay waits for it first:
# only ever seen when a reload made bindings name peers, and never remembered).
PEER_PENDING = Refusal(
    503, "dockgate: the calling process is not identified yet", "peer", "peer pending", 1
)

# Each `Admissions` made (one per policy load) gets a number of its own, that a connection's
# remembered admission names rather than keep the object (and its policy set) alive.
_GENERATIONS = itertools.count(1)


class Admissions:
    """Per-process admission state: policies, credentials, throttle, trusted proxies."""

    def __init__(
        self,
        policies: PolicySet,
        gatekeeper: Gatekeeper,
        authenticator: Authenticator,
        throttle: FailureThrottle,
        trusted_proxies: AddressList,
        *,
        checks: CheckPool | None = None,
        proxy_protocol: bool = False,
        trust: Callable[[], TrustSet] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = policies
        self.gatekeeper = gatekeeper
        self.authenticator = authenticator
        self.throttle = throttle
        self.trusted_proxies = trusted_proxies
        self.checks = checks if checks is not None else CheckPool()
        # The client CA set in force (ServerTLS.trust), and the wall clock certificates expire by.
        self._trust = trust
        self._clock = clock
        self._anonymous_bound = policies.bindings is not None and any(
            b.anonymous for b in policies.bindings
        )
        # Unix-socket clients are named by their peer (relay/connection.py identifies it
        # before their first request is admitted).
        self.peer_bound = policies.names_peers
        # Decided once: most deployments use neither, and the hot path then skips both.
        # Behind --proxy-protocol the trusted proxies are layer-4 balancers, which never write
        # X-Forwarded-For: the header is the client's own, and is never read. The client's
        # address comes from the PROXY header alone; without one that names a client (v1
        # UNKNOWN, v2 LOCAL, v2 AF_UNSPEC or AF_UNIX) the source stays the proxy itself
        # (relay/connection.py, relay/tls.py), and its trust must not make the client's header
        # believed.
        self._trusts_proxies = bool(trusted_proxies) and not proxy_protocol
        self._source_rules = policies.sources if policies.sources else None
        self._permits: dict[str, bool] = {}
        # What _decide answered, by (head, caller, source): see there.
        self._decided: dict[tuple[int, int, str], tuple[RequestHead, Identity, Admission]] = {}
        self.generation = next(_GENERATIONS)

    def _permitted(self, rules: SourceRules, source: str) -> bool:
        permitted = self._permits.get(source)
        if permitted is None:
            permitted = rules.permits(source)
            remember(self._permits, source, permitted, SOURCE_CACHE_ENTRIES)
        return permitted

    def admit(
        self, head: RequestHead, facts: ConnectionFacts, now: float
    ) -> Admission | PendingAdmission:
        source = facts.source
        peer = facts.peer_certificate
        if peer is not None and self._trust is not None:
            problem = peer.problem(self._trust(), self._clock())
            if problem is not None:
                # Whatever else the request carries: the connection itself is no longer one a
                # handshake would accept now.
                message = f"dockgate: {problem}; connect again with a valid certificate"
                verdict = _refusal(401, message, "deny:-:unauthenticated", "certificate invalid")
                return Admission(verdict, ANONYMOUS_IDENTITY, source, close=True)
        if head.authorization is not None:
            return self._admit_valid(head, facts, source, now)
        # Without credentials, what follows is a pure function of this admission state
        # (policies, trusted proxies, source lists; none changes: a reload makes a new
        # `Admissions`), the head, and facts of the connection that never change (its source,
        # the certificate's identity or why it names none): remembered for the connection,
        # whose keep-alive client repeats the same head (the same object, http/request.py).
        # Only the check of the certificate above is done again each time.
        memo = facts.admitted
        if (
            memo is not None
            and memo[0] == self.generation
            and memo[1] is head
            and memo[2] == source
        ):
            return memo[3]
        admitted = self._admit_valid(head, facts, source, now)
        # (an Admission always, without a password to check; ordinary heads only, as in
        # every cache of heads: a connection keeps no large head for it)
        if (
            isinstance(admitted, Admission)
            and len(head.raw) <= HEAD_CACHE_MAX_HEAD_BYTES
            and admitted.verdict.refusal is not PEER_PENDING  # (it is known the next time)
        ):
            facts.admitted = (self.generation, head, source, admitted)
        return admitted

    def _admit_valid(
        self, head: RequestHead, facts: ConnectionFacts, source: str, now: float
    ) -> Admission | PendingAdmission:
        """`admit`, past the check of the connection's certificate."""
        if self._trusts_proxies and self.trusted_proxies.contains(source):
            forwarded = [v for n, v in head.headers() if n == b"x-forwarded-for"]
            if forwarded:
                try:
                    source = forwarded_client(source, forwarded, self.trusted_proxies)
                except ClientProtocolError as exc:
                    verdict = _refusal(400, f"dockgate: {exc.message}", "deny:-:bad-xff", "bad")
                    return Admission(verdict, NO_AUTH_IDENTITY, source)
        refused = self._source_refusal(source)
        if refused is not None:
            return refused
        identified = self._identify(head, facts, source, now)
        if isinstance(identified, Identity):
            return self._decide(head, identified, source)
        return identified

    def judge(self, head: RequestHead, identity: Identity, source: str) -> Admission:
        """`admit` for a caller already known (`dockgate check --as`): the source lists, the
        binding and the policy's verdict, decided by the same code as a live request."""
        return self._source_refusal(source) or self._decide(head, identity, source)

    def _source_refusal(self, source: str) -> Admission | None:
        sources = self._source_rules
        if sources is None or self._permitted(sources, source):
            return None
        message = f"dockgate: requests from {source} are not allowed"
        verdict = _refusal(403, message, "deny:-:source", "source denied")
        return Admission(verdict, NO_AUTH_IDENTITY, source)

    def _decide(self, head: RequestHead, identity: Identity, source: str) -> Admission:
        """The binding for the caller, then its policy's verdict: a pure function of the head,
        the caller and the source under this (immutable) policy set, remembered. A keep-alive
        client repeats the same head (the same object: http/request.py keeps parsed heads), so
        its requests cost one look-up. Keyed by the objects' identities, which stay unique
        while the entry holds the objects; only ordinary heads are kept (memory stays bounded)."""
        key = (id(head), id(identity), source)
        known = self._decided.get(key)
        if known is not None and known[0] is head and known[1] is identity:
            return known[2]
        admission = self._decided_now(head, identity, source)
        if len(head.raw) <= HEAD_CACHE_MAX_HEAD_BYTES:
            remember(self._decided, key, (head, identity, admission), ADMISSION_CACHE_ENTRIES)
        return admission

    def _decided_now(self, head: RequestHead, identity: Identity, source: str) -> Admission:
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
        refusal = verdict.refusal
        if refusal is not None and policy.mode != ENFORCE and verdict.match is not None:
            # Warn or audit mode: the rules' refusal recorded, the request let through
            # (policy/modes.py). What the route table cannot place stays refused: no later
            # step could judge it.
            verdict = waive(verdict, refusal, policy.mode) or verdict
        return Admission(verdict, identity, source, policy=policy)

    def _identify(
        self, head: RequestHead, facts: ConnectionFacts, source: str, now: float
    ) -> Identity | Admission | PendingAdmission:
        """The caller, or the refusal, or the password check that will tell."""
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
                return remembered[2]
            user = claimed_user(authorization)
            counted = throttle_source(source, facts)
            wait = self.throttle.retry_after(counted, user)
            if wait is not None:
                message = "dockgate: too many failed attempts; try again later"
                retry = max(1, math.ceil(wait))
                verdict = _refusal(429, message, "deny:-:throttled", "throttled", retry)
                return Admission(verdict, ANONYMOUS_IDENTITY, source)
            found = authenticator.identify(authorization)
            if isinstance(found, PasswordCheck):
                return self._check_password(head, facts, source, authorization, found)
            if found is None:
                self.throttle.failed(counted, user)
                return _bad_credentials(source)
            self.throttle.succeeded(counted, user)
            facts.remembered = (authorization, authenticator.generation, found)
            return found
        if facts.certificate is not None:
            return facts.certificate
        if facts.certificate_refusal is not None:
            message = f"dockgate: {facts.certificate_refusal}"
            verdict = _refusal(401, message, "deny:-:unauthenticated", "ambiguous certificate")
            return Admission(verdict, ANONYMOUS_IDENTITY, source)
        if self.peer_bound and facts.peer == UNIX_SOURCE:
            peer = self._peer_caller(facts, source)
            if peer is not None:
                return peer
        if not authenticator.required:
            return NO_AUTH_IDENTITY
        if self._anonymous_bound and self.policies.binding_for(ANONYMOUS_IDENTITY, source):
            return ANONYMOUS_IDENTITY
        verdict = _refusal(
            401, "dockgate: authentication required", "deny:-:unauthenticated", "no credentials"
        )
        return Admission(verdict, ANONYMOUS_IDENTITY, source)

    def _peer_caller(self, facts: ConnectionFacts, source: str) -> Identity | Admission | None:
        """A unix-socket client without credentials, where bindings name peers: its container
        (bound or refused: a container never falls back to the anonymous binding), or a host
        process that a uid/gid binding names; None for a host process no binding names, which
        stays anonymous as before (docs/policy.md, "The calling container as the identity")."""
        caller = facts.caller
        if caller is None:
            # Never admitted before its peer is known (the relay waits for it): not anonymous.
            caller = PEER_PENDING
        if isinstance(caller, Refusal):
            return Admission(refused_before_policy(caller), ANONYMOUS_IDENTITY, source)
        if caller.method == CONTAINER or self.policies.binding_for(caller, source) is not None:
            return caller
        return None

    def _check_password(
        self,
        head: RequestHead,
        facts: ConnectionFacts,
        source: str,
        authorization: bytes,
        check: PasswordCheck,
    ) -> Admission | PendingAdmission:
        """Count a failure, then hash in the pool: a burst of guesses sent at once meets the
        throttle's limit before its hashes run, not after."""
        throttle = self.throttle
        counted = throttle_source(source, facts)
        charge = throttle.charge(counted, check.user)
        future = self.checks.submit(check.run)
        if future is None:
            throttle.refund(charge)  # nothing was checked
            message = "dockgate: too many password checks at once; try again later"
            verdict = _refusal(503, message, "deny:-:auth-busy", "password checks busy", 1)
            return Admission(verdict, ANONYMOUS_IDENTITY, source)
        generation = self.authenticator.generation
        future.add_done_callback(lambda done: _settle(done, throttle, charge, check, counted))

        def decide() -> Admission:
            if not _succeeded(future):
                return _bad_credentials(source)
            identity = check.identity
            facts.remembered = (authorization, generation, identity)
            return self._decide(head, identity, source)

        return PendingAdmission(future, decide)


def _succeeded(future: asyncio.Future[bool]) -> bool:
    return (
        future.done() and not future.cancelled() and future.exception() is None and future.result()
    )


def _settle(
    future: asyncio.Future[bool],
    throttle: FailureThrottle,
    charge: Charge,
    check: PasswordCheck,
    counted: str,
) -> None:
    """A finished check: a right password takes its charged failure back (and makes its
    source known for the user) and is remembered; a wrong one stays counted."""
    if _succeeded(future):
        throttle.refund(charge)
        throttle.succeeded(counted, check.user)
        check.remember()


def throttle_source(source: str, facts: ConnectionFacts) -> str:
    """The source failures count under: the client's address, or for a unix-socket client its
    peer uid (a trusted proxy on the socket names its client's address instead). Many clients
    can share one: every root container on the socket is uid 0. The throttle judges a user at
    a source where she authenticated by her own failures there (auth/throttle.py), so the
    other clients of a shared source cannot lock her out of it."""
    if source == UNIX_SOURCE and facts.uid is not None:
        return f"{UNIX_UID_PREFIX}{facts.uid}"
    return source


def _bad_credentials(source: str) -> Admission:
    verdict = _refusal(
        401, "dockgate: invalid credentials", "deny:-:unauthenticated", "bad credentials"
    )
    return Admission(verdict, ANONYMOUS_IDENTITY, source)


def _has_source_rules(policies: PolicySet) -> bool:
    return any(b.sources is not None for b in policies.bindings or ())
