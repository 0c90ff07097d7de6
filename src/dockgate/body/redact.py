"""Response redaction: what a policy hides from inspect and list answers.

A dashboard needs to see containers, not their secrets: environment variables hold passwords
and tokens, mounts show the host's layout, labels sometimes carry credentials too. A policy's
`redact:` says which of these to hide; the gateway reads the daemon's JSON answer whole,
removes them, and sends the rest with a new Content-Length.

Environment variables keep their names (`DB_PASSWORD=<redacted>`): which variables exist is
useful to an operator, their values are the secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

# The answers redaction applies to. Events also carry labels (as actor attributes), and are
# not rewritten: see docs/policy.md.
REDACTED_OPERATIONS = frozenset(
    {
        "ContainerInspect",
        "ContainerList",
        "ServiceInspect",
        "ServiceList",
        "TaskInspect",
        "TaskList",
    }
)
# The largest answer the gateway reads whole to redact (a list of thousands of containers is
# a few megabytes); a larger one fails closed (502) rather than passing unredacted.
REDACT_LIMIT = 64 * 1024 * 1024
REDACTED = "<redacted>"


class RedactionError(ValueError):
    """An answer that cannot be redacted; it is not passed on."""


@dataclass(frozen=True, slots=True)
class Redaction:
    env: bool = False
    mounts: bool = False
    labels: bool = False

    def __bool__(self) -> bool:
        return self.env or self.mounts or self.labels


def redact_response(operation: str, body: bytes, redaction: Redaction) -> bytes:
    """The daemon's JSON answer with what `redaction` hides removed."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise RedactionError(f"the daemon's {operation} answer is not JSON") from None
    walk = _WALKERS[operation]
    items = document if isinstance(document, list) else [document]
    for item in items:
        if isinstance(item, dict):
            walk(item, redaction)
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def _env(values: object) -> object:
    if not isinstance(values, list):
        return values
    return [
        f"{item.partition('=')[0]}={REDACTED}" if isinstance(item, str) else REDACTED
        for item in values
    ]


def _child(parent: dict[str, object], *path: str) -> dict[str, object] | None:
    node: object = parent
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


def _container_spec(spec: dict[str, object] | None, r: Redaction) -> None:
    """A swarm ContainerSpec: Env, Mounts, Labels."""
    if spec is None:
        return
    if r.env and "Env" in spec:
        spec["Env"] = _env(spec["Env"])
    if r.mounts and "Mounts" in spec:
        spec["Mounts"] = []
    if r.labels and "Labels" in spec:
        spec["Labels"] = {}


def _container(item: dict[str, object], r: Redaction) -> None:
    """ContainerInspect, and one entry of ContainerList."""
    config = _child(item, "Config")
    host = _child(item, "HostConfig")
    if r.env and config is not None and "Env" in config:
        config["Env"] = _env(config["Env"])
    if r.mounts:
        if "Mounts" in item:
            item["Mounts"] = []
        if host is not None:
            for key in ("Binds", "Mounts"):
                if key in host:
                    host[key] = None
    if r.labels:
        if "Labels" in item:
            item["Labels"] = {}
        if config is not None and "Labels" in config:
            config["Labels"] = {}


def _service(item: dict[str, object], r: Redaction) -> None:
    for spec_key in ("Spec", "PreviousSpec"):
        spec = _child(item, spec_key)
        if spec is None:
            continue
        if r.labels and "Labels" in spec:
            spec["Labels"] = {}
        _container_spec(_child(spec, "TaskTemplate", "ContainerSpec"), r)


def _task(item: dict[str, object], r: Redaction) -> None:
    if r.labels and "Labels" in item:
        item["Labels"] = {}
    _container_spec(_child(item, "Spec", "ContainerSpec"), r)


_WALKERS: dict[str, Callable[[dict[str, object], Redaction], None]] = {
    "ContainerInspect": _container,
    "ContainerList": _container,
    "ServiceInspect": _service,
    "ServiceList": _service,
    "TaskInspect": _task,
    "TaskList": _task,
}
