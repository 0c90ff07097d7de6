"""Sans-IO reader of the daemon's responses: finds each response's head and where its body ends.

Response bodies are relayed as the daemon framed them (chunked stays chunked, byte for byte):
the reader only tracks framing, so the gateway can tell when the upstream connection is free
again. Chunk framing is tracked by llhttp (through httptools) with no Python callback per chunk,
which matters for `logs` streams that the daemon writes in pieces of a few dozen bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

import httptools

from dockgate.caching import remember
from dockgate.http.errors import UpstreamError

MAX_RESPONSE_HEAD_BYTES = 256 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?\r\n")

# The daemon answers a hijacked attach or exec in these media types (moby api/types).
RAW_STREAM_TYPES = (
    b"application/vnd.docker.raw-stream",
    b"application/vnd.docker.multiplexed-stream",
)


class Framing(Enum):
    NONE = "none"  # HEAD, 1xx, 204, 304: the head is the whole response
    LENGTH = "length"
    CHUNKED = "chunked"
    UNTIL_CLOSE = "until-close"  # no length: the body ends when the daemon closes
    SWITCHED = "switched"  # 101: the connection is now a raw tunnel


@dataclass(slots=True)
class ResponseHead:
    status: int
    raw: bytes
    framing: Framing
    keep_alive: bool
    raw_stream: bool  # body is Docker's raw stream: the daemon has hijacked the connection

    @property
    def informational(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


@dataclass(slots=True)
class ResponseBody:
    """Body bytes exactly as the daemon sent them (including chunk framing)."""

    data: bytes


@dataclass(slots=True)
class EndOfResponse:
    """The response is complete; `trailing` holds bytes past its end (tunnel data after a 101)."""

    trailing: bytes = b""


ResponseEvent = ResponseHead | ResponseBody | EndOfResponse


class _ChunkTracker:
    """Lets llhttp find the end of a chunked body; it calls back at the ends, not per chunk."""

    __slots__ = ("complete", "messages", "parser")

    def __init__(self) -> None:
        self.complete = False
        self.messages = 0
        self.parser = httptools.HttpResponseParser(self)
        # Prime the parser with a synthetic head so that it reads what follows as a chunked body.
        self.parser.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")

    def on_message_begin(self) -> None:
        # The first is the synthetic head; a second means bytes followed the end of the body.
        self.messages += 1

    def on_message_complete(self) -> None:
        self.complete = True

    def track(self, data: bytes) -> None:
        """Read `data`; UpstreamError for broken framing or bytes after the end."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise UpstreamError(f"the daemon sent invalid chunked framing: {exc}") from exc
        if self.messages > 1:
            # Nothing may follow a response on a connection that carries one request at a
            # time; relaying it would put the client out of step, so the stream is cut.
            raise UpstreamError("the daemon sent bytes after the end of a chunked response")


class ResponseReader:
    """Reads one response (after any 1xx) to a request made with `method`."""

    __slots__ = (
        "_buffer",
        "_framing",
        "_head_done",
        "_method",
        "_remaining",
        "_tracker",
        "done",
        "keep_alive",
    )

    def __init__(self, method: str) -> None:
        self._method = method
        self._buffer = b""
        self._head_done = False
        self._framing = Framing.NONE
        self._remaining = 0
        self._tracker: _ChunkTracker | None = None
        self.done = False
        # Whether the daemon keeps the connection open after the final response.
        self.keep_alive = True

    @property
    def head_done(self) -> bool:
        return self._head_done

    def feed(self, data: bytes) -> list[ResponseEvent]:
        if self._head_done:
            return self._body(data)
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        events: list[ResponseEvent] = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_RESPONSE_HEAD_BYTES:
                    raise UpstreamError("the daemon sent a response head that is too large")
                self._buffer = buffer
                return events
            cut = end + 4
            head = self._parse_head(buffer[:cut])
            rest = buffer[cut:]
            events.append(head)
            if 100 <= head.status < 200 and head.status != 101:  # informational: read on
                buffer = rest
                continue
            self._head_done = True
            if head.framing is Framing.NONE or head.framing is Framing.SWITCHED:
                self.done = True
                events.append(EndOfResponse(rest))
            elif rest:
                events.extend(self._body(rest))
            return events

    def whole(self, data: bytes) -> tuple[int, bytes, bytes] | None:
        """(status, head, body) when `data` is the whole of a final answer, nothing before it
        and nothing after: the usual read from the daemon (one head, a Content-Length body or
        none). The reader is then done, as after `feed`. Else None, and nothing has changed:
        `feed` takes the same bytes (informational heads, 101, chunked, until-close bodies,
        a part of an answer or more than one).

        The hot path's shortcut: no event objects are made for the usual answer."""
        if self._head_done or self._buffer:
            return None
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        cut = end + 4
        raw = data[:cut]
        cache = _HEAD_REQUEST_CACHE if self._method == "HEAD" else _HEAD_CACHE
        facts = cache.get(raw)
        if facts is None:
            return None  # a head not seen yet: `feed` parses it (and remembers it)
        status, framing, keep_alive, _, content_length = facts
        if status < 200:
            return None
        if framing is Framing.LENGTH:
            if len(data) - cut != content_length:
                return None
        elif framing is not Framing.NONE or cut != len(data):
            return None
        self._head_done = True
        self._framing = framing
        self.keep_alive = keep_alive
        self.done = True
        return status, raw, data[cut:]

    def relay_body(self, data: bytes) -> tuple[bytes, bool]:
        """Fast path once the head is done: (bytes to relay, whether the response is complete).

        The same framing logic as `feed`, without allocating events: a stream of `events` or
        `logs` arrives here once per read from the daemon.
        """
        if self._framing == Framing.CHUNKED:
            return data, self._track_chunks(data)
        events = self._body(data)
        relay = b"".join(e.data for e in events if isinstance(e, ResponseBody))
        return relay, self.done

    def _track_chunks(self, data: bytes) -> bool:
        """Feed raw chunked bytes to the tracker; True once the body is complete."""
        tracker = self._tracker
        assert tracker is not None
        tracker.track(data)
        if tracker.complete:
            self.done = True
        return self.done

    def eof(self) -> list[ResponseEvent]:
        """The daemon closed the connection; ends an until-close body, else it is an error."""
        if self._head_done and self._framing == Framing.UNTIL_CLOSE and not self.done:
            self.done = True
            return [EndOfResponse()]
        if self.done:
            return []
        raise UpstreamError("the daemon closed the connection before the response was complete")

    def _body(self, data: bytes) -> list[ResponseEvent]:
        framing = self._framing
        if framing == Framing.CHUNKED:
            if self._track_chunks(data):
                return [ResponseBody(data), EndOfResponse()]
            return [ResponseBody(data)]
        if framing == Framing.LENGTH:
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                return [ResponseBody(data)]
            self._remaining = 0
            self.done = True
            if len(data) > remaining:
                # Bytes past the declared length are a daemon bug: not relayed, and the
                # connection is not reused.
                self.keep_alive = False
            return [ResponseBody(data[:remaining]), EndOfResponse()]
        return [ResponseBody(data)] if data else []

    def _parse_head(self, raw: bytes) -> ResponseHead:
        head_request = self._method == "HEAD"
        cache = _HEAD_REQUEST_CACHE if head_request else _HEAD_CACHE
        facts = cache.get(raw)
        if facts is None:
            facts = _head_facts(raw, head_request)
            if len(raw) <= RESPONSE_HEAD_CACHE_MAX_BYTES:
                remember(cache, raw, facts, RESPONSE_HEAD_CACHE_ENTRIES)
        status, framing, keep_alive, raw_stream, content_length = facts
        if not (100 <= status < 200):
            self._framing = framing
            self.keep_alive = keep_alive
            if framing is Framing.CHUNKED:
                self._tracker = _ChunkTracker()
            elif framing is Framing.LENGTH:
                self._remaining = content_length
        return ResponseHead(status, raw, framing, keep_alive, raw_stream)


# The daemon sends the same few heads again and again (`/_ping`'s, a list's, an inspect's),
# differing only in their Date, which changes once a second: what a head says about framing
# is remembered by its raw bytes, so most responses cost one dict look-up instead of a parse.
# The table is emptied when full (caching.remember); heads of unusual size are not kept, so it
# holds at most a few hundred KiB.
RESPONSE_HEAD_CACHE_ENTRIES = 256
RESPONSE_HEAD_CACHE_MAX_BYTES = 1024
# (status, framing, keep_alive, raw_stream, content_length): a pure function of the raw head
# and of whether the request was a HEAD (whose answer has no body whatever it declares).
_HeadFacts = tuple[int, Framing, bool, bool, int]
_HEAD_CACHE: dict[bytes, _HeadFacts] = {}
_HEAD_REQUEST_CACHE: dict[bytes, _HeadFacts] = {}


def _head_facts(raw: bytes, head_request: bool) -> _HeadFacts:
    """Read what decides framing from a complete response head; UpstreamError if invalid."""
    match = _STATUS_LINE.match(raw)
    if match is None:
        raise UpstreamError("the daemon sent an invalid status line")
    minor, status = match.group(1), int(match.group(2))
    # Lower-case once, then look up only the fields that decide framing, with C-speed finds.
    lowered = raw.lower()
    connection = (_field(raw, lowered, b"\r\nconnection:") or b"").lower()
    keep_alive = b"close" not in connection if minor == b"1" else b"keep-alive" in connection
    raw_stream = False
    content_length = 0
    length_text = _field(raw, lowered, b"\r\ncontent-length:")
    if status == 101:
        framing = Framing.SWITCHED
        raw_stream = _is_raw_stream(raw, lowered)
    elif 100 <= status < 200 or status in (204, 304) or head_request:
        framing = Framing.NONE
    elif (_field(raw, lowered, b"\r\ntransfer-encoding:") or b"").lower() == b"chunked":
        framing = Framing.CHUNKED
    elif length_text is not None:
        if not length_text.isdigit() or lowered.count(b"\r\ncontent-length:") > 1:
            raise UpstreamError("the daemon sent an invalid Content-Length")
        content_length = int(length_text)
        framing = Framing.LENGTH if content_length else Framing.NONE
    else:
        framing = Framing.UNTIL_CLOSE
        keep_alive = False
        raw_stream = _is_raw_stream(raw, lowered)
    return status, framing, keep_alive, raw_stream, content_length


def _field(raw: bytes, lowered: bytes, marker: bytes) -> bytes | None:
    """The value of the first header line starting with `marker` (CRLF, lower-case name, colon)."""
    start = lowered.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return raw[start : raw.index(b"\r\n", start)].strip(b" \t")


def _is_raw_stream(raw: bytes, lowered: bytes) -> bool:
    content_type = (_field(raw, lowered, b"\r\ncontent-type:") or b"").lower()
    return content_type.startswith(RAW_STREAM_TYPES)
