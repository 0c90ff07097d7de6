"""The policy's steps in one exchange, between admission and the daemon.

`ClientConnection` (relay/connection.py) relays bytes; this mixin holds what a bound policy adds on
the way: ownership look-ups (the request waits, in order, until the daemon says whose object it
is), bodies read whole to be judged by the guardrails and labelled with their owner, the
objects a body names, and response redaction. The decisions themselves are pure functions in
`body/` and `ownership/operations.py`; here they are carried out.

The connection's phases (relay/phase.py) these steps enter: LOOKING_UP (`_start_lookup`),
HOLDING_BODY (`_start_hold`); an answer held whole is HOLDING_ANSWER, entered by the
connection when the head arrives, and stays so while its look-ups run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from dockgate.auth.peercreate import settle_peer_create, sweep_peer_create
from dockgate.body.guardrails import (
    CHECKED_BODY_LIMIT,
    BodyRefused,
    Guardrails,
    image_peer_label_problem,
)
from dockgate.body.namedvolumes import named_volumes_problem
from dockgate.body.redact import (
    REDACT_LIMIT,
    REDACTED_OPERATIONS,
    Redaction,
    redact_response,
)
from dockgate.body.workload import NamedVolume
from dockgate.http.chunked import ChunkedDecoder
from dockgate.http.errors import (
    ClientProtocolError,
    GatewayError,
    UpstreamError,
    describe_error,
    error_response,
)
from dockgate.http.request import (
    Body,
    EndOfRequest,
    RequestEvent,
    RequestHead,
    forwarded_head,
    with_content_length,
    with_target,
)
from dockgate.http.response import Framing, ResponseHead, ResponseReader
from dockgate.observe.audit import AUDIT_BODY_LIMIT
from dockgate.ownership.answers import SCRUBBED_ANSWERS, scrubbed_answer
from dockgate.ownership.lists import LookUpAll
from dockgate.ownership.lookup import (
    Unresolved,
    default_log_driver,
    find,
    get_json,
    named_image_labels,
    named_image_owner,
    vouched_containers,
)
from dockgate.ownership.operations import (
    CHECKED_ANSWERS,
    IMAGE_CHECKED,
    SILENT_LOG_DRIVER,
    VOLUME,
    VOUCHED_LIST,
    Kind,
    checked_answer,
    created_image,
    refuse,
    silent_log_problem,
    vouching_image_problem,
)
from dockgate.ownership.pinning import pinned_body
from dockgate.ownership.prefix import find_owned
from dockgate.ownership.scopefind import find_covered, id_prefix_taken, judge_scoped
from dockgate.ownership.volumes import (
    Unreadable,
    VolumeSpec,
    create_volume,
    remove_volumes,
    settle_create,
    sweep_mounts,
    volume_specs,
)
from dockgate.policy.gatekeeper import Verdict
from dockgate.policy.modes import AUDIT, ENFORCE
from dockgate.policy.plan import (
    Allowed,
    Answer,
    HoldBody,
    JudgedBody,
    Step,
    answer_handling,
    judge_body,
    plan_forward,
    scoped_answer_rewritten,
    too_large,
    unreadable,
)
from dockgate.policy.scopeanswers import scoped_answer
from dockgate.policy.scopelists import (
    FILTERED_LISTS,
    covered_services,
    filtered_list,
    filtered_tasks,
    filters_answer,
    service_filter_ids,
)
from dockgate.policy.scopes import Scope
from dockgate.policy.scoping import (
    ScopeCheck,
    absent_named,
    id_name_taken,
    name_taken,
)
from dockgate.refusal import Refusal
from dockgate.relay.flow import FlowControl, Pause
from dockgate.relay.holding import Share
from dockgate.relay.phase import HOLDING_BODY, LOOKING_UP, Phase

if TYPE_CHECKING:
    from dockgate.policy.admission import Admission
    from dockgate.relay.context import ConnectionContext

# The checks of new containers' mounts still running (kept from garbage collection; each
# outlives a client that leaves, so that a container mounting another's volume is removed).
_SETTLING: set[asyncio.Task[bytes | Refusal | Exception]] = set()
_WATCHING: set[asyncio.Task[None]] = set()
MOUNT_WATCH_SECONDS = 0.25  # how often a pending check looks whether its client is gone


@dataclasses.dataclass(slots=True)
class MountCheck:
    """A ContainerCreate whose new container is checked before its answer goes out (the
    answer held whole): in ownership mode, when it mounts named volumes, its mounts
    (ownedvolumes.settle_create); under the peer_labels guardrail, its labels as the daemon
    stored them (auth/peercreate.py settle_peer_create: the image's name is resolved again
    at the create). Either or both."""

    head: RequestHead
    names: frozenset[str]  # named volumes to check (ownership), or none
    made: tuple[str, ...]  # the volumes the gateway created for it
    taken: bool = False  # its answer arrived and is being checked
    owner: str | None = None  # (the mounts' owner, for the sweep)
    # The peer_labels guardrail, with the create's image name, its `name` (or None) and
    # when it was forwarded (Unix seconds), for the sweep when the client leaves.
    peer: Guardrails | None = None
    image: str = ""
    name: str | None = None
    since: int = 0


class PolicySteps:
    """Mixed into ClientConnection, whose state and relay methods it uses."""

    # Set for the exchange of the request it names only (see _checks_mounts).
    _mount_check: MountCheck | None = None
    # A ContainerCreate the peer_labels guardrail judges again once made (auth/peercreate.py):
    # (its head, the guardrails, its image name, its `name`), until it is forwarded.
    _peer_after: tuple[RequestHead, Guardrails, str, str | None] | None = None

    if TYPE_CHECKING:
        ctx: ConnectionContext
        transport: asyncio.Transport | None
        flow: FlowControl
        phase: Phase

        @property
        def closing(self) -> bool: ...
        def _enter(self, phase: Phase) -> None: ...

        close_after_exchange: bool
        _head: RequestHead | None
        _response: ResponseReader | None
        _verdict: Verdict | None
        _admission: Admission | None
        _owner: str | None
        _deferred: list[RequestEvent] | None
        _lookup_task: asyncio.Task[None] | None
        _held_body: bytearray | None
        _hold_step: HoldBody | None
        _allowed: Allowed | None
        body_deadline: float | None
        _hold_share: Share
        _answer_share: Share
        _capture: bytearray | None
        _redaction: Redaction | None
        _answer_head: ResponseHead | None
        _answer_body: bytearray | None
        _request_done: bool
        _plain_answer: bool
        _response_started: bool
        _bytes_in: int
        _bytes_out: int

        def _refuse(
            self, head: RequestHead, refusal: Refusal, *, body_read: bool = False
        ) -> None: ...
        def _carry_out(self, head: RequestHead, step: Step) -> None: ...
        def _after_refusal(self) -> None: ...
        def _send_head(self, raw: bytes, *, replayable: bool) -> None: ...
        def _send_upstream(self, data: bytes) -> None: ...
        def _upstream_failed(self, exc: GatewayError) -> None: ...
        def _handle(self, events: list[RequestEvent]) -> None: ...
        def _finish_exchange(self) -> None: ...
        def _write_client(self, out: list[bytes]) -> None: ...
        def _announce_close(self, raw: bytes, answer_keeps_alive: bool) -> bytes: ...

    def _hold(self, event: RequestEvent) -> None:
        """HOLDING_BODY: a body read whole for the guardrails (or ownership's label); at its
        end, judged by the plan (policy/plan.judge_body), then looked up or forwarded."""
        held, head, hold = self._held_body, self._head, self._hold_step
        assert held is not None and head is not None and hold is not None
        if isinstance(event, Body):
            if not self._keep_piece(held, event.data, CHECKED_BODY_LIMIT, head):
                self._held_body = None
                if self.phase is HOLDING_BODY:  # over the limit, not over the budget
                    self._refuse(head, too_large(hold.allowed))
            return
        if not isinstance(event, EndOfRequest):
            return
        self._held_body = None
        self._end_hold()
        judged = judge_body(hold, bytes(held))
        if isinstance(judged, Refusal):
            # The body was read to its end: the connection stays usable.
            self._refuse(head, judged, body_read=True)
            self._after_refusal()
            return
        # (in warn or audit mode carrying what the body would have been refused for)
        self._allowed = judged.allowed
        self._verdict = judged.allowed.verdict
        if judged.peer_image is not None and hold.guardrails is not None:
            # The labels the image gives the new container are judged with the body's first.
            self._start_lookup(self._check_peer_image(head, judged, hold.guardrails))
            return
        work = self._body_lookup(head, judged, hold.guardrails)
        if work is not None:
            self._start_lookup(work)
            return
        self._forward_held(head, judged.body)

    def _body_lookup(
        self, head: RequestHead, judged: JudgedBody, guardrails: Guardrails | None
    ) -> Coroutine[object, object, None] | None:
        """The look-up a judged body still needs before it is forwarded (each ends by
        forwarding or refusing it), or None: none."""
        if judged.scope_lookups:
            # A scoped request: the objects the body names must be covered first.
            return self._check_scoped_references(head, judged, guardrails)
        if judged.volumes and guardrails is not None:
            # Volumes used by name are judged on their options, which only the daemon knows.
            return self._check_named_volumes(
                head, judged.body, guardrails, judged.volumes, judged.named
            )
        if judged.named or judged.check_image:
            # The objects the body names must be the caller's too (and a new container's
            # image must not carry the caller's label): ask the daemon first.
            return self._check_references(head, judged.body, judged.named)
        return None

    async def _check_peer_image(
        self, head: RequestHead, judged: JudgedBody, guardrails: Guardrails
    ) -> None:
        """The peer_labels guardrail on the labels the new container will have, its image's
        included (body/guardrails.py image_peer_label_problem; an image the daemon does not
        know passes: the create fails the same way, or the client pulls it and asks again,
        and is judged then). Then on to the request's other look-ups, if any."""
        self.flow.pause(Pause.LOOKUP)
        image = judged.peer_image
        assert image is not None
        labels = await named_image_labels(self.ctx.pool.address, image)
        problem = image_peer_label_problem(
            guardrails, self._operation(), judged.body, image, labels
        )
        if self.closing or self._head is not head:
            self._lookup_task = None
            return
        if problem is not None:
            refusal = judged.allowed.guardrail_refusal(BodyRefused(403, problem))
            waived = self._waived(refusal)
            if waived is None:
                self._lookup_task = None
                self._refuse_held(head, refusal, judged.body)
                return
            # Warn or audit mode: recorded (the other look-ups still run, as when the
            # guardrails' own refusal is waived before them).
            self._allowed, self._verdict = waived, waived.verdict
        elif self._operation() == "ContainerCreate" and self._exchange().mode == ENFORCE:
            # The daemon resolves the image's name again at the create: the new container is
            # judged again as made (auth/peercreate.py), its answer held until then. Set up
            # when the create is forwarded (_forward_held): a later look-up may refuse it.
            query = parse_qs(head.target.partition("?")[2])
            names = query.get("name")
            self._peer_after = (head, guardrails, image, names[0] if names else None)
        work = self._body_lookup(head, judged, guardrails)
        if work is not None:
            await work
            return
        self._lookup_task = None
        self.flow.resume(Pause.LOOKUP)
        self._forward_held(head, judged.body)

    async def _check_scoped_references(
        self, head: RequestHead, judged: JudgedBody, guardrails: Guardrails | None
    ) -> None:
        """A scoped request's body (policy/scoping.py): each object it names must exist and be
        covered by the scope (found among the covered objects, ownership/scopefind.py), or
        the request is refused (403, worded as missing: as if it did not exist). A volume
        that does not exist is refused the same way (the daemon would make it without
        labels, outside the scope; and a different answer would tell an existing volume out
        of scope from none). Then on to the guardrails' and ownership's look-ups, if any;
        without ownership the body is pinned to the full IDs checked."""
        self.flow.pause(Pause.LOOKUP)
        allowed = judged.allowed
        reach = allowed.reach  # (the policy's reach when the rule allowing it is unscoped)
        assert reach is not None
        body = judged.body
        pins: dict[tuple[str, str], str] = {}
        refusal: Refusal | None = None
        try:
            for kind, reference in judged.scoped:
                scope = reach.of(kind.name)
                assert scope is not None  # (plan.py keeps only the kinds the reach scopes)
                found = await find_covered(
                    self.ctx.pool.address, kind, reference, scope, self._owner
                )
                if found is None:
                    refusal = absent_named(kind, reference)
                    break
                pins[kind.name, reference] = found.full_id
            for kind, reference in [] if refusal is not None else judged.claims:
                holder = await find(self.ctx.pool.address, kind, reference)
                scope = reach.of(kind.name)  # (a scoped create's: every kind)
                if (
                    holder is not None
                    and scope is not None
                    and not scope.covers(holder.labels, holder.name)
                ):
                    refusal = name_taken(kind, reference)
            for kind, name in [] if refusal is not None else judged.id_names:
                if await id_prefix_taken(self.ctx.pool.address, kind, name):
                    refusal = id_name_taken(self._operation(), kind, name)
        except Unresolved as exc:
            refusal = allowed.unresolved(str(exc))
        if self.closing or self._head is not head:
            self._lookup_task = None
            return
        if refusal is not None:
            waived = self._waived(refusal)
            if waived is None:
                self._lookup_task = None
                self._refuse_held(head, refusal, body)
                return
            # Warn or audit mode: recorded; the body goes on as it came, unpinned.
            self._allowed, self._verdict, pins = waived, waived.verdict, {}
        if pins and self._owner is None and allowed.mode != AUDIT:
            try:
                body = pinned_body(self._operation(), body, pins)
            except (ValueError, RecursionError) as exc:
                message = f"dockgate: {self._operation()}: {unreadable(exc)}"
                self._lookup_task = None
                self._refuse_held(head, Refusal(400, message, "scope", "unpinnable"), body)
                return
        # (the task goes on with the other look-ups: it stays the exchange's, cancelled if
        # the client leaves)
        if judged.volumes and guardrails is not None:
            await self._check_named_volumes(head, body, guardrails, judged.volumes, judged.named)
            return
        if judged.named or judged.check_image:
            await self._check_references(head, body, judged.named)
            return
        self._lookup_task = None
        self.flow.resume(Pause.LOOKUP)
        self._forward_held(head, body)

    def _keep_piece(self, held: bytearray, data: bytes, limit: int, head: RequestHead) -> bool:
        """A piece of a body held whole (judged, or drained): counted and kept, if the body
        stays within `limit` and the process's budget. False when it does not: over the budget
        it is refused here (503); over `limit` the hold is ended and the caller refuses it."""
        self._count_body(data)
        held += data
        if len(held) > limit:
            self._end_hold()
            return False
        return self._grow_hold(head, len(held))

    def _start_lookup(self, work: Coroutine[object, object, None]) -> None:
        """Run one of the look-up tasks below (the client's reading is paused meanwhile)."""
        self._enter(LOOKING_UP)
        self._lookup_task = self.ctx.loop.create_task(
            self._answering(work), name="dockgate-ownership-lookup"
        )

    async def _answering(self, work: Coroutine[object, object, None]) -> None:
        """`work`, made to answer whatever it raises. Each task answers the failures it
        expects (an unreadable body 400, a daemon that cannot be asked 502); anything else
        would end the task with an exception nobody retrieves while the client waits, paused,
        for an answer that never comes (found by the attack review: a RecursionError while
        pinning). Anything else is the gateway's failure to check the request: a 502, and the
        connection is closed after it, since the request may have gone part of its way."""
        try:
            await work
        except Exception as exc:
            self._lookup_task = None
            self._deferred = None
            if not self.closing:
                message = f"ownership look-up failed: {describe_error(exc)}"
                self._upstream_failed(UpstreamError(message))

    def _count_body(self, data: bytes) -> None:
        """A piece of the request body: counted for the access log, and its start kept for
        the audit record when the operation's body is audited."""
        self._bytes_in += len(data)
        capture = self._capture
        if capture is not None and len(capture) <= AUDIT_BODY_LIMIT:
            capture += data[: AUDIT_BODY_LIMIT + 1 - len(capture)]

    async def _check_named_volumes(
        self,
        head: RequestHead,
        body: bytes,
        guardrails: Guardrails,
        volumes: list[NamedVolume],
        named: list[tuple[Kind, str]],
    ) -> None:
        """Guardrails on the volumes a body uses by name (body/namedvolumes.py), then ownership's
        look-ups of the objects it names, if any, then on to the daemon."""
        self.flow.pause(Pause.LOOKUP)
        try:
            owner_checked = frozenset(ref for kind, ref in named if kind is VOLUME)
            problem = await named_volumes_problem(
                self.ctx.pool.address, guardrails, volumes, self._owner, owner_checked
            )
        except Exception as exc:  # any failure must answer, or the paused client would hang
            self._lookup_task = None
            self._upstream_failed(UpstreamError(f"volume look-up failed: {describe_error(exc)}"))
            return
        if self.closing or self._head is not head:
            self._lookup_task = None
            return
        if problem is not None:
            self._lookup_task = None
            refusal = self._exchange().guardrail_refusal(BodyRefused(403, problem))
            self._refuse_held(head, refusal, body)
            return
        if named or (self._owner is not None and self._operation() in IMAGE_CHECKED):
            await self._check_references(head, body, named)
            return
        self._lookup_task = None
        self.flow.resume(Pause.LOOKUP)
        self._forward_held(head, body)

    def _lookup_ended(self, head: RequestHead) -> bool:
        """The look-up for `head` is over: True when its answer is no longer wanted (the client
        is gone, or the request is no longer the one waiting)."""
        self._lookup_task = None
        return self.closing or self._head is not head

    def _refuse_held(self, head: RequestHead, refusal: Refusal, body: bytes) -> None:
        """Refuse a request whose body was held, read to its end, for a look-up: the
        connection stays usable and reading goes on. In warn or audit mode a refusal of the
        policy's is recorded instead and `body` forwarded, as judged (policy/modes.py)."""
        waived = self._waived(refusal)
        if waived is not None:
            self._allowed = waived
            self._verdict = waived.verdict
            self.flow.resume(Pause.LOOKUP)
            self._forward_held(head, body)
            return
        self._refuse(head, refusal, body_read=True)
        self.flow.resume(Pause.LOOKUP)
        self._after_refusal()

    def _waived(self, refusal: Refusal) -> Allowed | None:
        """The exchange's facts carrying `refusal` as would-deny (warn or audit mode), or
        None: answer it (Allowed.waived)."""
        allowed = self._allowed
        return None if allowed is None else allowed.waived(refusal)

    def _forward_held(self, head: RequestHead, body: bytes) -> None:
        after, self._peer_after = self._peer_after, None
        if after is not None and after[0] is head:
            _, guardrails, image, name = after
            self._check_after_create(head, peer=guardrails, image=image, name=name)
        self._request_done = True
        self._send_head(with_content_length(forwarded_head(head), len(body)), replayable=False)
        self._send_upstream(body)

    async def _check_references(
        self, head: RequestHead, body: bytes, named: list[tuple[Kind, str]]
    ) -> None:
        self.flow.pause(Pause.LOOKUP)
        pins: dict[tuple[str, str], str] = {}
        made: list[str] = []  # the volumes the gateway creates for this request
        try:
            problem = await self._vouching_image(body)
            if problem is not None:
                if self._lookup_ended(head):
                    return
                message = f"dockgate: {self._operation()}: {problem}"
                self._refuse_held(head, refuse(403, message), body)
                return
            missing_volumes: list[str] = []
            # Audit mode: looked up to record what enforce would refuse; nothing made, nothing
            # pinned, the body goes as it came (policy/modes.py).
            audit = self._allowed is not None and self._allowed.mode == AUDIT
            for kind, reference in named:
                found = await find_owned(self.ctx.pool.address, kind, reference, self._owner)
                if found is not None:
                    pins[kind.name, reference] = found.full_id
                if found is None and kind is VOLUME:
                    # Created last, once everything else the body names is checked.
                    missing_volumes.append(reference)
                    continue
                # A missing network or container is refused: the daemon keeps the name and
                # would resolve it later, to whoever then holds it.
                if found is None or found.owner != self._owner:
                    if self._lookup_ended(head):
                        return
                    # 403, not 404: the docker CLI takes a 404 to a create for a missing image
                    # and would try to pull it.
                    message = f"dockgate: {kind.missing.format(reference)}"
                    self._refuse_held(head, refuse(403, message), body)
                    return
            if audit:
                if self._lookup_ended(head):
                    return
                self.flow.resume(Pause.LOOKUP)
                self._forward_held(head, body)
                return
            refusal = await self._create_missing_volumes(body, missing_volumes, made)
            if refusal is not None:
                await self._drop_made(made)  # the create does not happen
                if self._lookup_ended(head):
                    return
                self._refuse_held(head, refusal, body)
                return
        except Unresolved as exc:
            if self._lookup_ended(head):
                return
            self._refuse_held(head, self._exchange().unresolved(str(exc)), body)
            return
        except Exception as exc:  # any failure must answer, or the paused client would hang
            await self._drop_made(made)
            self._lookup_task = None
            self._upstream_failed(UpstreamError(f"ownership look-up failed: {describe_error(exc)}"))
            return
        if self.closing or self._head is not head:
            await self._drop_made(made)
            self._lookup_task = None
            return
        try:
            # The daemon then acts on exactly the objects that were checked (ownership/pinning.py).
            body = pinned_body(self._operation(), body, pins)
        except (ValueError, RecursionError) as exc:
            await self._drop_made(made)
            if self._lookup_ended(head):
                return
            message = f"dockgate: {self._operation()}: {unreadable(exc)}"
            self._refuse_held(head, refuse(400, message), body)
            return
        self._lookup_task = None
        volumes = frozenset(reference for kind, reference in named if kind is VOLUME)
        if (
            self._owner is not None
            and self._operation() == "ContainerCreate"
            and volumes
            and self._exchange().mode == ENFORCE  # (warn, audit: no answer is checked)
        ):
            # A volume name cannot be pinned: the answer waits for the mounts' check.
            self._check_after_create(head, names=volumes, made=tuple(made), owner=self._owner)
        self.flow.resume(Pause.LOOKUP)
        self._forward_held(head, body)

    def _check_after_create(
        self,
        head: RequestHead,
        *,
        names: frozenset[str] = frozenset(),
        made: tuple[str, ...] = (),
        owner: str | None = None,
        peer: Guardrails | None = None,
        image: str = "",
        name: str | None = None,
    ) -> None:
        """The ContainerCreate `head`'s answer is to be held and the new container checked
        (MountCheck): added to the check already set for it (the peer_labels look-up comes
        before ownership's), else a new check, watched until its answer arrives."""
        self._plain_answer = False  # (the answer is held: connection.py relays a plain one)
        check = self._mount_check
        if check is not None and check.head is head:
            if names:
                check.names, check.made, check.owner = names, made, owner
            if peer is not None:
                check.peer, check.image, check.name = peer, image, name
            return
        check = MountCheck(head, names, made, owner=owner, peer=peer, image=image, name=name)
        check.since = int(time.time())
        self._mount_check = check
        watch = self.ctx.loop.create_task(
            self._watch_mounts(check), name="dockgate-create-check-watch"
        )
        _WATCHING.add(watch)
        watch.add_done_callback(_WATCHING.discard)

    async def _watch_mounts(self, check: MountCheck) -> None:
        """Until the create's answer arrives: if the exchange ends without it (the client
        gone, which closes the upstream connection; the upstream failed), the container may
        exist, unchecked, its ID unknown: the caller's containers mounting those names are
        swept instead (ownedvolumes.sweep_mounts), and, under peer_labels, the containers
        the create may have made (auth/peercreate.py sweep_peer_create). A create refused
        before it was forwarded made nothing and is not swept. Not tied to the
        connection."""
        while not check.taken:
            if self.closing or self._head is not check.head or self._mount_check is not check:
                if check.names and check.owner is not None:
                    address = self.ctx.pool.address
                    await sweep_mounts(address, check.names, check.made, check.owner)
                if check.peer is not None:
                    await sweep_peer_create(
                        self.ctx.pool.address, check.peer, check.name, check.image, check.since
                    )
                return
            await asyncio.sleep(MOUNT_WATCH_SECONDS)

    async def _drop_made(self, made: list[str]) -> None:
        """The volumes the gateway made for a request that does not go to the daemon: removed
        (each while still the caller's; ownedvolumes.remove_volumes), best effort."""
        if made and self._owner is not None:
            try:
                await remove_volumes(self.ctx.pool.address, tuple(made), self._owner)
            except Exception:  # the request's own answer matters more
                return

    async def _vouching_image(self, body: bytes) -> str | None:
        """A container's or service's create: why its image may not be used (it carries the
        caller's own owner label, so the containers would not be trusted as the caller's:
        ownership.trusted_owner), or None."""
        owner, operation = self._owner, self._operation()
        if owner is None or operation not in IMAGE_CHECKED:
            return None
        # Nor may it get the build steps' log driver (ownership.silent_log_problem): the
        # daemon's default is asked only when the body names none.
        silent = silent_log_problem(operation, body, None)
        if silent is None and silent_log_problem(operation, body, SILENT_LOG_DRIVER) is not None:
            address = self.ctx.pool.address
            silent = silent_log_problem(operation, body, await default_log_driver(address))
        if silent is not None:
            return silent
        image = created_image(operation, body)  # read before, when the body was judged
        if image is None or await named_image_owner(self.ctx.pool.address, image) != owner:
            return None
        return vouching_image_problem(image, owner)

    def _operation(self) -> str:
        return self._verdict.operation if self._verdict is not None else "-"

    def _exchange(self) -> Allowed:
        """The allowed request's facts, from its plan (set by ClientConnection._carry_out)."""
        allowed = self._allowed
        assert allowed is not None
        return allowed

    async def _create_missing_volumes(
        self, body: bytes, names: list[str], made: list[str]
    ) -> Refusal | None:
        """In ownership mode, the volumes a new container mounts that do not exist are created
        first, the caller's (ownership/volumes.py): a name cannot be pinned, and another caller's
        volume of that name created in between would be mounted. A refusal when one is
        someone else's by then (as for any other's volume) or cannot be created. Elsewhere
        (a service's mounts: made by each task on its node) a missing volume passes, nobody's.
        The volumes made, the caller's, are added to `made` (removed if the create fails)."""
        if not names or self._owner is None or self._operation() != "ContainerCreate":
            return None
        try:
            specs = volume_specs(body)
        except Unreadable:
            return None  # the daemon refuses the body itself, and creates nothing
        address = self.ctx.pool.address
        for name in names:
            created = await create_volume(address, name, specs.get(name, VolumeSpec()), self._owner)
            if created.status not in (200, 201):
                # The daemon would not create it either (a name it refuses, a driver it does
                # not know, one that holds the name already): whose it is, if it is anyone's.
                found = await find_owned(address, VOLUME, name, self._owner)
                if found is None:
                    message = f"dockgate: cannot create volume {name!r}: {created.message}"
                    status = 400 if created.status == 400 else 403
                    return refuse(status, message)
                if found.owner == self._owner:
                    continue  # the daemon answers the create as it would have
            elif created.owner == self._owner:
                made.append(name)
                continue
            # Someone else's: 403, not 404 (the docker CLI would try to pull an image).
            message = f"dockgate: {VOLUME.missing.format(name)}"
            return refuse(403, message)
        return None

    async def _check_owners(
        self, head: RequestHead, step: LookUpAll, scope: ScopeCheck | None = None
    ) -> None:
        """The objects a request names must be the caller's (ownership.LookUp, or several of
        them for a list's filters, ownership/lists.py): the first that is not is answered as
        missing (the kind's not-found message, with the step's status); all the caller's, the
        request goes on pinned to their full IDs. With a `scope` (policy/scoping.py), the
        object must be covered too (found among the covered objects only,
        ownership/scopefind.py), and must be the caller's only in ownership mode."""
        full_ids: dict[str, str] = {}
        refused: Refusal | None = None
        try:
            for reference in step.references:
                if scope is not None:
                    refused = await self._scoped_lookup(step.kind, reference, scope, full_ids)
                    if refused is not None:
                        break
                    continue
                found = await find_owned(self.ctx.pool.address, step.kind, reference, self._owner)
                if found is None or found.owner != self._owner:
                    # As if it did not exist: the daemon's own answer for a missing object.
                    message = step.kind.missing.format(reference)
                    if step.status != 404:
                        message = f"dockgate: {message}"
                    refused = refuse(step.status, message)
                    break
                full_ids[reference] = found.full_id
        except Unresolved as exc:
            refused = self._exchange().unresolved(str(exc))
        except Exception as exc:  # any failure must answer, or the paused client would hang
            self._lookup_task = None
            self._deferred = None
            self._upstream_failed(UpstreamError(f"ownership look-up failed: {describe_error(exc)}"))
            return
        if self._lookup_ended(head):
            return
        waived = None if refused is None else self._waived(refused)
        if waived is not None:
            # Warn or audit mode: recorded, and the request goes on as it came, without
            # ownership's steps: the object is not the caller's, and an update labelled with
            # the caller's owner would hand it over (test_attacks_rollout).
            self._carry_out(head, plan_forward(head, dataclasses.replace(waived, owner=None)))
        elif refused is not None:
            self._refuse(head, refused)
        else:
            head = with_target(head, step.pin(full_ids))
            self._head = head
            self._carry_out(head, plan_forward(head, self._exchange()))
        deferred, self._deferred = self._deferred, None
        self.flow.resume(Pause.LOOKUP)
        if deferred:
            self._handle(deferred)

    async def _scoped_lookup(
        self, kind: Kind, reference: str, check: ScopeCheck, full_ids: dict[str, str]
    ) -> Refusal | None:
        """One object of a scoped request (scopefind.judge_scoped): covered, its full ID kept
        in `full_ids`; else the refusal."""
        judged = await judge_scoped(self.ctx.pool.address, kind, reference, check, self._owner)
        if isinstance(judged, str):
            return self._exchange().policy_denial("scope", judged)
        if isinstance(judged, Refusal):
            return judged
        full_ids[reference] = judged.full_id
        return None

    def _hold_body(self, step: HoldBody) -> None:
        """Read the body whole, judge it and label it, and only then forward it (with a
        Content-Length): the bytes checked are the bytes the daemon gets."""
        if not self._start_hold(step.head):
            return
        self._held_body = bytearray()
        self._hold_step = step

    # ----- the memory and time a held body may take ---------------------------------------------

    def _start_hold(self, head: RequestHead) -> bool:
        """Start holding `head`'s body: its Content-Length, when given, is taken from the
        process's budget up front (503 when it does not fit), and the body must be whole
        within --body-timeout. False when refused."""
        if not head.chunked and not self._hold_share.cover(head.content_length or 0):
            self._refuse_over_budget(head)
            return False
        self._enter(HOLDING_BODY)
        self.body_deadline = self.ctx.loop.time() + self.ctx.body_timeout
        if head.expect_continue:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _grow_hold(self, head: RequestHead, total: int) -> bool:
        """A held body is now `total` bytes: within budget, or cut with a 503 (False)."""
        if self._hold_share.cover(total):
            return True
        self._refuse_over_budget(head)
        return False

    def _end_hold(self) -> None:
        self._hold_share.end()
        self.body_deadline = None

    def _refuse_over_budget(self, head: RequestHead) -> None:
        self._end_hold()
        message = (
            "dockgate: too many request bodies are being checked at once "
            "(--held-bodies-max); try again"
        )
        refusal = Refusal(503, message, "held-bodies", "held bodies over budget", retry_after=1)
        self._refuse(head, refusal)

    def _answer_handling(self, status: int) -> Answer:
        """What happens to the daemon's answer with `status` (policy/plan.answer_handling)."""
        allowed = self._allowed
        if allowed is None:
            return Answer.RELAY
        return answer_handling(allowed, status, mounts_checked=self._checks_mounts())

    def _checks_mounts(self) -> bool:
        """Whether the answer being read is to a ContainerCreate whose new container is
        checked (its mounts in ownership mode, its labels under peer_labels: MountCheck)."""
        check = self._mount_check
        return (
            check is not None
            and check.head is self._head
            and (self._owner is not None or check.peer is not None)
        )

    def _collect_answer(self, data: bytes, done: bool) -> None:
        """HOLDING_ANSWER: a piece of the answer held whole; at its end, checked and sent."""
        body, head = self._answer_body, self._answer_head
        if body is None or head is None:
            return  # whole already, and being checked: nothing more belongs to it
        body += data
        if len(body) > REDACT_LIMIT:
            self._answer_body = None
            self._answer_share.end()
            self._upstream_failed(UpstreamError("the answer is too large to redact"))
            return
        if not self._answer_share.cover(len(body)):
            # Answers held whole share the budget of held bodies (relay/holding.py).
            self._answer_body = None
            self._answer_share.end()
            message = "dockgate: too many answers are being checked at once; try again"
            self._upstream_failed(GatewayError(message, 503))
            return
        if not done:
            return
        self._answer_body = self._answer_head = None
        self._answer_share.end()
        raw = bytes(body)
        try:
            if head.framing is Framing.CHUNKED:
                pieces, _ = ChunkedDecoder().feed(raw)
                raw = b"".join(pieces)
            scope = self._list_scope(head.status)
            if scope is not None:
                # Only the objects the rules' `objects:` cover (policy/scopelists.py), before
                # ownership and redaction see the answer. Tasks follow their service: the
                # daemon's service list is asked first.
                if self._operation() == "TaskList":
                    self._lookup_task = self.ctx.loop.create_task(
                        self._answering(self._scoped_tasks(head, raw, scope)),
                        name="dockgate-scope-tasks",
                    )
                    return
                query = self._allowed.scoped_query if self._allowed is not None else None
                limit = query.limit if query is not None else None
                raw = filtered_list(self._operation(), raw, scope, limit)
            elif self._allowed is not None and scoped_answer_rewritten(self._allowed, head.status):
                # A covered object's answer naming objects out of the scope (a network's
                # attached containers): taken out, before redaction sees it.
                raw = scoped_answer(self._operation(), raw)
            if self._checks_mounts():
                check = self._mount_check
                assert check is not None
                check.taken = True
                self._mount_check = None
                self._lookup_task = self.ctx.loop.create_task(
                    self._answering(self._settled_answer(head, raw, check)),
                    name="dockgate-ownership-mounts",
                )
                return
            if self._owner is not None and (head.status, self._operation()) == VOUCHED_LIST:
                # The images of the listed containers are looked up first (ownership/lookup.py): the
                # client's reading stays paused (a request is read only once the answer to the
                # one before it is out), and the task is cancelled if the client leaves.
                self._lookup_task = self.ctx.loop.create_task(
                    self._answering(self._vouched_answer(head, raw)),
                    name="dockgate-ownership-list",
                )
                return
            rewritten = self._rewritten_answer(head, raw)
        except Exception as exc:
            self._answer_failed(exc)
            return
        self._send_answer(head, rewritten)

    def _answer_failed(self, exc: Exception) -> None:
        message = exc.message if isinstance(exc, ClientProtocolError) else describe_error(exc)
        self._upstream_failed(UpstreamError(f"cannot check the answer: {message}"))

    async def _vouched_answer(self, head: ResponseHead, raw: bytes) -> None:
        """ContainerList in ownership mode: only the containers trusted as the caller's
        (lookup.vouched_containers: a build's step containers, and any container whose
        look-up fails, taken out), then redacted as the policy says, then sent."""
        owner = self._owner
        assert owner is not None
        rewritten: bytes | Exception
        try:
            rewritten = await vouched_containers(self.ctx.pool.address, raw, owner)
            if self._redaction is not None and "ContainerList" in REDACTED_OPERATIONS:
                rewritten = redact_response("ContainerList", rewritten, self._redaction)
        except Exception as exc:
            rewritten = exc
        self._looked_up_answer(head, rewritten)

    def _list_scope(self, status: int) -> Scope | None:
        """The scope a held list answer with `status` is filtered to, None: not filtered."""
        allowed = self._allowed
        if allowed is None or status != 200 or allowed.operation not in FILTERED_LISTS:
            return None
        return filters_answer(allowed)

    async def _scoped_tasks(self, head: ResponseHead, raw: bytes, scope: Scope) -> None:
        """TaskList under a scope: the tasks of the services the scope covers, from one
        look-up of the daemon's service list (bounded: an answer over the look-up bound fails
        the request, 502, never passes unfiltered); a `service` filter naming a service out
        of the scope is answered as for one that does not exist."""
        rewritten: bytes | Refusal | Exception
        try:
            status, services = await get_json(self.ctx.pool.address, "/services")
            covered, every = covered_services(status, services, scope)
            allowed = self._allowed
            query = allowed.scoped_query if allowed is not None else None
            wanted = (
                service_filter_ids(query.services, covered, every)
                if query is not None and query.services
                else None
            )
            if isinstance(wanted, Refusal):
                rewritten = wanted
            else:
                rewritten = self._rewritten_answer(head, filtered_tasks(raw, covered, wanted))
        except Exception as exc:
            rewritten = exc
        self._looked_up_answer(head, rewritten)

    async def _settled_answer(self, head: ResponseHead, raw: bytes, check: MountCheck) -> None:
        """ContainerCreate in ownership mode naming volumes: the answer goes out once the new
        container is known to mount only the caller's volumes (ownedvolumes.settle_create):
        else it is removed, and the client answered as for another's volume (403, as the
        check before the create) or 502 when the check failed. The check runs on when the
        client leaves meanwhile (a container of someone else's volume must not stay)."""
        settling = self.ctx.loop.create_task(
            self._settling(head, raw, check), name="dockgate-create-settle"
        )
        _SETTLING.add(settling)
        settling.add_done_callback(_SETTLING.discard)
        rewritten: bytes | Refusal | Exception
        try:
            rewritten = await asyncio.shield(settling)
            if not isinstance(rewritten, (Refusal, Exception)):
                rewritten = self._rewritten_answer(head, raw)
        except Exception as exc:
            rewritten = exc
        self._looked_up_answer(head, rewritten)

    async def _settling(
        self, head: ResponseHead, raw: bytes, check: MountCheck
    ) -> bytes | Refusal | Exception:
        """The checks of a new container (MountCheck), run on when the client leaves: its
        labels as stored (peer_labels), then its mounts (ownership; whose settle_create also
        removes the volumes made for a create the daemon refused). The answer as it came
        when both pass, else why not (the container removed)."""
        address = self.ctx.pool.address
        if check.peer is not None:
            peer = await settle_peer_create(address, head.status, raw, check.peer)
            if peer.problem is not None or peer.failure is not None:
                if check.names and check.owner is not None:
                    await remove_volumes(address, check.made, check.owner)
                if peer.problem is not None and peer.failure is None:
                    allowed = self._allowed
                    assert allowed is not None
                    return allowed.guardrail_refusal(BodyRefused(403, peer.problem))
                return UpstreamError(peer.failure or "")
        if check.names and check.owner is not None:
            settled = await settle_create(
                address, head.status, raw, names=check.names, made=check.made, owner=check.owner
            )
            if settled.foreign is not None:
                return refuse(403, f"dockgate: {VOLUME.missing.format(settled.foreign)}")
            if settled.failure is not None:
                return UpstreamError(settled.failure)
        return raw

    def _looked_up_answer(self, head: ResponseHead, rewritten: bytes | Refusal | Exception) -> None:
        """The look-ups an answer waited for are over: the answer (or why it cannot be checked)
        goes out, unless the client is gone."""
        self._lookup_task = None
        if self.closing:
            return
        if isinstance(rewritten, Exception):
            self._answer_failed(rewritten)
            return
        self._send_answer(head, rewritten)

    def _send_answer(self, head: ResponseHead, rewritten: bytes | Refusal) -> None:
        """A held answer, checked and rewritten: out to the client, and the exchange ends."""
        if isinstance(rewritten, Refusal):
            # The daemon changed nothing (an existing volume is returned as it is): answer as
            # if the name were taken.
            request = self._head
            assert request is not None
            self._status = rewritten.status
            response = self._response
            close = (
                not request.keep_alive
                or self.close_after_exchange
                or (response is not None and not response.keep_alive)
            )
            answer = error_response(rewritten.status, rewritten.message, close=close)
            self._write_client([answer])
            self._bytes_out -= answer.index(b"\r\n\r\n") + 4  # the log counts body bytes only
            self._finish_exchange()
            return
        head_bytes = self._announce_close(
            with_content_length(head.raw, len(rewritten)), head.keep_alive
        )
        self._bytes_out -= len(head_bytes)  # the log counts body bytes only
        self._write_client([head_bytes, rewritten])
        self._finish_exchange()

    def _rewritten_answer(self, head: ResponseHead, raw: bytes) -> bytes | Refusal:
        operation = self._operation()
        if self._exchange().ownership and (head.status, operation) in SCRUBBED_ANSWERS:
            # What it counts or names of other callers' objects (ownership/answers.py), then the
            # policy's redaction (SystemInfo's labels).
            raw = scrubbed_answer(operation, head.status, raw)
        if self._owner is not None and (head.status, operation) in CHECKED_ANSWERS:
            # Ownership first (another caller's volume becomes a 409), then redaction of what
            # stays (VolumeCreate is both).
            checked = checked_answer(operation, head.status, raw, self._owner)
            if (
                isinstance(checked, Refusal)
                or self._redaction is None
                or operation not in REDACTED_OPERATIONS
            ):
                return checked
            return redact_response(operation, checked, self._redaction)
        if self._redaction is not None and operation in REDACTED_OPERATIONS:
            return redact_response(operation, raw, self._redaction)
        return raw  # scrubbed only
