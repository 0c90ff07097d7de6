"""systemd.swappable on its own: whether a user other than root and the gateway's own could
replace the file at an inherited unix socket's path (so that the mode read there is not the
socket's), checked as sshd's StrictModes checks a path: every directory it is looked up in,
from `/`, through symbolic links. The attack itself, by effect, is
tests/startup/test_attacks_socket_swap.py; on the old code every case here that expects a reason
got "" (the directories were not looked at).

Runs as root (the suite does): ownership is set with chown, and `uid`/`gid` stand for the
gateway's own user where a case needs another.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator

import pytest

from dockgate.addresses import Address
from dockgate.config import ServeConfig
from dockgate.policy.tecnativa import policy_from_environment
from dockgate.server import StartupError, check_exposure
from dockgate.startup.systemd import Inherited, _take, swappable

pytestmark = pytest.mark.timeout(30)

NOBODY = 65534


@pytest.fixture
def base() -> Iterator[str]:
    """A directory only root may write to (mkdtemp: 0700, root's), under the sticky /tmp."""
    path = tempfile.mkdtemp(prefix="dg-swap-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _dir(parent: str, name: str, mode: int, uid: int = 0, gid: int = 0) -> str:
    path = os.path.join(parent, name)
    os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _file(parent: str, name: str = "d.sock", uid: int = 0) -> str:
    """A unix socket's file at `parent/name` (bound, then closed: the file stays)."""
    path = os.path.join(parent, name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
    os.chown(path, uid, 0)
    return path


def test_a_path_only_root_may_change_is_not_swappable(base: str) -> None:
    assert swappable(_file(_dir(base, "run", 0o755))) == ""


def test_a_directory_everyone_may_write_without_the_sticky_bit(base: str) -> None:
    """The review's case: 0777, no sticky bit: anyone renames the socket away."""
    shared = _dir(base, "shared", 0o777)
    assert swappable(_file(shared)) == (
        f"directory {shared} is writable by every user (mode 777, no sticky bit)"
    )


def test_a_writable_directory_higher_up_the_chain_counts(base: str) -> None:
    """Renaming the parent directory away swaps everything below it."""
    shared = _dir(base, "shared", 0o777)
    private = _dir(shared, "private", 0o700)
    assert f"directory {shared} is writable" in swappable(_file(private))


def test_a_sticky_directory_protects_entries_of_trusted_owners_only(base: str) -> None:
    """With the sticky bit (as /tmp) only an entry's owner may rename it (unlink(2), EPERM)."""
    sticky = _dir(base, "tmp", 0o1777)
    assert swappable(_file(sticky)) == ""
    theirs = _file(sticky, "n.sock", uid=NOBODY)
    assert swappable(theirs) == (
        f"{theirs} belongs to user nobody in the shared directory {sticky}"
    )


def test_a_directory_writable_by_another_group(base: str) -> None:
    """Group-writable by root's group (or the gateway's own) is fine; by another group, its
    members may swap the socket, and the socket file's group cannot vouch for them (it may be
    the decoy's)."""
    assert swappable(_file(_dir(base, "root", 0o775, gid=0))) == ""
    other = _dir(base, "other", 0o775, gid=NOBODY)
    assert "writable by group" in swappable(_file(other))
    assert swappable(os.path.join(other, "d.sock"), gid=NOBODY) == ""


def test_a_directory_of_another_user(base: str) -> None:
    """Its owner may chmod it and rename what is in it."""
    theirs = _dir(base, "home", 0o755, uid=NOBODY)
    path = _file(theirs)
    assert swappable(path) == f"directory {theirs} belongs to user nobody"
    assert swappable(path, uid=NOBODY) == ""  # the gateway's own user


def test_a_socket_file_of_another_user(base: str) -> None:
    """Its owner may chmod it 0666 after the check (or made it a decoy)."""
    path = _file(_dir(base, "run", 0o755), uid=NOBODY)
    assert swappable(path) == f"{path} belongs to user nobody"


def test_symbolic_links_are_followed_and_their_directories_checked(base: str) -> None:
    """A link in a safe directory to a writable one; a link in a writable directory."""
    shared = _dir(base, "shared", 0o777)
    _file(shared)
    safe = _dir(base, "safe", 0o755)
    os.symlink(shared, os.path.join(safe, "link"))
    assert f"directory {shared} is writable" in swappable(os.path.join(safe, "link", "d.sock"))
    os.symlink("../safe", os.path.join(shared, "back"))
    _file(safe)
    assert f"directory {shared} is writable" in swappable(os.path.join(shared, "back", "d.sock"))
    assert swappable(os.path.join(safe, "..", "safe", "d.sock")) == ""


def test_a_symbolic_link_loop_is_an_error(base: str) -> None:
    os.symlink("loop", os.path.join(base, "loop"))
    with pytest.raises(OSError, match="symbolic links"):
        swappable(os.path.join(base, "loop", "d.sock"))


def test_an_inherited_socket_in_a_writable_directory_is_open_to_all(base: str) -> None:
    """Mode 600, yet open to all: the mode was read from a file others may replace."""
    shared = _dir(base, "shared", 0o777)
    path = os.path.join(shared, "d.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        os.chmod(path, 0o600)
        s.listen()
        one = _take(os.dup(s.fileno()), "")
        one.sock.close()
    assert one.detail.startswith("mode 600")
    assert one.open_to_all
    assert f"directory {shared}" in one.swappable


def test_refusal_names_the_directory_and_the_fix(base: str) -> None:
    shared = _dir(base, "shared", 0o777)
    address = Address("unix", path=os.path.join(shared, "d.sock"))
    why = swappable(_file(shared))
    one = Inherited(3, "", address, socket.socket(), open_to_all=True, swappable=why)
    try:
        with pytest.raises(StartupError) as caught:
            check_exposure(ServeConfig(listen=[address]), policy_from_environment({}), [one])
    finally:
        one.sock.close()
    message = str(caught.value)
    assert f"directory {shared} is writable by every user" in message
    assert "RuntimeDirectory=" in message


def test_a_file_that_is_not_a_socket_is_swapped(base: str) -> None:
    """The second attack pass: a symbolic link to /etc/passwd put at the socket's path passed,
    its target being root's in root's directories. The file found must be a socket."""
    run = _dir(base, "run", 0o755)
    os.symlink("/etc/passwd", os.path.join(run, "d.sock"))
    assert "is not a socket" in swappable(os.path.join(run, "d.sock"))


def test_a_directory_with_an_acl_is_swappable(base: str) -> None:
    """The second attack pass: `setfacl -m u:nobody:rwx` on a 0755 directory (its mode then
    reads 0775, group root) let nobody swap the socket while the mode bits looked safe."""
    run = _dir(base, "run", 0o755)
    path = _file(run)
    try:
        os.setxattr(run, "system.posix_acl_access", _acl_user_rwx(NOBODY))
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on this file system: {exc}")
    assert "access control list" in swappable(path)


def _acl_user_rwx(uid: int) -> bytes:
    """The xattr value `setfacl -m u:UID:rwx` writes (linux/posix_acl_xattr.h, version 2):
    USER_OBJ rwx, USER uid rwx, GROUP_OBJ r-x, MASK rwx, OTHER r-x."""
    entries = [(0x01, 7, 0xFFFFFFFF), (0x02, 7, uid), (0x04, 5, 0xFFFFFFFF),
               (0x10, 7, 0xFFFFFFFF), (0x20, 5, 0xFFFFFFFF)]  # fmt: skip
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
