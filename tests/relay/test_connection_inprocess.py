"""The relay's exchanges, in-process: each test is a script of the bytes a client and the daemon
write, and asserts the exact bytes the gateway sends each way (tests/support/inprocess.py).

The subprocess tests these mirror are named in each docstring; they stay the end-to-end proof,
these pin the edge cases in milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import pathlib

import bcrypt
import pytest

from dockgate.auth.authenticator import Authenticator
from dockgate.auth.htpasswd import parse_htpasswd
from dockgate.auth.tokens import parse_tokens, token_digest
from dockgate.http.hops import LOOP_MESSAGE
from dockgate.relay.connection import HELD_BYTES_LIMIT
from support.inprocess import (
    ClockLoop,
    HeldChecks,
    answer,
    forwarded,
    open_connection,
    refusal,
    relayed,
    request,
)

POLICIES = pathlib.Path(__file__).resolve().parents[1] / "policies"
READ_ONLY = (POLICIES / "containers-read-only.yaml").read_text()

STOP_DENIED = "dockgate: ContainerStop denied by policy containers-read-only (read-only)"
EMPTY_SEGMENT = "dockgate: empty path segment"


# ----- keep-alive --------------------------------------------------------------------------------


def test_keep_alive_reuses_the_upstream_connection(loop: ClockLoop) -> None:
    """Sequential requests on one client connection go out on one upstream connection, given
    back to the pool after each clean answer (test_http_edges:
    test_keepalive_100_requests_reuse_upstream_connections)."""
    relay = open_connection(loop)
    for i in range(3):
        relay.send(request("GET", f"/ka/{i}"))
        daemon = relay.daemon()
        assert daemon.take() == forwarded(request("GET", f"/ka/{i}"))
        assert relay.pool.idle == []  # in use
        daemon.send(answer(200, b"%d" % i))
        assert relay.client.take() == relayed(answer(200, b"%d" % i))
        assert relay.pool.idle == [daemon.conn]
    assert len(relay.pool.daemons) == 1
    assert len(relay.pool.released) == 3
    assert not relay.client.closing
    assert [r.status for r in relay.records] == [200, 200, 200]


def test_a_repeated_request_is_forwarded_and_answered_alike_each_time(loop: ClockLoop) -> None:
    """A keep-alive client sending the same request again (the connection then reuses its plan
    and takes the straight path for a whole answer): each goes out and comes back the same,
    and each is logged with its own status, sizes and decision."""
    relay = open_connection(loop)
    ping = request("GET", "/v1.41/_ping")
    for _ in range(3):
        relay.send(ping)
        daemon = relay.daemon()
        assert daemon.take() == forwarded(ping)
        daemon.send(answer(200, b"OK"))
        assert relay.client.take() == relayed(answer(200, b"OK"))
    assert len(relay.pool.daemons) == 1
    assert [(r.status, r.bytes_out, r.operation) for r in relay.records] == [
        (200, 2, "SystemPing")
    ] * 3
    assert len({r.decision for r in relay.records}) == 1


def test_a_connection_the_daemon_closes_is_not_pooled(loop: ClockLoop) -> None:
    """An answer with `Connection: close` goes to the client as it is, and ends both
    connections: the upstream one is closed, never given back to the pool."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping"))
    daemon = relay.daemon()
    daemon.send(answer(200, b"OK", "Connection: close"))
    assert relay.client.data == relayed(answer(200, b"OK", "Connection: close"))
    assert relay.pool.released == []
    assert daemon.closed
    assert relay.client.closed


def test_a_client_connection_close_is_announced_and_the_daemon_s_kept(loop: ClockLoop) -> None:
    """A client's `Connection: close` is not forwarded (it is about the client's connection);
    the answer says `Connection: close` (RFC 9112 9.6), the client's connection closes, and the
    daemon's goes back to the pool (test_http_edges:
    test_connection_close_is_announced_and_honoured)."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping", "Connection: close"))
    daemon = relay.daemon()
    assert daemon.received == forwarded(request("GET", "/_ping"))
    daemon.send(answer(200, b"OK"))
    assert relay.client.data == relayed(answer(200, b"OK")).replace(
        b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"
    )
    assert relay.client.closed
    assert relay.pool.idle == [daemon.conn]


def test_a_stale_pooled_connection_is_retried_on_a_new_one(loop: ClockLoop) -> None:
    """A reused connection that the daemon had closed (FIN before a byte of the answer) is not a
    502: a request without a body is sent again on a new connection (test_review_findings:
    test_stale_pooled_tcp_connection_closed_with_fin_is_retried)."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping"))
    stale = relay.daemon()
    stale.send(answer(200, b"OK"))
    stale.take()
    relay.client.take()
    relay.send(request("GET", "/_ping"))
    assert stale.take() == forwarded(request("GET", "/_ping"))
    stale.send_eof()
    assert stale.closed
    assert len(relay.pool.daemons) == 2
    fresh = relay.daemon(1)
    assert fresh.received == forwarded(request("GET", "/_ping"))
    fresh.send(answer(200, b"OK"))
    assert relay.client.take() == relayed(answer(200, b"OK"))


# ----- pipelining --------------------------------------------------------------------------------


def test_pipelined_requests_around_a_refusal_are_answered_in_order(loop: ClockLoop) -> None:
    """Three requests in one write, the middle one denied: the first is forwarded alone, the
    denial is answered in its place once the first answer is out, and the third then goes out
    on the same upstream connection (test_http_edges: test_pipelined_requests_answered_in_order;
    test_guardrails_e2e: test_keep_alive_after_a_denied_create)."""
    relay = open_connection(loop, READ_ONLY)
    first = request("GET", "/containers/json")
    second = request("POST", "/containers/x/stop")
    third = request("GET", "/containers/y/json")
    relay.send(first + second + third)
    daemon = relay.daemon()
    assert daemon.take() == forwarded(first)
    assert relay.client.data == b""  # nothing answered out of turn

    daemon.send(answer(200, b"[]"))
    assert relay.client.take() == relayed(answer(200, b"[]")) + refusal(403, STOP_DENIED)
    assert daemon.take() == forwarded(third)

    daemon.send(answer(200, b"{}"))
    assert relay.client.take() == relayed(answer(200, b"{}"))
    assert len(relay.pool.daemons) == 1
    assert [(r.status, r.decision) for r in relay.records] == [
        (200, "allow:containers-read-only:rule-1"),
        (403, "deny:containers-read-only:read-only"),
        (200, "allow:containers-read-only:rule-1"),
    ]
    assert not relay.client.closing


def test_a_request_arriving_during_an_exchange_waits_for_its_end(loop: ClockLoop) -> None:
    """A request (with a body) sent while the previous answer is awaited is not forwarded
    until that answer is out: the daemon sees one request at a time on its connection."""
    relay = open_connection(loop)
    relay.send(request("GET", "/1"))
    daemon = relay.daemon()
    assert daemon.take() == forwarded(request("GET", "/1"))
    relay.send(request("POST", "/2", body=b"ab"))
    assert daemon.take() == b""
    daemon.send(answer(200, b"1"))
    assert daemon.take() == forwarded(request("POST", "/2", "Content-Length: 2")) + b"ab"
    daemon.send(answer(200, b"2"))
    assert relay.client.data == relayed(answer(200, b"1")) + relayed(answer(200, b"2"))


def test_thousands_of_pipelined_refusals_are_answered_without_recursion(loop: ClockLoop) -> None:
    """6,000 refused requests pipelined behind a forwarded one (more than the recursion limit,
    and more than HELD_BYTES_LIMIT bytes): reading pauses while they wait, then each gets its
    400 in order, iteratively, and the request after them is forwarded
    (test_review_findings: test_many_pipelined_refused_requests)."""
    count = 6000
    relay = open_connection(loop)
    refused = request("GET", "/containers//json")
    assert len(refused) * count > HELD_BYTES_LIMIT
    relay.send(request("GET", "/first") + refused * count + request("GET", "/_ping"))
    daemon = relay.daemon()
    assert daemon.take() == forwarded(request("GET", "/first"))
    assert relay.client.read_paused  # the pipelined bytes are over the limit: reading waits

    daemon.send(answer(200, b"1"))
    assert relay.client.take() == relayed(answer(200, b"1")) + refusal(400, EMPTY_SEGMENT) * count
    assert daemon.take() == forwarded(request("GET", "/_ping"))
    assert not relay.client.read_paused
    daemon.send(answer(200, b"OK"))
    assert relay.client.take() == relayed(answer(200, b"OK"))
    assert len(relay.records) == count + 2


def test_a_refused_request_s_body_is_read_and_dropped(loop: ClockLoop) -> None:
    """A refused request with a body is answered at once and the connection closes after a
    linger; neither its body nor what is pipelined behind it reaches the daemon
    (test_review_findings: test_refused_upload_body_never_reaches_daemon)."""
    relay = open_connection(loop)
    relay.send(request("POST", "/containers//create", body=b'{"Image":"x"}') + request("GET", "/x"))
    assert relay.client.data == refusal(400, EMPTY_SEGMENT, close=True)
    assert relay.client.eof_written
    assert relay.pool.daemons == []
    relay.send(b"more of the body")
    assert relay.pool.daemons == []
    assert not relay.client.closed
    loop.advance(2.0)  # LINGER_SECONDS
    assert relay.client.closed


# ----- what the gateway answers itself -----------------------------------------------------------


def test_a_denied_request_gets_403_with_the_policy_s_reason(loop: ClockLoop) -> None:
    """A request the policy denies is answered 403 with Docker's {"message"} naming the policy
    and the reason, never reaches the daemon, and keep-alive goes on (test_policy_e2e:
    test_docker_cli_shows_the_denial)."""
    relay = open_connection(loop, READ_ONLY)
    relay.send(request("POST", "/containers/x/stop"))
    assert relay.client.take() == (
        b"HTTP/1.1 403 Forbidden\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 89\r\n"
        b"Server: dockgate\r\n"
        b"Content-Security-Policy: sandbox\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"\r\n"
        b'{"message": "dockgate: ContainerStop denied by policy containers-read-only '
        b'(read-only)"}\n'
    )
    assert relay.pool.daemons == []
    assert relay.records[-1].decision == "deny:containers-read-only:read-only"
    relay.send(request("GET", "/containers/json"))
    assert relay.daemon().received == forwarded(request("GET", "/containers/json"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", "dockgate: malformed request line", id="garbage"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: docker\r\nbad header\r\n\r\n",
            "dockgate: invalid header field",
            id="header-without-colon",
        ),
        pytest.param(
            request("POST", "/x", "Content-Length: 5", "Content-Length: 6") + b"hello",
            "dockgate: duplicate Content-Length",
            id="two-content-lengths",
        ),
        pytest.param(
            request("POST", "/x", "Transfer-Encoding: gzip") + b"hello",
            "dockgate: unsupported Transfer-Encoding",
            id="transfer-encoding-gzip",
        ),
    ],
)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_malformed_bytes_get_400_and_a_close(
    loop: ClockLoop, data: bytes, message: str, bytewise: bool
) -> None:
    """Malformed bytes, whole or one byte at a time, get 400 with Docker's {"message"} shape,
    then a close; not one byte reaches the daemon (test_http_edges:
    test_malformed_request_is_rejected_whole, ..._bytewise)."""
    relay = open_connection(loop)
    if bytewise:
        for i in range(len(data)):
            if relay.client.closing:
                break
            relay.send(data[i : i + 1])
    else:
        relay.send(data)
    assert relay.client.data == refusal(400, message, close=True)
    assert relay.client.closed
    assert relay.pool.daemons == []
    assert relay.records[-1].status == 400


def test_a_bad_chunk_mid_body_is_400_after_forwarding_began(loop: ClockLoop) -> None:
    """A chunked upload is forwarded as it arrives; a malformed chunk later gets 400, the
    upstream connection is dropped (the daemon never sees a complete request), and the
    access log names the request (test_review_findings:
    test_bad_chunk_mid_body_still_logs_the_forwarded_request)."""
    relay = open_connection(loop)
    head = request("POST", "/upload", "Transfer-Encoding: chunked")
    relay.send(head + b"5\r\nhello\r\n")
    daemon = relay.daemon()
    assert daemon.received == forwarded(head) + b"5\r\nhello\r\n"
    relay.send(b"zz\r\nbad\r\n")
    assert relay.client.data == refusal(400, "dockgate: invalid chunk-size line", close=True)
    assert daemon.transport.aborted
    assert daemon.received == forwarded(head) + b"5\r\nhello\r\n"
    assert (relay.records[-1].method, relay.records[-1].target) == ("POST", "/upload")


def test_a_502_when_the_daemon_cannot_be_reached(loop: ClockLoop) -> None:
    """When the pool cannot connect, the client gets 502 with a JSON {"message"} naming the
    upstream, then a close (test_http_edges: test_unreachable_upstream_gives_json_502)."""
    relay = open_connection(loop)
    relay.pool.refuse = FileNotFoundError(2, "No such file or directory")
    relay.send(request("GET", "/v1.45/containers/json"))
    message = (
        "cannot connect to the Docker daemon at "
        "unix:///run/dockgate-inprocess/docker.sock: No such file or directory"
    )
    assert relay.client.data == refusal(502, message, close=True)
    assert relay.client.closed
    assert relay.records[-1].note == "upstream failed"


def test_reading_waits_while_the_upstream_connects(loop: ClockLoop) -> None:
    """No upstream connection yet: the client's reading pauses until one is made, then the
    request goes out whole."""
    relay = open_connection(loop)
    relay.pool.gate = gate = asyncio.Event()
    relay.send(request("POST", "/upload", body=b"abc"))
    assert relay.client.read_paused
    assert relay.pool.daemons == []
    gate.set()
    loop.settle()
    assert not relay.client.read_paused
    assert (
        relay.daemon().received
        == forwarded(request("POST", "/upload", "Content-Length: 3")) + b"abc"
    )


# ----- bodiless answers --------------------------------------------------------------------------


def test_head_is_answered_without_a_body(loop: ClockLoop) -> None:
    """HEAD: the daemon's Content-Length is relayed with no body after it, and the next request
    on the connection is served in step (test_http_edges:
    test_head_204_304_have_no_body_and_keep_connection)."""
    relay = open_connection(loop)
    relay.send(request("HEAD", "/containers/c1/json"))
    daemon = relay.daemon()
    assert daemon.take() == forwarded(request("HEAD", "/containers/c1/json"))
    daemon.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert relay.client.take() == relayed(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert relay.pool.idle == [daemon.conn]
    relay.send(request("GET", "/after"))
    assert daemon.take() == forwarded(request("GET", "/after"))
    daemon.send(answer(200, b"next"))
    assert relay.client.take() == relayed(answer(200, b"next"))


def test_a_refused_head_has_no_body(loop: ClockLoop) -> None:
    """A HEAD the gateway refuses gets a head only, and keep-alive goes on in step
    (test_review_findings: test_head_refusal_has_no_body)."""
    relay = open_connection(loop)
    relay.send(request("HEAD", "/containers//json") + request("GET", "/_ping"))
    assert relay.client.take() == refusal(400, EMPTY_SEGMENT, head_only=True)
    relay.daemon().send(answer(200, b"OK"))
    assert relay.client.take() == relayed(answer(200, b"OK"))


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_end_without_a_body(loop: ClockLoop, status: int) -> None:
    """204 and 304 carry no body whatever they say: the exchange ends at the head and the
    connection serves the next request."""
    relay = open_connection(loop)
    relay.send(request("POST", "/containers/c1/start", body=b""))
    daemon = relay.daemon()
    daemon.send(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert relay.client.take() == relayed(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert relay.pool.idle == [daemon.conn]


# ----- more of what the gateway answers itself ---------------------------------------------------


def test_a_request_that_came_back_is_answered_508(loop: ClockLoop) -> None:
    """A request carrying this gateway's own hop field went round a loop: 508, never forwarded
    (test_startup_checks: a ring of gateways)."""
    relay = open_connection(loop)
    relay.send(forwarded(request("GET", "/_ping")))
    assert relay.client.take() == refusal(508, LOOP_MESSAGE)
    assert relay.pool.daemons == []


TOKEN = "dg_inprocess-test-token"
TOKENS = f"ci ci {token_digest(TOKEN)}\n"


def test_credentials_are_asked_for_and_never_forwarded(loop: ClockLoop) -> None:
    """With a tokens file, a request without credentials is 401 with a Basic challenge; with a
    right token it is forwarded without its Authorization header (test_auth)."""
    tokens = Authenticator(tokens=parse_tokens(TOKENS, "tokens"))
    relay = open_connection(loop, authenticator=tokens)
    relay.send(request("GET", "/_ping"))
    challenge = b'WWW-Authenticate: Basic realm="dockgate", charset="UTF-8"\r\n'
    assert relay.client.take() == refusal(401, "dockgate: authentication required", extra=challenge)
    relay.send(request("GET", "/_ping", f"Authorization: Bearer {TOKEN}"))
    daemon = relay.daemon()
    assert daemon.received == forwarded(request("GET", "/_ping"))
    daemon.send(answer(200, b"OK"))
    assert relay.client.take() == relayed(answer(200, b"OK"))
    assert [r.identity for r in relay.records] == ["anonymous", "ci"]


def test_an_http10_request_is_answered_then_closed(loop: ClockLoop) -> None:
    """HTTP/1.0 without keep-alive: the daemon's answer (ending at its close) is relayed, then
    the client's connection closes (test_http_edges:
    test_http10_request_gets_response_then_close)."""
    relay = open_connection(loop)
    relay.send(b"GET /_ping HTTP/1.0\r\n\r\n")
    daemon = relay.daemon()
    assert daemon.received == forwarded(b"GET /_ping HTTP/1.0\r\n\r\n")
    daemon.send(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nOK")
    daemon.send_eof()
    assert relay.client.data == relayed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nOK")
    assert relay.client.closed
    assert relay.pool.idle == []


def test_bytes_past_the_daemon_s_content_length_are_not_relayed(loop: ClockLoop) -> None:
    """A daemon writing past its Content-Length: the extra bytes are not relayed (the client
    would read them as the next answer) and the connection is not pooled."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping"))
    daemon = relay.daemon()
    daemon.send(answer(200, b"OK") + b"HTTP/1.1 200 OK\r\n\r\nsmuggled")
    assert relay.client.data == relayed(answer(200, b"OK"))
    assert relay.pool.idle == []
    assert daemon.closed


def test_a_new_connection_lost_before_the_answer_is_a_502(loop: ClockLoop) -> None:
    """A fresh upstream connection that breaks before a byte of the answer is not retried
    (only a reused one may be stale): 502, and the client's connection closes."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping"))
    relay.daemon().drop(ConnectionResetError(104, "Connection reset by peer"))
    message = "the Docker daemon closed the connection mid-response: Connection reset by peer"
    assert relay.client.data == refusal(502, message, close=True)
    assert relay.client.closed
    assert len(relay.pool.daemons) == 1


def test_the_access_log_counts_body_bytes_each_way(loop: ClockLoop) -> None:
    """The access log counts body bytes as relayed, heads excluded: a chunked upload counts its
    payload, a chunked answer its chunk framing as sent."""
    relay = open_connection(loop)
    relay.send(request("POST", "/up", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n")
    daemon = relay.daemon()
    body = b"3\r\nabc\r\n0\r\n\r\n"
    daemon.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    (record,) = relay.records
    assert (record.method, record.target, record.status) == ("POST", "/up", 200)
    assert (record.bytes_in, record.bytes_out) == (5, len(body))
    assert record.operation == "unknown"
    assert relay.context.metrics.bytes_out == len(body)


# ----- the pool's idle connections and split bytes -----------------------------------------------


def test_an_idle_pooled_connection_the_daemon_closes_is_forgotten(loop: ClockLoop) -> None:
    """A pooled connection the daemon closes while idle leaves the pool at once; the next
    request opens a new one instead of failing on the dead one."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping"))
    first = relay.daemon()
    first.send(answer(200, b"OK"))
    assert relay.pool.idle == [first.conn]
    first.send_eof()
    assert relay.pool.idle == []
    assert first.closed
    relay.send(request("GET", "/_ping"))
    assert len(relay.pool.daemons) == 2
    assert relay.daemon().received == forwarded(request("GET", "/_ping"))


def test_an_idle_pooled_connection_the_daemon_speaks_on_is_dropped(loop: ClockLoop) -> None:
    """The daemon never speaks first on an idle connection: one that does is dropped, not
    handed to the next request with stray bytes in it."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping"))
    first = relay.daemon()
    first.send(answer(200, b"OK"))
    first.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert first.transport.aborted
    loop.settle()
    assert relay.pool.idle == []
    assert relay.client.take() == relayed(answer(200, b"OK"))


def test_an_answer_split_byte_by_byte_is_relayed_exactly(loop: ClockLoop) -> None:
    """The daemon's answer arriving one byte per read (head and chunked body) reaches the client
    byte for byte, and the exchange ends at its last byte."""
    relay = open_connection(loop)
    relay.send(request("GET", "/containers/json"))
    daemon = relay.daemon()
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n[]\r\n0\r\n\r\n"
    )
    for i in range(len(raw)):
        assert relay.pool.idle == []
        daemon.send(raw[i : i + 1])
    assert relay.client.data == relayed(raw)
    assert relay.pool.idle == [daemon.conn]


def test_a_client_connection_close_ends_the_pipeline(loop: ClockLoop) -> None:
    """A request with `Connection: close` is the client's last: what is pipelined behind it is
    never forwarded, and the connection closes after its answer."""
    relay = open_connection(loop)
    relay.send(request("GET", "/_ping", "Connection: close") + request("DELETE", "/containers/x"))
    daemon = relay.daemon()
    assert daemon.take() == forwarded(request("GET", "/_ping"))
    daemon.send(answer(200, b"OK"))
    assert relay.client.closed
    assert daemon.take() == b""
    assert len(relay.records) == 1


def test_requests_pipelined_behind_a_password_check_wait_their_turn(loop: ClockLoop) -> None:
    """A Basic password is checked off the event loop: meanwhile reading is paused and the
    request pipelined behind it waits; once the hash says yes, the first goes out, and the
    second after its answer, decided at once from the remembered password (test_auth_checks:
    test_the_loop_runs_while_a_check_waits_and_the_queue_is_bounded)."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    checks = HeldChecks(loop)
    relay = open_connection(
        loop,
        authenticator=Authenticator(htpasswd=parse_htpasswd(f"alice:{hashed}\n", "htpasswd")),
        checks=checks,
    )
    basic = "Authorization: Basic " + base64.b64encode(b"alice:s3cret").decode()
    relay.send(request("GET", "/first", basic) + request("GET", "/second", basic))
    assert checks.pending_checks == 1
    assert relay.client.read_paused
    assert relay.pool.daemons == []

    checks.finish()
    daemon = relay.daemon()
    assert daemon.take() == forwarded(request("GET", "/first"))
    assert not relay.client.read_paused
    daemon.send(answer(200, b"1"))
    assert daemon.take() == forwarded(request("GET", "/second"))
    assert checks.pending_checks == 0  # remembered: no second hash
    daemon.send(answer(200, b"2"))
    assert relay.client.data == relayed(answer(200, b"1")) + relayed(answer(200, b"2"))
    assert [r.identity for r in relay.records] == ["alice", "alice"]


def test_a_wrong_password_is_401_after_its_check(loop: ClockLoop) -> None:
    """A wrong Basic password: 401 once the hash says no, and the connection goes on."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    checks = HeldChecks(loop)
    relay = open_connection(
        loop,
        authenticator=Authenticator(htpasswd=parse_htpasswd(f"alice:{hashed}\n", "htpasswd")),
        checks=checks,
    )
    basic = "Authorization: Basic " + base64.b64encode(b"alice:wrong").decode()
    relay.send(request("GET", "/_ping", basic))
    assert relay.client.data == b""
    checks.finish()
    challenge = b'WWW-Authenticate: Basic realm="dockgate", charset="UTF-8"\r\n'
    assert relay.client.take() == refusal(401, "dockgate: invalid credentials", extra=challenge)
    assert not relay.client.read_paused
    assert relay.pool.daemons == []


def test_a_daemon_lost_after_an_informational_head_is_still_a_502(loop: ClockLoop) -> None:
    """A 100 Continue from the daemon is not the answer: when the daemon's connection then
    breaks, the client gets the 100 it was relayed and then the gateway's 502 (as before issue
    14; the rewrite's "answer written" flag first counted the 100 as the answer and only
    closed: issue 14's attack review)."""
    relay = open_connection(loop)
    relay.send(request("POST", "/v1.41/containers/x/wait", "Expect: 100-continue"))
    daemon = relay.daemon()
    daemon.send(b"HTTP/1.1 100 Continue\r\n\r\n")
    daemon.drop(ConnectionResetError(104, "Connection reset by peer"))
    sent = relay.client.data
    assert sent.startswith(b"HTTP/1.1 100 Continue\r\n")
    assert b"HTTP/1.1 502 Bad Gateway\r\n" in sent
    assert relay.client.closed
