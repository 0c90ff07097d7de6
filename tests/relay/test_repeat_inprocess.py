"""A keep-alive client repeating its last request (issue 14, fourth pass): the connection
starts the exchange in one call (`ClientConnection._repeat`) and logs it from the last
exchange's metrics key and access line (`_tail`). Driven in-process (tests/support/inprocess.py):
each repeat must go out, come back and be logged exactly as the first; anything admission
says differently must take the general way."""

from __future__ import annotations

import dataclasses
import io
import pathlib
import re

from dockgate.auth.identity import NO_AUTH_IDENTITY
from dockgate.http.request import RequestHead
from dockgate.observe.accesslog import AccessLog
from dockgate.policy.admission import Admission, Admissions, ConnectionFacts
from dockgate.policy.gatekeeper import refused_before_policy
from dockgate.refusal import Refusal
from dockgate.relay import connection
from dockgate.relay.phase import TRANSITIONS
from support.inprocess import (
    ClockLoop,
    answer,
    forwarded,
    open_connection,
    refusal,
    relayed,
    request,
)

READ_ONLY = (
    pathlib.Path(__file__).resolve().parents[1] / "policies" / "containers-read-only.yaml"
).read_text()
PING = request("GET", "/v1.41/_ping")


def test_the_direct_moves_are_moves_of_the_table() -> None:
    """The moves the straight path makes by assignment are legal moves of relay/phase.py's
    table (the one place that says which moves exist)."""
    for before, after in connection._DIRECT_MOVES:
        assert after in TRANSITIONS[before], (before, after)


def test_repeats_are_forwarded_answered_and_counted_alike(loop: ClockLoop) -> None:
    """Five times the same request: each is forwarded and answered the same, on the one pooled
    upstream connection, and counted under one metrics key."""
    relay = open_connection(loop)
    repeats = []
    repeat = relay.conn._repeat
    relay.conn._repeat = lambda *a: (repeats.append(1), repeat(*a))[1]  # type: ignore[method-assign]
    for _ in range(5):
        relay.send(PING)
        daemon = relay.daemon()
        assert daemon.take() == forwarded(PING)
        daemon.send(answer(200, b"OK"))
        assert relay.client.take() == relayed(answer(200, b"OK"))
    assert len(relay.pool.daemons) == 1
    assert len(repeats) == 4  # all but the first took the straight start
    assert relay.context.metrics.requests == {("SystemPing", "allow", "allow-all", "200"): 5}
    assert [(r.status, r.bytes_out) for r in relay.records] == [(200, 2)] * 5


def test_a_repeat_with_a_new_admission_takes_the_general_way(loop: ClockLoop) -> None:
    """Admission is asked on every repeat: when it answers with another object (here a
    refusal, as after a reload or a certificate's expiry), the plan is not reused: the
    request is refused and never reaches the daemon; the connection stays usable, and the
    next repeat, admitted as before, is forwarded again."""
    relay = open_connection(loop)
    admissions = relay.context.admissions
    relay.send(PING)
    relay.daemon().send(answer(200, b"OK"))
    relay.client.take()
    relay.daemon().take()
    denied = Refusal(403, "dockgate: not now", "test", "test")
    real_admit = Admissions.admit

    def refusing(head: RequestHead, facts: ConnectionFacts, now: float) -> Admission:
        return Admission(refused_before_policy(denied), NO_AUTH_IDENTITY, facts.source)

    admissions.admit = refusing  # type: ignore[method-assign]
    relay.send(PING)
    assert relay.client.take() == refusal(403, "dockgate: not now")
    assert relay.daemon().take() == b""
    admissions.admit = real_admit.__get__(admissions)  # type: ignore[method-assign]
    relay.send(PING)
    daemon = relay.daemon()
    assert daemon.take() == forwarded(PING)
    daemon.send(answer(200, b"OK"))
    assert relay.client.take() == relayed(answer(200, b"OK"))
    assert [r.status for r in relay.records] == [200, 403, 200]
    assert not relay.client.closing


def test_a_repeat_refused_by_the_policy_is_refused_each_time(loop: ClockLoop) -> None:
    """A request the policy refuses, repeated: each is refused and logged alike (the tail is
    reused for a refusal too), and none reaches the daemon."""
    relay = open_connection(loop, READ_ONLY)
    stop = request("POST", "/v1.41/containers/x/stop")
    for _ in range(3):
        relay.send(stop)
        assert relay.client.take().startswith(b"HTTP/1.1 403 ")
    assert relay.pool.daemons == []
    assert len({(r.status, r.decision) for r in relay.records}) == 1
    assert len(relay.records) == 3


def test_a_pipelined_repeat_waits_for_the_answer_before_it(loop: ClockLoop) -> None:
    """The same request twice in one read, after it was sent once: the first goes out at once,
    the second only after the first's answer, in order."""
    relay = open_connection(loop)
    relay.send(PING)
    daemon = relay.daemon()
    daemon.take()
    daemon.send(answer(200, b"OK"))
    relay.client.take()
    relay.send(PING + PING)
    assert daemon.take() == forwarded(PING)
    daemon.send(answer(200, b"A"))
    assert relay.client.take() == relayed(answer(200, b"A"))
    assert daemon.take() == forwarded(PING)
    daemon.send(answer(200, b"B"))
    assert relay.client.take() == relayed(answer(200, b"B"))
    assert len(relay.records) == 3


def test_repeats_write_the_access_line_the_first_wrote(loop: ClockLoop) -> None:
    """With a text access log, the repeats' lines (made from the kept parts) are the first
    request's line but for the duration, and a request logged with a note is written whole."""
    first = open_connection(loop)
    stream = io.StringIO()
    context = dataclasses.replace(first.context, access_log=AccessLog(stream))
    relay = open_connection(loop, context=context)
    for body in (b"OK", b"OK", b"OK"):
        relay.send(PING)
        relay.daemon().send(answer(200, body))
    relay.send(PING)
    relay.send_eof()  # the client leaves mid-exchange: logged with a note
    context.access_log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    shapes = {re.sub(r"dur_ms=[0-9.]+", "dur_ms=D", line) for line in lines[:3]}
    assert shapes == {
        '192.0.2.7:50123 "GET /v1.41/_ping HTTP/1.1" 200 in=0 out=2 dur_ms=D '
        "op=SystemPing decision=allow:allow-all:rule-1 user=-"
    }
    assert lines[3].endswith("(client gone)")


def test_a_repeat_without_an_idle_upstream_connection_opens_one(loop: ClockLoop) -> None:
    """The daemon closed the pooled connection between two repeats: the repeat finds no idle
    connection, waits for a new one, and goes out on it."""
    relay = open_connection(loop)
    relay.send(PING)
    first = relay.daemon()
    first.take()
    first.send(answer(200, b"OK"))
    relay.client.take()
    first.send_eof()  # the daemon closes the idle connection
    assert relay.pool.idle == []
    relay.send(PING)
    second = relay.daemon()
    assert second is not first
    assert second.take() == forwarded(PING)
    second.send(answer(200, b"OK"))
    assert relay.client.take() == relayed(answer(200, b"OK"))
    assert [r.status for r in relay.records] == [200, 200]
