"""Attack review of issue 13's systemd socket activation (startup/systemd.py,
server.check_exposure): an inherited unix socket every local user may connect to must be refused
without authentication; here a local user makes the check look at another file.

Finding (pinned as a strict xfail raising `Hole` only for the finding itself; fixed since,
so the test passes, and would fail on the old code):
- the check stats the socket's *path* (systemd._unix: os.stat(getsockname())), not the socket:
  when the socket sits in a directory the attacker may write to (world-writable without the
  sticky bit), the attacker renames systemd's 0666 socket (SocketMode='s default) away and puts
  a 0600 socket file of its own at the path; the gateway then sees "mode 600", starts without
  authentication, and the attacker, an ordinary user (nobody), calls the daemon through the
  renamed socket. The directory is not checked at all (compare sshd's StrictModes).

The fix: systemd.swappable checks every directory the path is looked up in, as StrictModes
does; a socket in a directory others may write to counts as open to all, refused without
authentication with the directory named.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon
from support.gateway import ALLOW_ALL_POLICY, REPO, gateway_env
from support.sdnotify import ActivatedGateway, high_fds

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(90)]

NOBODY = 65534

# Run as nobody: replace the socket at argv[1] (renamed to argv[2]) with a 0600 one of its own.
SWAP = """
import os, socket, sys
os.rename(sys.argv[1], sys.argv[2])
decoy = socket.socket(socket.AF_UNIX)
decoy.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o600)
"""

# Run as nobody: GET /containers/json through the unix socket at argv[1].
CALL = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /v1.41/containers/json?all=1 HTTP/1.0\\r\\nHost: docker\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    print(json.dumps({"status": int(head.split()[1]), "body": json.loads(body)}))
except OSError as exc:
    print(json.dumps({"status": None, "error": str(exc)}))
"""


class Hole(AssertionError):
    """The finding itself (it made the review's strict xfail fail as expected)."""


def hole(condition: bool, message: str) -> None:
    if not condition:
        raise Hole(message)


@pytest.fixture
def open_dir() -> Iterator[str]:
    """A directory every user may write to, without the sticky bit."""
    path = tempfile.mkdtemp(prefix="dg-a13-")
    os.chmod(path, 0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["/usr/bin/python3", *args], user=NOBODY, group=NOBODY, extra_groups=[],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def test_socket_swapped_in_a_writable_directory(daemon: PrivateDaemon, open_dir: str) -> None:
    path = os.path.join(open_dir, "dockgate.sock")
    renamed = os.path.join(open_dir, "mine.sock")
    # What systemd does for ListenStream=PATH with the default SocketMode=0666.
    real = socket.socket(socket.AF_UNIX)
    real.bind(path)
    os.chmod(path, 0o666)
    real.listen(64)
    try:
        # Left alone, this 0666 socket is refused without authentication (pinned by
        # test_systemd_activation). The attacker, user nobody, swaps it for a decoy:
        swap = _as_nobody("-c", SWAP, path, renamed)
        assert swap.returncode == 0, swap.stderr.decode()
        assert os.stat(path).st_uid == NOBODY
        fds = high_fds([real])
        gw = ActivatedGateway(
            daemon.host, "--policy", str(ALLOW_ALL_POLICY),
            listen=None, env=gateway_env({"LISTEN_FDS": "1"}), cwd=REPO, fds=fds,
        )  # fmt: skip
        try:
            gw.spawn()
        finally:
            for fd in fds:
                os.close(fd)
        try:
            deadline = time.monotonic() + 20
            while gw.alive() and "listening on" not in gw.stderr_text():
                assert time.monotonic() < deadline, gw.stderr_text()
                time.sleep(0.2)
            while not gw.alive() and "error" not in gw.stderr_text():
                assert time.monotonic() < deadline + 5, gw.stderr_text()  # its last words
                time.sleep(0.1)
            call = _as_nobody("-c", CALL, renamed)
            assert call.returncode == 0, call.stderr.decode()
            answer = json.loads(call.stdout)
            refused = not gw.alive() and f"directory {open_dir} is writable" in gw.stderr_text()
            hole(
                refused or answer["status"] is None,
                f"the gateway started ({gw.stderr_text().strip().splitlines()[:1]}) and user "
                f"nobody got {answer['status']} with {len(answer.get('body') or [])} containers "
                f"through {renamed}",
            )
        finally:
            gw.stop()
    finally:
        real.close()
