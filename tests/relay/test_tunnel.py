"""Tunnel (relay/tunnel.py): two one-way pumps, a half-close passed on, the end when both end."""

from __future__ import annotations

from typing import Any, cast

from dockgate.relay.flow import FlowControl, Pause
from dockgate.relay.tunnel import Open, Tunnel
from dockgate.relay.upstream import UpstreamConnection


class MockTransport:
    """A transport that records what is written to it and whether its write side was closed."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.eof_written = False
        self.closing = False
        self.read_paused = False

    def write(self, data: bytes) -> None:
        assert not self.eof_written, "written after write_eof"
        self.written.append(data)

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False


class NoPool:
    def forget(self, conn: UpstreamConnection) -> None:
        pass


class Setup:
    def __init__(self) -> None:
        self.client = MockTransport()
        self.daemon = MockTransport()
        self.upstream = UpstreamConnection(cast(Any, NoPool()))
        self.upstream.connection_made(cast(Any, self.daemon))
        self.flow = FlowControl()
        self.flow.attach(cast(Any, self.client))
        self.ended = 0
        self.tunnel = Tunnel(cast(Any, self.client), self.upstream, self.flow, self._end)

    def _end(self) -> None:
        self.ended += 1


def test_leftover_bytes_go_first_and_the_tunnel_owns_the_upstream() -> None:
    """The bytes read past the request head reach the daemon before anything sent later, and
    the daemon's connection now reports to the tunnel."""
    s = Setup()
    s.tunnel.start(b"stdin-1")
    s.tunnel.from_client(b"stdin-2")
    assert s.daemon.written == [b"stdin-1", b"stdin-2"]
    assert s.upstream.owner is s.tunnel
    assert s.tunnel.bytes_in == len(b"stdin-1stdin-2")


def test_client_eof_is_a_half_close_and_output_keeps_flowing() -> None:
    """`docker run -i cat < file`: the client's EOF becomes write_eof to the daemon, whose
    output still reaches the client; the tunnel ends only when the daemon is done too."""
    s = Setup()
    s.tunnel.start(b"")
    s.tunnel.client_eof()
    assert s.daemon.eof_written and s.ended == 0
    assert s.tunnel.open == Open.TO_CLIENT
    s.upstream.data_received(b"output")
    assert s.client.written == [b"output"] and s.tunnel.bytes_out == 6
    assert s.upstream.eof_received() is True
    assert s.client.eof_written and s.ended == 1


def test_daemon_eof_first_keeps_the_client_direction_open() -> None:
    """The daemon's EOF is passed on to the client; what the client still sends goes on."""
    s = Setup()
    s.tunnel.start(b"")
    s.upstream.eof_received()
    assert s.client.eof_written and s.ended == 0
    s.tunnel.from_client(b"more")
    assert s.daemon.written == [b"more"]
    s.tunnel.client_eof()
    assert s.ended == 1


def test_upstream_lost_ends_the_tunnel_once() -> None:
    """The daemon's connection lost: the tunnel ends at once, and only once."""
    s = Setup()
    s.tunnel.start(b"")
    s.upstream.connection_lost(None)
    assert s.ended == 1 and not s.tunnel.open
    s.tunnel.from_client(b"late")  # nothing more goes to a connection that is gone
    assert s.daemon.written == []
    s.tunnel.client_eof()
    assert s.ended == 1 and not s.daemon.eof_written


def test_a_full_daemon_socket_pauses_the_client() -> None:
    """The daemon not reading pauses reading from the client, until it drains."""
    s = Setup()
    s.tunnel.start(b"")
    s.upstream.pause_writing()
    assert s.client.read_paused and s.flow.reasons == Pause.UPSTREAM_FULL
    s.upstream.resume_writing()
    assert not s.client.read_paused
