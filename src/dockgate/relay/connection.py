"""One client connection: reads requests, relays each to the daemon, relays the answers back.

Per connection, requests are served one at a time and in order (pipelined requests wait in the
reader's buffer). An exchange ends when the daemon's response is complete; then the upstream
connection goes back to the pool if it is clean, and the next request is read.

The connection is always in one `Phase` (relay/phase.py), what it waits for: READING_HEAD, then
ADMITTING (a password being checked), LOOKING_UP (the daemon asked who owns an object),
HOLDING_BODY (a body read whole), FORWARDING, RELAYING_ANSWER or HOLDING_ANSWER, and back to
READING_HEAD; or REFUSED_DRAINING (answered here, the rest of the request dropped), TUNNEL,
LINGERING, CLOSED. Every move goes through `_enter`, which checks it against the one table of
moves, `phase.TRANSITIONS`. The buffers an exchange carries stay data beside the phase.

After a `101 Switching Protocols` (or the older `200` with a Docker raw-stream body that the
daemon answers to a hijacked attach/exec), the connection hands over to a `Tunnel`
(relay/tunnel.py): two one-way pumps of raw bytes, with a half-close passed on as a half-close.

Flow control: when one side's write buffer is over its high-water mark, reading from the other
side pauses, so a slow reader never makes the gateway buffer a whole `docker export`. Why
reading from the client is paused is one `FlowControl` with a flag per reason (relay/flow.py).

What the connection needs from its process (configuration, loop, pool, admission, sinks) comes
in one `ConnectionContext` (relay/context.py). What a bound policy adds between admission and the
daemon (ownership look-ups, bodies judged and labelled, redaction) is in `relay/steps.py`, mixed
into `ClientConnection`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import cast

from dockgate.auth.identity import Identity
from dockgate.auth.peerlookup import CONTAINERS, PEER_PROCESSES, identify_peer, settled
from dockgate.auth.peerproc import PeerProcess, Unidentified, boot_ticks, peer_cred
from dockgate.auth.sourceaddr import UNIX_SOURCE
from dockgate.body.content import IGNORED_BODY_LIMIT
from dockgate.body.content import too_large as too_large_to_drop
from dockgate.body.redact import (
    EventStreamRedaction,
    Redaction,
    RedactionError,
)
from dockgate.http.errors import (
    ClientProtocolError,
    GatewayError,
    UpstreamError,
    describe_error,
    error_response,
)
from dockgate.http.hops import LOOP_MESSAGE, came_back
from dockgate.http.hops import TOKEN as HOP_TOKEN
from dockgate.http.proxyproto import ProxyHeaderError, parse_proxy_header
from dockgate.http.request import (
    HEAD_CACHE_MAX_HEAD_BYTES,
    Body,
    EndOfRequest,
    RequestEvent,
    RequestHead,
    RequestReader,
    forwarded_head,
    without_body,
)
from dockgate.http.response import (
    EndOfResponse,
    Framing,
    ResponseBody,
    ResponseHead,
    ResponseReader,
)
from dockgate.observe.accesslog import AccessRecord, LineParts
from dockgate.observe.audit import (
    AUDIT_BODY_LIMIT,
    AUDITED_BODIES,
    USER_AGENT_CHARS,
    AuditRecord,
    audit_details,
    injected_fields,
    target_object,
)
from dockgate.observe.metrics import RequestKey
from dockgate.observe.modefields import mode_fields
from dockgate.policy.admission import (
    Admission,
    ConnectionFacts,
    PendingAdmission,
    throttle_source,
)
from dockgate.policy.browser import ANSWER_HEADERS
from dockgate.policy.gatekeeper import Verdict, refused_before_policy
from dockgate.policy.limits import Limits, Slot, caller_key, is_stream, limit_refusal
from dockgate.policy.plan import (
    Allowed,
    Answer,
    DrainBody,
    Forward,
    HoldBody,
    Step,
    judge_drained,
    plan_admitted,
    plan_request,
    scoped_answer_rewritten,
)
from dockgate.policy.scopelists import event_filter, filters_answer
from dockgate.refusal import Refusal
from dockgate.relay import phase as phases
from dockgate.relay.context import ConnectionContext
from dockgate.relay.eventfeed import EventFeeds, Subscription, shareable
from dockgate.relay.flow import EXCHANGE_PAUSES, NO_PAUSE, FlowControl, Pause
from dockgate.relay.holding import Share
from dockgate.relay.phase import (
    ADMITTING,
    CLOSED,
    FORWARDING,
    HOLDING_ANSWER,
    HOLDING_BODY,
    IDENTIFYING_PEER,
    LINGERING,
    READING_HEAD,
    REFUSED_DRAINING,
    RELAYING_ANSWER,
    TRANSITIONS,
    TUNNEL,
    Phase,
    PhaseError,
)
from dockgate.relay.steps import PolicySteps
from dockgate.relay.tls import PROXY_SOURCE_INFO
from dockgate.relay.tunnel import Tunnel
from dockgate.relay.upstream import (
    WRITE_HIGH_WATER_BYTES,
    WRITE_LOW_WATER_BYTES,
    UpstreamConnection,
)
from dockgate.relay.upstreamtls import describe_upstream_error

# A request this gateway forwarded that came back to it (http/hops.py): never forwarded again.
LOOP_REFUSAL = Refusal(508, LOOP_MESSAGE, "loop", "loop")

# What happens to an answer (policy/plan.answer_handling), as names of this module: looked up
# once per answer on the hot path.
RELAY = Answer.RELAY
REWRITE_STREAM = Answer.REWRITE_STREAM
HOLD = Answer.HOLD

# Bytes of pipelined requests held while the current exchange runs, before reading pauses.
HELD_BYTES_LIMIT = 256 * 1024
# After an early response (the daemon answered before the whole body arrived), the rest of the
# body is read and dropped for at most this long so the client sees the answer, not a reset.
LINGER_SECONDS = 2.0

# What ends every relayed response head: the browser guard's headers, then the blank line.
_ANSWER_TAIL = ANSWER_HEADERS + b"\r\n"

# The access log's HTTP version of the usual requests, made once.
_VERSION_TEXT = {(1, 1): "1.1", (1, 0): "1.0"}

_REGISTRY_HEADERS = frozenset({b"x-registry-auth", b"x-registry-config"})

# Requests that may be sent again after a stale pooled connection (net/http isReplayable).
_REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# The last plan forwarded as it came (`ClientConnection._last_plan`): the head, its admission, the
# owner table, the plan, whether the head may take `_repeat` (no body, no upgrade, not a POST),
# the head as forwarded, and the bound policy's limits (None: none).
_LastPlan = tuple[RequestHead, Admission, object, Forward, bool, bytes, Limits | None]
# The last exchange logged (`ClientConnection._tail`): its head, verdict, admission and status,
# then its metrics key and access line less what changes (None when not written as text).
_Tail = tuple[RequestHead, Verdict, Admission, int, RequestKey, LineParts | None]

# Moves made by assigning `phase` on the straight path, where the phase before is known: the
# table still says which moves exist (a test checks these are in it), and under `phase.STRICT`
# (tests) they go through `_enter` like every other move.
_DIRECT_MOVES = ((READING_HEAD, FORWARDING), (FORWARDING, RELAYING_ANSWER))


class ClientConnection(PolicySteps, asyncio.Protocol):
    """The downstream side of the gateway: one per accepted client connection."""

    def __init__(self, ctx: ConnectionContext) -> None:
        self.ctx = ctx
        # Per-process switches that never change while the gateway runs: read once here rather
        # than through two attribute look-ups and a property on every request.
        self._access_on = ctx.access_log.enabled
        self._audit_on = ctx.audit.enabled
        self.transport: asyncio.Transport | None = None
        self.client = "-"
        self.reader = RequestReader(ctx.max_header_bytes)
        # Deadline (loop time) by which the next request head must be complete; None while an
        # exchange or a tunnel is running. Checked by the gateway's periodic sweep.
        self.deadline: float | None = None
        # What the connection waits for (relay/phase.py); moves go through _enter.
        self.phase = READING_HEAD
        self.close_after_exchange = False  # set by a graceful shutdown
        # Why reading from the client is paused, and whether the client's writes are (flow.py).
        self.flow = FlowControl()
        # The current exchange.
        self._head: RequestHead | None = None
        # The daemon connection the exchange went out on, or its place in a shared event stream.
        self._upstream: UpstreamConnection | Subscription | None = None
        self._outbox: list[bytes] = []  # bytes for the daemon before its connection is ready
        self._response: ResponseReader | None = None
        self._status = 0
        self._request_done = False
        self._response_started = False  # the daemon's answer head arrived
        # Bytes of the answer went out to the client: after that a failure can only cut it.
        self._answer_written = False
        self._bytes_in = 0
        self._bytes_out = 0
        self._started = 0.0
        self._retry_allowed = False
        self._upstream_reused = False
        self._handling = False  # inside _handle: finished exchanges hand over to its loop
        self._parse_next = False
        self._queued: list[RequestEvent] = []
        self._verdict: Verdict | None = None
        self._admission: Admission | None = None  # who sent the current request, from where
        # The start of an audited request body (container create, exec create), kept for the
        # audit record; None when the current request's body is not audited.
        self._capture: bytearray | None = None
        # A body read whole before forwarding, for the guardrails of the bound policy.
        self._held_body: bytearray | None = None
        self._hold_step: HoldBody | None = None
        # The allowed request's facts, from its plan (policy/plan.py); None before admission.
        self._allowed: Allowed | None = None
        # A body read whole and dropped: the operation's handler reads none (body/content.py).
        self._ignored: bytearray | None = None
        # Loop time by which a held body (either kind) must be complete; None when none is
        # held. Checked by the gateway's periodic sweep (--body-timeout).
        self.body_deadline: float | None = None
        # This connection's part of the process's budget for held bodies and answers.
        self._hold_share = Share(ctx.holds)
        self._answer_share = Share(ctx.holds)
        # Ownership mode: the caller's name, and the events that wait for a look-up.
        self._owner: str | None = None
        self._deferred: list[RequestEvent] | None = None
        self._lookup_task: asyncio.Task[None] | None = None
        # Response redaction: what the policy hides, and the answer being read whole for it
        # (or, in ownership mode, to hide another caller's object).
        self._redaction: Redaction | None = None
        self._answer_head: ResponseHead | None = None
        self._answer_body: bytearray | None = None
        # ... or the event stream, rewritten as it goes.
        self._redact_stream: EventStreamRedaction | None = None
        self._wall_started = 0.0
        # The plan of the last request forwarded as it came whose answer is relayed as it
        # comes (policy/plan.py, a pure function of the head, its admission and the owner
        # table): a keep-alive client repeats the same head (the same object, as is its
        # remembered admission), so the plan is reused rather than made again (`_admitted`),
        # and, for a head without a body, the whole start of the exchange taken in one call
        # (`_repeat`).
        self._last_plan: _LastPlan | None = None
        # What the last exchange's metrics key and access line were made of, and them: the
        # repeated exchange of a keep-alive client is counted and logged from them (`_log`).
        self._tail: _Tail | None = None
        # The current exchange's answer is relayed as it comes (Answer.RELAY whatever its
        # status): no redaction and no ownership, so no answer is held or rewritten.
        self._plain_answer = True
        self.facts = ConnectionFacts("-", "-")
        # With --proxy-protocol, bytes from a trusted proxy before its PROXY header is whole.
        self._proxy_header: bytes | None = None
        self._connect_task: asyncio.Task[None] | None = None
        # A unix-socket client: when it was accepted (boot clock ticks: a process started
        # later cannot be its peer, auth/peerproc.py), and the daemon look-up of its
        # container while one runs (`_identify_peer`).
        self._accepted_ticks = 0
        self._peer_task: asyncio.Task[None] | None = None
        # After a hijack: the two pumps the connection hands its bytes to (relay/tunnel.py).
        self.tunnel: Tunnel | None = None
        # The current exchange's hold on its caller's concurrency under the policy's limits
        # (policy/limits.py), taken by `_take_slot` when the exchange starts (from `_admitted`,
        # or `_repeat` for a repeated request), given back in `_log` (every ending logs) and,
        # in case, in `connection_lost`; None: the policy has no limits.
        self._slot: Slot | None = None
        # The last request's caller key and whether it is a stream, by its head and admission.
        self._limit_memo: tuple[RequestHead, Admission, str, bool] | None = None

    # ----- the client side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.flow.attach(self.transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER_BYTES, WRITE_LOW_WATER_BYTES)
        self.ctx.metrics.connections += 1
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            host = peer[0]
            self.client = f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
            address = host.partition("%")[0]  # a link-local zone is not part of the address
        else:
            self.client = address = UNIX_SOURCE
        self.facts = ConnectionFacts(address, address)
        if address == UNIX_SOURCE:
            self._accepted_ticks = boot_ticks()
            got = peer_cred(self.transport)
            self.facts.uid = got[0].uid if got is not None else None
            if self.ctx.admissions.peer_bound:
                # Bindings name peers: identify it now, while its process surely runs.
                self._identify_peer()
        self.ctx.add_certificate(self.transport, self.client, self.facts)
        proxied = self.transport.get_extra_info(PROXY_SOURCE_INFO)
        if proxied is not None:  # the TLS layer read a PROXY header before the handshake
            if proxied:
                self.facts.source = proxied
        elif self.ctx.expects_proxy_header(address):
            self._proxy_header = b""
        self.ctx.connections.add(self)
        self.deadline = self.ctx.loop.time() + self.ctx.header_timeout

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.from_client(data)
            return
        if self.phase is LINGERING:
            return
        if self._proxy_header is not None:
            data = self._read_proxy_header(data)
            if not data:
                return
        reader = self.reader
        fresh = self._head is None and not reader.started
        try:
            events = reader.feed(data)
        except ClientProtocolError as exc:
            self._fail(exc)
            return
        if not events:
            if fresh:
                # First bytes of a new head after an idle wait: the head timeout starts now.
                # (A head whole at once starts its exchange, which has no head deadline.)
                self.deadline = self.ctx.loop.time() + self.ctx.header_timeout
        else:
            last = self._last_plan
            if (
                last is not None
                and events[0] is last[0]
                and last[4]
                and self.phase is READING_HEAD
                and not self._handling
                and self._deferred is None
            ):
                self._repeat(last, events)
            else:
                self._handle(events)
        # (the size first: it is nearly always 0, and each is a property call)
        if reader.buffered > HELD_BYTES_LIMIT and reader.request_complete:
            self.flow.pause(Pause.HELD)

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Take the PROXY protocol header a trusted proxy starts with; what follows is HTTP."""
        buffered = (self._proxy_header or b"") + data
        try:
            header = parse_proxy_header(buffered)
        except ProxyHeaderError as exc:
            self._proxy_header = None
            self._fail(ClientProtocolError(f"PROXY protocol: {exc}"))
            return b""
        if header is None:
            self._proxy_header = buffered
            return b""
        self._proxy_header = None
        if header.source is not None:
            self.facts.source = header.source[0]
        return buffered[header.consumed :]

    def eof_received(self) -> bool:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.client_eof()  # passed on as a half-close; the daemon's output goes on
            return True
        if self._head is not None:
            # The client closed its side mid-exchange. HTTP/1.1 would allow a half-close after a
            # complete request, but like Go's server and nginx (proxy_ignore_client_abort off)
            # the gateway takes it as the client leaving: otherwise a quiet stream (`events`)
            # would hold its upstream connection until the daemon next wrote something.
            self._abandon("client gone")
            return False
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase is not CLOSED:
            self._enter(CLOSED)
        self.ctx.connections.discard(self)
        if self._connect_task is not None:
            self._connect_task.cancel()
            self._connect_task = None
        if self._lookup_task is not None:
            self._lookup_task.cancel()
            self._lookup_task = None
        if self._peer_task is not None:
            self._peer_task.cancel()
            self._peer_task = None
        self._release_slot()  # (before the log too: a head already logged may hold none now)
        tunnel = self.tunnel
        if tunnel is not None:
            # The raw bytes relayed count as the hijacked exchange's.
            self._bytes_in += tunnel.bytes_in
            self._bytes_out += tunnel.bytes_out
            self._log()
        elif self._head is not None:
            self._log(note="client gone")
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            # Mid-exchange: the daemon may still be streaming; this connection is not reusable.
            upstream.close()
        self._head = None
        # Whatever was held is garbage now: give its memory budget back.
        self._held_body = self._ignored = self._answer_body = None
        self.body_deadline = None
        self._hold_share.end()
        self._answer_share.end()

    def pause_writing(self) -> None:
        self.flow.write_paused = True
        upstream = self._upstream
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        flow = self.flow
        flow.write_paused = False
        upstream = self._upstream
        if upstream is not None:
            upstream.resume_reading()
        if flow.reasons & Pause.CLIENT_FULL:
            # The next request waited for the client to read its answers: take it now.
            flow.resume(Pause.CLIENT_FULL)
            if self.phase is READING_HEAD:
                self._take_next_request()

    # ----- requests ----------------------------------------------------------------------------

    def _handle(self, events: list[RequestEvent]) -> None:
        """Act on request events; then, while an exchange finished without waiting for the
        daemon (a refusal) and pipelined bytes are buffered, go on with the next request.

        A loop rather than recursion, so a client pipelining thousands of refused requests
        cannot exhaust the stack.
        """
        if self._handling:
            self._queued.extend(events)  # taken by the running loop below
            return
        self._handling = True
        try:
            while True:
                self._handle_events(events)
                if self._queued:
                    events, self._queued = self._queued, []
                    continue
                if not self._parse_next:
                    return
                self._parse_next = False
                next_events = self._next_request_events()
                if next_events is None:
                    return
                events = next_events
        finally:
            self._handling = False

    def _handle_events(self, events: list[RequestEvent]) -> None:
        """Each request event, by the phase the connection is in when it comes. The reader
        stops at the end of each request: a batch holds at most one request's events."""
        for event in events:
            deferred = self._deferred
            if deferred is not None:
                # ADMITTING, or LOOKING_UP before the body: the events wait, in order.
                deferred.append(event)
                continue
            phase = self.phase
            if phase is REFUSED_DRAINING:
                if isinstance(event, EndOfRequest):
                    self._after_refusal()
                    return
                continue  # the body of a refused request is read and dropped
            if phase is HOLDING_BODY:
                if self._ignored is not None:
                    self._read_ignored(event)  # a body the operation takes none of
                else:
                    self._hold(event)  # a body judged before it goes
                continue
            if phase is LINGERING or phase is CLOSED:
                return  # what is left of the request is of no use any more
            if isinstance(event, RequestHead):
                self._start_exchange(event)  # READING_HEAD
            else:
                self._forward_request_event(event)  # FORWARDING or later

    def _forward_request_event(self, event: Body | EndOfRequest) -> None:
        """A piece of the body of a request on its way to the daemon, or its end."""
        head = self._head
        if isinstance(event, Body):
            self._count_body(event.data)
            self._send_upstream(
                b"%x\r\n%b\r\n" % (len(event.data), event.data)
                if head is not None and head.chunked
                else event.data
            )
            return
        self._request_done = True
        if head is not None and head.chunked:
            self._send_upstream(b"0\r\n\r\n")
        if (
            head is not None
            and (head.upgrade_header or head.method == "POST")
            and _may_hijack(head)
        ):
            # (the first two tests are _may_hijack's own, without the call for a GET)
            # Bytes after this request are either the next request or raw stdin for a hijacked
            # stream; only the daemon's answer tells which, so wait for it.
            self.flow.pause(Pause.TUNNEL_SETUP)

    def _repeat(self, last: _LastPlan, events: list[RequestEvent]) -> None:
        """READING_HEAD, and the client sent again the head of the last request forwarded as
        planned (the same object: the reader keeps parsed heads), with no body (`events` is
        the head and its end). What `_handle` -> `_start_exchange` -> `_admitted` ->
        `_send_head` -> `_forward_request_event` do for it, in one call. Admission is asked
        all the same (a reload, a certificate's expiry, a password file changed make a new
        admission object), and only the same admission under the same owner table reuses the
        plan; anything else goes the general way, with the admission just made."""
        head = last[0]
        self._started = now = time.monotonic()
        admissions = self.ctx.admissions
        admitted = admissions.admit(head, self.facts, now)
        if admitted is not last[1] or admissions.policies.owners is not last[2]:
            # (outside _handle's loop: what follows a refusal calls _handle itself; a reload
            # that made bindings name peers first identifies this connection's peer)
            self._start_exchange(head, None if self._peer_pending() else admitted)
            self._handle_events(events[1:])
            return
        admission = last[1]
        # _start_exchange's and _admitted's work, for this plan
        self.deadline = None
        forward = last[3]
        self._head = forward.head
        self._admission = admission
        # (the plan's verdict: the admission's, or in warn mode one carrying would_deny)
        verdict = self._verdict = forward.allowed.verdict
        self._allowed = forward.allowed
        self._owner = self._redaction = self._redact_stream = None
        self._plain_answer = True
        self._status = 0
        self._response_started = self._answer_written = False
        self._request_done = True  # no body: its end came with the head
        self._bytes_in = self._bytes_out = 0
        if self._audit_on:
            self._wall_started = time.time()
            self._capture = (
                bytearray() if verdict.allowed and verdict.operation in AUDITED_BODIES else None
            )
        else:
            self._capture = None
        limits = last[6]
        if limits is not None:
            # _admitted's: the slot under the policy's limits (a plan is only ever reused for
            # an allowed request, whose policy is known)
            policy = admission.policy
            assert policy is not None
            limited = self._take_slot(head, admission, policy.name, limits)
            if limited is not None:
                self._refuse(head, limited)
                self._handle_events(events[1:])  # its end: on to the next request
                return
        # _send_head's, with an idle pooled connection (the usual case)
        conn = self.ctx.pool.take_idle()
        if conn is None:
            self._send_head(last[5], replayable=forward.replayable)
            return
        if phases.STRICT:  # (tests: every move checked, and seen by a test's recording)
            self._enter(FORWARDING)
        else:  # (READING_HEAD -> FORWARDING, known legal: _DIRECT_MOVES)
            self.phase = FORWARDING
        self._response = ResponseReader(head.method)
        self._retry_allowed = forward.replayable
        self._attach(conn)
        transport = conn.transport
        assert transport is not None  # take_idle hands out open connections only
        transport.write(last[5])

    def _start_exchange(
        self, head: RequestHead, admitted: Admission | PendingAdmission | None = None
    ) -> None:
        """READING_HEAD: a request head; `admitted` when admission was asked already."""
        self.deadline = None
        self._head = head
        self._redaction = None
        self._allowed = None
        self._redact_stream = None
        self._status = 0
        self._request_done = False
        self._response_started = False
        self._answer_written = False
        self._plain_answer = True
        self._started = time.monotonic()
        if self._audit_on:  # the wall clock is for the audit record only
            self._wall_started = time.time()
        # The access log counts body bytes each way (heads excluded), as relayed.
        self._bytes_in = 0
        self._bytes_out = 0
        if HOP_TOKEN in head.raw and came_back(head.raw):  # (the token test without a call)
            # Forwarded by this very gateway and back again: a loop (http/hops.py). Answered here,
            # before anything else, so it goes round once and never again.
            self._admission = self._verdict = None
            self._refuse(head, LOOP_REFUSAL)
            return
        if admitted is None:
            admissions = self.ctx.admissions
            if admissions.peer_bound and self._peer_pending():
                self._await_peer(head)
                return
            admitted = admissions.admit(head, self.facts, self._started)
        if isinstance(admitted, PendingAdmission):
            self._await_password_check(head, admitted)
            return
        self._admitted(head, admitted)

    # ----- the unix-socket peer as the caller ------------------------------------------------

    def _peer_pending(self) -> bool:
        """A unix-socket client whose peer is not identified yet, where bindings name peers."""
        facts = self.facts
        return (
            facts.caller is None
            and facts.peer == UNIX_SOURCE
            and self.ctx.admissions.peer_bound
            and self.transport is not None
        )

    def _identify_peer(self) -> None:
        """Read the peer's process now (auth/peerproc.py: checked to be the one that
        connected); name it at once when no daemon look-up is needed, or start the look-up."""
        if self._peer_task is not None or self.transport is None:
            return
        got = peer_cred(self.transport, pidfd=True)
        read: PeerProcess | Unidentified
        if got is None:
            read = Unidentified("the platform does not say which process is calling")
        else:
            cred, pidfd = got
            try:
                read = PEER_PROCESSES.read(cred, self._accepted_ticks, pidfd)
            finally:
                if pidfd is not None:
                    pidfd.close()
        known = settled(read, CONTAINERS)
        if known is not None:
            self._peer_identified(known)
            return
        self._peer_task = self.ctx.loop.create_task(
            self._look_up_peer(read), name="dockgate-peer-lookup"
        )

    async def _look_up_peer(self, read: PeerProcess | Unidentified) -> None:
        try:
            caller = await identify_peer(self.ctx.pool.address, read, CONTAINERS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure must answer, or the first request would hang
            message = f"dockgate: cannot identify the calling container: {describe_error(exc)}"
            caller = Refusal(502, message, "peer", "peer look-up failed")
        self._peer_task = None
        if not self.closing:
            self._peer_identified(caller)

    def _peer_identified(self, caller: Identity | Refusal) -> None:
        """The caller is known (or refused): a request that waited for it goes on."""
        self.facts.caller = caller
        if isinstance(caller, Refusal) and caller.status == 502:
            self.close_after_exchange = True  # a later connection asks the daemon again
        head = self._head
        if self.phase is not IDENTIFYING_PEER or head is None:
            return
        deferred, self._deferred = self._deferred, None
        self.flow.resume(Pause.PEER)
        admitted = self.ctx.admissions.admit(head, self.facts, self._started)
        if isinstance(admitted, PendingAdmission):
            self._await_password_check(head, admitted)
            if deferred and self._deferred is not None:
                self._deferred[:0] = deferred  # (the password check's wait takes them on)
            return
        self._admitted(head, admitted)
        if deferred:
            self._handle(deferred)

    def _await_peer(self, head: RequestHead) -> None:
        """The first request of a unix-socket client waits, paused, until its peer is known;
        what the client sends meanwhile waits in order, as for a password check."""
        self._admission = self._verdict = None
        self._deferred = []
        self._enter(IDENTIFYING_PEER)
        self.flow.pause(Pause.PEER)
        self._identify_peer()  # (started at accept, unless a reload made peers matter since)

    def _await_password_check(self, head: RequestHead, pending: PendingAdmission) -> None:
        """The password is being hashed in a worker thread (auth/checks.py): until it is done,
        what the client sends waits, in order, as for an ownership look-up."""
        self._admission = self._verdict = None
        self._deferred = []
        self._enter(ADMITTING)
        self.flow.pause(Pause.PASSWORD)
        pending.future.add_done_callback(lambda _: self._password_checked(head, pending))

    def _password_checked(self, head: RequestHead, pending: PendingAdmission) -> None:
        if self.closing or self._head is not head:
            return  # the client left; the throttle was settled all the same (policy/admission.py)
        deferred, self._deferred = self._deferred, None
        self.flow.resume(Pause.PASSWORD)
        self._admitted(head, pending.admission())
        if deferred:
            self._handle(deferred)

    def _admitted(self, head: RequestHead, admission: Admission) -> None:
        """Admission has spoken: the request's plan (policy/plan.py) says what comes next."""
        self._admission = admission
        if admission.close:  # the connection's client certificate is no longer valid
            self.close_after_exchange = True
        verdict = self._verdict = admission.verdict
        self._capture = (
            bytearray()
            if self._audit_on and verdict.allowed and verdict.operation in AUDITED_BODIES
            else None
        )
        policy = admission.policy
        limits = policy.limits if policy is not None else None
        if limits is not None and verdict.allowed:
            assert policy is not None
            limited = self._take_slot(head, admission, policy.name, limits)
            if limited is not None:
                self._refuse(head, limited)
                return
        owners = self.ctx.admissions.policies.owners
        last = self._last_plan
        if last is not None and last[0] is head and last[1] is admission and last[2] is owners:
            # The same head, admitted the same way, as the last request: the same plan.
            forward = last[3]
            self._allowed = forward.allowed
            self._verdict = forward.allowed.verdict
            self._owner = None
            self._redaction = None
            self._plain_answer = True
            self._head = forward.head
            self._send_head(last[5], replayable=forward.replayable)
            return
        step = plan_request(head, admission, owners)
        if isinstance(step, Forward):
            allowed = step.allowed
            plain = (
                allowed.owner is None
                and not allowed.ownership
                and allowed.redaction is None
                and filters_answer(allowed) is None
            )
            # (only an ordinary head is kept, as the reader's and admission's memos: a large
            # one would stay pinned on an idle connection for the idle timeout)
            self._last_plan = (
                (
                    head,
                    admission,
                    owners,
                    step,
                    _repeatable(head),
                    forwarded_head(step.head),
                    limits,
                )
                if plain and len(head.raw) <= HEAD_CACHE_MAX_HEAD_BYTES
                else None
            )
        self._carry_out(head, step)

    def _take_slot(
        self, head: RequestHead, admission: Admission, policy: str, limits: Limits
    ) -> Refusal | None:
        """The one place an exchange starts under a policy's limits: its slot is held until
        the exchange ends (`_release_slot`), or the refusal (429) over a limit."""
        operation = admission.verdict.operation
        memo = self._limit_memo
        if memo is not None and memo[0] is head and memo[1] is admission:
            key, stream = memo[2], memo[3]  # a keep-alive client repeating its request
        else:
            stream = is_stream(operation, head.target.partition("?")[2])
            key = caller_key(admission.identity, throttle_source(admission.source, self.facts))
            self._limit_memo = (head, admission, key, stream)
        ctx = self.ctx
        got = ctx.limiter.start(
            policy, key, limits, operation=operation, stream=stream, now=ctx.loop.time()
        )
        if isinstance(got, Slot):
            if self._slot is not None:  # (never: the last exchange's end gave it back)
                self._slot.release()
            self._slot = got
            return None
        ctx.metrics.count_limited(policy, operation, got.limit)
        return limit_refusal(operation, policy, got)

    def _release_slot(self) -> None:
        slot = self._slot
        if slot is not None:
            self._slot = None
            slot.release()

    def _carry_out(self, head: RequestHead, step: Step) -> None:
        """One step of the request's plan, carried out: the plan decides, this does the I/O."""
        if isinstance(step, Refusal):
            self._refuse(head, step)
            return
        allowed = self._allowed = step.allowed
        # The admission's verdict, or, in warn or audit mode, the one carrying what a step of
        # the plan would have refused (policy/modes.py).
        self._verdict = allowed.verdict
        self._owner = allowed.owner
        self._redaction = allowed.redaction
        # (answer_handling relays every answer as it comes without redaction, ownership or a
        # scope's filtering)
        self._plain_answer = (
            self._redaction is None
            and not allowed.ownership
            and filters_answer(allowed) is None
            and not scoped_answer_rewritten(allowed, 200)
        )
        if isinstance(step, Forward):
            self._head = step.head  # (a narrowed list's target, rewritten)
            feeds = self.ctx.event_feeds
            if feeds is not None and allowed.operation == "SystemEvents" and shareable(step.head):
                self._join_feed(feeds, step.head)
            else:
                self._send_head(forwarded_head(step.head), replayable=step.replayable)
        elif isinstance(step, HoldBody):
            self._head = step.head
            self._hold_body(step)
        elif isinstance(step, DrainBody):
            # Read it whole first (the policy's steps then see a request without a body).
            if self._start_hold(head):
                self._ignored = bytearray()
        else:
            # LookUp: until the daemon answers, what the client sends waits, in order.
            self._deferred = []
            self.flow.pause(Pause.LOOKUP)
            self._start_lookup(self._check_owners(step.head, step.objects, step.scope))

    def _send_head(self, raw: bytes, *, replayable: bool) -> None:
        assert self._head is not None
        self._enter(FORWARDING)
        self._response = ResponseReader(self._head.method)
        self._retry_allowed = replayable
        conn = self.ctx.pool.take_idle()
        if conn is not None:
            self._attach(conn)
            transport = conn.transport
            assert transport is not None  # take_idle hands out open connections only
            transport.write(raw)
        else:
            self._outbox.append(raw)
            self.flow.pause(Pause.CONNECTING)
            self._connect_task = self.ctx.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            conn = await self.ctx.pool.connect()
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as exc:
            self._connect_task = None
            self._upstream_failed(self.ctx.pool.connect_failure(exc))
            return
        self._connect_task = None
        if self.closing or self._head is None:
            conn.close()
            return
        self._attach(conn)
        outbox, self._outbox = self._outbox, []
        conn.write(b"".join(outbox))
        self.flow.resume(Pause.CONNECTING)

    def _join_feed(self, feeds: EventFeeds, head: RequestHead) -> None:
        """A `GET /events` that others may be asking too: its place in the shared stream
        (relay/eventfeed.py), which then reports to this exchange as its daemon connection."""
        self._enter(FORWARDING)
        self._last_plan = None  # (a repeat takes this way again, not _send_head's)
        self._response = ResponseReader(head.method)
        self._retry_allowed = self._upstream_reused = False
        self._upstream = feeds.join(head, forwarded_head(head), self)

    def feed_failed(self, exc: GatewayError) -> None:
        """The shared stream this exchange joined has no answer for it (relay/eventfeed.py)."""
        self._upstream = None
        self._upstream_failed(exc)

    def feed_cut(self, note: str) -> None:
        """The shared stream left this client behind: it reads too slowly. Cut at once (its
        socket is full: a graceful close would wait on it)."""
        self._upstream = None
        self._log(note=note)
        self._head = None
        transport = self.transport
        self.close_now()
        if transport is not None:
            transport.abort()

    def _attach(self, conn: UpstreamConnection) -> None:
        conn.owner = self
        self._upstream_reused = conn.reused
        self._upstream = conn
        transport = conn.transport
        if self.flow.write_paused and transport is not None:
            transport.pause_reading()
        if transport is not None and transport.get_write_buffer_size() > WRITE_HIGH_WATER_BYTES:
            self.flow.pause(Pause.UPSTREAM_FULL)

    def _send_upstream(self, data: bytes) -> None:
        upstream = self._upstream
        if upstream is not None:
            upstream.write(data)
            self._retry_allowed = False
        else:
            self._outbox.append(data)

    def _refuse(self, head: RequestHead, refusal: Refusal, *, body_read: bool = False) -> None:
        """Answer a refused request here; it never reaches the daemon."""
        self._enter(REFUSED_DRAINING)
        verdict = self._verdict
        if verdict is None or verdict.allowed:
            # Refused by a step after admission (or before any: a loop): the log says which.
            self._verdict = (
                refused_before_policy(refusal, "unknown")
                if verdict is None
                else verdict.refused(refusal)
            )
        self._status = refusal.status
        # A refused upload is not read to its end: close after the answer (lingering, so the
        # client sees the answer rather than a reset). Without a body, keep-alive goes on.
        unread_body = head.has_body and not body_read
        closing = unread_body or not head.keep_alive or self.close_after_exchange
        body = refusal.response(close=closing, head_only=head.method == "HEAD")
        self._bytes_out = _body_length(body)
        self._response_started = True
        assert self.transport is not None
        self.transport.write(body)
        self._log()
        if unread_body:
            self._head = None
            self._linger_close()

    def _after_refusal(self) -> None:
        """The refused request is read to its end: on to the next one, or close."""
        if self.phase is not REFUSED_DRAINING:
            return  # lingering (its body was left unread), or closed
        head, self._head = self._head, None
        if head is None or not head.keep_alive or self.close_after_exchange:
            self._close()
            return
        self._read_next_request()

    def _read_ignored(self, event: RequestEvent) -> None:
        """A body on an operation whose handler reads none: read it whole, judge it, drop it;
        then go on with the same request, without a body (the daemon gets Content-Length: 0)."""
        ignored, head, allowed = self._ignored, self._head, self._allowed
        assert ignored is not None and head is not None and allowed is not None
        if isinstance(event, Body):
            if not self._keep_piece(ignored, event.data, IGNORED_BODY_LIMIT, head):
                self._ignored = None
                if self.phase is HOLDING_BODY:  # over the limit, not over the budget
                    message = too_large_to_drop(allowed.operation)
                    self._refuse(head, Refusal(413, message, "content", "body shape"))
            return
        if not isinstance(event, EndOfRequest):
            return
        self._ignored = None
        self._end_hold()
        refusal = judge_drained(allowed, bytes(ignored))
        if refusal is not None:
            self._refuse(head, refusal, body_read=True)
            self._after_refusal()
            return
        head = self._head = without_body(head)
        self._carry_out(head, plan_admitted(head, allowed))
        # The request's end, as the steps that followed expect to see it (the reader has
        # already passed it).
        self._handle_events([event])

    def body_timed_out(self) -> None:
        """A held body did not arrive whole within --body-timeout: 408, and close."""
        self.body_deadline = None
        head = self._head
        if head is None or self.phase is not HOLDING_BODY:
            return
        self._held_body = self._ignored = None
        self._end_hold()
        seconds = self.ctx.body_timeout
        message = f"dockgate: the request body did not arrive within {seconds:g} s"
        self._refuse(head, Refusal(408, message, "body-timeout", "body timeout"))

    # ----- responses ---------------------------------------------------------------------------

    def upstream_data(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        response = self._response
        if response is None:
            return
        self._retry_allowed = False
        if response.head_done:
            # Streams (events, logs, stats, export) spend their life here: relay and move on.
            try:
                data, done = response.relay_body(data)
                if self._redact_stream is not None:
                    data = self._redacted_events(data)
            except UpstreamError as exc:
                self._upstream_failed(exc)
                return
            if self.phase is HOLDING_ANSWER:
                self._collect_answer(data, done)
                return
            if data:
                self._bytes_out += len(data)
                transport.write(data)
            if done:
                self._finish_exchange()
            return
        if self._plain_answer and self.phase is FORWARDING:
            whole = response.whole(data)
            if whole is not None:
                self._relay_whole(*whole)
                return
        try:
            events = response.feed(data)
        except UpstreamError as exc:
            self._upstream_failed(exc)
            return
        # One write per read from the daemon: the head and body bytes it brought go out in a
        # single system call.
        out: list[bytes] = []
        for event in events:
            if self.phase is HOLDING_ANSWER:
                if isinstance(event, ResponseBody):
                    self._collect_answer(event.data, done=False)
                    if self.phase is not HOLDING_ANSWER:
                        return  # too large: the exchange has failed
                elif isinstance(event, EndOfResponse):
                    self._collect_answer(b"", done=True)
                    return
                continue
            if isinstance(event, ResponseBody):
                if self._redact_stream is None:
                    out.append(event.data)
                    continue
                try:
                    out.append(self._redacted_events(event.data))
                except UpstreamError as exc:
                    self._upstream_failed(exc)
                    return
            elif isinstance(event, ResponseHead):
                if not self._on_answer_head(event, out):
                    return  # the answer cannot be relayed: the exchange has failed
            elif isinstance(event, EndOfResponse):
                self._on_answer_end(event, out)
                return
        self._write_client(out)

    def _relay_whole(self, status: int, raw: bytes, body: bytes) -> None:
        """The usual answer, straight: a final head and its whole body in one read from the
        daemon (ResponseReader.whole), relayed as it comes (no redaction, no ownership), and
        the exchange ends. What `_on_answer_head` and `_on_answer_end` do for it, without
        events or the per-event dispatch."""
        raw = raw[:-2] + _ANSWER_TAIL  # the browser guard's headers, as on every head
        head = self._head
        if head is not None and not head.keep_alive:  # (_announce_close's own first test)
            response = self._response
            raw = self._announce_close(raw, response is not None and response.keep_alive)
        if phases.STRICT:
            self._enter(RELAYING_ANSWER)
        else:  # (FORWARDING -> RELAYING_ANSWER, upstream_data's test: _DIRECT_MOVES)
            self.phase = RELAYING_ANSWER
        self._status = status
        self._response_started = self._answer_written = True
        self._bytes_out += len(body)  # the log counts body bytes only
        transport = self.transport
        assert transport is not None
        transport.write(raw + body)
        self._finish_exchange()

    def _announce_close(self, raw: bytes, answer_keeps_alive: bool) -> bytes:
        """A final answer head as relayed: with `Connection: close` when the gateway will close
        after it because the client asked to (RFC 9112 9.6: say so in the response, or
        keep-alive clients see an error) and the daemon's head does not say so already."""
        head = self._head
        if head is None or head.keep_alive or not answer_keeps_alive:
            return raw
        return raw[:-2] + b"Connection: close\r\n\r\n"

    def _on_answer_head(self, event: ResponseHead, out: list[bytes]) -> bool:
        """The daemon's answer head: held whole (HOLDING_ANSWER), or relayed (appended to
        `out`; RELAYING_ANSWER, or a TUNNEL at once for a hijacking 200). False when the answer
        cannot be relayed (the exchange has failed)."""
        # Every head the daemon sends goes out with the browser guard's headers (before its
        # blank line); a held answer is rewritten from this same head.
        event.raw = event.raw[:-2] + _ANSWER_TAIL
        handling = RELAY if self._plain_answer else self._answer_handling(event.status)
        if handling is REWRITE_STREAM:
            allowed = self._allowed
            scope = filters_answer(allowed) if allowed is not None else None
            if event.framing is not Framing.CHUNKED:
                self._upstream_failed(UpstreamError("cannot redact an unframed stream"))
                return False
            # The head goes out as it is; each event is filtered to the scope (if any) and
            # rewritten on its way.
            self._redact_stream = EventStreamRedaction(
                self._redaction, None if scope is None else event_filter(scope)
            )
        elif handling is HOLD:
            # Held back: the answer goes out rewritten, with a new Content-Length. One that
            # ends at close (the daemon's answer to HTTP/1.0) ends in upstream_eof.
            self._enter(HOLDING_ANSWER)
            self._answer_head = event
            self._answer_body = bytearray()
            self._status = event.status
            self._response_started = True
            return True
        head_bytes = event.raw
        head = self._head
        if not event.informational:
            head_bytes = self._announce_close(head_bytes, event.keep_alive)
        out.append(head_bytes)
        self._bytes_out -= len(head_bytes)  # the log counts body bytes only
        if event.informational:
            return True  # the final head is still to come
        self._enter(RELAYING_ANSWER)
        self._status = event.status
        self._response_started = True
        if (
            event.framing is Framing.UNTIL_CLOSE
            and event.raw_stream
            and head is not None
            and _may_hijack(head)
        ):
            # Older hijack form: the daemon took over the connection with a 200.
            self._write_client(out)
            self._enter_tunnel()
        return True

    def _on_answer_end(self, event: EndOfResponse, out: list[bytes]) -> None:
        """The end of a relayed answer: the exchange ends, or, after a 101, the tunnel starts
        (with the bytes the daemon sent past its head)."""
        if self._status == 101 and not (self._head and self._head.upgrade_header):
            # Only a request that asked to switch, and was allowed to, may become a tunnel; a
            # 101 to anything else is a daemon the gateway cannot follow.
            self._upstream_failed(UpstreamError("the daemon switched protocols unasked"))
            return
        if self._status == 101:
            if event.trailing:
                out.append(event.trailing)
            self._write_client(out)
            self._enter_tunnel()
        else:
            self._write_client(out)
            self._finish_exchange()

    def _redacted_events(self, raw: bytes) -> bytes:
        """The daemon's chunked event bytes, rewritten by the policy's redaction."""
        stream = self._redact_stream
        assert stream is not None
        try:
            return stream.feed(raw)
        except RedactionError as exc:
            raise UpstreamError(f"cannot redact: {exc}") from None

    def _write_client(self, out: list[bytes]) -> None:
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        # An informational head (100 Continue) is not the answer: a failure after it still
        # gets its 502.
        self._answer_written = self._response_started
        self._bytes_out += len(data)
        assert self.transport is not None
        self.transport.write(data)

    def upstream_eof(self) -> bool:
        response = self._response
        if response is None:
            return False
        if self._retry_now():
            return False
        try:
            events = response.eof()
        except UpstreamError as exc:
            self._upstream_failed(exc)
            return False
        if events:
            # An until-close body ended: so does the client's connection, as the daemon framed it.
            self.close_after_exchange = True
            if self.phase is HOLDING_ANSWER:
                self._collect_answer(b"", done=True)  # checked whole, then sent and finished
            else:
                self._finish_exchange()
        return False

    def upstream_lost(self, exc: Exception | None = None) -> None:
        self._upstream = None
        if self._head is None or self._response is None or self._response.done:
            return
        if self._retry_now():
            return
        # A reason, when there is one, is the daemon's TLS alert (a TLS 1.3 daemon refuses a
        # missing client certificate after the handshake, at the first read): say which.
        why = f": {describe_upstream_error(exc)}" if exc is not None else ""
        self._upstream_failed(
            UpstreamError(f"the Docker daemon closed the connection mid-response{why}")
        )

    def _retry_now(self) -> bool:
        """Send the request again on a new connection if the pooled one it went out on was
        already closed by the daemon: not one byte of an answer came back, and, as Go's client
        decides, the request has no body and a method that may be repeated."""
        head = self._head
        if not (
            head is not None
            and self._retry_allowed
            and self._upstream_reused
            and not self._response_started
            and head.method in _REPLAYABLE_METHODS
        ):
            return False
        self._retry_allowed = False
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close()
        self._outbox = [forwarded_head(head)]
        self._response = ResponseReader(head.method)
        self.flow.pause(Pause.CONNECTING)
        self._connect_task = self.ctx.loop.create_task(self._connect())
        return True

    def upstream_paused(self) -> None:
        self.flow.pause(Pause.UPSTREAM_FULL)

    def upstream_resumed(self) -> None:
        self.flow.resume(Pause.UPSTREAM_FULL)

    def _finish_exchange(self) -> None:
        self._log()
        upstream, self._upstream = self._upstream, None
        head = self._head
        response = self._response
        self._head = None
        self._response = None
        if not self._request_done:
            # Early response: the daemon did not read the whole body, so neither connection can
            # carry another request. Let the client read the answer, then close.
            if upstream is not None:
                upstream.close()
            self._linger_close()
            return
        reusable = response is not None and response.done and response.keep_alive
        if upstream is not None:
            if reusable and isinstance(upstream, UpstreamConnection):  # (not a Subscription)
                self.ctx.pool.release(upstream)
            else:
                upstream.close()
        # A "Connection: close" from the daemon was relayed to the client, so it ends both.
        if self.close_after_exchange or head is None or not head.keep_alive or not reusable:
            self._close()
            return
        self._read_next_request()

    def _read_next_request(self) -> None:
        """Keep-alive: wait for the next request, starting with any bytes already buffered."""
        self._enter(READING_HEAD)
        # Whatever paused reading belonged to the exchange that just ended.
        flow = self.flow
        # (nothing paused, the usual case: no call; not `if flow.reasons`, a Python-level
        # Flag.__bool__ call: no reason left is the one NO_PAUSE member, Flag values being
        # cached by value)
        if flow.reasons is not NO_PAUSE:
            flow.resume(EXCHANGE_PAUSES)
        if flow.write_paused or self._handling:
            self._take_next_request()
            return
        # (what _take_next_request does in the usual case, without the call)
        events = self._next_request_events()
        if events:
            self._handle(events)

    def _take_next_request(self) -> None:
        """READING_HEAD: the next request, from the bytes already buffered or when they come."""
        flow = self.flow
        if flow.write_paused:
            # The client is not reading its answers: wait for its buffer to drain before the
            # next one (resume_writing), rather than answer what it pipelined without bound.
            # The idle timeout bounds the wait.
            flow.pause(Pause.CLIENT_FULL)
            self.deadline = self.ctx.loop.time() + self.ctx.idle_timeout
            return
        if self._handling:
            self._parse_next = True  # the running _handle loop takes it from here
            return
        events = self._next_request_events()
        if events:
            self._handle(events)

    def _next_request_events(self) -> list[RequestEvent] | None:
        try:
            events = self.reader.next_request()
        except ClientProtocolError as exc:
            self._fail(exc)
            return None
        # Part of the next head already here: the (short) head timeout runs, not the idle one.
        timeout = self.ctx.header_timeout if self.reader.started else self.ctx.idle_timeout
        self.deadline = self.ctx.loop.time() + timeout
        return events

    # ----- tunnels -----------------------------------------------------------------------------

    def _enter_tunnel(self) -> None:
        """Hand the connection over to a Tunnel (relay/tunnel.py): from now on the daemon's
        connection reports to it, and what the client sends goes to it; the bytes already read
        past the request head go first."""
        self.deadline = None
        upstream, transport = self._upstream, self.transport
        # (called from upstream_data; a shared event stream never switches protocols)
        assert isinstance(upstream, UpstreamConnection) and transport is not None
        self._enter(TUNNEL)
        tunnel = self.tunnel = Tunnel(transport, upstream, self.flow, self._end_tunnel)
        tunnel.start(self.reader.take_buffered())
        # Raw bytes flow from now on (the daemon's socket may still be full: that pause stays).
        self.flow.resume(Pause.TUNNEL_SETUP | Pause.HELD)

    def _end_tunnel(self) -> None:
        """Both directions are done, or the daemon's connection is gone: close both."""
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close()
        self._close()

    # ----- endings -----------------------------------------------------------------------------

    def _upstream_failed(self, exc: GatewayError) -> None:
        """The daemon could not answer: 502 if nothing of the answer went out yet (an answer
        held whole, or a head not yet written, counts as nothing), else cut the stream."""
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not self._answer_written:
            self._status = exc.status
            head = self._head
            body = error_response(
                exc.status, exc.message, head_only=head is not None and head.method == "HEAD"
            )
            self._bytes_out += _body_length(body)
            transport.write(body)
            self._log(note="upstream failed")
            self._head = None
            self._close()
        else:
            # Part of the answer is already out; closing tells the client it is truncated.
            self._log(note="upstream failed mid-response")
            self._head = None
            self._close()

    def _fail(self, exc: ClientProtocolError) -> None:
        """A client protocol error: answer 400 with the reason, and close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._response_started or self.tunnel:
            self._close()
            return
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close()
        transport.write(error_response(exc.status, f"dockgate: {exc.message}"))
        if self._head is not None:
            # Part of this request may already have reached the daemon: log it as itself.
            self._status = exc.status
            self._log(note=exc.message)
        else:
            self._log_headless(exc.status, exc.message)
        self._head = None
        self._close()

    def _abandon(self, note: str) -> None:
        self._log(note=note)
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close()
        self._head = None
        self._close()

    def _linger_close(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._enter(LINGERING)
        self.flow.clear()
        if transport.can_write_eof():
            transport.write_eof()
        self.ctx.loop.call_later(LINGER_SECONDS, self._close)

    def _close(self) -> None:
        if self.phase is not CLOSED:
            self._enter(CLOSED)
        self.deadline = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.close()  # flushes what is buffered, then closes

    def close_now(self) -> None:
        """Close now (shutdown deadline, a timeout, or an illegal move)."""
        if self.phase is not CLOSED:
            self._enter(CLOSED)  # legal from every phase (relay/phase.py)
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.close()
        if self.transport is not None:
            self.transport.close()

    @property
    def closing(self) -> bool:
        """The connection is closed, or closing (what it still writes is flushed)."""
        return self.phase is CLOSED

    def _enter(self, phase: Phase) -> None:
        """Move to `phase`. A move not in the table (relay/phase.py) is a bug in the relay:
        raised under `phase.STRICT` (tests), else printed once and the connection closed."""
        if phase in TRANSITIONS[self.phase]:
            self.phase = phase
            return
        error = PhaseError(self.phase, phase)
        if phases.STRICT or phases.first_report(self.phase, phase):
            print(f"{error} ({self.client}); connection closed", file=sys.stderr, flush=True)
        if phases.STRICT:
            raise error
        self.close_now()

    def idle(self) -> bool:
        """No exchange is running: the connection waits for a request head."""
        return self._head is None and self.tunnel is None

    def head_timed_out(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.flow.write_paused:
            # A client that does not read what it was already sent: a 408 would join the
            # unread answers, and close() would wait forever to flush them (holding the socket
            # and its buffers). Let go now (issue 14's attack review).
            self._log_headless(408, "client does not read its answers")
            self.close_now()
            transport.abort()
            return
        if self.reader.started:
            transport.write(error_response(408, "dockgate: request head not received in time"))
            self._log_headless(408, "head timeout")
        self._close()

    def _log_headless(self, status: int, note: str) -> None:
        """A request answered before its head could be read (malformed, or too slow)."""
        self.ctx.metrics.record(
            "-", decision="-", policy="-", status=status, duration=0.0, bytes_in=0, bytes_out=0
        )
        self.ctx.access_log.write(AccessRecord(self.client, "-", "-", "-", status, 0, 0, 0.0, note))

    def _log(self, note: str = "") -> None:
        """The end of an exchange: counted for the metrics, written to the access log and,
        when on, the audit log; its slot under the policy's limits given back."""
        slot = self._slot
        if slot is not None:  # (_release_slot, without the call)
            self._slot = None
            slot.release()
        head = self._head
        if head is None:
            return
        verdict = self._verdict
        duration = time.monotonic() - self._started
        status, bytes_in, bytes_out = self._status, self._bytes_in, self._bytes_out
        if verdict is not None and verdict.would_deny is not None:
            # Warn or audit mode let through what enforce would have refused.
            self.ctx.metrics.record_would_deny(
                verdict.policy or "-", verdict.operation, verdict.would_deny
            )
        tail = self._tail
        if (
            tail is not None
            and tail[0] is head
            and tail[1] is verdict
            and tail[2] is self._admission
            and tail[3] == status
            and not note
        ):
            # The same exchange as the last (a keep-alive client repeating itself): its
            # metrics key and access line made already.
            self.ctx.metrics.record_key(tail[4], duration, bytes_in, bytes_out)
            line = tail[5]
            if line is not None:
                line.write(status, bytes_in, bytes_out, duration)
            if self._audit_on:
                self._audit(head)
            return
        self._log_first(head, note, duration)

    def _log_first(self, head: RequestHead, note: str, duration: float) -> None:
        """`_log` for an exchange unlike the last: the metrics key and the access line made
        from the fields, and kept for the next exchange if it was admitted and has no note."""
        verdict, admission = self._verdict, self._admission
        status, bytes_in, bytes_out = self._status, self._bytes_in, self._bytes_out
        if verdict is not None:
            operation = verdict.operation
            key = (operation, verdict.decision, verdict.policy or "-", str(status))
        else:
            operation = "-"
            key = ("-", "-", "-", str(status))
        self.ctx.metrics.record_key(key, duration, bytes_in, bytes_out)
        line: LineParts | None = None
        if self._access_on:
            access_log = self.ctx.access_log
            version = head.version
            fields = (
                self.client,
                head.method,
                head.target,
                _VERSION_TEXT.get(version) or f"{version[0]}.{version[1]}",
                operation,
                verdict.label if verdict is not None else "-",
                admission.identity.name if admission is not None else "-",
                ""
                if admission is None or admission.source == self.facts.peer
                else admission.source,
            )
            if not note:
                line = access_log.line_parts(*fields)
            if line is not None:
                line.write(status, bytes_in, bytes_out, duration)
            else:
                client, method, target, text, operation, decision, identity, source = fields
                access_log.write_fields(
                    client=client,
                    method=method,
                    target=target,
                    version=text,
                    status=status,
                    bytes_in=bytes_in,
                    bytes_out=bytes_out,
                    duration_s=duration,
                    note=note,
                    operation=operation,
                    decision=decision,
                    identity=identity,
                    source=source,
                )
        if (
            verdict is not None
            and admission is not None
            and not note
            and (line is not None or not self._access_on)
            and len(head.raw) <= HEAD_CACHE_MAX_HEAD_BYTES
        ):
            # (an access log that writes no text, e.g. JSON, takes write_fields each time; a
            # large head is not kept, see _last_plan)
            self._tail = (head, verdict, admission, status, key, line)
        else:
            self._tail = None
        if self._audit_on:
            self._audit(head)

    def _audit(self, head: RequestHead) -> None:
        admission, verdict = self._admission, self._verdict
        if admission is None or verdict is None:
            return  # a protocol error before any decision: the access log has it
        identity = admission.identity
        match = verdict.match
        capture, self._capture = self._capture, None
        # Registry credentials are only ever noted as present, never recorded.
        fields = head.headers()
        registry_auth = any(name in _REGISTRY_HEADERS for name, _ in fields)
        # Which client sent it (`dockgate learn` names the clients each rule was for).
        agent = next((value for name, value in fields if name == b"user-agent"), None)
        details = audit_details(
            verdict.operation if capture is not None and verdict.allowed else "",
            bytes(capture[:AUDIT_BODY_LIMIT]) if capture is not None else b"",
            capture is not None and len(capture) > AUDIT_BODY_LIMIT,
            registry_auth=registry_auth,
        )
        self.ctx.audit.write(
            AuditRecord(
                started=self._wall_started,
                identity=identity.name,
                auth=identity.method,
                auth_detail=identity.detail,
                source=admission.source,
                peer=self.client,
                method=head.method,
                target=head.target,
                operation=verdict.operation,
                object=target_object(match, head.target.partition("?")[2]),
                allowed=verdict.allowed,
                policy=verdict.policy,
                reason=verdict.reason,
                status=self._status,
                bytes_in=self._bytes_in,
                bytes_out=self._bytes_out,
                duration_s=time.monotonic() - self._started,
                details=details,
                **mode_fields(admission.policy, verdict, self._allowed),
                user_agent=(
                    agent[:USER_AGENT_CHARS].decode("latin-1") if agent is not None else None
                ),
                **injected_fields(self._allowed if verdict.allowed else None),
                scope=verdict.scope.describe() if verdict.scope is not None else None,
            )
        )


def _repeatable(head: RequestHead) -> bool:
    """Whether a head whose plan is kept may start its exchange by `_repeat`: its events are
    the head and its end (no body), and nothing after it is decided by the answer (a POST or
    an upgrade may be hijacked)."""
    return not head.has_body and not head.upgrade_header and head.method != "POST"


def _may_hijack(head: RequestHead) -> bool:
    """Could the daemon turn this request's connection into a raw stream?

    Upgrade requests, and the attach and exec-start endpoints, which the daemon hijacks even
    without an Upgrade header (moby: router/container, router/exec).
    """
    if head.upgrade_header:
        return True
    if head.method != "POST":
        return False
    path = head.target.partition("?")[0]
    if path.endswith("/attach"):
        return "/containers/" in path
    return path.endswith("/start") and "/exec/" in path


def _body_length(response: bytes) -> int:
    return len(response) - response.index(b"\r\n\r\n") - 4
