"""Issue 12, item 2 (the rest): a sweep pass that fails is logged, counted in the metrics, and
the sweeper goes on.

The periodic sweep (server.py `_sweep`) runs the header and body timeouts, the file reloads and
the workers' metric snapshots. A pass that raises used to end it silently; since 997b744 it is
logged and counted, and now the count is exported as `dockgate_sweep_failures_total` on the
admin listener. Nothing a client or a file can do makes a pass raise any more (a policy file
that breaks its reader is a refused reload, counted in `dockgate_reloads_total`), so the fault
is injected: the real gateway runs with `_sweep_once` wrapped to raise while a trigger file
exists.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dockgate.observe.metrics import RequestCounts, render
from support.daemon import PrivateDaemon
from support.gateway import Gateway, gateway_env, running
from support.metrics import scrape

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

SWEEP_FAILURES = ("dockgate_sweep_failures_total", ())
INJECTED = "sweep failed in pass (RuntimeError: injected sweep fault); continuing"

# `python -c` with this, then `serve ...`: the gateway, with every sweep pass raising while the
# file named by DGT_SWEEP_FAULT exists.
FAULTY_GATEWAY = """\
import os, sys
from dockgate import server
from dockgate.cli import main

_original = server.Gateway._sweep_once
_trigger = os.environ["DGT_SWEEP_FAULT"]

def _faulty(self):
    if os.path.exists(_trigger):
        raise RuntimeError("injected sweep fault")
    _original(self)

server.Gateway._sweep_once = _faulty
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _partial_head_answer(port: int) -> bytes:
    """What a head that never ends gets (the sweeper's header timeout answers it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as slow:
        slow.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n")
        answer = b""
        while piece := slow.recv(4096):
            answer += piece
    return answer


def test_failed_sweep_passes_are_counted_and_the_sweeper_goes_on(
    daemon: PrivateDaemon, tmp_path: Path
) -> None:
    """Failed before: no such metric (the failures were only counted in an attribute)."""
    trigger = tmp_path / "fail-sweeps"
    gw = Gateway(
        daemon.host,
        *("--admin-listen", "tcp://127.0.0.1:0", "--header-timeout", "1"),
        env=gateway_env({"DGT_SWEEP_FAULT": str(trigger)}),
    )
    assert gw.command[1:4] == ["-m", "dockgate", "serve"]
    gw.command = [sys.executable, "-c", FAULTY_GATEWAY, *gw.command[3:]]
    with running(gw, "the gateway with a faulty sweep") as gw:
        admin = gw.admin_port()
        assert scrape(admin)[SWEEP_FAILURES] == 0
        trigger.touch()
        assert _wait_for(lambda: scrape(admin)[SWEEP_FAILURES] >= 3), scrape(admin)
        assert INJECTED in gw.stderr_text()
        trigger.unlink()
        time.sleep(1.0)  # a pass that was under way when the file went may still count
        failures = scrape(admin)[SWEEP_FAILURES]
        # The sweeper survived them all: a head that never ends is answered 408 and closed.
        assert _partial_head_answer(gw.port).startswith(b"HTTP/1.1 408 ")
        assert scrape(admin)[SWEEP_FAILURES] == failures  # none since the fault went
        assert gw.stderr_text().count(INJECTED) == failures


def test_sweep_failures_of_every_worker_add_up() -> None:
    """Each worker sweeps for itself: its failures are its own, and a scrape adds them."""
    one, two = RequestCounts(), RequestCounts()
    one.sweep_failures, two.sweep_failures = 2, 5
    total = RequestCounts()
    total.add(one, gauges=True)
    total.add(RequestCounts.from_json(two.to_json()), gauges=False)
    assert total.sweep_failures == 7
    assert b"\ndockgate_sweep_failures_total 7.0\n" in render(total, 2)
