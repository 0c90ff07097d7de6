"""TLS session resumption when client certificates are required (issue 12, attack review).

A resumed session has no verified chain (OpenSSL keeps the leaf only), so the gateway sends no
session tickets (TLS 1.3 and 1.2) and judges the one resumption it cannot turn off, TLS 1.2 by
session ID, by the chain of the session's full handshake, remembered by session ID
(clientcerts.ResumableSessions). tests/auth/test_attacks_identity.py shows the effect on
expired CAs and reloads; here: the memory's rules, the context's settings, and curl, which
resumes sessions within one process, still served with both TLS versions.
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import re
import socket
import ssl
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import serialization
from test_tls_revalidation import start_gateway

from dockgate.auth.clientcerts import PeerCertificate, ResumableSessions, TrustSet
from dockgate.relay.tls import ServerTLS, TLSProtocol
from support.daemon import PrivateDaemon
from support.gateway import running
from support.pki import Issuer, issue, make_ca, make_pki, write_pair


def _der(issuer: Issuer) -> bytes:
    return issuer.cert.public_bytes(serialization.Encoding.DER)


def test_a_resumed_session_is_its_full_handshakes_chain() -> None:
    """The copy a resumption gets has the full handshake's notAfter (the intermediate's, here,
    shorter than the leaf's) and its anchor: a reload keeping the root keeps it, one dropping
    the root ends it. Failed before: there was no memory, a resumption had the leaf alone."""
    root = make_ca("root")
    intermediate = make_ca("intermediate", parent=root, days=2)
    leaf = issue(intermediate, "alice", lifetime=datetime.timedelta(days=30))
    trust = TrustSet.from_der([_der(root)], 0)
    full = PeerCertificate([_der(leaf), _der(intermediate), _der(root)], trust)
    sessions = ResumableSessions()
    sessions.remember(b"session-1", _der(leaf), full)
    resumed = sessions.resume(b"session-1", _der(leaf))
    assert resumed is not None and resumed is not full
    assert resumed.expires == intermediate.cert.not_valid_after_utc.timestamp()
    now = time.time()
    assert resumed.problem(trust, now) is None
    assert resumed.problem(TrustSet.from_der([_der(root)], 1), now) is None  # kept the root
    assert resumed.problem(TrustSet.from_der([], 2), now) is not None  # dropped it
    assert resumed.problem(trust, resumed.expires) is not None
    # Neither a session ID nobody had nor a known ID with another leaf.
    assert sessions.resume(b"session-2", _der(leaf)) is None
    assert sessions.resume(b"session-1", _der(issue(intermediate, "bob"))) is None
    assert sessions.resume(b"", _der(leaf)) is None


def test_the_memory_is_bounded_and_a_resumption_keeps_its_session() -> None:
    ca = make_ca("CA")
    trust = TrustSet.from_der([_der(ca)], 0)
    leaves = [_der(issue(ca, f"user{i}")) for i in range(4)]
    sessions = ResumableSessions(limit=3)
    for i in range(3):
        sessions.remember(bytes([i]), leaves[i], PeerCertificate([leaves[i]], trust))
    assert sessions.resume(bytes([0]), leaves[0]) is not None  # now the most recent
    sessions.remember(bytes([3]), leaves[3], PeerCertificate([leaves[3]], trust))
    assert len(sessions) == 3
    assert sessions.resume(bytes([1]), leaves[1]) is None  # the oldest, evicted
    assert all(sessions.resume(bytes([i]), leaves[i]) is not None for i in (0, 2, 3))
    sessions.remember(b"", leaves[0], PeerCertificate([leaves[0]], trust))  # no ID: not kept
    assert len(sessions) == 3


def test_no_tickets_when_client_certificates_are_required(tmp_path: pathlib.Path) -> None:
    """Failed before: the client-certificate context sent two TLS 1.3 tickets and TLS 1.2
    tickets. Without client certificates resumption is left as it was (no identity rides on
    the session)."""
    pki = make_pki(tmp_path)
    with_ca = ServerTLS(str(pki.server_cert), str(pki.server_key), str(pki.client_ca))
    context = with_ca.context()
    assert context.num_tickets == 0 and context.options & ssl.OP_NO_TICKET
    without = ServerTLS(str(pki.server_cert), str(pki.server_key)).context()
    assert without.num_tickets > 0 and not without.options & ssl.OP_NO_TICKET


def _curl(port: int, cert: pathlib.Path, key: pathlib.Path, ca: pathlib.Path, *extra: str) -> str:
    """Three requests from one curl process (which resumes TLS sessions across its
    connections: each on a new connection here); curl's verbose output."""
    url = f"https://127.0.0.1:{port}/_ping"
    proc = subprocess.run(
        [
            *("curl", "-sS", "-v", "--fail", "--cacert", str(ca)),
            *("--cert", str(cert), "--key", str(key), *extra),
            *(url, "--next", "--cacert", str(ca), "--cert", str(cert), "--key", str(key)),
            *(*extra, url, "--next", "--cacert", str(ca), "--cert", str(cert)),
            *("--key", str(key), *extra, url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "OKOKOK", proc.stdout
    return proc.stderr


@pytest.mark.daemon
@pytest.mark.timeout(120)
@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_curl_reconnecting_is_served(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, tls: str
) -> None:
    """A real client that resumes sessions: every request is answered. TLS 1.2 resumes by
    session ID (judged by the remembered full handshake); TLS 1.3 makes full handshakes."""
    pki = make_pki(tmp_path)
    intermediate = make_ca("client intermediate", parent=pki.ca1)
    cert = write_pair(pki.root, "curl", issue(intermediate, "alice"), intermediate)
    ca = pki.root / "server-ca.pem"
    ca.write_bytes(pki.server_ca.pem())
    extra = ("--tlsv1.2", "--tls-max", "1.2", "--no-keepalive", "-H", "Connection: close")
    if tls == "1.3":
        extra = ("--tlsv1.3", "--no-keepalive", "-H", "Connection: close")
    with running(start_gateway(daemon, pki), "the TLS gateway") as gw:
        verbose = _curl(gw.port, cert, pki.root / "curl-key.pem", ca, *extra)
    handshakes = re.findall(r"SSL connection using (TLSv[\d.]+)", verbose)
    assert handshakes == [f"TLSv{tls}"] * 3, verbose
    reused = verbose.count("SSL re-using session ID")
    assert reused == (2 if tls == "1.2" else 0), verbose


class _Ping(asyncio.Protocol):
    """The inner protocol: answers `ok` to anything and closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"ok")  # type: ignore[attr-defined]
        self.transport.close()


def test_a_resumption_without_a_remembered_handshake_is_refused(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TLSProtocol in-process (TLS 1.2): a session whose full handshake is not remembered
    (forgotten here, as an eviction would) is refused after its handshake, and as it was not
    shut down cleanly OpenSSL drops it from its cache: the client's next attempt with the same
    session makes a full handshake and is served."""
    pki = make_pki(tmp_path)
    cert = write_pair(pki.root, "client", issue(pki.ca1, "alice"))
    client = ssl.create_default_context(cadata=pki.server_ca.pem().decode())
    client.load_cert_chain(cert, pki.root / "client-key.pem")
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    tls = ServerTLS(str(pki.server_cert), str(pki.server_key), str(pki.client_ca))

    def connect(port: int, session: ssl.SSLSession | None) -> tuple[bytes, bool, ssl.SSLSession]:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with client.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as sock:
            sock.sendall(b"ping")
            answer = b""
            try:
                while data := sock.recv(100):
                    answer += data
            except (ssl.SSLError, OSError):
                pass
            return answer, sock.session_reused, sock.session

    async def scenario() -> list[tuple[bytes, bool]]:
        server = await asyncio.get_running_loop().create_server(
            lambda: TLSProtocol(_Ping, tls), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        outcomes = []
        try:
            answer, reused, session = await asyncio.to_thread(connect, port, None)
            outcomes.append((answer, reused))
            answer, reused, _ = await asyncio.to_thread(connect, port, session)
            outcomes.append((answer, reused))  # remembered: served
            tls._sessions = ResumableSessions()  # forgotten, as an eviction would
            answer, reused, _ = await asyncio.to_thread(connect, port, session)
            outcomes.append((answer, reused))
            answer, reused, _ = await asyncio.to_thread(connect, port, session)
            outcomes.append((answer, reused))
        finally:
            server.close()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes == [(b"ok", False), (b"ok", True), (b"", True), (b"ok", False)]
    assert "has no known full handshake; refused" in capsys.readouterr().err
