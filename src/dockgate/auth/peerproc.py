"""The process at the other end of a unix-socket connection, read from /proc with its PID.

The kernel records the peer's pid, uid and gid at connect() (SO_PEERCRED, unix(7)); the client
cannot choose them. The uid is read for every unix-socket client (`peer_cred`): the failure
throttle counts each local user apart (auth/throttle.py), since every unix-socket client has
the source "unix" and 20 wrong passwords from any local user throttled every local client
(issue 12, item 3). The uid and gid stay right for the connection's life; the pid does not:
the peer may exit, and its PID be given to another process, before dockgate reads
/proc/PID. What /proc says is therefore only taken when it is the peer's:

- where the kernel gives it (Linux 6.5 and later, SO_PEERPIDFD), a pidfd of the peer itself:
  it names that process and no other, so a /proc read followed by a check that the pidfd's
  process is still alive was a read of the peer (`PidfdCheck`);
- always, the process's start time (/proc/PID/stat field 22, clock ticks since boot) read
  before and after its cgroup file: a process that started after the connection was accepted
  cannot have made it (its PID was reused), and a start time that changed between the two
  reads is another process. Without a pidfd, a PID reused between connect() and accept()
  (microseconds on a gateway that keeps up; the kernel has to cycle through pid_max in between)
  is not seen: said in THREAT_MODEL.md.

The main process of a container the peer's cgroup names is read here too (`main_process`,
`same_process`): its cgroups are the container's, which the peer must be in or below.

A peer that cannot be read this way is `Unidentified`, with the reason the caller is told: it
is neither in a container nor a host process, and is refused rather than guessed at
(relay/connection.py).

Pure apart from the file reads, under a `proc` root the tests replace with a fake one.
"""

from __future__ import annotations

import asyncio
import errno
import os
import platform
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockgate.auth.cgroup import Cgroups, cgroup_paths, container_ids
from dockgate.caching import Recent

PROC = Path("/proc")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# SO_PEERPIDFD (include/uapi/asm-generic/socket.h, Linux 6.5); Python 3.11 has no name for it.
# Only where the asm-generic numbering holds (alpha, mips, parisc, powerpc, sparc differ).
_SO_PEERPIDFD = (
    77 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64") else None
)
# (pid, start time) -> the container IDs of its cgroup: a process's cgroup is set when it
# starts (moved only by root writing cgroup.procs), and the pair names one process.
PROCESSES_CACHED = 4096


@dataclass(frozen=True, slots=True)
class PeerCred:
    """What the kernel recorded of the peer at connect()."""

    pid: int  # 0: the peer is in a PID namespace this one cannot see
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class PeerProcess:
    """The peer, read from /proc and checked to be the one that connected."""

    cred: PeerCred
    started: int  # clock ticks since boot
    containers: tuple[str, ...]  # the IDs its cgroups name, outermost first; () on the host
    # Its cgroup in each hierarchy: it is container ID only when these are that container's
    # main process's, or below (auth/cgroup.py `within`, auth/peerlookup.py).
    cgroups: Cgroups = ()


@dataclass(frozen=True, slots=True)
class Unidentified:
    """The peer could not be read as the process that connected; `reason` says why."""

    reason: str


class PidfdCheck:
    """A pidfd of the peer (SO_PEERPIDFD): whether that very process is still alive."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def alive(self) -> bool:
        if self._fd < 0:
            return False  # the kernel said the peer is gone when asked for its pidfd
        try:
            signal.pidfd_send_signal(self._fd, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists; dockgate may not signal it (another user's)
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def peer_cred(
    transport: asyncio.BaseTransport, *, pidfd: bool = False
) -> tuple[PeerCred, PidfdCheck | None] | None:
    """The peer's credentials (and, asked for, a pidfd of it where the kernel gives one: the
    caller closes it), or None where the platform or transport cannot tell."""
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
    except OSError:
        return None
    pid, uid, gid = _UCRED.unpack(raw)
    check = None
    if pidfd and _SO_PEERPIDFD is not None and pid > 0:
        try:
            fd = struct.unpack("i", sock.getsockopt(socket.SOL_SOCKET, _SO_PEERPIDFD, 4))[0]
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                # Kernels before pidfds of reaped processes: the peer has exited.
                check = PidfdCheck(-1)
            # else an older kernel (ENOPROTOOPT): the start time checks alone
        else:
            check = PidfdCheck(fd)
    return PeerCred(int(pid), int(uid), int(gid)), check


def boot_ticks() -> int:
    """Now, in the clock /proc/PID/stat's start times are in: ticks since boot."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) * CLOCK_TICKS_PER_SECOND // 1_000_000_000


def start_time(stat_text: str) -> int:
    """Field 22 of /proc/PID/stat, `starttime` (proc(5)). The command name (field 2) is in
    parentheses and may hold spaces and parentheses itself: fields are counted after the
    last `)`."""
    rest = stat_text.rpartition(")")[2].split()
    # rest[0] is field 3 (state): field 22 is rest[19]
    return int(rest[19])


class PeerProcesses:
    """Reads peers from /proc, with the (pid, start time) -> containers memo."""

    def __init__(
        self,
        proc: Path = PROC,
        size: int = PROCESSES_CACHED,
        read_text: Callable[[Path], str] = Path.read_text,
    ) -> None:
        self._proc = proc
        self._read_text = read_text  # (tests: a /proc whose files change between reads)
        self._known: Recent[tuple[int, int], tuple[tuple[str, ...], Cgroups]] = Recent(size)

    def read(
        self, cred: PeerCred, accepted: int, pidfd: PidfdCheck | None = None
    ) -> PeerProcess | Unidentified:
        """The peer of a connection accepted at `accepted` (boot ticks), or why it is not
        known. Reads stat, the cgroup file, stat again, then (with a pidfd) checks that the
        peer still lives."""
        pid = cred.pid
        if pid <= 0:
            return Unidentified(
                "the calling process is in a PID namespace dockgate cannot see (run dockgate "
                "in the host's PID namespace: docker run --pid host, compose pid: host)"
            )
        where = self._proc / str(pid)
        gone = Unidentified(
            f"the calling process (pid {pid}) exited before dockgate could identify it"
        )
        reused = Unidentified(
            f"pid {pid} belongs to a process started after the connection was made: the "
            "caller exited and its PID was reused; connect again"
        )
        read_text = self._read_text
        try:
            started = start_time(read_text(where / "stat"))
            if started > accepted:
                return reused
            known = self._known.get((pid, started))
            if known is None:
                text = read_text(where / "cgroup")
                known = (container_ids(text), cgroup_paths(text))
                if start_time(read_text(where / "stat")) != started:
                    return reused
                self._known.put((pid, started), known)
        except (OSError, ValueError, IndexError):
            # FileNotFoundError/ProcessLookupError: gone; a stat that does not parse: not the
            # kernel's (no guess either way)
            return gone
        if pidfd is not None and not pidfd.alive():
            return gone
        return PeerProcess(cred, started, known[0], known[1])

    def main_process(self, pid: int, container_id: str) -> tuple[int, Cgroups] | None:
        """The start time and cgroups of the process `pid` the daemon says is container
        `container_id`'s main one (`State.Pid`), or None when it is not (any more): gone,
        replaced while read, or its cgroup not naming the container. Whether it is still the
        main process once the daemon has been asked again is `same_process`'s to say
        (auth/peerlookup.py: a PID reused since the main process exited is not it)."""
        if pid <= 0:
            return None
        where = self._proc / str(pid)
        read_text = self._read_text
        try:
            started = start_time(read_text(where / "stat"))
            text = read_text(where / "cgroup")
            if start_time(read_text(where / "stat")) != started:
                return None
        except (OSError, ValueError, IndexError):
            return None
        if container_id not in container_ids(text):
            return None
        return started, cgroup_paths(text)

    def same_process(self, pid: int, started: int) -> bool:
        """Whether `pid` is still the process that started at `started` (a PID and a start
        time name one process)."""
        try:
            return start_time(self._read_text(self._proc / str(pid) / "stat")) == started
        except (OSError, ValueError, IndexError):
            return False
