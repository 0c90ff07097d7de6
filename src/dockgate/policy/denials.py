"""The message of a policy denial, saying what would allow the request: for the environment
policy the variables (`needs POST=1`), for a policy file the rule that denied it, or that no
rule allows it and what rule would."""

from __future__ import annotations

from dockgate.api.routes import Operation
from dockgate.policy.rules import DENY, Decision, Policy, Rule
from dockgate.policy.tecnativa import SECTION_VARIABLES, missing_variable_hint

# First path segment of an operation -> the variable that opens it (tecnativa.py).
_SECTION_VARIABLE = {segment: name for name, (segment, _) in SECTION_VARIABLES.items()}
# The method switch a write needs: a GET or HEAD that writes (attach over WebSocket) needs
# POST=1, as tecnativa.py builds the policy.
_METHOD_VARIABLE = {"POST": "POST", "GET": "POST", "HEAD": "POST", "DELETE": "DELETE", "PUT": "PUT"}


def denial_message(
    policy: Policy,
    decision: Decision,
    subject: str,
    operation: Operation | None,
    *,
    environment: bool,
) -> str:
    """`subject`: the operation's name, or `unknown operation METHOD /path`."""
    if environment:
        return _environment_denial(policy, decision, subject, operation)
    if decision.rule is not None:
        rule = _rule(policy, decision.rule)
        if rule is not None:
            where = f"line {rule.line}: " if rule.line else ""
            return (
                f'dockgate: {subject} denied by rule {rule.number} of policy "{policy.name}" '
                f"({where}{describe_rule(rule)})"
            )
    if decision.reason == "no rule allows it":
        hint = ""
        if operation is not None:
            hint = (
                f" (allow it with a rule of operations: [{operation.name}] or sections: "
                f"[{operation.section}])"
            )
        return f'dockgate: no rule of policy "{policy.name}" allows {subject}{hint}'
    return decision.denial_message(subject)  # read-only: the policy says so in one word


def _environment_denial(
    policy: Policy, decision: Decision, subject: str, operation: Operation | None
) -> str:
    """Tecnativa users think in variables: name the ones still missing (set ones are not
    repeated), or the switch that closed the operation."""
    rule = _rule(policy, decision.rule) if decision.rule is not None else None
    if rule is not None and rule.note.endswith("=0") and not rule.note.startswith("writes"):
        return f"dockgate: {subject} denied by policy {policy.name} (closed by {rule.note})"
    needs = " ".join(f"{name}=1" for name in _missing_variables(policy, operation))
    # Denied by the method switches (rule `writes not opened by POST=0 ...`): what is missing
    # is all there is to say; denied by no rule: say that, as before.
    what = [decision.reason] if rule is None else []
    if needs:
        what.append(f"needs {needs}")
    elif rule is not None:
        what.append(rule.note)
    hint = missing_variable_hint(operation) if rule is None and not needs else ""
    return f"dockgate: {subject} denied by policy {policy.name} ({'; '.join(what)}{hint})"


def _missing_variables(policy: Policy, operation: Operation | None) -> list[str]:
    if operation is None:
        return []
    notes = {rule.note for rule in policy.rules}
    closed_methods = " ".join(rule.note for rule in policy.rules if rule.note.startswith("writes"))
    needs = []
    section = _SECTION_VARIABLE.get(operation.path.lstrip("/").split("/", 1)[0])
    if section is not None and f"{section}=1" not in notes:
        needs.append(section)
    method = _METHOD_VARIABLE.get(operation.method)
    writes = operation.writes or operation.method not in ("GET", "HEAD")
    if writes and method is not None and f"{method}=0" in closed_methods.split():
        needs.append(method)
    if operation.name == "ContainerExec" and "EXEC=1" not in notes:
        needs.append("EXEC")
    return needs


def _rule(policy: Policy, number: int) -> Rule | None:
    for rule in policy.rules:
        if rule.number == number:
            return rule
    return None


def describe_rule(rule: Rule) -> str:
    """`deny: operations=[ContainerCreate, ContainerExec]`, as the policy file says it."""
    m = rule.matcher
    parts = []
    if m.unknown:
        parts.append("unknown=true")
    for name in ("sections", "operations", "methods"):
        value = getattr(m, name)
        if value is not None:
            items = sorted(value)
            shown = ", ".join(items[:6]) + (
                f", ... ({len(items)} in all)" if len(items) > 6 else ""
            )
            parts.append(f"{name}=[{shown}]")
    if m.paths is not None:
        parts.append("paths=[" + ", ".join(p.pattern for p in m.paths) + "]")
    effect = "deny" if rule.effect == DENY else "allow"
    return f"{effect}: {' '.join(parts)}"
