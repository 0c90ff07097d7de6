"""Bounded memo tables for the hot path.

The gateway remembers the answers of pure functions that clients make it compute again and
again (parsed heads, verdicts, Host checks). A table is emptied when it is full: no eviction
bookkeeping on the hot path, and memory bounded whatever clients send.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V, limit: int) -> None:
    """Store `value` under `key`, emptying the table first if it holds `limit` entries."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
