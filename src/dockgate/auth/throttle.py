"""Throttling of failed authentication attempts, per source and per user name, built so that an
attacker cannot turn it against a user.

Each key (a source, a user name) keeps the times of its recent failures, at most `limit` of
them. Once `limit` failures fall inside the window, further attempts under that key are answered
`429 Too Many Requests` without checking any credentials (which also spares the CPU a password
hash costs) until the oldest failure leaves the window.

Why both keys: per source stops one machine guessing many users; per user stops many machines
(a botnet) guessing one user. Anybody can spend a user's attempts, though: 50 guesses at alice
from three addresses used to lock alice out everywhere, renewable forever (issue 12, item 3).
So a source that authenticated a user successfully (`succeeded`) is *known* for that user for
`known_source_s`, and the (source, user) pair is then judged by its own failures alone, up to
`per_source` per window, instead of by the source's and the user name's: alice keeps working
from the places she logs in from, while a new source guessing her is still stopped by the
per-user limit (the brute-force bound from new sources stays). This is the "known device"
exemption of OWASP's authentication guidance, and Django-axes' ip-and-username lockout.

Why the pair has a count of its own rather than the source's (issue 12 attack review): many
users can share one source (a NAT, a unix-socket uid that every root container has, IPv4
clients seen through a translator), and one of them spending the source's budget (20 guesses
at bob) locked every other user out where she logs in. The pair's own count keeps the bound on
guesses at alice from that source (`per_source` per window), and the source-wide count still
bounds guesses at every name not known there (spraying many names from one source). What the
pair rule cannot do: a user's *first* login from a source that somebody else is locking still
waits, as it would for an attacker. Every failure counts in the source's and the user name's
tables too, a known pair's included. A success no longer clears the user's failures: it would
hand an attacker a fresh budget each time the user logs in (the docker CLI opens a connection
per command).

Sources (`source_key`): an IPv4 address; an IPv6 address that carries an IPv4 client (IPv4-
mapped, NAT64's well-known prefix, 6to4, Teredo) by that IPv4 address, since it is one IPv4
machine (or NAT) however its IPv6 address reads; any other IPv6 source by its /64 (one machine
usually holds a whole /64, and counting single addresses would give it billions of fresh
budgets); a unix-socket client by its peer uid (policy/admission.py: `throttle_source`), so one
local user's guesses do not throttle every other local user.

Memory is bounded, since attackers choose user names and (with IPv6) sources freely: names
over 256 bytes are refused before they get here (authenticator.py), failures are kept as packed
doubles, a key whose failures all left the window is dropped (when looked up, and in a pass
over the tables once per window), and each table holds at most `max_keys` keys: past that,
expired keys go first, then keys that throttle nothing yet, then everything (forgetting is the
safe direction for availability; the limit is a brake, not the only barrier: passwords are
still bcrypt or argon2). The known sources are bounded by the users in the credential files
times `known_sources_per_user`; a pair's failures are counted only while it is known.

A password check is charged as a failure before its hash is computed (`charge`), and the charge
is taken back when the password turns out right (`refund`): the hashes run in worker threads
(auth/checks.py), so without the charge a burst sent at once would have all its guesses checked
before the first failure was counted, whatever the limit.

With several workers (`--workers N`) each process counts on its own; the effective limit is up
to N times the configured one.
"""

from __future__ import annotations

import ipaddress
import time
from array import array
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

# The prefix of a unix-socket client's throttle key; no IP address starts with it.
UNIX_UID_PREFIX = "unix uid "

# NAT64's well-known prefix: its addresses carry an IPv4 client (see `embedded_ipv4`).
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, section 2.1

# A table's key: a source key, a user name, or a (source key, user name) pair.
_K = TypeVar("_K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    per_source: int = 20  # failures per window from one source
    per_user: int = 50  # failures per window for one user name, from new sources
    window_s: float = 60.0
    max_keys: int = 10_000  # per table (sources, user names, known pairs)
    known_source_s: float = 7 * 24 * 3600.0  # how long a success keeps (source, user) known
    known_sources_per_user: int = 16  # the most recent ones are kept

    @property
    def enabled(self) -> bool:
        return self.per_source > 0 or self.per_user > 0


@dataclass(frozen=True, slots=True)
class Charge:
    """A failure counted ahead of its check: where it was counted, and when."""

    source_key: str
    user: str | None
    at: float
    # The failures the charge pushed out of a full list (given back with the refund: a right
    # password must not lift a lock by one attempt).
    source_dropped: float | None = None
    user_dropped: float | None = None
    # The (source, user) pair, when it was known at the charge (its own count was charged).
    pair: tuple[str, str] | None = None
    pair_dropped: float | None = None


class FailureThrottle:
    def __init__(
        self, settings: ThrottleSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        # Failure times, oldest first, as packed doubles: 8 bytes each (a deque of floats, as
        # before, cost about 1 KiB for a key with one failure).
        self._sources: dict[str, array[float]] = {}
        self._users: dict[str, array[float]] = {}
        # The failures of known (source key, user) pairs, counted while the pair is known.
        self._pairs: dict[tuple[str, str], array[float]] = {}
        # user name -> {source key: time of its last success}, oldest first.
        self._known: dict[str, dict[str, float]] = {}
        self._next_sweep = clock() + settings.window_s

    def retry_after(self, source: str, user: str | None) -> float | None:
        """Seconds until an attempt from `source` (for `user`) is considered again, or None if
        it may be checked now."""
        if not self._sources and not self._users and not self._pairs:
            return None  # the hot path when nobody is failing
        now = self._clock()
        key = source_key(source)
        settings = self.settings
        if user is not None and self._is_known(key, user, now):
            # Where the user authenticated: her own failures from there decide, not those of
            # the other users of the source, nor those at her name from elsewhere.
            return _wait(self._pairs, (key, user), settings.per_source, settings.window_s, now)
        wait = _wait(self._sources, key, settings.per_source, settings.window_s, now)
        if user is not None:
            user_wait = _wait(self._users, user, settings.per_user, settings.window_s, now)
            if user_wait is not None:
                wait = max(wait or 0.0, user_wait)
        return wait

    def failed(self, source: str, user: str | None) -> None:
        self.charge(source, user)

    def charge(self, source: str, user: str | None) -> Charge:
        """Count a failure now, for an attempt whose check is still to run; `refund` it if the
        check succeeds."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        key = source_key(source)
        settings = self.settings
        source_dropped = _record(self._sources, key, settings.per_source, settings, now)
        user_dropped = pair_dropped = None
        pair = None
        if user is not None:
            user_dropped = _record(self._users, user, settings.per_user, settings, now)
            if self._is_known(key, user, now):
                pair = (key, user)
                pair_dropped = _record(self._pairs, pair, settings.per_source, settings, now)
        return Charge(key, user, now, source_dropped, user_dropped, pair, pair_dropped)

    def refund(self, charge: Charge) -> None:
        """Take back a charged failure (the check succeeded, or never ran). A failure already
        pushed out of its key's list, or a table emptied since, leaves nothing to take back."""
        limits = self.settings
        _take_back(
            self._sources, charge.source_key, charge.at, charge.source_dropped, limits.per_source
        )
        if charge.user is not None:
            _take_back(self._users, charge.user, charge.at, charge.user_dropped, limits.per_user)
        if charge.pair is not None:
            _take_back(self._pairs, charge.pair, charge.at, charge.pair_dropped, limits.per_source)

    def succeeded(self, source: str, user: str | None) -> None:
        """`user` authenticated from `source`: from there, `user` is judged by the pair's own
        failures (for `known_source_s`). No failures are cleared."""
        if user is None or not self.settings.enabled:
            return
        now = self._clock()
        key = source_key(source)
        known = self._known.get(user)
        if known is None:
            if len(self._known) >= self.settings.max_keys:
                self._forget_unknown(now)
            known = self._known[user] = {}
        else:
            known.pop(key, None)  # re-inserted last: the dict stays ordered by last success
        known[key] = now
        if len(known) > self.settings.known_sources_per_user:
            del known[next(iter(known))]

    def _is_known(self, key: str, user: str, now: float) -> bool:
        known = self._known.get(user)
        if not known:
            return False
        at = known.get(key)
        return at is not None and now - at < self.settings.known_source_s

    def _sweep(self, now: float) -> None:
        """Drop every key whose failures have all left the window: the tables hold only what
        still counts (once per window, so the cost per failure stays constant)."""
        window = self.settings.window_s
        _forget(self._sources, lambda failures: failures[-1] + window <= now)
        _forget(self._users, lambda failures: failures[-1] + window <= now)
        _forget(self._pairs, lambda failures: failures[-1] + window <= now)
        self._next_sweep = now + window

    def _forget_unknown(self, now: float) -> None:
        """Known sources past their time go; if the table is still full, all of it (it holds
        only users that authenticated: full means a huge credential file, not an attack)."""
        horizon = now - self.settings.known_source_s
        for user, known in list(self._known.items()):
            for key in [k for k, at in known.items() if at <= horizon]:
                del known[key]
            if not known:
                del self._known[user]
        if len(self._known) >= self.settings.max_keys:
            self._known.clear()


def source_key(source: str) -> str:
    """The key a source counts under. An IPv6 address that carries an IPv4 client counts as that
    IPv4 address: it is one IPv4 machine (or NAT), and under its /64 every client of a NAT64
    translator, of a 6to4 relay's site or of a Teredo server would share one key, so one of
    them could lock all the others out (the attack review of issue 12). Any other IPv6 address
    counts by its /64; anything else (an IPv4 address, a unix-socket uid) as it is."""
    if ":" not in source or source.startswith(UNIX_UID_PREFIX):
        return source
    try:
        address = ipaddress.IPv6Address(source)
    except ValueError:
        return source
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return str(embedded)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 client an IPv6 address stands for, where the address format says so:
    - IPv4-mapped ::ffff:a.b.c.d (RFC 4291, section 2.5.5.2): a dual-stack socket's view of an
      IPv4 peer; the last 32 bits;
    - NAT64/SIIT's well-known prefix 64:ff9b::/96 (RFC 6052, section 2.2, the /96 layout): an
      IPv4 host as translated for an IPv6-only network; the last 32 bits;
    - 6to4 2002::/16 (RFC 3056, section 2): a site behind the IPv4 router whose address is
      bits 16..47 (the site has a whole /48: by /64 it would get 65,536 budgets);
    - Teredo 2001:0::/32 (RFC 4380, section 4): server IPv4 (bits 32..63), flags, the client's
      mapped port and its public IPv4 (bits 96..127), both XORed with all ones. The key is the
      client's public IPv4 alone: the port is picked by the client's NAT, one per mapping, so
      counting it would give one IPv4 machine a budget per port (plain IPv4 clients behind one
      NAT share a key the same way).
    Other translation prefixes (RFC 8215's 64:ff9b:1::/48, a network-specific prefix, 6rd)
    have a layout only their operator knows: they count by /64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # (server, client): the client, de-obfuscated
    return None


def _wait(
    table: dict[_K, array[float]], key: _K, limit: int, window: float, now: float
) -> float | None:
    failures = table.get(key)
    if failures is None or limit <= 0:
        return None
    if failures[-1] + window <= now:
        del table[key]  # every failure has left the window: the key counts nothing
        return None
    if len(failures) < limit:
        return None
    # The list holds the last `limit` failures: throttled while the oldest is in the window.
    remaining = failures[0] + window - now
    return remaining if remaining > 0 else None


def _record(
    table: dict[_K, array[float]],
    key: _K,
    limit: int,
    settings: ThrottleSettings,
    now: float,
) -> float | None:
    """Count a failure; the one it pushed out of a full list, if any."""
    if limit <= 0:
        return None
    failures = table.get(key)
    if failures is None:
        if len(table) >= settings.max_keys:
            _make_room(table, limit, settings, now)
        table[key] = array("d", (now,))
        return None
    failures.append(now)
    if len(failures) <= limit:
        return None
    dropped = failures[0]
    del failures[0]  # only the last `limit` failures decide (at most `limit` doubles)
    return dropped


def _make_room(
    table: dict[_K, array[float]], limit: int, settings: ThrottleSettings, now: float
) -> None:
    """A full table: expired keys go first, then keys under their limit (they throttle
    nothing yet: forgetting one gives back at most `limit - 1` attempts), then everything."""
    window = settings.window_s
    _forget(table, lambda failures: failures[-1] + window <= now)
    if len(table) >= settings.max_keys:
        _forget(table, lambda failures: len(failures) < limit or failures[0] + window <= now)
    if len(table) >= settings.max_keys:
        table.clear()


def _forget(table: dict[_K, array[float]], stale: Callable[[array[float]], bool]) -> None:
    for key in [k for k, failures in table.items() if stale(failures)]:
        del table[key]


def _take_back(
    table: dict[_K, array[float]], key: _K, at: float, dropped: float | None, limit: int
) -> None:
    failures = table.get(key)
    if failures is None or at not in failures:
        return
    failures.remove(at)  # failures at the same instant are alike: any one of them will do
    if dropped is not None and len(failures) < limit:
        failures.insert(0, dropped)  # the oldest: the list stays in order
    if not failures:
        del table[key]
