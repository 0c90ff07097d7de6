"""What a policy allows: per section of the API, whether its reads and its writes are allowed
(all, some, none). One computation, two views: the one line printed at start (the first thing to
look at when a client gets 403; `dockgate check` then explains one request) and the table of
`dockgate doctor` (startup/doctor.py)."""

from __future__ import annotations

from dataclasses import dataclass

from dockgate.api.routes import OPERATIONS, RouteMatch
from dockgate.policy.rules import Policy, PolicySet

ALL = "all"
SOME = "some"
NONE = "none"
NO_OPERATION = "-"  # the section has no operation of this kind (`ping` never writes)


@dataclass(frozen=True, slots=True)
class SectionAccess:
    """One section of api/routes.py: how many of its reading and writing operations the policy
    allows, as ALL, SOME, NONE or NO_OPERATION."""

    section: str
    read: str
    write: str


def _verdict(answers: list[bool]) -> str:
    if not answers:
        return NO_OPERATION
    return ALL if all(answers) else SOME if any(answers) else NONE


def section_access(policy: Policy) -> list[SectionAccess]:
    """Every section, sorted by name. Each operation is decided as a request to its path
    template would be (rules with `paths:` may decide real paths otherwise, hence "some" can be
    approximate for them); a read-only policy's writes are all denied (rules.py)."""
    allowed: dict[tuple[str, bool], list[bool]] = {}
    sections: set[str] = set()
    for op in OPERATIONS.values():
        decision = policy.decide(op.method, RouteMatch(op, None, {}), op.path)
        allowed.setdefault((op.section, op.writes), []).append(decision.allowed)
        sections.add(op.section)
    return [
        SectionAccess(
            section,
            _verdict(allowed.get((section, False), [])),
            _verdict(allowed.get((section, True), [])),
        )
        for section in sorted(sections)
    ]


def policy_summary(policy: Policy) -> str:
    """`policy "environment": read containers, events, ping, version; write: none`.

    A section where only some of its operations (of that kind) are allowed is marked `(some)`.
    """
    access = section_access(policy)
    parts = []
    for label in ("read", "write"):
        sections = []
        for row in access:
            verdict = row.read if label == "read" else row.write
            if verdict in (ALL, SOME):
                sections.append(row.section if verdict == ALL else f"{row.section} (some)")
        parts.append(f"{label}: {', '.join(sections) if sections else 'none'}")
    extras = []
    if policy.guardrails is not None:
        extras.append("guardrails on")
    if policy.ownership:
        extras.append("ownership")
    if policy.limits is not None:
        extras.append(f"limited to {policy.limits.describe()} per caller and worker")
    tail = f" [{', '.join(extras)}]" if extras else ""
    return f'policy "{policy.name}": {"; ".join(parts)}{tail}'


def summaries(policies: PolicySet) -> list[str]:
    """One line per policy in force: the default one, or every bound one."""
    if policies.bindings is None:
        return [policy_summary(policies.policies[policies.default])]
    return [policy_summary(policy) for policy in policies.policies.values()]
