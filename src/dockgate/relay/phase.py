"""The phases of a client connection and the one table of moves between them.

A `ClientConnection` (relay/connection.py) is always in exactly one `Phase`: what it is waiting
for between two events (bytes from the client, bytes from the daemon, a look-up's answer, a
timer). The work done on an event (admission, the policy's decisions, writing an answer) runs
inside a move; a move not in `TRANSITIONS` is a bug in the relay.

    READING_HEAD
      ├─> IDENTIFYING_PEER (a unix-socket client's first request: who is calling)
      ├─> ADMITTING, LOOKING_UP, HOLDING_BODY  (a request may pass through several, then on:)
      ├─> REFUSED_DRAINING ─> READING_HEAD | LINGERING (its body left unread)
      └─> FORWARDING ─┬─> RELAYING_ANSWER ─> READING_HEAD | LINGERING (early answer) | TUNNEL
                      └─> HOLDING_ANSWER ──> READING_HEAD | LINGERING

Every phase may move to CLOSED (the client leaves, a timeout, the daemon fails, shutdown);
CLOSED is the end. The data an exchange carries (the buffers of a held body or answer, the
events waiting for a look-up, whether the request's end was sent) stays data on the connection.

An illegal move is a bug: with `STRICT` (the environment variable DOCKGATE_STRICT_PHASES=1,
set by tests/conftest.py for every gateway the tests start, or the module flag set in-process)
`ClientConnection._enter` raises `PhaseError` after printing it on stderr, where the test
support looks for it; otherwise it prints it once per move and closes the connection rather
than run on in a wrong state.
"""

from __future__ import annotations

import enum
import os


class Phase(enum.Enum):
    """What a client connection is waiting for."""

    # Hashed by identity (a C call), not Enum's Python-level __hash__: the table is consulted
    # on every move, a few times per request on the keep-alive path.
    __hash__ = object.__hash__

    READING_HEAD = "reading head"  # idle, or part of the next request head is in
    # A unix-socket client's first request waits while its peer is identified: its process
    # read from /proc, its container asked of the daemon (auth/peerlookup.py).
    IDENTIFYING_PEER = "identifying peer"
    ADMITTING = "admitting"  # a password is being checked in a worker thread
    LOOKING_UP = "looking up"  # the daemon is asked who owns what the request names
    HOLDING_BODY = "holding body"  # a body read whole: to be judged, or dropped (no handler)
    FORWARDING = "forwarding"  # the request is going to the daemon; no answer yet
    RELAYING_ANSWER = "relaying answer"  # the daemon's answer is going out as it comes
    HOLDING_ANSWER = "holding answer"  # the answer is read whole, checked, then sent
    REFUSED_DRAINING = "refused, draining"  # answered here; the rest of the request is dropped
    TUNNEL = "tunnel"  # hijacked: raw bytes both ways (relay/tunnel.py)
    LINGERING = "lingering"  # after an early answer: the client's bytes read and dropped
    CLOSED = "closed"


# The members as module constants, for the relay's hot paths: `Phase.X` is a look-up on the
# enum class (about 75 ns in CPython 3.11), and phases are tested on every read.
READING_HEAD = Phase.READING_HEAD
IDENTIFYING_PEER = Phase.IDENTIFYING_PEER
ADMITTING = Phase.ADMITTING
LOOKING_UP = Phase.LOOKING_UP
HOLDING_BODY = Phase.HOLDING_BODY
FORWARDING = Phase.FORWARDING
RELAYING_ANSWER = Phase.RELAYING_ANSWER
HOLDING_ANSWER = Phase.HOLDING_ANSWER
REFUSED_DRAINING = Phase.REFUSED_DRAINING
TUNNEL = Phase.TUNNEL
LINGERING = Phase.LINGERING
CLOSED = Phase.CLOSED

_P = Phase

# The moves a connection may make from each phase (CLOSED is added to every one below).
_MOVES: dict[Phase, frozenset[Phase]] = {
    _P.READING_HEAD: frozenset(
        {
            _P.IDENTIFYING_PEER,
            _P.ADMITTING,
            _P.LOOKING_UP,
            _P.HOLDING_BODY,
            _P.FORWARDING,
            _P.REFUSED_DRAINING,
        }
    ),
    # The caller known: the request is admitted, as it would have been at once.
    _P.IDENTIFYING_PEER: frozenset(
        {_P.ADMITTING, _P.LOOKING_UP, _P.HOLDING_BODY, _P.FORWARDING, _P.REFUSED_DRAINING}
    ),
    # The password checked: the request goes the way a request admitted at once would.
    _P.ADMITTING: frozenset({_P.LOOKING_UP, _P.HOLDING_BODY, _P.FORWARDING, _P.REFUSED_DRAINING}),
    # The object is the caller's: forwarded, or its body held (to be labelled, judged).
    _P.LOOKING_UP: frozenset({_P.HOLDING_BODY, _P.FORWARDING, _P.REFUSED_DRAINING}),
    # Whole and judged: forwarded, looked up first, or refused (read to its end: the connection
    # goes on; too large or over budget: the rest is unread). A body dropped unread (its
    # operation takes none) may be followed by a held one of the same request.
    _P.HOLDING_BODY: frozenset(
        {_P.HOLDING_BODY, _P.LOOKING_UP, _P.FORWARDING, _P.REFUSED_DRAINING}
    ),
    # The answer's head arrives: relayed as it comes, or held whole to be checked.
    _P.FORWARDING: frozenset({_P.RELAYING_ANSWER, _P.HOLDING_ANSWER}),
    # The answer ends: the next request (keep-alive); lingering when the daemon answered
    # before the request's body was whole; or the daemon hijacks the connection.
    _P.RELAYING_ANSWER: frozenset({_P.READING_HEAD, _P.LINGERING, _P.TUNNEL}),
    _P.HOLDING_ANSWER: frozenset({_P.READING_HEAD, _P.LINGERING}),
    # The refused request's end is read: the next request; or its body is left unread.
    _P.REFUSED_DRAINING: frozenset({_P.READING_HEAD, _P.LINGERING}),
    _P.TUNNEL: frozenset(),
    _P.LINGERING: frozenset(),
    _P.CLOSED: frozenset(),
}

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    phase: moves if phase is _P.CLOSED else moves | {_P.CLOSED} for phase, moves in _MOVES.items()
}

# Raise on an illegal move instead of closing the connection (tests; see the docstring). A
# variable dockgate reads that is no option (startup/envwarnings.py does not warn about it).
STRICT_VARIABLE = "DOCKGATE_STRICT_PHASES"
STRICT = os.environ.get(STRICT_VARIABLE, "") not in ("", "0")

# Printed on stderr for an illegal move; tests/support/gateway.py looks for it.
ILLEGAL_MOVE_MARK = "dockgate: illegal phase move"


class PhaseError(RuntimeError):
    """A move not in TRANSITIONS: a bug in the relay."""

    def __init__(self, old: Phase, new: Phase) -> None:
        super().__init__(f"{ILLEGAL_MOVE_MARK} {old.name} -> {new.name}")
        self.old = old
        self.new = new


_reported: set[tuple[Phase, Phase]] = set()


def first_report(old: Phase, new: Phase) -> bool:
    """Whether the illegal move old -> new is seen for the first time in this process (it is
    logged once, not once per connection)."""
    if (old, new) in _reported:
        return False
    _reported.add((old, new))
    return True
