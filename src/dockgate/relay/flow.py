"""Flow control of one client connection: why reading from the client is paused.

Several parts of an exchange may each need the client to stop sending for a while (the daemon's
socket is full, the upstream connection is not there yet, a look-up is running...). Each names
its reason (`Pause`); the client transport's reading is paused while any reason is left and
resumed when the last one goes, so one part resuming never undoes another's pause. The same
idea as uvicorn's `FlowControl` (protocols/http/flow_control.py), with named reasons.

`write_paused` is the other direction: the client's own write buffer is over its high-water mark
(asyncio's `pause_writing`), so the connection stops reading the daemon until it drains.

Sans-I/O apart from the two transport calls; tested with a mock transport (tests/test_flow.py).
"""

from __future__ import annotations

import asyncio
import enum


class Pause(enum.Flag):
    """Why reading from the client is paused (several at once)."""

    UPSTREAM_FULL = enum.auto()  # the daemon is not reading fast enough
    CONNECTING = enum.auto()  # no upstream connection yet
    HELD = enum.auto()  # pipelined bytes waiting for the current exchange
    TUNNEL_SETUP = enum.auto()  # waiting for the answer to a request that may hijack
    LOOKUP = enum.auto()  # the daemon is asked who owns an object (relay/steps.py)
    PASSWORD = enum.auto()  # a password hash is being checked (auth/checks.py)
    PEER = enum.auto()  # the unix-socket peer is being identified (auth/peerlookup.py)
    # The client does not read its answers: no further pipelined request is taken (and none
    # read) until its write buffer drains, so the gateway's own answers (refusals, 401s before
    # any authentication) cannot pile up in memory for a client that only sends.
    CLIENT_FULL = enum.auto()


NO_PAUSE = Pause(0)
# What an exchange may leave paused when it ends and the next request is read.
EXCHANGE_PAUSES = Pause.HELD | Pause.TUNNEL_SETUP | Pause.UPSTREAM_FULL


class FlowControl:
    """The client transport's reading: paused while any `Pause` reason is set."""

    __slots__ = ("_transport", "read_paused", "reasons", "write_paused")

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self.reasons = NO_PAUSE
        self.read_paused = False  # what the transport was last told
        self.write_paused = False  # the client's write buffer is full (pause_writing)

    def attach(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def pause(self, reason: Pause) -> None:
        self.reasons |= reason
        self._apply()

    def resume(self, reasons: Pause) -> None:
        if not self.reasons:
            return  # the common case on keep-alive: nothing was paused (no Flag arithmetic)
        self.reasons &= ~reasons
        self._apply()

    def clear(self) -> None:
        """Every reason is gone (a connection lingering after an early answer reads on)."""
        self.reasons = NO_PAUSE
        self._apply()

    def _apply(self) -> None:
        paused = bool(self.reasons)
        if paused == self.read_paused:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self.read_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()
