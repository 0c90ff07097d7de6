"""``dockgate serve`` started as systemd starts a socket-activated Type=notify service, in front
of the session's private dockerd.

The test binds the listening socket itself (what systemd does for dockgate.socket), starts the
gateway with it as fd 3, LISTEN_FDS=1 and LISTEN_PID set to the gateway's own pid, and reads the
gateway's sd_notify datagrams on a NOTIFY_SOCKET of its own. With systemd's own
``systemd-socket-activate`` installed, the unit files' command is also run through it.

systemd-run is not used: it needs systemd running as PID 1 (a system or user manager to talk
to), which a container like the one the tests run in does not have.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import trustme

from support.daemon import PrivateDaemon, free_tcp_port, run_docker
from support.gateway import ALLOW_ALL_POLICY, REPO, Gateway, gateway_env
from support.procs import children
from support.sdnotify import NotifyListener, activated
from support.streams import wait_until

pytestmark = pytest.mark.timeout(90)

UNITS = REPO / "deploy" / "systemd"


@pytest.fixture
def tmp_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dg-sda-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def notify(tmp_dir: str) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_dir)
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def started() -> Iterator[list[Gateway]]:
    """Gateways a test starts, stopped (with any worker left) when it ends."""
    gateways: list[Gateway] = []
    try:
        yield gateways
    finally:
        for gw in gateways:
            workers = children(gw.pid) if gw.alive() else []
            gw.stop()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def tcp_listener(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(64)
    return sock


def unix_listener(path: str, mode: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    os.chmod(path, mode)
    sock.listen(64)
    return sock


def docker(daemon: PrivateDaemon, host: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = daemon.env()
    env["DOCKER_HOST"] = host
    return run_docker(env, *args, timeout=30)


def server_version(daemon: PrivateDaemon, host: str) -> str:
    """The daemon's version and its id as answered through ``host``: only the private daemon
    knows its id."""
    proc = docker(daemon, host, "info", "--format", "{{json .ID}} {{json .ServerVersion}}")
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().strip()


def tcp_host(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"tcp://{host}:{port}"


# ----- TCP, readiness, reload, stop -------------------------------------------------------------


def test_tcp_socket_from_systemd_serves_and_tells_readiness_reload_and_stop(
    daemon: PrivateDaemon, notify: NotifyListener, started: list[Gateway]
) -> None:
    """The inherited socket is the only listener; READY=1 comes when it answers: the very next
    request through it is answered by the private daemon. SIGHUP: RELOADING=1 (with
    MONOTONIC_USEC) then READY=1; SIGTERM: STOPPING=1, exit 0, and the socket is left to
    systemd (it still takes connections, which wait for the next start)."""
    sock = tcp_listener()
    direct = server_version(daemon, daemon.host)
    try:
        gw = activated(daemon, [sock], notify, "--policy", str(ALLOW_ALL_POLICY), names="api")
        started.append(gw)
        ready = notify.wait_for("READY")
        assert server_version(daemon, tcp_host(sock)) == direct
        assert "policy allow-all" in ready["STATUS"]
        (line,) = [x for x in gw.stderr() if "listening on" in x]
        assert line == f"dockgate: listening on {tcp_host(sock)} (from systemd: fd 3, name 'api')"

        gw.signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING")
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 < now - int(reloading["MONOTONIC_USEC"]) < 10_000_000
        reloaded = notify.wait_for("READY")
        assert reloaded["STATUS"].startswith("reloaded; policy allow-all")
        assert server_version(daemon, tcp_host(sock)) == direct

        gw.signal(signal.SIGTERM)
        notify.wait_for("STOPPING")
        assert gw.wait(15) == 0, gw.output()
        assert notify.keys() == ["READY", "RELOADING", "READY", "STOPPING"]
        # systemd's copy still listens: a client's connection waits in its queue.
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass
    finally:
        sock.close()


def test_notify_socket_nobody_reads_never_stops_the_gateway(
    daemon: PrivateDaemon, tmp_dir: str, started: list[Gateway]
) -> None:
    """NOTIFY_SOCKET names a socket that is gone (a manager restarted): one warning line, and
    the gateway serves, reloads and stops as without it."""
    gone = NotifyListener(tmp_dir)
    gone.close()
    sock = tcp_listener()
    try:
        gw = activated(daemon, [sock], gone, "--policy", str(ALLOW_ALL_POLICY))
        started.append(gw)
        gw.listening(1)
        direct = server_version(daemon, daemon.host)
        assert server_version(daemon, tcp_host(sock)) == direct
        gw.signal(signal.SIGHUP)
        assert server_version(daemon, tcp_host(sock)) == direct
        gw.signal(signal.SIGTERM)
        assert gw.wait(15) == 0, gw.output()
        assert gw.stderr_text().count("cannot notify systemd") == 1, gw.output()
    finally:
        sock.close()


def test_listen_pid_of_another_process_is_not_activation(
    daemon: PrivateDaemon, started: list[Gateway]
) -> None:
    """LISTEN_PID names another process (variables a service passed on to a child): the
    descriptors are not the gateway's, which binds its own --listen as without systemd."""
    sock = tcp_listener()
    try:
        gw = activated(
            daemon,
            [sock],
            None,
            "--listen",
            "tcp://127.0.0.1:0",
            "--policy",
            str(ALLOW_ALL_POLICY),
            listen_pid="1",
        )
        started.append(gw)
        (address,) = gw.listening(1)
        assert address != tcp_host(sock)
        assert not any("from systemd" in line for line in gw.stderr())
    finally:
        sock.close()


@pytest.mark.parametrize("same", [True, False])
def test_listen_option_must_name_an_inherited_socket(
    daemon: PrivateDaemon, notify: NotifyListener, started: list[Gateway], same: bool
) -> None:
    """--listen with socket activation only names systemd's sockets again (localhost is
    127.0.0.1); any other address stops the start, naming ListenStream=."""
    sock = tcp_listener()
    port = sock.getsockname()[1]
    listen = f"tcp://localhost:{port}" if same else f"tcp://127.0.0.1:{free_tcp_port()}"
    try:
        gw = activated(
            daemon, [sock], notify, "--listen", listen, "--policy", str(ALLOW_ALL_POLICY)
        )
        started.append(gw)
        if same:
            notify.wait_for("READY")
            assert gw.listening(1) == [tcp_host(sock)]
            return
        assert gw.wait(15) == 2
        assert f"dockgate: error: --listen {listen}: systemd passed" in gw.stderr_text()
        assert "ListenStream=" in gw.stderr_text()
        assert notify.receive(0.2) is None
    finally:
        sock.close()


# ----- the exposure rule ------------------------------------------------------------------------


def test_non_loopback_socket_without_authentication_is_refused(
    daemon: PrivateDaemon, notify: NotifyListener, started: list[Gateway]
) -> None:
    """A .socket unit with ListenStream=2375 (all interfaces) and a service without
    authentication: refused, the message naming the fix in the socket unit, and nothing told to
    systemd but the exit."""
    sock = tcp_listener("0.0.0.0")
    try:
        gw = activated(daemon, [sock], notify, "--policy", str(ALLOW_ALL_POLICY))
        started.append(gw)
        assert gw.wait(15) == 2
        err = gw.stderr_text()
        assert f"refusing to listen on tcp://0.0.0.0:{sock.getsockname()[1]}" in err
        assert "ListenStream=127.0.0.1:2375" in err
        assert "--insecure (DOCKGATE_INSECURE=1" in err
        assert notify.receive(0.2) is None
    finally:
        sock.close()


def test_unix_socket_every_user_may_connect_to_is_refused_without_authentication(
    daemon: PrivateDaemon, tmp_dir: str, started: list[Gateway]
) -> None:
    """systemd's default SocketMode= is 0666: as systemd makes it, every local user could reach
    the daemon through the gateway. Refused, naming SocketMode=0660 and SocketGroup=docker."""
    path = os.path.join(tmp_dir, "open.sock")
    sock = unix_listener(path, 0o666)
    try:
        gw = activated(daemon, [sock], None, "--policy", str(ALLOW_ALL_POLICY))
        started.append(gw)
        assert gw.wait(15) == 2
        err = gw.stderr_text()
        assert f"refusing to listen on unix://{path} without authentication" in err
        assert "SocketMode=0660 and SocketGroup=docker" in err
        # left as systemd made it
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    finally:
        sock.close()


def test_tls_with_client_certificates_applies_to_an_inherited_socket(
    daemon: PrivateDaemon, tmp_dir: str, notify: NotifyListener, started: list[Gateway]
) -> None:
    """TLS applies to inherited TCP sockets as to --listen ones, and client certificates
    authenticate a non-loopback one as they do a --listen one: it starts without --insecure,
    answers a client with a certificate (through to the daemon), and a client without one gets
    no answer."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("alice@example.test", common_name="alice")
    files = {
        name: pathlib.Path(tmp_dir, name)
        for name in ("cert.pem", "key.pem", "ca.pem", "client.pem", "client-key.pem")
    }
    files["cert.pem"].write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    files["key.pem"].write_bytes(leaf.private_key_pem.bytes())
    files["ca.pem"].write_bytes(ca.cert_pem.bytes())
    files["client.pem"].write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    files["client-key.pem"].write_bytes(client.private_key_pem.bytes())
    sock = tcp_listener("0.0.0.0")
    port = sock.getsockname()[1]
    try:
        gw = activated(
            daemon,
            [sock],
            notify,
            *("--policy", str(ALLOW_ALL_POLICY)),
            *("--tls-cert", str(files["cert.pem"]), "--tls-key", str(files["key.pem"])),
            *("--tls-client-ca", str(files["ca.pem"])),
        )
        started.append(gw)
        notify.wait_for("READY")
        context = ssl.create_default_context(cafile=str(files["ca.pem"]))
        context.load_cert_chain(str(files["client.pem"]), str(files["client-key.pem"]))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        assert b"Api-Version: " in answer  # the daemon's answer
        bare = ssl.create_default_context(cafile=str(files["ca.pem"]))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            pytest.raises((ssl.SSLError, ConnectionError)),
            bare.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert tls.recv(65536) == b""  # TLS 1.3: the refusal comes after the handshake
            raise ConnectionError("closed without an answer")
    finally:
        sock.close()


# ----- unix sockets, several sockets, workers ---------------------------------------------------


def test_unix_and_tcp_sockets_serve_and_the_unix_file_is_left_to_systemd(
    daemon: PrivateDaemon, tmp_dir: str, notify: NotifyListener, started: list[Gateway]
) -> None:
    """Two sockets (ListenStream= twice): both serve; the unix one's mode and group are
    reported as systemd set them, and its file is still there after the gateway stops (a
    socket the gateway binds itself is removed at shutdown; systemd's is not the gateway's)."""
    path = os.path.join(tmp_dir, "dockgate.sock")
    unix = unix_listener(path, 0o660)
    tcp = tcp_listener()
    direct = server_version(daemon, daemon.host)
    try:
        gw = activated(
            daemon, [unix, tcp], notify, "--policy", str(ALLOW_ALL_POLICY), names="unix:tcp"
        )
        started.append(gw)
        notify.wait_for("READY")
        assert server_version(daemon, f"unix://{path}") == direct
        assert server_version(daemon, tcp_host(tcp)) == direct
        lines = [x for x in gw.stderr() if "listening on" in x]
        assert lines == [
            f"dockgate: listening on unix://{path} (from systemd: fd 3, name 'unix', "
            "mode 660, group root)",
            f"dockgate: listening on {tcp_host(tcp)} (from systemd: fd 4, name 'tcp')",
        ]
        gw.signal(signal.SIGTERM)
        assert gw.wait(15) == 0, gw.output()
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        unix.close()
        tcp.close()


def test_workers_each_serve_the_inherited_socket(
    daemon: PrivateDaemon, notify: NotifyListener, started: list[Gateway]
) -> None:
    """--workers 2: READY=1 once both workers accept; with either worker stopped (SIGSTOP) the
    other answers on the inherited socket, so each serves it. SIGHUP to the parent: RELOADING=1,
    then READY=1 once both workers reloaded. Only the parent speaks to systemd."""
    sock = tcp_listener()
    direct = server_version(daemon, daemon.host)
    try:
        gw = activated(daemon, [sock], notify, "--policy", str(ALLOW_ALL_POLICY), "--workers", "2")
        started.append(gw)
        notify.wait_for("READY")
        workers = children(gw.pid)
        assert len(workers) == 2, gw.output()
        for stopped in workers:
            os.kill(stopped, signal.SIGSTOP)
            try:
                assert server_version(daemon, tcp_host(sock)) == direct
            finally:
                os.kill(stopped, signal.SIGCONT)
        gw.signal(signal.SIGHUP)
        notify.wait_for("RELOADING")
        reloaded = notify.wait_for("READY", timeout=4)  # before the 5 s fallback
        assert reloaded["STATUS"].startswith("reloaded by 2 workers")
        # each worker read the policy file again before READY=1 (its line may lag a little)
        assert wait_until(lambda: gw.stderr_text().count("changed: reloaded") == 2, 2)
        gw.signal(signal.SIGTERM)
        notify.wait_for("STOPPING")
        assert gw.wait(15) == 0, gw.output()
        assert notify.keys() == ["READY", "RELOADING", "READY", "STOPPING"]
    finally:
        sock.close()


# ----- systemd's own tool, with the unit files' settings ----------------------------------------


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser["Socket" if name.endswith(".socket") else "Service"]


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not here"
)
def test_unit_command_under_systemd_socket_activate(
    daemon: PrivateDaemon, notify: NotifyListener, started: list[Gateway]
) -> None:
    """systemd's own socket-activation code (systemd-socket-activate, which execs the service
    on the first connection) runs the command of deploy/systemd/dockgate.service with the
    socket of dockgate.socket (its loopback host; a free port rather than 2375) and its
    FileDescriptorName. The first connection, made before dockgate even started, is answered by
    the daemon, and READY=1 follows."""
    socket_unit, service = unit("dockgate.socket"), unit("dockgate.service")
    host = socket_unit["ListenStream"].rpartition(":")[0]
    listen = f"{host}:{free_tcp_port()}"
    command = service["ExecStart"].split()
    assert command[0] == "/opt/dockgate/bin/dockgate"
    command = [sys.executable, "-m", "dockgate", *command[1:]]
    command[command.index("/etc/dockgate/policy.yaml")] = str(ALLOW_ALL_POLICY)
    gw = Gateway(
        None,
        listen=None,
        policy=None,
        env=gateway_env({"NOTIFY_SOCKET": notify.target, "DOCKER_HOST": daemon.host}),
        cwd=REPO,
    )
    gw.command = [
        "systemd-socket-activate",
        "--listen",
        listen,
        f"--fdname={socket_unit['FileDescriptorName']}",
        *("-E", "PYTHONPATH", "-E", "PYTHONUNBUFFERED", "-E", "NOTIFY_SOCKET"),
        *("-E", "DOCKER_HOST"),
        *command,
    ]
    started.append(gw.spawn())
    gw.wait_stderr("Listening on")
    direct = server_version(daemon, daemon.host)
    assert server_version(daemon, f"tcp://{listen}") == direct
    ready = notify.wait_for("READY")
    assert "allow-all" in ready["STATUS"]
    assert f"dockgate: listening on tcp://{listen} (from systemd: fd 3, name 'dockgate')" in (
        gw.stderr()
    )
    assert notify.keys() == ["READY"]
