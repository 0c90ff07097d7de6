"""TLS to the daemon for the upstream pool, done here over a plain transport (like relay/tls.py for
the listeners, client side), so that a hijacked exchange can half-close towards the daemon.

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
from typing import cast

from dockgate.relay.tlspump import TLSPump, TLSPumpTransport


class ClientTLS(TLSPump):
    """The client side of TLS on one connection to the daemon. `handshake` is resolved when the
    handshake is done (the inner protocol then has its transport), or fails with the reason."""

    def __init__(
        self,
        inner: asyncio.Protocol,
        context: ssl.SSLContext,
        server_hostname: str,
        handshake: asyncio.Future[None],
    ) -> None:
        super().__init__()
        self._inner = inner
        self._sslobj = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        self._handshake = handshake
        self.error: Exception | None = None  # the TLS failure the inner protocol is told

    # ----- raw transport events ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._raw = cast(asyncio.Transport, transport)
        self._do_handshake()  # the ClientHello

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._receive(data)

    # ----- internals --------------------------------------------------------------------------

    def _eof_in_handshake(self) -> None:
        self._handshake_failed(
            ConnectionResetError("the daemon closed the connection during the TLS handshake")
        )

    def _tell_lost(self, exc: Exception | None) -> None:
        if self._handshaking:
            self._handshake_failed(
                self.error or exc or ConnectionResetError("connection lost in the TLS handshake")
            )
            return
        assert self._inner is not None
        self._inner.connection_lost(self.error or exc)

    def _do_handshake(self) -> None:
        inner = self._inner
        assert inner is not None
        if not self._step_handshake():
            return
        inner.connection_made(cast(asyncio.BaseTransport, TLSPumpTransport(self)))
        if not self._handshake.done():
            self._handshake.set_result(None)
        if self._incoming.pending:
            self._read_app()

    def _handshake_error(self, exc: ssl.SSLError | ssl.CertificateError) -> None:
        self._handshake_failed(exc)  # our alert went out, so the daemon logs why

    def _handshake_failed(self, exc: BaseException) -> None:
        self._closing = True
        if not self._handshake.done():
            self._handshake.set_exception(exc)
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.abort()

    def _write_failed(self, exc: ssl.SSLError) -> None:
        self._fail(exc)

    def _read_failed(self, exc: ssl.SSLError) -> None:
        self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        """A TLS error on an established connection: drop it; the inner protocol hears why."""
        self.error = exc
        self._closing = True
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.abort()
