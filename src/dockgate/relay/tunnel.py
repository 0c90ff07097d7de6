"""A hijacked connection: two one-way pumps of raw bytes between the client and the daemon.

After `101 Switching Protocols` (or the older `200` with a Docker raw-stream body that the daemon
answers to attach and exec start), HTTP is over on both connections. `ClientConnection` hands
the client transport and the upstream connection to a `Tunnel` (it becomes the upstream's owner)
and passes it what the client sends from then on; the bytes the client sent past the request
head are forwarded first (`start`).

Each direction ends on its own: an EOF from one side is passed on as a half-close (`write_eof`),
so `docker run -i IMAGE cat < file` still gets all of its output after its stdin ends; the
tunnel ends when both directions are done, or at once when the daemon's connection is lost.
Nothing is re-framed. The daemon's full socket pauses reading from the client (flow.py); the
client's full socket pauses reading from the daemon (the connection's `pause_writing`).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

from dockgate.relay.flow import FlowControl, Pause
from dockgate.relay.upstream import UpstreamConnection


class Open(enum.Flag):
    """The directions still carrying bytes (mitmproxy's CAN_READ/CAN_WRITE, per direction)."""

    TO_DAEMON = enum.auto()  # the client has not sent its EOF
    TO_CLIENT = enum.auto()  # the daemon has not sent its EOF


NOTHING_OPEN = Open(0)
BOTH_OPEN = Open.TO_DAEMON | Open.TO_CLIENT


class Tunnel:
    """The two pumps of one hijacked connection; `on_end` is called once, when it is over."""

    __slots__ = (
        "_client",
        "_ended",
        "_flow",
        "_on_end",
        "_upstream",
        "bytes_in",
        "bytes_out",
        "open",
    )

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: UpstreamConnection,
        flow: FlowControl,
        on_end: Callable[[], None],
    ) -> None:
        self._client = client
        self._upstream = upstream
        self._flow = flow
        self._on_end = on_end
        self._ended = False
        self.open = BOTH_OPEN
        # Raw bytes each way, for the access log (the connection adds them to the exchange's).
        self.bytes_in = 0
        self.bytes_out = 0

    def start(self, leftover: bytes) -> None:
        """Take over the daemon's connection; forward what the client sent past its head."""
        self._upstream.owner = self
        if leftover:
            self.from_client(leftover)

    # ----- client -> daemon -----------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        if self._ended:
            return  # the daemon's connection is closed: nothing more goes to it
        self.bytes_in += len(data)
        self._upstream.write(data)

    def client_eof(self) -> None:
        """The client is done sending (`docker run -i` at the end of its stdin): tell the
        daemon with a half-close, and keep relaying its output."""
        self.open &= ~Open.TO_DAEMON
        transport = self._upstream.transport
        if not self._ended and transport is not None and transport.can_write_eof():
            transport.write_eof()
        self._end_if_done()

    # ----- daemon -> client (the upstream connection's owner: relay/upstream.py) ------------

    def upstream_data(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self._client.write(data)

    def upstream_eof(self) -> bool:
        self.open &= ~Open.TO_CLIENT
        client = self._client
        if not client.is_closing() and client.can_write_eof():
            client.write_eof()
        self._end_if_done()
        return True  # keep the daemon's connection open for what the client still sends

    def upstream_lost(self, exc: Exception | None = None) -> None:
        self.open = NOTHING_OPEN
        self._end()

    def upstream_paused(self) -> None:
        self._flow.pause(Pause.UPSTREAM_FULL)

    def upstream_resumed(self) -> None:
        self._flow.resume(Pause.UPSTREAM_FULL)

    # ----- the end ------------------------------------------------------------------------------

    def _end_if_done(self) -> None:
        if not self.open:
            self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._on_end()
