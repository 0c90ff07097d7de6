"""`dockgate check`: how the gateway would decide one request, step by step.

Nothing here decides anything: the request head is parsed by the gateway's own reader from the
bytes a client would send, admitted by the same `Admissions` (source lists, credentials asked
for, binding, the policy's rules, the browser guard), and planned by the same `policy/plan.py`
(body shape, redaction filters, ownership, guardrails on the query and on the body given with
`--body`). What only the daemon can tell (who owns an object a request names, a named volume's
options) is said, not guessed: exit status 3.

A policy (or binding) in warn or audit mode (policy/modes.py): check says what the gateway does,
forward, with the refusal it records (`warn: would deny, 403: ...`), and exits 0.

Exit status: 0 allow, 1 deny, 3 not decided by what check was given: a look-up in the daemon
(see the `lookup:` lines: ownership, named volumes, object scopes), or a body the
guardrails judge that `--body` did not give.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from dockgate.addresses import Address
from dockgate.api.routes import RouteMatch
from dockgate.auth.authenticator import Authenticator
from dockgate.auth.identity import Identity
from dockgate.auth.sourceaddr import UNIX_SOURCE, AddressList
from dockgate.auth.throttle import FailureThrottle, ThrottleSettings
from dockgate.body.guardrails import BODY_CHECKED, QUERY_CHECKED, explain_request
from dockgate.http.errors import ClientProtocolError, describe_error
from dockgate.http.request import RequestHead, RequestReader, with_target, without_body
from dockgate.ownership.lookup import Found, LookupError_, Unresolved
from dockgate.ownership.operations import SILENT_LOG_DRIVER, silent_log_problem
from dockgate.ownership.scopefind import judge_scoped
from dockgate.policy.admission import Admission, Admissions, ConnectionFacts
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.limits import caller_key, is_stream
from dockgate.policy.modes import ENFORCE
from dockgate.policy.plan import (
    Allowed,
    Answer,
    DrainBody,
    Forward,
    HoldBody,
    JudgedBody,
    LookUp,
    Step,
    Trace,
    answer_handling,
    body_judged,
    judge_body,
    judge_drained,
    plan_admitted,
    plan_forward,
    plan_request,
)
from dockgate.policy.rules import Policy, PolicySet, Rule
from dockgate.refusal import Refusal

# 3: not decided by what check was given: a look-up in the daemon, or a body not given.
ALLOW, DENY, USAGE, UNDECIDED = 0, 1, 2, 3
# Held operations that current clients send without a body: judged as sent, without --body.
BODYLESS = frozenset({"ContainerStart"})
# Large enough for any head a test or an operator writes; the gateway's own limit is an option.
_MAX_HEAD = 1 << 20


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """What `dockgate check` was asked: the request as a client would send it, and who sends it."""

    method: str
    target: str
    caller: Identity
    source: str
    host: str | None = None
    origin: str | None = None
    upgrade: bool = False
    headers: tuple[str, ...] = ()  # extra "Name: value" lines
    body: bytes | None = None
    # The gateway asks for credentials (serve --htpasswd/--tokens): an anonymous caller not
    # bound as such is answered 401, as the gateway does.
    credentials_required: bool = False
    # The listener speaks TLS (serve --tls-cert): the gateway's own origin is https://HOST.
    tls: bool = False
    # --upstream: the daemon to ask the look-up of a scoped request about one object (read
    # only: lists and inspects); None: such a request is "decided by a look-up" (exit 3).
    upstream: Address | None = None


def request_bytes(request: CheckRequest) -> bytes:
    """The bytes of the request head (and body) a client would send. Without --host, an
    HTTP/1.0 request without a Host header (HTTP/1.1 requires one)."""
    version = "HTTP/1.1" if request.host is not None else "HTTP/1.0"
    lines = [f"{request.method} {request.target} {version}"]
    if request.host is not None:
        lines.append(f"Host: {request.host}")
    if request.origin is not None:
        lines.append(f"Origin: {request.origin}")
    if request.upgrade:
        lines += ["Upgrade: tcp", "Connection: Upgrade"]
    lines += request.headers
    body = request.body
    if body is not None:
        named = {line.partition(":")[0].strip().lower() for line in request.headers}
        if "content-type" not in named:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def parse_head(raw: bytes) -> RequestHead:
    """ClientProtocolError as the gateway's reader raises it (answered 400 there)."""
    for event in RequestReader(_MAX_HEAD).feed(raw):
        if isinstance(event, RequestHead):
            return event
    raise ClientProtocolError("the request head is not complete")


def admissions_for(
    policies: PolicySet, *, credentials_required: bool, tls: bool = False
) -> Admissions:
    authenticator = Authenticator.from_files(None, None)
    if credentials_required:
        authenticator = _RequiredAuthenticator()
    gatekeeper = Gatekeeper(policies, authenticated=credentials_required, tls=tls)
    throttle = FailureThrottle(ThrottleSettings())
    return Admissions(policies, gatekeeper, authenticator, throttle, AddressList())


class _RequiredAuthenticator(Authenticator):
    """An authenticator that asks for credentials and knows none: `check` never sends any (the
    caller is given with --as), so only the question "are credentials required?" is asked."""

    def __init__(self) -> None:
        super().__init__(None, None)

    @property
    def required(self) -> bool:
        return True


def run_check(request: CheckRequest, policies: PolicySet, out: list[str]) -> int:
    """Decide `request` as the gateway would, writing the explanation lines to `out`."""
    caller = request.caller
    out.append(f"request:   {request.method} {request.target}")
    out.append(f"caller:    {caller.describe()} from {request.source}")
    try:
        head = parse_head(request_bytes(request))
    except ClientProtocolError as exc:
        return _decide(out, Refusal(400, f"dockgate: {exc.message}", "http", "malformed"))
    admissions = admissions_for(
        policies, credentials_required=request.credentials_required, tls=request.tls
    )
    admission = admit_as(admissions, head, caller, request.source)
    _explain_admission(out, policies, admission, head, request.source)
    _explain_query(out, admission, head)
    _explain_limits(out, admission, head, request.source)
    trace: Trace = []
    step: Step = plan_request(head, admission, policies.owners, trace)
    body = request.body or b""
    # A look-up the gateway does before the rest (without --upstream, taken to pass): the
    # decision is then an allow only "if the look-ups say so".
    pending_lookup: str | None = None
    while True:
        _flush(out, trace)
        if isinstance(step, Refusal):
            return _decide(out, step)
        if isinstance(step, DrainBody):
            refusal = judge_drained(step.allowed, body)
            if refusal is not None:
                return _decide(out, refusal)
            step = plan_admitted(without_body(step.head), step.allowed, trace)
            continue
        if isinstance(step, LookUp):
            objects = step.objects
            names = ", ".join(repr(name) for name in objects.references)
            if step.scope is not None and request.upstream is not None:
                asked = _ask_scoped(out, step, request.upstream)
                if isinstance(asked, int):
                    return asked
                step = asked
                continue
            if step.scope is not None:
                _explain_scoped_lookup(out, step)
                # The gateway goes on with the pinned request once the object is found
                # covered: a whole-spec update's body is then judged (it must leave the
                # object covered), which may refuse it whatever the look-up finds.
                after = plan_forward(step.head, step.allowed, trace)
                if isinstance(after, HoldBody):
                    pending_lookup = step.allowed.verdict.label
                    step = after
                    continue
            else:
                out.append(
                    f"lookup:    the daemon is asked whose {objects.kind.name} {names} is: the "
                    f"caller's goes on, pinned to its full ID; any other is answered "
                    f"{objects.status} as if it did not exist"
                )
            return _decide_by_lookup(out, step.allowed.verdict.label)
        if isinstance(step, HoldBody):
            if request.body is None and step.allowed.operation not in BODYLESS:
                # The head is allowed; what decides now is the body, which was not given.
                out.append(
                    f"guardrails: {step.allowed.operation} bodies are checked; give one with "
                    "--body FILE"
                )
                # Not an allow: the gateway judges the body it gets (none is a 400 for most).
                out.append(
                    f"decision:  allow ({step.allowed.verdict.label}) if the body passes, else deny"
                )
                return UNDECIDED
            _explain_guardrails(out, step, body)
            judged = judge_body(step, body, trace)
            _flush(out, trace)
            if isinstance(judged, Refusal):
                return _decide(out, judged)
            if judged.needs_daemon:
                _explain_lookups(out, step.allowed, judged)
                return _decide_by_lookup(out, step.allowed.verdict.label)
            if pending_lookup is not None:
                return _decide_by_lookup(out, pending_lookup)
            step = Forward(step.head, step.allowed, replayable=False)
            continue
        assert isinstance(step, Forward)
        _explain_would_deny(out, step.allowed)
        answer = answer_handling(step.allowed, 200)
        if answer is not Answer.RELAY:
            out.append(f"answer:    {answer.value} (a 200 answer)")
        if step.head.target != head.target:
            out.append(f"forwarded: {step.head.method} {step.head.target}")
        out.append(f"decision:  allow ({step.allowed.verdict.label})")
        return ALLOW


def admit_as(admissions: Admissions, head: RequestHead, caller: Identity, source: str) -> Admission:
    """A caller named by --as is taken as authenticated the way it says; an anonymous or
    certificate caller goes through `admit` itself (no Authorization header is sent). (Also
    `dockgate learn --policy`'s, policy/learndiff.py.)"""
    if caller.method in ("basic", "token"):
        return admissions.judge(head, caller, source)
    facts = ConnectionFacts(source, source)
    if caller.method == "certificate":
        facts.certificate = caller
    elif caller.method in ("container", "process"):
        # a unix-socket peer (cli.py --as container:NAME, process:UID): on the unix socket
        facts = ConnectionFacts(UNIX_SOURCE, UNIX_SOURCE)
        facts.caller = caller
    admitted = admissions.admit(head, facts, time.time())
    assert isinstance(admitted, Admission)  # no password to check: never pending
    return admitted


def _explain_admission(
    out: list[str],
    policies: PolicySet,
    admission: Admission,
    head: RequestHead,
    source: str,
) -> None:
    verdict = admission.verdict
    if policies.bindings is not None and admission.policy is not None:
        binding = policies.binding_for(admission.identity, source)
        if binding is not None:
            where = f" (line {binding.line})" if binding.line else ""
            out.append(f"binding:   {binding.number}{where} -> policy {binding.policy}")
    match = verdict.match
    if match is not None:
        op = match.operation
        kind = "can change state" if op.writes else "read-only"
        out.append(f"operation: {op.name} (section {op.section}, {kind}, {op.method} {op.path})")
    elif admission.policy is not None:
        out.append("operation: unknown (the daemon's router would not route it)")
    policy = admission.policy
    if policy is None:
        return
    basis = f"; {policy.basis}" if policy.basis else ""
    out.append(f"policy:    {policy.name} (from {policies.source}{basis})")
    if policy.mode != ENFORCE:
        out.append(
            f"mode:      {policy.mode}: the policy's refusals are recorded (would deny), "
            "not answered"
        )
    if match is not None or verdict.status == 403:
        _explain_rules(out, policy, head, match)
    if verdict.allowed and verdict.scope is not None:
        out.append(f"scope:     only on the objects covered by {verdict.scope.describe()}")


def _explain_rules(
    out: list[str], policy: Policy, head: RequestHead, match: RouteMatch | None
) -> None:
    path = head.target.partition("?")[0]
    for rule, matched in policy.explain(head.method, match, path):
        mark = "matches" if matched else "-"
        what = f"[{rule.note}] " if rule.note else (f"(line {rule.line}) " if rule.line else "")
        out.append(
            f"  rule {rule.number:>3} {rule.effect:<5} {what}{describe_matcher(rule)}  {mark}"
        )


def _explain_limits(out: list[str], admission: Admission, head: RequestHead, source: str) -> None:
    """A policy's limits (policy/limits.py): what this caller is limited to, and what this
    request would spend. What the caller has spent is the gateway's live state, which a check
    cannot know: the request may still be answered 429 there."""
    verdict, policy = admission.verdict, admission.policy
    if not verdict.allowed or policy is None or policy.limits is None:
        return
    limits = policy.limits
    operation = verdict.operation
    stream = is_stream(operation, head.target.partition("?")[2])
    spends = []
    if limits.rate is not None:
        cost = limits.cost(operation)
        spends.append(f"costs {cost} token{'s' if cost != 1 else ''}")
    if stream and limits.streams is not None:
        spends.append("holds a stream slot while open")
    elif not stream and limits.concurrent is not None:
        spends.append("holds a request slot until answered")
    kind = "a stream" if stream else "a request"
    out.append(
        f"limits:    limited to {limits.describe()}, per caller "
        f"({caller_key(admission.identity, source)}, each worker)"
    )
    out.append(
        f"           this request is {kind}"
        + (f": {', '.join(spends)}" if spends else "")
        + "; over a limit the gateway answers 429 with Retry-After (live state, not known here)"
    )


def _explain_query(out: list[str], admission: Admission, head: RequestHead) -> None:
    """The guardrails of an allowed request: off, or each check of its query parameters."""
    verdict, policy = admission.verdict, admission.policy
    operation = verdict.operation
    if not verdict.allowed or policy is None:
        return
    if operation not in BODY_CHECKED and operation not in QUERY_CHECKED:
        return
    if policy.guardrails is None:
        out.append("guardrails: off in this policy (bodies are not checked)")
        return
    if operation in QUERY_CHECKED:
        query = head.target.partition("?")[2]
        params = verdict.match.params if verdict.match is not None else {}
        for name, problem in explain_request(policy.guardrails, operation, query, b"", params):
            out.append(
                f"  guardrail {name:<12} {'ok' if problem is None else 'DENIES: ' + problem}"
            )


def _explain_guardrails(out: list[str], hold: HoldBody, body: bytes) -> None:
    """Each guardrail check of the body, for the reader (judge_body decides)."""
    guardrails = hold.guardrails
    if guardrails is None:
        return
    query = hold.head.target.partition("?")[2]
    operation = hold.allowed.operation
    # (with the policy's defaults that are judged with it: plan.body_judged)
    judged = body_judged(hold, body)[0]
    found = explain_request(guardrails, operation, query, judged, hold.allowed.params)
    out.extend(_guardrail_lines(found))


def _guardrail_lines(found: list[tuple[str, str | None]]) -> list[str]:
    return [
        f"  guardrail {name:<12} {'ok' if problem is None else 'DENIES: ' + problem}"
        for name, problem in found
    ]


def _explain_scoped_lookup(out: list[str], step: LookUp) -> None:
    """A request about one object allowed only within a scope (policy/scoping.py)."""
    check, objects = step.scope, step.objects
    assert check is not None
    owned = " and the caller's" if step.allowed.owner is not None else ""
    out.append(
        f"lookup:    the daemon is asked for {objects.kind.name} {objects.references[0]!r} "
        f"among the objects covered by {check.scope.describe()}: covered{owned}, it goes on "
        "pinned to its full ID; otherwise it is answered 404 as if it did not exist"
    )
    if check.renamed is not None:
        out.append(f"lookup:    its new name {check.renamed!r} must be covered too")


def _ask_scoped(out: list[str], step: LookUp, upstream: Address) -> Step | int:
    """`--upstream`: the scoped look-up done as the gateway does it (scopefind.judge_scoped),
    and the step the gateway takes next; an exit status when the daemon cannot be asked."""
    check, objects, allowed = step.scope, step.objects, step.allowed
    assert check is not None
    reference = objects.references[0]
    try:
        judged = asyncio.run(judge_scoped(upstream, objects.kind, reference, check, allowed.owner))
    except Unresolved as exc:
        return _decide(out, allowed.unresolved(str(exc)))
    except (LookupError_, OSError) as exc:
        out.append(f"lookup:    the daemon could not be asked: {describe_error(exc)}")
        return USAGE
    refusal = None
    if isinstance(judged, str):
        refusal = allowed.policy_denial("scope", judged)
    elif isinstance(judged, Refusal):
        refusal = judged
    if refusal is not None:
        out.append(
            f"lookup:    {objects.kind.name} {reference!r}: not covered by "
            f"{check.scope.describe()} (or absent)"
        )
        waived = allowed.waived(refusal)
        if waived is None:
            return refusal
        out.append(f"{waived.mode + ':':<10} would deny, {refusal.status}: {refusal.message}")
        return plan_forward(step.head, replace(waived, owner=None))
    assert isinstance(judged, Found)
    rule = check.scope.covering_rule(judged.labels, judged.name)
    out.append(
        f"lookup:    {objects.kind.name} {reference!r} is {judged.full_id}, covered by rule "
        f"{rule}: pinned to its full ID"
    )
    head = with_target(step.head, objects.pin({reference: judged.full_id}))
    return plan_forward(head, allowed)


def _explain_lookups(out: list[str], allowed: Allowed, judged: JudgedBody) -> None:
    for volume in judged.volumes:
        out.append(f"lookup:    volume {volume.name!r}: its options, judged by the guardrails")
    if judged.check_image and _names_no_log_driver(allowed.operation, judged.body):
        out.append(
            f"lookup:    the daemon's default log driver (the body names none) must not be "
            f"{SILENT_LOG_DRIVER!r}"
        )
    for kind, reference in judged.scoped:
        out.append(
            f"lookup:    {kind.name} {reference!r} must exist and be covered by the scope "
            "(else 403, as if it did not exist)"
        )
    for kind, reference in judged.claims:
        out.append(
            f"lookup:    the {kind.name} name {reference!r} must not be held by an object out "
            "of the scope (else 409)"
        )
    for kind, name in judged.id_names:
        out.append(
            f"lookup:    the {kind.name} name {name!r} must not be the start of an existing "
            f"{kind.name}'s ID (else 400)"
        )
    for kind, reference in judged.named:
        out.append(f"lookup:    {kind.name} {reference!r} must be the caller's")
    if judged.check_image:
        out.append("lookup:    the image must not carry the caller's own owner label")
    if judged.peer_image is not None:
        out.append(
            f"lookup:    the labels of image {judged.peer_image!r}, which the container gets "
            "where the body sets none, must not make it a caller a container binding names"
        )


def _names_no_log_driver(operation: str, body: bytes) -> bool:
    """Whether the gateway asks the daemon for its default log driver (ownership mode: a
    create that names none gets it, refused when it is the build steps' `none`)."""
    try:
        return silent_log_problem(operation, body, SILENT_LOG_DRIVER) is not None
    except ValueError:
        return False


def _explain_would_deny(out: list[str], allowed: Allowed) -> None:
    """Warn or audit mode: the gateway forwards the request, and records this (modes.py)."""
    refusal = allowed.verdict.would_deny
    if refusal is not None:
        out.append(f"{allowed.mode + ':':<10} would deny, {refusal.status}: {refusal.message}")
    hidden = allowed.would_hide
    if hidden:
        out.append(f"{allowed.mode + ':':<10} would hide {', '.join(hidden)} of the answer")


def _flush(out: list[str], trace: Trace) -> None:
    out.extend(f"  {step:<10} {finding}" for step, finding in trace)
    trace.clear()


def _decide(out: list[str], refusal: Refusal) -> int:
    out.append(f"decision:  deny, {refusal.status}: {refusal.message}")
    return DENY


def _decide_by_lookup(out: list[str], label: str) -> int:
    out.append(f"decision:  allow ({label}) if the look-ups above say so, else deny")
    return UNDECIDED


def describe_matcher(rule: Rule) -> str:
    m = rule.matcher
    parts = []
    if m.unknown:
        parts.append("unknown")
    for name in ("sections", "operations", "methods"):
        value = getattr(m, name)
        if value is not None:
            shown = ",".join(sorted(value))
            parts.append(f"{name}={shown if len(shown) < 60 else shown[:57] + '...'}")
    if m.paths is not None:
        parts.append("paths=" + ",".join(p.pattern for p in m.paths))
    if m.objects is not None:
        parts.append(f"objects=({m.objects.text})")
    return " ".join(parts)
