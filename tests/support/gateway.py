"""Run ``python -m dockgate serve`` as a subprocess for tests.

``Gateway`` starts the gateway on ``tcp://127.0.0.1:0`` in front of an upstream daemon, waits for
the ``dockgate: listening on tcp://HOST:PORT`` line on stderr (see docs/cli.md), and drains stdout
and stderr in background threads so the pipes never fill.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import IO

ALLOW_ALL_POLICY = pathlib.Path(__file__).parent.parent / "policies" / "allow-all.yaml"

LISTENING_RE = re.compile(r"dockgate: listening on (tcp://(?:\[[^\]]+\]|[^\s:]+):(\d+))")


class GatewayError(RuntimeError):
    pass


class Gateway:
    """A ``dockgate serve`` subprocess listening on a free loopback port."""

    def __init__(
        self,
        upstream: str,
        *extra_args: str,
        listen: str = "tcp://127.0.0.1:0",
        env: dict[str, str] | None = None,
        start_timeout: float = 15,
    ) -> None:
        self.upstream = upstream
        self.extra_args: Sequence[str] = extra_args
        self.listen = listen
        self.env = env
        self.start_timeout = start_timeout
        self.url = ""
        self.port = 0
        self.http_base = ""
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lock = threading.Lock()
        self._listening = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

    @property
    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dockgate",
            "serve",
            "--listen",
            self.listen,
            "--upstream",
            self.upstream,
            # Unless a test brings its own policy, let everything through: these tests are
            # about the relay. Policy tests pass --policy explicitly.
            *(() if "--policy" in self.extra_args else ("--policy", str(ALLOW_ALL_POLICY))),
            *self.extra_args,
        ]

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise GatewayError("gateway not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def _drain(self, stream: IO[bytes], sink: list[str], watch: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            with self._lock:
                sink.append(line)
            if watch and not self._listening.is_set():
                m = LISTENING_RE.search(line)
                if m:
                    self.url = m.group(1)
                    self.port = int(m.group(2))
                    host = self.url[len("tcp://") :].rsplit(":", 1)[0]
                    self.http_base = f"http://{host}:{self.port}"
                    self._listening.set()
        stream.close()

    def start(self) -> Gateway:
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
        deadline = time.monotonic() + self.start_timeout
        while not self._listening.wait(0.05):
            if self._proc.poll() is not None:
                for t in self._threads:
                    t.join(2)
                raise GatewayError(
                    f"gateway exited with {self._proc.returncode} before listening:\n"
                    + self.output()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise GatewayError(
                    f"gateway did not print its listening line within {self.start_timeout}s:\n"
                    + self.output()
                )
        return self

    def output(self) -> str:
        """Everything the gateway printed so far: stderr then stdout."""
        with self._lock:
            err = "".join(self.stderr_lines)
            out = "".join(self.stdout_lines)
        return f"--- stderr ---\n{err}--- stdout ---\n{out}"

    def stderr_text(self) -> str:
        with self._lock:
            return "".join(self.stderr_lines)

    def stdout_text(self) -> str:
        with self._lock:
            return "".join(self.stdout_lines)

    def signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        if self._proc is None:
            raise GatewayError("gateway not started")
        code = self._proc.wait(timeout)
        for t in self._threads:
            t.join(2)
        return code

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for t in self._threads:
            t.join(2)
        return proc.returncode

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
