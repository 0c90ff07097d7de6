"""Run ``python -m dockgate serve`` as a subprocess for tests.

``Gateway`` starts the gateway (by default on ``tcp://127.0.0.1:0`` in front of an upstream daemon,
with ``--policy allow-all.yaml``), waits for its ``dockgate: listening on ADDRESS`` lines on stderr
(see docs/cli.md), and drains stdout and stderr in background threads so the pipes never fill.
``stop()`` (or leaving a ``with`` block) ends it: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import IO, Self

import pytest

from dockgate.relay.phase import ILLEGAL_MOVE_MARK
from support.procs import StartStop, terminate

REPO = pathlib.Path(__file__).resolve().parents[2]
SRC = REPO / "src"
ALLOW_ALL_POLICY = pathlib.Path(__file__).parent.parent / "policies" / "allow-all.yaml"

LISTENING_RE = re.compile(r"dockgate: listening on (\S+)")
TCP_ADDRESS_RE = re.compile(r"tcp://(?:\[[^\]]+\]|[^\s:]+):(\d+)")

DRAIN_JOIN_TIMEOUT = 5.0

# Lines any gateway printed about an illegal phase move (relay/phase.py; every gateway runs
# with DOCKGATE_STRICT_PHASES=1, set by conftest.py, which fails the test they came in).
ILLEGAL_MOVES: list[str] = []


class GatewayError(RuntimeError):
    pass


def serve_command(*args: str) -> list[str]:
    """``python -m dockgate serve ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "dockgate", "serve", *args]


def gateway_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` for a gateway: ``src`` first on PYTHONPATH, unbuffered, no DOCKER_HOST;
    then ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("DOCKER_HOST", None)
    env.update(extra or {})
    return env


def run_dockgate(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m dockgate ARGS`` run to its end with this tree's code (``gateway_env(env)``):
    the one-shot commands (check, doctor, policy validate, htpasswd, token)."""
    return subprocess.run(
        [sys.executable, "-m", "dockgate", *args],
        input=stdin,
        env=gateway_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Gateway(StartStop):
    """A ``dockgate serve`` subprocess.

    The command is ``serve --listen LISTEN --upstream UPSTREAM --policy POLICY EXTRA_ARGS...``;
    ``listen=None``, ``upstream=None`` or ``policy=None`` leave that option out (EXTRA_ARGS may
    then give it, several ``--listen`` included), and the policy is also left out when EXTRA_ARGS
    name one. ``start()`` returns once the first listener is up; ``spawn()`` only starts the
    process, and ``listening(count)`` waits for ``count`` listeners.
    """

    def __init__(
        self,
        upstream: str | None,
        *extra_args: str,
        listen: str | None = "tcp://127.0.0.1:0",
        policy: str | os.PathLike[str] | None = ALLOW_ALL_POLICY,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        start_timeout: float = 15,
        stop_timeout: float = 15,
    ) -> None:
        # Unless a test brings its own policy, let everything through: most tests are about
        # the relay. Policy tests pass --policy explicitly (or policy=None).
        with_policy = policy is not None and "--policy" not in extra_args
        self.command = serve_command(
            *(("--listen", listen) if listen is not None else ()),
            *(("--upstream", upstream) if upstream is not None else ()),
            *(("--policy", str(policy)) if with_policy else ()),
            *extra_args,
        )
        self.env = env
        self.cwd = cwd
        self.pass_fds: tuple[int, ...] = ()  # descriptors the child keeps (socket activation)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.url = ""  # the first TCP listener, tcp://HOST:PORT
        self.port = 0
        self.http_base = ""
        self.addresses: list[str] = []  # every listener, in the order they were printed
        self.stdout_lines: list[str] = []  # as printed, line ends included
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()  # guards the lists above and the fields they set
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise GatewayError("gateway not started")
        return self._proc

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- output ------------------------------------------------------------------------------
    def _add_address(self, address: str) -> None:
        self.addresses.append(address)
        m = TCP_ADDRESS_RE.fullmatch(address)
        if m and not self.url:
            self.url = address
            self.port = int(m.group(1))
            host = address[len("tcp://") :].rsplit(":", 1)[0]
            self.http_base = f"http://{host}:{self.port}"

    def _drain(self, stream: IO[bytes], sink: list[str], watch: bool) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode(errors="replace")
                if ILLEGAL_MOVE_MARK in line:
                    ILLEGAL_MOVES.append(line.rstrip("\n"))
                with self._cond:
                    sink.append(line)
                    if watch and (m := LISTENING_RE.search(line)):
                        self._add_address(m.group(1))
                        self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            stream.close()

    def _join_drains(self) -> None:
        for t in self._threads:
            t.join(DRAIN_JOIN_TIMEOUT)

    def output(self, tail: int | None = None) -> str:
        """The command, its status and what it printed so far (the last ``tail`` lines of each
        stream, or all): stderr, then stdout."""
        with self._cond:
            err = self.stderr_lines[-tail:] if tail else list(self.stderr_lines)
            out = self.stdout_lines[-tail:] if tail else list(self.stdout_lines)
        return (
            f"command: {' '.join(self.command)}\nrc={self.returncode}\n"
            f"--- stderr ---\n{''.join(err)}--- stdout ---\n{''.join(out)}"
        )

    def stderr(self) -> list[str]:
        """The lines printed on stderr so far, without their line ends."""
        with self._cond:
            return [line.rstrip("\n") for line in self.stderr_lines]

    def stdout(self) -> list[str]:
        """The lines printed on stdout so far (the access log), without their line ends."""
        with self._cond:
            return [line.rstrip("\n") for line in self.stdout_lines]

    def stderr_text(self) -> str:
        with self._cond:
            return "".join(self.stderr_lines)

    def stdout_text(self) -> str:
        with self._cond:
            return "".join(self.stdout_lines)

    # -- lifecycle ---------------------------------------------------------------------------
    def spawn(self) -> Self:
        """Start the process and its output drains; do not wait for anything."""
        if self._proc is not None:
            raise GatewayError("gateway already started")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._proc = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self.cwd,
            pass_fds=self.pass_fds,
        )
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        for stream, sink, watch in (
            (self._proc.stdout, self.stdout_lines, False),
            (self._proc.stderr, self.stderr_lines, True),
        ):
            t = threading.Thread(target=self._drain, args=(stream, sink, watch), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def listening(self, count: int = 1, timeout: float | None = None) -> list[str]:
        """Wait for ``count`` ``dockgate: listening on ADDRESS`` lines; returns the addresses."""
        proc = self._started()
        limit = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            while len(self.addresses) < count and proc.poll() is None:
                if time.monotonic() > deadline:
                    break
                self._cond.wait(0.02)
            found = list(self.addresses)
        if len(found) < count and proc.poll() is not None:
            self._join_drains()  # its last lines may still be in the pipe
            with self._cond:
                found = list(self.addresses)
        if len(found) >= count:
            return found
        why = (
            f"exited with {proc.returncode}"
            if proc.poll() is not None
            else f"is still running after {limit}s"
        )
        raise GatewayError(
            f"expected {count} listening lines, got {found}: the gateway {why}\n{self.output()}"
        )

    def wait_stderr(self, pattern: str, timeout: float | None = None) -> re.Match[str]:
        """Wait until a line printed on stderr matches ``pattern``; returns the match. The lines
        after the first listener (TLS, upstream, policy, admin) may come a moment later."""
        proc = self._started()
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        regex = re.compile(pattern)
        with self._cond:
            while True:
                for line in self.stderr_lines:
                    if match := regex.search(line):
                        return match
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                self._cond.wait(0.02)
        raise GatewayError(f"no stderr line matched {pattern!r}\n{self.output()}")

    def admin_port(self) -> int:
        """The port of the admin listener (``--admin-listen tcp://127.0.0.1:0``), once printed."""
        return int(self.wait_stderr(r"health and metrics on tcp://127\.0\.0\.1:(\d+)").group(1))

    def start(self) -> Self:
        """Start the process and wait until its first listener is up (else stop it and fail)."""
        self.spawn()
        try:
            self.listening(1)
        except GatewayError:
            self.stop()
            raise
        return self

    def signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        code = self._started().wait(timeout)
        self._join_drains()
        return code

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, wait up to ``timeout`` s (default: ``stop_timeout``), then SIGKILL. Returns
        the exit status."""
        if self._proc is None:
            return None
        code = terminate(self._proc, self.stop_timeout if timeout is None else timeout)
        self._join_drains()
        return code


@contextlib.contextmanager
def running(gateway: Gateway, what: str = "the gateway") -> Iterator[Gateway]:
    """Start `gateway` for a fixture, stop it afterwards, and fail if it died on its own."""
    gateway.start()
    try:
        yield gateway
    finally:
        died = gateway.returncode
        gateway.stop()
    if died is not None:
        pytest.fail(f"{what} exited on its own (status {died}):\n{gateway.output()}")
