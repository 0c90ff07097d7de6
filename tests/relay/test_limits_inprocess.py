"""Limits in the relay, in-process: where a slot is taken and that every ending gives it back
(policy/limits.py; the end-to-end proof is tests/policy/test_limits_e2e.py).

Claim under test: a caller allowed one request and one stream at a time is refused (429,
`Retry-After: 1`) only while another of its exchanges runs, and gets the next one after an
exchange ends in any way: answered, refused by the guardrails after its slot was taken, failed
by the daemon (502), timed out while its body was held (408), left by its client mid-body or
mid-stream, or ended as a tunnel.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support.inprocess import (
    ClockLoop,
    Daemon,
    Relay,
    answer,
    forwarded,
    open_connection,
    refusal,
    relayed,
    request,
)

POLICY = """\
policies:
  one:
    rules:
      - allow: {sections: ["*"]}
    limits: {concurrent: 1, streams: 1}
"""

LIST = request("GET", "/v1.41/containers/json")
EVENTS = request("GET", "/v1.41/events")
BUSY = (
    "dockgate: ContainerList refused by the limits of policy one: at most 1 requests at once; "
    "wait for one; try again in 1 s"
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def another(relay: Relay) -> Relay:
    """A further connection of the same client (the same source: the same caller)."""
    return open_connection(relay.loop, context=relay.context)


def forwards(relay: Relay, data: bytes) -> Daemon:
    """The client sends `data`, which reaches a daemon connection (pooled connections are
    shared by the connections of a context): that one."""
    before = {id(d): len(d.received) for d in relay.pool.daemons}
    relay.send(data)
    (daemon,) = [d for d in relay.pool.daemons if len(d.received) > before.get(id(d), 0)]
    assert daemon.received[before.get(id(daemon), 0) :] == forwarded(data)
    return daemon


def admitted(relay: Relay, data: bytes = LIST) -> None:
    """`data` goes to the daemon on a new connection of the same caller, and is answered."""
    other = another(relay)
    daemon = forwards(other, data)
    assert other.client.data == b""
    daemon.send(answer(200, b"[]"))
    assert other.client.take() == relayed(answer(200, b"[]"))


def test_a_second_request_at_once_is_429_until_the_first_is_answered(loop: ClockLoop) -> None:
    first = open_connection(loop, POLICY)
    first.send(LIST)
    waiting = first.daemon()
    second = another(first)
    second.send(LIST)
    assert second.client.take() == refusal(429, BUSY, extra=b"Retry-After: 1\r\n")
    assert second.records[-1].decision == "deny:one:limit"
    assert second.context.metrics.limited == {("one", "ContainerList", "concurrent"): 1}
    # A stream is not an ordinary request: it has a slot of its own.
    admitted(first, EVENTS)
    waiting.send(answer(200, b"[]"))
    assert first.client.take() == relayed(answer(200, b"[]"))
    # Answered: the slot is back, on the same keep-alive connection as on another.
    forwards(second, LIST)


def _guardrails_refuse(relay: Relay) -> None:
    body = b'{"Image": "busybox", "HostConfig": {"Privileged": true}}'
    relay.send(request("POST", "/v1.41/containers/create", body=body))
    assert relay.client.take().startswith(b"HTTP/1.1 403 ")


def _daemon_fails(relay: Relay) -> None:
    daemon = forwards(relay, LIST)
    daemon.send(b"HTTP/1.1 200 OK\r\nContent-Len")  # (a byte came: not sent again)
    daemon.drop(ConnectionResetError(104, "Connection reset by peer"))
    assert relay.client.take().startswith(b"HTTP/1.1 502 ")


def _body_times_out(relay: Relay) -> None:
    relay.send(request("POST", "/v1.41/containers/create", "Content-Length: 100") + b'{"Im')
    relay.loop.advance(relay.context.body_timeout + 1)
    relay.sweep()
    assert relay.client.take().startswith(b"HTTP/1.1 408 ")


def _client_gone_mid_body(relay: Relay) -> None:
    relay.send(request("POST", "/v1.41/containers/create", "Content-Length: 100") + b'{"Im')
    relay.client.lose()


def _client_gone_mid_stream(relay: Relay) -> None:
    forwards(relay, EVENTS).send(STREAM_HEAD + b"2\r\n{}\r\n")
    assert relay.client.take().startswith(b"HTTP/1.1 200 ")
    relay.client.lose()


def _client_half_closes_mid_stream(relay: Relay) -> None:
    forwards(relay, EVENTS).send(STREAM_HEAD)
    relay.send_eof()


def _stream_ends(relay: Relay) -> None:
    forwards(relay, EVENTS).send(STREAM_HEAD + b"2\r\n{}\r\n0\r\n\r\n")
    assert relay.client.take().endswith(b"0\r\n\r\n")


def _tunnel_closes(relay: Relay) -> None:
    attach = request(
        "POST",
        "/v1.41/containers/x/attach?stream=1&stdout=1",
        "Connection: Upgrade",
        "Upgrade: tcp",
    )
    daemon = forwards(relay, attach)
    daemon.send(
        b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
        b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )
    assert relay.conn.tunnel
    relay.send_eof()
    daemon.send_eof()
    assert relay.client.closed


ENDINGS: dict[str, Callable[[Relay], None]] = {
    "guardrails refuse": _guardrails_refuse,
    "daemon fails": _daemon_fails,
    "body times out": _body_times_out,
    "client gone mid-body": _client_gone_mid_body,
    "client gone mid-stream": _client_gone_mid_stream,
    "client half-closes mid-stream": _client_half_closes_mid_stream,
    "stream ends": _stream_ends,
    "tunnel closes": _tunnel_closes,
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_every_ending_gives_the_slot_back(loop: ClockLoop, ending: str) -> None:
    relay = open_connection(loop, POLICY)
    for _ in range(3):
        ENDINGS[ending](another(relay))
        admitted(relay)
        admitted(relay, EVENTS)
    assert relay.context.metrics.limited == {}


def test_a_repeated_keep_alive_request_is_limited_too(loop: ClockLoop) -> None:
    """A keep-alive client repeating its request takes the connection's shortcut
    (`ClientConnection._repeat`): the limits are checked there as on the general way."""
    repeating = open_connection(loop, POLICY)
    for _ in range(2):
        forwards(repeating, LIST).send(answer(200, b"[]"))
        assert repeating.client.take() == relayed(answer(200, b"[]"))
    other = another(repeating)
    pending = forwards(other, LIST)
    repeating.send(LIST)
    assert repeating.client.take() == refusal(429, BUSY, extra=b"Retry-After: 1\r\n")
    assert repeating.context.metrics.limited == {("one", "ContainerList", "concurrent"): 1}
    # The refusal ended that exchange: the next one is read, and passes once a slot is free.
    pending.send(answer(200, b"[]"))
    forwards(repeating, LIST).send(answer(200, b"[]"))
    assert repeating.client.take() == relayed(answer(200, b"[]"))
    assert [r.decision for r in repeating.records if r.status == 429] == ["deny:one:limit"]


def test_a_repeated_request_spends_the_bucket(loop: ClockLoop) -> None:
    """The shortcut spends tokens as the general way does, and is refused without them."""
    relay = open_connection(loop, POLICY.replace("{concurrent: 1, streams: 1}", "{rate: 0.5}"))
    forwards(relay, LIST).send(answer(200, b"[]"))  # the burst: twice the rate, one token
    relay.client.take()
    relay.send(LIST)
    assert relay.client.take().startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
    loop.advance(2.0)  # one token back
    forwards(relay, LIST).send(answer(200, b"[]"))
    assert relay.client.take() == relayed(answer(200, b"[]"))
    relay.send(LIST)
    assert b"Retry-After: 2\r\n" in relay.client.take()
