"""Compiled policies and the decision they make: pure functions of the request's facts.

Precedence, the same for every policy (and documented in docs/policy.md):

1. `read_only: true` denies every operation that can change something (`Operation.writes`) and
   every request the route table cannot place, whatever the rules say;
2. otherwise the first matching `deny` rule denies: an explicit deny always wins over an allow;
3. otherwise the first matching `allow` rule allows;
4. otherwise the request is denied (default deny).

A decision is a value (`Decision`); logging observes it, it never makes it. Decisions that depend
only on the operation and the method are computed once per operation and cached, so a policy of
a hundred rules costs one dictionary look-up per request unless a rule matches on paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dockgate.api.routes import OPERATIONS, Operation, RouteMatch
from dockgate.auth.identity import (
    ANONYMOUS,
    BASIC,
    CERTIFICATE,
    CONTAINER,
    NONE,
    PROCESS,
    TOKEN,
    ContainerFacts,
    Identity,
)
from dockgate.auth.sourceaddr import SourceRules
from dockgate.body.defaults import Defaults
from dockgate.body.guardrails import Guardrails
from dockgate.body.redact import Redaction
from dockgate.caching import remember
from dockgate.policy.limits import Limits
from dockgate.policy.modes import startup_warnings
from dockgate.policy.scopes import (
    ObjectScope,
    Reach,
    Scope,
    labels_match,
    reach_kind,
    reach_of,
    scopable,
)

ALLOW = "allow"
DENY = "deny"

# `{name}` is one path segment, `{name*}` any remainder (slashes included), as the daemon's
# `{name:.*}` variables; everything else in a pattern is literal.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\*?)\}")
_VERSION_PREFIX = re.compile(r"/v[0-9.]+(?=/)")


class PatternError(ValueError):
    """A path pattern that cannot be compiled."""


def compile_path_pattern(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("/"):
        raise PatternError(f"path pattern {pattern!r} must start with '/'")
    parts: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[pos : match.start()]))
        parts.append(".+" if match.group(2) else "[^/]+")
        pos = match.end()
    leftover = _PLACEHOLDER.sub("", pattern)
    if "{" in leftover or "}" in leftover:
        raise PatternError(f"path pattern {pattern!r} has a malformed {{placeholder}}")
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts))


def strip_version(path: str) -> str:
    """`/v1.41/containers/json` -> `/containers/json` (the daemon's `/v{version:[0-9.]+}`)."""
    match = _VERSION_PREFIX.match(path)
    return path[match.end() :] if match else path


@dataclass(frozen=True, slots=True)
class Matcher:
    """The conditions of one rule; all given conditions must hold (lists are alternatives)."""

    sections: frozenset[str] | None = None  # None: any; {"*"}: any identified operation
    operations: frozenset[str] | None = None
    methods: frozenset[str] | None = None
    paths: tuple[re.Pattern[str], ...] | None = None
    unknown: bool = False  # matches only requests the route table cannot place
    # Allow rules only: the existing objects the rule covers (policy/scopes.py); such a rule
    # matches only operations about objects a scope can cover.
    objects: ObjectScope | None = None

    def static_match(self, operation: Operation | None, method: str) -> bool:
        """Whether the conditions that do not depend on the concrete path hold."""
        if self.methods is not None and method not in self.methods:
            return False
        if operation is None:
            return self.unknown
        if self.unknown:
            return False
        if self.objects is not None and not scopable(operation):
            return False
        sections = self.sections
        if sections is not None and "*" not in sections and operation.section not in sections:
            return False
        return self.operations is None or operation.name in self.operations

    def path_match(self, path: str) -> bool:
        if self.paths is None:
            return True
        return any(p.fullmatch(path) for p in self.paths)


def _reach_kinds(matcher: Matcher) -> frozenset[str]:
    """The kinds of object a rule with `objects:` is about (policy/scopes.py `reach_kind`):
    those of the operations it can match, whatever their path (computed once, at load)."""
    if matcher.objects is None:
        return frozenset()
    kinds = (reach_kind(op) for op in OPERATIONS.values() if matcher.static_match(op, op.method))
    return frozenset(kind for kind in kinds if kind is not None)


@dataclass(frozen=True, slots=True)
class Rule:
    number: int  # 1-based, in file order within its policy
    effect: str  # ALLOW or DENY
    matcher: Matcher
    line: int | None = None  # where it was written, for explanations
    note: str = ""  # where it came from, when not from a file (e.g. "CONTAINERS=1")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str
    rule: int | None  # the deciding rule, None for read-only and default deny
    reason: str  # "rule 3", "read-only", "no rule allows it"
    # Allowed only on the objects these rules cover (policy/scopes.py): every matching allow
    # rule had `objects:`. None: on every object.
    scope: Scope | None = None

    def denial_message(self, operation: str) -> str:
        return f"dockgate: {operation} denied by policy {self.policy} ({self.reason})"

    @property
    def label(self) -> str:
        """Short form for logs: `allow:env#3`, `deny:ci#read-only`."""
        what = f"rule {self.rule}" if self.rule is not None else self.reason
        return f"{ALLOW if self.allowed else DENY}:{self.policy}:{what.replace(' ', '-')}"


@dataclass(slots=True)
class Policy:
    name: str
    read_only: bool
    rules: tuple[Rule, ...]
    # What bodies of allowed operations may ask for; None: not checked (environment policies,
    # and policy files that say `guardrails: false`).
    guardrails: Guardrails | None = None
    redaction: Redaction = field(default_factory=Redaction)  # what inspect/list answers hide
    ownership: bool = (
        False  # callers see and touch only what they created (ownership/operations.py)
    )
    # Rollout mode (policy/modes.py): "enforce", or "warn"/"audit", where the policy's
    # refusals are recorded rather than answered. A binding's own mode is a copy of the
    # policy with that mode (`PolicySet.bound`).
    mode: str = "enforce"
    limits: Limits | None = None  # rate and concurrency per caller (policy/limits.py); None: off
    _static: dict[tuple[str, str], Decision | list[Rule]] = field(default_factory=dict)
    # What the policy file built it on: "preset traefik", "extends ci, extends preset
    # gitlab-runner" (policy/loader.py, docs/presets.md); "" when written out whole.
    basis: str = ""
    # What creates are given (body/defaults.py, `defaults:`); None: nothing.
    defaults: Defaults | None = None
    # Per kind of object, the union of the scopes of the policy's allow rules with `objects:`
    # about that kind (policy/scopes.py `reach_of`), computed from the rules: the objects a
    # request of this policy may reach indirectly (a commit's container, a build's network,
    # what a create joins). None: the policy has no such rule, and nothing is judged.
    reach: Reach | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.reach = reach_of(
            (r.number, r.matcher.objects, _reach_kinds(r.matcher))
            for r in self.rules
            if r.effect == ALLOW
        )

    def decide(self, method: str, match: RouteMatch | None, path: str) -> Decision:
        """Decide for a request; `path` is the decoded path (version prefix included or not)."""
        operation = match.operation if match is not None else None
        if operation is not None:
            key = (operation.name, method)
            cached = self._static.get(key)
            if cached is None:
                cached = self._precompute(operation, method)
                remember(self._static, key, cached, STATIC_DECISION_ENTRIES)
            if isinstance(cached, Decision):
                return cached
            return self._walk(cached, strip_version(path))
        if self.read_only:
            return Decision(False, self.name, None, "read-only")
        unknown = self._static.get(("", method))
        if unknown is None:
            # Any method a client makes up lands here (`[A-Z]{1,20}`): bounded, like every
            # table a client can add keys to.
            unknown = [r for r in self.rules if r.matcher.static_match(None, method)]
            remember(self._static, ("", method), unknown, STATIC_DECISION_ENTRIES)
        if isinstance(unknown, Decision):  # only lists are stored for unknown requests
            return unknown
        return self._walk(unknown, strip_version(path))

    def _precompute(self, operation: Operation, method: str) -> Decision | list[Rule]:
        if self.read_only and operation.writes:
            return Decision(False, self.name, None, "read-only")
        candidates = [r for r in self.rules if r.matcher.static_match(operation, method)]
        if all(r.matcher.paths is None for r in candidates):
            return self._walk(candidates, "")
        return candidates

    def _walk(self, candidates: Iterable[Rule], path: str) -> Decision:
        first_allow: Rule | None = None  # the first allow rule without `objects:`
        scoped: list[tuple[int, ObjectScope]] = []  # the allow rules with `objects:`
        for rule in candidates:
            if not rule.matcher.path_match(path):
                continue
            if rule.effect == DENY:
                return Decision(False, self.name, rule.number, f"rule {rule.number}")
            objects = rule.matcher.objects
            if objects is not None:
                scoped.append((rule.number, objects))
            elif first_allow is None:
                first_allow = rule
        if first_allow is not None:
            # A rule covering every object makes the scoped ones moot (they are alternatives).
            return Decision(True, self.name, first_allow.number, f"rule {first_allow.number}")
        if scoped:
            number = scoped[0][0]
            return Decision(True, self.name, number, f"rule {number}", Scope(tuple(scoped)))
        return Decision(False, self.name, None, "no rule allows it")

    def explain(self, method: str, match: RouteMatch | None, path: str) -> list[tuple[Rule, bool]]:
        """Every rule with whether it matches this request, for `dockgate check`."""
        operation = match.operation if match is not None else None
        bare = strip_version(path)
        return [
            (r, r.matcher.static_match(operation, method) and r.matcher.path_match(bare))
            for r in self.rules
        ]


@dataclass(frozen=True, slots=True)
class ContainerMatch:
    """A binding's `container:`: every given condition holds (a label pattern for each label
    given; the name matches one of `names`; the image one of `images`)."""

    labels: tuple[tuple[str, re.Pattern[str]], ...] = ()
    names: tuple[re.Pattern[str], ...] = ()
    images: tuple[re.Pattern[str], ...] = ()
    shown: str = ""  # as written, for explanations: `labels dockgate.role=proxy; names ci-*`

    def matches(self, facts: ContainerFacts) -> bool:
        if self.labels and not labels_match(self.labels, dict(facts.labels)):
            return False
        if self.names and not any(p.fullmatch(facts.name) for p in self.names):
            return False
        return not self.images or any(p.fullmatch(facts.image) for p in self.images)


@dataclass(frozen=True, slots=True)
class Binding:
    """Who gets a policy: any listed identity matches (lists are alternatives), and the
    caller's source address must pass `sources` when it is given."""

    number: int  # 1-based, in file order
    policy: str
    users: frozenset[str] = frozenset()  # Basic users, and tokens acting as these identities
    tokens: frozenset[str] = frozenset()  # token names (the first column of the tokens file)
    certificates: frozenset[str] = frozenset()  # client certificate names (--tls-identity)
    members: frozenset[str] = frozenset()  # names from the bound groups, any method
    groups: tuple[str, ...] = ()  # for explanations only; `members` is what matches
    anonymous: bool = False  # callers without credentials
    authenticated: bool = False  # any authenticated caller
    sources: SourceRules | None = None
    line: int | None = None
    # The unix-socket peer (docs/policy.md, "The calling container as the identity"): callers
    # without credentials named by their container or, outside any container, by uid/gid.
    container: ContainerMatch | None = None
    services: frozenset[str] = frozenset()  # Swarm services whose task containers match
    uids: frozenset[int] = frozenset()  # host processes (in no container) of these uids
    gids: frozenset[int] = frozenset()  # ... or of these gids

    @property
    def names_peers(self) -> bool:
        """Whether it binds callers by their unix-socket peer."""
        return bool(self.container is not None or self.services or self.uids or self.gids)

    def matches(self, identity: Identity, source: str) -> bool:
        if not self._identity_matches(identity):
            return False
        return self.sources is None or self.sources.permits(source)

    def _identity_matches(self, identity: Identity) -> bool:
        method = identity.method
        if method in (ANONYMOUS, NONE):
            return self.anonymous
        # A peer matches only the peer keys: never `authenticated: true`, never a group member
        # or user of the same name (a container named `alice` is not the user alice).
        if method == CONTAINER:
            facts = identity.container
            if facts is None:
                return False
            if facts.service and facts.service in self.services:
                return True
            return self.container is not None and self.container.matches(facts)
        if method == PROCESS:
            uid = identity.name.removeprefix("uid:")
            gid = identity.detail.removeprefix("gid:")
            return (uid.isdigit() and int(uid) in self.uids) or (
                gid.isdigit() and int(gid) in self.gids
            )
        if self.authenticated or identity.name in self.members:
            return True
        if method == BASIC:
            return identity.name in self.users
        if method == TOKEN:
            return identity.name in self.users or identity.detail in self.tokens
        if method == CERTIFICATE:
            return identity.name in self.certificates
        return False


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Everything a policy source defines.

    Without bindings, `default` applies to every caller that passes authentication. With
    bindings, each caller gets the policy of the first binding that matches it, and a caller
    no binding matches is denied.
    """

    policies: Mapping[str, Policy]
    default: str
    origins: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    source: str = ""  # file name, or "environment"
    bindings: tuple[Binding, ...] | None = None
    sources: SourceRules = field(default_factory=SourceRules)  # global source address allow/deny
    # Ownership: identity key (`user:alice`) -> the owner it counts as (ownership/owners.py).
    owners: Mapping[str, str] = field(default_factory=dict)
    # Bindings with a `mode:` of their own: binding number -> its policy in that mode.
    bound: Mapping[int, Policy] = field(default_factory=dict)
    _bound: dict[tuple[str, str, str, str], Binding | None] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    @property
    def names_peers(self) -> bool:
        """Whether a binding names callers by their unix-socket peer (container, service, uid,
        gid): unix-socket connections then identify their peer before their first request."""
        return any(b.names_peers for b in self.bindings or ())

    @property
    def active(self) -> Policy:
        """The policy for a caller nobody identified: the default one, or, with bindings,
        a policy that allows nothing (a code path that forgets the binding denies)."""
        if self.bindings is not None:
            return NO_BINDING_POLICY
        return self.policies[self.default]

    def binding_for(self, identity: Identity, source: str) -> Binding | None:
        """The first binding for this caller, or None when none matches."""
        key = (identity.method, identity.name, identity.detail, source)
        cached = self._bound.get(key, _UNSET)
        if cached is not _UNSET:
            return cached  # type: ignore[return-value]
        found = None
        for binding in self.bindings or ():
            if binding.matches(identity, source):
                found = binding
                break
        remember(self._bound, key, found, BINDING_CACHE_ENTRIES)
        return found

    def policy_for(self, identity: Identity, source: str) -> Policy | None:
        if self.bindings is None:
            return self.policies[self.default]
        binding = self.binding_for(identity, source)
        if binding is None:
            return None
        return self.bound.get(binding.number) or self.policies[binding.policy]

    def mode_warnings(self, *, audited: bool) -> list[str]:
        """A warning line per policy and binding not in enforce mode (policy/modes.py)."""
        return startup_warnings(
            {name: p.mode for name, p in self.policies.items()},
            [(number, p.name, p.mode) for number, p in sorted(self.bound.items())],
            audited=audited,
        )


# Decisions remembered per (operation, method): a few hundred known pairs, plus whatever
# unknown methods clients send; cleared when full.
STATIC_DECISION_ENTRIES = 1024

NO_BINDING_POLICY = Policy("no-binding", read_only=True, rules=(), guardrails=Guardrails())

# Callers repeat: the binding of an (identity, source) pair is remembered, bounded.
BINDING_CACHE_ENTRIES = 4096
_UNSET = object()
