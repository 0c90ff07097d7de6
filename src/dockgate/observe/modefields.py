"""What a rollout mode adds to an audit record (policy/modes.py): the mode, the refusal that
enforce would have answered (`would_deny`), and what enforce would have hidden of the answer
(`would_hide`). Nothing is added for a policy in enforce mode: its records stay as they were."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from dockgate.policy.modes import ENFORCE

if TYPE_CHECKING:
    from dockgate.policy.gatekeeper import Verdict
    from dockgate.policy.plan import Allowed
    from dockgate.policy.rules import Policy


class ModeFields(TypedDict, total=False):
    """`AuditRecord`'s keyword arguments."""

    mode: str
    would_deny: dict[str, object]  # (audit.Details)
    would_hide: list[str]


def mode_fields(policy: Policy | None, verdict: Verdict, allowed: Allowed | None) -> ModeFields:
    fields: ModeFields = {}
    if policy is None or policy.mode == ENFORCE:
        return fields
    fields["mode"] = policy.mode
    refusal = verdict.would_deny
    if refusal is not None:
        fields["would_deny"] = {
            "status": refusal.status,
            "stage": refusal.stage,
            "reason": refusal.reason,
            "message": refusal.message,
        }
    if allowed is not None:
        hidden = allowed.would_hide
        if hidden:
            fields["would_hide"] = hidden
    return fields
