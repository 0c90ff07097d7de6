"""TLS to the daemon for the upstream pool, done here over a plain transport (like tls.py for the
listeners, client side), so that a hijacked exchange can half-close towards the daemon.

uvloop's SSL transport (`create_connection(ssl=...)`) cannot: `can_write_eof()` is False. A
`docker run -i` whose stdin ends must pass that end on to the daemon, which reads it as the end
of the container's stdin (Go's tls.Conn returns io.EOF on a close_notify; moby
api/server/router/container/container_routes.go postContainersAttach, then
container/stream/attach.go closes stdin). Without it, `echo x | docker run -i IMAGE cat` waits
forever. So: ciphertext from the socket goes into `incoming`, `SSLObject.read` yields plaintext
for the inner protocol (an `UpstreamConnection`); its writes go through `SSLObject.write`;
`write_eof()` sends our close_notify and a TCP FIN, and reading goes on (TLS 1.3 and OpenSSL
allow reading after sending close_notify).

A TLS failure after the handshake (a TLS 1.3 daemon refuses a missing client certificate at the
first read) reaches the inner protocol as `connection_lost(exc)` with the SSLError, so the 502
can say why.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, cast

# Plaintext read per SSLObject.read call: more than one TLS record (16 KiB).
READ_CHUNK_BYTES = 64 * 1024


class ClientTLSTransport:
    """What the inner protocol sees as its transport: plaintext in and out."""

    def __init__(self, owner: ClientTLS) -> None:
        self._owner = owner

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._owner.app_write(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self._owner.app_write(b"".join(chunks))

    def write_eof(self) -> None:
        self._owner.app_write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._owner.app_close()

    def abort(self) -> None:
        self._owner.raw.abort()

    def is_closing(self) -> bool:
        return self._owner.closing or self._owner.raw.is_closing()

    def pause_reading(self) -> None:
        self._owner.app_pause_reading()

    def resume_reading(self) -> None:
        self._owner.app_resume_reading()

    def is_reading(self) -> bool:
        return not self._owner.app_paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._owner.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._owner.raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._owner.raw.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._owner.sslobj
        return self._owner.raw.get_extra_info(name, default)


class ClientTLS(asyncio.Protocol):
    """The client side of TLS on one connection to the daemon. `handshake` is resolved when the
    handshake is done (the inner protocol then has its transport), or fails with the reason."""

    def __init__(
        self,
        inner: asyncio.Protocol,
        context: ssl.SSLContext,
        server_hostname: str,
        handshake: asyncio.Future[None],
    ) -> None:
        self.inner = inner
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._handshake = handshake
        self._raw: asyncio.Transport | None = None
        self._handshaking = True
        self.error: Exception | None = None  # the TLS failure the inner protocol is told
        self.closing = False
        self._shutdown_sent = False
        self._peer_eof = False  # the daemon's close_notify (or FIN) was passed on
        self._raw_eof = False
        self._reading = False
        self._read_scheduled = False
        self._lost = False
        self.app_paused = False

    @property
    def raw(self) -> asyncio.Transport:
        assert self._raw is not None
        return self._raw

    # ----- for the adapter --------------------------------------------------------------------

    def app_write(self, data: bytes) -> None:
        if not data or self.closing or self._shutdown_sent:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[self.sslobj.write(view) :]
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self._flush()

    def app_write_eof(self) -> None:
        if self.closing or self._shutdown_sent:
            return
        self._send_close_notify()
        raw = self._raw
        if raw is not None and not raw.is_closing() and raw.can_write_eof():
            raw.write_eof()

    def app_close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._send_close_notify()
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.close()

    def app_pause_reading(self) -> None:
        if self.app_paused:
            return
        self.app_paused = True
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.pause_reading()

    def app_resume_reading(self) -> None:
        if not self.app_paused:
            return
        self.app_paused = False
        raw = self._raw
        if raw is not None and not raw.is_closing() and not self._raw_eof:
            raw.resume_reading()
        # Plaintext (or the daemon's EOF) may be waiting in the BIO from before the pause.
        if not self._read_scheduled and not self._reading:
            self._read_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_read)

    # ----- raw transport events ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._raw = cast(asyncio.Transport, transport)
        self._do_handshake()  # the ClientHello

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._incoming.write(data)
        if self._handshaking:
            self._do_handshake()
            if self._handshaking or self.closing:
                return
        self._read_app()

    def eof_received(self) -> bool:
        self._raw_eof = True
        if self._handshaking:
            self._handshake_failed(
                ConnectionResetError("the daemon closed the connection during the TLS handshake")
            )
            return False
        if self.closing:
            return False
        self._read_app()  # plaintext may still be in the BIO; the EOF reaches the inner after it
        return not self.closing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.closing = True
        if self._handshaking:
            self._handshake_failed(
                self.error or exc or ConnectionResetError("connection lost in the TLS handshake")
            )
            return
        self.inner.connection_lost(self.error or exc)

    def pause_writing(self) -> None:
        if not self._handshaking:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._handshaking:
            self.inner.resume_writing()

    # ----- internals --------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._outgoing.pending:
            data = self._outgoing.read()
            raw = self._raw
            if raw is not None and not raw.is_closing():
                raw.write(data)

    def _do_handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._flush()  # our alert, so the daemon logs why
            self._handshake_failed(exc)
            return
        self._flush()
        self._handshaking = False
        self.inner.connection_made(cast(asyncio.BaseTransport, ClientTLSTransport(self)))
        if not self._handshake.done():
            self._handshake.set_result(None)
        if self._incoming.pending:
            self._read_app()

    def _handshake_failed(self, exc: BaseException) -> None:
        self.closing = True
        if not self._handshake.done():
            self._handshake.set_exception(exc)
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.abort()

    def _scheduled_read(self) -> None:
        self._read_scheduled = False
        if not self.closing:
            self._read_app()

    def _read_app(self) -> None:
        """Pass decrypted data (then the daemon's EOF) to the inner protocol, unless paused."""
        if self._reading:
            return
        sslobj, inner, incoming = self.sslobj, self.inner, self._incoming
        self._reading = True
        try:
            while not self.app_paused and not self.closing and not self._peer_eof:
                if not incoming.pending and not sslobj.pending():
                    if self._raw_eof:
                        self._deliver_eof()  # a TCP FIN without close_notify
                    return
                try:
                    chunk = sslobj.read(READ_CHUNK_BYTES)
                except ssl.SSLWantReadError:
                    self._flush()  # a key update answer
                    if self._raw_eof:
                        self._deliver_eof()
                    return
                except ssl.SSLZeroReturnError:
                    self._flush()
                    self._deliver_eof()
                    return
                except ssl.SSLError as exc:
                    self._flush()
                    self._fail(exc)
                    return
                self._flush()
                if not chunk:
                    self._deliver_eof()
                    return
                inner.data_received(chunk)
        finally:
            self._reading = False

    def _deliver_eof(self) -> None:
        if self._peer_eof:
            return
        self._peer_eof = True
        if not self.inner.eof_received():
            self.app_close()

    def _send_close_notify(self) -> None:
        if self._shutdown_sent or self._handshaking:
            return
        self._shutdown_sent = True
        # unwrap() would go on to read the daemon's close_notify and consume (and reject) data
        # still waiting in the incoming BIO: take it out for the call and put it back after.
        waiting = self._incoming.read()
        try:
            self.sslobj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        finally:
            if waiting:
                self._incoming.write(waiting)
        self._flush()

    def _fail(self, exc: Exception) -> None:
        """A TLS error on an established connection: drop it; the inner protocol hears why."""
        self.error = exc
        self.closing = True
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.abort()
