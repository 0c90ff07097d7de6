"""Response redaction: what a policy hides from inspect and list answers, and from events.

A dashboard needs to see containers, not their secrets: environment variables hold passwords
and tokens, mounts show the host's layout, labels sometimes carry credentials too. A policy's
`redact:` says which of these to hide; the gateway reads the daemon's JSON answer whole,
removes them, and sends the rest with a new Content-Length. The event stream cannot be read
whole: it is rewritten one event at a time (`EventStreamRedaction`), each event a chunk.

Environment variables keep their names (`DB_PASSWORD=<redacted>`): which variables exist is
useful to an operator, their values are the secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from dockgate.errors import ClientProtocolError
from dockgate.http.chunked import ChunkedDecoder
from dockgate.http.query import query_value

# The answers read whole to be redacted.
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
# The streams rewritten as they go.
REDACTED_STREAMS = frozenset({"SystemEvents"})
# The redacted answers whose `filters` may name labels: whether anything matches `label=k=v`
# would tell a hidden label's value without showing it.
LABEL_FILTERED = frozenset({"ContainerList", "ServiceList", "TaskList", "SystemEvents"})
# One event is a small JSON object; a line longer than this is not an event stream.
MAX_EVENT_BYTES = 1024 * 1024
# The actor attributes the daemon sets itself on container and image events (moby's
# daemon/events.go and its callers): every other attribute there is one of the object's labels.
# The daemon copies the labels in first, so a label may only hide under a name the daemon then
# writes over (image, name), or under one of the few that belong to one action.
_CONTAINER_ATTRIBUTES = frozenset({"image", "name"})
_CONTAINER_ACTION_ATTRIBUTES = {
    "die": frozenset({"exitCode", "execDuration"}),
    "kill": frozenset({"signal"}),
    "rename": frozenset({"oldName"}),
    "resize": frozenset({"height", "width"}),
    "exec_create": frozenset({"execID"}),
    "exec_start": frozenset({"execID"}),
    "exec_die": frozenset({"execID", "exitCode"}),
    "exec_detach": frozenset({"execID"}),
}
_IMAGE_ATTRIBUTES = frozenset({"name"})
# Volume (un)mount events say where in the container a volume is mounted.
_MOUNT_ATTRIBUTES = frozenset({"destination", "propagation", "read/write"})


class RedactionError(ValueError):
    """An answer that cannot be redacted; it is not passed on."""


@dataclass(frozen=True, slots=True)
class Redaction:
    env: bool = False
    mounts: bool = False
    labels: bool = False

    def __bool__(self) -> bool:
        return self.env or self.mounts or self.labels

    def rewrites(self, operation: str) -> bool:
        """Whether this redaction changes `operation`'s answers (events carry no environment)."""
        if operation in REDACTED_STREAMS:
            return self.labels or self.mounts
        return operation in REDACTED_OPERATIONS and bool(self)


def label_filter_problem(operation: str, query: str, redaction: Redaction) -> str | None:
    """Why a request may not filter by label under `redaction` (None when it may): where labels
    are hidden, a `label` filter would still tell their values by what it matches. Filters
    the gateway cannot read are refused too (the daemon would answer 400 to most of them)."""
    if not redaction.labels or operation not in LABEL_FILTERED:
        return None
    given = query_value(query, "filters")
    if not given:
        return None
    try:
        filters = json.loads(given)
    except (ValueError, RecursionError):
        return "filters that cannot be read are not accepted where labels are redacted"
    if isinstance(filters, dict) and "label" in filters:
        return "label filters are not accepted where labels are redacted"
    return None


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


def redact_event(event: dict[str, object], r: Redaction) -> None:
    """One event of `GET /events`: labels (container and image events carry them among their
    actor's attributes) and volume mount details removed."""
    actor = _child(event, "Actor")
    attributes = _child(actor, "Attributes") if actor is not None else None
    if attributes is None or actor is None:
        return
    kind = event.get("Type")
    kept: frozenset[str] | None = None
    if r.labels and kind == "container":
        # "exec_start: sh -c ..." and "health_status: healthy" carry more after the colon.
        action = str(event.get("Action", "")).partition(":")[0]
        kept = _CONTAINER_ATTRIBUTES | _CONTAINER_ACTION_ATTRIBUTES.get(action, frozenset())
    elif r.labels and kind == "image":
        kept = _IMAGE_ATTRIBUTES
    if kept is not None:
        attributes = {k: v for k, v in attributes.items() if k in kept}
    if r.mounts and kind == "volume":
        attributes = {k: v for k, v in attributes.items() if k not in _MOUNT_ATTRIBUTES}
    actor["Attributes"] = attributes


class EventStreamRedaction:
    """The daemon's event stream (chunked, one JSON object a line) rewritten as it arrives:
    chunks decoded, each complete event redacted and sent as a chunk of its own. Sans-IO:
    `feed` takes the daemon's raw bytes and returns the client's."""

    __slots__ = ("_decoder", "_partial", "_redaction")

    def __init__(self, redaction: Redaction) -> None:
        self._redaction = redaction
        self._decoder = ChunkedDecoder()
        self._partial = b""

    def feed(self, raw: bytes) -> bytes:
        """RedactionError for a stream that cannot be rewritten (it is then cut, never passed
        on as it is)."""
        try:
            pieces, _ = self._decoder.feed(raw)
        except ClientProtocolError as exc:
            raise RedactionError(f"the event stream's framing: {exc.message}") from None
        data = self._partial + b"".join(pieces) if pieces else self._partial
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_EVENT_BYTES:
            raise RedactionError("an event too large to redact")
        out = [self._chunk(line) for line in lines if line.strip()]
        if self._decoder.done:
            if self._partial.strip():
                out.append(self._chunk(self._partial))  # a last event without its newline
            self._partial = b""
            out.append(b"0\r\n\r\n")
        return b"".join(out)

    def _chunk(self, line: bytes) -> bytes:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            raise RedactionError("the event stream holds something that is not JSON") from None
        if not isinstance(event, dict):
            raise RedactionError("the event stream holds something that is not an event")
        redact_event(event, self._redaction)
        body = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        return b"%x\r\n%s\r\n" % (len(body), body)
