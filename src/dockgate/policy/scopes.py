"""Object scopes: which existing objects an allow rule covers (`objects:` in a rule).

A rule may name the objects it is about by their labels, their names or their Swarm stack:

    - allow: {operations: [ContainerRestart, ContainerLogs], objects: {labels: {team: web}}}

Such a rule allows its operations only on objects it covers; the gateway looks the object up
on the daemon (full ID, ID prefix or name, as the daemon resolves them), answers `404` as if it
did not exist when no rule covers it, and otherwise pins the request to the full ID it checked
(the ownership machinery's look-up and pinning). Lists and the event stream are filtered to the
objects covered; a create is refused unless what it creates would be covered.

This module is the pure part: the scope of one rule (`ObjectScope`), the union of the scopes of
the allow rules that matched a request (`Scope`), the policy's reach per kind of object
(`Reach`, `reach_of`), and which operations a scope can apply to (`scopable`). Matching is
on what the daemon stores and answers: the object's labels as a map (keys exact, as Go
compares map keys) and its name (a container's without the leading `/`).

Semantics, documented in docs/policy.md ("Scopes over existing objects"):
- the conditions given in one `objects:` must all hold; a list (`names`, `stacks`) means any;
- a label value is matched whole: `"*"` means any value (the label must be present), `"web-*"`
  a pattern (`*` is any run of characters), anything else exact; names the same way;
- `stacks: [shop]` is the label `com.docker.stack.namespace=shop`, which `docker stack deploy`
  puts on every service, network, secret and config it creates and on the tasks' containers;
- allow rules with `objects:` are alternatives: a request is allowed on an object any of the
  matching rules covers; a matching allow rule without `objects:` covers every object;
- `objects:` is for allow rules only (a deny rule with it is an error at load: denials do not
  look objects up, and an object kept out must be kept out of the allow rules' scopes);
- a rule with `objects:` matches only operations about objects of the kinds it can cover
  (containers and their exec instances, services and their tasks, networks, volumes, secrets,
  configs: one by name or ID, their lists, their creates, and the event stream; a commit, by
  the container it reads); other
  operations of its sections (images, prunes, ping, ...) need a rule without `objects:`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dockgate.api.routes import Operation
from dockgate.ownership.operations import (
    FILTERED,
    OWNED_CREATES,
    QUERY_REFERENCES,
    object_kind,
)

STACK_LABEL = "com.docker.stack.namespace"

# Kinds whose objects a scope covers (ownership/operations.py Kind.name); exec instances and
# tasks are covered through their container and service.
SCOPED_KINDS = frozenset(
    {"container", "exec", "service", "task", "network", "volume", "secret", "config"}
)
# Lists a scope filters, and the event stream. Prunes are not among them: the daemon narrows a
# prune by exact labels only, and a prune deletes what it finds (no filtering of the answer can
# take that back).
SCOPED_LISTS = frozenset(FILTERED - {"NetworkPrune", "VolumePrune"})
# Creates a scope judges (the created object must be covered). Updates that carry a whole spec
# (ServiceUpdate, SecretUpdate, ConfigUpdate) also name an object by path: both apply.
SCOPED_CREATES = OWNED_CREATES
# Operations whose object is named by a query parameter, not the path: a commit's container
# (ownership/operations.py QUERY_REFERENCES). A rule with `objects:` may name them.
QUERY_SCOPED = frozenset(QUERY_REFERENCES)


def scopable(operation: Operation) -> bool:
    """Whether a rule with `objects:` can match this operation."""
    name = operation.name
    if name in SCOPED_LISTS or name in SCOPED_CREATES or name in QUERY_SCOPED:
        return True
    kind = object_kind(name, operation.path)
    return kind is not None and kind.name in SCOPED_KINDS


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`*` is any run of characters (none included); everything else is literal."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def labels_match(
    conditions: tuple[tuple[str, re.Pattern[str]], ...], labels: Mapping[str, str]
) -> bool:
    """Every (key, value pattern) condition holds: the label is there (keys exact, as Go
    compares map keys) and its whole value matches. Scopes, container bindings
    (policy/rules.py ContainerMatch) and the peer_labels guardrail judge labels this way."""
    for key, pattern in conditions:
        found = labels.get(key)
        if found is None or not pattern.fullmatch(found):
            return False
    return True


@dataclass(frozen=True, slots=True)
class ObjectScope:
    """The objects one rule covers: every given condition must hold."""

    labels: tuple[tuple[str, re.Pattern[str]], ...] = ()  # key -> value pattern; all must hold
    names: tuple[re.Pattern[str], ...] | None = None  # any of them; None: any name
    stacks: frozenset[str] | None = None  # any of them; None: any stack or none
    text: str = ""  # as written, for explanations: "labels=team=web names=web-*"

    def covers(self, labels: Mapping[str, str], name: str) -> bool:
        if not labels_match(self.labels, labels):
            return False
        if self.names is not None and not any(p.fullmatch(name) for p in self.names):
            return False
        return self.stacks is None or labels.get(STACK_LABEL) in self.stacks


@dataclass(frozen=True, slots=True)
class Scope:
    """The objects a request may concern: the union of the scopes of the allow rules that
    matched it, each with its rule's number (None on a Decision: no scope, every object)."""

    rules: tuple[tuple[int, ObjectScope], ...]

    def covering_rule(self, labels: Mapping[str, str], name: str) -> int | None:
        """The number of the first rule covering this object, None when none does."""
        for number, scope in self.rules:
            if scope.covers(labels, name):
                return number
        return None

    def covers(self, labels: Mapping[str, str], name: str) -> bool:
        return self.covering_rule(labels, name) is not None

    def describe(self) -> str:
        """For messages and `dockgate check`: `rule 1 (labels=team=web) or rule 3 (...)`."""
        return " or ".join(f"rule {number} ({scope.text})" for number, scope in self.rules)


# The kind a scoped rule's operation is about, for the policy's reach (`reach_of`): by the
# first segment of its path (`/containers/{id}/exec`, `/exec/{id}/start` and `/commit` are
# about containers; `/tasks` about services). The event stream is about every kind and none:
# a rule scoping only it puts nothing in reach.
_REACH_KINDS = {
    "containers": "container",
    "exec": "container",
    "commit": "container",
    "networks": "network",
    "volumes": "volume",
    "services": "service",
    "tasks": "service",
    "secrets": "secret",
    "configs": "config",
}
# Kinds judged through another's scope (ownership/operations.py PARENT_FIELD).
_PARENT_KIND = {"exec": "container", "task": "service"}


def reach_kind(operation: Operation) -> str | None:
    """The kind of object a scopable operation is about, for the reach; None for the event
    stream and for operations a rule with `objects:` cannot match."""
    if not scopable(operation):
        return None
    return _REACH_KINDS.get(operation.path.split("/")[1])


@dataclass(frozen=True, slots=True)
class Reach:
    """What the existing objects a request reaches indirectly must be covered by, per kind
    (`of`). A policy's reach (`reach_of`) holds, for each kind, the union of the scopes of
    the allow rules matching some operation about that kind: a network rule's scope says
    nothing of containers. A scoped request's reach is its own scope, for every kind
    (`Reach.every`)."""

    kinds: tuple[tuple[str, Scope], ...] = ()
    every: Scope | None = None

    @classmethod
    def whole(cls, scope: Scope) -> Reach:
        return cls(every=scope)

    def of(self, kind: str) -> Scope | None:
        """The scope for objects of `kind` (ownership/operations.py Kind.name), None when the
        policy scopes no object of that kind: references to one are not judged."""
        if self.every is not None:
            return self.every
        kind = _PARENT_KIND.get(kind, kind)
        return next((scope for name, scope in self.kinds if name == kind), None)

    def describe(self) -> str:
        if self.every is not None:
            return self.every.describe()
        return "; ".join(f"{kind}s: {scope.describe()}" for kind, scope in self.kinds)


def reach_of(rules: Iterable[tuple[int, ObjectScope | None, Iterable[str]]]) -> Reach | None:
    """A policy's reach: for each kind, the union of the `objects:` (numbered) of the allow
    rules about that kind (`reach_kind` of the operations they match); None when no rule
    has `objects:`. In such a policy every existing object of a scoped kind a request
    reaches *indirectly* (not the object its path names: the container a commit reads, the
    network or container a build joins, the objects a create or update body names) must be
    covered by the reach for its kind, whichever rule allowed the request: a rule without
    `objects:` allows an operation, not a way into the objects the scoped rules keep apart
    (docs/policy.md "Scopes over existing objects"). An object of a kind no scoped rule is
    about is not judged: the policy does not scope that kind."""
    by_kind: dict[str, list[tuple[int, ObjectScope]]] = {}
    scoped = False
    for number, objects, kinds in rules:
        if objects is None:
            continue
        scoped = True
        for kind in sorted(set(kinds)):
            by_kind.setdefault(kind, []).append((number, objects))
    if not scoped:
        return None
    return Reach(tuple((kind, Scope(tuple(found))) for kind, found in sorted(by_kind.items())))


def labels_of(value: object) -> dict[str, str]:
    """A daemon answer's label map as matched (None, or a malformed map: no labels; values that
    are not strings never match a pattern)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
