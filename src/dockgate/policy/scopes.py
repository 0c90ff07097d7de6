"""Object scopes: which existing objects an allow rule covers (`objects:` in a rule).

A rule may name the objects it is about by their labels, their names or their Swarm stack:

    - allow: {operations: [ContainerRestart, ContainerLogs], objects: {labels: {team: web}}}

Such a rule allows its operations only on objects it covers; the gateway looks the object up
on the daemon (full ID, ID prefix or name, as the daemon resolves them), answers `404` as if it
did not exist when no rule covers it, and otherwise pins the request to the full ID it checked
(the ownership machinery's look-up and pinning). Lists and the event stream are filtered to the
objects covered; a create is refused unless what it creates would be covered.

This module is the pure part: the scope of one rule (`ObjectScope`), the union of the scopes of
the allow rules that matched a request (`Scope`), and which operations a scope can apply to
(`scopable`). Matching is on what the daemon stores and answers: the object's labels as a map
(keys exact, as Go compares map keys) and its name (a container's without the leading `/`).

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


@dataclass(frozen=True, slots=True)
class ObjectScope:
    """The objects one rule covers: every given condition must hold."""

    labels: tuple[tuple[str, re.Pattern[str]], ...] = ()  # key -> value pattern; all must hold
    names: tuple[re.Pattern[str], ...] | None = None  # any of them; None: any name
    stacks: frozenset[str] | None = None  # any of them; None: any stack or none
    text: str = ""  # as written, for explanations: "labels=team=web names=web-*"

    def covers(self, labels: Mapping[str, str], name: str) -> bool:
        for key, value in self.labels:
            found = labels.get(key)
            if found is None or not value.fullmatch(found):
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


def reach_of(rules: Iterable[tuple[int, ObjectScope | None]]) -> Scope | None:
    """A policy's reach: the union of its allow rules' `objects:` (numbered), None when no
    rule has one. In such a policy every existing object a request reaches *indirectly* (not
    the object its path names: the container a commit reads, the network or container a
    build joins, the objects a create or update body names) must be covered by it, whichever
    rule allowed the request: a rule without `objects:` allows an operation, not a way into
    the objects the scoped rules keep apart (docs/policy.md "Scopes over existing objects")."""
    scoped = tuple((number, objects) for number, objects in rules if objects is not None)
    return Scope(scoped) if scoped else None


def labels_of(value: object) -> dict[str, str]:
    """A daemon answer's label map as matched (None, or a malformed map: no labels; values that
    are not strings never match a pattern)."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
