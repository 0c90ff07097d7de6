"""Attack reviews of issue 13's systemd socket activation (startup/systemd.py,
server.check_exposure): an inherited unix socket every local user may connect to must be refused
without authentication; here a local user (nobody) makes the check look at another file.

Findings (pinned as strict xfails raising `Hole` only for the finding itself; fixed since, so
the tests pass, and would fail on the old code):
- the check stats the socket's *path* (systemd._unix: os.stat(getsockname())), not the socket:
  when the socket sits in a directory the attacker may write to (world-writable without the
  sticky bit), the attacker renames systemd's 0666 socket (SocketMode='s default) away and puts
  a 0600 socket file of its own at the path; the gateway then sees "mode 600", starts without
  authentication, and the attacker, an ordinary user (nobody), calls the daemon through the
  renamed socket. The directory is not checked at all (compare sshd's StrictModes). The fix:
  systemd.swappable checks every directory the path is looked up in, as StrictModes does; a
  socket in a directory others may write to counts as open to all, refused without
  authentication with the directory named.
- (second pass) systemd.swappable read mode bits only: a directory a POSIX ACL opens to another
  user passed, and that user swapped the inherited 0666 socket for a link to a root file (the
  final file need not be a socket): the gateway served the real socket without authentication.
  The fix: a directory with an ACL is not trusted, and the file found must be a socket.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon
from support.gateway import ALLOW_ALL_POLICY, Gateway
from support.sdnotify import activated

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


def _systemd_socket(path: str) -> socket.socket:
    """What systemd does for ListenStream=PATH with the default SocketMode=0666."""
    real = socket.socket(socket.AF_UNIX)
    real.bind(path)
    os.chmod(path, 0o666)
    real.listen(64)
    return real


def _wait_started(gw: Gateway, seconds: float = 20) -> None:
    """Until the gateway listens, or has exited (refusing the socket)."""
    deadline = time.monotonic() + seconds
    while gw.alive() and "listening on" not in gw.stderr_text():
        assert time.monotonic() < deadline, gw.stderr_text()
        time.sleep(0.2)


def test_socket_swapped_in_a_writable_directory(daemon: PrivateDaemon, open_dir: str) -> None:
    path = os.path.join(open_dir, "dockgate.sock")
    renamed = os.path.join(open_dir, "mine.sock")
    real = _systemd_socket(path)
    try:
        # Left alone, this 0666 socket is refused without authentication (pinned by
        # test_systemd_activation). The attacker, user nobody, swaps it for a decoy:
        swap = _as_nobody("-c", SWAP, path, renamed)
        assert swap.returncode == 0, swap.stderr.decode()
        assert os.stat(path).st_uid == NOBODY
        gw = activated(daemon, [real], None, "--policy", str(ALLOW_ALL_POLICY))
        try:
            _wait_started(gw)
            deadline = time.monotonic() + 5
            while not gw.alive() and "error" not in gw.stderr_text():
                assert time.monotonic() < deadline, gw.stderr_text()  # its last words
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


# ----- second pass: a directory a POSIX ACL opens ----------------------------------------------

# Run as nobody: move the socket at argv[1] to argv[2], and put at argv[1] a symbolic link to a
# file root owns that nobody may not write (its mode is what the check then reads).
SWAP_FOR_LINK = """
import os, sys
os.rename(sys.argv[1], sys.argv[2])
os.symlink("/etc/passwd", sys.argv[1])
"""


def _acl_entry(tag: int, perm: int, qualifier: int = 0xFFFFFFFF) -> bytes:
    return struct.pack("<HHI", tag, perm, qualifier)


@pytest.fixture
def acl_dir() -> Iterator[str]:
    """A root directory, mode 0755, whose POSIX ACL lets user nobody write (what `setfacl -m
    u:nobody:rwx DIR` does; written here as the kernel's xattr, linux/posix_acl_xattr.h). The
    mode then shows 0775: the ACL mask in the group bits, the group root's."""
    path = tempfile.mkdtemp(prefix="dg-a13c-")
    os.chmod(path, 0o755)
    acl = struct.pack("<I", 2) + b"".join(
        (
            _acl_entry(0x01, 7),  # ACL_USER_OBJ rwx
            _acl_entry(0x02, 7, NOBODY),  # ACL_USER nobody rwx
            _acl_entry(0x04, 5),  # ACL_GROUP_OBJ r-x
            _acl_entry(0x10, 7),  # ACL_MASK rwx
            _acl_entry(0x20, 5),  # ACL_OTHER r-x
        )
    )
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as exc:
        shutil.rmtree(path, ignore_errors=True)
        pytest.skip(f"no POSIX ACLs here: {exc}")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_socket_swapped_in_a_directory_an_acl_opens(daemon: PrivateDaemon, acl_dir: str) -> None:
    """The socket-activation check (systemd._unix) trusts the path's directories by their mode
    bits (StrictModes-like). A POSIX ACL entry (`setfacl -m u:nobody:rwx /run/dockgate`, as an
    operator gives one service account access) lets user nobody rename entries in a
    directory that shows 0775, owner and group root: not flagged. Nobody moves systemd's
    0666 socket (SocketMode='s default) away and puts at its path a symbolic link to
    /etc/passwd (root's, 0644, in root's directories: the chain check follows the link and
    is content; the final file is not required to be a socket). The gateway reads "mode 644",
    starts without authentication, and user nobody calls the daemon through the moved socket.
    Not vacuous: the same socket left in place is refused (pinned by the systemd tests)."""
    path = os.path.join(acl_dir, "dockgate.sock")
    moved = os.path.join(acl_dir, "mine.sock")
    real = _systemd_socket(path)
    try:
        swap = _as_nobody("-c", SWAP_FOR_LINK, path, moved)
        assert swap.returncode == 0, swap.stderr.decode()
        gw = activated(daemon, [real], None, "--policy", str(ALLOW_ALL_POLICY))
        try:
            _wait_started(gw)
            call = _as_nobody("-c", CALL, moved)
            assert call.returncode == 0, call.stderr.decode()
            answer = json.loads(call.stdout)
            assert answer["status"] != 200, (
                f"user nobody got {answer['status']} with {len(answer.get('body') or [])} "
                f"containers through {moved}: {gw.stderr_text().strip().splitlines()[:2]}"
            )
        finally:
            gw.stop()
    finally:
        real.close()
