"""Strict, sans-IO reader of client requests: heads, bodies, and where each request ends.

Security-relevant parsing is strict: anything two HTTP implementations could read differently
(duplicate or conflicting framing headers, obs-fold, bare LF, odd methods or targets) is refused
with a `ClientProtocolError` (400) instead of being guessed at. The reader never looks past the
end of the current request until the owner calls `next_request()`, so the bytes of a pipelined
request, or the raw stream of a hijacked connection, stay untouched in its buffer.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from dockgate.caching import remember
from dockgate.http.chunked import ChunkedDecoder
from dockgate.http.errors import ClientProtocolError
from dockgate.http.hops import with_hop

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


@dataclass(frozen=True, slots=True)
class RequestHead:
    """One request head, validated. `raw` is exactly what is forwarded to the daemon."""

    method: str
    target: str
    version: tuple[int, int]
    raw: bytes
    content_length: int | None
    chunked: bool
    keep_alive: bool
    upgrade: bool  # a protocol switch asked for properly (Upgrade + Connection: upgrade)
    expect_continue: bool
    host: bytes | None = None
    origin: bytes | None = None
    # Any Upgrade header at all, even without the Connection token: some servers (Go's h2c
    # handler) switch on less, so the gatekeeper treats it as a request to switch.
    upgrade_header: bool = False
    authorization: bytes | None = None  # consumed by the gateway, never forwarded

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every header field as (lower-case name, value), in order; parsed on demand."""
        return header_fields(self.raw)


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

    __slots__ = (
        "_buffer",
        "_chunked",
        "_last",
        "_max_head_bytes",
        "_remaining",
        "_skipped",
        "_state",
        "started",
    )

    def __init__(self, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES) -> None:
        self._max_head_bytes = max_head_bytes
        self._state = _HEAD
        self._buffer = b""
        self._remaining = 0
        self._skipped = 0  # empty lines skipped before the current head
        self._chunked: ChunkedDecoder | None = None
        # The last head without a body that came alone in one read (`_whole_head`): a
        # keep-alive client sends the same bytes again, taken without another look.
        self._last: RequestHead | None = None
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
        if state == _HEAD and not self._buffer:
            last = self._last
            if last is not None and data == last.raw:
                # (what _whole_head does for these bytes, found valid and parsed before)
                self.started = True
                self._skipped = 0
                self._state = _DONE
                return [last, _END]
            events = self._whole_head(data)
            if events is not None:
                return events
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

    def _whole_head(self, data: bytes) -> list[RequestEvent] | None:
        """The events of `data` when it is exactly one head and nothing else (a keep-alive
        client's usual read: one system call, one request), else None: the general path."""
        end = data.find(b"\r\n\r\n")
        if end <= 0 or end + 4 != len(data) or end + 4 > self._max_head_bytes:
            return None
        if data.startswith(b"\r\n"):
            return None  # empty lines first: counted against the limit by _read_head
        self.started = True
        self._skipped = 0
        head = parse_head_cached(data)
        if head.chunked or head.content_length:
            return self._started_body(head)
        self._state = _DONE
        if end + 4 <= HEAD_CACHE_MAX_HEAD_BYTES:  # (an ordinary head: memory stays bounded)
            self._last = head
        return [head, _END]

    def _advance(self) -> list[RequestEvent]:
        if self._state == _HEAD:
            head = self._read_head()
            if head is None:
                return []
            if not head.chunked and not head.content_length:
                self._state = _DONE
                return [head, _END]
            return self._started_body(head)
        events: list[RequestEvent] = []
        data, self._buffer = self._buffer, b""
        if self._state == _LENGTH:
            events.extend(self._length_body(data))
        elif self._state == _CHUNKED:
            events.extend(self._chunked_body(data))
        return events

    def _started_body(self, head: RequestHead) -> list[RequestEvent]:
        """`head` has a body: its events, with what the buffer already holds of the body."""
        events: list[RequestEvent] = [head]
        if head.chunked:
            self._chunked = ChunkedDecoder()
            self._state = _CHUNKED
        else:
            self._remaining = head.content_length or 0
            self._state = _LENGTH
        data, self._buffer = self._buffer, b""
        if self._state == _LENGTH:
            events.extend(self._length_body(data))
        else:
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
        # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request-line;
        # they count against the head limit so that they cannot be sent forever.
        while buf.startswith(b"\r\n"):
            buf = buf[2:]
            self._skipped += 2
            if self._skipped > self._max_head_bytes:
                raise ClientProtocolError("request head too large")
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
        self._skipped = 0
        return parse_head_cached(raw)


# Heads are parsed by a pure function, and clients send the same few heads again and again (a
# poller's `GET /containers/json`, a load balancer's `GET /_ping`): the last few thousand
# results are kept. The cache is cleared when full, so its memory stays bounded.
HEAD_CACHE_ENTRIES = 4096
# Only ordinary heads are remembered, so the cache holds at most a few megabytes whatever
# clients send (4096 x 1 KiB), never 4096 heads of the 64 KiB limit.
HEAD_CACHE_MAX_HEAD_BYTES = 1024
_head_cache: dict[bytes, RequestHead] = {}


def parse_head_cached(raw: bytes) -> RequestHead:
    """`parse_head`, remembered. Only valid heads are kept; RequestHead is never mutated."""
    head = _head_cache.get(raw)
    if head is None:
        head = parse_head(raw)
        if len(raw) > HEAD_CACHE_MAX_HEAD_BYTES:
            return head
        remember(_head_cache, raw, head, HEAD_CACHE_ENTRIES)
    return head


_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The fast path: one regex for the request line, one for the whole header block. A head that
# fails either is re-read line by line by `_explain` only to say precisely what is wrong.
_REQUEST_LINE = re.compile(
    rb"([A-Z]{1,20}) (/[!$&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~%]*) HTTP/1\.([01])\r\n"
)
_HEADER_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*\r\n")
# Only these fields matter for framing and connection handling; found with one scan.
_FRAMING_FIELD = re.compile(
    rb"\r\n(content-length|transfer-encoding|host|connection|upgrade|expect|origin|authorization)"
    rb"[ \t]*:([^\r]*)",
    re.IGNORECASE,
)


def parse_head(raw: bytes) -> RequestHead:
    """Validate one complete request head (ending in CRLF CRLF) and extract what framing needs."""
    line = _REQUEST_LINE.match(raw)
    if line is None or _HEADER_BLOCK.fullmatch(raw, line.end()) is None:
        raise ClientProtocolError(_explain(raw))
    version = (1, 1) if line.group(3) == b"1" else (1, 0)

    content_length: int | None = None
    transfer_encoding: bytes | None = None
    connection_tokens: tuple[bytes, ...] = ()
    hosts = 0
    host: bytes | None = None
    origin: bytes | None = None
    authorization: bytes | None = None
    upgrade_header = False
    expect_continue = False
    for field in _FRAMING_FIELD.finditer(raw, line.end() - 2):
        name = field.group(1).lower()
        value = field.group(2).strip(b" \t")
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
            host = value
        elif name == b"connection":
            connection_tokens += tuple(t.strip(b" \t").lower() for t in value.split(b","))
        elif name == b"upgrade":
            upgrade_header = True
        elif name == b"origin":
            if origin is not None:
                raise ClientProtocolError("duplicate Origin")
            origin = value
        elif name == b"authorization":
            if authorization is not None:
                raise ClientProtocolError("duplicate Authorization")
            authorization = value
        elif value.lower() != b"100-continue":  # expect
            raise ClientProtocolError("unsupported Expect header")
        else:
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
        method=line.group(1).decode("ascii"),
        target=line.group(2).decode("ascii"),
        version=version,
        raw=raw,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        upgrade=upgrade_header and b"upgrade" in connection_tokens,
        upgrade_header=upgrade_header,
        expect_continue=expect_continue,
        host=host,
        origin=origin,
        authorization=authorization,
    )


def with_target(head: RequestHead, target: str) -> RequestHead:
    """The same request for another target (a rewritten query or object reference); the
    request line is written again, the header fields are kept as they came."""
    _, _, rest = head.raw.partition(b"\r\n")
    version = b"HTTP/1.1" if head.version == (1, 1) else b"HTTP/1.0"
    line = b"%s %s %s\r\n" % (head.method.encode(), target.encode("ascii"), version)
    return dataclasses.replace(head, target=target, raw=line + rest)


def header_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """All header fields of a validated head as (lower-case name, value), in order."""
    fields = []
    for line in raw[:-4].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


def _explain(raw: bytes) -> str:
    """Say what is wrong with a head that failed the fast-path checks."""
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return "malformed request line"
    method, target, version = parts
    if not _METHOD.fullmatch(method):
        return "invalid method (methods are upper case)"
    if not _TARGET.fullmatch(target):
        return "invalid request target"
    if version not in _VERSIONS:
        return "unsupported HTTP version"
    for line in lines[1:]:
        if b"\n" in line:
            return "bare LF in request head"
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding in header"
        name, colon, value = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name):
            return "invalid header field"
        if _FIELD_VALUE_BAD.search(value):
            return "control character in header value"
    return "malformed request head"


_FRAMING_LINE = re.compile(
    rb"\r\n(?:content-length|transfer-encoding|expect)[ \t]*:[^\r]*", re.IGNORECASE
)


def with_content_length(raw: bytes, length: int) -> bytes:
    """A validated head re-framed for a body the gateway read whole: its Content-Length,
    Transfer-Encoding and Expect fields replaced by one `Content-Length`."""
    stripped = _FRAMING_LINE.sub(b"", raw[:-2])  # keep the last field's CRLF
    return stripped + b"Content-Length: %d\r\n\r\n" % length


def without_body(head: RequestHead) -> RequestHead:
    """The same request with its body taken away (read by the gateway and dropped): framed
    with `Content-Length: 0`, nothing left to expect."""
    return dataclasses.replace(
        head,
        raw=with_content_length(head.raw, 0),
        content_length=0,
        chunked=False,
        expect_continue=False,
    )


_AUTHORIZATION_HEADER = re.compile(rb"\r\nauthorization[ \t]*:[^\r]*", re.IGNORECASE)
_CONNECTION_HEADER = re.compile(rb"\r\n[Cc][Oo][Nn][Nn][Ee][Cc][Tt][Ii][Oo][Nn]:[^\r]*")


# What is forwarded of a head, by its raw bytes: a pure function of them (every field of a
# RequestHead that `_forwarded` reads is what `parse_head` read from `raw`; `with_target` and
# `without_body` keep that true), remembered like the parsed heads, with the same bounds.
_forwarded_cache: dict[bytes, bytes] = {}


def forwarded_head(head: RequestHead) -> bytes:
    """The head as the daemon gets it: as received, less what belongs to the gateway."""
    raw = head.raw
    forwarded = _forwarded_cache.get(raw)
    if forwarded is None:
        forwarded = _forwarded(head)
        if len(raw) <= HEAD_CACHE_MAX_HEAD_BYTES:
            remember(_forwarded_cache, raw, forwarded, HEAD_CACHE_ENTRIES)
    return forwarded


def _forwarded(head: RequestHead) -> bytes:
    raw = head.raw
    if not head.keep_alive and head.version == (1, 1) and not head.upgrade:
        # The client's "Connection: close" is about its own connection; the one to the
        # daemon stays reusable.
        raw = _CONNECTION_HEADER.sub(b"", raw)
    if head.authorization is not None:
        # Credentials are the gateway's business; the daemon never sees them.
        raw = _AUTHORIZATION_HEADER.sub(b"", raw)
    # Marked as having passed here, so a request that comes back is caught (http/hops.py).
    return with_hop(raw)
