"""The things being compared: dockerd itself, nginx, HAProxy and dockgate in front of its socket.

A *target* is a name ("nginx", "dockgate-w2", ...); `launch()` starts one fresh *instance* of it
(its own process, port, config and logs under a work dir) and returns an `Instance` that says how
to reach it and which processes to measure.
"""

from __future__ import annotations

import base64
import importlib
import os
import pathlib
import re
import shutil
import socket
import ssl
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from credentials import CLIENT_CN, USER, Credentials, make_credentials, make_htpasswd
from procs import Proc, Reaper, process_tree

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TEMPLATES = BENCH_DIR / "templates"

START_TIMEOUT_S = 30.0
LISTENING_RE = re.compile(r"dockgate: listening on tcp://127\.0\.0\.1:(\d+)")

# The authenticated variants of dockgate (1 worker, otherwise as `dockgate`): Basic credentials
# checked against a bcrypt htpasswd entry; TLS on the listener; TLS with required client
# certificates. They run only the small-request workloads (AUTH_WORKLOADS) and have their own
# table, where they are compared with `dockgate` in the same run.
AUTH_TARGETS = ("dockgate+basic", "dockgate+tls", "dockgate+mtls")
# Column order of the report. "direct-unix" is dockerd's own unix socket, for the clients that can
# speak it (curl, the docker CLI, the event client); wrk cannot, so its rows show "-" there.
ALL_TARGETS = (
    "direct",
    "direct-unix",
    "nginx",
    "haproxy",
    "haproxy-ka",
    "dockgate",
    "dockgate-w2",
    # `dockgate` as it was at `--baseline REV`: a change's cost, measured in the same run.
    "dockgate-base",
    *AUTH_TARGETS,
)
DEFAULT_TARGETS = (
    *("direct", "direct-unix", "nginx", "haproxy", "dockgate", "dockgate-w2"),
    *AUTH_TARGETS,
)
TCP_ONLY_WORKLOADS = frozenset({"ping", "pyping", "list", "close"})
AUTH_WORKLOADS = frozenset({"ping", "pyping"})
# The Python load generator (bench/pyload.py), which can present a client certificate without
# help, runs against these only: dockgate and its authenticated variants.
PYPING_TARGETS = frozenset({"dockgate", *AUTH_TARGETS})
# The target for which wrk needs bench/templates/wrk_client_cert.c preloaded.
CLIENT_CERT_TARGETS = frozenset({"dockgate+mtls"})


def runs(workload: str, target: str, *, wrk_client_cert: bool = True) -> bool:
    """Whether `workload` is measured on `target` (others show "-"); `wrk_client_cert` says
    whether wrk can present a client certificate in this run."""
    if workload == "pyping":
        return target in PYPING_TARGETS
    if workload == "ping" and target in CLIENT_CERT_TARGETS and not wrk_client_cert:
        return False
    if target in AUTH_TARGETS:
        return workload in AUTH_WORKLOADS
    return not (workload in TCP_ONLY_WORKLOADS and target == "direct-unix")


# Docker API sections, as in Tecnativa/docker-socket-proxy's switches (one env var each).
API_SECTIONS = (
    *("auth", "build", "commit", "configs", "containers", "distribution", "events", "exec"),
    *("grpc", "images", "info", "networks", "nodes", "_ping", "plugins", "secrets"),
    *("services", "session", "swarm", "system", "tasks", "version", "volumes"),
)
# Container sub-endpoints that Tecnativa gates behind their own ALLOW_* switch.
GATED_CONTAINER_OPS = ("exec", "kill", "attach", "archive", "export", "logs")
# Container actions that Tecnativa allows by their own switch even without CONTAINERS=1.
ACTION_SWITCHES = (
    ("restarts", "((stop)|(restart)|(kill))"),
    ("start", "start"),
    ("stop", "stop"),
    ("pause", "pause"),
    ("unpause", "unpause"),
)
# Tecnativa's switches that this benchmark needs on (run/attach/wait/rm, logs, export, events,
# volumes). HAProxy's config reads them, and so does dockgate without a --policy file, so both
# enforce the same access.
POLICY_ENV_ON = (
    *("POST", "DELETE", "CONTAINERS", "IMAGES", "EVENTS", "PING", "VERSION", "INFO", "VOLUMES"),
    *("EXEC", "ALLOW_START", "ALLOW_STOP", "ALLOW_RESTARTS", "ALLOW_ATTACH", "ALLOW_EXPORT"),
    *("ALLOW_LOGS", "ALLOW_EXEC", "ALLOW_KILL", "ALLOW_ARCHIVE"),
)


@dataclass
class Instance:
    """A running target: how to reach it, and which processes are its own."""

    target: str
    tcp_port: int | None
    unix_path: pathlib.Path | None
    pids: Callable[[], list[int]]
    proc: Proc | None = None
    notes: list[str] = field(default_factory=list)
    headers: tuple[str, ...] = ()  # "Name: value" sent with every request (Authorization)
    tls: ssl.SSLContext | None = None  # client context for a TLS listener
    creds: Credentials | None = None
    client_cert: bool = False  # whether the client must present its certificate

    @property
    def docker_host(self) -> str:
        if self.tcp_port is not None:
            return f"tcp://127.0.0.1:{self.tcp_port}"
        return f"unix://{self.unix_path}"

    @property
    def base_url(self) -> str:
        if self.tcp_port is not None:
            scheme = "https" if self.tls is not None else "http"
            return f"{scheme}://127.0.0.1:{self.tcp_port}"
        return "http://docker"

    def curl_args(self) -> list[str]:
        return ["--unix-socket", str(self.unix_path)] if self.tcp_port is None else []

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raw_get(inst: Instance, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One `GET path` with `Connection: close`; returns (status, raw body bytes)."""
    sock: socket.socket
    if inst.tcp_port is not None:
        sock = socket.create_connection(("127.0.0.1", inst.tcp_port), timeout=timeout)
        if inst.tls is not None:
            sock = inst.tls.wrap_socket(sock, server_hostname="127.0.0.1")
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(inst.unix_path))
    lines = ["GET " + path + " HTTP/1.1", "Host: docker", *inst.headers, "Connection: close"]
    with sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(match.group(1)) if match else 0), body


def check_auth_enforced(inst: Instance) -> None:
    """An authenticated variant must refuse a client without its credentials (else the figures
    would be those of an open gateway)."""
    if inst.headers:
        # A wrong password, not none: the policy file binds anonymous callers from loopback.
        wrong = "Authorization: Basic " + base64.b64encode(b"bench:wrong").decode()
        status, _ = raw_get(replace(inst, headers=(wrong,)), "/_ping")
        if status != 401:
            raise RuntimeError(f"{inst.target}: GET /_ping with a wrong password answered {status}")
    if inst.client_cert and inst.creds is not None:
        try:
            status, _ = raw_get(replace(inst, tls=inst.creds.client_context(False)), "/_ping")
        except OSError:
            return  # refused during or right after the handshake
        if status == 200:
            raise RuntimeError(f"{inst.target}: GET /_ping without a client certificate: 200")


def wait_ready(inst: Instance, proc: Proc | None, timeout: float = START_TIMEOUT_S) -> None:
    """Poll `GET /_ping` until it answers 200 (or the process dies, or `timeout` passes)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{inst.target} exited during start:\n{proc.log_tail()}")
        try:
            status, _ = raw_get(inst, "/_ping", timeout=2)
            if status == 200:
                return
            last = f"status {status}"
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    tail = proc.log_tail() if proc else ""
    raise TimeoutError(f"{inst.target} not ready after {timeout}s ({last})\n{tail}")


class Launcher:
    """Starts fresh instances of the targets against one daemon socket."""

    def __init__(
        self,
        workdir: pathlib.Path,
        daemon_socket: pathlib.Path,
        daemon_tcp_port: int,
        daemon_pid: int,
        reaper: Reaper,
        *,
        dockgate_src: pathlib.Path = REPO_ROOT / "src",
        baseline_src: pathlib.Path | None = None,
        env_policy: bool = False,
    ) -> None:
        self.workdir = workdir
        self.socket = daemon_socket
        self.daemon_tcp_port = daemon_tcp_port
        self.daemon_pid = daemon_pid
        self.reaper = reaper
        self.dockgate_src = dockgate_src
        self.baseline_src = baseline_src
        # True: the gateways take the Tecnativa variables (no policy file, no htpasswd, no
        # admin listener), as the bench ran them before issue 14 (for older --baseline code).
        self.env_policy = env_policy
        self._count = 0
        self._creds: Credentials | None = None
        self._htpasswd: tuple[pathlib.Path, str] | None = None
        self._policy: pathlib.Path | None = None

    @property
    def htpasswd(self) -> tuple[pathlib.Path, str]:
        """The htpasswd file (one bcrypt user) every gateway reads, and its password."""
        if self._htpasswd is None:
            self._htpasswd = make_htpasswd(self.workdir / "credentials")
        return self._htpasswd

    @property
    def creds(self) -> Credentials:
        """The htpasswd file and certificates of the authenticated variants, made on first use."""
        if self._creds is None:
            self._creds = make_credentials(self.workdir / "credentials", self.htpasswd)
        return self._creds

    def policy_args(self) -> list[str]:
        """What every dockgate target runs with (issue 14's set-up): the policy file with
        bindings (templates/dockgate-policy.yaml), the htpasswd file that makes its user an
        identity, and metrics served on an admin listener of its own."""
        if self.env_policy:
            return []
        if self._policy is None:
            template = string.Template((TEMPLATES / "dockgate-policy.yaml").read_text())
            self._policy = self.workdir / "dockgate-policy.yaml"
            self._policy.write_text(template.substitute(user=USER, client_cn=CLIENT_CN))
        htpasswd, _ = self.htpasswd
        admin = f"tcp://127.0.0.1:{free_tcp_port()}"
        return ["--policy", str(self._policy), "--htpasswd", str(htpasswd), "--admin-listen", admin]

    def _dir(self, target: str) -> pathlib.Path:
        self._count += 1
        path = self.workdir / f"{target}-{self._count}"
        path.mkdir(parents=True)
        return path

    def launch(self, target: str) -> Instance:
        if target == "direct":
            return Instance(target, self.daemon_tcp_port, None, lambda: [self.daemon_pid])
        if target == "direct-unix":
            return Instance(target, None, self.socket, lambda: [self.daemon_pid])
        if target == "nginx":
            return self._nginx()
        if target in ("haproxy", "haproxy-ka"):
            return self._haproxy(target, server_close=target == "haproxy")
        if target == "dockgate":
            return self._dockgate(target, workers=1)
        if target == "dockgate-w2":
            return self._dockgate(target, workers=2)
        if target == "dockgate-base":
            if self.baseline_src is None:
                raise ValueError("dockgate-base needs --baseline REV")
            return self._dockgate(target, workers=1, src=self.baseline_src)
        if target in AUTH_TARGETS:
            return self._dockgate_auth(target)
        raise ValueError(f"unknown target {target!r}")

    def _dockgate_auth(self, target: str) -> Instance:
        creds = self.creds
        if target == "dockgate+basic":
            # Without the policy file (--env-policy) the htpasswd file is this variant's alone.
            extra = ["--htpasswd", str(creds.htpasswd)] if self.env_policy else []
            inst = self._dockgate(target, workers=1, extra=extra, headers=(creds.basic_header,))
        else:
            mtls = target == "dockgate+mtls"
            extra = ["--tls-cert", str(creds.server_cert), "--tls-key", str(creds.server_key)]
            if mtls:
                extra += ["--tls-client-ca", str(creds.ca)]
            inst = self._dockgate(
                target, workers=1, extra=extra, tls=creds.client_context(with_cert=mtls)
            )
            inst.client_cert = mtls
        inst.creds = creds
        return inst

    def _nginx(self) -> Instance:
        prefix = self._dir("nginx")
        port = free_tcp_port()
        proc = Proc(
            "nginx", nginx_argv(prefix, self.socket, port), prefix / "stdout.log", self.reaper
        )
        inst = Instance("nginx", port, None, proc.tree, proc)
        self._ready(inst, proc)
        return inst

    def _haproxy(self, target: str, server_close: bool) -> Instance:
        prefix = self._dir(target)
        port = free_tcp_port()
        cfg = prefix / "haproxy.cfg"
        cfg.write_text(render_haproxy(prefix, self.socket, port, server_close))
        env = dict(os.environ)
        env.update(dict.fromkeys(POLICY_ENV_ON, "1"))
        proc = Proc(
            target,
            ["haproxy", "-db", "-f", str(cfg)],
            prefix / "access.log",
            self.reaper,
            env=env,
            stderr_path=prefix / "stderr.log",
        )
        inst = Instance(target, port, None, proc.tree, proc)
        self._ready(inst, proc)
        return inst

    def _dockgate(
        self,
        target: str,
        workers: int,
        *,
        extra: list[str] | None = None,
        headers: tuple[str, ...] = (),
        tls: ssl.SSLContext | None = None,
        src: pathlib.Path | None = None,
    ) -> Instance:
        prefix = self._dir(target)
        argv = [
            sys.executable,
            "-m",
            "dockgate",
            "serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--upstream",
            f"unix://{self.socket}",
            "--access-log",
            str(prefix / "access.log"),
        ]
        if workers != 1:
            argv += ["--workers", str(workers)]
        argv += self.policy_args()
        argv += extra or []
        stderr = prefix / "stderr.log"
        proc = Proc(
            target,
            argv,
            prefix / "stdout.log",
            self.reaper,
            env=dockgate_env(src or self.dockgate_src),
            stderr_path=stderr,
        )
        port = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while port is None and time.monotonic() < deadline:
            if not proc.alive():
                proc.stop()
                raise RuntimeError(f"{target} exited during start:\n{proc.log_tail()}")
            match = LISTENING_RE.search(stderr.read_text())
            if match:
                port = int(match.group(1))
            else:
                time.sleep(0.05)
        if port is None:
            proc.stop()
            raise TimeoutError(f"{target} printed no listening line:\n{proc.log_tail()}")
        inst = Instance(target, port, None, proc.tree, proc, headers=headers, tls=tls)
        self._ready(inst, proc)
        if workers > 1:
            # Workers may fork after the listening line; wait until they all exist.
            deadline = time.monotonic() + START_TIMEOUT_S
            while len(process_tree(proc.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.05)
        return inst

    def _ready(self, inst: Instance, proc: Proc) -> None:
        try:
            wait_ready(inst, proc)
        except BaseException:
            proc.stop()
            raise


def dockgate_env(src: pathlib.Path) -> dict[str, str]:
    """Environment for a gateway run from the package under `src`, with the bench's switches."""
    env = dict(os.environ)
    env.update(dict.fromkeys(POLICY_ENV_ON, "1"))
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def snapshot_dockgate(dest: pathlib.Path) -> pathlib.Path:
    """Copy src/ to `dest` so that edits made during the run do not reach later-started gateways."""
    shutil.copytree(
        REPO_ROOT / "src", dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    return dest


def import_daemon() -> Any:
    """tests/support/daemon.py's module (tests/ may or may not be a package)."""
    sys.path.insert(0, str(REPO_ROOT))
    try:
        return importlib.import_module("tests.support.daemon")
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
        return importlib.import_module("support.daemon")


def snapshot_revision(revision: str, dest: pathlib.Path) -> pathlib.Path:
    """src/ as it was at git `revision`, unpacked under `dest` (for the dockgate-base target)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", revision, "src"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return dest / "src"


def dockgate_available(src: pathlib.Path) -> tuple[bool, str]:
    """Whether `python -m dockgate serve --help` works from `src`."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "dockgate", "serve", "--help"],
            env=dockgate_env(src),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "`python -m dockgate serve --help` timed out"
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        return False, err[-1] if err else f"exit status {proc.returncode}"
    return True, ""


def nginx_argv(prefix: pathlib.Path, socket_path: pathlib.Path, port: int) -> list[str]:
    """nginx in the foreground with templates/nginx.conf (written under `prefix`), proxying
    127.0.0.1:`port` to the daemon's unix socket."""
    conf = prefix / "nginx.conf"
    template = string.Template((TEMPLATES / "nginx.conf").read_text())
    conf.write_text(template.substitute(prefix=prefix, socket=socket_path, port=port))
    error_log = str(prefix / "error.log")
    return ["nginx", "-c", str(conf), "-p", str(prefix), "-e", error_log, "-g", "daemon off;"]


def render_haproxy(prefix: pathlib.Path, socket_path: pathlib.Path, port: int, close: bool) -> str:
    ver = r"^(/v[\d\.]+)?"
    ctr = f"{ver}/containers/[a-zA-Z0-9_.-]+"
    lines = [
        "    # One ACL per API section and per gated container sub-endpoint.",
    ]
    for section in API_SECTIONS:
        lines.append(f"    acl {section.strip('_')} path,url_dec -m reg -i {ver}/{section}")
    for op in GATED_CONTAINER_OPS:
        lines.append(f"    acl ctr_{op} path,url_dec -m reg -i {ctr}/{op}")
    for name, regex in ACTION_SWITCHES:
        lines.append(f"    acl act_{name} path,url_dec -m reg -i {ctr}/{regex}")
    lines += [
        "    # Methods other than GET/HEAD only when switched on.",
        "    http-request deny unless METH_GET || METH_POST { env(POST) -m bool } || "
        "METH_DELETE { env(DELETE) -m bool } || METH_PUT { env(PUT) -m bool } || "
        "{ method PATCH } { env(PATCH) -m bool }",
        "    # Gated sub-endpoints are denied before any allow rule.",
    ]
    for op in GATED_CONTAINER_OPS:
        lines.append(f"    http-request deny if ctr_{op} !{{ env(ALLOW_{op.upper()}) -m bool }}")
    lines.append("    # Allow rules, one per switch; everything else is denied.")
    for name, _ in ACTION_SWITCHES:
        switch = f"ALLOW_{name.upper()}"
        lines.append(f"    http-request allow if act_{name} {{ env({switch}) -m bool }}")
    for section in API_SECTIONS:
        acl = section.strip("_")
        lines.append(f"    http-request allow if {acl} {{ env({acl.upper()}) -m bool }}")
    lines.append("    http-request deny")
    errors = pathlib.Path("/etc/haproxy/errors")
    errorfiles = "\n".join(
        f"    errorfile {code} {errors}/{code}.http"
        for code in (400, 403, 408, 500, 502, 503, 504)
        if (errors / f"{code}.http").is_file()
    )
    template = string.Template((TEMPLATES / "haproxy.cfg").read_text())
    return template.substitute(
        prefix=prefix,
        socket=socket_path,
        port=port,
        server_close="option http-server-close" if close else "# option http-server-close",
        errorfiles=errorfiles,
        rules="\n".join(lines),
    )
