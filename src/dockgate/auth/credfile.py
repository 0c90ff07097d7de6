"""Editing a credential file (htpasswd, tokens) the way a running gateway can read it at any time.

The gateway watches these files (watched.py) and reads them again when their inode, size or
modification time changes, so an edit must never be seen half-written: the new contents go to
a temporary file in the same directory (same file system, so the rename is atomic), which is
flushed to disk and renamed over the old file. The new file keeps the old one's mode and, where
this process may set them, its owner and group (a gateway running as its own user must still
be able to read a file that root edited); a new file is mode 0600.

Missing directories are created mode 0700 (`mkdir -p` with safe modes) when the closest
existing one is writable; otherwise, and for every other failure, one line says which path and
what to do: `CredentialFileError`, never a traceback.

Two edits at once (two `dockgate htpasswd add` in a script) are serialised by an exclusive
`flock` on the directory, so neither loses the other's line; no lock file is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

NEW_FILE_MODE = 0o600
NEW_DIRECTORY_MODE = 0o700


class CredentialFileError(Exception):
    """A file that cannot be read or written; `str()` is one line naming the path and the fix."""


class MissingFile(CredentialFileError):
    """An edit that needs an existing file (a removal) found none."""


@dataclass(slots=True)
class Written:
    """What `edit_file` did, for the command's report."""

    path: Path
    created_directories: list[Path] = field(default_factory=list)
    created: bool = False
    warnings: list[str] = field(default_factory=list)


def _fix(problem: OSError) -> str:
    """What the operator can do about `problem` (one clause)."""
    if problem.errno == errno.EROFS:
        return "the file system is read-only: give --file a path on a writable one"
    if problem.errno in (errno.EACCES, errno.EPERM):
        return (
            "run this as a user who may write there (e.g. as root with sudo), "
            "or give --file a path you can write"
        )
    return "give --file another path"


def _describe(problem: OSError) -> str:
    return problem.strerror or type(problem).__name__


def ensure_directory(directory: Path) -> list[Path]:
    """Create `directory` and its missing parents, each mode 0700; the ones created."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if os.path.lexists(current) and not current.is_dir():
        raise CredentialFileError(
            f"{current} is not a directory: give --file a path inside a directory"
        )
    created: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir(mode=NEW_DIRECTORY_MODE)
        except FileExistsError:  # made meanwhile by someone else: fine if it is a directory
            if not path.is_dir():
                raise CredentialFileError(
                    f"{path} is not a directory: give --file a path inside a directory"
                ) from None
            continue
        except OSError as exc:
            raise CredentialFileError(
                f"cannot create the directory {path}: {_describe(exc)}; {_fix(exc)}"
            ) from None
        os.chmod(path, NEW_DIRECTORY_MODE)  # mkdir's mode passes through the umask
        created.append(path)
    return created


def read_existing(path: Path) -> str | None:
    """The UTF-8 text of `path`, or None when there is no such file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a directory, a FIFO (would block), ...
            raise CredentialFileError(f"{path} is not a regular file: give --file a file's path")
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialFileError(f"{path}: cannot read: {_describe(exc)}; {_fix(exc)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialFileError(
            f"{path}: not UTF-8 text (the gateway could not read it either): fix or move it"
        ) from None


def edit_file(
    path: str | Path, edit: Callable[[str | None], str], *, create: bool = True
) -> Written:
    """Replace `path` with `edit(old text or None)`, atomically; `edit` may raise to write
    nothing. Without `create`, a missing file is MissingFile and nothing is created. A symbolic
    link is followed: the file it names is replaced, the link stays."""
    given = Path(path)
    # realpath resolves the links of the parts that exist; a missing tail stays as given.
    target = Path(os.path.realpath(given))
    written = Written(given)
    if not create and not os.path.lexists(target):
        raise MissingFile(f"{given}: no such file")
    written.created_directories = ensure_directory(target.parent)
    try:
        directory_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise CredentialFileError(
            f"cannot open the directory {target.parent}: {_describe(exc)}; {_fix(exc)}"
        ) from None
    try:
        fcntl.flock(directory_fd, fcntl.LOCK_EX)
        old = read_existing(target)
        if old is None and not create:
            raise MissingFile(f"{given}: no such file")
        before = os.stat(target) if old is not None else None
        new = edit(old)
        written.created = before is None
        _replace(target, new.encode("utf-8"), before, written)
        os.fsync(directory_fd)  # the rename itself survives a crash
    finally:
        os.close(directory_fd)  # and with it the lock
    return written


def _replace(target: Path, data: bytes, before: os.stat_result | None, written: Written) -> None:
    try:
        fd, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise CredentialFileError(
            f"cannot write in {target.parent}: {_describe(exc)}; {_fix(exc)}"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(fd, stat.S_IMODE(before.st_mode) if before else NEW_FILE_MODE)
            if before is not None and (before.st_uid, before.st_gid) != (
                os.geteuid(),
                os.getegid(),
            ):
                try:
                    os.fchown(fd, before.st_uid, before.st_gid)
                except PermissionError:
                    written.warnings.append(
                        f"{target} now belongs to uid {os.geteuid()} (it was uid "
                        f"{before.st_uid}, gid {before.st_gid}): check that the gateway can "
                        "still read it"
                    )
            os.fsync(fd)
        os.rename(temporary, target)
    except OSError as exc:
        _unlink_quietly(temporary)
        raise CredentialFileError(f"cannot write {target}: {_describe(exc)}; {_fix(exc)}") from None
    except BaseException:
        _unlink_quietly(temporary)
        raise


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
