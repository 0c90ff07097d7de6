"""Flow control and the endings of an exchange, in-process: which side's reading pauses when,
answers the daemon gives before the whole body, streams, and clients or daemons that leave.

Reading from one side pauses while the other side's write buffer is over its high-water mark
(asyncio's `pause_writing`, played here by `fill`), and resumes below the low mark (`drain`).
"""

from __future__ import annotations

import asyncio

from dockgate.auth.authenticator import Authenticator
from dockgate.auth.tokens import parse_tokens, token_digest
from dockgate.relay.connection import LINGER_SECONDS
from dockgate.relay.upstream import WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES
from support.inprocess import (
    ClockLoop,
    answer,
    forwarded,
    open_connection,
    refusal,
    relayed,
    request,
)

EVENTS_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# ----- pauses ------------------------------------------------------------------------------------


def test_a_full_upstream_buffer_pauses_the_client_s_reading(loop: ClockLoop) -> None:
    """An upload to a daemon that reads slowly: reading from the client pauses while the write
    buffer towards the daemon is full, and resumes when it drains (test_http_edges:
    test_large_upload_streams_with_bounded_memory)."""
    relay = open_connection(loop)
    assert relay.client.limits == (WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES)
    head = request("POST", "/upload", "Content-Length: 300000")
    relay.send(head + b"a" * 100_000)
    daemon = relay.daemon()
    assert daemon.take() == forwarded(head) + b"a" * 100_000
    assert not relay.client.read_paused
    daemon.fill()
    assert relay.client.read_paused
    daemon.drain()
    assert not relay.client.read_paused
    relay.send(b"b" * 200_000)
    assert daemon.take() == b"b" * 200_000


def test_a_slow_client_pauses_the_daemon_s_reading(loop: ClockLoop) -> None:
    """A stream to a client that reads slowly: reading from the daemon pauses while the write
    buffer towards the client is full, and resumes when it drains, so a slow `docker logs -f`
    never makes the gateway buffer the daemon's output."""
    relay = open_connection(loop)
    relay.send(request("GET", "/containers/x/logs?follow=1&stdout=1"))
    daemon = relay.daemon()
    daemon.send(EVENTS_HEAD + chunk(b"line 1\n"))
    assert relay.client.take() == relayed(EVENTS_HEAD) + chunk(b"line 1\n")
    relay.fill()
    assert daemon.read_paused
    relay.drain()
    assert not daemon.read_paused


def test_a_slow_client_s_pause_reaches_an_upstream_connected_later(loop: ClockLoop) -> None:
    """A client whose write buffer is already full when its next request's upstream connection
    is made: that connection starts with its reading paused."""
    relay = open_connection(loop)
    relay.pool.gate = gate = asyncio.Event()
    relay.send(request("GET", "/_ping"))
    assert relay.client.read_paused  # no upstream connection yet
    relay.fill()
    gate.set()
    loop.settle()
    daemon = relay.daemon()
    assert daemon.received == forwarded(request("GET", "/_ping"))
    assert daemon.read_paused
    assert not relay.client.read_paused
    relay.drain()
    assert not daemon.read_paused


def test_a_pooled_connection_with_a_full_buffer_pauses_the_client(loop: ClockLoop) -> None:
    """A pooled connection handed out while its write buffer is still over the high mark (the
    daemon has not read the last request's body): reading from the client pauses at once."""
    relay = open_connection(loop)
    relay.send(request("GET", "/a"))
    daemon = relay.daemon()
    daemon.send(answer(200, b"a"))
    daemon.transport.buffered = WRITE_HIGH_WATER_BYTES + 1
    relay.send(request("POST", "/b", "Content-Length: 10"))
    assert relay.client.read_paused
    daemon.transport.buffered = 0
    daemon.drain()
    assert not relay.client.read_paused


def test_the_next_request_waits_for_a_slow_client_to_drain(loop: ClockLoop) -> None:
    """A client whose write buffer is still full when its exchange ends gets its next request
    taken only once the buffer drains (Pause.CLIENT_FULL): before that, a pooled connection
    would have been handed out to it, paused at once. Meanwhile the pool keeps the connection
    idle and reading (an idle connection must see the daemon close it); after the drain it goes
    out for the next request, not paused."""
    relay = open_connection(loop)
    relay.send(request("GET", "/a"))
    daemon = relay.daemon()
    relay.fill()
    assert daemon.read_paused
    daemon.send(answer(200, b"a"))
    assert relay.pool.idle == [daemon.conn]
    assert not daemon.read_paused  # idle in the pool
    daemon.take()
    relay.send(request("GET", "/b"))
    assert relay.client.read_paused
    assert daemon.take() == b""  # /b waits for the client to read its answers
    relay.drain()
    assert daemon.take() == forwarded(request("GET", "/b"))
    assert not daemon.read_paused
    assert not relay.client.read_paused


def test_an_upstream_full_pause_ends_with_its_exchange(loop: ClockLoop) -> None:
    """The daemon's buffer filled by the end of a body, the daemon answers (keep-alive) before
    reading it: the exchange ends, the connection goes back to the pool, and the client's
    reading is resumed for its next request rather than paused for ever by a
    `resume_writing` that now reaches nobody (test_review_findings:
    test_upstream_full_pause_does_not_outlive_the_exchange)."""
    relay = open_connection(loop)
    relay.send(request("POST", "/upload", body=b"x" * 1000))
    daemon = relay.daemon()
    daemon.fill()
    assert relay.client.read_paused
    daemon.send(answer(200, b'{"ok":true}\n'))
    assert relay.client.take() == relayed(answer(200, b'{"ok":true}\n'))
    assert relay.pool.idle == [daemon.conn]
    assert not relay.client.read_paused
    relay.send(request("GET", "/_ping"))
    assert daemon.received.endswith(forwarded(request("GET", "/_ping")))


# ----- early answers -----------------------------------------------------------------------------


def test_an_early_answer_reaches_the_client_and_the_rest_is_drained(loop: ClockLoop) -> None:
    """The daemon answers 400 after 64 KiB of a 20 MiB upload: the client gets that answer
    (not a 502, not a reset), its side is half-closed, the rest of the body is read and
    dropped for LINGER_SECONDS, then the connection closes; the upstream connection is never
    reused (test_http_edges: test_early_error_response_during_upload)."""
    relay = open_connection(loop)
    head = request("POST", "/early", f"Content-Length: {20 * 1024 * 1024}")
    relay.send(head + b"x" * 65536)
    daemon = relay.daemon()
    assert daemon.take() == forwarded(head) + b"x" * 65536
    early = answer(400, b'{"message":"early reject"}\n', "Connection: close", reason="Bad")
    daemon.send(early)
    assert relay.client.take() == relayed(early)
    assert relay.client.eof_written
    assert daemon.transport.aborted
    assert relay.pool.released == []

    relay.send(b"y" * 65536)  # still arriving: read and dropped
    assert not relay.client.read_paused
    assert not relay.client.closing
    assert daemon.take() == b""
    loop.advance(LINGER_SECONDS - 0.1)
    assert not relay.client.closing
    loop.advance(0.2)
    assert relay.client.closed
    assert relay.client.take() == b""


def test_expect_continue_answered_early_is_relayed(loop: ClockLoop) -> None:
    """`Expect: 100-continue` and a final 413 from the daemon without a 100: the client, which
    never sends its body, gets the 413 (test_http_edges:
    test_expect_100_continue_early_final_status)."""
    relay = open_connection(loop)
    head = request("POST", "/expect-reject", "Expect: 100-continue", "Content-Length: 10000000")
    relay.send(head)
    daemon = relay.daemon()
    assert daemon.take() == forwarded(head)
    rejected = answer(413, b'{"message":"request body too large"}\n', "Connection: close")
    daemon.send(rejected)
    assert relay.client.take() == relayed(rejected)
    loop.advance(LINGER_SECONDS + 0.1)
    assert relay.client.closed


def test_expect_continue_then_the_body(loop: ClockLoop) -> None:
    """`Expect: 100-continue`: the daemon's 100 is relayed (with the browser guard's headers, as
    every head), then the body reaches the daemon and the final answer the client
    (test_http_edges: test_expect_100_continue_body_after_continue)."""
    relay = open_connection(loop)
    head = request("POST", "/expect-ok", "Expect: 100-continue", "Content-Length: 5")
    relay.send(head)
    daemon = relay.daemon()
    daemon.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert relay.client.take() == relayed(b"HTTP/1.1 100 Continue\r\n\r\n")
    relay.send(b"hello")
    assert daemon.take() == forwarded(head) + b"hello"
    daemon.send(answer(200, b"done"))
    assert relay.client.take() == relayed(answer(200, b"done"))
    assert relay.pool.idle == [daemon.conn]


# ----- streams and endings -----------------------------------------------------------------------


def test_streamed_chunks_go_out_as_they_come(loop: ClockLoop) -> None:
    """Each chunk of a streamed answer goes to the client in the pass that read it, untouched
    (test_http_edges: test_streamed_chunks_are_flushed_immediately)."""
    relay = open_connection(loop)
    relay.send(request("GET", "/events?since=0"))
    daemon = relay.daemon()
    daemon.send(EVENTS_HEAD)
    assert relay.client.take() == relayed(EVENTS_HEAD)
    for i in range(5):
        event = b'{"status":"tick","n":%d}\n' % i
        daemon.send(chunk(event))
        assert relay.client.take() == chunk(event)
    daemon.send(b"0\r\n\r\n")
    assert relay.client.take() == b"0\r\n\r\n"
    assert relay.pool.idle == [daemon.conn]


def test_the_daemon_dying_mid_stream_ends_the_response(loop: ClockLoop) -> None:
    """The daemon's connection lost after three chunks: the client keeps what it got and its
    connection closes (no 502 written into the middle of a body) (test_http_edges:
    test_upstream_dying_mid_stream_ends_response)."""
    relay = open_connection(loop)
    relay.send(request("GET", "/dies"))
    daemon = relay.daemon()
    sent = EVENTS_HEAD + b"".join(chunk(b'{"n":%d}\n' % i) for i in range(3))
    daemon.send(sent)
    daemon.drop(ConnectionResetError())
    assert relay.client.data == relayed(sent)
    assert relay.client.closed
    assert relay.records[-1].note == "upstream failed mid-response"


def test_a_client_leaving_a_quiet_stream_drops_the_upstream(loop: ClockLoop) -> None:
    """A client half-closing during a stream on which the daemon says nothing is a client
    gone: the upstream connection is dropped now, not when the daemon next writes
    (test_http_edges: test_client_leaving_a_quiet_stream_closes_upstream)."""
    relay = open_connection(loop)
    relay.send(request("GET", "/events"))
    daemon = relay.daemon()
    daemon.send(EVENTS_HEAD)
    relay.send_eof()
    assert daemon.transport.aborted
    assert relay.client.closed
    assert relay.pool.idle == []
    assert relay.records[-1].note == "client gone"


def test_a_client_disconnecting_mid_stream_drops_the_upstream(loop: ClockLoop) -> None:
    """A client's connection lost mid-stream: the upstream one is dropped and never pooled
    (test_http_edges: test_client_disconnect_mid_stream_closes_upstream)."""
    relay = open_connection(loop)
    relay.send(request("GET", "/endless"))
    daemon = relay.daemon()
    daemon.send(EVENTS_HEAD + chunk(b'{"tick":0}\n'))
    relay.client.lose(ConnectionResetError())
    loop.settle()
    assert daemon.transport.aborted
    assert relay.pool.idle == []
    assert relay.pool.released == []


# ----- timeouts ----------------------------------------------------------------------------------


def test_a_partial_head_pipelined_behind_a_request_has_the_head_timeout(loop: ClockLoop) -> None:
    """The first bytes of the next head, sent with the current request, start the head
    timeout, not the idle one: the sweep answers 408 and closes once it passes
    (test_review_findings: test_pipelined_partial_head_is_bound_by_header_timeout)."""
    relay = open_connection(loop, header_timeout=1.0, idle_timeout=20.0)
    relay.send(request("GET", "/_ping") + b"GET /_ping HTTP/1.1\r\nHo")
    relay.daemon().send(answer(200, b"OK"))
    assert relay.client.take() == relayed(answer(200, b"OK"))
    loop.advance(0.9)
    relay.sweep()
    assert not relay.client.closing
    loop.advance(0.2)
    relay.sweep()
    message = "dockgate: request head not received in time"
    assert relay.client.take() == refusal(408, message, close=True)
    assert relay.client.closed


def test_an_idle_keep_alive_connection_has_the_idle_timeout(loop: ClockLoop) -> None:
    """Between requests, with nothing of the next one sent, the idle timeout applies, and
    its end closes the connection without an answer (test_http_edges:
    test_idle_keepalive_connection_is_disconnected)."""
    relay = open_connection(loop, header_timeout=1.0, idle_timeout=20.0)
    relay.send(request("GET", "/_ping"))
    relay.daemon().send(answer(200, b"OK"))
    relay.client.take()
    loop.advance(19.0)
    relay.sweep()
    assert not relay.client.closing
    loop.advance(1.1)
    relay.sweep()
    assert relay.client.closed
    assert relay.client.take() == b""


def test_a_client_that_does_not_read_cannot_pile_up_answers(loop: ClockLoop) -> None:
    """The gateway's own answers are flow-controlled like the daemon's: while the write buffer
    towards the client is over its high mark, the gateway stops answering the requests that
    client pipelined and stops reading from it; once the buffer drains, it goes on.

    Finding (in-process, issue 14): `pause_writing` on the client side only pauses reading
    from the daemon. Refusals (and 401s, before any authentication) are written at once for
    each pipelined request while reading from the client never pauses, so a client that
    sends requests and never reads its answers makes the gateway buffer every answer: here
    1,000 refused 37-byte requests with the buffer already full still get 1,000 answers
    written (274 kB, about 7 bytes buffered per byte received). Without credentials, over
    one connection, memory grows until the process is killed: against a `dockgate serve`
    subprocess, 38 MB of pipelined `GET /containers//json` (400s) sent without reading grew
    its RSS by 204 MiB. Fixed: the next request waits for the client's buffer to drain
    (`Pause.CLIENT_FULL`, relay/flow.py)."""
    tokens = Authenticator(tokens=parse_tokens(f"ci ci {token_digest('dg_x')}\n", "tokens"))
    relay = open_connection(loop, authenticator=tokens)
    relay.fill()
    relay.send(request("GET", "/_ping") * 1000)
    assert relay.client.read_paused
    assert relay.client.data.count(b"HTTP/1.1 401 ") < 1000
    relay.drain()
    assert relay.client.data.count(b"HTTP/1.1 401 ") == 1000
    assert not relay.client.read_paused
