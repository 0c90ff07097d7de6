"""Decides, for each request head, whether it may reach the daemon: one place, one value.

The request-target is read once (`parse_target`), identified once (`identify`), and that same
value is handed to the browser checks, the policy, and the access log. What is forwarded is the
raw target that was checked: it is never decoded twice nor re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dockgate.api.routes import RouteMatch, identify
from dockgate.api.target import parse_target
from dockgate.caching import remember
from dockgate.http.errors import ClientProtocolError
from dockgate.policy.browser import BrowserGuard
from dockgate.policy.denials import denial_message
from dockgate.policy.rules import Policy, PolicySet
from dockgate.policy.scopes import Scope
from dockgate.refusal import Refusal

# The only operations whose connection may switch protocols (moby: attach and exec start
# hijack with "Upgrade: tcp", attach/ws is a WebSocket, session and grpc use "Upgrade: h2c").
# Any other request asking to upgrade is refused: a daemon that speaks h2c on an upgraded
# connection would take further requests on it that the gateway never sees one by one.
UPGRADABLE_OPERATIONS = frozenset(
    {"ContainerAttach", "ContainerAttachWebsocket", "ExecStart", "Session", "GrpcSession"}
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one request, as the access log, the audit record and the metrics tell
    it: allowed, or refused with the one `Refusal` the client is answered with."""

    operation: str  # the operation name, or "unknown" ("-" when refused before it is known)
    label: str  # for the access log: "allow:policy:rule-3", "deny:policy:read-only"
    match: RouteMatch | None = None
    policy: str | None = None  # the policy that decided, None when refused before it
    reason: str = ""  # "rule 3", "read-only", "no rule allows it", "browser", ...
    refusal: Refusal | None = None  # None: allowed
    # In warn or audit mode (policy/modes.py): what enforce would have answered, while the
    # request goes on (`refusal` is then None). None: nothing would have been refused.
    would_deny: Refusal | None = None
    # Allowed only on the objects the matching rules' `objects:` cover (policy/scopes.py);
    # None: every object.
    scope: Scope | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def decision(self) -> str:
        """The metrics' decision: `allow`, `deny`, or the rollout mode (`warn`, `audit`) of a
        request let through that enforce would have refused (the label's first part)."""
        if self.refusal is not None:
            return "deny"
        return "allow" if self.would_deny is None else self.label.partition(":")[0]

    @property
    def status(self) -> int:
        """0 when allowed; the refusal's status otherwise."""
        return 0 if self.refusal is None else self.refusal.status

    @property
    def message(self) -> str:
        return "" if self.refusal is None else self.refusal.message

    def refused(self, refusal: Refusal) -> Verdict:
        """This request, refused by a step after the policy's rules allowed it."""
        return replace(
            self,
            refusal=refusal,
            label=f"deny:{self.policy or '-'}:{refusal.stage}",
            reason=refusal.reason,
        )


def refused_before_policy(refusal: Refusal, operation: str = "-") -> Verdict:
    """A request refused before any policy decided (source, credentials, binding, a loop)."""
    return Verdict(operation, f"deny:-:{refusal.stage}", reason=refusal.reason, refusal=refusal)


# Verdicts are pure functions of the request facts below and the (immutable) policy, and
# clients repeat the same requests (`/_ping`, `/containers/json`, `/events`): remembering the
# last few thousand saves parsing and matching on the hot path. Cleared when full, so memory
# stays bounded whatever a client sends.
VERDICT_CACHE_ENTRIES = 4096
# Requests with a long target, Host or Origin (a filter in the query) are decided each time
# rather than remembered, which bounds the cache to a few megabytes.
VERDICT_CACHE_MAX_TARGET = 512


class Gatekeeper:
    def __init__(
        self, policies: PolicySet, *, authenticated: bool = False, tls: bool = False
    ) -> None:
        self.policies = policies
        self.guard = BrowserGuard(policies.origins, policies.hosts, "https" if tls else "http")
        self.authenticated = authenticated
        self._cache: dict[
            tuple[str, str, str, bytes | None, bytes | None, bool, bool], Verdict
        ] = {}

    def check_cached(
        self,
        method: str,
        raw_target: str,
        host: bytes | None,
        origin: bytes | None,
        upgrade: bool,
        *,
        policy: Policy | None = None,
        authenticated: bool | None = None,
    ) -> Verdict:
        if policy is None:
            policy = self.policies.active
        if authenticated is None:
            authenticated = self.authenticated
        # Policy names are unique within the (immutable) policy set.
        key = (policy.name, method, raw_target, host, origin, upgrade, authenticated)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = self.check(
                method,
                raw_target,
                host,
                origin,
                upgrade=upgrade,
                policy=policy,
                authenticated=authenticated,
            )
            if (
                len(raw_target) > VERDICT_CACHE_MAX_TARGET
                or len(host or b"") > VERDICT_CACHE_MAX_TARGET
                or len(origin or b"") > VERDICT_CACHE_MAX_TARGET
            ):
                return verdict
            remember(self._cache, key, verdict, VERDICT_CACHE_ENTRIES)
        return verdict

    def check(
        self,
        method: str,
        raw_target: str,
        host: bytes | None = None,
        origin: bytes | None = None,
        *,
        upgrade: bool = False,
        policy: Policy | None = None,
        authenticated: bool | None = None,
    ) -> Verdict:
        """The verdict of `policy` (the default one when not given) on one request head.

        `authenticated`: whether this caller proved who it is (None: the gatekeeper's setting);
        only then may the Host header name any DNS name, since a browser tricked by DNS
        rebinding cannot present credentials or a client certificate.
        """
        try:
            target = parse_target(raw_target)
        except ClientProtocolError as exc:
            refusal = Refusal(400, f"dockgate: {exc.message}", "bad-target", "bad target")
            return Verdict("unknown", "deny:-:bad-target", reason="bad target", refusal=refusal)
        match = identify(method, target.path)
        operation = match.operation.name if match is not None else "unknown"
        if host is not None or origin is not None:
            if authenticated is None:
                authenticated = self.authenticated
            problem = self.guard.refusal(host, origin, authenticated)
            if problem is not None:
                denied = Refusal(403, problem, "browser", "browser")
                return Verdict(operation, "deny:-:browser", match, reason="browser", refusal=denied)
        if upgrade and operation not in UPGRADABLE_OPERATIONS:
            message = f"dockgate: {operation} cannot switch protocols (Upgrade refused)"
            denied = Refusal(403, message, "upgrade", "upgrade")
            return Verdict(operation, "deny:-:upgrade", match, reason="upgrade", refusal=denied)
        if policy is None:
            policy = self.policies.active
        decision = policy.decide(method, match, target.path)
        if decision.allowed:
            return Verdict(
                operation,
                decision.label,
                match,
                decision.policy,
                decision.reason,
                scope=decision.scope,
            )
        subject = operation if match is not None else f"unknown operation {method} {target.path}"
        # Saying what would allow it: the variables, or the rule and the policy (policy/denials.py).
        message = denial_message(
            policy,
            decision,
            subject,
            match.operation if match is not None else None,
            environment=self.policies.source == "environment",
        )
        denied = Refusal(403, message, "policy", decision.reason)
        return Verdict(
            operation, decision.label, match, decision.policy, decision.reason, refusal=denied
        )
