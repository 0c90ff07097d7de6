"""A stand-in for systemd's end of sd_notify(3) and of socket activation, for the tests.

``NotifyListener`` is the datagram socket a service's NOTIFY_SOCKET names (a path, or
``@abstract``); the tests read what the gateway says on it. ``activated_command`` wraps a command
the way systemd starts a socket-activated service: the listening sockets as fds 3, 4, ...,
LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID set to the service's own pid (known only once it
runs, hence a shell that sets it to ``$$`` and execs the service in place); ``activated`` starts
a gateway that way on the private daemon.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid

from support.daemon import PrivateDaemon
from support.gateway import REPO, Gateway, gateway_env


class NotifyListener:
    """The receiving end of NOTIFY_SOCKET: a unix datagram socket bound at ``path`` (or an
    abstract name when ``abstract``). ``messages`` keeps everything received, each as a dict of
    its ``KEY=value`` lines."""

    def __init__(self, directory: str, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"dockgate-test-{uuid.uuid4().hex[:12]}"
            self.sock.bind("\0" + name)
            self.target = "@" + name
        else:
            path = os.path.join(directory, f"notify-{uuid.uuid4().hex[:8]}.sock")
            self.sock.bind(path)
            self.target = path
        self.messages: list[dict[str, str]] = []

    def close(self) -> None:
        self.sock.close()
        if not self.target.startswith("@"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.target)

    def receive(self, timeout: float) -> dict[str, str] | None:
        """The next datagram (parsed), or None after ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        fields = dict(line.partition("=")[::2] for line in data.decode().split("\n") if line)
        self.messages.append(fields)
        return fields

    def wait_for(self, key: str, timeout: float = 15.0) -> dict[str, str]:
        """The next datagram carrying ``key`` (earlier ones are kept in ``messages``)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and key in message:
                return message
        raise AssertionError(f"no {key} from the gateway in {timeout}s; got {self.messages}")

    def keys(self) -> list[str]:
        """The state keys received so far, in order (READY, RELOADING, STOPPING)."""
        return [k for m in self.messages for k in m if k in ("READY", "RELOADING", "STOPPING")]


# The shell sets LISTEN_PID to its own pid, then becomes the service (exec keeps the pid), with
# the sockets moved from wherever they are in the test to 3, 4, ... as systemd places them.
# bash, not sh: dash takes no descriptor above 9 in a redirection.
def activated_command(command: list[str], fds: list[int], listen_pid: str = "$$") -> list[str]:
    """``command`` run with ``fds`` as the service's fds 3, 4, ... (give them to Popen as
    ``pass_fds``; none may already be 3 or above 3 + len(fds), see ``high_fds``), LISTEN_PID
    its own pid (or ``listen_pid``, to play a variable inherited from another process)."""
    moves = " ".join(f"{3 + i}<&{fd} {fd}<&-" for i, fd in enumerate(fds))
    return ["bash", "-c", f'export LISTEN_PID={listen_pid}; exec "$@" {moves}', "sh", *command]


def high_fds(socks: list[socket.socket]) -> list[int]:
    """Copies of the sockets' fds above the ones they move to (the caller closes them)."""
    return [os.dup2(s.fileno(), 100 + i, inheritable=True) for i, s in enumerate(socks)]


class ActivatedGateway(Gateway):
    """A ``dockgate serve`` started as systemd starts a socket-activated service."""

    def __init__(
        self, *args: object, fds: list[int], listen_pid: str = "$$", **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fds = fds
        self.pass_fds = tuple(fds)
        self.command = activated_command(self.command, fds, listen_pid)


def activated(
    daemon: PrivateDaemon,
    socks: list[socket.socket],
    notify: NotifyListener | None,
    *args: str,
    names: str | None = None,
    listen_pid: str = "$$",
) -> ActivatedGateway:
    """A gateway started with ``socks`` as fds 3, ... (the test keeps its own copies, as
    systemd does)."""
    fds = high_fds(socks)
    env = {"LISTEN_FDS": str(len(socks))}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.target
    gw = ActivatedGateway(
        daemon.host,
        *args,
        listen=None,
        env=gateway_env(env),
        cwd=REPO,
        fds=fds,
        listen_pid=listen_pid,
    )
    try:
        gw.spawn()
    finally:
        for fd in fds:
            os.close(fd)
    return gw
