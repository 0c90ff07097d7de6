"""Bodies and answers the gateway holds whole, in-process: request bodies judged by the
guardrails before they go out (forwarded as the bytes judged, with a Content-Length), bodies
read and dropped on operations that take none, answers rewritten by redaction, and the time and
memory all of these may take (relay/holding.py, --body-timeout, --held-bodies-max).
"""

from __future__ import annotations

import json
import pathlib

import pytest

from support.inprocess import (
    ClockLoop,
    answer,
    forwarded,
    open_connection,
    refusal,
    relayed,
    request,
)

POLICIES = pathlib.Path(__file__).resolve().parents[1] / "policies"
GUARDED = (POLICIES / "guardrails-defaults.yaml").read_text()
JSON_TYPE = "Content-Type: application/json"

PRIVILEGED = b'{"Image":"busybox","HostConfig":{"Privileged":true}}'
ORDINARY = b'{"Image":"busybox","Cmd":["echo","chunked"]}'
CREATE = "/v1.41/containers/create?name=c"
PRIVILEGED_DENIED = (
    "dockgate: ContainerCreate denied by policy guarded: privileged containers are not allowed"
)


def held(body: bytes) -> bytes:
    """A create as the daemon gets it after the guardrails: its Content-Length (or chunked
    framing) replaced by the length of the body judged, after the hop field."""
    head = forwarded(request("POST", CREATE, "Content-Type: application/json"))
    return head[:-2] + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_a_privileged_create_is_refused_by_the_guardrails(loop: ClockLoop) -> None:
    """A ContainerCreate body is read whole and judged: Privileged true is a 403 with the
    guardrail's reason, nothing reaches the daemon, and the connection stays usable
    (test_guardrails_e2e: test_privileged_container_is_denied_by_default)."""
    relay = open_connection(loop, GUARDED)
    relay.send(request("POST", CREATE, "Content-Type: application/json", body=PRIVILEGED))
    assert relay.client.take() == refusal(403, PRIVILEGED_DENIED)
    assert relay.pool.daemons == []
    assert relay.records[-1].decision == "deny:guarded:guardrails"
    relay.send(request("GET", "/_ping"))
    assert relay.daemon().received == forwarded(request("GET", "/_ping"))


def test_a_chunked_create_is_forwarded_whole_with_a_content_length(loop: ClockLoop) -> None:
    """An ordinary create sent chunked is held, judged, and forwarded as the bytes judged: one
    Content-Length body, no Transfer-Encoding, only once it is whole (test_guardrails_e2e:
    test_chunked_body_is_forwarded_with_a_content_length)."""
    relay = open_connection(loop, GUARDED)
    relay.send(
        request("POST", CREATE, "Content-Type: application/json", "Transfer-Encoding: chunked")
    )
    for piece in (ORDINARY[:5], ORDINARY[5:12], ORDINARY[12:]):
        relay.send(b"%x\r\n%b\r\n" % (len(piece), piece))
        assert relay.pool.daemons == []  # held until judged
    relay.send(b"0\r\n\r\n")
    daemon = relay.daemon()
    assert daemon.received == held(ORDINARY)
    daemon.send(answer(201, b'{"Id":"abc"}', reason="Created"))
    assert relay.client.take() == relayed(answer(201, b'{"Id":"abc"}', reason="Created"))


def test_a_pipelined_ordinary_create_follows_a_refused_one(loop: ClockLoop) -> None:
    """A refused create and an ordinary one in one write: the 403 first, then the second is
    forwarded (test_guardrails_oracle: test_pipelined_forbidden_create_after_benign_one, in
    the other order)."""
    relay = open_connection(loop, GUARDED)
    ordinary = request("POST", CREATE, "Content-Type: application/json", body=ORDINARY)
    relay.send(
        request("POST", CREATE, "Content-Type: application/json", body=PRIVILEGED) + ordinary
    )
    assert relay.client.take() == refusal(403, PRIVILEGED_DENIED)
    assert relay.daemon().received == held(ORDINARY)


def test_a_held_body_that_does_not_arrive_in_time_gets_408(loop: ClockLoop) -> None:
    """A held body not whole within --body-timeout: the sweep answers 408 with the reason and
    the connection closes after a linger; nothing reaches the daemon (test_held_bodies:
    test_slow_body_gets_408)."""
    relay = open_connection(loop, GUARDED, body_timeout=1.0)
    relay.send(request("POST", CREATE, JSON_TYPE, "Content-Length: 100") + b"{")
    loop.advance(0.9)
    relay.sweep()
    assert relay.client.data == b""
    loop.advance(0.2)
    relay.sweep()
    message = "dockgate: the request body did not arrive within 1 s"
    assert relay.client.take() == refusal(408, message, close=True)
    assert relay.pool.daemons == []
    assert relay.context.holds.used == 0
    loop.advance(2.0)
    assert relay.client.closed


def test_held_bodies_share_one_budget(loop: ClockLoop) -> None:
    """Two connections holding bodies on one gateway: the second, whose Content-Length would
    pass --held-bodies-max, gets 503 with Retry-After up front; once the first client leaves,
    its share is given back and the next body fits (test_held_bodies:
    test_held_bodies_stay_within_the_budget)."""
    first = open_connection(loop, GUARDED, held_bodies_max=64 * 1024)
    first.send(request("POST", CREATE, JSON_TYPE, "Content-Length: 60000") + b"{")
    assert first.context.holds.used == 60000

    second = open_connection(loop, context=first.context)
    second.send(request("POST", CREATE, JSON_TYPE, "Content-Length: 10000") + b"{")
    message = (
        "dockgate: too many request bodies are being checked at once (--held-bodies-max); try again"
    )
    assert second.client.take() == refusal(503, message, close=True, extra=b"Retry-After: 1\r\n")

    first.client.lose(ConnectionResetError())
    loop.settle()
    assert first.context.holds.used == 0
    third = open_connection(loop, context=first.context)
    third.send(request("POST", CREATE, JSON_TYPE, body=ORDINARY))
    assert third.daemon().received == held(ORDINARY)
    assert first.context.holds.used == 0


def test_a_body_on_an_operation_that_reads_none_is_dropped(loop: ClockLoop) -> None:
    """ContainerKill reads no body: the gateway reads it whole, drops it, and forwards the
    request without one (Content-Length: 0) (test_body_shape_e2e)."""
    relay = open_connection(loop, GUARDED)
    relay.send(request("POST", "/v1.41/containers/x/kill", JSON_TYPE, body=b"{}"))
    sent = request("POST", "/v1.41/containers/x/kill", JSON_TYPE, "Content-Length: 0")
    assert relay.daemon().received == forwarded(sent)


REDACTING = """
policies:
  dashboard:
    read_only: true
    redact: {env: true}
    rules:
      - allow: {sections: [containers]}
"""


def test_a_redacted_answer_is_held_and_rewritten_with_its_length(loop: ClockLoop) -> None:
    """ContainerInspect under `redact: {env: true}`: the answer is read whole, the values of
    its environment replaced, and sent with the new Content-Length; the connection goes on
    (test_redaction)."""
    relay = open_connection(loop, REDACTING)
    relay.send(request("GET", "/v1.41/containers/x/json"))
    daemon = relay.daemon()
    inspect = json.dumps({"Id": "x", "Config": {"Env": ["DB_PASSWORD=hunter2", "A=b"]}})
    raw = answer(200, inspect.encode(), JSON_TYPE)
    daemon.send(raw[:40])
    assert relay.client.data == b""  # held until whole
    daemon.send(raw[40:])
    redacted = b'{"Id":"x","Config":{"Env":["DB_PASSWORD=<redacted>","A=<redacted>"]}}\n'
    assert relay.client.take() == (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Security-Policy: sandbox\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"Content-Length: %d\r\n"
        b"\r\n%b" % (len(redacted), redacted)
    )
    assert relay.pool.idle == [daemon.conn]
    assert relay.context.holds.used == 0


def test_a_repeated_redacted_request_is_rewritten_each_time(loop: ClockLoop) -> None:
    """The same ContainerInspect on one connection, twice in a row, then after a ping whose
    answer goes out as it comes: each goes out as itself and each inspect's answer is held and
    rewritten, whatever the connection remembers of the request before (a plan is reused only
    for the same request, and only when its answers are relayed as they come)."""
    relay = open_connection(loop, REDACTING.replace("[containers]", "[containers, ping]"))
    inspect = json.dumps({"Id": "x", "Config": {"Env": ["DB_PASSWORD=hunter2"]}}).encode()
    redacted = b'{"Id":"x","Config":{"Env":["DB_PASSWORD=<redacted>"]}}\n'
    inspect_target = "/v1.41/containers/x/json"
    for target in (inspect_target, inspect_target, "/v1.41/_ping", inspect_target):
        relay.send(request("GET", target))
        daemon = relay.daemon()
        assert daemon.take() == forwarded(request("GET", target))
        if target.endswith("/_ping"):
            daemon.send(answer(200, b"OK"))
            assert relay.client.take() == relayed(answer(200, b"OK"))
            continue
        daemon.send(answer(200, inspect, JSON_TYPE))
        assert relay.client.take().endswith(
            b"Content-Length: %d\r\n\r\n%b" % (len(redacted), redacted)
        )
    assert [r.status for r in relay.records] == [200] * 4


def test_the_gateway_says_continue_for_a_body_it_holds(loop: ClockLoop) -> None:
    """`Expect: 100-continue` on a body the gateway reads whole before the daemon sees the
    request: the gateway itself answers `100 Continue`, and the daemon gets the judged body
    without the `Expect` (it would answer a second 100)."""
    relay = open_connection(loop, GUARDED)
    head = request(
        "POST", CREATE, JSON_TYPE, "Expect: 100-continue", f"Content-Length: {len(ORDINARY)}"
    )
    relay.send(head)
    assert relay.client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert relay.pool.daemons == []
    relay.send(ORDINARY)
    assert relay.daemon().received == held(ORDINARY)  # no Expect: the body comes with it


@pytest.mark.parametrize("cut", ["eof", "reset"])
def test_a_held_answer_cut_short_is_a_502(loop: ClockLoop, cut: str) -> None:
    """The daemon's connection ends in the middle of an answer held whole for redaction: not a
    byte of it has reached the client, so the client should get a 502 saying so, as it does
    when the held answer is too large.

    Finding (in-process, issue 14), fixed: the client got an empty reply (a close, no status), and
    the access log says 200 "upstream failed mid-response". Holding the answer sets
    `_response_started` (it stands for "the daemon's head arrived", relay/connection.py), and
    `_upstream_failed` takes it as "bytes went out" and only closes. `_collect_answer`
    clears it before failing for a too-large answer; `upstream_eof`/`upstream_lost` do not.
    Same cause as the 101 finding in test_tunnel_inprocess.py; the connection now keeps the
    fact "bytes of this answer were written to the client" (`_answer_written`) apart."""
    relay = open_connection(loop, REDACTING)
    relay.send(request("GET", "/v1.41/containers/x/json"))
    daemon = relay.daemon()
    inspect = json.dumps({"Id": "x", "Config": {"Env": ["DB_PASSWORD=hunter2"]}})
    daemon.send(answer(200, inspect.encode(), JSON_TYPE)[:-10])
    if cut == "eof":
        daemon.send_eof()
    else:
        daemon.drop(ConnectionResetError(104, "Connection reset by peer"))
    assert relay.client.data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert relay.client.closed
    assert relay.context.holds.used == 0
