"""JSON read the way the daemon reads it: Go's `encoding/json` decoding into the API's structs.

A checker that reads a body differently from the daemon is a bypass, so the rules here are
Go's, not Python's:

- object keys match struct fields case-insensitively, with Go's Unicode simple folding (so
  ``"U\\u017fer"`` sets ``User`` and ``"\\u212a"`` is a ``k``);
- every key is applied in order, so the last duplicate wins;
- ``null`` leaves a string, number or bool field unchanged, and clears a slice, map or pointer;
- objects given twice for the same struct (or map) field merge, field by field (key by key);
- invalid UTF-8 is replaced (Go does the same), NaN and Infinity are not JSON.

Objects are kept as their key/value pairs in order (`GoObject`), and a struct is the sequence
of objects that were decoded into it (`Struct`); the accessors below give a field's effective
value the way Go would leave it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final, TypeAlias


class GoObject:
    """A JSON object as its key/value pairs in order, duplicates kept (Go acts on each)."""

    __slots__ = ("_folded", "pairs")

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs
        self._folded: _Unique | dict[str, list[object]] | None = None

    def __repr__(self) -> str:
        return f"GoObject({self.pairs!r})"

    def lookup(self, want: str) -> list[object]:
        """The values of the keys that fold to `want` (lower case), in order."""
        index = self._folded
        if index is None:
            index = self._folded = self._build_index()
        if isinstance(index, _Unique):
            found = index.get(want, _ABSENT)
            return [] if found is _ABSENT else [found]
        return index.get(want, [])

    def unique_keys(self) -> dict[str, object] | None:
        """Each folded key with its value, when no two keys fold alike (the common case; the
        index is built once and shared with `lookup`); None when some do."""
        index = self._folded
        if index is None:
            index = self._folded = self._build_index()
        return index if isinstance(index, _Unique) else None

    def _build_index(self) -> _Unique | dict[str, list[object]]:
        """Built once per object, at C speed in the common case of no two keys folding alike."""
        # ASCII keys (all of them, from ordinary clients) fold inline: no call per key.
        keys = [key.lower() if key.isascii() else _fold_key(key) for key, _ in self.pairs]
        unique = _Unique(zip(keys, [value for _, value in self.pairs], strict=True))
        if len(unique) == len(keys):
            return unique
        lists: dict[str, list[object]] = {}
        for key, (_, value) in zip(keys, self.pairs, strict=True):
            lists.setdefault(key, []).append(value)
        return lists


class _Unique(dict[str, object]):
    """An index where each folded key appears once: values stored bare."""


_ABSENT = object()


_NO_FIELD = "\x00"  # no field name holds a NUL: where keys that can match no field go


def _fold_key(key: str) -> str:
    """A key as Go compares it with ASCII field names. Only ASCII keys (after folding long s
    and the Kelvin sign) can equal one; any other key becomes `_NO_FIELD`."""
    if key.isascii():
        return key.lower()
    translated = key.translate(_FOLD)
    return translated.lower() if translated.isascii() else _NO_FIELD


# Public for the field table (fields.py), which walks keys as Go matches them to fields.
fold_key = _fold_key


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # Go refuses NaN and Infinity


_DECODER = json.JSONDecoder(object_pairs_hook=GoObject, parse_constant=_reject_constant)
_GO_WHITESPACE = " \t\r\n"
MISSING: Final = object()
# The non-ASCII runes whose Unicode simple-fold orbit contains an ASCII letter (Go's
# bytes.EqualFold, hence encoding/json, matches them): KELVIN SIGN and LATIN SMALL LETTER LONG S.
_FOLD = str.maketrans({"\u212a": "k", "\u017f": "s"})

# A struct as the objects decoded into it, in order (Go merges them field by field).
Struct: TypeAlias = Sequence[GoObject]


def parse(body: bytes, *, strict_end: bool = False) -> object:
    """The first JSON value of `body`. With `strict_end`, anything but whitespace after it is a
    ValueError (the 20.10 daemon ignores it; newer ones refuse: a checker refuses too)."""
    text = body.decode("utf-8", "replace")
    start = len(text) - len(text.lstrip(_GO_WHITESPACE))
    value, end = _DECODER.raw_decode(text, start)
    if strict_end and text[end:].strip(_GO_WHITESPACE):
        raise ValueError("data after the JSON value")
    return value


def values(struct: Struct, field: str) -> list[object]:
    """The values given for `field`, in order: keys equal to it under Go's case folding."""
    want = field.lower()
    if len(struct) == 1:
        return struct[0].lookup(want)
    found: list[object] = []
    for obj in struct:
        found.extend(obj.lookup(want))
    return found


def scalar(struct: Struct, field: str) -> object:
    """A string/number/bool field: the last non-null value (null leaves it unchanged)."""
    if len(struct) == 1:
        # The common case, one object with no two keys folding alike: one dict look-up
        # (this runs for every field of every list entry a body holds).
        index = struct[0].unique_keys()
        if index is not None:
            found = index.get(field.lower(), MISSING)
            return MISSING if found is None else found
    result: object = MISSING
    for value in values(struct, field):
        if value is not None:
            result = value
    return result


def slice_(struct: Struct, field: str, *, strslice: bool = False) -> object:
    """A slice field: the last value (null makes it nil, i.e. absent). A `strslice` (Cmd and
    Entrypoint of a container) also takes a lone string as a one-element list."""
    result: object = MISSING
    for value in values(struct, field):
        result = MISSING if value is None else value
    if strslice and isinstance(result, str):
        return [result]
    return result


def struct(parent: Struct, field: str, *, pointer: bool) -> list[GoObject]:
    """A struct field: the objects decoded into it (they merge); null resets a pointer."""
    result: list[GoObject] = []
    for value in values(parent, field):
        if isinstance(value, GoObject):
            result.append(value)
        elif value is None and pointer:
            result = []
        # anything else is a type error: the daemon refuses the request, nothing to merge
    return result


def mapping(parent: Struct, field: str) -> dict[str, object] | None:
    """A map field (`map[string]T`): objects merge key by key, exact keys (maps do not fold),
    the last duplicate winning; null clears it. None when absent or null."""
    result: dict[str, object] | None = None
    for value in values(parent, field):
        if value is None:
            result = None
        elif isinstance(value, GoObject):
            result = result if result is not None else {}
            for key, item in value.pairs:
                result[key] = item
    return result
