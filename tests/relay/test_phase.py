"""The connection's phases (relay/phase.py) and the one table of moves between them."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

import pytest

from dockgate.observe.accesslog import AccessLog
from dockgate.observe.audit import AuditLog
from dockgate.relay import phase as phases
from dockgate.relay.connection import ClientConnection
from dockgate.relay.context import ConnectionContext
from dockgate.relay.holding import HoldBudget
from dockgate.relay.phase import TRANSITIONS, Phase, PhaseError


def _reachable(start: Phase) -> set[Phase]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_table_names_every_phase() -> None:
    """Every phase has its row, and every move leads to a phase."""
    assert set(TRANSITIONS) == set(Phase)
    assert all(moves <= set(Phase) for moves in TRANSITIONS.values())


def test_every_phase_is_reachable_from_reading_head() -> None:
    """A fresh connection (READING_HEAD) can get to every phase: none is dead code."""
    assert _reachable(Phase.READING_HEAD) == set(Phase)


def test_closed_is_reachable_from_every_phase_in_one_move() -> None:
    """The client may leave, or a timeout fire, whatever the connection waits for."""
    for phase in Phase:
        if phase is not Phase.CLOSED:
            assert Phase.CLOSED in TRANSITIONS[phase], phase


def test_closed_is_the_end() -> None:
    """Nothing leaves CLOSED; nothing moves to itself except a body held after one dropped."""
    assert TRANSITIONS[Phase.CLOSED] == frozenset()
    selves = {phase for phase, moves in TRANSITIONS.items() if phase in moves}
    assert selves == {Phase.HOLDING_BODY}


def test_the_keep_alive_round_is_in_the_table() -> None:
    """The ordinary exchange: head read, forwarded, answer relayed, next head."""
    path = [Phase.READING_HEAD, Phase.FORWARDING, Phase.RELAYING_ANSWER, Phase.READING_HEAD]
    for old, new in itertools.pairwise(path):
        assert new in TRANSITIONS[old], (old, new)


class _Transport:
    """Enough of a transport for a connection to be made and closed."""

    def __init__(self) -> None:
        self.closed = False

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _connection() -> tuple[ClientConnection, _Transport]:
    loop = asyncio.new_event_loop()
    ctx = ConnectionContext(
        loop=loop,
        pool=cast(Any, None),
        admissions=cast(Any, None),
        holds=HoldBudget(1024),
        metrics=cast(Any, type("Counts", (), {"connections": 0})()),
        access_log=AccessLog(None),  # both off
        audit=AuditLog(None),
    )
    conn = ClientConnection(ctx)
    transport = _Transport()
    conn.connection_made(cast(Any, transport))
    loop.close()
    return conn, transport


def test_an_illegal_move_raises_when_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under STRICT (tests), a move not in the table raises PhaseError naming it."""
    monkeypatch.setattr(phases, "STRICT", True)
    conn, _ = _connection()
    with pytest.raises(PhaseError, match="READING_HEAD -> TUNNEL"):
        conn._enter(Phase.TUNNEL)
    assert conn.phase is Phase.READING_HEAD


def test_an_illegal_move_closes_the_connection_in_production(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without STRICT, an illegal move is printed (once per move) and the connection closed,
    rather than left to run on in a wrong state."""
    monkeypatch.setattr(phases, "STRICT", False)
    monkeypatch.setattr(phases, "_reported", set())
    conn, transport = _connection()
    conn._enter(Phase.HOLDING_ANSWER)
    assert conn.phase is Phase.CLOSED and conn.closing and transport.closed
    assert "illegal phase move READING_HEAD -> HOLDING_ANSWER" in capsys.readouterr().err
    again, _ = _connection()
    again._enter(Phase.HOLDING_ANSWER)
    assert again.phase is Phase.CLOSED
    assert capsys.readouterr().err == ""
