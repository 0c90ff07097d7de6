"""Connections to the Docker daemon, and the pool of idle keep-alive ones.

An upstream connection serves one client exchange at a time (no pipelining towards the daemon),
so the daemon's answer always belongs to the exchange that owns the connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from typing import Protocol, cast

from dockgate.addresses import Address
from dockgate.http.errors import UpstreamError
from dockgate.relay.tlsclient import ClientTLS
from dockgate.relay.upstreamtls import describe_upstream_error

CONNECT_TIMEOUT_SECONDS = 10.0
# Write-buffer marks for both sides of the gateway (the client side uses them too): large
# enough to batch small stream writes, small enough that thousands of slow peers cannot
# exhaust memory. Past the high mark, reading from the other side pauses.
WRITE_HIGH_WATER_BYTES = 256 * 1024
WRITE_LOW_WATER_BYTES = 64 * 1024


class UpstreamOwner(Protocol):
    """What an upstream connection reports to the client exchange that owns it."""

    def upstream_data(self, data: bytes) -> None: ...
    def upstream_eof(self) -> bool: ...
    def upstream_lost(self, exc: Exception | None = None) -> None: ...
    def upstream_paused(self) -> None: ...
    def upstream_resumed(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("closed", "owner", "pool", "reused", "transport")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.owner: UpstreamOwner | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.upstream_data(data)
        else:
            # The daemon never speaks first on an idle connection; drop it.
            self.close()

    def eof_received(self) -> bool:
        owner = self.owner
        if owner is not None:
            return owner.upstream_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_paused()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_resumed()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_reading(self) -> None:
        """The client cannot take more of the answer for now."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        """Drop the connection (it will not be reused); pending writes are discarded."""
        self.owner = None
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()


def _tune(transport: asyncio.BaseTransport, address: Address) -> None:
    cast(asyncio.Transport, transport).set_write_buffer_limits(
        WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES
    )
    if address.scheme == "tcp":
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class UpstreamPool:
    """Opens upstream connections and keeps up to `max_idle` idle ones for reuse."""

    def __init__(self, address: Address, max_idle: int = 64) -> None:
        self.address = address
        self.max_idle = max_idle
        self._idle: collections.deque[UpstreamConnection] = collections.deque()

    def connect_failure(self, exc: OSError | TimeoutError) -> UpstreamError:
        """What a client is told (502) when `connect` failed with `exc`."""
        return UpstreamError(
            f"cannot connect to the Docker daemon at {self.address}: {describe_upstream_error(exc)}"
        )

    def take_idle(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()  # most recently used first: the one least likely timed out
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        address = self.address
        if address.tls is not None:
            return await self._connect_tls(address, address.tls)
        if address.scheme == "unix":
            coro = loop.create_unix_connection(lambda: UpstreamConnection(self), address.path)
        else:
            coro = loop.create_connection(
                lambda: UpstreamConnection(self), address.host, address.port
            )
        transport, conn = await asyncio.wait_for(coro, CONNECT_TIMEOUT_SECONDS)
        _tune(transport, address)
        return conn

    async def _connect_tls(self, address: Address, context: ssl.SSLContext) -> UpstreamConnection:
        """A connection whose TLS handshake is done: the daemon's certificate is checked
        against the CA and the upstream's host name before it is handed out (relay/tlsclient.py,
        which also lets a hijacked stream half-close)."""
        loop = asyncio.get_running_loop()
        handshake: asyncio.Future[None] = loop.create_future()
        conn = UpstreamConnection(self)
        transport, tls = await asyncio.wait_for(
            loop.create_connection(
                lambda: ClientTLS(conn, context, address.host, handshake),
                address.host,
                address.port,
            ),
            CONNECT_TIMEOUT_SECONDS,
        )
        try:
            await asyncio.wait_for(handshake, CONNECT_TIMEOUT_SECONDS)
        except BaseException:
            transport.abort()
            raise
        if conn.closed:
            # Lost between the handshake and now: a TLS 1.3 daemon's alert refusing our client
            # certificate comes right after the handshake. Handed out, the connection would
            # swallow the request and the client would wait for ever.
            raise tls.error or ConnectionResetError("the daemon closed the connection")
        _tune(transport, address)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection whose last exchange completed cleanly."""
        conn.owner = None
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            return
        if len(self._idle) >= self.max_idle:
            conn.close()
            return
        transport.resume_reading()  # an idle connection must notice the daemon closing it
        self._idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def close_all(self) -> None:
        while self._idle:
            self._idle.pop().close()
