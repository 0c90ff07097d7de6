"""Bounded memo tables.

The gateway remembers the answers of pure functions that clients make it compute again and
again (parsed heads, verdicts, Host checks). A hot-path table is emptied when it is full
(`remember`): no eviction bookkeeping on the hot path, and memory bounded whatever clients
send. Tables whose entries cost a daemon look-up or a handshake to make again (`Recent`)
forget the least recently used entry instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V, limit: int) -> None:
    """Store `value` under `key`, emptying the table first if it holds `limit` entries."""
    if len(table) >= limit:
        table.clear()
    table[key] = value


class Recent(Generic[K, V]):
    """At most `size` entries; when full, the least recently used one is forgotten first."""

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def get(self, key: K) -> V | None:
        """The entry (now the most recently used), or None when there is none."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
