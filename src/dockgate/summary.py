"""What a policy allows, in one line, printed at start: the first thing to look at when a
client gets 403 (`dockgate check` then explains one request)."""

from __future__ import annotations

from dockgate.policy.rules import Policy, PolicySet
from dockgate.routes import OPERATIONS, RouteMatch


def policy_summary(policy: Policy) -> str:
    """`policy "environment": read containers, events, ping, version; write: none`.

    Per section (routes.py), split into operations that only read and those that change
    state; a section where only some of them are allowed is marked `(some)`. Each operation is
    decided as a request to its path template would be (rules with `paths:` may decide real
    paths otherwise, hence "some" can be approximate for them).
    """
    allowed: dict[tuple[str, bool], list[bool]] = {}
    for op in OPERATIONS.values():
        decision = policy.decide(op.method, RouteMatch(op, None, {}), op.path)
        allowed.setdefault((op.section, op.writes), []).append(decision.allowed)
    parts = []
    for writes, label in ((False, "read"), (True, "write")):
        sections = []
        for (section, op_writes), answers in sorted(allowed.items()):
            if op_writes != writes or not any(answers):
                continue
            sections.append(section if all(answers) else f"{section} (some)")
        parts.append(f"{label}: {', '.join(sections) if sections else 'none'}")
    extras = []
    if policy.guardrails is not None:
        extras.append("guardrails on")
    if policy.ownership:
        extras.append("ownership")
    tail = f" [{', '.join(extras)}]" if extras else ""
    return f'policy "{policy.name}": {"; ".join(parts)}{tail}'


def summaries(policies: PolicySet) -> list[str]:
    """One line per policy in force: the default one, or every bound one."""
    if policies.bindings is None:
        return [policy_summary(policies.policies[policies.default])]
    return [policy_summary(policy) for policy in policies.policies.values()]
