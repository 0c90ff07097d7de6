"""The relay in-process: a `ClientConnection` fed bytes, a mock daemon behind it, no sockets.

The way uvicorn tests its protocols (tests/protocols/test_http.py: MockTransport, MockLoop): the
protocol object is real, the transports are recorders. A test writes what the client sends
(`Relay.send`, `Relay.send_eof`), reads what the gateway wrote to the client (`Relay.client`),
and plays the daemon on each upstream connection the pool opened (`Relay.daemon(n)`: what the
gateway sent it, and `send`/`send_eof`/`drop` to answer, which reach the connection's
`upstream_data`/`upstream_eof`/`upstream_lost` through a real `UpstreamConnection`).

Everything runs on a real asyncio event loop (`ClockLoop`) whose clock only moves when the test
says so (`advance`), so the linger after an early answer or a timeout is a step of the script,
not a wait; `Relay.sweep` is one pass of the gateway's timeout sweep. Each test takes a few
milliseconds. What does not go through the pool waits for the test too: ownership look-ups
(`LookUps`, in place of ownership/lookup.py's `ask_json`) and password checks (`HeldChecks`,
in place of the worker threads of auth/checks.py).

How a connection is built from the gateway's state lives in ONE function, `open_connection`:
when `ClientConnection` takes a narrower context than the `Gateway`, that is the one place to
change.
"""

from __future__ import annotations

import asyncio
import collections
import pathlib
from collections.abc import Callable
from typing import Any

import pytest

from dockgate.addresses import Address, parse_address
from dockgate.auth.authenticator import Authenticator
from dockgate.auth.checks import CheckPool
from dockgate.auth.throttle import FailureThrottle, ThrottleSettings
from dockgate.config import ServeConfig
from dockgate.http.errors import error_response
from dockgate.http.hops import with_hop
from dockgate.observe.accesslog import AccessLog, AccessRecord
from dockgate.observe.audit import AuditLog
from dockgate.observe.metrics import RequestCounts
from dockgate.ownership import lookup, volumes
from dockgate.policy.admission import Admissions
from dockgate.policy.browser import ANSWER_HEADERS
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.loader import parse_policy_text
from dockgate.relay.connection import ClientConnection
from dockgate.relay.context import ConnectionContext
from dockgate.relay.eventfeed import EventFeeds
from dockgate.relay.holding import HoldBudget
from dockgate.relay.upstream import UpstreamConnection, UpstreamPool
from dockgate.server import Gateway

# The relay's own tests are not about policy: everything passes, bodies are not judged.
ALLOW_ALL = (pathlib.Path(__file__).parents[1] / "policies" / "allow-all.yaml").read_text()
# What no test can reach: the mock pool never opens it.
UPSTREAM = "unix:///run/dockgate-inprocess/docker.sock"
CLIENT_PEER = ("192.0.2.7", 50123)  # TEST-NET-1: a TCP client, never a real one
# Where the clock of a fresh loop starts (seconds; any value, only differences count).
CLOCK_START = 1000.0
# How many passes of the loop `settle` runs: each lets every ready callback run once, so a task
# that awaits a few times (a connect, then its write) finishes within one settle.
SETTLE_PASSES = 20


class ClockLoop(asyncio.SelectorEventLoop):
    """A real asyncio event loop whose clock stands still until `advance` moves it.

    Timers (`call_later`) fire when the clock passes them, whatever the wall clock says; nothing
    here ever blocks in the selector, since `settle` always has a callback ready.
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = CLOCK_START
        self.errors: list[dict[str, Any]] = []
        # Anything that raised in a callback or a task nobody awaited: a test fails on it.
        self.set_exception_handler(lambda _loop, context: self.errors.append(context))

    def time(self) -> float:
        return self.now

    def settle(self) -> None:
        """Run what is ready (callbacks, tasks, and what they make ready) for SETTLE_PASSES
        passes of the loop: what the gateway does in reaction to one event."""

        async def passes() -> None:
            for _ in range(SETTLE_PASSES):
                await asyncio.sleep(0)

        self.run_until_complete(passes())

    def advance(self, seconds: float) -> None:
        """Move the clock on, then run the timers that became due (and what they start)."""
        self.now += seconds
        self.settle()

    def shut(self) -> None:
        """Cancel what is left, close the loop; raise if anything failed in the background."""
        tasks = asyncio.all_tasks(self)
        for task in tasks:
            task.cancel()
        if tasks:
            self.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.close()
        errors, self.errors = self.errors, []
        if errors:
            raise AssertionError(f"errors on the event loop: {errors!r}")


class MockTransport:
    """One side of a connection, as asyncio's transports behave, recording what is done to it.

    `data` is everything written (to the client, or to the daemon); `take()` what was written
    since the last take. `close()` and `abort()` deliver `connection_lost` on the next pass of
    the loop, as asyncio does; writing after either is a bug in the gateway (the bytes would be
    lost), so it fails the test.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol, peer: object
    ) -> None:
        self.loop = loop
        self.protocol = protocol
        self.data = bytearray()
        self._taken = 0
        self.read_paused = False
        self.eof_written = False
        self.closing = False  # close() or abort() was called
        self.aborted = False
        self.lost = False  # connection_lost was delivered
        self.buffered = 0  # what get_write_buffer_size answers: the test sets it
        self.limits: tuple[int | None, int | None] | None = None  # high, low water (bytes)
        self.extra: dict[str, object] = {"peername": peer}

    # ----- what the gateway calls -------------------------------------------------------------

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.extra.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes) -> None:
        assert not self.closing, f"written after close: {bytes(data[:200])!r}"
        assert not self.eof_written, f"written after write_eof: {bytes(data[:200])!r}"
        self.data += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        assert not self.closing, "write_eof after close"
        self.eof_written = True

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.lose, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    # ----- what the test calls ----------------------------------------------------------------

    def take(self) -> bytes:
        """The bytes written since the last take."""
        new = bytes(self.data[self._taken :])
        self._taken = len(self.data)
        return new

    def lose(self, exc: Exception | None = None) -> None:
        """The connection is gone (closed here, or reset by the peer): `connection_lost`."""
        if self.lost:
            return
        self.lost = True
        self.closing = True
        self.protocol.connection_lost(exc)

    @property
    def closed(self) -> bool:
        """Closed, and the protocol told so."""
        return self.lost


class Daemon:
    """The daemon's end of one upstream connection the pool opened: what the gateway sent it,
    and the daemon's moves, delivered through the real `UpstreamConnection`."""

    def __init__(self, loop: ClockLoop, conn: UpstreamConnection, transport: MockTransport) -> None:
        self.loop = loop
        self.conn = conn
        self.transport = transport

    @property
    def received(self) -> bytes:
        """Everything the gateway sent on this connection."""
        return bytes(self.transport.data)

    def take(self) -> bytes:
        return self.transport.take()

    def send(self, data: bytes) -> None:
        """The daemon writes `data` (reaches `ClientConnection.upstream_data`)."""
        self.conn.data_received(data)
        self.loop.settle()

    def send_eof(self) -> None:
        """The daemon half-closes (`upstream_eof`); as asyncio does, a protocol that answers
        False has its transport closed."""
        if not self.conn.eof_received():
            self.transport.close()
        self.loop.settle()

    def drop(self, exc: Exception | None = None) -> None:
        """The connection breaks (`upstream_lost`)."""
        self.transport.lose(exc)
        self.loop.settle()

    def fill(self) -> None:
        """The gateway's write buffer towards the daemon passes its high-water mark."""
        self.conn.pause_writing()
        self.loop.settle()

    def drain(self) -> None:
        """... and falls below its low-water mark again."""
        self.conn.resume_writing()
        self.loop.settle()

    @property
    def read_paused(self) -> bool:
        return self.transport.read_paused

    @property
    def eof_written(self) -> bool:
        return self.transport.eof_written

    @property
    def closed(self) -> bool:
        """The gateway closed (or aborted) this connection."""
        return self.transport.closing


class MockPool(UpstreamPool):
    """The real pool (idle connections kept, taken most recent first, released only when
    clean), except that `connect` makes a mock connection instead of dialling the daemon.

    `refuse` makes every connect fail with that error; `gate` (an event), when set, holds each
    connect until it is set, so a test sees the gateway waiting for its upstream.
    """

    def __init__(self, loop: ClockLoop, address: Address, max_idle: int) -> None:
        super().__init__(address, max_idle)
        self.loop = loop
        self.daemons: list[Daemon] = []
        self.refuse: OSError | None = None
        self.gate: asyncio.Event | None = None
        self.released: list[UpstreamConnection] = []

    async def connect(self) -> UpstreamConnection:
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse is not None:
            raise self.refuse
        conn = UpstreamConnection(self)
        transport = MockTransport(self.loop, conn, peer="")
        conn.connection_made(transport)  # type: ignore[arg-type]
        self.daemons.append(Daemon(self.loop, conn, transport))
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        self.released.append(conn)
        super().release(conn)

    @property
    def idle(self) -> list[UpstreamConnection]:
        return list(self._idle)


class LookUps:
    """The daemon's end of the ownership look-ups, which do not go through the pool: each is
    one HTTP/1.0 exchange on a connection of its own (ownership/lookup.py `ask_json`), replaced
    here while a test runs (`install`). Each look-up waits, in order, until the test answers
    it (`answer`), so a test sees what the client's connection does meanwhile."""

    def __init__(self, loop: ClockLoop) -> None:
        self.loop = loop
        self.asked: list[tuple[str, str, bytes | None]] = []  # method, path, body
        self._waiting: collections.deque[asyncio.Future[tuple[int, object]]] = collections.deque()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # `get_json` and the rest call `ask_json` through the module; volumes.py imports it.
        monkeypatch.setattr(lookup, "ask_json", self.ask_json)
        monkeypatch.setattr(volumes, "ask_json", self.ask_json)

    async def ask_json(
        self, address: Address, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, object]:
        self.asked.append((method, path, body))
        waiting = self.loop.create_future()
        self._waiting.append(waiting)
        return await waiting

    @property
    def pending(self) -> int:
        """Look-ups waiting for the daemon (one whose task was cancelled waits no more)."""
        return sum(1 for waiting in self._waiting if not waiting.done())

    def answer(self, status: int, document: object) -> None:
        """The daemon answers the oldest look-up still waiting."""
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()
        assert self._waiting, "no look-up is waiting"
        self._waiting.popleft().set_result((status, document))
        self.loop.settle()


class HeldChecks(CheckPool):
    """Password checks that wait for the test: each is run (for real, on the loop's thread)
    when the test calls `finish`, instead of in a worker thread (auth/checks.py)."""

    def __init__(self, loop: ClockLoop) -> None:
        super().__init__()
        self.loop = loop
        self._waiting: collections.deque[tuple[asyncio.Future[bool], Callable[[], bool]]] = (
            collections.deque()
        )

    def submit(self, check: Callable[[], bool]) -> asyncio.Future[bool] | None:
        waiting = self.loop.create_future()
        self._waiting.append((waiting, check))
        return waiting

    @property
    def pending_checks(self) -> int:
        return len(self._waiting)

    def finish(self) -> None:
        """The oldest check waiting runs, and its request goes on."""
        waiting, check = self._waiting.popleft()
        waiting.set_result(check())
        self.loop.settle()


class RecordedAccessLog(AccessLog):
    """An access log that keeps its records, for the test to read."""

    def __init__(self) -> None:
        super().__init__(None)
        self.records: list[AccessRecord] = []

    @property
    def enabled(self) -> bool:
        return True

    def write_fields(  # (the relay writes its lines with write_fields)
        self,
        *,
        client: str,
        method: str,
        target: str,
        version: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_s: float,
        note: str,
        operation: str,
        decision: str,
        identity: str,
        source: str,
    ) -> None:
        self.records.append(
            AccessRecord(
                client,
                method,
                target,
                version,
                status,
                bytes_in,
                bytes_out,
                duration_s,
                note,
                operation,
                decision,
                identity,
                source,
            )
        )


class Relay:
    """One client connection through the gateway, and the daemon behind it."""

    def __init__(
        self,
        loop: ClockLoop,
        context: ConnectionContext,
        conn: ClientConnection,
        client: MockTransport,
    ) -> None:
        self.loop = loop
        self.context = context
        self.conn = conn
        self.client = client
        self.pool = context.pool

    def send(self, data: bytes) -> None:
        """The client writes `data`; the loop runs until quiet."""
        self.conn.data_received(data)
        self.loop.settle()

    def send_eof(self) -> None:
        """The client half-closes; as asyncio does, False from `eof_received` closes."""
        if not self.conn.eof_received():
            self.client.close()
        self.loop.settle()

    def fill(self) -> None:
        """The gateway's write buffer towards the client passes its high-water mark (a slow
        client): asyncio's `pause_writing`."""
        self.conn.pause_writing()
        self.loop.settle()

    def drain(self) -> None:
        """... and falls below its low-water mark again: `resume_writing`."""
        self.conn.resume_writing()
        self.loop.settle()

    def sweep(self) -> None:
        """One pass of the gateway's periodic sweep over this connection, at the loop's time:
        the head and body timeouts (server.py)."""
        Gateway._time_out(self.conn, self.loop.time())
        self.loop.settle()

    def daemon(self, index: int = -1) -> Daemon:
        """The daemon's end of the `index`th upstream connection opened (the last by default)."""
        assert self.pool.daemons, "no upstream connection was opened"
        return self.pool.daemons[index]

    @property
    def records(self) -> list[AccessRecord]:
        return self.context.access_log.records


def open_connection(
    loop: ClockLoop,
    policy: str = ALLOW_ALL,
    *,
    peer: object = CLIENT_PEER,
    authenticator: Authenticator | None = None,
    checks: CheckPool | None = None,
    context: ConnectionContext | None = None,
    **config: Any,
) -> Relay:
    """A client connection just accepted by a gateway serving `policy` (policy-file text) in
    front of a mock daemon; `config` are `ServeConfig` fields (`header_timeout=1.0`, ...).
    With `context` (another relay's), a further connection to that same gateway: its pool,
    budget of held bodies and logs.

    The one place that knows how a `ClientConnection` is made: its context, then
    `connection_made` with a mock transport.
    """
    if context is None:
        settings: dict[str, Any] = {"upstream": parse_address(UPSTREAM), **config}
        serve = ServeConfig(**settings)
        policies = parse_policy_text(policy, "inprocess-policy.yaml")
        authenticator = authenticator if authenticator is not None else Authenticator()
        gatekeeper = Gatekeeper(policies, authenticated=authenticator.required)
        admissions = Admissions(
            policies,
            gatekeeper,
            authenticator,
            FailureThrottle(
                ThrottleSettings(
                    per_source=serve.auth_failures,
                    per_user=serve.auth_failures_per_user,
                    window_s=serve.auth_failure_window,
                )
            ),
            serve.trusted_proxies,
            checks=checks,
            proxy_protocol=serve.proxy_protocol,
        )
        pool = MockPool(loop, serve.upstream, serve.upstream_pool_size)
        context = ConnectionContext(
            loop=loop,
            pool=pool,
            admissions=admissions,
            holds=HoldBudget(serve.held_bodies_max),
            metrics=RequestCounts(),
            access_log=RecordedAccessLog(),
            audit=AuditLog(None),
            max_header_bytes=serve.max_header_bytes,
            header_timeout=serve.header_timeout,
            idle_timeout=serve.idle_timeout,
            body_timeout=serve.body_timeout,
            event_feeds=EventFeeds(loop, pool) if serve.shared_events else None,
        )
    else:
        given = (policy is not ALLOW_ALL, authenticator is not None, checks is not None, config)
        assert not any(given), "a further connection takes its gateway's settings"
    conn = ClientConnection(context)
    client = MockTransport(loop, conn, peer)
    conn.connection_made(client)  # type: ignore[arg-type]
    loop.settle()
    return Relay(loop, context, conn, client)


# ----- bytes on the wire ---------------------------------------------------------------------


def request(
    method: str, target: str, *headers: str, body: bytes | None = None, host: str = "docker"
) -> bytes:
    """One HTTP/1.1 request as a client writes it; a `body` gets a Content-Length unless the
    headers frame it."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *headers]
    framed = any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers)
    if body is not None and not framed:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def forwarded(head: bytes) -> bytes:
    """A request head as the daemon gets it: with this gateway's hop field (http/hops.py)."""
    return with_hop(head)


def relayed(response: bytes) -> bytes:
    """A daemon's response (its head, and whatever follows) as the client gets it: the browser
    guard's headers at the end of the head."""
    head, blank, rest = response.partition(b"\r\n\r\n")
    assert blank, "not a whole head"
    return head + b"\r\n" + ANSWER_HEADERS + b"\r\n" + rest


def answer(
    status: int = 200, body: bytes = b"", *headers: str, reason: str = "OK", length: bool = True
) -> bytes:
    """A daemon's response; a Content-Length for `body` unless `length` is False."""
    lines = [f"HTTP/1.1 {status} {reason}", *headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def refusal(
    status: int, message: str, *, close: bool = False, head_only: bool = False, extra: bytes = b""
) -> bytes:
    """The gateway's own answer: Docker's {"message"} shape (http/errors.py); `extra` are whole
    header lines (`Retry-After: 1\r\n`)."""
    return error_response(status, message, close=close, head_only=head_only, extra_headers=extra)
