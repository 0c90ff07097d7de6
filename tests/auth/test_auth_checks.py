"""Password checks off the event loop (auth/checks.py) and their order with the throttle
(policy/admission.py), on an event loop with real htpasswd entries; no daemon.

Claims under test: a check runs in a worker thread while the loop goes on; at most `limit`
checks wait or run, the next is refused at once (503 with Retry-After, nothing charged); a
failure is charged before its hash runs, so a burst sent at once from one source gets only
`per_source` hashes and 429 for the rest; a success takes its charge back and is remembered
(the next request is decided without a check, synchronously), even when its client has gone;
an unknown user is checked against a dummy of the file's most used algorithm and cost; a
bcrypt password over 72 bytes is checked by its first 72 bytes and never raises.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable

import argon2
import bcrypt
import pytest

from dockgate.auth.authenticator import Authenticator
from dockgate.auth.checks import CheckPool
from dockgate.auth.htpasswd import Htpasswd, dummy_credential, parse_htpasswd
from dockgate.auth.sourceaddr import parse_address_list
from dockgate.auth.throttle import FailureThrottle, ThrottleSettings
from dockgate.http.request import RequestHead, parse_head
from dockgate.policy.admission import Admission, Admissions, ConnectionFacts, PendingAdmission
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.loader import parse_policy_text

POLICY = """\
bindings:
  - policy: all
    users: [alice, bob]
policies:
  all:
    rules:
      - allow: {sections: ["*"]}
"""


def bcrypt_line(user: str, password: str, cost: int = 4) -> str:
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=cost)).decode()
    return f"{user}:{hashed.replace('$2b$', '$2y$', 1)}\n"


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def ping(authorization: bytes) -> RequestHead:
    return parse_head(
        b"GET /_ping HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + authorization + b"\r\n\r\n"
    )


def gate(
    htpasswd: Htpasswd, per_source: int = 3, per_user: int = 100, pool: CheckPool | None = None
) -> Admissions:
    policies = parse_policy_text(POLICY, "test.yaml")
    return Admissions(
        policies,
        Gatekeeper(policies, authenticated=True),
        Authenticator(htpasswd),
        FailureThrottle(ThrottleSettings(per_source, per_user, 60.0)),
        parse_address_list([]),
        checks=pool,
    )


class Gated:
    """A check function that waits for `release`, counting its calls (in worker threads)."""

    def __init__(self, check: Callable[[str, str], bool]) -> None:
        self.release = threading.Event()
        self.calls = 0
        self._check = check
        self._lock = threading.Lock()

    def __call__(self, user: str, password: str) -> bool:
        with self._lock:
            self.calls += 1
        assert self.release.wait(10)
        return self._check(user, password)


@pytest.fixture
def htpasswd() -> Htpasswd:
    return parse_htpasswd(bcrypt_line("alice", "alice-pw") + bcrypt_line("bob", "bob-pw"), "f")


def gated(monkeypatch: pytest.MonkeyPatch, htpasswd: Htpasswd) -> Gated:
    spy = Gated(Htpasswd.check.__get__(htpasswd))
    monkeypatch.setattr(Htpasswd, "check", lambda _self, user, password: spy(user, password))
    return spy


async def settle(admitted: Admission | PendingAdmission) -> Admission:
    if isinstance(admitted, PendingAdmission):
        await asyncio.wait([admitted.future], timeout=10)
        return admitted.admission()
    return admitted


def test_the_loop_runs_while_a_check_waits_and_the_queue_is_bounded() -> None:
    """While checks block their threads the loop goes on; past `limit` submit says no."""

    async def scenario() -> None:
        pool = CheckPool(threads=2, limit=3)
        release = threading.Event()
        futures = [pool.submit(lambda: release.wait(10)) for _ in range(3)]
        assert all(f is not None for f in futures)
        assert pool.submit(lambda: True) is None  # full: refused at once
        started = time.monotonic()
        await asyncio.sleep(0.05)  # the loop is free while two threads block
        assert time.monotonic() - started < 1
        assert pool.pending == 3
        release.set()
        assert await asyncio.gather(*(f for f in futures if f is not None)) == [True] * 3
        assert pool.pending == 0
        raising = pool.submit(lambda: 1 / 0 == 0)  # an unforeseen error is a failed check
        assert raising is not None and await raising is False
        pool.close()

    asyncio.run(scenario())


def test_a_burst_from_one_source_gets_only_per_source_hashes(
    monkeypatch: pytest.MonkeyPatch, htpasswd: Htpasswd
) -> None:
    """10 wrong passwords sent at once from one source, limit 3: the first 3 are charged and
    wait for their hashes, the other 7 get 429 at once, and only 3 hashes ever run. Before,
    the count came after the hash: with checks off the loop, all 10 would have been hashed."""
    spy = gated(monkeypatch, htpasswd)

    async def scenario() -> None:
        gatekeeper = gate(htpasswd, per_source=3)
        admitted = [
            gatekeeper.admit(ping(basic("alice", f"guess{i}")), ConnectionFacts("h", "h"), 0.0)
            for i in range(10)
        ]
        pending = [a for a in admitted if isinstance(a, PendingAdmission)]
        refused = [a for a in admitted if isinstance(a, Admission)]
        assert len(pending) == 3
        assert [(a.verdict.status, a.retry_after) for a in refused] == [(429, 60)] * 7
        spy.release.set()
        results = [await settle(p) for p in pending]
        assert [r.verdict.status for r in results] == [401] * 3
        assert spy.calls == 3

    asyncio.run(scenario())


def test_a_success_takes_its_charge_back_and_is_remembered(htpasswd: Htpasswd) -> None:
    """Limit 2 per source: one failure, one success (charged, then refunded), and the source is
    still not throttled; the success is remembered, so the next request with it is decided at
    once, on any connection. The charge is taken back even when the client left before the
    check ended (nobody asks for the admission)."""

    async def scenario() -> None:
        gatekeeper = gate(htpasswd, per_source=2)
        bad = await settle(gatekeeper.admit(ping(basic("bob", "x")), ConnectionFacts("h", "h"), 0))
        assert bad.verdict.status == 401
        conn = ConnectionFacts("h", "h")
        first = gatekeeper.admit(ping(basic("alice", "alice-pw")), conn, 0.0)
        assert isinstance(first, PendingAdmission)
        await asyncio.wait([first.future])  # the client is gone: admission() is never called
        assert gatekeeper.throttle.retry_after("h", None) is None
        again = gatekeeper.admit(ping(basic("alice", "alice-pw")), ConnectionFacts("h", "h"), 0)
        assert isinstance(again, Admission) and again.verdict.allowed
        # One more failure reaches the limit of 2: the success was not counted as one.
        await settle(gatekeeper.admit(ping(basic("bob", "y")), ConnectionFacts("h", "h"), 0))
        assert gatekeeper.throttle.retry_after("h", None) is not None

    asyncio.run(scenario())


def test_a_full_queue_is_503_and_charges_nothing(
    monkeypatch: pytest.MonkeyPatch, htpasswd: Htpasswd
) -> None:
    """With the pool full, a new password check is refused at once with 503 and Retry-After:
    nothing was checked, so nothing stays counted against the source."""
    spy = gated(monkeypatch, htpasswd)

    async def scenario() -> None:
        gatekeeper = gate(htpasswd, per_source=100, pool=CheckPool(threads=1, limit=1))
        first = gatekeeper.admit(ping(basic("alice", "a")), ConnectionFacts("h1", "h1"), 0.0)
        assert isinstance(first, PendingAdmission)
        busy = gatekeeper.admit(ping(basic("bob", "b")), ConnectionFacts("h2", "h2"), 0.0)
        assert isinstance(busy, Admission)
        assert (busy.verdict.status, busy.retry_after) == (503, 1)
        assert busy.verdict.message == (
            "dockgate: too many password checks at once; try again later"
        )
        assert "h2" not in gatekeeper.throttle._sources
        assert "bob" not in gatekeeper.throttle._users
        spy.release.set()
        assert (await settle(first)).verdict.status == 401

    asyncio.run(scenario())


def test_the_dummy_has_the_files_most_used_algorithm_and_cost() -> None:
    """Unknown users are checked against the cost most used in the file (with a fresh salt),
    bcrypt cost 10 for an empty file; made without hashing anything."""
    lines = bcrypt_line("a", "x", 5) + bcrypt_line("b", "y", 5) + bcrypt_line("c", "z", 6)
    dummy = parse_htpasswd(lines, "f").dummy
    assert dummy.scheme == "bcrypt" and dummy.hash.startswith("$2y$05$")
    assert len(dummy.hash) == 60
    assert dummy.hash[7:29] != parse_htpasswd(lines, "f").dummy.hash[7:29]  # a random salt
    assert dummy_credential([]).hash.startswith("$2b$10$")
    hasher = argon2.PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1)
    argon = "".join(f"u{i}:{hasher.hash('pw')}\n" for i in range(2)) + bcrypt_line("c", "z")
    dummy = parse_htpasswd(argon, "f").dummy
    assert dummy.scheme == "argon2"
    assert argon2.extract_parameters(dummy.hash) == argon2.extract_parameters(hasher.hash("q"))
    # A dummy is a well-formed hash that no password matches.
    assert not parse_htpasswd(argon, "f").check("nobody", "pw")


@pytest.mark.parametrize("cost", [5, 10])
def test_unknown_users_cost_what_known_users_cost(cost: int) -> None:
    """The hash check of an unknown user within 3x of a known user's (before: a fixed bcrypt
    cost 10 dummy, 25-30x a cost-5 entry)."""
    htpasswd = parse_htpasswd(bcrypt_line("alice", "pw", cost), "f")

    def timed(user: str) -> float:
        started = time.perf_counter()
        assert htpasswd.check(user, "wrong") is False
        return time.perf_counter() - started

    known = sorted(timed("alice") for _ in range(5))[2]
    unknown = sorted(timed("nobody") for _ in range(5))[2]
    assert 1 / 3 < unknown / known < 3


def test_bcrypt_passwords_over_72_bytes_are_checked_by_their_first_72() -> None:
    """As Apache's crypt_blowfish and Go's x/crypto/bcrypt: the hash holds 72 bytes of the
    password. Before: `bcrypt` 5 raised ValueError (no 401, a traceback)."""
    long = "p" * 72
    htpasswd = parse_htpasswd(bcrypt_line("alice", long), "f")
    assert htpasswd.check("alice", long + "anything after byte 72")
    assert not htpasswd.check("alice", "q" * 73)
    assert not htpasswd.check("nobody", "q" * 10_000)
    assert not htpasswd.check("alice", "ä" * 100)  # 200 bytes of UTF-8
    assert not htpasswd.check("alice", "a\x00b" * 40)


def test_a_refund_takes_back_only_what_is_still_counted() -> None:
    """refund removes the charged failure from both keys, and a key it empties is dropped; a
    charge already pushed out of its list, or never recorded (a limit of 0), leaves the other
    failures alone; a success clears no failure (issue 12, item 3)."""
    now = [0.0]
    settings = ThrottleSettings(per_source=2, per_user=5, window_s=60.0)
    throttle = FailureThrottle(settings, lambda: now[0])
    throttle.refund(throttle.charge("192.0.2.1", "alice"))
    assert throttle._sources == {} and throttle._users == {}
    first = throttle.charge("192.0.2.1", "alice")  # t=0
    for t in (1.0, 2.0):
        now[0] = t
        throttle.failed("192.0.2.1", "bob")  # the source keeps t=1 and t=2 (limit 2)
    throttle.refund(first)
    assert list(throttle._sources["192.0.2.1"]) == [1.0, 2.0]
    assert "alice" not in throttle._users
    assert list(throttle._users["bob"]) == [1.0, 2.0]
    now[0] = 3.0
    charge = throttle.charge("192.0.2.7", "bob")
    throttle.succeeded("192.0.2.7", "bob")  # clears nothing: the refund takes the charge back
    throttle.refund(charge)
    assert list(throttle._users["bob"]) == [1.0, 2.0] and "192.0.2.7" not in throttle._sources
    off = FailureThrottle(ThrottleSettings(per_source=0, per_user=0))
    off.refund(off.charge("192.0.2.1", "alice"))
    assert off._sources == {} and off._users == {}
