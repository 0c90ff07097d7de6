"""Strict, sans-IO reader of client requests: heads, bodies, and where each request ends.

Security-relevant parsing is strict: anything two HTTP implementations could read differently
(duplicate or conflicting framing headers, obs-fold, bare LF, odd methods or targets) is refused
with a `ClientProtocolError` (400) instead of being guessed at. The reader never looks past the
end of the current request until the owner calls `next_request()`, so the bytes of a pipelined
request, or the raw stream of a hijacked connection, stay untouched in its buffer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockgate.errors import ClientProtocolError
from dockgate.http.chunked import ChunkedDecoder

DEFAULT_MAX_HEAD_BYTES = 64 * 1024

# RFC 9110 token; methods are case-sensitive and every Engine API method is upper case.
_METHOD = re.compile(rb"[A-Z]{1,20}")
# origin-form only (RFC 9112 3.2.1): visible ASCII, no '#'; absolute-form, authority-form and '*'
# are proxy forms the daemon has no use for and would only let a path be read two ways.
_TARGET = re.compile(rb"/[!$&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~%]*")
_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values: visible ASCII, obs-text, SP and HTAB; no other control bytes (RFC 9110 5.5).
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,18}")


@dataclass(slots=True)
class RequestHead:
    """One request head, validated. `raw` is exactly what is forwarded to the daemon."""

    method: str
    target: str
    version: tuple[int, int]
    headers: list[tuple[bytes, bytes]]  # (lower-case name, value) in order received
    raw: bytes
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bool
    expect_continue: bool

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, name: bytes) -> bytes | None:
        """The value of a header that is known to appear at most once, else None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Body:
    """Decoded request payload, in order."""

    data: bytes


@dataclass(slots=True)
class EndOfRequest:
    """The current request's body is complete."""


RequestEvent = RequestHead | Body | EndOfRequest
_END = EndOfRequest()

_HEAD, _LENGTH, _CHUNKED, _DONE = range(4)


class RequestReader:
    """Turns client bytes into request events, one request at a time."""

    __slots__ = ("_buffer", "_chunked", "_max_head_bytes", "_remaining", "_state", "started")

    def __init__(self, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES) -> None:
        self._max_head_bytes = max_head_bytes
        self._state = _HEAD
        self._buffer = b""
        self._remaining = 0
        self._chunked: ChunkedDecoder | None = None
        # True once any byte of the next request head has arrived (for timeouts and shutdown).
        self.started = False

    @property
    def waiting_for_head(self) -> bool:
        return self._state == _HEAD

    @property
    def request_complete(self) -> bool:
        return self._state == _DONE

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[RequestEvent]:
        """Take bytes from the client; return the events they complete."""
        state = self._state
        if state == _LENGTH and not self._buffer:
            return self._length_body(data)
        if state == _DONE:
            self._buffer += data
            return []
        if data:
            self.started = True
        self._buffer += data
        return self._advance()

    def next_request(self) -> list[RequestEvent]:
        """Start on the next request; return the events its already-buffered bytes complete."""
        if self._state != _DONE:
            raise RuntimeError("next_request() before the current request ended")
        self._state = _HEAD
        self.started = bool(self._buffer)
        return self._advance() if self._buffer else []

    def take_buffered(self) -> bytes:
        """Hand over every byte received past the current request (for a hijacked connection)."""
        data, self._buffer = self._buffer, b""
        return data

    def _advance(self) -> list[RequestEvent]:
        events: list[RequestEvent] = []
        if self._state == _HEAD:
            head = self._read_head()
            if head is None:
                return events
            events.append(head)
            if head.chunked:
                self._chunked = ChunkedDecoder()
                self._state = _CHUNKED
            elif head.content_length:
                self._remaining = head.content_length
                self._state = _LENGTH
            else:
                self._state = _DONE
                events.append(_END)
                return events
        data, self._buffer = self._buffer, b""
        if self._state == _LENGTH:
            events.extend(self._length_body(data))
        elif self._state == _CHUNKED:
            events.extend(self._chunked_body(data))
        return events

    def _length_body(self, data: bytes) -> list[RequestEvent]:
        remaining = self._remaining
        if len(data) < remaining:
            self._remaining = remaining - len(data)
            return [Body(data)] if data else []
        self._state = _DONE
        self._buffer = data[remaining:]
        self._remaining = 0
        if remaining:
            return [Body(data[:remaining]), _END]
        return [_END]

    def _chunked_body(self, data: bytes) -> list[RequestEvent]:
        decoder = self._chunked
        assert decoder is not None
        pieces, rest = decoder.feed(data)
        events: list[RequestEvent] = [Body(p) for p in pieces if p]
        if decoder.done:
            self._state = _DONE
            self._chunked = None
            self._buffer = rest
            events.append(_END)
        return events

    def _read_head(self) -> RequestHead | None:
        buf = self._buffer
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line.
        while buf.startswith(b"\r\n"):
            buf = buf[2:]
        self._buffer = buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._max_head_bytes:
                raise ClientProtocolError("request head too large")
            if b"\n" in buf.replace(b"\r\n", b""):
                raise ClientProtocolError("bare LF in request head")
            return None
        if end + 4 > self._max_head_bytes:
            raise ClientProtocolError("request head too large")
        raw = buf[: end + 4]
        self._buffer = buf[end + 4 :]
        return parse_head(raw)


def parse_head(raw: bytes) -> RequestHead:
    """Validate one complete request head (ending in CRLF CRLF) and extract what framing needs."""
    lines = raw[:-4].split(b"\r\n")
    request_line = lines[0]
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise ClientProtocolError("malformed request line")
    method, target, version_text = parts
    if not _METHOD.fullmatch(method):
        raise ClientProtocolError("invalid method (methods are upper case)")
    if not _TARGET.fullmatch(target):
        raise ClientProtocolError("invalid request target")
    version = _VERSIONS.get(version_text)
    if version is None:
        raise ClientProtocolError("unsupported HTTP version")

    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    transfer_encoding: bytes | None = None
    connection_tokens: set[bytes] = set()
    hosts = 0
    upgrade_header = False
    expect_continue = False
    for line in lines[1:]:
        if b"\n" in line:
            raise ClientProtocolError("bare LF in request head")
        if line[:1] in (b" ", b"\t"):
            raise ClientProtocolError("obsolete line folding in header")
        name, colon, value = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            raise ClientProtocolError("invalid header field")
        value = value.strip(b" \t")
        if _FIELD_VALUE_BAD.search(value):
            raise ClientProtocolError("control character in header value")
        name = name.lower()
        headers.append((name, value))
        if name == b"content-length":
            if content_length is not None:
                raise ClientProtocolError("duplicate Content-Length")
            if not _CONTENT_LENGTH.fullmatch(value):
                raise ClientProtocolError("invalid Content-Length")
            content_length = int(value)
        elif name == b"transfer-encoding":
            if transfer_encoding is not None:
                raise ClientProtocolError("duplicate Transfer-Encoding")
            transfer_encoding = value
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            connection_tokens.update(t.strip(b" \t").lower() for t in value.split(b","))
        elif name == b"upgrade":
            upgrade_header = True
        elif name == b"expect":
            if value.lower() != b"100-continue":
                raise ClientProtocolError("unsupported Expect header")
            expect_continue = True

    chunked = False
    if transfer_encoding is not None:
        if content_length is not None:
            raise ClientProtocolError("both Content-Length and Transfer-Encoding")
        if version < (1, 1):
            raise ClientProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        if transfer_encoding.lower() != b"chunked":
            raise ClientProtocolError("unsupported Transfer-Encoding")
        chunked = True
    if hosts > 1 or (hosts == 0 and version == (1, 1)):
        raise ClientProtocolError("an HTTP/1.1 request needs exactly one Host header")

    if version == (1, 1):
        keep_alive = b"close" not in connection_tokens
    else:
        keep_alive = b"keep-alive" in connection_tokens
    return RequestHead(
        method=method.decode("ascii"),
        target=target.decode("ascii"),
        version=version,
        headers=headers,
        raw=raw,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        upgrade=upgrade_header and b"upgrade" in connection_tokens,
        expect_continue=expect_continue,
    )
