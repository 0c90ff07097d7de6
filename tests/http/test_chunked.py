"""Unit tests of the strict chunked decoder (`dockgate.http.chunked.ChunkedDecoder`).

Every case is fed whole, split at fixed strides, byte by byte and cut in two at every position,
and followed by trailing data that must come back untouched as the leftover.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from dockgate.http.chunked import MAX_SIZE_LINE_BYTES, MAX_TRAILER_BYTES, ChunkedDecoder
from dockgate.http.errors import ClientProtocolError
from support.splits import split, two_piece_splits

PATTERNS = ["whole", "bytewise", "by2", "by5"]  # for support.splits.split

# Whatever follows the body: a pipelined request, with bytes that look like chunk framing.
TRAILING = b"0\r\n\r\nGET / HTTP/1.1\r\nHost: d\r\n\r\n"


def decode(pieces: Iterable[bytes]) -> tuple[bytes, bytes, bool, int]:
    """Feed the pieces; return (payload, leftover, done, index of the feed that ended the body).

    The payload pieces are joined (normalising however the decoder chose to cut them); leftover
    must only appear once the body is done.
    """
    decoder = ChunkedDecoder()
    payload: list[bytes] = []
    leftover: list[bytes] = []
    ended_at = -1
    for index, piece in enumerate(pieces):
        was_done = decoder.done
        got, rest = decoder.feed(piece)
        if was_done:
            assert got == [], "payload after the end of the body"
        payload.extend(got)
        if rest:
            assert decoder.done, "leftover returned before the body ended"
        leftover.append(rest)
        if decoder.done and ended_at < 0:
            ended_at = index
    return b"".join(payload), b"".join(leftover), decoder.done, ended_at


# (id, chunked body, decoded payload) -- claim of the table: each body decodes to this payload.
VALID = [
    ("empty", b"0\r\n\r\n", b""),
    ("one-chunk", b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("two-chunks", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    ("upper-hex", b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("lower-hex", b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    ("leading-zeros", b"0003\r\nabc\r\n000\r\n\r\n", b"abc"),
    ("sixteen-digits", b"0000000000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
    ("extension-token", b"3;foo\r\nabc\r\n0;bar\r\n\r\n", b"abc"),
    ("extension-value", b"3;foo=bar\r\nabc\r\n0\r\n\r\n", b"abc"),
    ("extension-bws", b"3 ; foo = bar ;baz\t\r\nabc\r\n0\r\n\r\n", b"abc"),
    ("extension-quoted", b'3;q="a b;c=\\"d\\""\r\nabc\r\n0\r\n\r\n', b"abc"),
    ("trailing-whitespace", b"3 \t\r\nabc\r\n0\r\n\r\n", b"abc"),
    ("trailers", b"3\r\nabc\r\n0\r\nX-A: b\r\nX-C:d\r\n\r\n", b"abc"),
    ("data-looks-like-framing", b"7\r\n0\r\n\r\n\n\n\r\n0\r\n\r\n", b"0\r\n\r\n\n\n"),
    ("binary-data", b"4\r\n\x00\xff\r\n\r\n0\r\n\r\n", b"\x00\xff\r\n"),
    ("big-chunk", b"1000\r\n" + b"z" * 4096 + b"\r\n0\r\n\r\n", b"z" * 4096),
    (
        "trailer-just-under-limit",
        b"0\r\nX: " + b"a" * (MAX_TRAILER_BYTES - 7) + b"\r\n\r\n",
        b"",
    ),
    (
        "size-line-at-limit",
        b"3;" + b"e" * (MAX_SIZE_LINE_BYTES - 2) + b"\r\nabc\r\n0\r\n\r\n",
        b"abc",
    ),
]
VALID_IDS = [c[0] for c in VALID]
VALID_ARGS = [c[1:] for c in VALID]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(("body", "payload"), VALID_ARGS, ids=VALID_IDS)
def test_valid_body(body: bytes, payload: bytes, pattern: str) -> None:
    """The body decodes to its payload and ends; what follows comes back untouched as leftover."""
    pieces = split(body + TRAILING, pattern)
    got, leftover, done, _ = decode(pieces)
    assert (got, leftover, done) == (payload, TRAILING, True)


@pytest.mark.parametrize(("body", "payload"), VALID_ARGS, ids=VALID_IDS)
def test_valid_body_every_two_piece_split(body: bytes, payload: bytes) -> None:
    """Cut in two anywhere, the body decodes the same and the leftover is exact."""
    if len(body) > 512:
        pytest.skip("long body: covered by the stride patterns")
    for pieces in two_piece_splits(body + TRAILING):
        assert decode(pieces)[:3] == (payload, TRAILING, True), pieces


@pytest.mark.parametrize(("body", "payload"), VALID_ARGS, ids=VALID_IDS)
def test_done_exactly_at_the_last_byte(body: bytes, payload: bytes) -> None:
    """Fed byte by byte with no trailing data, the body is done at its last byte, not before."""
    pieces = split(body, "bytewise")
    got, leftover, done, ended_at = decode(pieces)
    assert (got, leftover, done, ended_at) == (payload, b"", True, len(pieces) - 1)


def test_not_done_before_the_end() -> None:
    """A body cut just before the final CRLF is not done and returns no leftover."""
    decoder = ChunkedDecoder()
    pieces, rest = decoder.feed(b"3\r\nabc\r\n0\r\nX-A: b\r\n")
    assert (pieces, rest, decoder.done) == ([b"abc"], b"", False)
    assert decoder.feed(b"\r") == ([], b"")
    assert not decoder.done
    assert decoder.feed(b"\nrest") == ([], b"rest")
    assert decoder.done


def test_feed_after_done_returns_everything_as_leftover() -> None:
    """Once done, each later feed is returned whole as leftover and decodes nothing."""
    decoder = ChunkedDecoder()
    assert decoder.feed(b"0\r\n\r\n") == ([], b"")
    assert decoder.feed(b"1\r\nx\r\n") == ([], b"1\r\nx\r\n")
    assert decoder.feed(b"zz") == ([], b"zz")


def test_payload_is_relayed_as_it_arrives() -> None:
    """Chunk data is returned as soon as it arrives, before the chunk is complete."""
    decoder = ChunkedDecoder()
    assert decoder.feed(b"a\r\nhel") == ([b"hel"], b"")
    assert decoder.feed(b"lo") == ([b"lo"], b"")
    assert decoder.feed(b"world\r\n") == ([b"world"], b"")


# (id, bytes) -- claim of the table: each input is refused with ClientProtocolError (400).
INVALID = [
    ("size-zz", b"zz\r\nab\r\n0\r\n\r\n"),
    ("size-negative", b"-1\r\na\r\n0\r\n\r\n"),
    ("size-17-hex-digits", b"1" + b"0" * 16 + b"\r\n"),
    ("size-17-zero-digits", b"0" * 17 + b"\r\n\r\n"),
    ("size-0x-prefix", b"0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n"),
    ("size-plus", b"+3\r\nabc\r\n0\r\n\r\n"),
    ("size-empty", b"\r\nabc\r\n0\r\n\r\n"),
    ("size-leading-space", b" 3\r\nabc\r\n0\r\n\r\n"),
    ("size-underscore", b"1_0\r\n"),
    ("size-non-ascii-digit", b"\xd9\xa3\r\nabc\r\n0\r\n\r\n"),
    ("size-bare-cr", b"3\r\r\nabc\r\n0\r\n\r\n"),
    ("size-bare-lf", b"3\nabc\r\n0\r\n\r\n"),
    ("size-line-too-long-complete", b"3;" + b"e" * MAX_SIZE_LINE_BYTES + b"\r\nabc\r\n0\r\n\r\n"),
    ("size-line-too-long-never-ends", b"3;" + b"e" * (2 * MAX_SIZE_LINE_BYTES)),
    ("extension-empty-name", b"3;\r\nabc\r\n0\r\n\r\n"),
    ("extension-bad-char", b"3;a@b\r\nabc\r\n0\r\n\r\n"),
    ("extension-nul", b"3;a=\x00\r\nabc\r\n0\r\n\r\n"),
    ("extension-unterminated-quote", b'3;a="b\r\nabc\r\n0\r\n\r\n'),
    ("extension-nul-in-quotes", b'3;a="\x00"\r\nabc\r\n0\r\n\r\n'),
    ("data-not-followed-by-crlf", b"3\r\nabcX\r\n0\r\n\r\n"),
    ("data-longer-than-size", b"3\r\nabcd\r\n0\r\n\r\n"),
    ("data-followed-by-cr-only", b"3\r\nabc\rX0\r\n\r\n"),
    ("data-followed-by-bare-lf", b"3\r\nabc\n0\r\n\r\n"),
    ("data-followed-by-lf-cr", b"3\r\nabc\n\r0\r\n\r\n"),
    ("last-chunk-bare-lf", b"3\r\nabc\r\n0\n\r\n"),
    ("end-bare-lf", b"3\r\nabc\r\n0\r\n\n"),
    ("end-lf-crlf", b"0\r\n\n\r\n"),
    ("trailer-bare-lf", b"0\r\nX-A: b\nX-C: d\r\n\r\n"),
    ("trailer-bare-lf-at-end", b"0\r\nX-A: b\n\r\n"),
    ("trailer-without-colon", b"0\r\nnocolon\r\n\r\n"),
    ("trailer-obs-fold-space", b"0\r\nX-A: b\r\n c\r\n\r\n"),
    ("trailer-obs-fold-tab", b"0\r\nX-A: b\r\n\tc\r\n\r\n"),
    ("trailer-oversized-one-line", b"0\r\nX: " + b"a" * MAX_TRAILER_BYTES + b"\r\n\r\n"),
    ("trailer-oversized-never-ends", b"0\r\nX: " + b"a" * MAX_TRAILER_BYTES),
    (
        "trailer-oversized-many-lines",
        b"0\r\n" + b"X-Trailer: 0123456789\r\n" * (MAX_TRAILER_BYTES // 20) + b"\r\n",
    ),
    (
        "trailer-oversized-many-lines-never-ends",
        b"0\r\n" + b"X-Trailer: 0123456789\r\n" * (MAX_TRAILER_BYTES // 20),
    ),
]
INVALID_IDS = [c[0] for c in INVALID]
INVALID_DATA = [c[1] for c in INVALID]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("data", INVALID_DATA, ids=INVALID_IDS)
def test_invalid_body(data: bytes, pattern: str) -> None:
    """The input is refused with ClientProtocolError (400), however it is split."""
    with pytest.raises(ClientProtocolError) as info:
        decode(split(data, pattern))
    assert info.value.status == 400


@pytest.mark.parametrize("data", INVALID_DATA, ids=INVALID_IDS)
def test_invalid_body_with_trailing_data(data: bytes) -> None:
    """Valid-looking bytes after the bad framing do not make the refusal go away."""
    with pytest.raises(ClientProtocolError):
        decode([data + TRAILING])


# (id, bytes) -- claim of the table: control bytes (NUL, CR) and malformed field names in chunk
# extensions and trailers are refused, as they are in the request head.
CONTROL_BYTES = [
    ("extension-quoted-pair-nul", b'3;a="\\\x00"\r\nabc\r\n0\r\n\r\n'),
    ("extension-quoted-pair-cr", b'3;a="\\\r"\r\nabc\r\n0\r\n\r\n'),
    ("trailer-value-nul", b"3\r\nabc\r\n0\r\nX-A: b\x00c\r\n\r\n"),
    ("trailer-value-bare-cr", b"3\r\nabc\r\n0\r\nX-A: b\rc\r\n\r\n"),
    ("trailer-name-with-space", b"3\r\nabc\r\n0\r\nX A: b\r\n\r\n"),
    ("trailer-empty-name", b"3\r\nabc\r\n0\r\n: b\r\n\r\n"),
]


@pytest.mark.parametrize("pattern", ["whole", "bytewise"])
@pytest.mark.parametrize("data", [c[1] for c in CONTROL_BYTES], ids=[c[0] for c in CONTROL_BYTES])
def test_control_bytes_in_extensions_and_trailers_refused(data: bytes, pattern: str) -> None:
    """A control byte in an extension or trailer, or a bad trailer name, is refused (400)."""
    with pytest.raises(ClientProtocolError):
        decode(split(data, pattern))


@pytest.mark.parametrize("piece_size", [1, 64, 4096])
def test_endless_size_line_refused_without_waiting(piece_size: int) -> None:
    """A chunk-size line that never ends is refused once it passes the limit."""
    decoder = ChunkedDecoder()
    decoder.feed(b"1;e")
    fed = 3
    with pytest.raises(ClientProtocolError):
        while fed <= MAX_SIZE_LINE_BYTES + piece_size:
            decoder.feed(b"e" * piece_size)
            fed += piece_size
    assert fed <= MAX_SIZE_LINE_BYTES + piece_size
