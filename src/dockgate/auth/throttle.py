"""Throttling of failed authentication attempts, per source address and per user name.

Each key (a source address, a user name) keeps the times of its recent failures, at most `limit`
of them. Once `limit` failures fall inside the window, further attempts under that key are
answered `429 Too Many Requests` without checking any credentials (which also spares the CPU
a password hash costs) until the oldest failure leaves the window.

Why both keys: per source stops one machine guessing many users; per user stops many machines
(a botnet) guessing one user. The per-user limit is higher than the per-source one, since
anybody can spend a user's attempts: the lock slows guessing without locking the user out for
long. A success clears the user's failures, not the source's (a source holding one valid
account must not reset its guesses at others).

Memory is bounded: attackers choose user names freely, so past `max_keys` keys the table is
emptied (forgetting failures is the safe direction for availability; the limit is a brake, not
the only barrier: passwords are still bcrypt or argon2).

An IPv6 source counts by its /64: one machine usually holds a whole /64, and counting single
addresses would give it billions of fresh budgets.

A password check is charged as a failure before its hash is computed (`charge`), and the charge
is taken back when the password turns out right (`refund`): the hashes run in worker threads
(auth/checks.py), so without the charge a burst sent at once would have all its guesses checked
before the first failure was counted, whatever the limit.

With several workers (`--workers N`) each process counts on its own; the effective limit is up
to N times the configured one. Documented in docs/security.md.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    per_source: int = 20  # failures per window from one source address
    per_user: int = 50  # failures per window for one user name, from anywhere
    window_s: float = 60.0
    max_keys: int = 100_000

    @property
    def enabled(self) -> bool:
        return self.per_source > 0 or self.per_user > 0


@dataclass(frozen=True, slots=True)
class Charge:
    """A failure counted ahead of its check: where it was counted, and when."""

    source_key: str
    user: str | None
    at: float


class FailureThrottle:
    def __init__(
        self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._sources: dict[str, deque[float]] = {}
        self._users: dict[str, deque[float]] = {}

    def retry_after(self, source: str, user: str | None) -> float | None:
        """Seconds until an attempt from `source` (for `user`) is considered again, or None if
        it may be checked now."""
        if not self._sources and not self._users:
            return None  # the hot path when nobody is failing
        now = self._clock()
        key = _source_key(source)
        wait = _wait(self._sources.get(key), self.settings.per_source, self.settings, now)
        if user is not None:
            user_wait = _wait(self._users.get(user), self.settings.per_user, self.settings, now)
            if user_wait is not None:
                wait = max(wait or 0.0, user_wait)
        return wait

    def failed(self, source: str, user: str | None) -> None:
        self.charge(source, user)

    def charge(self, source: str, user: str | None) -> Charge:
        """Count a failure now, for an attempt whose check is still to run; `refund` it if the
        check succeeds."""
        now = self._clock()
        key = _source_key(source)
        _record(self._sources, key, self.settings.per_source, self.settings, now)
        if user is not None:
            _record(self._users, user, self.settings.per_user, self.settings, now)
        return Charge(key, user, now)

    def refund(self, charge: Charge) -> None:
        """Take back a charged failure (the check succeeded, or never ran). A failure already
        pushed out of its key's deque, or a table emptied since, leaves nothing to take back."""
        _take_back(self._sources, charge.source_key, charge.at)
        if charge.user is not None:
            _take_back(self._users, charge.user, charge.at)

    def succeeded(self, user: str | None) -> None:
        if user is not None and self._users:
            self._users.pop(user, None)


def _source_key(source: str) -> str:
    if ":" not in source:
        return source
    try:
        return str(ipaddress.IPv6Network((source, 64), strict=False))
    except ValueError:
        return source


def _wait(
    failures: deque[float] | None, limit: int, settings: ThrottleSettings, now: float
) -> float | None:
    if failures is None or limit <= 0 or len(failures) < limit:
        return None
    # The deque holds the last `limit` failures: throttled while the oldest is in the window.
    remaining = failures[0] + settings.window_s - now
    return remaining if remaining > 0 else None


def _record(
    table: dict[str, deque[float]],
    key: str,
    limit: int,
    settings: ThrottleSettings,
    now: float,
) -> None:
    if limit <= 0:
        return
    failures = table.get(key)
    if failures is None:
        if len(table) >= settings.max_keys:
            _forget_expired(table, settings.window_s, now)
            if len(table) >= settings.max_keys:
                table.clear()
        failures = table[key] = deque(maxlen=limit)
    failures.append(now)


def _take_back(table: dict[str, deque[float]], key: str, at: float) -> None:
    failures = table.get(key)
    if failures is None or at not in failures:
        return
    failures.remove(at)  # failures at the same instant are alike: any one of them will do
    if not failures:
        del table[key]


def _forget_expired(table: dict[str, deque[float]], window: float, now: float) -> None:
    for key in [k for k, failures in table.items() if failures[-1] + window <= now]:
        del table[key]
