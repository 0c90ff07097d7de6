"""TLS on TCP listeners (`--tls-cert/--tls-key/--tls-client-ca`), with a real daemon and clients.

The gateway does TLS itself over a plain transport (src/dockgate/relay/tls.py) so that a hijacked
`docker --tlsverify run -i` keeps its half-close: stdin ends, output keeps coming.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import trustme

from dockgate.relay.tls import peer_identity, peer_subject
from support.clients import Cleanup
from support.daemon import PrivateDaemon, run_docker
from support.gateway import Gateway, running

pytestmark = pytest.mark.daemon

HALF_CLOSE_BYTES = 2 * 1024 * 1024
RELOAD_WAIT_SECONDS = 1.5
RELOAD_RETRY_SECONDS = 5.0


@dataclass
class Pki:
    root: pathlib.Path
    ca: trustme.CA
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_ca: pathlib.Path
    cert_path: pathlib.Path  # DOCKER_CERT_PATH: ca.pem, cert.pem, key.pem


def _write_server_pair(ca: trustme.CA, cert: pathlib.Path, key: pathlib.Path) -> None:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    for path, data in ((key, leaf.private_key_pem.bytes()), (cert, _chain(leaf))):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def _chain(leaf: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in leaf.cert_chain_pems)


def _client_dir(path: pathlib.Path, trust: trustme.CA, issuer: trustme.CA) -> pathlib.Path:
    """A DOCKER_CERT_PATH trusting ``trust`` with a client certificate issued by ``issuer``."""
    path.mkdir(parents=True, exist_ok=True)
    leaf = issuer.issue_cert("alice@example.test", common_name="alice")
    (path / "ca.pem").write_bytes(trust.cert_pem.bytes())
    (path / "cert.pem").write_bytes(_chain(leaf))
    (path / "key.pem").write_bytes(leaf.private_key_pem.bytes())
    return path


def _make_pki(root: pathlib.Path) -> Pki:
    ca = trustme.CA()
    server_cert, server_key = root / "server-cert.pem", root / "server-key.pem"
    _write_server_pair(ca, server_cert, server_key)
    client_ca = root / "client-ca.pem"
    client_ca.write_bytes(ca.cert_pem.bytes())
    cert_path = _client_dir(root / "client", ca, ca)
    return Pki(root, ca, server_cert, server_key, client_ca, cert_path)


def _tls_args(pki: Pki, client_ca: bool = True) -> list[str]:
    args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    if client_ca:
        args += ["--tls-client-ca", str(pki.client_ca)]
    return args


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_gateway(daemon: PrivateDaemon, pki: Pki) -> Iterator[Gateway]:
    with running(Gateway(daemon.host, *_tls_args(pki)), "the TLS gateway") as gw:
        yield gw


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("docker-config")


def _env(config_dir: pathlib.Path, cert_path: pathlib.Path | None) -> dict[str, str]:
    env = os.environ.copy()
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(key, None)
    env["DOCKER_CONFIG"] = str(config_dir)
    env["DOCKER_CLI_HINTS"] = "false"
    env["DOCKER_BUILDKIT"] = "0"
    if cert_path is not None:
        env["DOCKER_CERT_PATH"] = str(cert_path)
    return env


def _docker(
    gw: Gateway,
    config_dir: pathlib.Path,
    cert_path: pathlib.Path,
    *args: str,
    input: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    env = _env(config_dir, cert_path)
    return run_docker(env, "--tlsverify", "-H", gw.url, *args, input=input, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
    )
    return proc


def _handshake_lines(gw: Gateway) -> list[str]:
    return [line for line in gw.stderr() if "TLS handshake" in line]


# ----- the docker CLI ---------------------------------------------------------------------------


def test_cli_ps_over_tls(tls_gateway: Gateway, pki: Pki, config_dir: pathlib.Path) -> None:
    proc = _ok(_docker(tls_gateway, config_dir, pki.cert_path, "ps"))
    assert b"CONTAINER ID" in proc.stdout


def test_hijacked_stdin_half_close_over_tls(
    *,
    tls_gateway: Gateway,
    pki: Pki,
    config_dir: pathlib.Path,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """`run -i cat`: stdin's end reaches the container as EOF (the client's close_notify or FIN)
    and all of cat's output still comes back over the same TLS connection afterwards."""
    data = os.urandom(HALF_CLOSE_BYTES)
    name = cleanup.container(unique("tls-cat"))
    proc = _docker(
        tls_gateway,
        config_dir,
        pki.cert_path,
        "run",
        "--rm",
        "-i",
        "--name",
        name,
        busybox_image,
        "cat",
        input=data,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout) == len(data)
    assert proc.stdout == data


def test_docker_context_over_tls(
    tls_gateway: Gateway, pki: Pki, tmp_path: pathlib.Path, unique: Callable[[str], str]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    env = _env(config, None)
    name = unique("ctx")
    spec = (
        f"host={tls_gateway.url},ca={pki.cert_path / 'ca.pem'},"
        f"cert={pki.cert_path / 'cert.pem'},key={pki.cert_path / 'key.pem'}"
    )
    _ok(run_docker(env, "context", "create", name, "--docker", spec))
    proc = _ok(run_docker(env, "--context", name, "ps"))
    assert b"CONTAINER ID" in proc.stdout


def test_client_certificate_from_another_ca_is_refused(
    tls_gateway: Gateway, pki: Pki, config_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    stranger = _client_dir(tmp_path / "stranger", pki.ca, trustme.CA())
    before = len(_handshake_lines(tls_gateway))
    proc = _docker(tls_gateway, config_dir, stranger, "ps", timeout=60)
    assert proc.returncode != 0
    err = proc.stderr.decode(errors="replace").lower()
    assert "tls" in err or "certificate" in err, err
    deadline = time.monotonic() + 5
    while len(_handshake_lines(tls_gateway)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    new = _handshake_lines(tls_gateway)[before:]
    assert new, tls_gateway.output()
    assert all("failed" in line for line in new), new
    assert "Traceback" not in tls_gateway.stderr_text()
    assert tls_gateway.alive()
    _ok(_docker(tls_gateway, config_dir, pki.cert_path, "ps"))


def test_plain_http_on_a_tls_port_is_answered_and_logged(tls_gateway: Gateway) -> None:
    before = len(_handshake_lines(tls_gateway))
    with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 400 "), answer
    deadline = time.monotonic() + 5
    while len(_handshake_lines(tls_gateway)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_handshake_lines(tls_gateway)) == before + 1
    assert "Traceback" not in tls_gateway.stderr_text()
    assert tls_gateway.alive()


# ----- the Python SDK ---------------------------------------------------------------------------


def test_sdk_lists_containers_over_tls(
    tls_gateway: Gateway, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import docker  # noqa: PLC0415
    import docker.tls  # noqa: PLC0415

    # requests prefers $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE over the session's `verify` (the
    # SDK's ca_cert), so with either set the SDK would not trust the test CA.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    tls = docker.tls.TLSConfig(
        client_cert=(str(pki.cert_path / "cert.pem"), str(pki.cert_path / "key.pem")),
        ca_cert=str(pki.cert_path / "ca.pem"),
        verify=True,
    )
    client = docker.DockerClient(base_url=tls_gateway.url, tls=tls, version="auto", timeout=60)
    try:
        assert isinstance(client.containers.list(all=True), list)
        assert client.ping()
    finally:
        client.close()


# ----- reload -----------------------------------------------------------------------------------


def _ps_until_ok(
    gw: Gateway, config_dir: pathlib.Path, cert_path: pathlib.Path
) -> subprocess.CompletedProcess[bytes]:
    deadline = time.monotonic() + RELOAD_RETRY_SECONDS
    while True:
        proc = _docker(gw, config_dir, cert_path, "ps", timeout=60)
        if proc.returncode == 0 or time.monotonic() > deadline:
            return proc
        time.sleep(0.2)


def test_certificate_reload_without_restart(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, config_dir: pathlib.Path
) -> None:
    (tmp_path / "pki").mkdir()
    pki = _make_pki(tmp_path / "pki")
    with Gateway(daemon.host, *_tls_args(pki)) as gw:
        _ok(_docker(gw, config_dir, pki.cert_path, "ps"))

        # A broken certificate file: the old context stays, one line says so.
        good_cert = pki.server_cert.read_bytes()
        pki.server_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        time.sleep(RELOAD_WAIT_SECONDS)
        _ok(_docker(gw, config_dir, pki.cert_path, "ps"))
        failures = [line for line in gw.stderr() if "TLS reload failed" in line]
        assert len(failures) == 1, gw.output()
        pki.server_cert.write_bytes(good_cert)

        # A new pair from a new CA: a client trusting only the new CA gets in.
        new_ca = trustme.CA()
        _write_server_pair(new_ca, pki.server_cert, pki.server_key)
        new_client = tmp_path / "new-client"
        new_client.mkdir()
        for name in ("cert.pem", "key.pem"):  # the client CA did not change
            shutil.copy(pki.cert_path / name, new_client / name)
        (new_client / "ca.pem").write_bytes(new_ca.cert_pem.bytes())
        time.sleep(RELOAD_WAIT_SECONDS)
        _ok(_ps_until_ok(gw, config_dir, new_client))
        # ... and one trusting only the old CA no longer does.
        assert _docker(gw, config_dir, pki.cert_path, "ps", timeout=60).returncode != 0
        assert gw.alive()
        assert "Traceback" not in gw.stderr_text()


# ----- start-up rules ---------------------------------------------------------------------------


def _start_status(daemon: PrivateDaemon, *args: str) -> tuple[int | None, str]:
    gw = Gateway(daemon.host, *args, listen="tcp://0.0.0.0:0")
    gw.spawn()
    try:
        gw.listening(1, timeout=10)
    except Exception:
        code = gw.wait(10)
        return code, gw.stderr_text()
    text = gw.stderr_text()
    gw.stop()
    return None, text


def test_client_certificates_authenticate_a_non_loopback_listener(
    daemon: PrivateDaemon, pki: Pki
) -> None:
    code, text = _start_status(daemon, *_tls_args(pki))
    assert code is None, text  # started, no --insecure needed
    assert "--insecure" not in text


def test_tls_without_client_certificates_still_needs_insecure(
    daemon: PrivateDaemon, pki: Pki
) -> None:
    code, text = _start_status(daemon, *_tls_args(pki, client_ca=False))
    assert code == 2, text
    assert "without authentication" in text


def test_bad_tls_files_refuse_to_start(daemon: PrivateDaemon, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    gw = Gateway(daemon.host, "--tls-cert", str(bad), "--tls-key", str(bad))
    gw.spawn()
    assert gw.wait(15) == 2
    assert "dockgate: error: --tls-cert" in gw.stderr_text()
    gw2 = Gateway(daemon.host, "--tls-cert", str(bad))
    gw2.spawn()
    assert gw2.wait(15) == 2
    assert "--tls-cert and --tls-key go together" in gw2.stderr_text()


# ----- identities -------------------------------------------------------------------------------


def test_peer_identity_from_a_certificate_dict() -> None:
    cert = {
        "subject": ((("organizationName", "x"),), (("commonName", "alice"),)),
        "subjectAltName": (("email", "alice@example.test"), ("DNS", "alice.example.test")),
    }
    assert peer_identity(cert) == "alice"
    assert peer_identity({"subjectAltName": (("DNS", "bob"),)}) == "bob"
    assert peer_identity({}) is None
    assert peer_identity(None) is None
    # --tls-identity chooses the fields and their order.
    assert peer_identity(cert, ("email", "cn")) == "alice@example.test"
    assert peer_identity(cert, ("dns",)) == "alice.example.test"
    assert peer_identity(cert, ("uri",)) is None
    assert peer_subject(cert) == "O=x,CN=alice"


class _MemoryTLSClient:
    """A TLS client over a plain socket, so that the test decides what reaches the wire: here
    a TCP FIN with no close_notify before it."""

    def __init__(self, port: int, pki: Pki) -> None:
        context = ssl.create_default_context(cafile=str(pki.cert_path / "ca.pem"))
        context.load_cert_chain(pki.cert_path / "cert.pem", pki.cert_path / "key.pem")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._pump()
        self.sock.sendall(self.outgoing.read())

    def _pump(self) -> bool:
        if self.outgoing.pending:
            self.sock.sendall(self.outgoing.read())
        data = self.sock.recv(65536)
        if not data:
            return False
        self.incoming.write(data)
        return True

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def read_some(self) -> bytes:
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._pump():
                    return b""

    def read_until_closed(self) -> bytes:
        """Everything the server sends, until its TCP FIN (or close_notify)."""
        got = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not self._pump():
                    return got
                continue
            except ssl.SSLZeroReturnError:
                return got
            if not chunk:
                return got
            got += chunk


def test_a_tcp_fin_without_close_notify_is_the_clients_end(tls_gateway: Gateway, pki: Pki) -> None:
    """A client that ends with a bare TCP FIN, no close_notify (an abrupt client): the gateway
    takes it as the end of the client's input and closes at once, rather than keeping the
    connection until the idle timeout."""
    client = _MemoryTLSClient(tls_gateway.port, pki)
    try:
        client.send(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        answer = b""
        while not answer.endswith(b"\r\n\r\nOK"):
            answer += client.read_some()
        assert answer.startswith(b"HTTP/1.1 200 OK")
        client.sock.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        assert client.read_until_closed() == b""  # raises on the socket's 10 s timeout
        assert time.monotonic() - started < 5
    finally:
        client.sock.close()
