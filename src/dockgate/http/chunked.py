"""Strict decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112, section 7.1).

Request bodies from clients are decoded here and re-chunked by the gateway, so the daemon only
ever sees framing that the gateway wrote itself: a chunk-size line the gateway and the daemon
could read differently never reaches the daemon.
"""

from __future__ import annotations

import re

from dockgate.http.errors import ClientProtocolError

# A chunk-size line is short; anything longer is an attack or a broken client.
MAX_SIZE_LINE_BYTES = 4096
# Trailers are allowed by the RFC but unused by Docker clients; they are read, capped and dropped.
MAX_TRAILER_BYTES = 16 * 1024
# 16 hex digits would already be 16 EiB; more is an overflow attempt.
_SIZE_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"  # chunk-size
    rb"((?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # ; ext-name
    rb"(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    rb"|\"(?:[\t\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*\"))?)*)"
    rb"[ \t]*"
)

# A trailer field has the syntax of a header field (RFC 9110 5.5).
_TRAILER_FIELD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*")

_SIZE, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class ChunkedDecoder:
    """Feeds on raw chunked bytes; yields decoded payload and reports where the body ended."""

    __slots__ = ("_buffer", "_remaining", "_state", "_trailer_bytes")

    def __init__(self) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._buffer = b""
        self._trailer_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Decode `data`; return (payload pieces, bytes left over after the final chunk).

        Leftover bytes are only non-empty once the body is complete: they belong to whatever
        the client sent next (a pipelined request).
        """
        pieces: list[bytes] = []
        buf = self._buffer + data if self._buffer else data
        self._buffer = b""
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                pieces.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state == _SIZE:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    # +1: a CR at the very end may be the start of the line's CRLF.
                    if end - pos > MAX_SIZE_LINE_BYTES + 1:
                        raise ClientProtocolError("chunk-size line too long")
                    self._check_no_bare_lf(buf, pos, end)
                    break
                line = buf[pos:eol]
                if len(line) > MAX_SIZE_LINE_BYTES:
                    raise ClientProtocolError("chunk-size line too long")
                match = _SIZE_LINE.fullmatch(line)
                if match is None:
                    raise ClientProtocolError("invalid chunk-size line")
                size = int(match.group(1), 16)
                pos = eol + 2
                if size == 0:
                    self._state = _TRAILER
                else:
                    self._remaining = size
                    self._state = _DATA
            elif state == _DATA_END:
                if end - pos < 2:
                    if buf[pos:end] != b"\r"[: end - pos]:
                        raise ClientProtocolError("chunk data not followed by CRLF")
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ClientProtocolError("chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            elif state == _TRAILER:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if self._trailer_bytes + end - pos > MAX_TRAILER_BYTES:
                        raise ClientProtocolError("chunked trailer too long")
                    self._check_no_bare_lf(buf, pos, end)
                    break
                line = buf[pos:eol]
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > MAX_TRAILER_BYTES:
                    raise ClientProtocolError("chunked trailer too long")
                pos = eol + 2
                if not line:
                    self._state = _DONE
                    return pieces, buf[pos:]
                if not _TRAILER_FIELD.fullmatch(line):
                    raise ClientProtocolError("invalid chunked trailer field")
            else:  # _DONE: nothing more belongs to this body
                return pieces, buf[pos:]
        if pos < end:
            self._buffer = buf[pos:]
        return pieces, b""

    @staticmethod
    def _check_no_bare_lf(buf: bytes, pos: int, end: int) -> None:
        if buf.find(b"\n", pos, end) >= 0:
            raise ClientProtocolError("bare LF in chunked framing")
