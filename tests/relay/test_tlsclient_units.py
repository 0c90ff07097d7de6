"""The upstream pool's TLS client (tlsclient.ClientTLS) driven without sockets: a fake raw
transport on one side, an in-memory OpenSSL server on the other. Pins what uvloop's SSL
transport could not do (half-close with reading going on) and the edges of pausing."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
import trustme

from dockgate.relay.tlsclient import ClientTLS


class FakeRaw:
    def __init__(self) -> None:
        self.written = bytearray()
        self.eof_written = False
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.data = bytearray()
        self.eof = False
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.eof = True
        return True  # keep writing, as a hijacked exchange does

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class Pair:
    """A ClientTLS and an in-memory server; `pump()` moves bytes both ways until quiet."""

    def __init__(self, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
        self.inner = Inner()
        self.raw = FakeRaw()
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.client = ClientTLS(self.inner, client_ctx, "127.0.0.1", self.handshake)
        self.s_in, self.s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.server = server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        self.server_got = bytearray()
        self.server_eof = False
        self.server_done = False
        self.server_failed: ssl.SSLError | None = None
        self.client.connection_made(self.raw)  # type: ignore[arg-type]

    def pump(self) -> None:
        for _ in range(20):
            moved = False
            if self.raw.written:
                self.s_in.write(bytes(self.raw.written))
                self.raw.written.clear()
                moved = True
            if not self.server_done:
                try:
                    self.server.do_handshake()
                    self.server_done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:  # the client's alert
                    self.server_failed = exc
                    return
            if self.server_done and not self.server_eof:
                try:
                    while True:
                        chunk = self.server.read(65536)
                        if not chunk:
                            self.server_eof = True
                            break
                        self.server_got += chunk
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLZeroReturnError:
                    self.server_eof = True
            if self.s_out.pending:
                self.client.data_received(self.s_out.read())
                moved = True
            if not moved:
                return

    def server_send(self, data: bytes) -> None:
        self.server.write(data)
        self.pump()


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def test_write_eof_is_a_close_notify_and_reading_goes_on(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def body() -> None:
        pair = Pair(*contexts)
        pair.pump()
        assert pair.handshake.done() and pair.handshake.exception() is None
        pair.inner.transport.write(b"stdin")
        pair.inner.transport.write_eof()
        pair.pump()
        assert bytes(pair.server_got) == b"stdin" and pair.server_eof  # the daemon's EOF
        assert pair.raw.eof_written and not pair.raw.is_closing()
        pair.server_send(b"output after the end of stdin")
        assert bytes(pair.inner.data) == b"output after the end of stdin"
        assert pair.inner.lost == []

    asyncio.run(body())


def test_paused_reading_keeps_plaintext_until_resumed(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def body() -> None:
        pair = Pair(*contexts)
        pair.pump()
        pair.inner.transport.pause_reading()
        assert not pair.raw.reading
        pair.server_send(b"held")
        assert pair.inner.data == b""
        pair.inner.transport.resume_reading()
        await asyncio.sleep(0)  # delivered from the loop, not inside resume_reading
        assert bytes(pair.inner.data) == b"held" and pair.raw.reading

    asyncio.run(body())


def test_a_close_notify_from_the_daemon_is_eof_to_the_inner_protocol(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def body() -> None:
        pair = Pair(*contexts)
        pair.pump()
        pair.server_send(b"last words")
        with pytest.raises(ssl.SSLWantReadError):
            pair.server.unwrap()
        pair.pump()
        assert bytes(pair.inner.data) == b"last words" and pair.inner.eof

    asyncio.run(body())


def test_an_untrusted_daemon_fails_the_handshake_with_the_reason(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def body() -> None:
        stranger = ssl.create_default_context()
        trustme.CA().configure_trust(stranger)
        pair = Pair(contexts[0], stranger)
        pair.pump()
        assert pair.handshake.done()
        assert isinstance(pair.handshake.exception(), ssl.SSLCertVerificationError)
        assert pair.raw.aborted and pair.inner.transport is None  # never handed out
        assert pair.server_failed is not None  # the daemon got our alert, so it logs why

    asyncio.run(body())
