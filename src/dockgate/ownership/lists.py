"""Ownership mode: the objects a narrowed list's filters name (a container list's `since` and
`before`, a task list's `service`).

`docker ps --filter before=X` lists the containers created before X, `since=X` those created
after it: the daemon walks its containers newest first, skipping until it meets X, or stopping
there (moby v20.10.24 daemon/list.go foldFilter, idOrNameFilter, includeContainerInList),
and X not found is an error ("No such container: X", a 500 from 20.10). Narrowed to the
caller's label, the list of bob's containers `before=<alice's container>` told which of
bob's were created before alice's, and the error or not told whether alice's container (an
ID or a name) exists at all.

So each container these filters name is looked up like any other reference: someone else's,
or none, is a 404 "No such container: X" (what every other container reference answers); the
caller's own goes on pinned to its full ID (the daemon finds a full ID exactly,
memdbView.Get). Every value counts: the
daemon walks them all (filters are sets, the one kept last in Go's map order wins). The legacy
`since=`/`before=` query parameters (docker-py still sends them) are read by no daemon this
supports (20.10 parses them into ContainerListOptions and never uses them; newer ones drop
them), but are looked up and pinned the same way: what a daemon might read is never someone
else's.

A task list's `service` filter is the same kind of question: the daemon resolves each value
to a service (full ID, name or ID prefix) and answers 404 for none (moby v20.10.24
daemon/cluster/tasks.go GetTasks, getService), so bob's `docker service ps alice-web` (an
empty list, or a 404) told whether a service of that name or ID prefix exists. Each is looked
up and pinned the same way (getService finds a full ID first).

The `filters` value seen here is the one dockgate wrote (ownership.with_owner_filter): one
JSON object, as Python read it, in either of the daemon's two forms.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

from dockgate.ownership.operations import CONTAINER, MAX_REFERENCES, SERVICE, Kind, LookUp


@dataclass(frozen=True, slots=True)
class Referring:
    """The filter keys of a list that name objects of `kind`, and the query parameters of
    the same meaning an older client sends."""

    kind: Kind
    filters: tuple[str, ...]
    parameters: tuple[str, ...] = ()


# The narrowed lists whose filters name objects the daemon resolves (and fails on).
REFERRING_LISTS = {
    "ContainerList": Referring(CONTAINER, ("since", "before"), ("since", "before")),
    "TaskList": Referring(SERVICE, ("service",)),
}


@dataclass(frozen=True, slots=True)
class LookUpAll:
    """Ask the daemon who owns each of `references` (all of `kind`); any not the caller's:
    `status` with the kind's not-found message for it; all the caller's: go on with
    `pin(full IDs by reference)` as the new target. One reference is ownership.LookUp's case
    (`of_one`)."""

    kind: Kind
    references: tuple[str, ...]
    pin: Callable[[Mapping[str, str]], str]
    status: int = 404

    @classmethod
    def of_one(cls, step: LookUp) -> LookUpAll:
        reference, pin = step.reference, step.pin
        return cls(step.kind, (reference,), lambda full_ids: pin(full_ids[reference]), step.status)


def list_plan(operation: str, raw_target: str) -> LookUpAll | None:
    """The look-ups a narrowed list's target needs, None when it names no object.
    ValueError (a 400) for filters that name one in a way that cannot be read here."""
    referring = REFERRING_LISTS.get(operation)
    if referring is None:
        return None
    kind, keys, parameters = referring.kind, referring.filters, referring.parameters
    path, _, query = raw_target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    # The legacy parameters are read as `r.Form.Get`: the first value, "" for none.
    legacy = {key: next((v for n, v in pairs if n == key), "") for key in parameters}
    filters = _filters(pairs)
    named = [value for value in legacy.values() if value]
    for key in keys:
        named += _values(filters, key, kind)
    if not named:
        return None
    unique = tuple(dict.fromkeys(named))
    if len(unique) > MAX_REFERENCES:
        raise ValueError(f"a list may name at most {MAX_REFERENCES} {kind.name}s")

    def pin(full_ids: Mapping[str, str]) -> str:
        kept = [(name, value) for name, value in pairs if name not in legacy and name != "filters"]
        kept += [(key, full_ids[value]) for key, value in legacy.items() if value]
        if filters:
            pinned = _pinned(filters, keys, full_ids)
            kept.append(("filters", json.dumps(pinned, separators=(",", ":"))))
        return path + "?" + urlencode(kept, quote_via=quote)

    return LookUpAll(kind, unique, pin)


def _filters(pairs: list[tuple[str, str]]) -> dict[str, object]:
    given = [value for name, value in pairs if name == "filters"]
    if not given or not given[0]:
        return {}
    try:
        value = json.loads(given[0])
    except RecursionError:
        raise ValueError("filters is nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("filters must be a JSON object")  # noqa: TRY004 - a 400
    return value


def _values(filters: Mapping[str, object], key: str, kind: Kind) -> list[str]:
    """The values of one filter key, in either form (moby api/types/filters FromJSON: a list
    of strings, or an object whose keys are the values, whatever their booleans say:
    WalkValues walks them all)."""
    given = filters.get(key)
    if given is None:
        return []
    values = list(given) if isinstance(given, (list, dict)) else None
    if values is None or not all(isinstance(v, str) for v in values):
        raise ValueError(f"filters.{key} must be a list of {kind.name} names or IDs")
    if "" in values:
        raise ValueError(f"filters.{key}: an empty {kind.name} reference")
    return values


def _pinned(
    filters: dict[str, object], keys: tuple[str, ...], full_ids: Mapping[str, str]
) -> dict[str, object]:
    pinned = dict(filters)
    for key in keys:
        given = filters.get(key)
        if isinstance(given, list):
            pinned[key] = [full_ids[v] for v in given]
        elif isinstance(given, dict):
            pinned[key] = {full_ids[v]: flag for v, flag in given.items()}
    return pinned
