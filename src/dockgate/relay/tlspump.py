"""The memory-BIO pump shared by TLS on the listeners (tls.TLSProtocol, server side) and TLS to
the daemon (tlsclient.ClientTLS, client side), both done over a plain transport so that a
hijacked exchange can half-close.

Ciphertext from the socket goes into ``incoming``; ``SSLObject.read`` yields plaintext for the
inner protocol; its writes go through ``SSLObject.write``; whatever lands in ``outgoing`` is
written to the socket after every SSLObject call. The peer's close_notify (or a TCP FIN without
one) reaches the inner protocol as ``eof_received()``, which decides whether the connection stays
open for writing; ``app_write_eof()`` sends our close_notify, then a TCP FIN, and reading goes on
(TLS 1.3 and OpenSSL allow both directions to end separately).

Each side keeps its own handshake (role, the server's client certificate and PROXY header, the
client's handshake future) and how it reports a failure.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

# Plaintext read per SSLObject.read call: larger than a TLS record (16 KiB), so a read never
# leaves part of a record decrypted inside OpenSSL.
READ_CHUNK_BYTES = 64 * 1024


class TLSPumpTransport:
    """What the inner protocol sees as its transport: the asyncio.Transport methods the proxy
    uses, with plaintext in and out."""

    def __init__(self, owner: TLSPump) -> None:
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
        self._owner.app_abort()

    def is_closing(self) -> bool:
        return self._owner.app_is_closing()

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
        return self._owner.extra_info(name, default)


class TLSPump(asyncio.Protocol):
    """The raw transport's protocol: moves bytes between it, the memory BIOs and the inner
    protocol. A subclass sets ``_sslobj``, runs the handshake (``_do_handshake``, which sets
    ``_handshaking`` False and ``_inner`` when done) and says what a TLS error does."""

    def __init__(self) -> None:
        self._raw: asyncio.Transport | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject | None = None
        self._inner: asyncio.Protocol | None = None
        self._handshaking = True
        self._closing = False  # the inner protocol (or a failure) closed the connection
        self._lost = False
        self._shutdown_sent = False  # our close_notify is out
        self._peer_eof = False  # the peer's close_notify (or TCP FIN) was passed on
        self._raw_eof = False  # TCP FIN from the peer
        self._reading = False  # inside _read_app (no re-entry)
        self._read_scheduled = False
        self.app_paused = False

    @property
    def raw(self) -> asyncio.Transport:
        assert self._raw is not None
        return self._raw

    # ----- what each side does ----------------------------------------------------------------

    def _do_handshake(self) -> None:
        raise NotImplementedError

    def _handshake_error(self, exc: ssl.SSLError | ssl.CertificateError) -> None:
        """The handshake failed (our alert is flushed): drop the connection."""
        raise NotImplementedError

    def _write_failed(self, exc: ssl.SSLError) -> None:
        """SSLObject.write failed: drop the connection."""
        raise NotImplementedError

    def _read_failed(self, exc: ssl.SSLError) -> None:
        """SSLObject.read failed (after the outgoing BIO was flushed): drop the connection."""
        raise NotImplementedError

    def _eof_in_handshake(self) -> None:
        """The peer's TCP FIN before the handshake was done (the connection then closes)."""
        raise NotImplementedError

    def _tell_lost(self, exc: Exception | None) -> None:
        """The raw connection is gone (once): tell whom it concerns."""
        raise NotImplementedError

    def _cancel_timer(self) -> None:
        """Stop a handshake timer, for a side that has one."""

    # ----- for the adapter --------------------------------------------------------------------

    def app_write(self, data: bytes) -> None:
        sslobj = self._sslobj
        if not data or self._closing or self._shutdown_sent or sslobj is None:
            return
        view = memoryview(data)
        try:
            while view:
                count = sslobj.write(view)
                view = view[count:]
        except ssl.SSLError as exc:
            self._write_failed(exc)
            return
        self._flush()

    def app_write_eof(self) -> None:
        if self._closing or self._shutdown_sent:
            return
        self._send_close_notify()
        raw = self._raw
        if raw is not None and not raw.is_closing() and raw.can_write_eof():
            raw.write_eof()

    def app_close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._cancel_timer()
        self._send_close_notify()
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.close()  # flushes what is buffered, then closes

    def app_abort(self) -> None:
        self.raw.abort()

    def app_is_closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

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
        # Plaintext (or the peer's EOF) may be waiting in the BIO from before the pause.
        if not self._read_scheduled and not self._reading:
            self._read_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_read)

    # ----- raw transport events ---------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Ciphertext from the peer: on with the handshake, or on to the inner protocol."""
        self._incoming.write(data)
        if self._handshaking:
            self._do_handshake()
            if self._handshaking or self._closing:
                return
        self._read_app()

    def eof_received(self) -> bool:
        self._raw_eof = True
        if self._handshaking:
            self._eof_in_handshake()
            return False
        if self._closing:
            return False
        # Plaintext may still be in the BIO; the EOF reaches the inner protocol after it.
        self._read_app()
        # Keep the socket open for writing unless the inner protocol said otherwise (then it has
        # closed the connection already).
        return not self._closing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._cancel_timer()
        self._tell_lost(exc)

    def pause_writing(self) -> None:
        if not self._handshaking and self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self._handshaking and self._inner is not None:
            self._inner.resume_writing()

    # ----- internals --------------------------------------------------------------------------

    def _step_handshake(self) -> bool:
        """Take the handshake a step on, what it sends flushed; True once it is done."""
        sslobj = self._sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._flush()  # our alert, so the peer learns why
            self._handshake_error(exc)
            return False
        self._flush()
        self._handshaking = False
        return True

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._write_raw(self._outgoing.read())

    def _write_raw(self, data: bytes) -> None:
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.write(data)

    def _scheduled_read(self) -> None:
        self._read_scheduled = False
        if not self._closing and not self._handshaking:
            self._read_app()

    def _read_app(self) -> None:
        """Pass decrypted data (then the peer's EOF) to the inner protocol, unless paused."""
        if self._reading:
            return
        sslobj = self._sslobj
        inner = self._inner
        assert sslobj is not None
        assert inner is not None
        incoming = self._incoming
        self._reading = True
        try:
            while not self.app_paused and not self._closing and not self._peer_eof:
                if not incoming.pending and not sslobj.pending():
                    # Nothing received is left to read: read() would only raise
                    # SSLWantReadError, and an exception per request is measurable.
                    if self._raw_eof:
                        self._deliver_eof(inner)  # a TCP FIN without close_notify
                    return
                try:
                    chunk = sslobj.read(READ_CHUNK_BYTES)
                except ssl.SSLWantReadError:
                    self._flush()  # e.g. a key update answer
                    if self._raw_eof:
                        self._deliver_eof(inner)  # a TCP FIN without close_notify
                    return
                except ssl.SSLZeroReturnError:
                    self._flush()
                    self._deliver_eof(inner)
                    return
                except ssl.SSLError as exc:
                    self._flush()
                    self._read_failed(exc)
                    return
                self._flush()  # TLS 1.3 session tickets go out with the first read
                if not chunk:
                    self._deliver_eof(inner)  # close_notify
                    return
                inner.data_received(chunk)
        finally:
            self._reading = False

    def _deliver_eof(self, inner: asyncio.Protocol) -> None:
        if self._peer_eof:
            return
        self._peer_eof = True
        if not inner.eof_received():
            self.app_close()

    def _send_close_notify(self) -> None:
        sslobj = self._sslobj
        if self._shutdown_sent or sslobj is None or self._handshaking:
            return
        self._shutdown_sent = True
        # unwrap() calls SSL_shutdown twice: the second call tries to read the peer's
        # close_notify and would consume (and reject) application data still waiting in the
        # incoming BIO. Take that ciphertext out for the call and put it back after.
        waiting = self._incoming.read()
        try:
            sslobj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLError):
            pass
        finally:
            if waiting:
                self._incoming.write(waiting)
        self._flush()

    def extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._sslobj
        return self.raw.get_extra_info(name, default)
