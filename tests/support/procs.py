"""Processes (and servers) the tests start: stopping them, finding their workers, ``with`` use."""

from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from types import TracebackType
from typing import Self


def terminate(
    proc: subprocess.Popen[bytes], timeout: float = 10, kill_timeout: float = 10
) -> int | None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL (and wait ``kill_timeout`` s).

    Returns the exit status (None if even SIGKILL did not end it in time).
    """
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(kill_timeout)
    return proc.returncode


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate a client we started, then kill it if it does not exit; close its pipes."""
    terminate(proc, timeout, timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def pid_alive(pid: int) -> bool:
    """True for a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (sorted; empty once it is gone)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return sorted(out)


def pid_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (workers, if any)."""
    out = [pid]
    i = 0
    while i < len(out):
        out += children(out[i])
        i += 1
    return out


class StartStop:
    """``with`` support for something with ``start()`` and ``stop()``: started on entering the
    block, stopped on leaving it."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
