"""The memory budget for everything the gateway holds whole: request bodies and answers.

Bodies judged before forwarding (guardrails, ownership labels), bodies read and dropped on
operations that take none, and answers read whole to be redacted or checked all sit in memory
until they are complete. Each is capped on its own; together, per process, they stay under
`--held-bodies-max`: a hold that would pass it is refused with 503 (up front when a
Content-Length says so, or when a chunked body grows past it), so 300 connections each one
byte short of a checked body cannot pin 300 MB.

Sans-I/O: a `HoldBudget` per gateway process, a `Share` per hold in progress. A share gives
back everything it took when its hold ends, whichever way it ends (complete, refused, timed
out, connection lost).
"""

from __future__ import annotations

DEFAULT_HELD_BODIES_MAX_BYTES = 64 * 1024 * 1024


class HoldBudget:
    """Bytes held whole in this process, against one limit."""

    __slots__ = ("limit", "used")

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.used = 0

    def take(self, count: int) -> bool:
        if self.used + count > self.limit:
            return False
        self.used += count
        return True

    def give(self, count: int) -> None:
        self.used -= count
        assert self.used >= 0, "gave back more than was taken"


class Share:
    """One hold's part of the budget: what it has taken so far."""

    __slots__ = ("budget", "taken")

    def __init__(self, budget: HoldBudget) -> None:
        self.budget = budget
        self.taken = 0

    def cover(self, total: int) -> bool:
        """Make the share at least `total` bytes; False (nothing more taken) over budget."""
        more = total - self.taken
        if more <= 0:
            return True
        if not self.budget.take(more):
            return False
        self.taken = total
        return True

    def end(self) -> None:
        """Give everything back (idempotent)."""
        if self.taken:
            self.budget.give(self.taken)
            self.taken = 0
