"""Writing a credentials file (`dockgate token create`): missing directories are created
with mode 700 and the file with mode 600, and a failure is one line saying what to do,
never a traceback."""

from __future__ import annotations

import os
from pathlib import Path


class PrivateFileError(Exception):
    """A credentials file that cannot be written; the message says what to do."""


def append_private_line(path: Path, line: str) -> None:
    """Append `line` to `path`, creating it (mode 600) and its directories (mode 700)."""
    parent = path.parent
    if not parent.is_dir():
        try:
            # Each directory made here is 700: whoever may list it may learn token names.
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise PrivateFileError(
                f"{path}: cannot create the directory {parent}: {exc.strerror or exc}; create "
                f"it first (sudo install -d -m 700 {parent}) or give a --file you can write"
            ) from None
    try:
        # Created 600 from the start (no moment where another user could open it).
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PrivateFileError(
            f"{path}: cannot write: {exc.strerror or exc}; run as a user who may write it "
            "(often root, with sudo) or give a --file you can write"
        ) from None
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    os.chmod(path, 0o600)
