"""RequestReader taking a keep-alive client's repeated head (issue 14, fourth pass): the same
bytes, alone in one read, as the last head without a body read that way, give the same head
object without another parse; anything else is read the general way."""

from __future__ import annotations

import pytest

from dockgate.http.errors import ClientProtocolError
from dockgate.http.request import EndOfRequest, RequestHead, RequestReader

PING = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"


def _round(reader: RequestReader, data: bytes) -> list[object]:
    events: list[object] = list(reader.feed(data))
    if events and isinstance(events[-1], EndOfRequest):
        events.extend(reader.next_request())
    return events


def test_the_same_bytes_give_the_same_head_and_its_end() -> None:
    reader = RequestReader()
    first = _round(reader, PING)
    second = _round(reader, PING)
    assert isinstance(first[0], RequestHead)
    assert second[0] is first[0]
    assert [type(e) for e in second] == [RequestHead, EndOfRequest]
    assert not reader.buffered


def test_a_repeat_split_or_with_more_is_read_the_general_way() -> None:
    """A repeated head split over reads, or followed by the next request in the same read,
    is framed as any other: no bytes are lost or taken twice."""
    reader = RequestReader()
    _round(reader, PING)
    assert reader.feed(PING[:10]) == []
    events = reader.feed(PING[10:])
    assert [type(e) for e in events] == [RequestHead, EndOfRequest]
    reader.next_request()
    events = reader.feed(PING + PING)
    assert [type(e) for e in events] == [RequestHead, EndOfRequest]
    assert reader.buffered == len(PING)
    assert [type(e) for e in reader.next_request()] == [RequestHead, EndOfRequest]


def test_a_head_with_a_body_is_not_taken_for_a_repeat() -> None:
    """A head with a body is never remembered: the same bytes again frame a body again."""
    post = b"POST /x HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n"
    reader = RequestReader()
    assert [type(e) for e in reader.feed(post + b"hi")][-1] is EndOfRequest
    reader.next_request()
    events = reader.feed(post)
    assert [type(e) for e in events] == [RequestHead]
    assert not reader.request_complete


def test_a_large_head_is_not_remembered() -> None:
    """Only ordinary heads (1 KiB) are kept by the reader, as by the parse cache."""
    large = b"GET /_ping HTTP/1.1\r\nHost: d\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n"
    reader = RequestReader()
    first = _round(reader, large)
    second = _round(reader, large)
    assert second[0] == first[0]
    assert reader._last is None


def test_a_repeat_before_the_last_request_ended_is_buffered() -> None:
    """Bytes that repeat the last head while the request before is still running wait in
    the buffer, as pipelined bytes do."""
    reader = RequestReader()
    reader.feed(PING)
    assert reader.feed(PING) == []
    assert reader.buffered == len(PING)


def test_a_different_head_is_validated() -> None:
    """Bytes that differ from the last head are checked as any head."""
    reader = RequestReader()
    _round(reader, PING)
    with pytest.raises(ClientProtocolError):
        reader.feed(b"GET /_ping HTTP/1.1\r\nHost d\r\n\r\n")
