"""Hijacked streams, in-process: the hand-off from HTTP to raw bytes, and half-closes.

moby's HijackConnection drops whatever Go's server had buffered past the request, so no byte
after an attach or exec-start request may reach the daemon before its answer says whether the
connection became a stream; once it has, those bytes are stdin, exactly once and in order. A
stream is two one-way pumps: an EOF one way is passed on as a half-close (`write_eof`), and the
connection closes when both ways are done.
"""

from __future__ import annotations

import pytest

from support.inprocess import (
    ClockLoop,
    Relay,
    answer,
    forwarded,
    open_connection,
    refusal,
    relayed,
    request,
)

ATTACH = "/v1.45/containers/x/attach?stream=1&stdin=1&stdout=1"
UPGRADE = ("Connection: Upgrade", "Upgrade: tcp")
HIJACK_101 = (
    b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
    b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
)
HIJACK_200 = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"
EARLY = b"\x01\x00\x00\x00\x00\x00\x00\x05hello"
FINAL = b"\x01\x00\x00\x00\x00\x00\x00\x03bye"


def attached(loop: ClockLoop, style: str = "upgrade", stdin: bytes = b"") -> Relay:
    """A client attached to a container: the daemon has hijacked, with EARLY after its head."""
    relay = open_connection(loop)
    attach = request("POST", ATTACH, *(UPGRADE if style == "upgrade" else ()))
    relay.send(attach + stdin)
    daemon = relay.daemon()
    assert daemon.take() == forwarded(attach)
    daemon.send((HIJACK_101 if style == "upgrade" else HIJACK_200) + EARLY)
    assert relay.client.take() == relayed(HIJACK_101 if style == "upgrade" else HIJACK_200) + EARLY
    assert relay.conn.tunnel
    return relay


@pytest.mark.parametrize("style", ["upgrade", "legacy"])
def test_bytes_after_an_attach_reach_the_daemon_only_after_it_hijacks(
    loop: ClockLoop, style: str
) -> None:
    """Everything the client sent after the attach request (here a whole request, then raw
    stdin) is held, with reading paused, until the daemon answers 101 (or the older 200 raw
    stream); then it goes out as stream data, once, in order (test_review_findings:
    test_pipelined_bytes_after_attach_reach_daemon_only_as_tunnel_data; test_http_edges:
    test_hijacked_attach_is_raw_both_ways)."""
    relay = open_connection(loop)
    attach = request("POST", ATTACH, *(UPGRADE if style == "upgrade" else ()))
    stdin = request("DELETE", "/containers/x") + b"raw stdin"
    relay.send(attach + stdin)
    daemon = relay.daemon()
    assert daemon.take() == forwarded(attach)  # nothing past the attach request
    assert relay.client.read_paused
    assert relay.client.data == b""

    hijack = HIJACK_101 if style == "upgrade" else HIJACK_200
    daemon.send(hijack + EARLY)
    assert relay.client.take() == relayed(hijack) + EARLY
    assert daemon.take() == stdin
    assert not relay.client.read_paused
    assert len(relay.pool.daemons) == 1  # the DELETE was never a request

    relay.send(b"ping-1")
    assert daemon.take() == b"ping-1"
    daemon.send(b"pong-1")
    assert relay.client.take() == b"pong-1"


def test_a_client_half_close_reaches_the_daemon_and_its_last_bytes_come_back(
    loop: ClockLoop,
) -> None:
    """The client's EOF becomes the daemon's EOF (`docker exec -i` ends stdin) while the
    daemon's last bytes still reach the client; the daemon's EOF then ends the stream both
    ways (test_http_edges: test_hijacked_attach_is_raw_both_ways; test_tls:
    test_hijacked_stdin_half_close_over_tls)."""
    relay = attached(loop)
    daemon = relay.daemon()
    relay.send_eof()
    assert daemon.eof_written
    assert not daemon.closed and not relay.client.closing

    daemon.send(FINAL)
    assert relay.client.take() == FINAL
    daemon.send_eof()
    assert relay.client.eof_written
    assert relay.client.closed and daemon.closed
    assert relay.records[-1].status == 101


def test_a_daemon_half_close_reaches_the_client_and_stdin_still_flows(loop: ClockLoop) -> None:
    """The other order: the daemon's EOF (the container's stdout closed) becomes the client's
    EOF, while what the client still sends reaches the daemon; the client's EOF ends it."""
    relay = attached(loop)
    daemon = relay.daemon()
    daemon.send_eof()
    assert relay.client.eof_written
    assert not relay.client.closing and not daemon.closed

    relay.send(b"more stdin")
    assert daemon.take() == b"more stdin"
    relay.send_eof()
    assert daemon.eof_written
    assert relay.client.closed and daemon.closed


def test_the_daemon_dropping_a_stream_closes_the_client(loop: ClockLoop) -> None:
    """A stream whose upstream connection breaks ends the client's connection too."""
    relay = attached(loop, "legacy")
    relay.daemon().drop(ConnectionResetError())
    assert relay.client.closed


def test_the_client_leaving_a_stream_drops_the_daemon_s_connection(loop: ClockLoop) -> None:
    """The client's connection lost mid-stream: the upstream one is dropped with it."""
    relay = attached(loop)
    relay.client.lose(ConnectionResetError())
    loop.settle()
    assert relay.daemon().transport.aborted
    assert relay.pool.idle == []


def test_a_101_to_a_request_that_did_not_ask_is_a_502(loop: ClockLoop) -> None:
    """Only a request that asked to switch protocols (and was allowed to) becomes a stream: a
    101 to anything else is a daemon the gateway cannot follow, answered 502.

    Finding (in-process, issue 14), fixed: the client got no byte at all, only a close.
    `upstream_data` takes the 101 head as a final response (`_response_started = True`, the
    head queued in `out`, not yet written), then at the EndOfResponse that follows calls
    `_upstream_failed`, which, seeing the response started, closes without the 502 and
    without the queued head: an empty reply, logged as "upstream failed mid-response" with
    status 101 and bytes_out -127 (the head's length subtracted, never added). Now the 502
    goes out: nothing of the answer was written (`_answer_written`, the same fix as
    test_holds_inprocess.py's held answer cut short)."""
    relay = open_connection(loop)
    relay.send(request("GET", "/containers/json"))
    relay.daemon().send(HIJACK_101)
    assert relay.client.data == refusal(502, "the daemon switched protocols unasked", close=True)
    assert relay.client.closed
    assert not relay.conn.tunnel


def test_an_attach_answered_without_hijacking_keeps_the_connection(loop: ClockLoop) -> None:
    """An attach the daemon refuses (404, no such container) is an ordinary exchange: the bytes
    held behind it are read as the next request after the answer."""
    relay = open_connection(loop)
    attach = request("POST", ATTACH, *UPGRADE)
    relay.send(attach + request("GET", "/_ping"))
    daemon = relay.daemon()
    assert daemon.take() == forwarded(attach)
    missing = b'{"message":"No such container: x"}'
    daemon.send(answer(404, missing, "Content-Type: application/json", reason="Not Found"))
    assert relay.client.take() == relayed(
        answer(404, missing, "Content-Type: application/json", reason="Not Found")
    )
    assert daemon.take() == forwarded(request("GET", "/_ping"))
    assert not relay.conn.tunnel


def test_a_full_daemon_buffer_pauses_the_client_in_a_stream(loop: ClockLoop) -> None:
    """Flow control goes on in a stream: the daemon's write buffer full (a container slow to
    read its stdin) pauses reading from the client, and its draining resumes it; a slow client
    pauses reading from the daemon likewise."""
    relay = attached(loop)
    daemon = relay.daemon()
    daemon.fill()
    assert relay.client.read_paused
    daemon.drain()
    assert not relay.client.read_paused
    relay.fill()
    assert daemon.read_paused
    relay.drain()
    assert not daemon.read_paused
