"""Lists given twice in one body: refused, because Go reads them as neither list alone.

Go's `encoding/json` decodes a second array for the same slice field *into* the first one:
element i of the second array is decoded into element i of the first (encoding/json
`(*decodeState).array`: "Decode into element" for `i < v.Len()`), and the slice is then cut to
the second array's length. Struct elements therefore merge field by field: with
`"Secrets":[{"SecretID":"A","SecretName":"a"}], "Secrets":[{"File":{...}}]` the daemon keeps
one secret reference whose SecretID and SecretName are the *first* list's. A checker that
judges the last list (as Python and `gojson.slice_` do) would check one object and let the
daemon use another. Rather than model that merge everywhere, a body where any list field is
given twice (keys compared as Go compares them, through every object merged into the same
struct) is refused.

Keys are folded as Go folds struct field names everywhere, maps included (a map's keys are
exact in Go, so this refuses a little more than needed: `{"a":[1],"A":[2]}` in a map of lists;
no API map holds lists that a client needs to give twice).
"""

from __future__ import annotations

from collections.abc import Sequence

from dockgate.body import gojson


def repeated_list(body: bytes) -> str | None:
    """The dotted path of the first list field given twice in `body` (as Go merges it), or
    None. ValueError for a body that is not JSON (the caller refuses it anyway)."""
    try:
        top = gojson.parse(body)
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
    return _walk(_objects_of(top), "")


def _objects_of(value: object) -> Sequence[gojson.GoObject]:
    return (value,) if isinstance(value, gojson.GoObject) else ()


def _walk(merged: Sequence[gojson.GoObject], where: str) -> str | None:
    """`merged`: the objects Go decodes into one struct (or map), in order."""
    groups: dict[str, list[tuple[str, object]]] = {}
    for obj in merged:
        for key, value in obj.pairs:
            # gojson's own folding (Go's, as for every field it reads); not re-implemented here.
            groups.setdefault(gojson._fold_key(key), []).append((key, value))
    for pairs in groups.values():
        key = pairs[-1][0]
        path = f"{where}.{key}" if where else key
        lists = [value for _, value in pairs if isinstance(value, list)]
        if len(lists) > 1:
            return path
        # Objects given for the same field merge: their fields are one struct's.
        objects = [value for _, value in pairs if isinstance(value, gojson.GoObject)]
        found = _walk(objects, path) if objects else None
        if found is not None:
            return found
        for items in lists:
            for index, item in enumerate(items):
                found = _walk_value(item, f"{path}[{index}]")
                if found is not None:
                    return found
    return None


def _walk_value(value: object, where: str) -> str | None:
    if isinstance(value, gojson.GoObject):
        return _walk((value,), where)
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _walk_value(item, f"{where}[{index}]")
            if found is not None:
                return found
    return None
