"""Bytes cut into pieces, to feed a sans-IO parser every way a socket could deliver them."""

from __future__ import annotations

from collections.abc import Iterator


def split(data: bytes, pattern: str) -> list[bytes]:
    """`data` cut into the pieces of a named split pattern: ``whole``, ``bytewise`` or ``byN``
    (N bytes a piece)."""
    if pattern == "whole":
        return [data]
    stride = 1 if pattern == "bytewise" else int(pattern.removeprefix("by"))
    return [data[i : i + stride] for i in range(0, len(data), stride)]


def two_piece_splits(data: bytes) -> Iterator[list[bytes]]:
    """`data` cut in two at every position (both pieces non-empty)."""
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
