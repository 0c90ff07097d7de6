"""Shared event streams (relay/eventfeed.py), in-process: clients asking for the same
`GET /events` share one daemon connection; each sees what its own stream would show."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dockgate.http.request import RequestHead, RequestReader
from dockgate.relay.eventfeed import SLOW_MEMBER_BYTES, shareable
from support.inprocess import (
    ClockLoop,
    Relay,
    answer,
    forwarded,
    open_connection,
    relayed,
    request,
)

EVENTS_HEAD = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def event(n: int) -> bytes:
    return b'{"Type":"volume","Action":"create","Actor":{"ID":"v%d"}}\n' % n


@pytest.fixture
def loop() -> Iterator[ClockLoop]:
    loop = ClockLoop()
    yield loop
    loop.shut()


def clients(loop: ClockLoop, n: int, **config: object) -> list[Relay]:
    """`n` client connections to one gateway."""
    first = open_connection(loop, **config)  # type: ignore[arg-type]
    return [first] + [open_connection(loop, context=first.context) for _ in range(n - 1)]


def test_clients_asking_the_same_share_one_daemon_stream(loop: ClockLoop) -> None:
    a, b, c = clients(loop, 3)
    for relay in (a, b, c):
        relay.send(request("GET", "/v1.41/events?filters=%7B%22type%22%3A%5B%22volume%22%5D%7D"))
    assert len(a.pool.daemons) == 1, "one daemon connection for the three"
    daemon = a.daemon()
    assert daemon.take() == forwarded(
        request("GET", "/v1.41/events?filters=%7B%22type%22%3A%5B%22volume%22%5D%7D")
    )
    daemon.send(EVENTS_HEAD)
    for relay in (a, b, c):
        assert relay.client.take() == relayed(EVENTS_HEAD)
    daemon.send(chunk(event(1)) + chunk(event(2)))
    for relay in (a, b, c):
        assert relay.client.take() == chunk(event(1) + event(2))
    # One leaves: the others go on; the last to leave takes the daemon connection with it.
    b.send_eof()
    daemon.send(chunk(event(3)))
    assert a.client.take() == chunk(event(3)) == c.client.take()
    assert b.client.take() == b""
    a.client.lose(ConnectionResetError())
    loop.settle()
    assert not daemon.closed
    c.send_eof()
    assert daemon.transport.aborted
    assert a.pool.idle == []
    assert [r.note for r in a.records] == ["client gone"] * 3
    assert {r.status for r in a.records} == {200}


def test_a_client_joining_later_gets_the_head_then_the_next_event(loop: ClockLoop) -> None:
    a, b, c = clients(loop, 3)
    a.send(request("GET", "/events"))
    daemon = a.daemon()
    daemon.send(EVENTS_HEAD + chunk(event(1)))
    assert a.client.take() == relayed(EVENTS_HEAD) + chunk(event(1))
    b.send(request("GET", "/events"))
    assert len(a.pool.daemons) == 1
    assert b.client.take() == relayed(EVENTS_HEAD), "the head at once, as the daemon would"
    # Half an event, then C joins: C starts at the event after it, never inside one.
    half = len(event(2)) // 2
    daemon.send(b"%x\r\n%b" % (len(event(2)), event(2)[:half]))
    c.send(request("GET", "/events"))
    assert c.client.take() == relayed(EVENTS_HEAD)
    daemon.send(event(2)[half:] + b"\r\n" + chunk(event(3)))
    assert a.client.take() == chunk(event(2)[:half]) + chunk(event(2)[half:] + event(3))
    assert b.client.take() == a.client.data[-len(b.client.data) + len(relayed(EVENTS_HEAD)) :]
    assert c.client.take() == chunk(event(3))
    daemon.send(chunk(event(4)))
    assert a.client.take() == b.client.take() == c.client.take() == chunk(event(4))


def test_different_questions_and_replays_get_streams_of_their_own(loop: ClockLoop) -> None:
    relays = clients(loop, 5)
    targets = ["/events", "/v1.41/events", "/events?since=0", "/events?%55NTIL=1", "/events"]
    for relay, target in zip(relays, targets, strict=True):
        relay.send(request("GET", target))
    sent = [d.take() for d in relays[0].pool.daemons]
    assert sent == [forwarded(request("GET", t)) for t in targets[:4]]


@pytest.mark.parametrize(
    ("target", "version", "expected"),
    [
        ("/events", "1.1", True),
        ("/events?filters=x&type=y", "1.1", True),
        ("/events", "1.0", False),  # answered until-close, not in chunks
        ("/events?since=1", "1.1", False),
        ("/events?until=1", "1.1", False),
        ("/events?x=1;since=2", "1.1", False),  # Go before 1.17 splits on ';' too
        ("/events?%73ince=1", "1.1", False),  # keys are unescaped
        ("/events?Since=1", "1.1", False),  # (Go compares keys exactly; any case is kept out)
        ("/events?sinceX=1", "1.1", True),
    ],
)
def test_shareable(target: str, version: str, expected: bool) -> None:
    reader = RequestReader(64 * 1024)
    (head, *_) = reader.feed(f"GET {target} HTTP/{version}\r\nHost: docker\r\n\r\n".encode())
    assert isinstance(head, RequestHead)
    assert shareable(head) is expected


def test_an_answer_that_is_no_stream_goes_to_those_who_asked_only(loop: ClockLoop) -> None:
    a, b, c = clients(loop, 3)
    a.send(request("GET", "/events?filters=bad"))
    b.send(request("GET", "/events?filters=bad"))
    daemon = a.daemon()
    error = answer(400, b'{"message":"invalid filter"}\n', "Content-Type: application/json")
    daemon.send(error)
    assert a.client.take() == relayed(error) == b.client.take()
    assert not a.client.closing and not b.client.closing, "keep-alive goes on"
    c.send(request("GET", "/events?filters=bad"))
    assert len(a.pool.daemons) == 2, "a new question, a new daemon connection"


def test_the_daemon_failing_ends_every_stream_as_its_own_would(loop: ClockLoop) -> None:
    a, b, c = clients(loop, 3)
    a.send(request("GET", "/events"))
    b.send(request("GET", "/events"))
    daemon = a.daemon()
    daemon.send(EVENTS_HEAD + chunk(event(1)))
    a.client.take()
    b.client.take()
    daemon.drop(ConnectionResetError())
    for relay in (a, b):
        assert relay.client.closed
        assert relay.client.take() == b""  # no 502 inside a body
    assert [r.note for r in a.records] == ["upstream failed mid-response"] * 2
    # The next asker gets a stream of its own, on a new connection.
    c.send(request("GET", "/events"))
    assert len(a.pool.daemons) == 2


def test_no_daemon_is_a_502_for_everyone_waiting(loop: ClockLoop) -> None:
    a, b = clients(loop, 2)
    a.pool.refuse = ConnectionRefusedError(111, "Connection refused")
    a.send(request("GET", "/events"))
    b.send(request("GET", "/events"))
    for relay in (a, b):
        sent = relay.client.take()
        assert sent.startswith(b"HTTP/1.1 502 "), sent
        assert b"cannot connect to the Docker daemon" in sent
        assert relay.client.closed


def test_the_daemon_ending_the_stream_ends_each_exchange(loop: ClockLoop) -> None:
    a, b = clients(loop, 2)
    a.send(request("GET", "/events"))
    b.send(request("GET", "/events"))
    daemon = a.daemon()
    daemon.send(EVENTS_HEAD + chunk(event(1)) + b"0\r\n\r\n")
    for relay in (a, b):
        assert relay.client.take() == relayed(EVENTS_HEAD) + chunk(event(1)) + b"0\r\n\r\n"
        assert not relay.client.closing  # keep-alive: the next request may come
    assert daemon.closed
    a.send(request("GET", "/_ping"))
    assert a.daemon().take() == forwarded(request("GET", "/_ping"))


def big_event() -> bytes:
    return event(0) * (64 * 1024 // len(event(0)))


def test_a_client_that_stops_reading_is_cut_once_the_budget_is_spent(loop: ClockLoop) -> None:
    """Unread events of all members together may take the budget; past it, a member with more
    than SLOW_MEMBER_BYTES unread is cut, and the others go on."""
    a, b = clients(loop, 2)
    feeds = a.context.event_feeds
    assert feeds is not None
    feeds.unread_budget = 4 * SLOW_MEMBER_BYTES
    a.send(request("GET", "/events"))
    b.send(request("GET", "/events"))
    daemon = a.daemon()
    daemon.send(EVENTS_HEAD)
    b.fill()  # B's socket is full
    sent = 0
    while sent <= feeds.unread_budget and not b.client.closing:
        daemon.send(chunk(big_event()))
        sent += len(chunk(big_event()))
    assert sent > feeds.unread_budget, "not cut before the budget was spent"
    assert b.client.aborted
    assert b.records[-1].note.startswith("the client read the shared event stream too slowly")
    assert feeds.unread == 0, "what it had not read is no longer counted"
    assert not a.client.closing
    daemon.send(chunk(event(9)))
    assert a.client.data.endswith(chunk(event(9)))
    assert not daemon.closed


def test_a_slow_member_under_the_budget_is_not_cut(loop: ClockLoop) -> None:
    """A reader that lags through a burst (its socket full for a while) keeps its stream while
    the budget lasts, as its own stream would (the daemon holds 1,024 events for it)."""
    a, b = clients(loop, 2)
    feeds = a.context.event_feeds
    assert feeds is not None
    feeds.unread_budget = 8 * SLOW_MEMBER_BYTES
    a.send(request("GET", "/events"))
    b.send(request("GET", "/events"))
    daemon = a.daemon()
    daemon.send(EVENTS_HEAD)
    b.fill()
    for _ in range(6 * SLOW_MEMBER_BYTES // len(big_event())):
        daemon.send(chunk(big_event()))
    assert not b.client.closing
    assert feeds.unread >= 5 * SLOW_MEMBER_BYTES
    b.drain()
    assert feeds.unread == 0
    b.send_eof()
    a.send_eof()
    assert feeds.unread == 0 and len(feeds) == 0


def test_a_client_that_catches_up_is_not_cut(loop: ClockLoop) -> None:
    a, b = clients(loop, 2)
    feeds = a.context.event_feeds
    assert feeds is not None
    feeds.unread_budget = 2 * SLOW_MEMBER_BYTES
    a.send(request("GET", "/events"))
    b.send(request("GET", "/events"))
    daemon = a.daemon()
    daemon.send(EVENTS_HEAD)
    big = big_event()
    for _ in range(3 * feeds.unread_budget // len(big)):
        b.fill()
        daemon.send(chunk(big))
        b.drain()
    assert not b.client.closing


def test_without_sharing_each_stream_has_its_own_connection(loop: ClockLoop) -> None:
    a, b = clients(loop, 2, shared_events=False)
    a.send(request("GET", "/events"))
    b.send(request("GET", "/events"))
    assert len(a.pool.daemons) == 2
