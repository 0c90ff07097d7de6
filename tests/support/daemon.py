"""A private Docker daemon for a test run.

`PrivateDaemon` starts its own ``dockerd`` (with its own managed containerd) whose data root, exec
root, pid file and unix socket all live under one base directory, so it never touches any other
daemon on the machine (``/var/run/docker.sock`` included). It must run as root.

Typical use::

    base = pathlib.Path(tempfile.mkdtemp(prefix="dg-", dir="/tmp"))
    with PrivateDaemon(base) as daemon:
        tag = daemon.make_busybox_image()
        daemon.docker("run", "--rm", tag, "echo", "hi")
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from support.procs import StartStop, pid_alive, terminate

# AF_UNIX sun_path is 108 bytes on Linux; keep a margin.
_MAX_UNIX_PATH = 100

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

# Applets the tests rely on; every other applet the binary lists is linked too.
REQUIRED_APPLETS = (
    "sh",
    "cat",
    "echo",
    "sleep",
    "ls",
    "true",
    "false",
    "head",
    "dd",
    "wc",
    "md5sum",
    "sha256sum",
    "yes",
    "seq",
    "env",
    "id",
    "tail",
    "printf",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "touch",
    "stat",
    "tr",
    "grep",
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_docker(
    env: Mapping[str, str], *args: str, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    """Run the ``docker`` CLI with ``env``: output captured, stdin closed unless ``input``, never
    raising for its exit status."""
    return subprocess.run(
        [shutil.which("docker") or "docker", *args],
        env=env,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def find_busybox() -> pathlib.Path:
    """Path of a statically linked busybox (Debian's busybox-static)."""
    for candidate in BUSYBOX_CANDIDATES:
        path = pathlib.Path(candidate)
        if path.is_file():
            return path
    raise FileNotFoundError("busybox not found; install Debian's busybox-static")


def _ping_unix(path: pathlib.Path, timeout: float = 2.0) -> bool:
    """True when the daemon at the unix socket ``path`` answers ``GET /_ping`` with 200 OK."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    head, _, body = data.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0] and body == b"OK"


def _mounts_under(base: pathlib.Path) -> list[str]:
    """Mount points (from /proc/self/mounts) at or below ``base``, deepest first."""
    prefix = str(base).rstrip("/") + "/"
    found: list[str] = []
    try:
        text = pathlib.Path("/proc/self/mounts").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        # /proc/self/mounts escapes space, tab, newline and backslash as octal.
        mnt = (
            fields[1]
            .replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\")
        )
        if mnt.startswith(prefix):
            found.append(mnt)
    found.sort(key=len, reverse=True)
    return found


def _pids_mentioning(needle: str) -> list[int]:
    """PIDs of processes whose command line contains ``needle`` (used with our own base dir)."""
    pids: list[int] = []
    me = os.getpid()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(pid)
    return pids


class PrivateDaemon(StartStop):
    """A dockerd of our own, rooted in ``base_dir``, for one test session."""

    def __init__(self, base_dir: pathlib.Path, tcp_port: int | None = None) -> None:
        self.base_dir = pathlib.Path(base_dir).resolve()
        self.socket_path = self.base_dir / "docker.sock"
        if len(str(self.socket_path).encode()) >= _MAX_UNIX_PATH:
            raise ValueError(
                f"socket path {self.socket_path} is too long for AF_UNIX; use a short base dir "
                "such as tempfile.mkdtemp(prefix='dg-', dir='/tmp')"
            )
        self.data_root = self.base_dir / "data"
        self.exec_root = self.base_dir / "exec"
        self.pidfile = self.base_dir / "docker.pid"
        self.log_path = self.base_dir / "dockerd.log"
        self.config_dir = self.base_dir / "cli-config"
        self.host = f"unix://{self.socket_path}"
        self.tcp_port = tcp_port
        self.tcp_host: str | None = f"tcp://127.0.0.1:{tcp_port}" if tcp_port else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: io.BufferedWriter | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        cmd = [
            dockerd,
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "--pidfile",
            str(self.pidfile),
            "-H",
            self.host,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--log-level",
            "warn",
            # Containers left running get this long to stop at daemon shutdown (default 15 s).
            "--shutdown-timeout",
            "2",
        ]
        if self.tcp_host:
            cmd += ["-H", self.tcp_host, "--tls=false"]
        return cmd

    def start(self, timeout: float = 60) -> None:
        """Start dockerd and wait until ``GET /_ping`` answers ``OK``."""
        if self._proc is not None:
            raise RuntimeError("daemon already started")
        if os.geteuid() != 0:
            raise PermissionError("PrivateDaemon needs root to run dockerd")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = os.environ.copy()
        env.pop("DOCKER_HOST", None)
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"dockerd exited with {code} during start:\n{self.log_tail()}")
            if self.socket_path.exists() and _ping_unix(self.socket_path):
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"dockerd did not answer /_ping within {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL), its containerd and shims; unmount; clean up."""
        if self._proc is not None:
            terminate(self._proc, 30)
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._kill_leftovers()
        self._unmount_all()
        for sub in (self.data_root, self.exec_root):
            self._remove_tree(sub)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def _kill_leftovers(self) -> None:
        """Kill containerd/shims started for this daemon (their command lines name our dirs)."""
        needles = [str(self.exec_root) + "/", str(self.data_root) + "/"]
        pids = sorted({p for n in needles for p in _pids_mentioning(n)})
        for sig in (signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in pids if pid_alive(p)]
            if not alive:
                return
            for p in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(pid_alive(p) for p in alive):
                time.sleep(0.1)

    def _unmount_all(self) -> None:
        for _attempt in range(3):
            mounts = _mounts_under(self.base_dir)
            if not mounts:
                return
            for mnt in mounts:
                subprocess.run(["umount", mnt], capture_output=True, check=False)
        for mnt in _mounts_under(self.base_dir):
            subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)

    def _remove_tree(self, path: pathlib.Path) -> None:
        path = path.resolve() if path.exists() else path
        if not str(path).startswith(str(self.base_dir) + "/"):
            raise RuntimeError(f"refusing to remove {path}: not under {self.base_dir}")
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    def cleanup(self) -> None:
        """Stop if needed and remove the whole base directory (log included)."""
        self.stop()
        if not _mounts_under(self.base_dir) and self.base_dir.exists():
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no dockerd log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- clients -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """``os.environ`` with ``DOCKER_HOST`` set to this daemon (no stray TLS or context)."""
        env = os.environ.copy()
        for key in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS"):
            env.pop(key, None)
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.config_dir)
        env["DOCKER_BUILDKIT"] = "0"
        env["DOCKER_CLI_HINTS"] = "false"
        return env

    def docker(
        self,
        *args: str,
        check: bool = True,
        input: bytes | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the ``docker`` CLI against this daemon directly (not through any gateway)."""
        proc = run_docker(self.env(), *args, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
            )
        return proc

    def inspect(self, name: str) -> dict[str, Any]:
        """What ``docker inspect NAME`` says of one object on this daemon (not through any
        gateway): the state a test checks for the effect of a request."""
        answer = json.loads(self.docker("inspect", name).stdout)[0]
        assert isinstance(answer, dict)
        return answer

    # -- images ------------------------------------------------------------------------------

    def make_busybox_image(self, tag: str = "dockgate-test/busybox:latest") -> str:
        """``docker import`` a tiny rootfs made of the host's static busybox; returns ``tag``."""
        if self.docker("image", "inspect", tag, check=False).returncode == 0:
            return tag
        rootfs_tar = busybox_rootfs_tar()
        self.docker(
            "import",
            "--change",
            f"ENV PATH={DEFAULT_PATH}",
            "--change",
            'CMD ["sh"]',
            "-",
            tag,
            input=rootfs_tar,
        )
        return tag


def _applets(busybox: pathlib.Path) -> list[str]:
    out = subprocess.run(
        [str(busybox), "--list"], capture_output=True, check=True, timeout=30
    ).stdout.decode()
    names = {line.strip() for line in out.splitlines() if line.strip()}
    names.update(REQUIRED_APPLETS)
    names.discard("busybox")
    return sorted(n for n in names if "/" not in n)


def busybox_rootfs_tar() -> bytes:
    """A tar of a minimal root filesystem: /bin/busybox plus an applet symlink per command."""
    busybox = find_busybox()
    buf = io.BytesIO()
    now = int(time.time())

    def add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = mode
        info.mtime = now
        tar.addfile(info)

    def add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        info.mtime = now
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "etc", "root", "home", "var", "usr", "usr/bin", "dev", "proc", "sys"):
            add_dir(tar, d)
        add_dir(tar, "tmp", 0o1777)
        add_file(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in _applets(busybox):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            link.mtime = now
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
        add_file(tar, "etc/passwd", passwd)
        add_file(tar, "etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


@contextlib.contextmanager
def private_daemon(tcp_port: int | None = None) -> Iterator[PrivateDaemon]:
    """A started `PrivateDaemon` in a fresh short base dir, removed entirely afterwards."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="dg-", dir="/tmp"))
    daemon = PrivateDaemon(base, tcp_port=tcp_port)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()
