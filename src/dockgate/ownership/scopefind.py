"""Object scopes: finding the object a request names among the objects a scope covers.

A request allowed only on the objects its rules' `objects:` cover (policy/scopes.py) names one
object by full ID, ID prefix or name. The daemon resolves a reference among ALL its objects (a
full ID, then a name, then an ID prefix: moby daemon/container.go GetContainer,
daemon/network.go FindNetwork, swarmkit's getService, getSecret, getConfig, getTask), so its
answer would tell a caller about objects it may not see: a name held by an object out of scope
hides a covered object whose ID that name also starts; a prefix two objects share, one out of
scope, is "ambiguous" (400, or a 500 for containers on 20.10). So, as ownership does among the
caller's own objects (ownership/prefix.py), a reference that is not a full ID is resolved
among the covered objects only: the objects of the kind are listed (one list per rule of the
scope, narrowed by the daemon to objects carrying the rule's label keys, and to the caller's
owner label when ownership is on too), the rule's `covers` keeps those it covers, and the
reference is resolved among them as the daemon resolves it. One fits: it is inspected again by
its full ID and judged on that answer (the list is a pre-selection; the inspect is what
counts, image labels included); none fits: absent; several: ambiguous (400), about covered
objects only. The request then goes on pinned to the full ID that was judged.

A full ID is inspected directly (no list): the daemon finds a full ID before any name. Volumes
are found by exact name only, exec instances by exact ID (moby daemon/exec.go getExecConfig),
both directly; an exec instance is judged by its container, a task by its service (lookup.find
gives the parent's labels and name). A task reference that is not a full ID is resolved among
the tasks of the covered services (the tasks list, by `ServiceID`).

The time a look-up takes depends on the covered objects only, never on what else the daemon
holds, except for the daemon's own list filtering by label key (a constant per object).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.ownership.lookup import Found, LookupError_, Unresolved, find, get_json
from dockgate.ownership.operations import (
    CONFIG,
    CONTAINER,
    NETWORK,
    OWNER_LABEL,
    SECRET,
    SERVICE,
    TASK,
    Kind,
)
from dockgate.ownership.prefix import resolve_among
from dockgate.policy.scopes import STACK_LABEL, ObjectScope, Scope, labels_of
from dockgate.policy.scoping import ScopeCheck, absent, name_taken, rename_problem
from dockgate.refusal import Refusal


@dataclass(frozen=True, slots=True)
class _Listed:
    path: str  # the list endpoint, to which `filters=` is added
    id_field: str
    spec: bool  # labels and name under `Spec` (swarm objects)


_LISTED = {
    CONTAINER.name: _Listed("/containers/json?all=1&", "Id", spec=False),
    NETWORK.name: _Listed("/networks?", "Id", spec=False),
    SERVICE.name: _Listed("/services?", "ID", spec=True),
    SECRET.name: _Listed("/secrets?", "ID", spec=True),
    CONFIG.name: _Listed("/configs?", "ID", spec=True),
}
# Full IDs: 64 hex digits (moby pkg/stringid), 25 base-36 digits for swarm objects (swarmkit
# identity.NewID).
_FULL_ID = {
    CONTAINER.name: re.compile(r"[0-9a-f]{64}"),
    NETWORK.name: re.compile(r"[0-9a-f]{64}"),
    SERVICE.name: re.compile(r"[0-9a-z]{25}"),
    SECRET.name: re.compile(r"[0-9a-z]{25}"),
    CONFIG.name: re.compile(r"[0-9a-z]{25}"),
    TASK.name: re.compile(r"[0-9a-z]{25}"),
}


async def find_covered(
    address: Address, kind: Kind, reference: str, scope: Scope, owner: str | None
) -> Found | None:
    """The object `reference` names among those `scope` covers (and, with `owner`, that carry
    its owner label: the caller then still checks the trusted owner), as inspected; None when
    it names none of them (absent, or out of scope: the same answer). Unresolved when it
    names several covered objects; LookupError_ when the daemon cannot be asked."""
    full = _FULL_ID.get(kind.name)
    if full is not None and not full.fullmatch(reference):
        if kind is TASK:
            resolved_id = await _covered_task(address, reference, scope, owner)
        else:
            covered = await covered_objects(address, kind, scope, owner)
            resolved_id = resolve_among(kind, reference, list(covered.items()))
        if resolved_id is None:
            return None
        reference = resolved_id
    found = await find(address, kind, reference)
    if found is None or not scope.covers(found.labels, found.name):
        return None
    return found


async def judge_scoped(
    address: Address, kind: Kind, reference: str, check: ScopeCheck, owner: str | None
) -> Found | Refusal | str:
    """The one object a scoped request is about, judged as the gateway does (relay/steps.py)
    and `dockgate check --upstream` explains: `Found`, covered (and carrying the caller's
    owner label, in ownership mode): go on pinned to its full ID; a `Refusal`: absent as far
    as the caller may tell (the daemon's own 404), or a new name held out of scope (409); a
    `str`: a rename out of the scope, refused by the policy with that reason. Unresolved when
    it names several covered objects; LookupError_ when the daemon cannot be asked."""
    found = await find_covered(address, kind, reference, check.scope, owner)
    if found is None or (owner is not None and found.owner != owner):
        return absent(kind, reference)
    problem = rename_problem(check, found.labels)
    if problem is not None:
        return problem
    if check.renamed:
        # A new name held by a container out of scope: the daemon's 409 would name it.
        taken = "/" + check.renamed
        holder = await find(address, CONTAINER, taken)
        if holder is not None and not check.scope.covers(holder.labels, holder.name):
            return name_taken(CONTAINER, taken)
    return found


async def covered_objects(
    address: Address, kind: Kind, scope: Scope, owner: str | None
) -> dict[str, list[str]]:
    """The objects of `kind` (containers, networks, services, secrets, configs) that `scope`
    covers by what their list entries say: full ID -> names (a container's as listed,
    `/web`; its own name only, never the `/linker/alias` names of legacy links)."""
    listed = _LISTED[kind.name]
    covered: dict[str, list[str]] = {}
    for keys, rules in _lists(scope):
        status, answer = await get_json(address, _list_path(listed, keys, owner))
        if status != 200 or not isinstance(answer, list):
            raise LookupError_(f"the daemon answered {status} to a list of {kind.name}s")
        for item in answer:
            entry = _entry(item, listed, kind)
            if entry is None:
                continue
            full_id, labels, names = entry
            names = _own_names(kind, names)
            if any(rule.covers(labels, _scope_name(kind, names)) for rule in rules):
                covered[full_id] = names
    return covered


def _lists(scope: Scope) -> list[tuple[frozenset[str], list[ObjectScope]]]:
    """The lists to ask for: one per distinct set of label keys the rules need (the daemon's
    `label=KEY` filter keeps objects carrying the key, whatever its value), with the rules
    each serves; a rule that needs no label makes one unfiltered list serve every rule."""
    wanted: dict[frozenset[str], list[ObjectScope]] = {}
    for _, rule in scope.rules:
        keys = {key for key, _ in rule.labels}
        if rule.stacks is not None:
            keys.add(STACK_LABEL)
        wanted.setdefault(frozenset(keys), []).append(rule)
    if frozenset() in wanted:
        return [(frozenset(), [rule for _, rule in scope.rules])]
    return list(wanted.items())


def _list_path(listed: _Listed, keys: frozenset[str], owner: str | None) -> str:
    labels = sorted(keys)
    if owner is not None:
        labels.append(f"{OWNER_LABEL}={owner}")
    if not labels:
        return listed.path.rstrip("?&")
    return listed.path + "filters=" + quote(json.dumps({"label": labels}))


def _entry(
    item: object, listed: _Listed, kind: Kind
) -> tuple[str, dict[str, str], list[str]] | None:
    if not isinstance(item, dict):
        return None
    full_id = item.get(listed.id_field)
    if not isinstance(full_id, str) or not full_id:
        return None
    where = item.get("Spec") if listed.spec else item
    if not isinstance(where, dict):
        return None
    if kind is CONTAINER:
        given = where.get("Names")
        names = [n for n in given if isinstance(n, str)] if isinstance(given, list) else []
    else:
        name = where.get("Name")
        names = [name] if isinstance(name, str) else []
    return full_id, labels_of(where.get("Labels")), names


def _own_names(kind: Kind, names: list[str]) -> list[str]:
    """The names an object is resolved by among the covered ones: a container's own (`/web`),
    never a legacy link's alias, listed among the linked container's `Names` as
    `/linker/alias`: the daemon resolves `linker/alias` to the linked container, so resolving
    it among the covered ones would tell that an out-of-scope `linker` exists and links to it
    (the same reference with a linker that does not exist is absent)."""
    if kind is not CONTAINER:
        return names
    return [n for n in names if n.startswith("/") and "/" not in n[1:]]


def _scope_name(kind: Kind, names: list[str]) -> str:
    """The name a scope matches: a container's own (listed `/web`; a legacy link's alias is
    listed too, as `/other/alias`: not its name)."""
    if kind is not CONTAINER:
        return names[0] if names else ""
    own = [n[1:] for n in names if n.startswith("/") and "/" not in n[1:]]
    return own[0] if own else ""


async def _covered_task(
    address: Address, reference: str, scope: Scope, owner: str | None
) -> str | None:
    """A task ID prefix, among the tasks of the covered services (tasks have no names)."""
    if not reference:
        return None
    services = await covered_objects(address, SERVICE, scope, owner)
    if not services:
        return None
    status, answer = await get_json(address, "/tasks")
    if status != 200 or not isinstance(answer, list):
        raise LookupError_(f"the daemon answered {status} to a list of tasks")
    fits = {
        item["ID"]
        for item in answer
        if isinstance(item, dict)
        and isinstance(item.get("ID"), str)
        and item.get("ServiceID") in services
        and item["ID"].startswith(reference)
    }
    if len(fits) > 1:
        raise Unresolved(f"the daemon cannot tell which task {reference!r} names")
    return next(iter(fits), None)


async def id_prefix_taken(address: Address, kind: Kind, name: str) -> bool:
    """Whether `name` is the start of an existing swarm object's ID of `kind` (a service,
    secret or config): one list, narrowed by the daemon to the IDs with that prefix (the
    `id` filter is swarmkit's IDPrefixes: moby daemon/cluster/filters.go), checked here
    again. Whatever the object, in scope or not: the answer names none. LookupError_ when
    the daemon cannot be asked."""
    listed = _LISTED[kind.name]
    target = listed.path + "filters=" + quote(json.dumps({"id": [name]}))
    status, answer = await get_json(address, target)
    if status != 200 or not isinstance(answer, list):
        raise LookupError_(f"the daemon answered {status} to a list of {kind.name}s")
    return any(
        isinstance(item, dict)
        and isinstance(item.get(listed.id_field), str)
        and item[listed.id_field].startswith(name)
        for item in answer
    )
