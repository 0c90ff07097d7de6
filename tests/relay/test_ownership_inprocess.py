"""Ownership look-ups, in-process: while the gateway asks the daemon whose object a request is
about, the client's connection waits, paused, and what it pipelined is read in order after the
answer (relay/steps.py). The look-ups are answered by the test (support.inprocess.LookUps).
"""

from __future__ import annotations

from dockgate.auth.authenticator import Authenticator
from dockgate.auth.tokens import parse_tokens, token_digest
from support.inprocess import (
    ClockLoop,
    LookUps,
    Relay,
    answer,
    forwarded,
    open_connection,
    refusal,
    relayed,
    request,
)

OWNERSHIP = """
policies:
  mine:
    ownership: true
    rules:
      - allow: {sections: ["*"]}
"""
TOKEN = "dg_inprocess-ownership-token"
AUTH = f"Authorization: Bearer {TOKEN}"
OWNER = "token:ci"  # the owner label value of the identity `ci` (ownership/owners.py)


def caller(loop: ClockLoop) -> Relay:
    tokens = Authenticator(tokens=parse_tokens(f"ci ci {token_digest(TOKEN)}\n", "tokens"))
    return open_connection(loop, OWNERSHIP, authenticator=tokens)


def volume(owner: str) -> dict[str, object]:
    return {"Name": "myvol", "Driver": "local", "Labels": {"io.dockgate.owner": owner}}


def test_requests_pipelined_behind_a_look_up_wait_their_turn(
    loop: ClockLoop, lookups: LookUps
) -> None:
    """A volume inspect pipelined with a ping: while the daemon is asked whose the volume is,
    reading is paused and nothing is forwarded nor answered; the caller's volume then goes
    out, and the ping only after its answer (test_review_ownership:
    test_pipelined_lookups_answer_in_order; test_ownership_leaks:
    test_requests_pipelined_behind_a_list_look_up_wait_their_turn)."""
    relay = caller(loop)
    relay.send(request("GET", "/v1.41/volumes/myvol", AUTH) + request("GET", "/_ping", AUTH))
    assert lookups.asked == [("GET", "/volumes/myvol", None)]
    assert relay.client.read_paused
    assert relay.pool.daemons == []
    assert relay.client.data == b""

    lookups.answer(200, volume(OWNER))
    daemon = relay.daemon()
    assert daemon.take() == forwarded(request("GET", "/v1.41/volumes/myvol"))
    assert not relay.client.read_paused
    daemon.send(answer(200, b"{}"))
    assert daemon.take() == forwarded(request("GET", "/_ping"))
    daemon.send(answer(200, b"OK"))
    assert relay.client.data == relayed(answer(200, b"{}")) + relayed(answer(200, b"OK"))


def test_another_caller_s_object_is_missing_and_the_pipeline_goes_on(
    loop: ClockLoop, lookups: LookUps
) -> None:
    """Another caller's volume is answered as the daemon answers a missing one (404, its own
    message) and never reaches the daemon; the request pipelined behind it is then read and
    forwarded (test_ownership: another user's volume)."""
    relay = caller(loop)
    relay.send(request("GET", "/v1.41/volumes/myvol", AUTH) + request("GET", "/_ping", AUTH))
    lookups.answer(200, volume("token:someone-else"))
    assert relay.client.take() == refusal(404, "get myvol: no such volume")
    daemon = relay.daemon()
    assert daemon.received == forwarded(request("GET", "/_ping"))


def test_a_look_up_that_fails_is_a_502(loop: ClockLoop, lookups: LookUps) -> None:
    """A daemon that answers a look-up with a 500: the request cannot be checked, 502, and the
    connection closes."""
    relay = caller(loop)
    relay.send(request("GET", "/v1.41/volumes/myvol", AUTH))
    lookups.answer(500, {"message": "boom"})
    message = "ownership look-up failed: the daemon answered 500 to a look-up of volume myvol"
    assert relay.client.take() == refusal(502, message, close=True)
    assert relay.client.closed
    assert relay.pool.daemons == []


def test_a_client_leaving_during_a_look_up_ends_it(loop: ClockLoop, lookups: LookUps) -> None:
    """The client gone while its look-up waits: the look-up task is cancelled and nothing is
    forwarded when the daemon's answer would have come."""
    relay = caller(loop)
    relay.send(request("GET", "/v1.41/volumes/myvol", AUTH))
    assert lookups.pending == 1
    relay.client.lose(ConnectionResetError())
    loop.settle()
    assert lookups.pending == 0  # cancelled
    assert relay.pool.daemons == []
    assert relay.records[-1].note == "client gone"
