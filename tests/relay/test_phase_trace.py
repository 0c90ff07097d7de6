"""The phases a ClientConnection goes through (relay/phase.py), driven in-process with mock
transports: each scenario's moves, in order, as the table allows them.

The admission and the upstream pool are fakes (every request allowed, or refused, at once; one
upstream connection handed out per request); the framing, the relay and the tunnel are the
real ones. Under STRICT (set by conftest.py) an illegal move raises here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dockgate.auth.identity import CONTAINER, NO_AUTH_IDENTITY, Identity
from dockgate.http.request import RequestHead
from dockgate.observe.accesslog import open_access_log
from dockgate.observe.audit import open_audit_log
from dockgate.observe.metrics import RequestCounts
from dockgate.policy.admission import Admission, ConnectionFacts, PendingAdmission
from dockgate.policy.gatekeeper import Verdict
from dockgate.refusal import Refusal
from dockgate.relay import connection as connection_module
from dockgate.relay.connection import ClientConnection
from dockgate.relay.context import ConnectionContext
from dockgate.relay.holding import HoldBudget
from dockgate.relay.phase import Phase
from dockgate.relay.upstream import UpstreamConnection

P = Phase


class MockTransport:
    """A transport that keeps what is written, and whether it was half- or fully closed."""

    def __init__(self, peer: object = ("127.0.0.1", 40000)) -> None:
        self.peer = peer
        self.data = bytearray()
        self.eof_written = False
        self.closed = False
        self.read_paused = False

    def write(self, data: bytes) -> None:
        self.data += data

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def taken(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class FakePool:
    """Hands out one ready upstream connection per request; remembers them."""

    address = "unix:///fake.sock"

    def __init__(self) -> None:
        self.given: list[tuple[UpstreamConnection, MockTransport]] = []

    def take_idle(self) -> UpstreamConnection:
        conn = UpstreamConnection(cast(Any, self))
        transport = MockTransport()
        conn.connection_made(cast(Any, transport))
        self.given.append((conn, transport))
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.owner = None

    def forget(self, conn: UpstreamConnection) -> None:
        pass


class FakeAdmissions:
    """Allows every request, except those whose target contains "refuse"; one whose target
    contains "password" waits for `checked` (a password being hashed); "start" is
    ContainerStart (whose body the daemon does not read), anything else ContainerAttach."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.checked: asyncio.Future[bool] = loop.create_future()
        # What the plan reads of the policy set: no `owners:` map (no policy, no ownership).
        self.policies = SimpleNamespace(owners={})
        # Whether unix-socket clients are named by their peer (a test sets it before connecting).
        self.peer_bound = False

    def admit(
        self, head: RequestHead, facts: ConnectionFacts, started: float
    ) -> Admission | PendingAdmission:
        if "refuse" in head.target:
            refusal = Refusal(403, "dockgate: no", "test", "test")
            verdict = Verdict("ContainerList", "deny:-:test", refusal=refusal)
        else:
            operation = "ContainerStart" if "start" in head.target else "ContainerAttach"
            verdict = Verdict(operation, "allow:-:test")
        admission = Admission(verdict, NO_AUTH_IDENTITY, facts.source)
        if "password" in head.target:
            return PendingAdmission(self.checked, lambda: admission)
        return admission


class Scene:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        peer: object = ("127.0.0.1", 40000),
        *,
        peers: bool = False,
    ) -> None:
        self.loop = loop
        self.pool = FakePool()
        self.admissions = FakeAdmissions(loop)
        self.admissions.peer_bound = peers
        ctx = ConnectionContext(
            loop=loop,
            pool=cast(Any, self.pool),
            admissions=cast(Any, self.admissions),
            holds=HoldBudget(1 << 20),
            metrics=RequestCounts(),
            access_log=open_access_log("off", "text"),
            audit=open_audit_log("off"),
        )
        self.conn = ClientConnection(ctx)
        self.moves: list[Phase] = []
        enter = self.conn._enter

        def recording(phase: Phase) -> None:
            enter(phase)
            self.moves.append(phase)

        self.conn._enter = recording  # type: ignore[method-assign]
        self.client = MockTransport(peer)
        self.conn.connection_made(cast(Any, self.client))

    def daemon(self, index: int = -1) -> tuple[UpstreamConnection, MockTransport]:
        return self.pool.given[index]


@pytest.fixture
def scene() -> Iterator[Scene]:
    loop = asyncio.new_event_loop()
    try:
        yield Scene(loop)
    finally:
        loop.close()


PING = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"


def test_keep_alive_round(scene: Scene) -> None:
    """One request: forwarded, its answer relayed, and the connection reads the next head."""
    scene.conn.data_received(PING)
    upstream, daemon = scene.daemon()
    assert daemon.taken().startswith(b"GET /_ping HTTP/1.1\r\n")
    upstream.data_received(OK)
    assert scene.client.taken().endswith(b"\r\n\r\nOK")
    assert scene.moves == [P.FORWARDING, P.RELAYING_ANSWER, P.READING_HEAD]
    assert scene.conn.idle() and not scene.client.closed


def test_pipelined_refusal_then_request(scene: Scene) -> None:
    """A refused request and the one pipelined after it, in one read: the refusal is answered
    here, the next request goes on to the daemon, in order."""
    scene.conn.data_received(b"GET /refuse HTTP/1.1\r\nHost: d\r\n\r\n" + PING)
    assert scene.client.taken().startswith(b"HTTP/1.1 403 ")
    upstream, _ = scene.daemon()
    upstream.data_received(OK)
    assert scene.moves == [
        P.REFUSED_DRAINING,
        P.READING_HEAD,
        P.FORWARDING,
        P.RELAYING_ANSWER,
        P.READING_HEAD,
    ]


def test_refused_upload_lingers(scene: Scene) -> None:
    """A refused request whose body is not read: answered, then the connection lingers."""
    scene.conn.data_received(b"POST /refuse HTTP/1.1\r\nHost: d\r\nContent-Length: 10\r\n\r\nab")
    assert scene.moves == [P.REFUSED_DRAINING, P.LINGERING]
    assert scene.client.eof_written
    scene.conn.connection_lost(None)
    assert scene.moves[-1] is P.CLOSED


def test_early_answer_lingers(scene: Scene) -> None:
    """The daemon answers before the body is whole: relayed, then the connection lingers."""
    scene.conn.data_received(
        b"POST /containers/x/wait HTTP/1.1\r\nHost: d\r\nContent-Length: 10\r\n\r\nabc"
    )
    upstream, _ = scene.daemon()
    upstream.data_received(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    assert scene.moves == [P.FORWARDING, P.RELAYING_ANSWER, P.LINGERING]
    scene.conn.data_received(b"defg")  # read and dropped
    assert scene.moves[-1] is P.LINGERING


def test_hijack_hands_over_to_the_tunnel(scene: Scene) -> None:
    """101: the bytes sent past the head go first, the tunnel relays both ways, a client EOF
    is a half-close, and the connection closes when the daemon is done too."""
    scene.conn.data_received(
        b"POST /containers/x/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: d\r\n"
        b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\nearly-stdin"
    )
    upstream, daemon = scene.daemon()
    assert scene.client.read_paused  # the bytes after the head wait for the daemon's answer
    daemon.taken()
    upstream.data_received(
        b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nout-1"
    )
    assert daemon.taken() == b"early-stdin"
    assert scene.client.taken().endswith(b"\r\n\r\nout-1")
    assert not scene.client.read_paused
    scene.conn.data_received(b"more")
    assert daemon.taken() == b"more"
    assert scene.conn.eof_received() is True
    assert daemon.eof_written
    upstream.data_received(b"out-2")
    assert scene.client.taken() == b"out-2"
    upstream.eof_received()
    assert scene.client.closed
    assert scene.moves == [P.FORWARDING, P.RELAYING_ANSWER, P.TUNNEL, P.CLOSED]


def test_password_check_holds_the_request_in_order(scene: Scene) -> None:
    """While a password is checked (ADMITTING), reading pauses and the request waits; then it
    goes on, and the request pipelined after it follows in order."""
    scene.conn.data_received(b"GET /password HTTP/1.1\r\nHost: d\r\n\r\n" + PING)
    assert scene.moves == [P.ADMITTING]
    assert scene.client.read_paused and scene.pool.given == []
    scene.admissions.checked.set_result(True)
    scene.loop.run_until_complete(asyncio.sleep(0))  # the future's done callbacks
    upstream, daemon = scene.daemon()
    assert daemon.taken().startswith(b"GET /password ")
    upstream.data_received(OK)
    second, daemon2 = scene.daemon()
    assert daemon2.taken().startswith(b"GET /_ping ")
    second.data_received(OK)
    assert scene.moves == [
        P.ADMITTING,
        P.FORWARDING,
        P.RELAYING_ANSWER,
        P.READING_HEAD,
        P.FORWARDING,
        P.RELAYING_ANSWER,
        P.READING_HEAD,
    ]


def test_a_body_the_daemon_does_not_read_is_held_and_dropped(scene: Scene) -> None:
    """ContainerStart with `{}`: the body is read whole (HOLDING_BODY), judged, dropped, and the
    request goes on without it."""
    scene.conn.data_received(
        b"POST /containers/x/start HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{"
    )
    assert scene.moves == [P.HOLDING_BODY] and scene.pool.given == []
    scene.conn.data_received(b"}")
    upstream, daemon = scene.daemon()
    sent = daemon.taken()
    assert sent.startswith(b"POST /containers/x/start ") and sent.endswith(b"\r\n\r\n")
    assert b"Content-Length: 0\r\n" in sent  # the body dropped, nothing after the head
    upstream.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert scene.moves == [P.HOLDING_BODY, P.FORWARDING, P.RELAYING_ANSWER, P.READING_HEAD]


def test_a_unix_callers_first_request_waits_for_its_peer_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where bindings name peers, a unix-socket client's first request waits (IDENTIFYING_PEER,
    reading paused) until the daemon says which container calls; then it and the request
    pipelined after it go on, in order, admitted as that container."""
    loop = asyncio.new_event_loop()
    answer: asyncio.Future[Identity] = loop.create_future()

    async def identify(*_: object) -> Identity:
        return await answer

    monkeypatch.setattr(connection_module, "settled", lambda *_: None)  # the daemon is asked
    monkeypatch.setattr(connection_module, "identify_peer", identify)
    try:
        scene = Scene(loop, peer="", peers=True)  # (a unix socket's peer name is "")
        scene.conn.data_received(PING + PING)
        assert scene.moves == [P.IDENTIFYING_PEER]
        assert scene.client.read_paused and scene.pool.given == []
        web = Identity("web", CONTAINER, "f" * 64)
        answer.set_result(web)
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        assert scene.conn.facts.caller is web and not scene.client.read_paused
        upstream, daemon = scene.daemon()
        assert daemon.taken().startswith(b"GET /_ping ")
        upstream.data_received(OK)
        second, _ = scene.daemon()
        second.data_received(OK)
        assert scene.moves == [
            P.IDENTIFYING_PEER,
            P.FORWARDING,
            P.RELAYING_ANSWER,
            P.READING_HEAD,
            P.FORWARDING,
            P.RELAYING_ANSWER,
            P.READING_HEAD,
        ]
    finally:
        loop.close()
