"""Response redaction: what a policy hides from inspect and list answers, and from events.

A dashboard needs to see containers, not their secrets: environment variables hold passwords
and tokens, mounts show the host's layout, labels sometimes carry credentials too. A policy's
`redact:` says which of these to hide; the gateway reads the daemon's JSON answer whole,
removes them, and sends the rest with a new Content-Length. The event stream cannot be read
whole: it is rewritten one event at a time (`EventStreamRedaction`), each event a chunk.

Environment variables keep their names (`DB_PASSWORD=<redacted>`): which variables exist is
useful to an operator, their values are the secret.

Which operations show what, and what happens to each, is the table in `exposure.py`; this
module holds the walkers that rewrite answers and the checks of requests (filters, ps_args)
that would show a hidden value another way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from dockgate.body.exposure import ENV, LABELS, MOUNTS, refused_filters, rewritten_areas
from dockgate.body.psargs import top_args_problem
from dockgate.http.chunked import ChunkedDecoder
from dockgate.http.errors import ClientProtocolError
from dockgate.http.query import bool_value, query_pairs, query_value

# The largest answer the gateway reads whole to redact (a list of thousands of containers is
# a few megabytes); a larger one fails closed (502) rather than passing unredacted.
REDACT_LIMIT = 64 * 1024 * 1024
REDACTED = "<redacted>"
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# The streams rewritten as they go (every other rewritten answer is read whole).
REDACTED_STREAMS = frozenset({"SystemEvents"})
# One event is a small JSON object; a line longer than this is not an event stream.
MAX_EVENT_BYTES = 1024 * 1024
# The actor attributes the daemon sets itself on container and image events (moby's
# daemon/events.go and its callers): every other attribute there is one of the object's labels.
# The daemon copies the labels in first, so a label may only hide under a name the daemon then
# writes over (image, name), or under one of the few that belong to one action (daemon/
# monitor.go die, kill.go, rename.go, resize.go, exec.go, commit.go; newer daemons add
# `execDuration` to `die`). Object scopes read the same table (policy/scopelists.py).
CONTAINER_ATTRIBUTES = frozenset({"image", "name"})
CONTAINER_ACTION_ATTRIBUTES = {
    "commit": frozenset({"comment", "imageID", "imageRef"}),
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
    # Whether anything is hidden: read on every request of the policy, so computed once.
    active: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", self.env or self.mounts or self.labels)

    def __bool__(self) -> bool:
        return self.active

    def rewrites(self, operation: str) -> bool:
        """Whether this redaction changes `operation`'s answers (exposure.py says which)."""
        areas = rewritten_areas(operation)
        return bool(areas) and (
            (self.env and ENV in areas)
            or (self.mounts and MOUNTS in areas)
            or (self.labels and LABELS in areas)
        )

    def hides(self, area: str) -> bool:
        return bool(getattr(self, area))


def query_problem(operation: str, query: str, redaction: Redaction) -> str | None:
    """Why a request may not be made as it is under `redaction` (None when it may): a filter
    whose matches would tell a hidden value (`label=k=v`, `volume=/host/path`), or `top`
    arguments that would print hidden environments. What the gateway cannot read is refused
    too (the daemon would answer 400 to most of it)."""
    if operation == "ContainerTop" and redaction.env:
        return _top_problem(query)
    if operation in LOG_OPERATIONS and (redaction.env or redaction.labels):
        problem = _details_problem(query)
        if problem is not None:
            return problem
    filtered = [
        key
        for area in (ENV, MOUNTS, LABELS)
        if redaction.hides(area)
        for key in refused_filters(operation, area)
    ]
    if not filtered:
        return None
    given = query_value(query, "filters")
    if not given:
        return None
    try:
        filters = json.loads(given)
    except (ValueError, RecursionError):
        return "filters that cannot be read are not accepted where answers are redacted"
    if not isinstance(filters, dict):
        return None
    for key in filters:
        for name in filtered:
            # `node.label` (tasks, nodes), and any spelling a newer daemon may add, as `label`.
            if key == name or (name == "label" and "label" in str(key)):
                return f"{name} filters are not accepted where {_AREA_OF[name]} are redacted"
    return None


_AREA_OF = {"label": "labels", "volume": "mounts"}


# Logs reads whose `details=1` prefixes every line with the log's attributes: the values of
# the environment variables and labels the container's log options name (`env=`, `labels=`,
# `env-regex=`; moby daemon/logger/loginfo.go ExtraAttributes, daemon/logs.go).
LOG_OPERATIONS = frozenset({"ContainerLogs", "ServiceLogs", "TaskLogs"})


def _details_problem(query: str) -> str | None:
    """`details` given a value the daemon reads as true (httputils.BoolValue on the first
    value; every value is judged here). Only ASCII is trimmed and lower-cased: where Go's
    strings.TrimSpace or ToLower would read a value differently, it is taken as true. A `;`
    never gets here (api/target.py refuses it in every query)."""
    if _BAD_ESCAPE.search(query):
        return (
            "a query that cannot be read is not accepted where environments or labels are redacted"
        )
    for key, value in query_pairs(query):
        if key != "details":
            continue
        if bool_value(value):
            return (
                "details= (log attributes: the values of the variables and labels the log "
                "options name) is not accepted where environments or labels are redacted"
            )
    return None


def _top_problem(query: str) -> str | None:
    """Every `ps_args` the query gives is judged (the daemon takes the first, Go's
    `r.Form.Get`). A query the gateway might read differently from Go (a bad %-escape) is
    refused whole; a `;`, which older Go split on, is refused for every request (api/target.py)."""
    if _BAD_ESCAPE.search(query):
        return "a query that cannot be read is not accepted where environments are redacted"
    for pair in query.lstrip("?").split("&"):
        raw_key, _, raw_value = pair.partition("=")
        if unquote_plus(raw_key, errors="replace") != "ps_args":
            continue
        problem = top_args_problem(unquote_plus(raw_value, errors="replace"))
        if problem is not None:
            return f"{problem} where environments are redacted"
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
    if r.labels:
        if "Labels" in spec:
            spec["Labels"] = {}
        _mount_labels(spec.get("Mounts"))


def _log_options(options: dict[str, object] | None) -> None:
    """A log driver's options (HostConfig.LogConfig.Config, a swarm spec's LogDriver.Options),
    redacted with the environment: remote drivers take credentials there (splunk-token,
    loki-url with a password, awslogs' and gcplogs' settings; moby daemon/logger/*), and
    `env=`/`labels=` name what details= would print. Keys stay: which driver options exist is
    the operator's to see, their values may be secrets."""
    if options is not None:
        for key in options:
            options[key] = REDACTED


def _container(item: dict[str, object], r: Redaction) -> None:
    """ContainerInspect (every version's shape), and one entry of ContainerList."""
    config = _child(item, "Config")
    host = _child(item, "HostConfig")
    if r.env and config is not None and "Env" in config:
        config["Env"] = _env(config["Env"])
    if r.env and host is not None:
        _log_options(_child(host, "LogConfig", "Config"))
    if r.mounts:
        if "Mounts" in item:
            item["Mounts"] = []
        # API < 1.20 (moby api/types/versions/v1p19): container path -> host path, and -> rw.
        for key in ("Volumes", "VolumesRW"):
            if key in item:
                item[key] = {}
        if host is not None:
            for key in ("Binds", "Mounts"):
                if key in host:
                    host[key] = None
    if r.labels:
        if "Labels" in item:
            item["Labels"] = {}
        if config is not None and "Labels" in config:
            config["Labels"] = {}
        if host is not None:
            _mount_labels(host.get("Mounts"))


def _mount_labels(mounts: object) -> None:
    """`Mounts[].VolumeOptions.Labels`: the labels a mount gives the volume it creates."""
    if not isinstance(mounts, list):
        return
    for mount in mounts:
        options = _child(mount, "VolumeOptions") if isinstance(mount, dict) else None
        if options is not None and "Labels" in options:
            options["Labels"] = {}


def _service(item: dict[str, object], r: Redaction) -> None:
    for spec_key in ("Spec", "PreviousSpec"):
        spec = _child(item, spec_key)
        if spec is None:
            continue
        if r.labels and "Labels" in spec:
            spec["Labels"] = {}
        if r.env:
            _log_options(_child(spec, "TaskTemplate", "LogDriver", "Options"))
        _container_spec(_child(spec, "TaskTemplate", "ContainerSpec"), r)


def _task(item: dict[str, object], r: Redaction) -> None:
    if r.labels:
        if "Labels" in item:
            item["Labels"] = {}
        # The networks the task is attached to, with their labels.
        _each(item.get("NetworksAttachments"), _network_attachment, r)
    if r.env:
        _log_options(_child(item, "Spec", "LogDriver", "Options"))
    _container_spec(_child(item, "Spec", "ContainerSpec"), r)


def _image(item: dict[str, object], r: Redaction) -> None:
    """ImageInspect: a committed container's Env and Labels are the image's Config and
    ContainerConfig (moby daemon/commit.go); ImageList entries have Labels only."""
    for key in ("Config", "ContainerConfig"):
        config = _child(item, key)
        if config is None:
            continue
        if r.env and "Env" in config:
            config["Env"] = _env(config["Env"])
        if r.labels and "Labels" in config:
            config["Labels"] = {}
    if r.labels and "Labels" in item:
        item["Labels"] = {}


def _volume(item: dict[str, object], r: Redaction) -> None:
    if r.mounts and "Options" in item:
        item["Options"] = {}
    if r.labels and "Labels" in item:
        item["Labels"] = {}


def _volume_list(item: dict[str, object], r: Redaction) -> None:
    _each(item.get("Volumes"), _volume, r)


def _data_usage(item: dict[str, object], r: Redaction) -> None:
    """SystemDataUsage: Containers, Images, Volumes (20.10), or their newer spelling,
    ContainerUsage.Items and so on (moby api/types/system/disk_usage.go)."""
    for key, walk in (("Container", _container), ("Image", _image), ("Volume", _volume)):
        _each(item.get(key + "s"), walk, r)
        usage = _child(item, key + "Usage")
        if usage is not None:
            _each(usage.get("Items"), walk, r)


def _labels(item: dict[str, object], r: Redaction) -> None:
    """Networks, and SystemInfo (the engine's labels, a list of "k=v", and the swarm's)."""
    if r.labels and "Labels" in item:
        item["Labels"] = [] if isinstance(item["Labels"], list) else {}
    cluster = _child(item, "Swarm", "Cluster")
    if cluster is not None:
        _spec_labels(cluster, r)


def _network_attachment(item: dict[str, object], r: Redaction) -> None:
    network = _child(item, "Network")
    if network is not None:
        _spec_labels(network, r)  # moby's swarm.Network: Spec.Labels
        _labels(network, r)  # the spec's shape: Labels


def _spec_labels(item: dict[str, object], r: Redaction) -> None:
    """Secrets, configs, the swarm, and nodes (whose engine labels are SystemInfo's)."""
    if not r.labels:
        return
    spec = _child(item, "Spec")
    if spec is not None and "Labels" in spec:
        spec["Labels"] = {}
    engine = _child(item, "Description", "Engine")
    if engine is not None and "Labels" in engine:
        engine["Labels"] = {}


def _plugin(item: dict[str, object], r: Redaction) -> None:
    settings, config = _child(item, "Settings"), _child(item, "Config")
    for node in (settings, config):
        if node is None:
            continue
        if r.mounts and "Mounts" in node:
            node["Mounts"] = []
        if r.env and "Env" in node:
            values = node["Env"]
            if node is settings:
                node["Env"] = _env(values)
            elif isinstance(values, list):
                # Config.Env: [{Name, Description, Settable, Value}]
                for entry in values:
                    if isinstance(entry, dict) and entry.get("Value") is not None:
                        entry["Value"] = REDACTED


def _each(
    items: object, walk: Callable[[dict[str, object], Redaction], None], r: Redaction
) -> None:
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                walk(item, r)


_WALKERS: dict[str, Callable[[dict[str, object], Redaction], None]] = {
    "ContainerInspect": _container,
    "ContainerList": _container,
    "ServiceInspect": _service,
    "ServiceList": _service,
    "TaskInspect": _task,
    "TaskList": _task,
    "ImageInspect": _image,
    "ImageList": _image,
    "SystemDataUsage": _data_usage,
    "SystemInfo": _labels,
    "VolumeList": _volume_list,
    "VolumeInspect": _volume,
    "VolumeCreate": _volume,
    "NetworkList": _labels,
    "NetworkInspect": _labels,
    "PluginList": _plugin,
    "PluginInspect": _plugin,
    "PluginDelete": _plugin,
    "NodeList": _spec_labels,
    "NodeInspect": _spec_labels,
    "SwarmInspect": _spec_labels,
    "SecretList": _spec_labels,
    "SecretInspect": _spec_labels,
    "ConfigList": _spec_labels,
    "ConfigInspect": _spec_labels,
}
# The answers read whole to be redacted: every operation a walker rewrites (exposure.py's
# REWRITTEN entries but the event stream; tests/body/test_exposure.py checks they agree).
REDACTED_OPERATIONS = frozenset(_WALKERS)


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
        kept = CONTAINER_ATTRIBUTES | CONTAINER_ACTION_ATTRIBUTES.get(action, frozenset())
    elif r.labels and kind == "image":
        kept = _IMAGE_ATTRIBUTES
    if kept is not None:
        attributes = {k: v for k, v in attributes.items() if k in kept}
    if r.mounts and kind == "volume":
        attributes = {k: v for k, v in attributes.items() if k not in _MOUNT_ATTRIBUTES}
    actor["Attributes"] = attributes


# An event as a caller may see it, or None: not to be seen (policy/scopelists.py's scope).
EventFilter = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class EventStreamRedaction:
    """The daemon's event stream (chunked, one JSON object a line) rewritten as it arrives:
    chunks decoded, each complete event kept or dropped by `keep` (an object scope), then
    redacted, and sent as a chunk of its own. Sans-IO: `feed` takes the daemon's raw bytes and
    returns the client's."""

    __slots__ = ("_decoder", "_keep", "_partial", "_redaction")

    def __init__(self, redaction: Redaction | None, keep: EventFilter | None = None) -> None:
        self._redaction = redaction
        self._keep = keep
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
        if self._keep is not None:
            kept = self._keep(event)
            if kept is None:
                return b""  # dropped whole: not even an empty chunk (that would end the stream)
            event = kept
        if self._redaction is not None:
            redact_event(event, self._redaction)
        body = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        return b"%x\r\n%s\r\n" % (len(body), body)
