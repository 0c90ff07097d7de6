"""Unit tests of the daemon response reader (`dockgate.http.response.ResponseReader`).

Every case is fed whole, byte by byte and cut in two at every position. Body bytes are relayed as
the daemon framed them, so the relayed bytes must equal the raw body (chunk framing included),
and the end of a response must be reported exactly once, by the feed that completes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from dockgate.http.errors import UpstreamError
from dockgate.http.response import (
    MAX_RESPONSE_HEAD_BYTES,
    EndOfResponse,
    Framing,
    ResponseBody,
    ResponseEvent,
    ResponseHead,
    ResponseReader,
)
from support.splits import two_piece_splits

# ----- helpers --------------------------------------------------------------------------------


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def all_splits(data: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and every cut in two."""
    yield [data]
    yield bytewise(data)
    yield from two_piece_splits(data)


def normalise(events: Iterable[ResponseEvent]) -> list[ResponseEvent]:
    """Merge consecutive ResponseBody events (and drop empty ones) to compare any split."""
    out: list[ResponseEvent] = []
    for event in events:
        if isinstance(event, ResponseBody):
            if not event.data:
                continue
            if out and isinstance(out[-1], ResponseBody):
                out[-1] = ResponseBody(out[-1].data + event.data)
                continue
        out.append(event)
    return out


def feed_pieces(
    reader: ResponseReader, pieces: Iterable[bytes]
) -> tuple[list[ResponseEvent], list[int]]:
    """Feed every piece; return the normalised events and the indexes of feeds that ended it."""
    events: list[ResponseEvent] = []
    ends: list[int] = []
    for index, piece in enumerate(pieces):
        got = reader.feed(piece)
        ends.extend(index for e in got if isinstance(e, EndOfResponse))
        events.extend(got)
    return normalise(events), ends


def summary(events: list[ResponseEvent]) -> list[object]:
    """Heads reduced to (status, framing), the rest as is."""
    return [("head", e.status, e.framing) if isinstance(e, ResponseHead) else e for e in events]


# ----- Content-Length and chunked bodies ------------------------------------------------------

LENGTH_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n"
LENGTH_BODY = b'[{"Id":"abc","Names":["x"]}'

CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)
# (id, raw chunked body) -- claim of the table: each body is relayed byte for byte and ends once.
CHUNKED_BODIES = [
    ("empty", b"0\r\n\r\n"),
    ("one-chunk", b"5\r\nhello\r\n0\r\n\r\n"),
    (
        "several-chunks-ext",
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n1A\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n",
    ),
    ("data-looks-like-end", b"5\r\n0\r\n\r\n\r\n0\r\n\r\n"),
    ("trailers", b"3\r\nabc\r\n0\r\nX-Trailer: v\r\nX-Other: w\r\n\r\n"),
]


def test_length_body_every_split() -> None:
    """A Content-Length body, split anywhere, is relayed exactly and ends once, at its last byte."""
    data = LENGTH_HEAD + LENGTH_BODY
    for pieces in all_splits(data):
        reader = ResponseReader("GET")
        events, ends = feed_pieces(reader, pieces)
        assert summary(events) == [
            ("head", 200, Framing.LENGTH),
            ResponseBody(LENGTH_BODY),
            EndOfResponse(),
        ], pieces
        assert ends == [len(pieces) - 1], pieces
        assert reader.done and reader.keep_alive
        assert isinstance(events[0], ResponseHead)
        assert events[0].raw == LENGTH_HEAD


def test_length_body_excess_bytes_not_relayed() -> None:
    """Bytes past the declared Content-Length (a daemon bug) are not relayed."""
    for pieces in all_splits(LENGTH_HEAD + LENGTH_BODY):
        pieces[-1] += b"GARBAGE"
        reader = ResponseReader("GET")
        events, ends = feed_pieces(reader, pieces)
        assert events[1:] == [ResponseBody(LENGTH_BODY), EndOfResponse()], pieces
        assert len(ends) == 1


def test_length_body_not_ended_early() -> None:
    """Until the last byte of a Content-Length body, the response is not done."""
    reader = ResponseReader("GET")
    events = reader.feed(LENGTH_HEAD + LENGTH_BODY[:-1])
    assert not any(isinstance(e, EndOfResponse) for e in events)
    assert not reader.done
    assert reader.feed(LENGTH_BODY[-1:]) == [ResponseBody(LENGTH_BODY[-1:]), EndOfResponse()]
    assert reader.done


@pytest.mark.parametrize("body", [c[1] for c in CHUNKED_BODIES], ids=[c[0] for c in CHUNKED_BODIES])
def test_chunked_body_every_split(body: bytes) -> None:
    """Split anywhere (even inside `0\\r\\n\\r\\n`), the raw chunked bytes are relayed as they are
    and the end is reported exactly once, by the feed that completes the terminator."""
    data = CHUNKED_HEAD + body
    for pieces in all_splits(data):
        reader = ResponseReader("GET")
        events, ends = feed_pieces(reader, pieces)
        assert summary(events) == [
            ("head", 200, Framing.CHUNKED),
            *([ResponseBody(body)] if body else []),
            EndOfResponse(),
        ], pieces
        assert ends == [len(pieces) - 1], pieces
        assert reader.done and reader.keep_alive


@pytest.mark.parametrize("body", [c[1] for c in CHUNKED_BODIES], ids=[c[0] for c in CHUNKED_BODIES])
def test_chunked_not_done_before_terminator_complete(body: bytes) -> None:
    """Every strict prefix of a chunked body leaves the response not done, with no end event."""
    for cut in range(len(body)):
        reader = ResponseReader("GET")
        events = reader.feed(CHUNKED_HEAD + body[:cut])
        assert not any(isinstance(e, EndOfResponse) for e in events), cut
        assert not reader.done, cut


# (id, what the daemon sends after the chunked terminator, in the same read)
EXCESS = [
    ("next-response-head", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ("partial-status-line", b"HTTP/1.1 2"),
    ("garbage", b"GARBAGE"),
]


@pytest.mark.parametrize("excess", [c[1] for c in EXCESS], ids=[c[0] for c in EXCESS])
def test_chunked_excess_bytes_not_relayed(excess: bytes) -> None:
    """Bytes past the chunked terminator are not relayed as body, as with Content-Length."""
    # Relaying them would put bytes the daemon did not frame into the client's connection (a
    # whole second response, in the first case). Refusing with UpstreamError is also acceptable.
    body = b"3\r\nabc\r\n0\r\n\r\n"
    reader = ResponseReader("GET")
    try:
        events, ends = feed_pieces(reader, [CHUNKED_HEAD + body + excess])
    except UpstreamError:
        return
    assert events[1:] == [ResponseBody(body), EndOfResponse()]
    assert ends == [0]


def test_chunked_invalid_framing_raises() -> None:
    """A chunk-size line that is not hex is an UpstreamError."""
    reader = ResponseReader("GET")
    with pytest.raises(UpstreamError):
        reader.feed(CHUNKED_HEAD + b"zz\r\nab\r\n0\r\n\r\n")


# ----- 1xx, no-body responses, 101 --------------------------------------------------------------

FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# (id, informational heads, final response) -- claim: each 1xx is relayed as its own head event,
# then the final response is read as usual.
INFORMATIONAL = [
    ("100-continue", [b"HTTP/1.1 100 Continue\r\n\r\n"]),
    (
        "100-then-103",
        [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"],
    ),
    ("100-with-content-length", [b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n"]),
]


@pytest.mark.parametrize("heads", [c[1] for c in INFORMATIONAL], ids=[c[0] for c in INFORMATIONAL])
def test_informational_then_final(heads: list[bytes]) -> None:
    """1xx heads come out as informational head events, then the final response, in any split."""
    data = b"".join(heads) + FINAL
    for pieces in all_splits(data):
        reader = ResponseReader("PUT")
        events, ends = feed_pieces(reader, pieces)
        assert [e.raw for e in events if isinstance(e, ResponseHead)][:-1] == heads, pieces
        assert [e.informational for e in events if isinstance(e, ResponseHead)] == [True] * len(
            heads
        ) + [False]
        assert summary(events)[len(heads) :] == [
            ("head", 200, Framing.LENGTH),
            ResponseBody(b"ok"),
            EndOfResponse(),
        ], pieces
        assert ends == [len(pieces) - 1], pieces
        assert reader.done


def test_informational_alone_is_not_the_end() -> None:
    """After a 100 Continue alone, the response is neither done nor is its head."""
    reader = ResponseReader("PUT")
    events = reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert [(type(e), getattr(e, "status", None)) for e in events] == [(ResponseHead, 100)]
    assert not reader.head_done
    assert not reader.done
    with pytest.raises(UpstreamError):
        reader.eof()


# (id, method, head) -- claim of the table: these responses have no body whatever their headers.
NO_BODY = [
    ("204-with-cl", "DELETE", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
    ("304-with-cl", "GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"),
    ("head-with-cl", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    ("head-with-chunked", "HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("head-without-length", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"),
    ("204-with-chunked", "POST", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ("content-length-zero", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
]


@pytest.mark.parametrize(("method", "head"), [c[1:] for c in NO_BODY], ids=[c[0] for c in NO_BODY])
def test_no_body(method: str, head: bytes) -> None:
    """The response ends with its head, in any split, and keeps the connection reusable."""
    for pieces in all_splits(head):
        reader = ResponseReader(method)
        events, ends = feed_pieces(reader, pieces)
        assert len(events) == 2, pieces
        assert isinstance(events[0], ResponseHead)
        assert events[0].framing is Framing.NONE
        assert events[1] == EndOfResponse()
        assert ends == [len(pieces) - 1], pieces
        assert reader.done and reader.keep_alive
        assert reader.eof() == []


SWITCHED = (
    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)
# Container output that looks like HTTP and chunked framing; it must come back untouched.
TUNNEL = b"\x01\x00\x00\x00\x00\x00\x00\x0bHTTP/1.1 2\r\n0\r\n\r\n\x00\xff"


def test_switching_protocols_trailing_bytes() -> None:
    """Tunnel bytes in the same buffer as the end of a 101 head come back exactly as `trailing`."""
    data = SWITCHED + TUNNEL
    for cut in range(len(SWITCHED)):
        pieces = [data[:cut], data[cut:]] if cut else [data]
        reader = ResponseReader("POST")
        events, ends = feed_pieces(reader, pieces)
        assert summary(events) == [("head", 101, Framing.SWITCHED), EndOfResponse(TUNNEL)], cut
        assert ends == [len(pieces) - 1]
        assert isinstance(events[0], ResponseHead)
        assert events[0].raw == SWITCHED
        assert events[0].raw_stream
        assert reader.done


def test_switching_protocols_bytewise_without_trailing() -> None:
    """Fed byte by byte, a 101 ends at the last byte of its head with nothing trailing."""
    reader = ResponseReader("POST")
    events, ends = feed_pieces(reader, bytewise(SWITCHED))
    assert summary(events) == [("head", 101, Framing.SWITCHED), EndOfResponse(b"")]
    assert ends == [len(SWITCHED) - 1]


def test_continue_then_switching_protocols() -> None:
    """A 100 Continue before a 101 is relayed, and the trailing bytes still come back whole."""
    data = b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCHED + TUNNEL
    reader = ResponseReader("POST")
    events, _ = feed_pieces(reader, [data])
    assert summary(events) == [
        ("head", 100, Framing.NONE),
        ("head", 101, Framing.SWITCHED),
        EndOfResponse(TUNNEL),
    ]


# ----- until-close bodies and eof() -----------------------------------------------------------

UNTIL_CLOSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
UNTIL_CLOSE_BODY = b"line 1\nline 2\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"


def test_until_close_body_ended_by_eof() -> None:
    """A body with no length is relayed as it comes and ends only at eof(), once."""
    for pieces in all_splits(UNTIL_CLOSE_HEAD + UNTIL_CLOSE_BODY):
        reader = ResponseReader("GET")
        events, ends = feed_pieces(reader, pieces)
        assert ends == [], pieces
        assert summary(events) == [
            ("head", 200, Framing.UNTIL_CLOSE),
            ResponseBody(UNTIL_CLOSE_BODY),
        ]
        assert not reader.done
        assert not reader.keep_alive
        assert reader.eof() == [EndOfResponse()]
        assert reader.done
        assert reader.eof() == []


def test_until_close_empty_body() -> None:
    """eof() right after an until-close head ends the (empty) response."""
    reader = ResponseReader("GET")
    events, _ = feed_pieces(reader, [UNTIL_CLOSE_HEAD])
    assert summary(events) == [("head", 200, Framing.UNTIL_CLOSE)]
    assert reader.eof() == [EndOfResponse()]


# (id, method, bytes received before the daemon closed) -- claim of the table: eof() raises.
EARLY_EOF = [
    ("nothing", "GET", b""),
    ("partial-status-line", "GET", b"HTTP/1.1 20"),
    ("partial-head", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"),
    ("head-cr-lf-cr", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r"),
    ("length-no-body", "GET", LENGTH_HEAD),
    ("length-partial-body", "GET", LENGTH_HEAD + LENGTH_BODY[:-1]),
    ("chunked-no-body", "GET", CHUNKED_HEAD),
    ("chunked-mid-size", "GET", CHUNKED_HEAD + b"1"),
    ("chunked-mid-data", "GET", CHUNKED_HEAD + b"5\r\nhel"),
    ("chunked-before-last-chunk", "GET", CHUNKED_HEAD + b"5\r\nhello\r\n"),
    ("chunked-last-chunk-0", "GET", CHUNKED_HEAD + b"5\r\nhello\r\n0"),
    ("chunked-last-chunk-0-cr", "GET", CHUNKED_HEAD + b"5\r\nhello\r\n0\r"),
    ("chunked-last-chunk-0-crlf", "GET", CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n"),
    ("chunked-last-chunk-0-crlf-cr", "GET", CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n\r"),
    ("chunked-in-trailers", "GET", CHUNKED_HEAD + b"0\r\nX-T: v\r\n"),
    ("after-100-continue", "PUT", b"HTTP/1.1 100 Continue\r\n\r\n"),
]


@pytest.mark.parametrize(
    ("method", "data"), [c[1:] for c in EARLY_EOF], ids=[c[0] for c in EARLY_EOF]
)
def test_eof_before_complete_raises(method: str, data: bytes) -> None:
    """eof() before the response is complete (head, length or chunked body) is an UpstreamError."""
    for pieces in ([data], bytewise(data)):
        reader = ResponseReader(method)
        feed_pieces(reader, pieces)
        assert not reader.done
        with pytest.raises(UpstreamError) as info:
            reader.eof()
        assert info.value.status == 502


def test_eof_after_complete_is_harmless() -> None:
    """eof() after a complete Content-Length or chunked response returns no event."""
    for data in (LENGTH_HEAD + LENGTH_BODY, CHUNKED_HEAD + b"0\r\n\r\n"):
        reader = ResponseReader("GET")
        feed_pieces(reader, [data])
        assert reader.done
        assert reader.eof() == []


# ----- head attributes ------------------------------------------------------------------------

# (content type, raw_stream) -- claim of the table: Docker's hijack media types set raw_stream.
CONTENT_TYPES = [
    (b"application/vnd.docker.raw-stream", True),
    (b"application/vnd.docker.multiplexed-stream", True),
    (b"Application/VND.Docker.Raw-Stream", True),
    (b"application/json", False),
    (b"text/plain; charset=utf-8", False),
    (None, False),
]


@pytest.mark.parametrize(("content_type", "raw_stream"), CONTENT_TYPES)
@pytest.mark.parametrize("status", [b"101 UPGRADED", b"200 OK"])
def test_raw_stream(content_type: bytes | None, raw_stream: bool, status: bytes) -> None:
    """`raw_stream` is set by the raw-stream and multiplexed-stream content types only."""
    head = b"HTTP/1.1 " + status + b"\r\n"
    if content_type is not None:
        head += b"Content-Type: " + content_type + b"\r\n"
    head += b"\r\n"
    for pieces in ([head], bytewise(head)):
        events, _ = feed_pieces(ResponseReader("POST"), pieces)
        assert isinstance(events[0], ResponseHead)
        assert events[0].raw_stream is raw_stream


def test_old_style_hijack_is_until_close_raw_stream() -> None:
    """A 200 with a raw-stream type and no length is an until-close raw stream."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
    events, ends = feed_pieces(ResponseReader("POST"), [head + TUNNEL])
    assert isinstance(events[0], ResponseHead)
    assert (events[0].framing, events[0].raw_stream, events[0].keep_alive) == (
        Framing.UNTIL_CLOSE,
        True,
        False,
    )
    assert events[1:] == [ResponseBody(TUNNEL)]
    assert ends == []


# (status line, extra headers, keep_alive) -- claim of the table: keep_alive follows the version
# default and the Connection header; HTTP/1.0 and `Connection: close` responses close.
KEEP_ALIVE = [
    (b"HTTP/1.1 200 OK", b"", True),
    (b"HTTP/1.1 200 OK", b"Connection: close\r\n", False),
    (b"HTTP/1.1 200 OK", b"Connection: Close\r\n", False),
    (b"HTTP/1.1 200 OK", b"Connection: keep-alive\r\n", True),
    (b"HTTP/1.0 200 OK", b"", False),
    (b"HTTP/1.0 200 OK", b"Connection: close\r\n", False),
    (b"HTTP/1.0 200 OK", b"Connection: keep-alive\r\n", True),
]


@pytest.mark.parametrize(("status_line", "extra", "keep_alive"), KEEP_ALIVE)
@pytest.mark.parametrize(
    "body_headers",
    [b"Content-Length: 2\r\n\r\nok", b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
    ids=["length", "chunked"],
)
def test_keep_alive(
    status_line: bytes, extra: bytes, keep_alive: bool, body_headers: bytes
) -> None:
    """The head's and the reader's keep_alive agree and follow version and Connection."""
    data = status_line + b"\r\n" + extra + body_headers
    for pieces in ([data], bytewise(data)):
        reader = ResponseReader("GET")
        events, ends = feed_pieces(reader, pieces)
        assert isinstance(events[0], ResponseHead)
        assert events[0].keep_alive is keep_alive
        assert reader.keep_alive is keep_alive
        assert reader.done and len(ends) == 1


def test_informational_head_does_not_set_keep_alive() -> None:
    """A `Connection: close` on a 100 Continue does not decide the final response's keep-alive."""
    data = b"HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n" + FINAL
    reader = ResponseReader("PUT")
    feed_pieces(reader, [data])
    assert reader.done and reader.keep_alive


# (id, bytes) -- claim of the table: an invalid status line is an UpstreamError.
BAD_STATUS = [
    ("garbage", b"hello\r\n\r\n"),
    ("empty", b"\r\n\r\n"),
    ("http2", b"HTTP/2 200 OK\r\n\r\n"),
    ("http-2.0", b"HTTP/2.0 200 OK\r\n\r\n"),
    ("http-1.2", b"HTTP/1.2 200 OK\r\n\r\n"),
    ("lowercase", b"http/1.1 200 OK\r\n\r\n"),
    ("no-status", b"HTTP/1.1 OK\r\n\r\n"),
    ("two-digit-status", b"HTTP/1.1 20 OK\r\n\r\n"),
    ("four-digit-status", b"HTTP/1.1 2000 OK\r\n\r\n"),
    ("status-no-space", b"HTTP/1.1 200OK\r\n\r\n"),
    ("double-space", b"HTTP/1.1  200 OK\r\n\r\n"),
    ("leading-space", b" HTTP/1.1 200 OK\r\n\r\n"),
    ("https", b"HTTPS/1.1 200 OK\r\n\r\n"),
    ("final-after-100", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2x0 OK\r\n\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in BAD_STATUS], ids=[c[0] for c in BAD_STATUS])
def test_invalid_status_line_raises(data: bytes) -> None:
    """An invalid status line is an UpstreamError (502), however it is split."""
    for pieces in ([data], bytewise(data)):
        with pytest.raises(UpstreamError) as info:
            feed_pieces(ResponseReader("GET"), pieces)
        assert info.value.status == 502


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: abc\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 1\r\nContent-Length: 2\r\n",
    ],
    ids=["non-numeric", "negative", "conflicting"],
)
def test_invalid_content_length_raises(headers: bytes) -> None:
    """A Content-Length that is not one decimal number is an UpstreamError."""
    with pytest.raises(UpstreamError):
        ResponseReader("GET").feed(b"HTTP/1.1 200 OK\r\n" + headers + b"\r\nab")


def test_response_head_too_large_raises() -> None:
    """A head that grows past the limit without ending is an UpstreamError."""
    reader = ResponseReader("GET")
    reader.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(UpstreamError):
        for _ in range(MAX_RESPONSE_HEAD_BYTES // 1000 + 2):
            reader.feed(b"X-Pad: " + b"a" * 991 + b"\r\n")


# ----- the head cache ---------------------------------------------------------------------------

_CACHED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Mon, 07 Dec 2026 09:00:00 GMT\r\n\r\n"
)


def test_a_remembered_head_frames_a_head_request_and_a_get_each_as_its_own() -> None:
    """The same head answers a HEAD (no body) and a GET (5 bytes), in either order, however
    often: what is remembered of a head depends on the request's method too."""
    for method in ("HEAD", "GET", "HEAD", "GET"):
        reader = ResponseReader(method)
        events = reader.feed(_CACHED_HEAD + (b"hello" if method == "GET" else b""))
        head = events[0]
        assert isinstance(head, ResponseHead)
        if method == "HEAD":
            assert head.framing is Framing.NONE
            assert events[1:] == [EndOfResponse()]
        else:
            assert head.framing is Framing.LENGTH
            assert events[1:] == [ResponseBody(b"hello"), EndOfResponse()]
        assert reader.done and reader.keep_alive


def test_each_response_gets_a_head_of_its_own() -> None:
    """The relay rewrites a head's bytes in place (the browser guard's headers): a remembered
    head must not carry one response's rewrite into the next."""
    first = ResponseReader("GET").feed(_CACHED_HEAD)[0]
    assert isinstance(first, ResponseHead)
    first.raw = b"rewritten"
    second = ResponseReader("GET").feed(_CACHED_HEAD)[0]
    assert isinstance(second, ResponseHead)
    assert second is not first and second.raw == _CACHED_HEAD


def test_a_remembered_chunked_head_starts_a_fresh_chunk_tracker() -> None:
    """Two chunked answers with the same head: each reader finds its own body's end."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for _ in range(2):
        reader = ResponseReader("GET")
        reader.feed(head + b"3\r\nabc\r\n")
        assert not reader.done
        assert reader.relay_body(b"0\r\n\r\n") == (b"0\r\n\r\n", True)


def test_an_invalid_head_is_refused_every_time() -> None:
    """A head that fails is never remembered as if it had passed."""
    bad = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"
    for _ in range(2):
        with pytest.raises(UpstreamError, match="Content-Length"):
            ResponseReader("GET").feed(bad)


# ----- the whole-answer shortcut (ResponseReader.whole) ---------------------------------------

PING = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
)
WHOLE_CASES = [
    # (method, the daemon's bytes, whether they are one whole final answer with nothing after)
    ("GET", PING + b"OK", True),
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\n", True),
    ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", True),
    ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", True),
    ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", True),
    ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK", True),
    ("GET", PING + b"O", False),  # a part of the body
    ("GET", PING + b"OKX", False),  # more than the body
    ("GET", PING[:-2], False),  # a part of the head
    ("GET", b"HTTP/1.1 204 No Content\r\n\r\nX", False),
    ("GET", b"HTTP/1.1 100 Continue\r\n\r\n" + PING + b"OK", False),
    ("GET", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: tcp\r\n\r\n", False),
    ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    ("GET", b"HTTP/1.1 200 OK\r\n\r\nuntil close", False),
]


@pytest.mark.parametrize(("method", "data", "whole"), WHOLE_CASES)
def test_whole_answer_shortcut_agrees_with_feed(method: str, data: bytes, whole: bool) -> None:
    """`whole` gives a whole final answer's status, head and body as `feed` reads them, leaving
    the reader in the same state; for anything else it gives None and `feed` reads the same
    bytes as if `whole` had not been asked (a head seen before or not)."""
    for _ in range(2):  # a head not seen yet, then the same head again (remembered)
        reference = ResponseReader(method)
        expected = reference.feed(data)
        reader = ResponseReader(method)
        got = reader.whole(data)
        if got is None:
            assert reader.feed(data) == expected
            continue
        assert whole
        head, *rest = expected
        assert isinstance(head, ResponseHead)
        body = b"".join(e.data for e in rest if isinstance(e, ResponseBody))
        assert got == (head.status, head.raw, body)
        assert isinstance(rest[-1], EndOfResponse)
        assert (reader.done, reader.keep_alive, reader.head_done) == (True, head.keep_alive, True)
    if whole:
        assert ResponseReader(method).whole(data) is not None  # seen: the shortcut is taken
    else:
        assert ResponseReader(method).whole(data) is None
