"""Drop-in compatibility with Tecnativa/docker-socket-proxy (and linuxserver's fork).

With no policy file, the same environment variables describe the same access, turned into an
ordinary dockgate policy named `environment`. Their semantics, and where dockgate is stricter
than the HAProxy original, are documented in docs/policy.md ("Tecnativa compatibility").

Tecnativa decides by URL prefix (`^(/v[\\d.]+)?/containers` for CONTAINERS); dockgate decides by
the operation the daemon will run, and maps an operation to a variable by the first segment of
its path template, so `/containers/{id}/json` is CONTAINERS and `/exec/{id}/start` is EXEC.
"""

from __future__ import annotations

from collections.abc import Mapping

from dockgate.api.routes import OPERATIONS, Operation
from dockgate.policy.rules import ALLOW, DENY, Matcher, Policy, PolicySet, Rule

POLICY_NAME = "environment"

# Variable -> first path segment of the operations it opens, with Tecnativa's defaults.
SECTION_VARIABLES: dict[str, tuple[str, bool]] = {
    "AUTH": ("auth", False),
    "BUILD": ("build", False),
    "COMMIT": ("commit", False),
    "CONFIGS": ("configs", False),
    "CONTAINERS": ("containers", False),
    "DISTRIBUTION": ("distribution", False),
    "EVENTS": ("events", True),
    "EXEC": ("exec", False),
    "GRPC": ("grpc", False),
    "IMAGES": ("images", False),
    "INFO": ("info", False),
    "NETWORKS": ("networks", False),
    "NODES": ("nodes", False),
    "PING": ("_ping", True),
    "PLUGINS": ("plugins", False),
    "SECRETS": ("secrets", False),
    "SERVICES": ("services", False),
    "SESSION": ("session", False),
    "SWARM": ("swarm", False),
    "SYSTEM": ("system", False),
    "TASKS": ("tasks", False),
    "VERSION": ("version", True),
    "VOLUMES": ("volumes", False),
}

# Requests the route table cannot place match no rule here, so they are denied (default deny).

# Narrow grants that open one container action even when CONTAINERS=0 or POST=0, as the
# linuxserver fork evaluates them (before its POST check).
ACTION_VARIABLES: dict[str, frozenset[str]] = {
    "ALLOW_START": frozenset({"ContainerStart"}),
    "ALLOW_STOP": frozenset({"ContainerStop"}),
    "ALLOW_RESTARTS": frozenset({"ContainerStop", "ContainerRestart", "ContainerKill"}),
    "ALLOW_PAUSE": frozenset({"ContainerPause"}),
    "ALLOW_UNPAUSE": frozenset({"ContainerUnpause"}),
}

# Newer Tecnativa switches that close one part of CONTAINERS. Honoured when set to 0; when
# unset, the classic behaviour (part of CONTAINERS) applies.
CLOSING_VARIABLES: dict[str, frozenset[str]] = {
    "ALLOW_EXEC": frozenset({"ContainerExec"}),
    "ALLOW_KILL": frozenset({"ContainerKill"}),
    "ALLOW_ATTACH": frozenset({"ContainerAttach", "ContainerAttachWebsocket"}),
    "ALLOW_ARCHIVE": frozenset(
        # ContainerCopy: the 20.10-only POST /containers/{id}/copy also reads files out.
        {"ContainerArchive", "ContainerArchiveInfo", "PutContainerArchive", "ContainerCopy"}
    ),
    "ALLOW_EXPORT": frozenset({"ContainerExport"}),
    "ALLOW_LOGS": frozenset({"ContainerLogs"}),
}

# Method switches: POST is the classic one (0: read-only); DELETE and PUT, when set, override it
# for their method as newer Tecnativa releases do.
METHOD_VARIABLES = ("POST", "DELETE", "PUT")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

ALL_VARIABLES = (
    tuple(SECTION_VARIABLES) + tuple(ACTION_VARIABLES) + tuple(CLOSING_VARIABLES) + METHOD_VARIABLES
)


class EnvironmentError_(ValueError):
    """A compatibility variable with a value that is not a boolean."""


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    # The value is not quoted: not a switch value, it may be anything, a password among them
    # (an env_file shared with an application that has its own AUTH=).
    raise EnvironmentError_(
        f"{name} is set to something other than a switch value: expected 0 or 1 (or "
        "true/false, yes/no, on/off; the value is not shown)"
    )


def _first_segment(template: str) -> str:
    return template.lstrip("/").split("/", 1)[0]


def policy_from_environment(env: Mapping[str, str]) -> PolicySet:
    """The policy that Tecnativa's variables in `env` describe."""
    rules: list[Rule] = []

    def add(effect: str, operations: frozenset[str], note: str) -> None:
        if operations:
            rules.append(Rule(len(rules) + 1, effect, Matcher(operations=operations), note=note))

    post = _flag(env, "POST", False)
    method_open = {
        "POST": post,
        "DELETE": _flag(env, "DELETE", post),
        "PUT": _flag(env, "PUT", post),
        # A GET or HEAD that writes (attach over WebSocket) is a write: it needs POST=1.
        "GET": post,
        "HEAD": post,
    }
    granted_actions: frozenset[str] = frozenset().union(
        *(ops for name, ops in ACTION_VARIABLES.items() if _flag(env, name, False))
    )

    # 1. Closing switches set to 0.
    closed = frozenset().union(
        *(ops for name, ops in CLOSING_VARIABLES.items() if not _flag(env, name, True))
    )
    closing = [n for n in CLOSING_VARIABLES if not _flag(env, n, True)]
    add(DENY, closed - granted_actions, " ".join(f"{n}=0" for n in closing))
    # 2. Read-only as the method switches say; the narrow action grants stay open.
    # Never looser than Tecnativa: with a method switched off, every operation of that method
    # is blocked, even the few POSTs that only read (wait, auth); and write channels opened by
    # GET (attach over WebSocket) are blocked unless POST=1.
    blocked_writes = frozenset(
        op.name
        for op in OPERATIONS.values()
        if not method_open.get(op.method, False) and (op.writes or op.method not in ("GET", "HEAD"))
    )
    switches = " ".join(f"{m}={int(method_open[m])}" for m in METHOD_VARIABLES)
    add(DENY, blocked_writes - granted_actions, f"writes not opened by {switches}")
    # 3. The narrow grants, then the sections.
    granted = [n for n in ACTION_VARIABLES if _flag(env, n, False)]
    add(ALLOW, granted_actions, " ".join(f"{n}=1" for n in granted))
    for name, (segment, default) in SECTION_VARIABLES.items():
        if not _flag(env, name, default):
            continue
        opened = frozenset(
            op.name
            for op in OPERATIONS.values()
            if _first_segment(op.path) == segment
            # Exec creation lives under /containers but runs commands: it also needs EXEC=1.
            and not (op.name == "ContainerExec" and not _flag(env, "EXEC", False))
        )
        add(ALLOW, opened, f"{name}=1")
    policy = Policy(POLICY_NAME, read_only=False, rules=tuple(rules))
    return PolicySet(policies={POLICY_NAME: policy}, default=POLICY_NAME, source="environment")


def compatibility_variables_set(env: Mapping[str, str]) -> list[str]:
    return [name for name in ALL_VARIABLES if name in env]


def missing_variable_hint(operation: Operation | None) -> str:
    """For a request the environment policy denied: which variable would open its section."""
    if operation is None:
        return ""
    segment = _first_segment(operation.path)
    for name, (section_segment, _) in SECTION_VARIABLES.items():
        if section_segment == segment:
            needs = (
                [name]
                if operation.method in ("GET", "HEAD") and not operation.writes
                else [
                    name,
                    "POST",
                ]
            )
            if operation.name == "ContainerExec":
                needs.append("EXEC")
            return "; needs " + " ".join(f"{n}=1" for n in needs)
    return ""
