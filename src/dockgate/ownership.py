"""Ownership mode: each caller sees and touches only the objects it created through dockgate.

With `ownership: true` in a policy, objects created through the gateway (containers, networks,
volumes, services, secrets, configs) get the label `io.dockgate.owner=<identity>`; lists,
prunes and events are narrowed to the caller's label (merged into the caller's own
`filters`); and a request about one object (inspect, start, exec, attach, delete, ...) is
first looked up on the daemon: someone else's object, or none, is answered `404` exactly as
the daemon answers for a missing one. The request then goes on with the object's full ID in
place of the name the client used, so that the daemon acts on the very object that was checked
(a name deleted and created again in between cannot inherit the rights).

This module is the pure part: which operation concerns which kind of object, how labels and
filters are written into requests, how targets are rewritten. The daemon look-ups are in
`lookup.py`, the wiring in `proxy.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

from dockgate.body import gojson

OWNER_LABEL = "io.dockgate.owner"


@dataclass(frozen=True, slots=True)
class Kind:
    name: str  # "container", ...
    segment: str  # the path segment before the object reference: "containers"
    inspect: str  # the daemon's inspect path for a reference, `{}` the reference
    id_field: str  # where the inspect answer keeps the full ID
    labels: tuple[str, ...]  # where the inspect answer keeps the labels
    missing: str  # the daemon's 404 message, `{}` the reference


CONTAINER = Kind(
    "container", "containers", "/containers/{}/json", "Id", ("Config", "Labels"),
    "No such container: {}",
)  # fmt: skip
NETWORK = Kind("network", "networks", "/networks/{}", "Id", ("Labels",), "network {} not found")
VOLUME = Kind("volume", "volumes", "/volumes/{}", "Name", ("Labels",), "get {}: no such volume")
SERVICE = Kind(
    "service", "services", "/services/{}", "ID", ("Spec", "Labels"), "service {} not found"
)
SECRET = Kind("secret", "secrets", "/secrets/{}", "ID", ("Spec", "Labels"), "secret {} not found")
CONFIG = Kind("config", "configs", "/configs/{}", "ID", ("Spec", "Labels"), "config {} not found")
# Exec instances and tasks have no labels: they belong to a container, a service.
EXEC = Kind("exec", "exec", "/exec/{}/json", "ID", (), "No such exec instance: {}")
TASK = Kind("task", "tasks", "/tasks/{}", "ID", (), "task {} not found")
PARENT_FIELD = {"exec": ("ContainerID", CONTAINER), "task": ("ServiceID", SERVICE)}

_KINDS_BY_SEGMENT = {k.segment: k for k in (CONTAINER, NETWORK, VOLUME, SERVICE, SECRET, CONFIG)}
_KINDS_BY_SEGMENT["exec"] = EXEC
_KINDS_BY_SEGMENT["tasks"] = TASK

# Creations that get the owner label.
OWNED_CREATES = frozenset(
    {
        "ContainerCreate",
        "NetworkCreate",
        "VolumeCreate",
        "ServiceCreate",
        "ServiceUpdate",  # a full spec: the label is written again, so it cannot be dropped
        "SecretCreate",
        "ConfigCreate",
    }
)
# Builds: the image gets the label through the `labels` query parameter.
LABELLED_BUILD = "ImageBuild"
# Lists (and prunes, and events) narrowed to the caller's label through `filters`.
FILTERED = frozenset(
    {
        "ContainerList",
        "ContainerPrune",
        "NetworkList",
        "NetworkPrune",
        "VolumeList",
        "VolumePrune",
        "ServiceList",
        "SecretList",
        "ConfigList",
        "TaskList",
        "SystemEvents",
    }
)
# Operations without an object of their own, and not narrowed: still allowed as the policy says.
_NO_OBJECT = frozenset({"ContainerCreate", "NetworkCreate", "VolumeCreate", "ServiceCreate"})


def object_kind(operation: str, template: str) -> Kind | None:
    """The kind of object an operation's path names (`/containers/{id}/start` -> container),
    or None when it names none."""
    if operation in _NO_OBJECT or operation in FILTERED:
        return None
    parts = template.split("/")
    if len(parts) < 3 or not parts[2].startswith("{"):
        return None
    return _KINDS_BY_SEGMENT.get(parts[1])


def reference_of(path: str, kind: Kind) -> tuple[int, str] | None:
    """Where, among the `/`-separated parts of a (decoded, canonical) path, the object
    reference is, and the reference: `/v1.41/containers/web/start` -> (3, "web")."""
    parts = path.split("/")
    for index in range(1, min(len(parts) - 1, 3)):
        if parts[index] == kind.segment:
            return index + 1, parts[index + 1]
    return None


def with_reference(raw_target: str, index: int, replacement: str) -> str:
    """The raw target with its path part `index` replaced (the query is kept as it came)."""
    path, question, query = raw_target.partition("?")
    parts = path.split("/")
    parts[index] = quote(replacement, safe="")
    return "/".join(parts) + question + query


def owner_of(answer: object, kind: Kind) -> str | None:
    node = answer
    for key in kind.labels:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        owner = node.get(OWNER_LABEL)
        return owner if isinstance(owner, str) else None
    return None


def with_owner_label(body: bytes, operation: str, owner: str) -> bytes:
    """The body with the owner label added last, so that Go's decoder (maps merge key by key,
    the last duplicate wins) keeps it whatever the client wrote. For a service, the task's
    containers are labelled too, so that they belong to the same caller."""
    text = body.rstrip(b" \t\r\n")
    if not text.endswith(b"}"):
        raise ValueError("the body must be a JSON object")
    label = json.dumps({OWNER_LABEL: owner}).encode()
    addition = b'"Labels":' + label
    if operation in ("ServiceCreate", "ServiceUpdate"):
        addition += b',"TaskTemplate":{"ContainerSpec":{"Labels":' + label + b"}}"
    inner = text[:-1].rstrip(b" \t\r\n")
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + addition + b"}"


def with_build_label(raw_target: str, owner: str) -> str:
    """A build's target with the owner label merged into its `labels` (a JSON object)."""

    def label(labels: dict[str, object]) -> dict[str, object]:
        return {**labels, OWNER_LABEL: owner}

    return _with_json_parameter(raw_target, "labels", label)


def with_owner_filter(raw_target: str, owner: str) -> str:
    """The target with `label=io.dockgate.owner=<owner>` merged into its `filters` (the daemon
    reads the first `filters` value; both of its JSON forms are kept as they are)."""
    wanted = f"{OWNER_LABEL}={owner}"

    def narrow(filters: dict[str, object]) -> dict[str, object]:
        labels = filters.get("label")
        # The daemon reads the whole object in one of two forms ({"label": ["a=b"]}, or the
        # form the docker CLI sends, {"label": {"a=b": true}}); the label follows the others.
        map_form = any(isinstance(value, dict) for value in filters.values())
        if isinstance(labels, dict):
            return {**filters, "label": {**labels, wanted: True}}
        if isinstance(labels, list):
            return {**filters, "label": [*labels, wanted]}
        if labels is None:
            return {**filters, "label": {wanted: True} if map_form else [wanted]}
        raise ValueError("filters.label must be a list")

    return _with_json_parameter(raw_target, "filters", narrow)


def _with_json_parameter(
    raw_target: str,
    key: str,
    change: Callable[[dict[str, object]], dict[str, object]],
) -> str:
    """The target with the JSON-object query parameter `key` (the daemon reads its first
    value) replaced by `change` of it; other parameters are kept, and `key` appears once."""
    path, _, query = raw_target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    given = next((value for name, value in pairs if name == key), "")
    value = json.loads(given) if given else {}  # a ValueError is a 400, as the daemon's
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a JSON object")  # noqa: TRY004 - a 400 like the rest
    kept = [(name, v) for name, v in pairs if name != key]
    kept.append((key, json.dumps(change(value), separators=(",", ":"))))
    return path + "?" + urlencode(kept, quote_via=quote)


# ----- references to other objects inside a request body --------------------------------------

# Networks every caller may name: the daemon's own (they carry no owner label).
PREDEFINED_NETWORKS = frozenset({"", "default", "bridge", "host", "none", "ingress"})
# Bodies that name other objects, which must then be the caller's too.
REFERENCING = frozenset(
    {"ContainerCreate", "ServiceCreate", "ServiceUpdate", "NetworkConnect", "NetworkDisconnect"}
)


def references(operation: str, body: bytes) -> list[tuple[Kind, str]]:
    """The objects a body names (read as the daemon reads it): networks, containers, volumes,
    secrets and configs it would join, share, mount or hand to a task. A body that cannot be
    read names nothing here (the daemon refuses it)."""
    try:
        top = gojson.parse(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(top, gojson.GoObject):
        return []
    found: list[tuple[Kind, str]] = []
    one = (top,)
    if operation in ("NetworkConnect", "NetworkDisconnect"):
        _add(found, CONTAINER, gojson.scalar(one, "Container"))
    elif operation == "ContainerCreate":
        inner = gojson.struct(one, "HostConfig", pointer=True)
        host = inner if inner else one
        _container_references(host, found)
        networking = gojson.struct(one, "NetworkingConfig", pointer=True)
        endpoints = gojson.mapping(networking, "EndpointsConfig") or {}
        for network in endpoints:
            if network not in PREDEFINED_NETWORKS:
                found.append((NETWORK, network))
    else:
        task = gojson.struct(one, "TaskTemplate", pointer=False)
        spec = gojson.struct(task, "ContainerSpec", pointer=True)
        for kind, field, id_field, name_field in (
            (SECRET, "Secrets", "SecretID", "SecretName"),
            (CONFIG, "Configs", "ConfigID", "ConfigName"),
        ):
            for item in _objects(spec, field):
                reference = gojson.scalar((item,), id_field)
                if not isinstance(reference, str) or not reference:
                    reference = gojson.scalar((item,), name_field)
                _add(found, kind, reference)
        for networks in (_objects(task, "Networks"), _objects(one, "Networks")):
            for item in networks:
                target = gojson.scalar((item,), "Target")
                if isinstance(target, str) and target not in PREDEFINED_NETWORKS:
                    found.append((NETWORK, target))
        for mount in _objects(spec, "Mounts"):
            _mount_reference(mount, found)
    return found


def _container_references(host: gojson.Struct, found: list[tuple[Kind, str]]) -> None:
    for mode_field in ("NetworkMode", "PidMode", "IpcMode"):
        mode = gojson.scalar(host, mode_field)
        if not isinstance(mode, str):
            continue
        if mode.startswith("container:"):
            _add(found, CONTAINER, mode.partition(":")[2])
        elif mode_field == "NetworkMode" and mode not in PREDEFINED_NETWORKS:
            found.append((NETWORK, mode))
    for item in _strings(host, "VolumesFrom"):
        _add(found, CONTAINER, item.partition(":")[0])
    for link in _strings(host, "Links"):
        _add(found, CONTAINER, link.partition(":")[0].lstrip("/"))
    for bind in _strings(host, "Binds"):
        source = bind.split(":")[0]
        if ":" in bind and source and not source.startswith("/"):
            found.append((VOLUME, source))
    for mount in _objects(host, "Mounts"):
        _mount_reference(mount, found)


def _mount_reference(mount: gojson.GoObject, found: list[tuple[Kind, str]]) -> None:
    kind = gojson.scalar((mount,), "Type")
    if isinstance(kind, str) and kind.lower() == "volume":
        _add(found, VOLUME, gojson.scalar((mount,), "Source"))


def _add(found: list[tuple[Kind, str]], kind: Kind, reference: object) -> None:
    if isinstance(reference, str) and reference:
        found.append((kind, reference))


def _objects(parent: gojson.Struct, field: str) -> list[gojson.GoObject]:
    value = gojson.slice_(parent, field)
    return [v for v in value if isinstance(v, gojson.GoObject)] if isinstance(value, list) else []


def _strings(parent: gojson.Struct, field: str) -> list[str]:
    value = gojson.slice_(parent, field)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
