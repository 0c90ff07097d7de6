"""A buffered line writer shared by the access log and the audit log.

Lines are buffered and flushed shortly after they are written (or at once when the buffer is
large, or when no event loop runs), so that logging costs one small string per request rather
than one system call. Each flush is one ``write`` of whole lines, so workers appending to the
same file (opened with ``O_APPEND``) do not interleave inside a line.

A failing write (disk full, stdout closed) never reaches the request path: the lines of that
flush are dropped and one warning goes to stderr until a later flush succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TextIO

FLUSH_DELAY_SECONDS = 0.05
FLUSH_BUFFER_CHARS = 64 * 1024
# New log files: readable by the gateway's user only (the audit log names callers and commands).
LOG_FILE_MODE = 0o600


class LineSink:
    """Buffered lines to `stream`; `owned` streams are closed by `close`."""

    def __init__(self, stream: TextIO, *, owned: bool = False, name: str = "") -> None:
        self._stream: TextIO | None = stream
        self._owned = owned
        self.name = name or getattr(stream, "name", "") or "log"
        self._pending: list[str] = []
        self._pending_chars = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._failing = False

    @property
    def closed(self) -> bool:
        return self._stream is None

    def write(self, line: str) -> None:
        """Queue one line (without its newline; the sink ends it with one)."""
        if self._stream is None:
            return
        # (no newline added here: the lines are joined with one at the flush, a string fewer
        # per line; the buffer's size counts it all the same)
        self._pending.append(line)
        self._pending_chars += len(line) + 1
        if self._pending_chars >= FLUSH_BUFFER_CHARS:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_DELAY_SECONDS, self.flush)

    def flush(self) -> None:
        """Write out what is pending now."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        self._pending.append("")  # the last line's newline
        text = "\n".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        if self._stream is None:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            if not self._failing:
                self._failing = True
                with contextlib.suppress(OSError, ValueError):
                    print(
                        f"dockgate: warning: cannot write to {self.name}: {exc}; "
                        "lines are lost until it works again",
                        file=sys.stderr,
                        flush=True,
                    )
        else:
            self._failing = False

    def close(self) -> None:
        """Flush, then close the stream if the sink opened it; later writes are ignored."""
        self.flush()
        stream, self._stream = self._stream, None
        if stream is not None and self._owned:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class SinkLog:
    """What the access and audit logs share: an optional sink (None: the log is off), flushed
    and closed with the log."""

    def __init__(self, sink: LineSink | None) -> None:
        self._sink = sink

    @property
    def enabled(self) -> bool:
        """False when the log is off: callers may skip collecting what it would record."""
        return self._sink is not None

    def flush(self) -> None:
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        """Flush, and close the file if the log opened one."""
        if self._sink is not None:
            self._sink.close()


def open_sink(target: str) -> LineSink | None:
    """`-` is stdout, `off` is no sink (None), anything else a file appended to.

    A file that does not exist yet is created with mode 0600 (an existing one keeps its mode).
    Raises OSError when the file cannot be opened.
    """
    if target == "off":
        return None
    if target == "-":
        return LineSink(sys.stdout, name="stdout")
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
    try:
        stream = open(  # noqa: SIM115 - owned by the sink, closed by LineSink.close
            fd, "a", encoding="utf-8", errors="backslashreplace"
        )
    except BaseException:
        os.close(fd)
        raise
    return LineSink(stream, owned=True, name=target)
