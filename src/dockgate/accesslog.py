"""The access log: one line per request, human-readable or JSON.

Lines are buffered and flushed shortly after they are written (or when the buffer is large), so
that logging costs one small string per request rather than one system call.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import TextIO

FLUSH_DELAY_SECONDS = 0.05
FLUSH_BUFFER_CHARS = 64 * 1024


@dataclass(slots=True)
class AccessRecord:
    client: str
    method: str
    target: str
    version: str
    status: int
    bytes_in: int
    bytes_out: int
    duration_s: float
    note: str = ""  # why the exchange ended unusually ("client gone", "upstream failed", ...)
    operation: str = "-"  # the Engine API operation, e.g. ContainerList
    decision: str = "-"  # e.g. allow:environment:rule-5, deny:ci:read-only
    identity: str = "-"  # the authenticated caller, "-" when none is required


class AccessLog:
    def __init__(self, stream: TextIO | None, fmt: str = "text") -> None:
        self._stream = stream
        self._json = fmt == "json"
        self._pending: list[str] = []
        self._pending_chars = 0
        self._flush_handle: asyncio.TimerHandle | None = None

    def write(self, record: AccessRecord) -> None:
        if self._stream is None:
            return
        if self._json:
            fields: dict[str, object] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "client": record.client,
                "method": record.method,
                "path": record.target,
                "http_version": record.version,
                "status": record.status,
                "bytes_in": record.bytes_in,
                "bytes_out": record.bytes_out,
                "duration_ms": round(record.duration_s * 1000, 3),
                "operation": record.operation,
                "decision": record.decision,
                "identity": record.identity,
            }
            if record.note:
                fields["note"] = record.note
            line = json.dumps(fields) + "\n"
        else:
            note = f" ({record.note})" if record.note else ""
            line = (
                f'{record.client} "{record.method} {record.target} HTTP/{record.version}" '
                f"{record.status} in={record.bytes_in} out={record.bytes_out} "
                f"dur_ms={record.duration_s * 1000:.3f} op={record.operation} "
                f"decision={record.decision} user={record.identity}{note}\n"
            )
        self._pending.append(line)
        self._pending_chars += len(line)
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
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._pending and self._stream is not None:
            self._stream.write("".join(self._pending))
            self._stream.flush()
        self._pending.clear()
        self._pending_chars = 0


def open_access_log(target: str, fmt: str) -> AccessLog:
    """`-` is stdout, `off` disables the access log, anything else is a file appended to."""
    if target == "off":
        return AccessLog(None, fmt)
    if target == "-":
        return AccessLog(sys.stdout, fmt)
    return AccessLog(open(target, "a", encoding="utf-8"), fmt)
