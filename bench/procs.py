"""Child processes of the bench: start in their own session, find their trees, measure, stop.

Every process the bench starts goes through `Proc`, and every `Proc` is registered with a
`Reaper`, so that an error or Ctrl-C anywhere still stops all of them (by their own process group
id, never by name).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


class Reaper:
    """Things to undo at exit, run in reverse order; each step runs even if an earlier one fails."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], object]]] = []

    def add(self, name: str, step: Callable[[], object]) -> None:
        self._steps.append((name, step))

    def discard(self, step: Callable[[], object]) -> None:
        self._steps = [(n, s) for n, s in self._steps if s != step]

    def run_all(self) -> None:
        while self._steps:
            name, step = self._steps.pop()
            try:
                step()
            except Exception as exc:  # a failed clean-up step must not skip the others
                print(f"bench: clean-up of {name} failed: {exc!r}", flush=True)


class Proc:
    """One long-running child (nginx, haproxy, a gateway) in its own session and process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: pathlib.Path,
        reaper: Reaper,
        *,
        env: dict[str, str] | None = None,
        stderr_path: pathlib.Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stderr_path = stderr_path or log_path
        self._reaper = reaper
        self._out = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._err = open(self.stderr_path, "ab") if stderr_path else None  # noqa: SIM115
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err or subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.pid = self.popen.pid
        reaper.add(f"{name} (pid {self.pid})", self.stop)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after `timeout` seconds."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._running():
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            deadline = time.monotonic() + timeout
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)
        self._out.close()
        if self._err:
            self._err.close()
        self._reaper.discard(self.stop)

    def _running(self) -> bool:
        return self.popen.poll() is None or _group_alive(self.pid)

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _group_alive(pgid: int) -> bool:
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and stat[2] == pgid and stat[0] != "Z":
            return True
    return False


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of `pid`, or None when it is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[0], int(fields[1]), int(fields[2])


def process_tree(root: int) -> list[int]:
    """`root` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and stat[0] != "Z":
            children.setdefault(stat[1], []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if _read_stat(pid) is None:
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_kib(pids: Sequence[int]) -> int:
    """Sum of VmRSS (KiB) over `pids` (processes that vanished count 0)."""
    total = 0
    for pid in pids:
        try:
            text = pathlib.Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by `pids` (processes that vanished count 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _cpu_ticks() -> dict[tuple[int, int], int]:
    """(pid, start time) -> user + system clock ticks, for every process now alive."""
    snap: dict[tuple[int, int], int] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(entry.name)) is not None:
            snap[(int(entry.name), int(fields[19]))] = int(fields[11]) + int(fields[12])
    return snap


def _ticks_with_children(pid: int | str) -> int:
    """utime + stime + cutime + cstime: the process and its children that it has waited for."""
    fields = _stat_fields(pid)
    return sum(int(f) for f in fields[11:15]) if fields else 0


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat.

    Busy is user + nice + system: the time that processes are charged with. Interrupt and softirq
    time (loopback networking does much of its work there) is charged to no process, so it is
    left out of both sides of the comparison.
    """
    values = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already counted in user
    return values[0] + values[1] + values[2], total


class LoadMeter:
    """How busy the machine was during the run, and how much of that was not the bench.

    The CPU time of other processes is bracketed: at least what the other processes still alive
    at the end used (one that came and went is missed), at most the machine's busy time minus what
    the bench's own process tree used (container processes, reparented to init, and kernel work
    done outside any process count as foreign there).
    """

    def __init__(self) -> None:
        self._machine0 = _machine_ticks()
        self._procs0 = _cpu_ticks()
        self._self0 = _ticks_with_children("self")

    def summary(self, ours: Callable[[int], bool]) -> dict[str, float]:
        busy1, total1 = _machine_ticks()
        busy = busy1 - self._machine0[0]
        total = max(1, total1 - self._machine0[1])
        foreign_min = 0
        own = _ticks_with_children("self") - self._self0
        me = os.getpid()
        for (pid, start), ticks in _cpu_ticks().items():
            if pid == me:
                continue
            if ours(pid):
                own += _ticks_with_children(pid) - (self._procs0.get((pid, start), 0))
            else:
                foreign_min += ticks - self._procs0.get((pid, start), 0)
        foreign_max = max(foreign_min, busy - own)
        return {
            "machine_busy_pct": 100.0 * busy / total,
            "foreign_min_cpu_s": foreign_min / CLK_TCK,
            "foreign_max_cpu_s": foreign_max / CLK_TCK,
            "foreign_min_pct": 100.0 * foreign_min / total,
            "foreign_max_pct": 100.0 * foreign_max / total,
        }


def cmdline(pid: int) -> str:
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")
