"""Reading a request's query as the daemon does: Go's ``url.ParseQuery`` and ``r.FormValue``.

Python's ``parse_qsl`` differs from Go on the pairs that matter for a check: it splits on ``;``
too in older versions, and decodes a bad %-escape where Go drops the pair. A value the gateway
judges or looks up must be the value the daemon will use."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def query_value(query: str, key: str) -> str | None:
    """The first value of `key` in `query`, parsed as Go's ``url.ParseQuery`` (what the daemon's
    ``r.FormValue`` sees): pairs split on ``&``, a pair with ``;`` (as Go 1.17+; api/target.py
    refuses such a query before any rule reads it) or a bad %-escape skipped."""
    if query.startswith("?"):
        query = query[1:]
    for pair in query.split("&"):
        if not pair or ";" in pair or _BAD_ESCAPE.search(pair):
            continue
        raw_key, _, raw_value = pair.partition("=")
        if unquote_plus(raw_key, errors="replace") == key:
            return unquote_plus(raw_value, errors="replace")
    return None


def query_pairs(query: str) -> list[tuple[str, str]]:
    """Every (key, value) of `query` in order, as Go's ``url.ParseQuery`` keeps them (the same
    pairs `query_value` looks through)."""
    if query.startswith("?"):
        query = query[1:]
    pairs: list[tuple[str, str]] = []
    for pair in query.split("&"):
        if not pair or ";" in pair or _BAD_ESCAPE.search(pair):
            continue
        raw_key, _, raw_value = pair.partition("=")
        pairs.append(
            (unquote_plus(raw_key, errors="replace"), unquote_plus(raw_value, errors="replace"))
        )
    return pairs


# What moby's httputils.BoolValue reads as false once lower-cased and trimmed
# (strings.ToLower(strings.TrimSpace(v))); any other value is true.
_FALSE_WORDS = frozenset({"", "0", "no", "false", "none"})
# The ASCII that Go's strings.TrimSpace trims. Python's str.strip() trims more (U+001C-U+001F):
# "0\x1f" would read as false here and true in the daemon.
_ASCII_SPACE = " \t\n\r\v\f"


def bool_value(value: str) -> bool:
    """A query value as httputils.BoolValue reads it, erring towards true: only ASCII is
    trimmed and lower-cased, so a value Go's TrimSpace or ToLower might read otherwise
    (non-ASCII) counts as true."""
    word = value.strip(_ASCII_SPACE)
    return not (word.isascii() and word.lower() in _FALSE_WORDS)
