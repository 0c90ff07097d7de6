"""The access log: one line per request, human-readable or JSON.

Lines go through a `dockgate.observe.logsink.LineSink`: buffered, and flushed shortly after they are
written (or when the buffer is large), so that logging costs one small string per request rather
than one system call.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TextIO

from dockgate.caching import remember
from dockgate.observe.logsink import (
    FLUSH_BUFFER_CHARS,
    FLUSH_DELAY_SECONDS,
    LineSink,
    SinkLog,
    open_sink,
)
from dockgate.observe.logtext import printable

__all__ = [
    "FLUSH_BUFFER_CHARS",
    "FLUSH_DELAY_SECONDS",
    "AccessLog",
    "AccessRecord",
    "LineParts",
    "open_access_log",
]


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
    # The client a trusted proxy reported (X-Forwarded-For, PROXY header), when it is not the
    # connected peer; "" otherwise.
    source: str = ""


class AccessLog(SinkLog):
    """Formats `AccessRecord`s as lines for a `LineSink` (a stream is wrapped in one, not owned)."""

    def __init__(self, stream: TextIO | LineSink | None, fmt: str = "text") -> None:
        super().__init__(
            stream if isinstance(stream, LineSink) or stream is None else LineSink(stream)
        )
        self._json = fmt == "json"

    def write(self, record: AccessRecord) -> None:
        self.write_fields(
            client=record.client,
            method=record.method,
            target=record.target,
            version=record.version,
            status=record.status,
            bytes_in=record.bytes_in,
            bytes_out=record.bytes_out,
            duration_s=record.duration_s,
            note=record.note,
            operation=record.operation,
            decision=record.decision,
            identity=record.identity,
            source=record.source,
        )

    def write_fields(
        self,
        *,
        client: str,
        method: str,
        target: str,
        version: str,
        status: int,
        bytes_in: int,
        bytes_out: int,
        duration_s: float,
        note: str,
        operation: str,
        decision: str,
        identity: str,
        source: str,
    ) -> None:
        """`write`, from the fields themselves: the relay writes one line per request this way,
        without making an `AccessRecord` first (issue 14's hot path)."""
        if self._sink is None:
            return
        if self._json:
            fields: dict[str, object] = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "client": client,
                "method": method,
                "path": target,
                "http_version": version,
                "status": status,
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
                "duration_ms": round(duration_s * 1000, 3),
                "operation": operation,
                "decision": decision,
                "identity": identity,
            }
            if source:
                fields["source"] = source
            if note:
                fields["note"] = note
            line = json.dumps(fields)
        else:
            prefix, suffix = _text_parts(
                client, method, target, version, operation, decision, identity, source
            )
            note = f" ({note})" if note else ""
            line = (
                f"{prefix}{status} in={bytes_in} out={bytes_out} "
                f"dur_ms={duration_s * 1000:.3f}{suffix}{note}"
            )
        self._sink.write(line)

    def line_parts(  # noqa: PLR0917 - positional: made once per repeated exchange
        self,
        client: str,
        method: str,
        target: str,
        version: str,
        operation: str,
        decision: str,
        identity: str,
        source: str,
    ) -> LineParts | None:
        """What a text line of these fields says besides the status, the byte counts and the
        duration, for `write_parts`: the relay keeps it for a keep-alive client repeating the
        same request the same way (issue 14's hot path). None when lines are not written as
        text to a sink (JSON, the log off, or a subclass that keeps records)."""
        if self._sink is None or self._json or type(self).write_fields is not _WRITE_FIELDS:
            return None
        prefix, suffix = _text_parts(
            client, method, target, version, operation, decision, identity, source
        )
        return LineParts(prefix, suffix, self._sink)


@dataclass(frozen=True, slots=True)
class LineParts:
    """A text access line less its status, byte counts and duration (`AccessLog.line_parts`)."""

    prefix: str
    suffix: str
    sink: LineSink

    def write(self, status: int, bytes_in: int, bytes_out: int, duration_s: float) -> None:
        """The line `AccessLog.write_fields` writes for these fields with no note, byte for
        byte (both put it together from `_text_parts`)."""
        self.sink.write(
            f"{self.prefix}{status} in={bytes_in} out={bytes_out} "
            f"dur_ms={duration_s * 1000:.3f}{self.suffix}"
        )


_WRITE_FIELDS = AccessLog.write_fields


def _text_parts(  # noqa: PLR0917
    client: str,
    method: str,
    target: str,
    version: str,
    operation: str,
    decision: str,
    identity: str,
    source: str,
) -> tuple[str, str]:
    """A text line's fields before the status, and after the duration (less the note)."""
    prefix = f'{client} "{method} {target} HTTP/{version}" '
    # The identity may be a certificate's CN, the holder's text: one line, one field (JSON
    # lines are escaped by json.dumps). (the cached field looked up here: a call only for a
    # new identity)
    user = _user_fields.get(identity) or _user_field(identity)
    suffix = f" op={operation} decision={decision} user={user}"
    if source:
        suffix += f" src={source}"
    return prefix, suffix


# Callers are few and come back: the `user=` field of each identity is made once (bounded).
USER_FIELD_ENTRIES = 1024
_user_fields: dict[str, str] = {}


def _user_field(identity: str) -> str:
    field = _user_fields.get(identity)
    if field is None:
        field = printable(identity, spaces=True)
        remember(_user_fields, identity, field, USER_FIELD_ENTRIES)
    return field


def open_access_log(target: str, fmt: str) -> AccessLog:
    """`-` is stdout, `off` disables the access log, anything else is a file appended to
    (created with mode 0600 when new)."""
    return AccessLog(open_sink(target), fmt)
