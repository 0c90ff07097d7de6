"""Unit tests of the sans-IO request reader (`dockgate.http.request`), in h11's style.

Every case is fed whole, split at fixed strides, split byte by byte, and followed by trailing
data: a pipelined second request must come out intact after `next_request()`, and the bytes after
a hijack-able request must come back untouched from `take_buffered()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from dockgate.http.errors import ClientProtocolError
from dockgate.http.request import (
    DEFAULT_MAX_HEAD_BYTES,
    Body,
    EndOfRequest,
    RequestEvent,
    RequestHead,
    RequestReader,
)
from support.splits import split, two_piece_splits

# ----- helpers --------------------------------------------------------------------------------

PATTERNS = ["whole", "bytewise", "by3", "by7"]  # for support.splits.split

PIPELINED = b"GET /next HTTP/1.1\r\nHost: second\r\n\r\n"


def normalise(events: Iterable[RequestEvent]) -> list[RequestEvent]:
    """Merge consecutive Body events into one, so that any split compares equal to `whole`."""
    out: list[RequestEvent] = []
    for event in events:
        if isinstance(event, Body):
            assert event.data, "empty Body event"
            if out and isinstance(out[-1], Body):
                out[-1] = Body(out[-1].data + event.data)
                continue
        out.append(event)
    return out


def feed_pieces(reader: RequestReader, pieces: Iterable[bytes]) -> list[RequestEvent]:
    """Feed every piece in order and return the normalised events."""
    events: list[RequestEvent] = []
    for piece in pieces:
        events.extend(reader.feed(piece))
    return normalise(events)


def expected_events(head_fields: dict[str, Any], payload: bytes) -> list[Any]:
    """What a complete request must yield: its head, its whole payload (if any), its end."""
    return [("head", head_fields), *([Body(payload)] if payload else []), EndOfRequest()]


def describe(events: list[RequestEvent], fields: Iterable[str]) -> list[Any]:
    """Replace each head by the subset of its attributes that the expectation names."""
    out: list[Any] = []
    for event in events:
        if isinstance(event, RequestHead):
            values = {name: getattr(event, name) for name in fields}
            # `headers` is a method (parsed on demand): compare what it returns.
            values = {k: v() if callable(v) else v for k, v in values.items()}
            out.append(("head", values))
        else:
            out.append(event)
    return out


def assert_refused(data: bytes, pattern: str, **reader_kwargs: int) -> None:
    """Feeding `data` in `pattern` raises ClientProtocolError, whose status is 400."""
    reader = RequestReader(**reader_kwargs)
    with pytest.raises(ClientProtocolError) as info:
        feed_pieces(reader, split(data, pattern))
    assert info.value.status == 400


# ----- well-formed requests -------------------------------------------------------------------

# (id, raw request, expected head attributes, decoded payload)
# Claim of the table: each request is read as exactly this head, payload and end, however split.
VALID = [
    (
        "simple-get",
        b"GET /v1.43/containers/json?all=1 HTTP/1.1\r\nHost: docker\r\n\r\n",
        {
            "method": "GET",
            "target": "/v1.43/containers/json?all=1",
            "version": (1, 1),
            "content_length": None,
            "chunked": False,
            "keep_alive": True,
            "upgrade": False,
            "expect_continue": False,
        },
        b"",
    ),
    (
        "post-content-length",
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\n"
        b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n"
        b'{"Image":"x"}',
        {"method": "POST", "content_length": 13, "chunked": False, "keep_alive": True},
        b'{"Image":"x"}',
    ),
    (
        "post-content-length-zero",
        b"POST /containers/abc/start HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n",
        {"method": "POST", "content_length": 0, "chunked": False},
        b"",
    ),
    (
        "chunked-extensions-trailers",
        b"POST /build HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b'1;quoted="a;b \\" c"\r\n \r\n'
        b"A ; bare\r\n0123456789\r\n"
        b"0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n",
        {"method": "POST", "content_length": None, "chunked": True},
        b"hello 0123456789",
    ),
    (
        "chunked-uppercase-te",
        b"PUT /archive HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        {"method": "PUT", "chunked": True},
        b"abc",
    ),
    (
        "expect-100-continue",
        b"PUT /containers/abc/archive?path=/tmp HTTP/1.1\r\nHost: docker\r\n"
        b"Expect: 100-continue\r\nContent-Length: 4\r\n\r\ndata",
        {"method": "PUT", "expect_continue": True, "content_length": 4},
        b"data",
    ),
    (
        "expect-100-continue-mixed-case",
        b"POST /x HTTP/1.1\r\nHost: docker\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nz",
        {"expect_continue": True},
        b"z",
    ),
    (
        "leading-crlfs",
        b"\r\n\r\n\r\nGET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n",
        {
            "method": "GET",
            "target": "/_ping",
            "raw": b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n",
        },
        b"",
    ),
    (
        "http10-without-host",
        b"GET /_ping HTTP/1.0\r\n\r\n",
        {"version": (1, 0), "keep_alive": False},
        b"",
    ),
    (
        "value-whitespace-htab-obs-text",
        b"GET / HTTP/1.1\r\nHost:\t docker \t\r\nX-Label: a\tb \xe9\r\n\r\n",
        {"headers": [(b"host", b"docker"), (b"x-label", b"a\tb \xe9")]},
        b"",
    ),
]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(
    ("raw", "fields", "payload"), [c[1:] for c in VALID], ids=[c[0] for c in VALID]
)
def test_valid_request_then_pipelined(
    raw: bytes, fields: dict[str, Any], payload: bytes, pattern: str
) -> None:
    """The request yields exactly its head, payload and end, and a pipelined one follows intact."""
    reader = RequestReader()
    events = feed_pieces(reader, split(raw + PIPELINED, pattern))
    assert describe(events, fields) == expected_events(fields, payload)
    assert reader.request_complete
    # Nothing of the pipelined request was consumed or parsed before next_request().
    assert reader.buffered == len(PIPELINED)

    second = normalise(reader.next_request())
    assert describe(second, ["method", "target", "raw"]) == expected_events(
        {"method": "GET", "target": "/next", "raw": PIPELINED}, b""
    )
    assert reader.take_buffered() == b""


@pytest.mark.parametrize(
    ("raw", "fields", "payload"), [c[1:] for c in VALID], ids=[c[0] for c in VALID]
)
def test_valid_request_every_two_piece_split(
    raw: bytes, fields: dict[str, Any], payload: bytes
) -> None:
    """Cut in two at any byte, the request (plus a pipelined one) reads the same as whole."""
    data = raw + PIPELINED
    for pieces in two_piece_splits(data):
        reader = RequestReader()
        events = feed_pieces(reader, pieces)
        assert describe(events, fields) == expected_events(fields, payload), pieces
        second = normalise(reader.next_request())
        assert [type(e) for e in second] == [RequestHead, EndOfRequest], pieces
        assert isinstance(second[0], RequestHead)
        assert second[0].raw == PIPELINED


@pytest.mark.parametrize("pattern", PATTERNS)
def test_head_raw_is_exactly_the_bytes_received(pattern: str) -> None:
    """`RequestHead.raw` is the head byte for byte; `headers()` lower-cases names, strips values."""
    raw = b"GET / HTTP/1.1\r\nhOsT: docker\r\nX-Mixed-Case:  v \r\n\r\n"
    reader = RequestReader()
    events = feed_pieces(reader, split(raw, pattern))
    head = events[0]
    assert isinstance(head, RequestHead)
    assert head.raw == raw
    assert head.headers() == [(b"host", b"docker"), (b"x-mixed-case", b"v")]


def test_not_complete_until_the_last_byte() -> None:
    """No event is produced before the last byte of the head, and the end only with the body."""
    head = b"POST /x HTTP/1.1\r\nHost: docker\r\nContent-Length: 3\r\n\r\n"
    reader = RequestReader()
    for byte in split(head[:-1], "bytewise"):
        assert reader.feed(byte) == []
        assert reader.waiting_for_head
    events = reader.feed(head[-1:])
    assert [type(e) for e in events] == [RequestHead]
    assert not reader.request_complete
    assert normalise(reader.feed(b"ab")) == [Body(b"ab")]
    assert normalise(reader.feed(b"c")) == [Body(b"c"), EndOfRequest()]
    assert reader.request_complete


def test_next_request_before_end_is_an_error() -> None:
    """`next_request()` may only be called once the current request has ended."""
    reader = RequestReader()
    reader.feed(b"POST /x HTTP/1.1\r\nHost: d\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(RuntimeError):
        reader.next_request()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_many_pipelined_requests(pattern: str) -> None:
    """Three pipelined requests (CL, chunked, none), with CRLFs between, come out one by one."""
    first = b"POST /a HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\nhi"
    second = (
        b"POST /b HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nyo\r\n0\r\n\r\n"
    )
    third = b"GET /c HTTP/1.1\r\nHost: d\r\n\r\n"
    reader = RequestReader()
    events = feed_pieces(reader, split(first + second + b"\r\n" + third, pattern))
    got = [describe(events, ["target"])]
    got.append(describe(normalise(reader.next_request()), ["target"]))
    got.append(describe(normalise(reader.next_request()), ["target"]))
    assert got == [
        expected_events({"target": "/a"}, b"hi"),
        expected_events({"target": "/b"}, b"yo"),
        expected_events({"target": "/c"}, b""),
    ]
    assert reader.next_request() == []
    assert reader.waiting_for_head


# ----- keep-alive, upgrade ----------------------------------------------------------------------

# (version, Connection header or None, expected keep_alive)
# Claim of the table: 1.1 defaults to keep-alive, 1.0 to close, and the Connection tokens override.
KEEP_ALIVE = [
    (b"HTTP/1.1", None, True),
    (b"HTTP/1.1", b"close", False),
    (b"HTTP/1.1", b"Close", False),
    (b"HTTP/1.1", b"keep-alive, close", False),
    (b"HTTP/1.1", b"keep-alive", True),
    (b"HTTP/1.0", None, False),
    (b"HTTP/1.0", b"keep-alive", True),
    (b"HTTP/1.0", b"Keep-Alive", True),
    (b"HTTP/1.0", b"close", False),
]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(("version", "connection", "keep_alive"), KEEP_ALIVE)
def test_keep_alive(
    version: bytes, connection: bytes | None, keep_alive: bool, pattern: str
) -> None:
    """`keep_alive` follows the version's default and the Connection header."""
    raw = b"GET / " + version + b"\r\nHost: docker\r\n"
    if connection is not None:
        raw += b"Connection: " + connection + b"\r\n"
    raw += b"\r\n"
    reader = RequestReader()
    events = feed_pieces(reader, split(raw + PIPELINED, pattern))
    assert describe(events, ["keep_alive"]) == expected_events({"keep_alive": keep_alive}, b"")
    assert normalise(reader.next_request())[0] == RequestReader().feed(PIPELINED)[0]


# (extra header lines, expected upgrade)
# Claim of the table: a request is an upgrade only with both `Connection: upgrade` and `Upgrade`.
UPGRADE = [
    (b"Connection: Upgrade\r\nUpgrade: tcp\r\n", True),
    (b"Upgrade: tcp\r\nConnection: upgrade\r\n", True),
    (b"Connection: keep-alive, Upgrade\r\nUpgrade: tcp\r\n", True),
    (b"Connection: Upgrade\r\n", False),
    (b"Upgrade: tcp\r\n", False),
    (b"", False),
]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(("lines", "upgrade"), UPGRADE)
def test_upgrade_detection(lines: bytes, upgrade: bool, pattern: str) -> None:
    """`upgrade` is set exactly when Connection names upgrade and an Upgrade header is present."""
    raw = b"POST /containers/abc/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: docker\r\n"
    raw += lines + b"\r\n"
    reader = RequestReader()
    events = feed_pieces(reader, split(raw, pattern))
    assert describe(events, ["upgrade"]) == expected_events({"upgrade": upgrade}, b"")


HIJACK = (
    b"POST /v1.43/containers/abc/attach?stream=1&stdin=1&stdout=1 HTTP/1.1\r\n"
    b"Host: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: text/plain\r\n\r\n"
)
# Raw stdin bytes: they look like HTTP and like chunked framing, and must not be touched.
RAW_STREAM = b"\x01\x00\x00\x00\x00\x00\x00\x05hello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\n\x00\xff"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_hijack_leftover_is_returned_untouched(pattern: str) -> None:
    """Bytes after an upgrade request are never parsed and come back from take_buffered() as is."""
    reader = RequestReader()
    events = feed_pieces(reader, split(HIJACK + RAW_STREAM, pattern))
    assert describe(events, ["upgrade"]) == expected_events({"upgrade": True}, b"")
    assert reader.request_complete
    assert reader.take_buffered() == RAW_STREAM
    assert reader.take_buffered() == b""


def test_hijack_leftover_every_two_piece_split() -> None:
    """Cut in two anywhere, the upgrade request ends and its leftover is returned intact."""
    data = HIJACK + RAW_STREAM
    for pieces in two_piece_splits(data):
        reader = RequestReader()
        events = feed_pieces(reader, pieces)
        assert [type(e) for e in events] == [RequestHead, EndOfRequest], pieces
        assert reader.take_buffered() == RAW_STREAM, pieces


def test_leftover_after_a_body_is_returned_untouched() -> None:
    """Bytes after a Content-Length body (including ones that are invalid HTTP) stay buffered."""
    raw = b"POST /exec/abc/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
    raw += b"Content-Length: 2\r\n\r\n{}"
    for pattern in PATTERNS:
        reader = RequestReader()
        events = feed_pieces(reader, split(raw + RAW_STREAM, pattern))
        assert describe(events, ["upgrade"]) == expected_events({"upgrade": True}, b"{}")
        assert reader.take_buffered() == RAW_STREAM


# ----- refusals -------------------------------------------------------------------------------

H = b"Host: docker\r\n"
CHUNKED_HEAD = b"POST /x HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"

# (id, bytes) -- claim of the table: each input is refused with ClientProtocolError (400).
REFUSED = [
    # request line
    ("empty-request-line", b"\r\n\r\n \r\n" + H + b"\r\n"),
    ("two-parts", b"GET /\r\n" + H + b"\r\n"),
    ("four-parts", b"GET / HTTP/1.1 extra\r\n" + H + b"\r\n"),
    ("double-space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n"),
    ("leading-space", b" GET / HTTP/1.1\r\n" + H + b"\r\n"),
    ("trailing-space", b"GET / HTTP/1.1 \r\n" + H + b"\r\n"),
    ("tab-separator", b"GET\t/ HTTP/1.1\r\n" + H + b"\r\n"),
    ("lowercase-method", b"get / HTTP/1.1\r\n" + H + b"\r\n"),
    ("mixed-case-method", b"Get / HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-with-digit", b"G3T / HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-too-long", b"A" * 21 + b" / HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-form", b"GET http://x/ HTTP/1.1\r\n" + H + b"\r\n"),
    ("authority-form", b"CONNECT docker:2375 HTTP/1.1\r\n" + H + b"\r\n"),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n"),
    ("empty-target", b"GET  HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-fragment", b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-nul", b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-control", b"GET /a\x1bb HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-del", b"GET /a\x7fb HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-tab", b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-non-ascii", b"GET /caf\xc3\xa9 HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-high-byte", b"GET /\xff HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-backslash", b"GET /a\\b HTTP/1.1\r\n" + H + b"\r\n"),
    ("target-with-space", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n"),
    ("http-2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n"),
    ("http-1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n"),
    ("http-0.9-style", b"GET /\r\n\r\n"),
    ("lowercase-version", b"GET / http/1.1\r\n" + H + b"\r\n"),
    ("version-leading-zero", b"GET / HTTP/01.1\r\n" + H + b"\r\n"),
    ("version-missing-minor", b"GET / HTTP/1\r\n" + H + b"\r\n"),
    # header fields
    ("header-without-colon", b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n\r\n"),
    ("empty-header-name", b"GET / HTTP/1.1\r\n" + H + b": value\r\n\r\n"),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : docker\r\n\r\n"),
    ("tab-before-colon", b"GET / HTTP/1.1\r\nHost\t: docker\r\n\r\n"),
    ("space-in-name", b"GET / HTTP/1.1\r\n" + H + b"X Y: z\r\n\r\n"),
    ("non-ascii-name", b"GET / HTTP/1.1\r\n" + H + b"X-\xe9: z\r\n\r\n"),
    ("obs-fold-space", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n"),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n\tc\r\n\r\n"),
    ("obs-fold-first-line", b"GET / HTTP/1.1\r\n " + H + b"\r\n"),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x00c\r\n\r\n"),
    ("ctl-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x01c\r\n\r\n"),
    ("esc-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: \x1b[31m\r\n\r\n"),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x7f\r\n\r\n"),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\rc\r\n\r\n"),
    ("vt-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x0bc\r\n\r\n"),
    # bare LF anywhere in the head
    ("bare-lf-after-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n"),
    ("bare-lf-between-headers", b"GET / HTTP/1.1\r\nHost: docker\nX-A: b\r\n\r\n"),
    ("bare-lf-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\nc\r\n\r\n"),
    ("bare-lf-terminator", b"GET / HTTP/1.1\r\n" + H + b"\n"),
    ("bare-lf-terminator-crlf", b"GET / HTTP/1.1\r\n" + H + b"\n\r\n"),
    ("lf-only-head", b"GET / HTTP/1.1\nHost: docker\n\n"),
    ("lf-cr-lf-terminator", b"GET / HTTP/1.1\r\nHost: docker\n\r\n\r\n"),
    ("bare-lf-before-request", b"\nGET / HTTP/1.1\r\n" + H + b"\r\n"),
    # Content-Length and Transfer-Encoding
    (
        "duplicate-cl-different",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ),
    (
        "duplicate-cl-equal",
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\na",
    ),
    ("cl-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1, 1\r\n\r\na"),
    (
        "cl-and-te",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "te-and-cl",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    ),
    ("te-in-http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n"),
    ("te-chunked-gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n"),
    (
        "te-gzip-chunked",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ),
    ("te-xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    (
        "te-chunked-nul",
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n",
    ),
    ("te-identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n"),
    ("te-empty", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n\r\n"),
    (
        "te-twice",
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    ("cl-non-numeric", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n"),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x10\r\n\r\n"),
    ("cl-negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n"),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +1\r\n\r\na"),
    ("cl-empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length:\r\n\r\n"),
    ("cl-inner-space", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 2\r\n\r\n"),
    ("cl-decimal", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1.0\r\n\r\na"),
    ("cl-non-ascii-digit", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \xd9\xa3\r\n\r\n"),
    ("cl-over-long", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: " + b"1" * 19 + b"\r\n\r\n"),
    ("cl-huge", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999999\r\n\r\n"),
    # Host
    ("missing-host-1.1", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("two-equal-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
    ("two-hosts-1.0", b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"),
    # Expect
    (
        "expect-unsupported",
        b"POST / HTTP/1.1\r\n" + H + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\na",
    ),
    ("expect-empty", b"GET / HTTP/1.1\r\n" + H + b"Expect:\r\n\r\n"),
    # chunked bodies
    ("chunk-size-zz", CHUNKED_HEAD + b"zz\r\nab\r\n0\r\n\r\n"),
    ("chunk-size-negative", CHUNKED_HEAD + b"-1\r\na\r\n0\r\n\r\n"),
    ("chunk-size-17-hex-digits", CHUNKED_HEAD + b"1" + b"0" * 16 + b"\r\n"),
    ("chunk-size-0x", CHUNKED_HEAD + b"0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
    ("chunk-size-empty", CHUNKED_HEAD + b"\r\na\r\n0\r\n\r\n"),
    ("chunk-size-leading-space", CHUNKED_HEAD + b" 1\r\na\r\n0\r\n\r\n"),
    ("chunk-size-plus", CHUNKED_HEAD + b"+1\r\na\r\n0\r\n\r\n"),
    ("chunk-data-no-crlf", CHUNKED_HEAD + b"3\r\nabcX\r\n0\r\n\r\n"),
    ("chunk-data-too-long", CHUNKED_HEAD + b"3\r\nabcd\r\n0\r\n\r\n"),
    ("chunk-data-cr-only", CHUNKED_HEAD + b"3\r\nabc\r0\r\n\r\n"),
    ("bare-lf-after-size", CHUNKED_HEAD + b"3\nabc\r\n0\r\n\r\n"),
    ("bare-lf-after-data", CHUNKED_HEAD + b"3\r\nabc\n0\r\n\r\n"),
    ("bare-lf-after-last-chunk", CHUNKED_HEAD + b"3\r\nabc\r\n0\n\r\n"),
    ("bare-lf-end-of-trailers", CHUNKED_HEAD + b"3\r\nabc\r\n0\r\n\n"),
    ("bare-lf-in-trailer", CHUNKED_HEAD + b"0\r\nX-A: b\nX-C: d\r\n\r\n"),
    ("trailer-without-colon", CHUNKED_HEAD + b"0\r\nnocolon\r\n\r\n"),
    ("trailer-obs-fold", CHUNKED_HEAD + b"0\r\nX-A: b\r\n c\r\n\r\n"),
    ("trailer-oversized-one-line", CHUNKED_HEAD + b"0\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n"),
    (
        "trailer-oversized-many-lines",
        CHUNKED_HEAD + b"0\r\n" + b"X-Trailer: 0123456789\r\n" * 1000 + b"\r\n",
    ),
    ("trailer-oversized-never-ends", CHUNKED_HEAD + b"0\r\nX-A: " + b"a" * 20000),
    ("chunk-size-line-never-ends", CHUNKED_HEAD + b"1;ext=" + b"v" * 5000),
]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("data", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused(data: bytes, pattern: str) -> None:
    """The input is refused with ClientProtocolError (400), however it is split."""
    assert_refused(data, pattern)


@pytest.mark.parametrize("data", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_with_trailing_request(data: bytes) -> None:
    """A valid request right after a refused one does not make the refusal go away."""
    assert_refused(data + PIPELINED, "whole")


@pytest.mark.parametrize("data", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_as_second_pipelined_request(data: bytes) -> None:
    """The same input is refused when it arrives pipelined behind a valid request."""
    reader = RequestReader()
    events = feed_pieces(reader, [PIPELINED + data])
    assert [type(e) for e in events] == [RequestHead, EndOfRequest]
    with pytest.raises(ClientProtocolError):
        reader.next_request()
        reader.feed(b"")


# ----- head size limit ------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["whole", "bytewise", "by7"])
def test_head_over_limit_refused(pattern: str) -> None:
    """A complete head one byte over `max_head_bytes` is refused; one at the limit is read."""
    limit = 256
    prefix = b"GET / HTTP/1.1\r\n" + H + b"X-Pad: "
    at_limit = prefix + b"a" * (limit - len(prefix) - 4) + b"\r\n\r\n"
    assert len(at_limit) == limit
    reader = RequestReader(max_head_bytes=limit)
    events = feed_pieces(reader, split(at_limit, pattern))
    assert [type(e) for e in events] == [RequestHead, EndOfRequest]

    over = prefix + b"a" * (limit - len(prefix) - 3) + b"\r\n\r\n"
    assert_refused(over, pattern, max_head_bytes=limit)


@pytest.mark.parametrize("piece_size", [1, 10, 1000])
def test_endless_head_refused_as_soon_as_over_limit(piece_size: int) -> None:
    """A head that never ends is refused once the buffered bytes pass the limit, not later."""
    reader = RequestReader()
    fed = 0
    piece = b"GET / HTTP/1.1\r\nHost: docker\r\nX-Pad: "
    with pytest.raises(ClientProtocolError):
        while fed <= DEFAULT_MAX_HEAD_BYTES + piece_size:
            reader.feed(piece)
            fed += len(piece)
            piece = b"a" * piece_size
    assert fed <= DEFAULT_MAX_HEAD_BYTES + piece_size + 64


def test_endless_header_lines_refused() -> None:
    """Many small, valid header lines with no end of head are refused at the limit."""
    reader = RequestReader(max_head_bytes=1024)
    reader.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ClientProtocolError):
        for _ in range(200):
            reader.feed(b"X-A: b\r\n")


def test_body_does_not_count_towards_the_head_limit() -> None:
    """A small head followed by a large body in the same buffer is accepted."""
    body = b"x" * 5000
    raw = b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5000\r\n\r\n" + body
    reader = RequestReader(max_head_bytes=128)
    events = feed_pieces(reader, [raw])
    assert events[1:] == [Body(body), EndOfRequest()]


def test_empty_lines_before_each_head_do_not_add_up_across_requests() -> None:
    """One empty line before every request of a long keep-alive connection: each head starts
    the count of skipped lines again, whether it came with them or in a read of its own."""
    reader = RequestReader(max_head_bytes=64)
    head = b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(100):
        assert reader.feed(b"\r\n") == []
        events = reader.feed(head)
        assert isinstance(events[0], RequestHead) and events[1:] == [EndOfRequest()]
        assert reader.next_request() == []


def test_a_read_of_exactly_one_head_gives_the_events_of_the_general_path() -> None:
    """The whole-head shortcut and the buffered path agree, with and without a body."""
    heads = [
        b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    for raw in heads:
        whole, pieces = RequestReader(), RequestReader()
        shortcut = whole.feed(raw)
        general = pieces.feed(raw[:5]) + pieces.feed(raw[5:])
        assert shortcut == general
        assert whole.request_complete == pieces.request_complete
        body = b"3\r\nabc\r\n0\r\n\r\n" if b"chunked" in raw else b"abc"
        if b"/x" in raw:
            assert whole.feed(body) == pieces.feed(body)
            assert whole.request_complete and pieces.request_complete
