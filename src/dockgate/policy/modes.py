"""Rollout modes: `enforce` (the default), `warn` and `audit`, per policy or per binding.

In `warn` and `audit` mode a refusal that is the policy's own (its rules and `read_only`, its
guardrails on the query and the body, ownership, redaction's filters) is not answered: the
request goes on to the daemon as if that step had allowed it, and the refusal it would have had
is carried on the request's `Verdict` as `would_deny`, for the access log (`warn:POLICY:WHY`),
the audit record and the `dockgate_would_deny_total` metric. `waive` is the one place that
tells a policy's refusal from the gateway's own and makes the record of it.

What is not the policy's is enforced in every mode, because no policy can make it safe to pass
on (docs/policy.md, "Rollout modes"): authentication and the throttle, the source lists,
bindings, the browser guard, upgrades of operations that cannot switch protocols, malformed
requests and targets (400), bodies the daemon would read differently from the gateway (form
bodies, a list given twice, a body that is not one JSON value: status 400), size and cost
bounds (413), the budget of held bodies (503), timeouts and loops; and requests the route table
cannot place, which no later step (guardrails, ownership) could judge either.

Beyond refusals, the modes differ in what the policy still does to a request that passes:

- `warn`: what does not refuse still applies, so that switching to `enforce` later finds the
  objects in order: owner labels are added to creates and builds. Answers are not rewritten
  (no redaction, no list narrowed to the caller's objects, no answer scrubbed): the audit
  record's `would_hide` says what enforce would have hidden.
- `audit`: the request reaches the daemon as it came (no owner labels either), and every
  request's audit record carries the mode and the decision it would have had.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Final, Literal

from dockgate.refusal import Refusal

if TYPE_CHECKING:
    from dockgate.policy.gatekeeper import Verdict

Mode = Literal["enforce", "warn", "audit"]
ENFORCE: Final = "enforce"
WARN: Final = "warn"
AUDIT: Final = "audit"
MODES: Final[tuple[Mode, ...]] = (ENFORCE, WARN, AUDIT)

# The steps whose refusals are the policy's: what its author wrote (rules, read_only,
# guardrails, ownership, redaction, object scopes), and so what a rollout mode may record
# instead of apply.
POLICY_STAGES: Final = frozenset({"policy", "guardrails", "ownership", "redaction", "scope"})
# Of their statuses, the decisions: 403 denied, and ownership's answers as if an object were
# absent (404, and 409 for a name taken by another caller's object). A 400 (a body or filter
# that cannot be read as the daemon reads it) and a 413 (over a size or cost bound) protect the
# gateway's reading of the request, not the policy's choice: enforced in every mode.
WAIVED_STATUSES: Final = frozenset({403, 404, 409})


def is_policys(refusal: Refusal) -> bool:
    """Whether `refusal` is one a rollout mode may record instead of answer."""
    return refusal.stage in POLICY_STAGES and refusal.status in WAIVED_STATUSES


def waive(verdict: Verdict, refusal: Refusal, mode: str) -> Verdict | None:
    """`verdict`, allowed, carrying `refusal` as what enforce would have answered; None when
    `mode` is enforce or the refusal is not the policy's (it is then answered as ever). Only
    the first refusal is kept: it is the one enforce answers with."""
    if mode == ENFORCE or not is_policys(refusal):
        return None
    if verdict.would_deny is not None:
        return verdict if verdict.refusal is None else replace(verdict, refusal=None)
    # The access log's label: `warn:POLICY:rule-3` (the rule), `warn:POLICY:guardrails` (the
    # step, whose reason names values the client chose and would make labels unbounded).
    why = refusal.reason if refusal.stage == "policy" else refusal.stage
    label = f"{mode}:{verdict.policy or '-'}:{why.replace(' ', '-')}"
    return replace(verdict, refusal=None, would_deny=refusal, label=label)


def metric_reason(refusal: Refusal) -> str:
    """The `reason` label of dockgate_would_deny_total: the rule (`rule 3`, `read-only`, `no
    rule allows it`) for the rules' refusals, the step (`guardrails`, `ownership`,
    `redaction`) for the others, whose reasons name what the client sent (unbounded)."""
    return refusal.reason if refusal.stage == "policy" else refusal.stage


def startup_warnings(
    policies: dict[str, str], bindings: list[tuple[int, str, str]], *, audited: bool
) -> list[str]:
    """One line per policy (name -> mode) and binding (number, policy, mode) not in enforce
    mode, for stderr at start and on reload (each printed after `dockgate: warning: `)."""
    lines = []
    for name, mode in policies.items():
        if mode != ENFORCE:
            lines.append(f"policy {name!r} is in {mode} mode: {_what(mode)}")
    for number, policy, mode in bindings:
        if mode == ENFORCE:
            continue
        lines.append(f"binding {number} (policy {policy!r}) is in {mode} mode: {_what(mode)}")
    if lines and not audited:
        lines.append(
            "--audit-log is off: would-deny decisions are recorded only in "
            "the access log and the dockgate_would_deny_total metric"
        )
    return lines


def _what(mode: str) -> str:
    # (Its rate and concurrency limits are not decisions about a request but about load: they
    # apply in every mode, docs/policy.md "Rollout modes".)
    if mode == WARN:
        return "its refusals are recorded, not applied (its limits still are)"
    return "its refusals are not applied (its limits still are); every request is recorded"
