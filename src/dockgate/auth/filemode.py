"""Whether a credential file (--htpasswd, --tokens) can be read or written by users it should
not be: one warning line, the same in `htpasswd add`/`token create` (auth/credtools.py), at `serve`
start-up (server.py) and in `dockgate doctor`'s credentials check (startup/doctorprobe.py).

A warning, never a change: dockgate does not chmod a file it did not create. An htpasswd file
made by Apache's `htpasswd -c` is 0666 & ~umask, 0644 as a rule, and nginx reads it as its
worker user; a migration that tightened it silently would break the server it came from. Group
read alone (0640, the group of the service that must read it) is the documented way to share
the file, so it is not warned about; read by everyone, or write by group or everyone (whoever
can write it can add a user), is.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

# What a reader of each file learns: bcrypt (or weaker) hashes are cracked offline, one
# password at a time; a tokens file holds SHA-256 digests of random tokens (not reversible)
# but names who may call the gateway under which identity.
_WHAT = {
    "htpasswd": "its password hashes can be cracked offline",
    "tokens": "its token names and identities are exposed",
}


def mode_warning(path: str | os.PathLike[str], kind: str) -> str | None:
    """The warning for `path` (`kind` "htpasswd" or "tokens"), or None when its mode is fine or
    it cannot be stat'ed (loading the file reports that)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    mode = stat.S_IMODE(status.st_mode)
    problems = []
    if mode & stat.S_IROTH:
        problems.append(f"readable by every local user ({_WHAT[kind]})")
    writers = (("its group", stat.S_IWGRP), ("everyone", stat.S_IWOTH))
    writable = [who for who, bit in writers if mode & bit]
    if writable:
        problems.append(f"writable by {' and '.join(writable)} (a writer can add a user)")
    if not problems:
        return None
    shown = Path(path)
    return (
        f"{shown} is mode {mode:04o}, {'; '.join(problems)}: chmod 600 {shown}, or chmod 640 "
        "and chgrp it to the group of a service that must read it too (dockgate does not "
        "change the mode itself)"
    )


def credential_file_warnings(htpasswd: str | None, tokens: str | None) -> list[str]:
    """`mode_warning` for the files `serve` is given (--htpasswd, --tokens)."""
    files: Iterable[tuple[str | None, str]] = ((htpasswd, "htpasswd"), (tokens, "tokens"))
    return [
        warning
        for path, kind in files
        if path is not None
        for warning in [mode_warning(path, kind)]
        if warning is not None
    ]
