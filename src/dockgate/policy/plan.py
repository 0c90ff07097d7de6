"""The plan for one request: what the gateway does with it, decided without any I/O.

Admission (policy/admission.py) has said who the caller is, which policy applies and whether the
policy's rules allow the operation. The plan takes it from there and answers one value:

- `Refusal` (refusal.py): answered here, never forwarded;
- `DrainBody`: the operation's handler reads no body: read it whole, judge it (`judge_drained`),
  then plan the same request without it (`plan_admitted`);
- `LookUp`: ownership must first ask the daemon whose the named objects are; when they are the
  caller's, go on with `plan_forward(pinned head)`, else answer as if they did not exist;
- `HoldBody`: read the body whole, then `judge_body` it (guardrails, owner label, the objects it
  names) before forwarding it with a Content-Length;
- `Forward`: send the head (rewritten when ownership narrowed a list) and stream the body.

An answer is then held whole or rewritten as it goes as `answer_handling` says.

The gateway (relay/) carries the plan out; `dockgate check` (cli.py) calls the same functions and
prints the trace each step leaves, so the two cannot disagree on anything decided here. What needs
the daemon (the look-ups) is named in the plan and done by the gateway alone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from dockgate.api.target import parse_target
from dockgate.body.content import (
    drops_body,
    ignored_body_refusal,
    judge_head,
)
from dockgate.body.defaults import DEFAULTED, Injected, describe, inject, rejudged
from dockgate.body.guardrails import (
    BODY_CHECKED,
    CHECKED_BODY_LIMIT,
    QUERY_CHECKED,
    BodyRefused,
    Guardrails,
    check_body_cost,
    check_request,
)
from dockgate.body.namedvolumes import MAX_NAMED_VOLUMES, to_look_up
from dockgate.body.redact import REDACTED_OPERATIONS, REDACTED_STREAMS, Redaction, query_problem
from dockgate.body.repeated import repeated_list
from dockgate.body.workload import BodyError, NamedVolume
from dockgate.http.request import RequestHead, with_target
from dockgate.ownership.answers import SCRUBBED_ANSWERS
from dockgate.ownership.labels import foreign_owner_label
from dockgate.ownership.lists import LookUpAll, list_plan
from dockgate.ownership.operations import (
    CHECKED_ANSWERS,
    FILTERED,
    IMAGE_CHECKED,
    LABELLED_BUILD,
    MAX_REFERENCES,
    OWNED_CREATES,
    OWNER_LABEL,
    REFERENCING,
    VOUCHED_LIST,
    Kind,
    concerns_objects,
    created_image,
    hex_name_problem,
    references,
    refuse,
    silent_log_problem,
    with_owner_label,
)
from dockgate.ownership.operations import plan as ownership_plan
from dockgate.ownership.owners import owner_for
from dockgate.policy.admission import Admission
from dockgate.policy.gatekeeper import Verdict
from dockgate.policy.modes import AUDIT, ENFORCE, waive
from dockgate.policy.rules import Policy
from dockgate.policy.scopeanswers import SCOPED_ANSWERS
from dockgate.policy.scopelists import (
    GatewayQuery,
    filters_answer,
    scoped_list_head,
    scoped_list_hidden,
)
from dockgate.policy.scopes import Reach
from dockgate.policy.scoping import (
    SCOPED_CREATES,
    ScopeCheck,
    claimed,
    create_problem,
    id_like_name,
    indirect_lookup,
    rollback_problem,
    scope_lookup,
    task_problem,
    with_duplicate_check,
)
from dockgate.policy.scoping import STAGE as SCOPE_STAGE
from dockgate.refusal import Refusal

# What each step found, in order: (step, finding). Only `dockgate check` asks for it.
Trace = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Allowed:
    """An admitted request's facts that the later steps read."""

    verdict: Verdict  # allowed: the operation, its route match, the deciding policy's name
    policy: Policy | None  # the bound policy (None only for an unbound, ungated gateway)
    owner: str | None  # ownership mode: the caller's owner label value; None: owns nothing
    # What the policy's defaults put into the create's body (body/defaults.py), for the audit
    # record; in audit mode what they would have put (nothing is written). None: nothing.
    injected: Mapping[str, object] | None = None
    # A scoped list's query parts the gateway applies itself to the filtered answer, taken
    # out of the forwarded request (policy/scopelists.py GatewayQuery). None: none.
    scoped_query: GatewayQuery | None = None

    @property
    def operation(self) -> str:
        return self.verdict.operation

    @property
    def params(self) -> Mapping[str, str]:
        """The path variables of the request's route (ImagePush's image `name`)."""
        match = self.verdict.match
        return match.params if match is not None else {}

    @property
    def ownership(self) -> bool:
        return self.policy is not None and self.policy.ownership

    @property
    def reach(self) -> Reach | None:
        """What the existing objects this request reaches indirectly (a commit's container, a
        build's network, what a create or update body names) must be covered by: the
        allowing rules' scope when the request is scoped, else the union of the policy's
        `objects:` (Policy.reach); None in a policy without `objects:`, where they are not
        judged (policy/scopes.py reach_of). Per kind (`Reach.of`): a scoped request's scope
        judges every kind; the policy's reach, each kind by the rules about it."""
        scope = self.verdict.scope
        if scope is not None:
            return Reach.whole(scope)
        return self.policy.reach if self.policy is not None else None

    @property
    def mode(self) -> str:
        """The rollout mode (policy/modes.py) of the bound policy, or of its binding."""
        policy = self.policy
        return policy.mode if policy is not None else ENFORCE

    @property
    def redaction(self) -> Redaction | None:
        """What the answer hides; None in warn and audit mode too, where answers are relayed
        as they come (the audit record's `would_hide` says what enforce would hide)."""
        policy = self.policy
        if (
            policy is not None
            and policy.mode == ENFORCE
            and policy.redaction.rewrites(self.verdict.operation)
        ):
            return policy.redaction
        return None

    @property
    def would_hide(self) -> list[str]:
        """In warn or audit mode, what enforce would have hidden of this operation's answer:
        the redacted areas (`env`, `mounts`, `labels`), and `objects of other owners` for the
        lists ownership narrows. Empty in enforce mode, where it is hidden."""
        policy = self.policy
        if policy is None or policy.mode == ENFORCE:
            return []
        operation = self.verdict.operation
        hidden = []
        redaction = policy.redaction
        if redaction.rewrites(operation):
            hidden = [area for area in ("env", "mounts", "labels") if redaction.hides(area)]
        if policy.ownership and operation in FILTERED:
            hidden.append("objects of other owners")
        if scoped_list_hidden(self.verdict):
            hidden.append("objects out of the scope")
        return hidden

    def waived(self, refusal: Refusal) -> Allowed | None:
        """In warn or audit mode, these facts carrying a refusal of the policy's own as the
        request's `would_deny`, to go on with (policy/modes.py); None: answer `refusal`."""
        verdict = waive(self.verdict, refusal, self.mode)
        return None if verdict is None else replace(self, verdict=verdict)

    def policy_denial(self, stage: str, reason: str) -> Refusal:
        """A 403 from one of the policy's steps: "dockgate: <Op> denied by policy <P>: why"."""
        policy = self.verdict.policy or "-"
        message = f"dockgate: {self.operation} denied by policy {policy}: {reason}"
        return Refusal(403, message, stage, f"{stage}: {reason}")

    def guardrail_refusal(self, refused: BodyRefused, *, raw: bool = False) -> Refusal:
        if refused.status == 403 and not raw:
            return self.policy_denial("guardrails", refused.reason)
        message = refused.reason if raw else f"dockgate: {self.operation}: {refused.reason}"
        return Refusal(refused.status, message, "guardrails", f"guardrails: {refused.reason}")

    def unresolved(self, problem: str) -> Refusal:
        """A reference the daemon cannot resolve (an ambiguous name or ID prefix): a 400, as
        the daemon answers, rather than a 502 (the gateway did not fail)."""
        message = f"dockgate: {self.operation}: {problem}; name it by its full ID"
        return Refusal(400, message, "ownership", "unresolved reference")


@dataclass(frozen=True, slots=True)
class Forward:
    head: RequestHead  # as it goes to the daemon
    allowed: Allowed
    # The request has no body and may be sent again on a fresh connection when a pooled one
    # turns out to be closed (Go's isReplayable); a streamed body cannot be.
    replayable: bool


@dataclass(frozen=True, slots=True)
class HoldBody:
    head: RequestHead
    allowed: Allowed
    guardrails: Guardrails | None  # None: held for ownership alone (the owner label)


@dataclass(frozen=True, slots=True)
class DrainBody:
    head: RequestHead
    allowed: Allowed


@dataclass(frozen=True, slots=True)
class LookUp:
    head: RequestHead
    allowed: Allowed
    objects: LookUpAll
    # A request allowed only on the objects a scope covers (policy/scoping.py): the object
    # must be covered too (and owned, when ownership asked for the look-up).
    scope: ScopeCheck | None = None


Step = Refusal | DrainBody | LookUp | HoldBody | Forward


def allowed_of(admission: Admission, owners: Mapping[str, str]) -> Allowed:
    policy = admission.policy
    owner = None
    if policy is not None and policy.ownership:
        # Named by how the caller authenticated, or as `owners:` maps it (ownership/owners.py);
        # None for an anonymous caller, who owns nothing.
        owner = owner_for(admission.identity, owners)
    return Allowed(admission.verdict, policy, owner)


def plan_request(
    head: RequestHead,
    admission: Admission,
    owners: Mapping[str, str],
    trace: Trace | None = None,
) -> Step:
    """The first step for an admitted (or refused) request head."""
    verdict = admission.verdict
    if not verdict.allowed:
        return admission_refusal(admission)
    allowed = allowed_of(admission, owners)
    if head.has_body:  # (a request without a body passes whatever it says it is)
        # What the body may be, in every policy (body/content.py): form bodies never pass.
        content_types = [value for name, value in head.headers() if name == b"content-type"]
        shape = judge_head(
            verdict.operation,
            content_types,
            True,
            None if head.chunked else head.content_length,
        )
        if shape is not None:
            return shape
        if trace is not None:
            trace.append(("body", "content type accepted"))
        if drops_body(verdict.operation):
            # Read whole first; the steps below then see a request without a body.
            if trace is not None:
                trace.append(("body", f"{verdict.operation} reads no body: read and dropped"))
            return DrainBody(head, allowed)
    return plan_admitted(head, allowed, trace)


def admission_refusal(admission: Admission) -> Refusal:
    """(A client certificate no longer valid also ends the connection after the answer: the
    connection reads that from `admission.close`.)"""
    refusal = admission.verdict.refusal
    assert refusal is not None
    return refusal


def judge_drained(allowed: Allowed, body: bytes) -> Refusal | None:
    """A body read whole on an operation whose handler reads none (body/content.py)."""
    return ignored_body_refusal(allowed.operation, body)


def plan_admitted(head: RequestHead, allowed: Allowed, trace: Trace | None = None) -> Step:
    """The policy's steps, once the request's shape is known to be acceptable."""
    policy = allowed.policy
    if policy is not None and policy.redaction.active:
        # Where the policy redacts, a `label` filter would still tell hidden values by what it
        # matches, and `top?ps_args=e` would print environments (redact.query_problem).
        query = head.target.partition("?")[2]
        problem = query_problem(allowed.operation, query, policy.redaction)
        if problem is not None:
            refusal = allowed.policy_denial("redaction", problem)
            waived = allowed.waived(refusal)
            if waived is None:
                return refusal
            allowed = waived  # (and the answer goes unredacted: Allowed.redaction)
    if allowed.reach is not None:  # a policy with `objects:` rules (policy/scopes.py)
        reached = _reach_head(head, allowed, trace)
        if isinstance(reached, Refusal):
            return reached
        allowed = reached
    if allowed.verdict.scope is not None:  # a list or the event stream filtered to the scope
        scoped = scoped_list_head(head, allowed, trace)
        if isinstance(scoped, Refusal):
            return scoped
        head, allowed = scoped
    if allowed.ownership:
        owned = _own(head, allowed, trace)
        if not isinstance(owned, RequestHead):
            return _scoped_lookup(owned, allowed)
        head = owned
    if allowed.verdict.scope is not None:  # a request about one object: looked up first
        looked_up = _scope(head, allowed)
        if looked_up is not None:
            return looked_up
    elif allowed.reach is not None:  # an unscoped commit or build: what it reaches, first
        indirect = indirect_lookup(allowed.operation, head.target, allowed.reach)
        if indirect is not None:
            return LookUp(head, allowed, *indirect)
    return plan_forward(head, allowed, trace)


# Operations whose answer reports every object of the daemon, which a scope cannot narrow
# (as in ownership mode: ownership/operations.py UNAVAILABLE).
_UNSCOPABLE = frozenset({"SystemDataUsage"})
# Prunes, by the kind they delete: the daemon narrows a prune by exact labels only (no names,
# no patterns, no stacks by any other label), and deletes (and names) what it finds, which no
# filtering of the answer can take back. Refused where the reach scopes that kind. (ImagePrune
# and BuildPrune delete images and build cache, which no scope is about.)
_PRUNED_KINDS = {"ContainerPrune": "container", "VolumePrune": "volume", "NetworkPrune": "network"}


def _reach_head(head: RequestHead, allowed: Allowed, trace: Trace | None) -> Refusal | Allowed:
    """What a policy with `objects:` rules refuses of any request it allows, from the head
    alone: `system df` (it lists every container, image and volume with their names and
    labels), a prune of a kind the reach scopes (it deletes and names objects out of it), a
    new container name of hex digits only (it would take a reference to another object's
    short ID: the daemon resolves a name before an ID prefix), a rollback (the previous spec
    is not in the request). In warn or audit mode recorded instead."""
    operation = allowed.operation
    query = head.target.partition("?")[2]
    problem = None
    status = 403
    reach = allowed.reach
    assert reach is not None
    pruned = _PRUNED_KINDS.get(operation)
    if operation in _UNSCOPABLE:
        problem = (
            f"{operation} reports every object of the daemon, which object scopes cannot "
            "narrow: it is not available in a policy with `objects:` rules"
        )
    elif pruned is not None and reach.of(pruned) is not None:
        problem = (
            f"{operation} cannot be narrowed to the {pruned}s the policy's `objects:` rules "
            f"cover (a prune's filters take exact labels only): remove {pruned}s one by one"
        )
    elif operation in ("ContainerCreate", "ContainerRename"):
        problem = hex_name_problem(operation, query, b"")
        status = 400
    else:
        problem = rollback_problem(operation, query)
    if problem is None:
        return allowed
    if status == 400:
        refusal = Refusal(400, f"dockgate: {operation}: {problem}", SCOPE_STAGE, "hex name")
    else:
        refusal = allowed.policy_denial(SCOPE_STAGE, problem)
    return _waive(allowed, refusal, trace, problem)


def _scope(head: RequestHead, allowed: Allowed) -> LookUp | None:
    """A request about one object, allowed only on the objects a scope covers: looked up
    (policy/scoping.py); None when it names no object (creates are judged on their body)."""
    scope, match = allowed.verdict.scope, allowed.verdict.match
    assert scope is not None and match is not None
    path = parse_target(head.target).path
    found = scope_lookup(allowed.operation, match.operation.path, head.target, path, scope)
    if found is None:
        return None
    objects, check = found  # (`dockgate check` explains the look-up: no trace here)
    return LookUp(head, allowed, objects, check)


def _scoped_lookup(step: Step, allowed: Allowed) -> Step:
    """Ownership's look-up of the one object a request is about checks the scope too (a
    policy with both needs both: owned and covered)."""
    scope, match = allowed.verdict.scope, allowed.verdict.match
    reach = allowed.reach
    if reach is None or match is None or not isinstance(step, LookUp):
        return step
    target = step.head.target
    if scope is None:  # an unscoped commit or build: what it reaches must be covered
        found = indirect_lookup(allowed.operation, target, reach)
    else:
        found = scope_lookup(
            allowed.operation, match.operation.path, target, parse_target(target).path, scope
        )
    if found is None or found[0].kind is not step.objects.kind:
        return step
    return replace(step, scope=found[1])


# Narrowed lists that delete what they list (ownership's FILTERED).
_PRUNES = frozenset({"VolumePrune", "NetworkPrune"})


def _own(head: RequestHead, allowed: Allowed, trace: Trace | None) -> RequestHead | Step:
    """Ownership mode (ownership.plan): narrow a list, label a build, refuse, or look up the
    object the request is about."""
    owner, match = allowed.owner, allowed.verdict.match
    assert match is not None
    operation = allowed.operation
    if owner is None:
        # An anonymous caller owns nothing: what ownership would narrow, label or look up is
        # refused; the rest (ping, version, images...) goes on as the policy says.
        if not concerns_objects(operation, match.operation.path):
            return head
        message = (
            f"dockgate: {operation}: ownership mode needs an authenticated caller "
            "(anonymous callers own nothing)"
        )
        return _waived_or(head, allowed, refuse(403, message), trace)
    path = parse_target(head.target).path
    step = ownership_plan(operation, match.operation.path, head.target, path, owner)
    if isinstance(step, str) and (
        (allowed.mode != ENFORCE and operation in FILTERED and operation not in _PRUNES)
        or (allowed.mode == AUDIT and operation == LABELLED_BUILD)
    ):
        # Warn and audit mode narrow no list (a client would see less than it did: the
        # outage a rollout avoids); audit mode labels no build either (modes.py). A prune is
        # narrowed in every mode: pruning another caller's objects cannot be taken back.
        if trace is not None:
            trace.append(("ownership", f"{allowed.mode} mode: target left as it came"))
        return head
    if step is None:
        if trace is not None:
            trace.append(("ownership", f"{owner}: nothing to look up"))
        return head
    if isinstance(step, str):
        try:
            # A list ordered against containers (`before=`) names them: looked up too.
            ordered = list_plan(operation, step)
        except ValueError as exc:
            return refuse(400, f"dockgate: {exc}")
        if trace is not None:
            trace.append(("ownership", f"{owner}: target rewritten to {step}"))
        if ordered is None:
            return with_target(head, step)
        return LookUp(head, allowed, ordered)
    if isinstance(step, Refusal):
        return _waived_or(head, allowed, step, trace)
    if trace is not None:
        trace.append(("ownership", f"{owner}: {step.kind.name} {step.reference!r} looked up"))
    return LookUp(head, allowed, LookUpAll.of_one(step))


def _waive(
    allowed: Allowed, refusal: Refusal, trace: Trace | None, reason: str
) -> Allowed | Refusal:
    """`refusal` in enforce mode; in warn or audit mode the request's facts carrying it as
    would-deny (Allowed.waived), and a trace line under the refusal's stage."""
    waived = allowed.waived(refusal)
    if waived is None:
        return refusal
    if trace is not None:
        trace.append((refusal.stage, f"{waived.mode} mode: would deny, {reason}"))
    return waived


def _waived_or(head: RequestHead, allowed: Allowed, refusal: Refusal, trace: Trace | None) -> Step:
    """`refusal`, or in warn or audit mode the rest of the plan, carrying it: without
    ownership's steps (a refusal of ownership's is about an object that is not the caller's,
    which its label must not be put on: the request goes on as it came)."""
    waived = allowed.waived(refusal)
    if waived is not None and refusal.stage == "ownership":
        waived = replace(waived, owner=None)
    if waived is None:
        return refusal
    if trace is not None:
        trace.append((refusal.stage, f"{allowed.mode} mode: would deny, {refusal.reason}"))
    return plan_forward(head, waived, trace)


def plan_forward(head: RequestHead, allowed: Allowed, trace: Trace | None = None) -> Step:
    """The request is allowed: guardrails and labels as the policy says, then the daemon."""
    policy = allowed.policy
    operation = allowed.operation
    guardrails = policy.guardrails if policy is not None else None
    if allowed.owner is not None and (operation in OWNED_CREATES or operation in REFERENCING):
        return hold_body(head, allowed, guardrails, trace)
    if policy is not None and policy.defaults is not None and operation in DEFAULTED:
        # The policy's defaults are written into the body: held whole, guardrails or not.
        return hold_body(head, allowed, guardrails, trace)
    if allowed.reach is not None and (operation in SCOPED_CREATES or operation in REFERENCING):
        # What the body makes, and the objects it names, must be covered (policy/scoping.py):
        # the objects it names by the policy's reach even when the rule allowing it is not
        # scoped.
        return hold_body(head, allowed, guardrails, trace)
    if guardrails is not None:
        if operation in QUERY_CHECKED:
            try:
                query = head.target.partition("?")[2]
                check_request(guardrails, operation, query, b"", allowed.params)
            except BodyRefused as refused:
                waived = _waive(allowed, allowed.guardrail_refusal(refused), trace, refused.reason)
                if isinstance(waived, Refusal):
                    return waived
                return Forward(head, waived, replayable=not head.has_body)
            if trace is not None:
                trace.append(("guardrails", "query accepted"))
        elif operation in BODY_CHECKED:
            return hold_body(head, allowed, guardrails, trace)
    return Forward(head, allowed, replayable=not head.has_body)


def hold_body(
    head: RequestHead, allowed: Allowed, guardrails: Guardrails | None, trace: Trace | None
) -> Step:
    """Read the body whole, judge it and label it, and only then forward it (with a
    Content-Length): the bytes checked are the bytes the daemon gets."""
    if not head.chunked and (head.content_length or 0) > CHECKED_BODY_LIMIT:
        return too_large(allowed)  # said up front: no need to read it
    if trace is not None:
        trace.append(("body", "read whole to be judged"))
    return HoldBody(head, allowed, guardrails)


def too_large(allowed: Allowed) -> Refusal:
    message = (
        f"dockgate: a {allowed.operation} body over {CHECKED_BODY_LIMIT} bytes cannot be checked"
    )
    return allowed.guardrail_refusal(BodyRefused(413, message), raw=True)


@dataclass(frozen=True, slots=True)
class JudgedBody:
    """A held body that passed: what goes to the daemon, and what must be looked up first."""

    body: bytes  # labelled with its owner in ownership mode
    volumes: list[NamedVolume]  # named volumes, judged on their options (namedvolumes.py)
    named: list[tuple[Kind, str]]  # the objects it names, which must be the caller's
    check_image: bool  # ownership: the image must not carry the caller's own label
    # The request's facts as they go on: in warn or audit mode carrying what the body would
    # have been refused for (Verdict.would_deny); the hold's own otherwise.
    allowed: Allowed
    # A scoped request (policy/scoping.py): the objects the body names, which must exist and
    # be covered by the scope.
    scoped: list[tuple[Kind, str]] = field(default_factory=list)
    # ... and the name a scoped create takes (a container's `/name`, a volume's): held by an
    # object out of scope, the create is refused here (the daemon's answer would name it).
    claims: list[tuple[Kind, str]] = field(default_factory=list)
    # Where the guardrails refuse labels that container bindings name (peer_labels): the
    # image whose labels the new container (or a service's tasks) will also carry, judged
    # with the body's (body/guardrails.py image_peer_label_problem) once looked up.
    peer_image: str | None = None
    # A swarm create in a policy whose reach scopes its kind: a name that could be the start
    # of an existing object's ID (policy/scoping.py id_like_name), refused if it is.
    id_names: list[tuple[Kind, str]] = field(default_factory=list)

    @property
    def needs_daemon(self) -> bool:
        return bool(
            self.volumes
            or self.named
            or self.check_image
            or self.scoped
            or self.claims
            or self.peer_image
            or self.id_names
        )

    @property
    def scope_lookups(self) -> bool:
        """Whether the relay checks scoped references first (relay/steps.py)."""
        return bool(self.scoped or self.claims or self.id_names)


def judge_body(hold: HoldBody, body: bytes, trace: Trace | None = None) -> Refusal | JudgedBody:
    """A held body, whole: the guardrails' judgement, the owner label, the objects it names,
    and what their look-ups would refuse without asking the daemon (refused_before_lookups)."""
    allowed, head = hold.allowed, hold.head
    operation = allowed.operation
    received = body
    volumes: list[NamedVolume] = []
    try:
        # The bound on what checking it may cost (bodycost.py), before the guardrails or
        # ownership parse it (check_request counts again: a millisecond per MiB at most).
        check_body_cost(body)
    except BodyRefused as refused:
        return allowed.guardrail_refusal(refused)
    # The policy's defaults that callers could set themselves, written first: judged with the
    # body (what runs is what is judged); audit mode judges them but forwards the body as it
    # came (modes.py).
    judged_text, early = body_judged(hold, body)
    if allowed.mode != AUDIT:
        body = judged_text
    if hold.guardrails is not None:
        query = head.target.partition("?")[2]
        try:
            volumes = to_look_up(
                check_request(hold.guardrails, operation, query, judged_text, allowed.params)
            )
            if trace is not None:
                trace.append(("guardrails", "body accepted"))
        except BodyRefused as refused:
            waived = _waive(allowed, allowed.guardrail_refusal(refused), trace, refused.reason)
            if isinstance(waived, Refusal):
                return waived
            allowed = waived  # (recorded; its named volumes are not looked up)
    named: list[tuple[Kind, str]] = []
    owner = allowed.owner
    if owner is not None:
        try:
            if operation in OWNED_CREATES and allowed.mode != AUDIT:
                body = with_owner_label(body, operation, owner)
            named = _named_objects(operation, owner, received)
        except (BodyRefused, ValueError, RecursionError) as exc:
            status = exc.status if isinstance(exc, BodyRefused) else 400
            reason = exc.reason if isinstance(exc, BodyRefused) else unreadable(exc)
            refusal = refuse(status, f"dockgate: {operation}: {reason}")
            waived = _waive(allowed, refusal, trace, reason)
            if isinstance(waived, Refusal):
                return waived
            allowed = waived  # (recorded; the objects it names are not looked up)
        # (audit mode looks them up too, to record what enforce would refuse; it pins
        # nothing and makes no volume for the caller: relay/steps.py _check_references)
        if trace is not None:
            trace.append(("ownership", f"labelled for {owner}; names {len(named)} object(s)"))
    defaulted = _with_defaults(hold, allowed, body, early, trace)
    if isinstance(defaulted, Refusal):
        return defaulted
    body, allowed = defaulted
    scoped: list[tuple[Kind, str]] = []
    claims: list[tuple[Kind, str]] = []
    id_names: list[tuple[Kind, str]] = []
    if allowed.reach is not None:
        # The body as it goes to the daemon (an owner label added: labels merge key by key),
        # so that what is judged is the object as it will be created.
        found = _judge_scope(allowed, head, body, trace)
        if isinstance(found, Refusal):
            return found
        allowed, scoped, claims = found
        id_name = id_like_name(operation, body)
        reach = allowed.reach
        if id_name is not None and reach is not None and reach.of(id_name[0].name) is not None:
            id_names.append(id_name)
            if trace is not None:
                trace.append((SCOPE_STAGE, f"the name {id_name[1]!r} must start no ID"))
        if (
            operation == "NetworkCreate"
            and owner is None
            and allowed.mode != AUDIT
            and allowed.verdict.scope is not None
        ):
            body = with_duplicate_check(body)  # (ownership's label adds it already)
    judged = JudgedBody(
        body,
        volumes,
        named,
        owner is not None and operation in IMAGE_CHECKED and allowed.mode != AUDIT,
        allowed,
        scoped,
        claims,
        _peer_image(hold, allowed, body),
        id_names,
    )
    later = refused_before_lookups(allowed, judged)
    if later is None:
        return judged
    carried = allowed.waived(later)
    if carried is None:
        return later
    return JudgedBody(
        body,
        [],
        named,
        check_image=False,
        allowed=carried,
        scoped=scoped,
        claims=claims,
        id_names=id_names,
    )


def _peer_image(hold: HoldBody, allowed: Allowed, body: bytes) -> str | None:
    """The image to look up for the peer_labels guardrail (`JudgedBody.peer_image`): a
    container's or service's create (or update) under guardrails that refuse bound labels,
    unless the guardrails' refusal was already recorded (warn or audit mode)."""
    guardrails = hold.guardrails
    if (
        guardrails is None
        or not guardrails.peer_labels
        or allowed.operation not in IMAGE_CHECKED
        or allowed.verdict.would_deny is not None
    ):
        return None
    try:
        return created_image(allowed.operation, body)
    except (ValueError, RecursionError):
        return None  # (the daemon refuses the body itself)


def _judge_scope(
    allowed: Allowed, head: RequestHead, body: bytes, trace: Trace | None
) -> Refusal | tuple[Allowed, list[tuple[Kind, str]], list[tuple[Kind, str]]]:
    """A body in a policy with `objects:` rules (policy/scoping.py): what a scoped create
    makes (and a scoped service's task containers) must be covered, a new object's name may
    not be hex digits only, and the objects it names are to be looked up (each must exist and
    be covered by the request's reach: Allowed.reach). In warn or audit mode a refusal of
    the policy's is recorded, and nothing named is looked up."""
    scope = allowed.verdict.scope
    reach = allowed.reach
    assert reach is not None
    operation = allowed.operation
    query = head.target.partition("?")[2]
    claims: list[tuple[Kind, str]] = []
    try:
        hex_name = hex_name_problem(operation, "", body) if operation in SCOPED_CREATES else None
        if hex_name is not None:
            refusal = Refusal(400, f"dockgate: {operation}: {hex_name}", SCOPE_STAGE, "hex name")
            waived = _waive(allowed, refusal, trace, hex_name)
            return waived if isinstance(waived, Refusal) else (waived, [], [])
        if scope is not None and operation in SCOPED_CREATES:
            problem = create_problem(scope, operation, query, body) or task_problem(
                scope, operation, body
            )
            if problem is not None:
                refusal = allowed.policy_denial(SCOPE_STAGE, problem)
                waived = _waive(allowed, refusal, trace, problem)
                return waived if isinstance(waived, Refusal) else (waived, [], [])
            if trace is not None:
                trace.append((SCOPE_STAGE, f"what it makes is covered by {scope.describe()}"))
            claims = claimed(operation, query, body)
        named = references(operation, body) if operation in REFERENCING else []
        # Objects of a kind the reach does not scope are not judged (policy/scopes.py).
        named = [(kind, ref) for kind, ref in named if reach.of(kind.name) is not None]
    except (ValueError, RecursionError) as exc:
        message = f"dockgate: {operation}: {unreadable(exc)}"
        return Refusal(400, message, SCOPE_STAGE, "unreadable body")
    if len(named) > MAX_REFERENCES:
        message = f"dockgate: {operation}: a body may name at most {MAX_REFERENCES} objects"
        return Refusal(400, message, SCOPE_STAGE, "too many references")
    if named and trace is not None:
        trace.append((SCOPE_STAGE, f"names {len(named)} object(s), each must be covered"))
    return allowed, named, claims


def body_judged(hold: HoldBody, body: bytes) -> tuple[bytes, Injected | None]:
    """The body as the guardrails judge it: with the policy's defaults that callers could set
    themselves written last (body/defaults.py `judged_part`), and what they wrote; None when
    the body cannot be read to write them (the guardrails then judge it as it came, and
    refuse it; without guardrails, `_with_defaults` does)."""
    policy = hold.allowed.policy
    defaults = policy.defaults if policy is not None else None
    if defaults is None or hold.allowed.operation not in DEFAULTED:
        return body, {}
    try:
        return inject(defaults.judged_part, hold.allowed.operation, body)
    except (ValueError, RecursionError):
        return body, None


def _with_defaults(
    hold: HoldBody, allowed: Allowed, body: bytes, early: Injected | None, trace: Trace | None
) -> Refusal | tuple[bytes, Allowed]:
    """The judged body with the rest of the policy's defaults written last (the operator's own
    cgroup parent and log driver: `operator_part`), and the facts carrying all that was
    written (`early`: what `body_judged` wrote). Audit mode writes nothing and records what it
    would have written. The body is then judged by the guardrails again (the policy file's
    checks make a finding impossible: policy/defaultspec.py); a finding is the gateway's
    refusal, in every mode."""
    policy = allowed.policy
    defaults = policy.defaults if policy is not None else None
    operation = allowed.operation
    if defaults is None or operation not in DEFAULTED:
        return body, allowed
    try:
        if early is None:
            raise BodyError("the body must be one JSON object")  # (refused unless waived)
        written, late = inject(defaults.operator_part, operation, body)
    except (ValueError, RecursionError) as exc:
        message = f"dockgate: {operation}: {unreadable(exc)}"
        return Refusal(400, message, "defaults", "defaults: unreadable body")
    injected = {**early, **late}
    if not injected:
        if trace is not None:
            trace.append(("defaults", "nothing to add: the body sets them all"))
        return body, allowed
    allowed = replace(allowed, injected=injected)
    if allowed.mode == AUDIT:
        if trace is not None:
            trace.append(("defaults", f"audit mode: would add {describe(injected)}"))
        return body, allowed
    if hold.guardrails is not None and allowed.verdict.would_deny is None:
        problem = rejudged(hold.guardrails, operation, written)
        if problem is not None:
            message = f"dockgate: {operation}: the policy's defaults do not pass its guardrails: "
            return Refusal(500, message + problem, "defaults", "defaults: guardrails")
    if trace is not None:
        trace.append(("defaults", f"added {describe(injected)}"))
    return written, allowed


def refused_before_lookups(allowed: Allowed, judged: JudgedBody) -> Refusal | None:
    """What the look-ups of a judged body refuse without asking the daemon, in the order the
    gateway takes them (relay/steps.py: the volumes' guardrails, then ownership's references):
    more named volumes than are looked up (namedvolumes.named_volumes_problem); then, when no
    volume look-up comes first, a create naming the build steps' log driver `none` in
    ownership mode (its `_vouching_image`: the daemon's default is asked only when the body
    names no driver). None: what is left needs the daemon."""
    if len(judged.volumes) > MAX_NAMED_VOLUMES:
        reason = f"a body may use at most {MAX_NAMED_VOLUMES} volumes by name"
        return allowed.guardrail_refusal(BodyRefused(403, reason))
    if judged.volumes or allowed.owner is None or allowed.operation not in IMAGE_CHECKED:
        return None
    try:
        problem = silent_log_problem(allowed.operation, judged.body, None)
    except ValueError:  # (read whole already by judge_body: not reached)
        return None
    if problem is None:
        return None
    return refuse(403, f"dockgate: {allowed.operation}: {problem}")


def _named_objects(operation: str, owner: str, body: bytes) -> list[tuple[Kind, str]]:
    """Ownership: the objects the body names (to look up), after refusing a list given twice
    (body/repeated.py), another owner's label (ownership/labels.py) and new objects with
    hex-only names. ValueError for a body that cannot be read here."""
    if operation in OWNED_CREATES or operation in REFERENCING:
        repeated = repeated_list(body)
        if repeated is not None:
            raise BodyRefused(400, f"{repeated} is given twice (Go would merge the two lists)")
        # Labels the daemon takes from deeper in the body (ownership/labels.py).
        where = foreign_owner_label(body, owner)
        if where is not None:
            raise BodyRefused(403, f"an owner label ({OWNER_LABEL}) that is not yours at {where}")
    problem = hex_name_problem(operation, "", body)
    if problem is not None:
        raise BodyRefused(400, problem)
    if operation not in REFERENCING:
        return []
    named = references(operation, body)
    if len(named) > MAX_REFERENCES:
        raise BodyRefused(400, f"a body may name at most {MAX_REFERENCES} objects")
    return named


def unreadable(exc: ValueError | RecursionError) -> str:
    """The reason for a 400 about a body that cannot be read here."""
    if isinstance(exc, RecursionError):
        return "the body is nested too deeply"
    return str(exc)


class Answer(enum.Enum):
    """What happens to the daemon's answer."""

    RELAY = "relay"  # as it comes
    REWRITE_STREAM = "rewrite stream"  # the event stream, each event redacted on its way
    HOLD = "hold"  # read whole, checked and rewritten, then sent with a new Content-Length


def scoped_answer_rewritten(allowed: Allowed, status: int) -> bool:
    """Whether this answer, about one object a scope covers, is rewritten not to name objects
    out of the scope (policy/scopeanswers.py; enforce mode only, as lists)."""
    return (
        status == 200
        and allowed.verdict.scope is not None
        and allowed.mode == ENFORCE
        and allowed.operation in SCOPED_ANSWERS
    )


def answer_handling(allowed: Allowed, status: int, *, mounts_checked: bool = False) -> Answer:
    """Whether the answer is read whole before it goes out: to be redacted, or, in ownership
    mode, so that it shows nothing of another caller's objects. `mounts_checked`: the answer is
    to a ContainerCreate whose new container is checked, its mounts in ownership mode or its
    labels under the peer_labels guardrail (held whatever its status: a refused create's
    volumes are removed; relay/steps.py MountCheck)."""
    if mounts_checked and allowed.mode == ENFORCE:
        return Answer.HOLD
    redaction = allowed.redaction
    scoped = filters_answer(allowed) is not None  # (None in warn and audit mode)
    scoped = scoped or scoped_answer_rewritten(allowed, status)
    if redaction is None and not allowed.ownership and not scoped:
        return Answer.RELAY
    if allowed.mode != ENFORCE:
        # Warn and audit mode rewrite no answer: nothing redacted (Allowed.redaction), no
        # answer scrubbed of other callers' objects, no create's mounts checked after it.
        return Answer.RELAY
    operation = allowed.operation
    if scoped and status == 200:
        # A list, or the event stream, filtered to the scope (policy/scopelists.py); redacted
        # too where the policy says.
        return Answer.REWRITE_STREAM if operation in REDACTED_STREAMS else Answer.HOLD
    if redaction is not None and status == 200 and operation in REDACTED_STREAMS:
        return Answer.REWRITE_STREAM
    if scoped_answer_rewritten(allowed, status):
        return Answer.HOLD
    # 201: VolumeCreate answers with the volume, an existing one too (its labels, options).
    if redaction is not None and status in (200, 201) and operation in REDACTED_OPERATIONS:
        return Answer.HOLD
    if allowed.ownership and (status, operation) in SCRUBBED_ANSWERS:
        return Answer.HOLD
    if allowed.owner is not None and (
        (status, operation) in CHECKED_ANSWERS or (status, operation) == VOUCHED_LIST
    ):
        return Answer.HOLD
    return Answer.RELAY
