"""TLS for TCP listeners, done in the gateway over a plain transport.

uvloop's own SSL transport (``create_server(ssl=...)``) cannot half-close: ``can_write_eof()`` is
False, and a client's TLS close_notify ends the connection whatever ``eof_received()`` returns.
A hijacked ``docker run -i`` needs exactly that half-close (stdin ends, output keeps coming), so
TLS runs here instead, with ``SSLContext.wrap_bio`` over memory BIOs:

- ciphertext from the socket goes into ``incoming``; ``SSLObject.read`` yields plaintext for the
  inner protocol (a ``ClientConnection``);
- plaintext from the inner protocol goes through ``SSLObject.write``; whatever lands in
  ``outgoing`` is written to the socket after every SSLObject call;
- a close_notify from the client is the client's half-close: the inner protocol's
  ``eof_received()`` decides whether the connection stays open for writing (TLS 1.3 and OpenSSL
  allow writing after receiving close_notify); ``write_eof()`` sends our close_notify, then a
  TCP FIN.
"""

from __future__ import annotations

import _ssl
import asyncio
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from dockgate.auth.clientcerts import EMPTY_TRUST, PeerCertificate, ResumableSessions, TrustSet
from dockgate.http.proxyproto import ProxyHeaderError, parse_proxy_header
from dockgate.observe.logtext import printable
from dockgate.policy.browser import ANSWER_HEADERS
from dockgate.relay.tlspump import TLSPump, TLSPumpTransport
from dockgate.watched import RELOAD_CHECK_SECONDS, FileStamp, file_stamp

DEFAULT_HANDSHAKE_TIMEOUT_SECONDS = 10.0

_HTTP_ON_TLS_PORT = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    + ANSWER_HEADERS  # a plain-HTTP page at this port is a document too: sandboxed
    + b"\r\nClient sent an HTTP request to an HTTPS server.\n"
)


def _log(message: str) -> None:
    print(f"dockgate: {message}", file=sys.stderr, flush=True)


class TLSConfigError(Exception):
    """A certificate, key or CA file cannot be used; the message says which and why."""


class ServerTLS:
    """The server's TLS settings: certificate, key and optional client CA, reloaded on change.

    ``context()`` looks at the files' inode, size and mtime at most once a second and builds a
    new context when they changed; if the new files do not load (a half-written file, a key that
    does not match), the previous context stays in use and one line goes to stderr. ``trust()``
    does the same and answers the client CA certificates of the context in use, which open
    connections' certificates are checked against again (auth/clientcerts.py).
    """

    def __init__(
        self,
        cert: str,
        key: str,
        client_ca: str | None = None,
        *,
        check_interval: float = RELOAD_CHECK_SECONDS,
    ) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._check_interval = check_interval
        self._stamps = self._current_stamps()
        self.generation = 0  # reloads that took
        self._context, self._trust = self._build(0)  # raises TLSConfigError
        self._sessions = ResumableSessions()
        self._checked = time.monotonic()

    @property
    def requires_client_cert(self) -> bool:
        return self.client_ca is not None

    def _paths(self) -> list[str]:
        return [self.cert, self.key] + ([self.client_ca] if self.client_ca is not None else [])

    def _current_stamps(self) -> list[FileStamp]:
        return [file_stamp(path) for path in self._paths()]

    def _build(self, generation: int) -> tuple[ssl.SSLContext, TrustSet]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(
                f"--tls-cert {self.cert} / --tls-key {self.key}: {_describe(exc)}"
            ) from None
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (OSError, ssl.SSLError) as exc:
                message = f"--tls-client-ca {self.client_ca}: {_describe(exc)}"
                raise TLSConfigError(message) from None
            context.verify_mode = ssl.CERT_REQUIRED
            # No resumption by ticket: a resumed session carries no verified chain (OpenSSL
            # keeps the leaf only), and a ticket, re-issued at each resumption, would carry a
            # session past its CA's notAfter (auth/clientcerts.py). TLS 1.3: no tickets at all
            # (with OP_NO_TICKET alone OpenSSL sends stateful ones); TLS 1.2: no RFC 5077
            # tickets. What is left is TLS 1.2 resumption by session ID from the context's
            # cache, which CPython cannot turn off: TLSProtocol judges it by the session's
            # full handshake (ResumableSessions). A full handshake costs ~2 ms.
            context.num_tickets = 0
            context.options |= ssl.OP_NO_TICKET
            # What OpenSSL loaded, not a second reading of the file: the two cannot disagree.
            trust = TrustSet.from_der(context.get_ca_certs(binary_form=True), generation)
            return context, trust
        return context, EMPTY_TRUST

    def reload_now(self) -> None:
        """SIGHUP: read the files again now, whether or not they look changed."""
        self._stamps = []
        self._checked = float("-inf")
        self.context()

    def context(self) -> ssl.SSLContext:
        self._refresh()
        return self._context

    def current(self) -> tuple[ssl.SSLContext, TrustSet, ResumableSessions]:
        """For a new connection: the context, the client CA set it verifies against, and the
        full handshakes behind the sessions it can resume."""
        self._refresh()
        return self._context, self._trust, self._sessions

    def trust(self) -> TrustSet:
        """The client CA certificates in force now (the files looked at first, as for a new
        connection): asked on every request of a connection with a client certificate."""
        self._refresh()
        return self._trust

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._check_interval:
            return
        self._checked = now
        stamps = self._current_stamps()
        if stamps == self._stamps:
            return
        # Remember these stamps even if they do not load: one log line per change, not per
        # connection. A later change (the second file of a pair being written) tries again.
        self._stamps = stamps
        try:
            self._context, self._trust = self._build(self.generation + 1)
        except TLSConfigError as exc:
            _log(f"TLS reload failed, keeping the previous certificate: {exc}")
        else:
            self.generation += 1
            self._sessions = ResumableSessions()  # the new context's cache is empty
            _log("TLS certificate files changed: reloaded")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{exc.reason} ({exc.library or 'ssl'})" if exc.library else str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# The extra-info key under which a TLS connection tells the inner protocol what the PROXY
# header before the handshake said: the client address, or "" for a LOCAL/UNKNOWN header.
PROXY_SOURCE_INFO = "dockgate_proxy_source"
# ... and the one for its verified client certificate, as a PeerCertificate (auth/clientcerts.py).
PEER_CERTIFICATE_INFO = "dockgate_peer_certificate"

# Where a client certificate's identity may come from (`--tls-identity`), in the order tried.
IDENTITY_FIELDS = ("cn", "dns", "email", "uri")
DEFAULT_IDENTITY_FIELDS = ("cn", "dns", "email")
_SAN_KINDS = {"dns": "DNS", "email": "email", "uri": "URI"}
_FIELD_LABELS = {"cn": "CN", "dns": "DNS", "email": "email", "uri": "URI"}


class SeveralNames(ValueError):
    """The field that names the caller holds several values: which one is the caller is a
    matter of convention (Python's `ssl` lists them in order and dockgate took the first; Go's
    crypto/x509/pkix `Name.FillFromRDNSequence` keeps the last CN, and that `CommonName` is
    the user moby's authorization plugins are told, pkg/authorization/middleware.go), so the
    certificate names no one."""


def _field_values(cert: dict[str, Any], wanted: str) -> list[str]:
    """Every value of one identity field, in certificate order, empty ones included."""
    if wanted == "cn":
        return [
            cast(str, value)
            for rdn in cert.get("subject", ())  # several CNs in one RDN (CN=a+CN=b) count too
            for name, value in rdn
            if name == "commonName"
        ]
    kind = _SAN_KINDS[wanted]
    return [cast(str, value) for k, value in cert.get("subjectAltName", ()) if k == kind]


def peer_identity(
    cert: dict[str, Any] | None, fields: tuple[str, ...] = DEFAULT_IDENTITY_FIELDS
) -> str | None:
    """The identity of a verified client certificate: the value of the first of `fields` (in
    order) that the certificate has; None without a certificate or without any of those
    fields. Raises SeveralNames when that field holds more than one value (`CN=admin,CN=bob`;
    two SAN DNS names where `dns` names the caller); the later fields are not read then, as
    they would not have been for a single value."""
    if not cert:
        return None
    for wanted in fields:
        values = _field_values(cert, wanted)
        if not any(values):
            continue
        if len(values) > 1:
            listed = ", ".join(repr(v) for v in values)
            raise SeveralNames(f"{len(values)} {_FIELD_LABELS[wanted]} values ({listed})")
        return values[0]
    return None


def _verified_chain(sslobj: ssl.SSLObject) -> list[bytes]:
    """The client's chain as the handshake verified it, leaf first, trust anchor last (DER).

    Python 3.13 has SSLObject.get_verified_chain(); 3.10 to 3.12 have it on the private
    _ssl object, returning _ssl.Certificate objects. Without either, the leaf alone (its
    issuer is then looked up in the CA set: enough for a chain of one).
    """
    public = getattr(sslobj, "get_verified_chain", None)
    if public is not None:
        chain = [bytes(der) for der in public() or ()]
    else:
        private = getattr(getattr(sslobj, "_sslobj", None), "get_verified_chain", None)
        encoding = getattr(_ssl, "ENCODING_DER", 1)
        chain = [cert.public_bytes(encoding) for cert in private() or ()] if private else []
    if chain:
        return chain
    leaf = sslobj.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def peer_subject(cert: dict[str, Any] | None) -> str:
    """The certificate's subject as `CN=alice,O=Example`, for the audit trail."""
    if not cert:
        return ""
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}
    return ",".join(
        f"{short.get(name, name)}={value}" for rdn in cert.get("subject", ()) for name, value in rdn
    )


class TLSProtocol(TLSPump):
    """TLS server side of one TCP connection, around an inner protocol made once the handshake
    is complete."""

    def __init__(
        self,
        factory: Callable[[], asyncio.Protocol],
        tls: ServerTLS,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT_SECONDS,
        expects_proxy_header: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self._factory = factory
        self._expects_proxy_header = expects_proxy_header
        # A load balancer's PROXY header comes in clear, before the ClientHello: bytes of it
        # while it is incomplete, None when none is expected (or it has been read).
        self._proxy_pending: bytes | None = None
        self._proxy_source: str | None = None  # what the header said ("" for LOCAL/UNKNOWN)
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._trust = EMPTY_TRUST  # the client CA set of the context this connection uses
        self._sessions: ResumableSessions | None = None  # ... and its resumable sessions
        self._peer_certificate: PeerCertificate | None = None
        self._adapter: TLSPumpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._peer = "-"

    # ----- for the adapter --------------------------------------------------------------------

    def extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._sslobj
        if name == "ssl_object":
            return sslobj
        if name == "peercert":
            return sslobj.getpeercert() if sslobj is not None else default
        if name == "peercert_binary":
            return sslobj.getpeercert(binary_form=True) if sslobj is not None else default
        if name == "cipher":
            return sslobj.cipher() if sslobj is not None else default
        if name == "sslcontext":
            return sslobj.context if sslobj is not None else default
        if name == PROXY_SOURCE_INFO:
            return self._proxy_source if self._proxy_source is not None else default
        if name == PEER_CERTIFICATE_INFO:
            return self._peer_certificate if self._peer_certificate is not None else default
        return self.raw.get_extra_info(name, default)

    def app_abort(self) -> None:
        self._closing = True
        self._cancel_timer()
        if self._raw is not None:
            self._raw.abort()

    # ----- raw transport events ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._raw = cast(asyncio.Transport, transport)
        peer = self._raw.get_extra_info("peername")
        if isinstance(peer, tuple):
            host = peer[0]
            self._peer = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
            expects = self._expects_proxy_header
            if expects is not None and expects(host.partition("%")[0]):
                self._proxy_pending = b""
        context, self._trust, self._sessions = self._tls.current()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._timer = asyncio.get_running_loop().call_later(
            self._handshake_timeout, self._handshake_timed_out
        )

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._proxy_pending is not None:
            data = self._read_proxy_header(data)
            if not data:
                return
        self._receive(data)

    def _read_proxy_header(self, data: bytes) -> bytes:
        buffered = (self._proxy_pending or b"") + data
        try:
            header = parse_proxy_header(buffered)
        except ProxyHeaderError as exc:
            _log(f"{self._peer}: PROXY protocol: {exc}; connection closed")
            self._proxy_pending = None
            self._closing = True
            self._cancel_timer()
            self.raw.abort()
            return b""
        if header is None:
            self._proxy_pending = buffered
            return b""
        self._proxy_pending = None
        self._proxy_source = header.source[0] if header.source is not None else ""
        return buffered[header.consumed :]

    # ----- internals --------------------------------------------------------------------------

    def _eof_in_handshake(self) -> None:
        # A port probe, or a client that gave up: nothing to say.
        self._closing = True
        self._cancel_timer()

    def _tell_lost(self, exc: Exception | None) -> None:
        inner = self._inner
        if inner is not None:
            inner.connection_lost(exc)

    def _do_handshake(self) -> None:
        sslobj = self._sslobj
        assert sslobj is not None
        if not self._step_handshake():
            return
        self._cancel_timer()
        if self._tls.requires_client_cert:  # one was required, and OpenSSL verified it
            peer = self._verified_peer(sslobj)
            if peer is None:
                return
            self._peer_certificate = peer
        self._adapter = TLSPumpTransport(self)
        self._inner = self._factory()
        self._inner.connection_made(cast(asyncio.BaseTransport, self._adapter))

    def _verified_peer(self, sslobj: ssl.SSLObject) -> PeerCertificate | None:
        """The client certificate the handshake verified (None: refused, connection closed)."""
        sessions = self._sessions
        session = sslobj.session
        session_id = session.id if session is not None else b""
        leaf = sslobj.getpeercert(binary_form=True) or b""
        if sslobj.session_reused:
            # No chain to check (OpenSSL keeps none for a resumed session): the full
            # handshake's, if it is known. Refused otherwise, and as the connection is not
            # shut down cleanly, OpenSSL drops the session from its cache (ssl_clear_bad_session):
            # the client's next connection makes a full handshake.
            found = sessions.resume(session_id, leaf) if sessions is not None else None
            if found is None:
                self._fail(
                    f"TLS session resumed by {self._peer} has no known full handshake; refused"
                )
            return found
        try:
            peer = PeerCertificate(_verified_chain(sslobj), self._trust)
        except ValueError as exc:  # OpenSSL took what cryptography cannot read: refuse
            problem = printable(str(exc))  # the parser's words may quote the certificate
            self._fail(f"client certificate from {self._peer} cannot be read: {problem}")
            return None
        if sessions is not None and sslobj.version() == "TLSv1.2":
            sessions.remember(session_id, leaf, peer)  # resumable by ID (no tickets)
        return peer

    def _handshake_error(self, exc: ssl.SSLError | ssl.CertificateError) -> None:
        # The alert went out, so the client learns why.
        if isinstance(exc, ssl.SSLError) and exc.reason == "HTTP_REQUEST":
            self._write_raw(_HTTP_ON_TLS_PORT)
        self._fail(f"TLS handshake with {self._peer} failed: {_describe(exc)}")

    def _write_failed(self, exc: ssl.SSLError) -> None:
        self._flush()
        self._fail(f"TLS write to {self._peer} failed: {_describe(exc)}")

    def _read_failed(self, exc: ssl.SSLError) -> None:
        self._fail(f"TLS error from {self._peer}: {_describe(exc)}")

    def _fail(self, message: str) -> None:
        _log(message)
        self._closing = True
        self._cancel_timer()
        raw = self._raw
        if raw is not None and not raw.is_closing():
            raw.close()

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._handshaking and not self._closing:
            self._fail(f"TLS handshake with {self._peer} timed out")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
