"""systemd integration without libsystemd: socket activation (LISTEN_FDS) and readiness
(sd_notify's NOTIFY_SOCKET). Both protocols are a few environment variables and, for readiness,
one datagram per state change; the references are systemd's src/libsystemd/sd-daemon/
sd-daemon.c (sd_listen_fds_with_names, sd_pid_notify) and the man pages sd_listen_fds(3),
sd_notify(3).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from dockgate.addresses import Address
from dockgate.startup.accounts import group_name, user_name

# sd-daemon.h: SD_LISTEN_FDS_START, the first inherited descriptor.
LISTEN_FDS_START = 3
ACTIVATION_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# The mode bit a unix socket needs for connect(2) by "others": with it, every local user may
# talk to the daemon through the gateway (systemd's own default SocketMode= is 0666).
_OTHERS_WRITE = stat.S_IWOTH


class ActivationError(Exception):
    """The sockets systemd passed cannot be used; the message names the unit setting to fix."""


@dataclass(frozen=True, slots=True)
class Inherited:
    """One listening socket passed by systemd, as read from the socket itself."""

    fd: int
    name: str  # its LISTEN_FDNAMES entry (FileDescriptorName=, default the .socket unit's name)
    address: Address
    sock: socket.socket
    # A unix socket every local user may connect to: an abstract one (no file, so no
    # permission check at all) or a file socket writable by others. The exposure rule treats it
    # like a non-loopback TCP listener.
    open_to_all: bool = False
    detail: str = ""  # "mode 660, group docker" for a file socket: what systemd made of it
    # Why another user could put another file at its path (swappable()); empty: none can.
    swappable: str = ""

    def describe(self) -> str:
        parts = [f"fd {self.fd}"]
        if self.name:
            parts.append(f"name {self.name!r}")
        if self.detail:
            parts.append(self.detail)
        return f"{self.address} (from systemd: {', '.join(parts)})"


def inherited_sockets(environ: MutableMapping[str, str], pid: int | None = None) -> list[Inherited]:
    """The listening sockets systemd passed to this process, checked; [] without any.

    As sd_listen_fds(unset_environment=1): the variables are removed whatever they say, so that
    no child reads them again, and they count only when LISTEN_PID is this process (a variable
    inherited by a process systemd did not start names another pid).
    """
    listen_pid, listen_fds, names_text = (environ.pop(name, None) for name in ACTIVATION_VARIABLES)
    if listen_pid is None or listen_fds is None:
        return []
    own = os.getpid() if pid is None else pid
    if not listen_pid.strip().isdigit():
        raise ActivationError(f"LISTEN_PID={listen_pid!r} is not a process id")
    if int(listen_pid) != own:
        return []  # meant for another process (sd_listen_fds returns 0)
    if not listen_fds.strip().isdigit():
        raise ActivationError(f"LISTEN_FDS={listen_fds!r} is not a number of descriptors")
    count = int(listen_fds)
    names = [""] * count
    if names_text is not None:
        # sd_listen_fds_with_names: one name per descriptor, ':'-separated, else -EINVAL.
        names = names_text.split(":")
        if len(names) != count:
            raise ActivationError(
                f"LISTEN_FDNAMES={names_text!r} names {len(names)} descriptors, LISTEN_FDS={count}"
            )
    found: list[Inherited] = []
    try:
        for index in range(count):
            found.append(_take(LISTEN_FDS_START + index, names[index]))
    except BaseException:
        for inherited in found:
            inherited.sock.detach()  # systemd's: left open for the next start, not closed
        raise
    return found


def _take(fd: int, name: str) -> Inherited:
    """The socket at `fd`, if it is one dockgate can serve on: SOCK_STREAM, listening, TCP or
    unix. Close-on-exec is set, as sd_listen_fds does (fd_cloexec)."""
    label = f"fd {fd}" + (f" ({name})" if name else "")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(
            f"LISTEN_FDS: {label} is not a socket ({exc.strerror or exc}): systemd passes "
            "the sockets of the .socket unit from fd 3 on"
        ) from None
    try:
        return _check(fd, name, label, sock)
    except BaseException:
        sock.detach()
        raise


def _check(fd: int, name: str, label: str, sock: socket.socket) -> Inherited:
    if sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        raise ActivationError(
            f"LISTEN_FDS: {label} is a {sock.family.name} socket: dockgate serves on TCP "
            "(ListenStream=HOST:PORT) or unix stream sockets (ListenStream=/path)"
        )
    if sock.type != socket.SOCK_STREAM:
        kind = {socket.SOCK_DGRAM: "datagram", socket.SOCK_SEQPACKET: "seqpacket"}.get(
            sock.type, str(sock.type)
        )
        raise ActivationError(
            f"LISTEN_FDS: {label} is a {kind} socket: dockgate needs stream sockets "
            "(ListenStream= in the .socket unit, not ListenDatagram=/ListenSequentialPacket=)"
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ActivationError(
            f"LISTEN_FDS: {label} is not a listening socket (a connection, as Accept=yes "
            "passes one per instance): set Accept=no in the .socket unit"
        )
    os.set_inheritable(fd, False)
    sock.setblocking(False)
    bound = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return _unix(fd, name, label, sock, bound)
    host, port = str(bound[0]), int(bound[1])
    return Inherited(fd, name, Address("tcp", host=host, port=port), sock)


def _unix(fd: int, name: str, label: str, sock: socket.socket, bound: object) -> Inherited:
    if isinstance(bound, bytes) and bound.startswith(b"\0"):
        # An abstract socket (ListenStream=@name): no file, no permission check on connect.
        text = bound[1:].decode(errors="backslashreplace")
        return Inherited(fd, name, Address("unix", path="@" + text), sock, open_to_all=True)
    path = os.fsdecode(bound) if isinstance(bound, (bytes, str)) else ""
    if not path:
        raise ActivationError(f"LISTEN_FDS: {label} is a unix socket bound to no path")
    address = Address("unix", path=path)
    try:
        # The path, not the socket (a unix socket's fstat is its sockfs inode, not the file):
        # so the mode read is this socket's only if nobody else may have replaced the file.
        why = swappable(path)
        info = os.stat(path)
    except OSError as exc:
        raise ActivationError(f"LISTEN_FDS: {label} {address}: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(info.st_mode)
    detail = f"mode {mode:o}, group {group_name(info.st_gid)}"
    open_to_all = bool(mode & _OTHERS_WRITE) or bool(why)
    return Inherited(fd, name, address, sock, open_to_all, detail, why)


# Symbolic links followed before giving up (the kernel's own limit, fs/namei.c MAXSYMLINKS).
_MAX_LINKS = 40


def swappable(path: str, uid: int | None = None, gid: int | None = None) -> str:
    """Why a user other than root and this process's could rename the file at `path` away and
    put another in its place (a 0600 decoy, so that a 0666 socket looks private), or "".

    As sshd's StrictModes (auth.c secure_path), every directory the path is looked up in, from
    `/` on and through symbolic links, is checked: it must belong to root or this process's
    user, and not be writable by others nor by a group other than root's or this process's,
    unless it has the sticky bit (then only an entry's owner may rename it: the entry looked
    up must belong to root or this process's user, as must the socket file itself). Not the
    socket file's group: the file is the one that could be a decoy, so it cannot vouch for the
    directory it is in."""
    trusted_users = {0, os.geteuid() if uid is None else uid}
    trusted_groups = {0, os.getegid() if gid is None else gid}
    directory = "/"
    remaining = [part for part in path.split("/") if part]
    links = 0
    while remaining:
        part = remaining.pop(0)
        if part == ".":
            continue
        if part == "..":
            directory = os.path.dirname(directory)  # `directory` holds no link: lexical is right
            continue
        entry = os.path.join(directory, part)
        held = os.stat(directory)
        info = os.lstat(entry)
        mode = stat.S_IMODE(held.st_mode)
        sticky = bool(mode & stat.S_ISVTX)
        if held.st_uid not in trusted_users:
            return f"directory {directory} belongs to user {user_name(held.st_uid)}"
        if _has_acl(directory):
            # An ACL entry (`setfacl -m u:nobody:rwx`) lets a user write where the mode bits,
            # which show only its mask as the group's, say nobody may.
            return f"directory {directory} has an access control list (only mode bits are read)"
        if mode & stat.S_IWOTH and not sticky:
            return f"directory {directory} is writable by every user (mode {mode:o}, no sticky bit)"
        if mode & stat.S_IWGRP and not sticky and held.st_gid not in trusted_groups:
            return (
                f"directory {directory} is writable by group {group_name(held.st_gid)} "
                f"(mode {mode:o}, no sticky bit)"
            )
        if sticky and mode & (stat.S_IWOTH | stat.S_IWGRP) and info.st_uid not in trusted_users:
            owner = user_name(info.st_uid)
            return f"{entry} belongs to user {owner} in the shared directory {directory}"
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(f"more than {_MAX_LINKS} symbolic links")
            target = os.readlink(entry)
            if target.startswith("/"):
                directory = "/"
            remaining = [p for p in target.split("/") if p] + remaining
            continue
        if not remaining and info.st_uid not in trusted_users:
            return f"{entry} belongs to user {user_name(info.st_uid)}"  # who may chmod it
        if not remaining and not stat.S_ISSOCK(info.st_mode):
            return f"{entry} is not a socket (the one systemd passed is no longer at its path)"
        directory = entry
    return ""


def _has_acl(directory: str) -> bool:
    """Whether `directory` carries a POSIX access ACL (an extended attribute of that name; a
    file system without them answers ENOTSUP)."""
    try:
        return "system.posix_acl_access" in os.listxattr(directory)
    except OSError:
        return False


def check_listen_option(inherited: Sequence[Inherited], listen: Sequence[Address]) -> None:
    """With socket activation the listeners are systemd's. A --listen given as well may only
    name them again (one of them, or all): an address systemd did not pass is an error, not a
    socket dockgate binds next to them (it would be gone while the service restarts, the very
    gap socket activation closes)."""
    for address in listen:
        if not any(_same(address, one.address) for one in inherited):
            passed = ", ".join(str(one.address) for one in inherited)
            raise ActivationError(
                f"--listen {address}: systemd passed the listening sockets ({passed}) and this "
                "is none of them: add it to the .socket unit (ListenStream=) or drop --listen "
                "(DOCKGATE_LISTEN), which socket activation does not need"
            )


def _same(given: Address, inherited: Address) -> bool:
    if given.scheme != inherited.scheme:
        return False
    if given.scheme == "unix":
        return os.path.realpath(given.path) == os.path.realpath(inherited.path)
    if given.port != inherited.port:
        return False
    try:
        infos = socket.getaddrinfo(given.host, given.port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return any(str(info[4][0]) == inherited.host for info in infos)


# ----- readiness --------------------------------------------------------------------------------


class Notifier:
    """sd_notify(3): state changes sent as datagrams to $NOTIFY_SOCKET. A failed send is said
    once on stderr and never stops the gateway (systemd then times the start out, which is
    the right outcome for a manager that cannot be told)."""

    def __init__(self, target: str) -> None:
        self.target = target
        # sd_pid_notify: '@' starts an abstract address (a leading NUL on the wire).
        self._address: str | bytes = (
            b"\0" + target[1:].encode() if target.startswith("@") else target
        )
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Notifier | None:
        """The notifier NOTIFY_SOCKET names, or None. The variable is removed, so that the
        workers (children the manager would not accept messages from, NotifyAccess=main) and
        anything they run never use it."""
        target = environ.pop("NOTIFY_SOCKET", "")
        if not target:
            return None
        if not (target.startswith("/") or target.startswith("@")):
            # systemd 254 added vsock:CID:PORT; a manager that uses it is not served here.
            print(
                f"dockgate: warning: NOTIFY_SOCKET={target!r}: only a path or @abstract "
                "socket is supported; no readiness notifications",
                file=sys.stderr,
                flush=True,
            )
            return None
        return cls(target)

    def send(self, *fields: str) -> bool:
        """One datagram of `KEY=value` lines; False (said once) when it could not be sent."""
        message = "\n".join(field.replace("\n", " ") for field in fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                print(
                    f"dockgate: warning: NOTIFY_SOCKET={self.target}: cannot notify systemd "
                    f"({exc.strerror or exc}); serving on",
                    file=sys.stderr,
                    flush=True,
                )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # systemd 253 wants MONOTONIC_USEC with RELOADING=1 (sd_notify(3), Type=notify-reload):
        # the time the reload began, so it can tell this reload's READY=1 from an older one.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
