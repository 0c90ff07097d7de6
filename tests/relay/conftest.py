"""Fixtures of the in-process relay tests (tests/support/inprocess.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.inprocess import ClockLoop, LookUps


@pytest.fixture
def loop() -> Iterator[ClockLoop]:
    """A fresh event loop whose clock the test moves; closed after the test, which fails if
    anything raised on it meanwhile (a callback, a task nobody awaited)."""
    clock_loop = ClockLoop()
    try:
        yield clock_loop
    finally:
        clock_loop.shut()


@pytest.fixture
def lookups(loop: ClockLoop, monkeypatch: pytest.MonkeyPatch) -> LookUps:
    """The ownership look-ups of this test, answered by the test (support.inprocess.LookUps)."""
    served = LookUps(loop)
    served.install(monkeypatch)
    return served
