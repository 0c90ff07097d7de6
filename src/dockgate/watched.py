"""Files the gateway reads again when they change: credentials and policies.

Checked at most once a second (a clock read on the hot path otherwise), by inode, size and
modification time, so that both an edit in place and the atomic rename of a Docker secret or
config update are seen. A file that no longer loads leaves the previous contents in force,
with one log line per change.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Generic, TypeVar

RELOAD_CHECK_SECONDS = 1.0

T = TypeVar("T")


class WatchedFile(Generic[T]):
    """A file's parsed contents, parsed again when the file changes (checked at most once per
    RELOAD_CHECK_SECONDS, so the hot path costs a clock read)."""

    def __init__(self, path: str, load: Callable[[str], T], errors: tuple[type[Exception], ...]):
        self.path = path
        self._load = load
        self._errors = errors
        self._stamp = file_stamp(path)
        self.value = load(path)  # errors at start are the caller's: the gateway does not start
        self._checked = time.monotonic()
        self.generation = 0  # reloads that took
        self.failures = 0  # reloads refused (the previous contents kept)

    def refresh(self, now: float, *, force: bool = False) -> bool:
        """Reload if the file changed (or `force`, for SIGHUP); True when the contents were
        replaced."""
        if not force and now - self._checked < RELOAD_CHECK_SECONDS:
            return False
        self._checked = now
        stamp = file_stamp(self.path)
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp  # one attempt (and one log line) per change
        try:
            self.value = self._load(self.path)
        except self._errors as exc:
            self.failures += 1
            _log(f"reload of {self.path} failed, keeping the previous contents: {exc}")
            return False
        except Exception as exc:  # a loader bug must not stop the loop that calls refresh
            self.failures += 1
            _log(
                f"reload of {self.path} failed unexpectedly, keeping the previous contents: "
                f"{type(exc).__name__}: {exc}"
            )
            return False
        self.generation += 1
        _log(f"{self.path} changed: reloaded")
        return True


FileStamp = tuple[int, int, int] | None  # inode, size, mtime; None: the file is not there


def file_stamp(path: str) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _log(message: str) -> None:
    print(f"dockgate: {message}", file=sys.stderr, flush=True)
