"""Server-level behaviour of ``dockgate serve``: start-up checks, listeners, upstream selection,
pre-fork workers, graceful shutdown and the access log.

Most tests run ``python -m dockgate serve`` as a subprocess in front of a scriptable fake daemon
(``support/fake_upstream.py``); the last group runs the real docker CLI through the gateway in front
of the session's private dockerd. Every socket operation and every wait has a timeout, and every
process a test starts is stopped (SIGTERM, then SIGKILL) when it ends.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support.daemon import PrivateDaemon, run_docker
from support.fake_upstream import Exchange, FakeUpstream, default_handler
from support.gateway import REPO, Gateway, gateway_env, serve_command
from support.procs import children, pid_alive
from support.rawhttp import BufferedConn
from support.streams import wait_until

IO_TIMEOUT = 5.0
START_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 2.0  # --shutdown-timeout given to the gateways of the shutdown tests
SHUTDOWN_ARGS = ("--shutdown-timeout", str(SHUTDOWN_TIMEOUT))
TEXT_LOG_RE = re.compile(
    r'^(?P<client>\S+) "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/(?P<version>1\.[01])" '
    r"(?P<status>\d{3}) in=(?P<bytes_in>\d+) out=(?P<bytes_out>\d+) "
    r"dur_ms=(?P<dur_ms>\d+(?:\.\d+)?)(?P<more>(?: [a-z_]+=\S+)*)(?: \((?P<note>.*)\))?$"
)
JSON_LOG_KEYS = {
    "time",
    "client",
    "method",
    "path",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
}

pytestmark = pytest.mark.timeout(30)

StartGateway = Callable[..., Gateway]  # the ``serve`` fixture: serve(*args, env=None)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
def serve_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The gateway's environment: OPEN_POLICY_ENV, then ``extra``."""
    return gateway_env({**OPEN_POLICY_ENV, **(extra or {})})


def serve_process(*args: str, env: dict[str, str] | None = None) -> Gateway:
    """A started ``dockgate serve ARGS...`` subprocess (the arguments as given: no policy added);
    ``listening(count)`` waits for its listeners."""
    return Gateway(
        None,
        *args,
        listen=None,
        policy=None,
        env=env if env is not None else serve_env(),
        cwd=REPO,
        start_timeout=START_TIMEOUT,
        stop_timeout=10,
    ).spawn()


@pytest.fixture
def serve() -> Iterator[StartGateway]:
    """Start ``dockgate serve`` subprocesses; all of them (and their workers) are stopped after."""
    started: list[Gateway] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Gateway:
        s = serve_process(*args, env=env)
        started.append(s)
        return s

    try:
        yield start
    finally:
        for s in started:
            workers = children(s.pid) if s.alive() else []
            s.stop()
            for pid in workers:  # orphans, should the parent have died without them
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def run_serve(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """Run ``dockgate serve ARGS`` expecting it to exit by itself (a refused start)."""
    return subprocess.run(
        serve_command(*args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=serve_env(),
        cwd=str(REPO),
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# A raw HTTP client (TCP or unix)
# ---------------------------------------------------------------------------------------------
def tcp_target(url: str) -> tuple[int, tuple[str, int]]:
    """``tcp://HOST:PORT`` (brackets for IPv6) -> (family, sockaddr)."""
    m = re.fullmatch(r"tcp://(?:\[([^\]]+)\]|([^:\[\]]+)):(\d+)", url)
    assert m, f"not a tcp:// address: {url!r}"
    if m.group(1) is not None:
        return socket.AF_INET6, (m.group(1), int(m.group(3)))
    host = m.group(2)
    if host == "0.0.0.0":
        host = "127.0.0.1"
    return socket.AF_INET, (host, int(m.group(3)))


class Conn(BufferedConn):
    """One client connection to a gateway listener, with a read buffer."""

    def __init__(self, url: str, timeout: float = IO_TIMEOUT) -> None:
        if url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: object = url[len("unix://") :]
        else:
            family, target = tcp_target(url)
            sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        super().__init__(sock, timeout)

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """A Content-Length (or until-close) response: (status, lower-cased headers, body)."""
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head[:-4].split("\r\n")
        m = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: .*)?", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                if not self._fill():
                    raise EOFError(f"EOF after {len(self.buf)} of {n} body bytes")
            body = bytes(self.buf[:n])
            del self.buf[:n]
        else:
            while self._fill():
                pass
            body = bytes(self.buf)
            self.buf.clear()
        return int(m.group(1)), headers, body


def get(url: str, path: str = "/_ping", *, timeout: float = IO_TIMEOUT) -> tuple[int, bytes]:
    """``GET path`` on a fresh connection with ``Connection: close``: (status, body)."""
    with Conn(url, timeout) as c:
        c.send(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        status, _, body = c.read_response()
        return status, body


def assert_ping(url: str) -> None:
    status, body = get(url)
    assert (status, body) == (200, b"OK"), f"GET /_ping on {url}: {status} {body!r}"


# ---------------------------------------------------------------------------------------------
# A TCP -> unix forwarder (a daemon reachable over tcp://)
# ---------------------------------------------------------------------------------------------
class TcpToUnixForwarder:
    """Listens on 127.0.0.1:PORT; relays each connection to a unix socket, half-close included."""

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(0.1)
        self.port: int = self.lsock.getsockname()[1]
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.accepted = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> TcpToUnixForwarder:
        self._accept_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._accept_thread.join(5)
        self.lsock.close()
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)
        for s in socks:
            s.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setblocking(True)
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.unix_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            pumps = [
                threading.Thread(target=self._pump, args=(client, upstream), daemon=True),
                threading.Thread(target=self._pump, args=(upstream, client), daemon=True),
            ]
            with self._lock:
                self.accepted += 1
                self._socks += [client, upstream]
                self._threads += pumps
            for t in pumps:
                t.start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


# ---------------------------------------------------------------------------------------------
# The fake daemon
# ---------------------------------------------------------------------------------------------
# Requests use Engine API operations that an access policy in its default (Tecnativa) setting
# allows (``_ping``, ``version``, ``events``): these tests are about the server, not the policy.
# The fake daemon's behaviour is chosen by an ``X-Dgtest`` header.
SLOW_PATH = "/v1.41/version"
SLOW_REQUEST = b"GET /v1.41/version HTTP/1.1\r\nHost: docker\r\nX-Dgtest: slow\r\n\r\n"
SLOW_BODY = b'{"slow": "' + b"x" * 4000 + b'"}\n'
STREAM_REQUEST = b"GET /v1.41/events HTTP/1.1\r\nHost: docker\r\nX-Dgtest: stream\r\n\r\n"
# The Tecnativa-style switches that open what the access-log and docker CLI tests use (a policy
# file-less gateway reads them from its environment; a gateway without a policy ignores them).
OPEN_POLICY_ENV = {"CONTAINERS": "1", "IMAGES": "1", "POST": "1"}


def scripted_handler(ex: Exchange) -> None:
    """``X-Dgtest: slow``: answers after 1 s; ``X-Dgtest: stream``: a chunk every 50 ms forever;
    otherwise the default handler (``/_ping`` answers OK, the rest a JSON echo)."""
    mode = ex.header("x-dgtest")
    if mode == "slow":
        ex.read_body()
        time.sleep(1.0)
        ex.respond(200, SLOW_BODY)
    elif mode == "stream":
        ex.read_body()
        ex.start_chunked()
        while True:
            ex.send_chunk(b'{"tick": 1}\n')
            time.sleep(0.05)
    else:
        default_handler(ex)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


@pytest.fixture
def fake(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The module's fake daemon with ``scripted_handler``; fails the test on handler errors."""
    upstream.reset()
    upstream.handler = scripted_handler
    yield upstream
    errors = list(upstream.errors)
    upstream.reset()
    assert not errors, "fake upstream errors:\n" + "\n".join(errors)


@pytest.fixture
def tmp_sock_dir() -> Iterator[str]:
    """A short directory for unix sockets (sun_path is limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="dgs-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("dockgate: error:")]


# ---------------------------------------------------------------------------------------------
# 1. Safe default and exposure
# ---------------------------------------------------------------------------------------------
def test_non_loopback_listener_is_refused_without_insecure(fake: FakeUpstream) -> None:
    """A non-loopback TCP listener without --insecure exits non-zero within seconds with one
    ``dockgate: error:`` line that names --insecure."""
    started = time.monotonic()
    proc = run_serve("--listen", "tcp://0.0.0.0:0", "--upstream", fake.url)
    took = time.monotonic() - started
    assert proc.returncode != 0, f"started anyway:\n{proc.stderr}"
    assert took < 5, f"took {took:.1f}s to refuse"
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, f"stderr:\n{proc.stderr}"
    assert "--insecure" in errors[0]
    # The fix as a variable too, for the image run with -e (issue 13: the Tecnativa drop-in
    # exited naming only the option).
    assert "DOCKGATE_INSECURE=1" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "listening on" not in proc.stderr


def test_insecure_non_loopback_listener_warns_and_serves(
    fake: FakeUpstream, serve: StartGateway
) -> None:
    """With --insecure a non-loopback listener starts, prints a warning on stderr and serves
    /_ping."""
    s = serve("--listen", "tcp://0.0.0.0:0", "--upstream", fake.url, "--insecure")
    (url,) = s.listening(1)
    warnings = [line for line in s.stderr() if "warning" in line.lower()]
    assert warnings, f"no warning line:\n{s.output()}"
    assert "0.0.0.0" in warnings[0]
    assert_ping(url)


def test_loopback_listener_starts_without_warning(fake: FakeUpstream, serve: StartGateway) -> None:
    """A loopback TCP listener starts and serves without printing any warning."""
    s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fake.url)
    (url,) = s.listening(1)
    assert_ping(url)
    time.sleep(0.2)
    assert not [line for line in s.stderr() if "warning" in line.lower()], s.output()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--listen", "foo"), id="listen-foo"),
        pytest.param(("--listen", "tcp://[::1"), id="listen-unclosed-ipv6"),
        pytest.param(("--listen", "tcp://127.0.0.1:99999"), id="listen-port-out-of-range"),
        pytest.param(("--workers", "0"), id="workers-0"),
        pytest.param(("--socket-mode", "999"), id="socket-mode-999"),
    ],
)
def test_bad_option_exits_2_with_one_line_error(fake: FakeUpstream, args: tuple[str, ...]) -> None:
    """A bad option value exits with status 2 and exactly one ``dockgate: error:`` line on
    stderr, with no traceback."""
    proc = run_serve("--upstream", fake.url, *args)
    assert proc.returncode == 2, f"rc={proc.returncode}\nstderr:\n{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line:\n{proc.stderr}"
    assert lines[0].startswith("dockgate: error: "), lines[0]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# 2. Listeners
# ---------------------------------------------------------------------------------------------
def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def listen_on(*addresses: str) -> list[str]:
    """``--listen ADDRESS`` for each address, in order."""
    return [arg for address in addresses for arg in ("--listen", address)]


def test_several_listeners_each_print_and_serve(
    fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str
) -> None:
    """Two TCP listeners and a unix listener given at once each print a ``listening on`` line
    (with the real port) and each serve GET /_ping."""
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    s = serve(
        *listen_on("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", f"unix://{sock_path}"),
        "--upstream",
        fake.url,
    )
    urls = s.listening(3)
    assert len(urls) == 3, s.output()
    tcp = [u for u in urls if u.startswith("tcp://127.0.0.1:")]
    assert len(tcp) == 2, urls
    ports = {tcp_target(u)[1][1] for u in tcp}
    assert len(ports) == 2 and 0 not in ports, f"ports not distinct real ports: {urls}"
    assert f"unix://{sock_path}" in urls
    for url in urls:
        assert_ping(url)


def test_ipv6_listener_serves_next_to_ipv4_and_unix(
    fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str
) -> None:
    """``tcp://[::1]:0`` next to an IPv4 and a unix listener prints ``listening on
    tcp://[::1]:PORT`` and serves GET /_ping over IPv6."""
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback (socket.has_ipv6 is false or ::1 cannot be bound)")
    sock_path = os.path.join(tmp_sock_dir, "gw6.sock")
    s = serve(
        *listen_on("tcp://[::1]:0", "tcp://127.0.0.1:0", f"unix://{sock_path}"),
        "--upstream",
        fake.url,
    )
    urls = s.listening(3)
    v6 = [u for u in urls if u.startswith("tcp://[::1]:")]
    assert len(v6) == 1 and not v6[0].endswith(":0"), urls
    for url in urls:
        assert_ping(url)


@pytest.fixture
def other_group() -> Iterator[tuple[str, int]]:
    """(name, gid) of a group other than ours: ``daemon`` or ``adm``, else one made for the test."""
    for name in ("daemon", "adm"):
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(name).gr_gid
            if gid != os.getegid():
                yield name, gid
                return
    if shutil.which("groupadd") is None:
        pytest.skip("no group other than ours and no groupadd to create one")
    name = f"dgt{uuid.uuid4().hex[:8]}"
    subprocess.run(["groupadd", "-r", name], check=True, capture_output=True, timeout=10)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], check=False, capture_output=True, timeout=10)


@pytest.mark.parametrize(
    ("extra", "want_mode"),
    [
        pytest.param((), 0o660, id="default-660"),
        pytest.param(("--socket-mode", "600"), 0o600, id="socket-mode-600"),
    ],
)
def test_unix_socket_mode(
    fake: FakeUpstream,
    serve: StartGateway,
    tmp_sock_dir: str,
    extra: tuple[str, ...],
    want_mode: int,
) -> None:
    """The unix listening socket gets mode 0660 by default and the --socket-mode given."""
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    s = serve("--listen", f"unix://{sock_path}", "--upstream", fake.url, *extra)
    s.listening(1)
    st = os.stat(sock_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == want_mode, f"mode {stat.S_IMODE(st.st_mode):o}"
    assert_ping(f"unix://{sock_path}")


@pytest.mark.parametrize("form", ["name", "gid"])
def test_unix_socket_group(
    fake: FakeUpstream,
    serve: StartGateway,
    tmp_sock_dir: str,
    other_group: tuple[str, int],
    form: str,
) -> None:
    """``--socket-group NAME`` (or a numeric GID) gives the unix listening socket that group."""
    name, gid = other_group
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    value = name if form == "name" else str(gid)
    s = serve("--listen", f"unix://{sock_path}", "--upstream", fake.url, "--socket-group", value)
    s.listening(1)
    assert os.stat(sock_path).st_gid == gid, f"gid {os.stat(sock_path).st_gid}, want {gid}"
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
    assert_ping(f"unix://{sock_path}")


def test_unknown_socket_group_is_refused(fake: FakeUpstream, tmp_sock_dir: str) -> None:
    """An unknown ``--socket-group`` name exits 2 with one ``dockgate: error:`` line naming it."""
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    group = f"nosuchgroup{uuid.uuid4().hex[:6]}"
    proc = run_serve(
        "--listen", f"unix://{sock_path}", "--upstream", fake.url, "--socket-group", group
    )
    assert proc.returncode == 2, proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert group in errors[0], errors[0]


@pytest.mark.parametrize("cause", ["unknown-group", "tcp-port-in-use"])
def test_refused_start_leaves_no_unix_socket_file(
    fake: FakeUpstream, tmp_sock_dir: str, cause: str
) -> None:
    """A start refused after a unix listener was bound (bad --socket-group, or a later listener
    that cannot bind) removes the socket file it created."""
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        args = ["--listen", f"unix://{sock_path}", "--upstream", fake.url]
        if cause == "unknown-group":
            args += ["--socket-group", f"nosuchgroup{uuid.uuid4().hex[:6]}"]
        else:
            args += ["--listen", f"tcp://127.0.0.1:{busy.getsockname()[1]}"]
        proc = run_serve(*args)
    assert proc.returncode != 0, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not os.path.exists(sock_path), f"{sock_path} left behind; stderr: {proc.stderr}"


def test_stale_unix_socket_file_is_replaced(
    fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str
) -> None:
    """A stale socket file (nobody listening) at the listen path is replaced and served."""
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(sock_path)
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    with pytest.raises(ConnectionRefusedError):
        Conn(f"unix://{sock_path}")
    s = serve("--listen", f"unix://{sock_path}", "--upstream", fake.url)
    s.listening(1)
    assert_ping(f"unix://{sock_path}")


def test_unix_path_in_use_by_another_gateway_is_refused(
    fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str
) -> None:
    """A second gateway on a unix path where a gateway is listening exits non-zero with a clear
    error, and the first one keeps its socket and keeps serving."""
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    first = serve("--listen", f"unix://{sock_path}", "--upstream", fake.url)
    first.listening(1)
    ino = os.stat(sock_path).st_ino
    proc = run_serve("--listen", f"unix://{sock_path}", "--upstream", fake.url)
    assert proc.returncode != 0, f"second gateway started:\n{proc.stderr}"
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert sock_path in errors[0], errors[0]
    assert os.stat(sock_path).st_ino == ino, "the first gateway's socket file was replaced"
    assert_ping(f"unix://{sock_path}")


def test_non_socket_file_at_unix_path_is_refused(fake: FakeUpstream, tmp_sock_dir: str) -> None:
    """A regular file at the unix listen path is refused (exit non-zero, one error line) and left
    untouched."""
    path = os.path.join(tmp_sock_dir, "not-a-socket")
    Path(path).write_text("precious\n")
    proc = run_serve("--listen", f"unix://{path}", "--upstream", fake.url)
    assert proc.returncode != 0, proc.stderr
    assert len(error_lines(proc.stderr)) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert Path(path).read_text() == "precious\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_unix_socket_removed_at_shutdown(
    fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str, workers: int
) -> None:
    """After SIGTERM the gateway exits 0 and its unix socket file is gone."""
    sock_path = os.path.join(tmp_sock_dir, "gw.sock")
    s = serve(
        "--listen",
        f"unix://{sock_path}",
        "--upstream",
        fake.url,
        "--workers",
        str(workers),
        *SHUTDOWN_ARGS,
    )
    s.listening(1)
    assert_ping(f"unix://{sock_path}")
    s.signal(signal.SIGTERM)
    assert s.wait(SHUTDOWN_TIMEOUT + 5) == 0, s.output()
    assert not os.path.exists(sock_path), "socket file left after shutdown"


# ---------------------------------------------------------------------------------------------
# 3. Upstream selection
# ---------------------------------------------------------------------------------------------
def test_docker_host_is_used_without_upstream(fake: FakeUpstream, serve: StartGateway) -> None:
    """Without --upstream, ``DOCKER_HOST=unix://...`` from the environment is the upstream."""
    s = serve(
        "--listen",
        "tcp://127.0.0.1:0",
        env=serve_env({"DOCKER_HOST": fake.url}),
    )
    (url,) = s.listening(1)
    target = "/v1.41/version?dgtest=dockerhost"
    before = len(fake.requests_for(target))
    status, body = get(url, target)
    assert status == 200, body
    assert json.loads(body)["target"] == target
    assert len(fake.requests_for(target)) == before + 1
    assert any(f"forwarding to {fake.url}" in line for line in s.stderr()), s.output()


def test_upstream_option_wins_over_docker_host(
    fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str
) -> None:
    """``--upstream`` takes precedence over ``DOCKER_HOST``."""
    bogus = f"unix://{tmp_sock_dir}/nobody-here.sock"
    s = serve(
        "--listen",
        "tcp://127.0.0.1:0",
        "--upstream",
        fake.url,
        env=serve_env({"DOCKER_HOST": bogus}),
    )
    (url,) = s.listening(1)
    assert_ping(url)


def test_tcp_upstream_is_relayed(fake: FakeUpstream, serve: StartGateway) -> None:
    """A ``tcp://`` upstream works: requests reach the daemon through a TCP connection."""
    with TcpToUnixForwarder(fake.path) as fwd:
        s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fwd.url)
        (url,) = s.listening(1)
        assert_ping(url)
        status, body = get(url, "/v1.41/version?dgtest=tcp")
        assert status == 200 and json.loads(body)["target"] == "/v1.41/version?dgtest=tcp", body
        assert fwd.accepted >= 1, "no connection went through the tcp upstream"
        s.stop()


# ---------------------------------------------------------------------------------------------
# 4. Workers
# ---------------------------------------------------------------------------------------------
def wait_children(pid: int, count: int, timeout: float) -> list[int]:
    found: list[int] = []

    def enough() -> bool:
        nonlocal found
        found = [p for p in children(pid) if pid_alive(p)]
        return len(found) == count

    assert wait_until(enough, timeout), f"expected {count} workers under {pid}, found {found}"
    return found


def ping_many(url: str, n: int, concurrency: int = 8) -> list[tuple[int, bytes]]:
    def one(_: int) -> tuple[int, bytes]:
        try:
            return get(url)
        except OSError as exc:
            return -1, repr(exc).encode()

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


def test_workers_start_and_answer_200_fresh_connections(
    fake: FakeUpstream, serve: StartGateway
) -> None:
    """``--workers 2`` runs two worker processes under the gateway, and 200 requests over fresh
    connections are all answered."""
    s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fake.url, "--workers", "2")
    (url,) = s.listening(1)
    wait_children(s.pid, 2, 5)
    results = ping_many(url, 200)
    bad = [r for r in results if r != (200, b"OK")]
    assert not bad, f"{len(bad)} of 200 failed, e.g. {bad[:3]}"


def test_killed_worker_is_replaced(fake: FakeUpstream, serve: StartGateway) -> None:
    """A worker killed with SIGKILL is replaced by a new one within 3 s and service continues."""
    s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fake.url, "--workers", "2")
    (url,) = s.listening(1)
    first = wait_children(s.pid, 2, 5)
    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    # Requests during the replacement are served by the other worker.
    assert_ping(url)
    now: list[int] = []

    def replaced() -> bool:
        nonlocal now
        now = [p for p in children(s.pid) if pid_alive(p)]
        return len(now) == 2 and victim not in now

    assert wait_until(replaced, 3.0), f"workers before {first}, now {now}\n{s.output()}"
    assert first[1] in now
    bad = [r for r in ping_many(url, 50) if r != (200, b"OK")]
    assert not bad, f"{len(bad)} of 50 failed after the restart, e.g. {bad[:3]}"
    assert s.alive()


def test_sigterm_stops_all_workers_within_shutdown_timeout(
    fake: FakeUpstream, serve: StartGateway
) -> None:
    """SIGTERM to the parent of ``--workers 2`` makes it and every worker exit (status 0) by the
    shutdown deadline (+1.5 s), even with a never-ending stream open."""
    s = serve(
        "--listen", "tcp://127.0.0.1:0", "--upstream", fake.url, "--workers", "2", *SHUTDOWN_ARGS
    )
    (url,) = s.listening(1)
    workers = wait_children(s.pid, 2, 5)
    with Conn(url) as stream:
        stream.send(STREAM_REQUEST)
        stream.read_until(b"tick")
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        code = s.wait(SHUTDOWN_TIMEOUT + 5)
        took = time.monotonic() - t0
        closed, _ = stream.wait_closed(2)
    assert code == 0, s.output()
    assert took < SHUTDOWN_TIMEOUT + 1.5, f"exit took {took:.2f}s"
    assert closed
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), 2), (
        f"workers still alive: {[p for p in workers if pid_alive(p)]}"
    )


# ---------------------------------------------------------------------------------------------
# 5. Graceful shutdown
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def shutdown_gateway(fake: FakeUpstream, serve: StartGateway) -> tuple[Gateway, str]:
    s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fake.url, *SHUTDOWN_ARGS)
    (url,) = s.listening(1)
    return s, url


def start_slow_request(fake: FakeUpstream, url: str) -> Conn:
    """Send the slow request and wait until the fake daemon has it (it answers 1 s later)."""

    def count() -> int:
        return len([r for r in fake.requests_for(SLOW_PATH) if r.header("x-dgtest") == "slow"])

    before = count()
    c = Conn(url)
    c.send(SLOW_REQUEST)
    assert wait_until(lambda: count() > before, 3), "the slow request was not forwarded"
    return c


def test_shutdown_lets_in_flight_request_finish(
    fake: FakeUpstream, shutdown_gateway: tuple[Gateway, str]
) -> None:
    """A request in flight when SIGTERM arrives still gets its full response, and the gateway
    then exits 0."""
    s, url = shutdown_gateway
    with start_slow_request(fake, url) as c:
        s.signal(signal.SIGTERM)
        status, _, body = c.read_response()
        assert status == 200
        assert body == SLOW_BODY
        closed, extra = c.wait_closed(SHUTDOWN_TIMEOUT + 1)
        assert closed and extra == b"", f"after the response: closed={closed} {extra[:100]!r}"
    assert s.wait(SHUTDOWN_TIMEOUT + 3) == 0, s.output()


@pytest.mark.parametrize("workers", [1, 2])
def test_shutdown_refuses_new_connections(
    fake: FakeUpstream, serve: StartGateway, workers: int
) -> None:
    """After SIGTERM, while a stream keeps the gateway running until its deadline, a new
    connection is refused, or closed without any response within 0.5 s (not left waiting)."""
    s = serve(
        "--listen",
        "tcp://127.0.0.1:0",
        "--upstream",
        fake.url,
        "--workers",
        str(workers),
        *SHUTDOWN_ARGS,
    )
    (url,) = s.listening(1)
    if workers > 1:
        wait_children(s.pid, workers, 5)
    with Conn(url) as stream:
        stream.send(STREAM_REQUEST)
        stream.read_until(b"tick")
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert s.alive(), "gateway exited before the stream's deadline"
        t0 = time.monotonic()
        outcome = "refused"
        got = b""
        try:
            late = Conn(url, timeout=2)
        except OSError:
            pass
        else:
            with late:
                with contextlib.suppress(OSError):
                    late.send(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                closed, got = late.wait_closed(SHUTDOWN_TIMEOUT + 2)
                outcome = "closed" if closed else "hung"
        took = time.monotonic() - t0
        assert got == b"", f"a connection made after SIGTERM got an answer: {got[:200]!r}"
        assert outcome == "refused" or (outcome == "closed" and took < 0.5), (
            f"a connection made after SIGTERM was accepted and {outcome} only {took:.2f}s later, "
            "without an answer (it waited in a listen queue instead of being refused)"
        )
    assert s.wait(SHUTDOWN_TIMEOUT + 3) == 0, s.output()


def test_shutdown_closes_idle_keepalive_connection_promptly(
    fake: FakeUpstream, shutdown_gateway: tuple[Gateway, str]
) -> None:
    """On SIGTERM an idle keep-alive connection is closed at once (within 0.5 s), not at the
    shutdown deadline or exit."""
    s, url = shutdown_gateway
    with Conn(url) as idle:
        idle.send(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        assert idle.read_response()[2] == b"OK"
        with start_slow_request(fake, url) as slow:  # keeps the gateway alive for ~1 s
            t0 = time.monotonic()
            s.signal(signal.SIGTERM)
            closed, extra = idle.wait_closed(SHUTDOWN_TIMEOUT + 2)
            took = time.monotonic() - t0
            assert closed and extra == b"", f"closed={closed} extra={extra[:100]!r}"
            assert took < 0.5, f"idle connection closed {took:.2f}s after SIGTERM"
            assert slow.read_response()[0] == 200
    assert s.wait(SHUTDOWN_TIMEOUT + 3) == 0, s.output()


def test_shutdown_cuts_endless_stream_at_deadline(
    fake: FakeUpstream, shutdown_gateway: tuple[Gateway, str]
) -> None:
    """A never-ending streamed response keeps flowing after SIGTERM, is closed at the shutdown
    deadline, and the gateway exits 0 within deadline + 2 s."""
    s, url = shutdown_gateway
    with Conn(url) as stream:
        stream.send(STREAM_REQUEST)
        stream.read_until(b"tick")
        t0 = time.monotonic()
        s.signal(signal.SIGTERM)
        got_late = 0
        closed_at = None
        while time.monotonic() - t0 < SHUTDOWN_TIMEOUT + 3:
            try:
                more = stream._fill(0.5)
            except TimeoutError:
                continue
            if not more:
                closed_at = time.monotonic() - t0
                break
            if time.monotonic() - t0 > 1.0:
                got_late += 1
            stream.buf.clear()
        assert closed_at is not None, "stream still open 5 s after SIGTERM"
        assert closed_at >= SHUTDOWN_TIMEOUT - 0.5, f"stream closed early, {closed_at:.2f}s"
        assert got_late > 0, "no stream data arrived during the grace period"
        code = s.wait(SHUTDOWN_TIMEOUT + 2)
        exited = time.monotonic() - t0
    assert code == 0, s.output()
    assert exited < SHUTDOWN_TIMEOUT + 2, f"exited {exited:.2f}s after SIGTERM"


def test_shutdown_writes_access_log_of_in_flight_request(
    fake: FakeUpstream, shutdown_gateway: tuple[Gateway, str]
) -> None:
    """The access-log line of a request in flight at SIGTERM is written before the gateway
    exits."""
    s, url = shutdown_gateway
    with start_slow_request(fake, url) as c:
        s.signal(signal.SIGTERM)
        assert c.read_response()[0] == 200
    assert s.wait(SHUTDOWN_TIMEOUT + 3) == 0, s.output()
    lines = [line for line in s.stdout() if '"GET /v1.41/version HTTP/1.1" 200' in line]
    assert len(lines) == 1, f"access log:\n{s.stdout()}"


def test_shutdown_writes_access_log_of_cut_stream(
    fake: FakeUpstream, shutdown_gateway: tuple[Gateway, str]
) -> None:
    """The access-log line of a stream cut at the shutdown deadline is written before exit."""
    s, url = shutdown_gateway
    with Conn(url) as stream:
        stream.send(STREAM_REQUEST)
        stream.read_until(b"tick")
        s.signal(signal.SIGTERM)
        assert s.wait(SHUTDOWN_TIMEOUT + 3) == 0, s.output()
    lines = [line for line in s.stdout() if '"GET /v1.41/events HTTP/1.1" 200' in line]
    assert len(lines) == 1, f"access log:\n{s.stdout()}"


# ---------------------------------------------------------------------------------------------
# 6. Access log
# ---------------------------------------------------------------------------------------------
REQUESTS = [
    (b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n", "GET", "/_ping", 0),
    (
        b"POST /v1.41/containers/create?name=x HTTP/1.1\r\nHost: docker\r\n"
        b'Content-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": "b"}\n',
        "POST",
        "/v1.41/containers/create?name=x",
        11,
    ),
    (
        b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n",
        "GET",
        "/v1.41/containers/json",
        0,
    ),
]


def send_logged_requests(url: str) -> tuple[str, list[tuple[str, str, int, int, int]]]:
    """The REQUESTS on one keep-alive connection: (client address, [(method, path, status,
    request body bytes, response body bytes)])."""
    with Conn(url) as c:
        host, port = c.sock.getsockname()[:2]
        client = f"{host}:{port}"
        out = []
        for raw, method, path, body_in in REQUESTS:
            c.send(raw)
            status, _, body = c.read_response()
            out.append((method, path, status, body_in, len(body)))
    return client, out


def wait_lines(read: Callable[[], list[str]], count: int, timeout: float = 2.0) -> list[str]:
    wait_until(lambda: len([x for x in read() if x.strip()]) >= count, timeout)
    time.sleep(0.2)  # and nothing more arrives
    return [x for x in read() if x.strip()]


def access_log_of_requests(
    serve: StartGateway, fake: FakeUpstream, *extra: str
) -> tuple[str, list[tuple[str, str, int, int, int]], list[str]]:
    """Send the REQUESTS through a gateway (``extra`` options) in front of ``fake``: (client
    address, what `send_logged_requests` saw, the access-log lines, one per request)."""
    s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fake.url, *extra)
    (url,) = s.listening(1)
    client, sent = send_logged_requests(url)
    lines = wait_lines(s.stdout, len(sent))
    assert len(lines) == len(sent), "\n".join(lines)
    return client, sent, lines


def test_text_access_log_line_per_request(fake: FakeUpstream, serve: StartGateway) -> None:
    """The default text access log has one line per request on stdout with client address,
    method, path, status, ``in=``, ``out=`` and ``dur_ms=``."""
    client, sent, lines = access_log_of_requests(serve, fake)
    for line, (method, path, status, _, _) in zip(lines, sent, strict=True):
        m = TEXT_LOG_RE.match(line)
        assert m, f"access-log line not in the documented format: {line!r}"
        assert m["client"] == client, line
        assert (m["method"], m["path"], int(m["status"])) == (method, path, status), line
        assert m["note"] is None, line
        assert float(m["dur_ms"]) >= 0


def test_json_access_log_object_per_request(fake: FakeUpstream, serve: StartGateway) -> None:
    """``--log-format json`` writes one JSON object per line per request with the keys time,
    client, method, path, status, bytes_in, bytes_out and duration_ms."""
    client, sent, lines = access_log_of_requests(serve, fake, "--log-format", "json")
    for line, (method, path, status, _, _) in zip(lines, sent, strict=True):
        obj = json.loads(line)
        assert isinstance(obj, dict)
        assert obj.keys() >= JSON_LOG_KEYS, f"missing {JSON_LOG_KEYS - obj.keys()} in {line}"
        assert (obj["client"], obj["method"], obj["path"], obj["status"]) == (
            client,
            method,
            path,
            status,
        ), line
        assert isinstance(obj["time"], str) and obj["time"]
        assert isinstance(obj["bytes_in"], int) and isinstance(obj["bytes_out"], int)
        assert isinstance(obj["duration_ms"], int | float) and obj["duration_ms"] >= 0


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_access_log_counts_body_bytes(fake: FakeUpstream, serve: StartGateway, fmt: str) -> None:
    """The access log's in/out (bytes_in/bytes_out) are the request and response *body* bytes,
    as in the documented example ``"GET /v1.41/containers/json HTTP/1.1" 200 in=0 out=3``."""
    _, sent, lines = access_log_of_requests(serve, fake, "--log-format", fmt)
    got = []
    for line in lines:
        if fmt == "json":
            obj = json.loads(line)
            got.append((obj["path"], obj["bytes_in"], obj["bytes_out"]))
        else:
            m = TEXT_LOG_RE.match(line)
            assert m, line
            got.append((m["path"], int(m["bytes_in"]), int(m["bytes_out"])))
    want = [(path, body_in, body_out) for _, path, _, body_in, body_out in sent]
    assert got == want, f"(path, in, out) logged {got}, body bytes were {want}"


def test_access_log_file(fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str) -> None:
    """``--access-log FILE`` writes the lines to FILE within 0.5 s and none to stdout."""
    log_path = os.path.join(tmp_sock_dir, "access.log")
    s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fake.url, "--access-log", log_path)
    (url,) = s.listening(1)
    assert_ping(url)
    t0 = time.monotonic()

    def logged() -> list[str]:
        try:
            return [x for x in Path(log_path).read_text().splitlines() if x.strip()]
        except FileNotFoundError:
            return []

    assert wait_until(lambda: len(logged()) >= 1, 0.5), (
        f"nothing in {log_path} after {time.monotonic() - t0:.2f}s"
    )
    lines = logged()
    assert len(lines) == 1 and TEXT_LOG_RE.match(lines[0]), lines
    assert '"GET /_ping HTTP/1.1" 200' in lines[0]
    time.sleep(0.2)
    assert not [x for x in s.stdout() if x.strip()], f"stdout: {s.stdout()}"


def test_access_log_off(fake: FakeUpstream, serve: StartGateway, tmp_sock_dir: str) -> None:
    """``--access-log off`` writes no access-log line anywhere (not on stdout, not to a file
    named ``off``)."""
    s = serve("--listen", "tcp://127.0.0.1:0", "--upstream", fake.url, "--access-log", "off")
    (url,) = s.listening(1)
    for _ in range(5):
        assert_ping(url)
    s.signal(signal.SIGTERM)
    assert s.wait(10) == 0, s.output()
    assert not [x for x in s.stdout() if x.strip()], f"stdout: {s.stdout()}"
    assert not [x for x in s.stderr() if "/_ping" in x], f"stderr: {s.stderr()}"
    assert not (REPO / "off").exists(), "an access log file named 'off' was created"


# ---------------------------------------------------------------------------------------------
# 7. The real daemon and the docker CLI, TCP upstream and unix listener
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_gateway(daemon: PrivateDaemon) -> Iterator[tuple[str, str, Gateway]]:
    """A gateway with a TCP and a unix listener whose upstream is ``tcp://`` (a forwarder to the
    private daemon's socket): (tcp url, unix url, process)."""
    sock_dir = tempfile.mkdtemp(prefix="dgs-", dir="/tmp")
    sock_path = os.path.join(sock_dir, "gw.sock")
    try:
        with TcpToUnixForwarder(str(daemon.socket_path)) as fwd:
            s = serve_process(
                *listen_on("tcp://127.0.0.1:0", f"unix://{sock_path}"),
                *("--upstream", fwd.url, "--access-log", "off"),
            )
            try:
                urls = s.listening(2)
                tcp_url = next(u for u in urls if u.startswith("tcp://"))
                yield tcp_url, f"unix://{sock_path}", s
                assert s.alive(), f"the gateway exited:\n{s.output()}"
            finally:
                s.stop()
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cli_env() -> Iterator[dict[str, str]]:
    config = tempfile.mkdtemp(prefix="dg-cfg-")
    env = dict(os.environ)
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(key, None)
    env.update({"DOCKER_CONFIG": config, "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"})
    try:
        yield env
    finally:
        shutil.rmtree(config, ignore_errors=True)


def docker(
    env: dict[str, str], host: str, *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    proc = run_docker(env, "-H", host, *args, input=input, timeout=20)
    assert proc.returncode == 0, (
        f"docker -H {host} {' '.join(args)} exited {proc.returncode}\n"
        f"stdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
    )
    return proc


@pytest.mark.daemon
@pytest.mark.timeout(180)  # the session daemon may be started by this test
def test_docker_version_through_tcp_upstream(
    real_gateway: tuple[str, str, Gateway], cli_env: dict[str, str], daemon: PrivateDaemon
) -> None:
    """``docker version`` through a gateway whose upstream is ``tcp://`` reports the daemon's
    server version."""
    tcp_url, _, _ = real_gateway
    out = docker(cli_env, tcp_url, "version", "--format", "{{json .}}").stdout
    got = json.loads(out)
    direct = json.loads(daemon.docker("version", "--format", "{{json .}}").stdout)
    assert got["Server"]["Version"] == direct["Server"]["Version"]
    assert got["Server"]["ApiVersion"] == direct["Server"]["ApiVersion"]


@pytest.mark.daemon
@pytest.mark.timeout(180)
def test_docker_ps_through_unix_listener(
    real_gateway: tuple[str, str, Gateway],
    cli_env: dict[str, str],
    daemon: PrivateDaemon,
    busybox_image: str,
) -> None:
    """``docker -H unix://<gateway socket> ps`` lists the daemon's running containers."""
    _, unix_url, _ = real_gateway
    name = f"dgt-serve-{uuid.uuid4().hex[:8]}"
    daemon.docker("run", "-d", "--name", name, busybox_image, "sleep", "60")
    try:
        out = docker(cli_env, unix_url, "ps", "--format", "{{.Names}}").stdout.decode()
        assert name in out.split(), out
    finally:
        daemon.docker("rm", "-f", name, check=False, timeout=30)


@pytest.mark.daemon
@pytest.mark.timeout(180)
def test_docker_run_i_cat_through_unix_listener(
    real_gateway: tuple[str, str, Gateway], cli_env: dict[str, str], busybox_image: str
) -> None:
    """``docker -H unix://<gateway socket> run --rm -i IMAGE cat`` echoes its stdin back whole."""
    _, unix_url, _ = real_gateway
    data = b"".join(b"line %05d of the stdin sent through dockgate\n" % i for i in range(2000))
    out = docker(cli_env, unix_url, "run", "--rm", "-i", busybox_image, "cat", input=data).stdout
    assert out == data, f"got {len(out)} bytes back of {len(data)}"
