"""FlowControl (relay/flow.py): reading from the client is paused while any reason is left."""

from __future__ import annotations

from dockgate.relay.flow import EXCHANGE_PAUSES, FlowControl, Pause


class MockTransport:
    """What FlowControl calls on a transport, counted."""

    def __init__(self) -> None:
        self.read_paused = False
        self.calls: list[str] = []
        self.closing = False

    def pause_reading(self) -> None:
        self.read_paused = True
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.read_paused = False
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return self.closing


def _flow() -> tuple[FlowControl, MockTransport]:
    flow = FlowControl()
    transport = MockTransport()
    flow.attach(transport)  # type: ignore[arg-type]
    return flow, transport


def test_one_reason_pauses_and_its_end_resumes() -> None:
    """A reason pauses the transport once; resuming that reason resumes it."""
    flow, transport = _flow()
    flow.pause(Pause.CONNECTING)
    assert transport.read_paused and flow.read_paused
    flow.resume(Pause.CONNECTING)
    assert not transport.read_paused
    assert transport.calls == ["pause", "resume"]


def test_reading_resumes_only_when_the_last_reason_goes() -> None:
    """Resuming one reason does not undo another's pause; the transport is told only on change."""
    flow, transport = _flow()
    flow.pause(Pause.UPSTREAM_FULL)
    flow.pause(Pause.LOOKUP)
    flow.resume(Pause.UPSTREAM_FULL)
    assert transport.read_paused
    assert flow.reasons == Pause.LOOKUP
    flow.resume(Pause.LOOKUP)
    assert not transport.read_paused
    assert transport.calls == ["pause", "resume"]


def test_the_end_of_an_exchange_keeps_a_lookup_pause() -> None:
    """EXCHANGE_PAUSES clears what an exchange leaves (held bytes, tunnel setup, a full daemon)
    but not a password check or look-up belonging to the request being handled."""
    flow, transport = _flow()
    flow.pause(Pause.HELD | Pause.TUNNEL_SETUP | Pause.PASSWORD)
    flow.resume(EXCHANGE_PAUSES)
    assert flow.reasons == Pause.PASSWORD and transport.read_paused
    flow.clear()
    assert not flow.reasons and not transport.read_paused


def test_a_closing_transport_is_left_alone() -> None:
    """Once the transport is closing, pausing or resuming it is not attempted."""
    flow, transport = _flow()
    transport.closing = True
    flow.pause(Pause.HELD)
    assert transport.calls == [] and not flow.read_paused
    assert flow.reasons == Pause.HELD


def test_nothing_paused_resume_is_a_no_op() -> None:
    """The keep-alive path: resuming when nothing is paused calls nothing."""
    flow, transport = _flow()
    flow.resume(EXCHANGE_PAUSES)
    assert transport.calls == [] and not flow.reasons


def test_without_a_transport_the_reasons_are_still_kept() -> None:
    """Before connection_made, reasons accumulate and nothing is called."""
    flow = FlowControl()
    flow.pause(Pause.PASSWORD)
    assert flow.reasons == Pause.PASSWORD and not flow.read_paused
