"""Ownership mode: a reference the daemon finds ambiguous is resolved among the caller's own
objects, so that ambiguity tells nothing of other callers' objects.

The daemon resolves a reference as a full ID, then a name, then an ID prefix, and fails when
a prefix (or a network name) fits several objects: a 400 for networks and swarm objects
(daemon/network.go FindNetwork, swarmkit's getService, getSecret, getConfig: "is
ambiguous"), a 500 for containers on 20.10 (daemon/container.go GetContainer: truncindex's
"Multiple IDs found with provided prefix"). Passed on (a 400, or a 502 where the look-up
failed), that told bob that two objects, anyone's, start with `3f`, where one or none is a
404: probing prefixes rebuilt the tree of every
container ID on the daemon, so their count too (what /info no longer says).

So on that 400, the caller's own objects of the kind are listed (its owner label as the
filter, one request) and the reference is resolved among them as the daemon resolves it: one
fits, and it is looked up again by its full ID (so the owner that counts is the one
`lookup.find` reads, with whatever trust it puts in labels); none fits, and it is missing
(404, as when it names someone else's object); several of the caller's own fit, and it stays
ambiguous (400: about the caller's own objects only). The request then goes on pinned to the
full ID, as every checked reference does: the daemon acts on the caller's object even where,
asked with the prefix, it would have found it ambiguous.

That alone left the answer's time to tell: only the ambiguous prefix cost a list (of the
caller's own objects, which the caller can make as slow to list as he likes), so 10 ms
against 2 ms told "several objects start with this" from "none does" (attack review 12,
finding 3). So a reference that can only be an ID prefix (hex digits only, shorter than a
full ID: a name of hex digits only is refused at create, ownership.hex_name_problem) is
always resolved among the caller's own objects, one list, never by the daemon's prefix
search: its cost depends on the caller's objects alone, whatever fits it on the daemon. Full
IDs and names keep the direct look-up (one request, no list), and so does a swarm object's
prefix with letters past `f` (swarm IDs are base 36: such a prefix cannot be told from a
name), whose ambiguity still costs a list: its time still tells, for services, secrets and
configs only.

Volumes are found by exact name only; exec instances and tasks have no labels to list by (a
task ID prefix stays the daemon's ambiguity).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.ownership.lookup import Found, LookupError_, TooLarge, Unresolved, find, get_json
from dockgate.ownership.operations import (
    CONFIG,
    CONTAINER,
    NETWORK,
    OWNER_LABEL,
    SECRET,
    SERVICE,
    Kind,
)


@dataclass(frozen=True, slots=True)
class Listed:
    """How to list the caller's objects of a kind, and where each keeps its ID and name."""

    path: str  # the list endpoint, to which `filters=` is added
    id_field: str
    name_path: tuple[str, ...]  # where its name is (containers: `Names`, a list of "/name")


_LISTED = {
    CONTAINER.name: Listed("/containers/json?all=1&", "Id", ("Names",)),
    NETWORK.name: Listed("/networks?", "Id", ("Name",)),
    SERVICE.name: Listed("/services?", "ID", ("Spec", "Name")),
    SECRET.name: Listed("/secrets?", "ID", ("Spec", "Name")),
    CONFIG.name: Listed("/configs?", "ID", ("Spec", "Name")),
}


# The length of a full ID: containers' and networks' are 64 hex digits (moby
# pkg/stringid.GenerateRandomID), swarm objects' 25 base-36 digits (swarmkit identity.NewID).
_FULL_ID_LENGTH = {
    CONTAINER.name: 64,
    NETWORK.name: 64,
    SERVICE.name: 25,
    SECRET.name: 25,
    CONFIG.name: 25,
}
_HEX = frozenset("0123456789abcdefABCDEF")


def is_id_prefix(kind: Kind, reference: str) -> bool:
    """Whether `reference` can only be an ID prefix of `kind` (no name has only hex digits):
    resolved among the caller's own objects, never by the daemon's prefix search. Upper-case
    hex too: the daemon finds no ID by it, but a list answers the same in no more time."""
    full = _FULL_ID_LENGTH.get(kind.name)
    return full is not None and 0 < len(reference) < full and set(reference) <= _HEX


async def find_owned(
    address: Address, kind: Kind, reference: str, owner: str | None
) -> Found | None:
    """`lookup.find`, with an ID prefix (or an ambiguous reference) resolved among `owner`'s
    objects."""
    listed = _LISTED.get(kind.name)
    if owner is not None and listed is not None and is_id_prefix(kind, reference):
        return await _find_prefix(address, kind, reference, owner, listed)
    try:
        return await find(address, kind, reference)
    except (Unresolved, LookupError_):
        # LookupError_: the 20.10 daemon answers an ambiguous container prefix with a 500
        # ("Multiple IDs found with provided prefix", daemon/container.go GetContainer:
        # errdefs.System of truncindex's error). A daemon that failed otherwise fails the
        # list too, and its own failure stands.
        if owner is None or listed is None:
            raise
        status, answer = await get_json(address, _owned_list(listed, owner))
        if status != 200 or not isinstance(answer, list):
            # No list to resolve it in (a daemon does not fail this way): the daemon's own
            # answer, ambiguous, stands.
            raise
        full_id = resolved(kind, reference, answer)
    if full_id is None:
        return None
    return await find(address, kind, full_id)


async def _find_prefix(
    address: Address, kind: Kind, reference: str, owner: str, listed: Listed
) -> Found | None:
    """An ID prefix, resolved among the objects carrying `owner`'s label, each judged as
    lookup.find judges it. The label is not the trust rule: another caller's build step from
    an image carrying `owner`'s label is listed too, and with megabytes of labels it made the
    list too large to read, every short ID of `owner`'s a 502 (attack review 12, second
    ownership pass). Then the list is asked again narrowed by the daemon to IDs holding the
    prefix (its `id` filter), where such a step is only if its random ID starts with it. Not
    the first choice: for containers 20.10 finds `id=` values through its ID index, which
    finds nothing for a prefix several containers share, anyone's (daemon/list.go
    filterByNameIDMatches), so the caller's own container would read as missing."""
    try:
        status, answer = await get_json(address, _owned_list(listed, owner))
    except TooLarge:
        status, answer = await get_json(address, _owned_list(listed, owner, reference))
    if status != 200 or not isinstance(answer, list):
        # A daemon that lists nothing here fails the request (502), rather than asking it
        # the prefix (whose time would tell).
        raise LookupError_(f"the daemon answered {status} to a list of the caller's {kind.name}s")
    try:
        full_id = resolved(kind, reference, answer)
    except Unresolved:
        # Several carry the label: the label is not the trust rule (a build step made from an
        # image carrying it), so only those lookup.find gives the caller count.
        return await _one_trusted(address, kind, reference, owner, answer)
    return None if full_id is None else await find(address, kind, full_id)


async def _one_trusted(
    address: Address, kind: Kind, reference: str, owner: str, items: list[object]
) -> Found | None:
    listed = _LISTED[kind.name]
    owned: list[Found] = []
    for item in items:
        full_id = item.get(listed.id_field) if isinstance(item, dict) else None
        if isinstance(full_id, str) and full_id.startswith(reference):
            found = await find(address, kind, full_id)
            if found is not None and found.owner == owner:
                owned.append(found)
    if len(owned) > 1:
        raise Unresolved(f"the daemon cannot tell which {kind.name} {reference!r} names")
    return owned[0] if owned else None


def _owned_list(listed: Listed, owner: str, prefix: str | None = None) -> str:
    """The list of `owner`'s objects (by label), narrowed to IDs holding `prefix` if given:
    the daemon's `id` filter matches an ID prefix for containers (20.10 answers
    `id=<prefix>`, not `id=^<prefix>`) and swarm objects (swarmkit's IDPrefixes), and an
    unanchored regular expression for networks (moby's filters.Args.Match): a superset, of
    which `resolved` keeps the IDs that start with it."""
    wanted: dict[str, list[str]] = {"label": [f"{OWNER_LABEL}={owner}"]}
    if prefix is not None:
        wanted["id"] = [prefix]
    return listed.path + "filters=" + quote(json.dumps(wanted))


def resolved(kind: Kind, reference: str, items: list[object]) -> str | None:
    """The full ID of the one object among `items` (a list answer) that `reference` names as
    the daemon resolves it: a full ID, then a name, then an ID prefix. None when none does;
    Unresolved when several do."""
    listed = _LISTED[kind.name]
    objects: list[tuple[str, list[str]]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        full_id = item.get(listed.id_field)
        if isinstance(full_id, str) and full_id:
            objects.append((full_id, _names(item, listed)))
    return resolve_among(kind, reference, objects)


def resolve_among(
    kind: Kind, reference: str, objects: Sequence[tuple[str, list[str]]]
) -> str | None:
    """The full ID of the one object among `objects` (full ID, names as the list writes them)
    that `reference` names as the daemon resolves it: a full ID, then a name, then an ID
    prefix (object scopes resolve among the covered objects the same way: scopefind.py).
    None when none does; Unresolved when several do."""
    if kind is CONTAINER and reference.startswith("/"):
        # By name only (lookup.find: no ID starts with `/`).
        steps = [[i for i, names in objects if reference in names]]
    else:
        steps = [
            [i for i, _ in objects if i == reference],
            [i for i, names in objects if _bare(kind, reference) in names],
            [i for i, _ in objects if i.startswith(reference)],
        ]
    for fits in steps:
        if len(set(fits)) == 1:
            return fits[0]
        if fits:
            raise Unresolved(f"the daemon cannot tell which {kind.name} {reference!r} names")
    return None


def _names(item: dict[str, object], listed: Listed) -> list[str]:
    node: object = item
    for key in listed.name_path:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [n for n in node if isinstance(n, str)]
    return []


def _bare(kind: Kind, reference: str) -> str:
    """The reference as the list writes a name: a container's with its leading `/`."""
    return "/" + reference if kind is CONTAINER else reference
