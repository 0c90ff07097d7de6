"""Ownership: the objects a body names, pinned to the full IDs that were checked.

The gateway asks the daemon who owns each object a body names (ownership.references, then
lookup.find). If the body then went on naming them by name or ID prefix, the daemon would
resolve the name again, at create time or (for `container:X` modes and networks) at every
start: a name deleted and created again by another caller in between would be theirs. So
the body is rewritten to name each object by the full ID that was looked up.

Bodies are patched, never re-serialised whole (Python and Go read numbers and strings
differently at the edges): the pinned fields are appended at the end of the top-level object,
the way `ownership.with_owner_label` writes the owner label, so that Go's decoder applies them
last. For a struct field the last value wins; objects given for the same struct field merge
field by field; for a slice, the appended list is decoded *into* the client's one (element by
element), so each element is re-written whole with its pinned field last; map entries are
replaced whole, so each is re-written whole. The client's own body has no list given twice
(body/repeated.py refuses it) before the pins are added.

Where the daemon takes the reference (moby v20.10.24):

- `HostConfig.NetworkMode`, `PidMode`, `IpcMode` `container:X`: the daemon resolves X once,
  at create, and stores `container:<id>` itself (daemon/daemon_unix.go
  adaptSharedNamespaceContainer); pinned to `container:<id>` here so that the container it
  resolves is the one that was checked (the window between look-up and create).
- `HostConfig.VolumesFrom` `X[:mode]`, `HostConfig.Links` `X[:alias]`: resolved at create
  (daemon/volumes.go parseVolumesFrom, daemon/daemon_unix.go registerLinks with
  opts.ParseLink); `<id>:mode`, `<id>:alias` (the alias the link had, so the linked
  container's host name and variables stay the same). VolumesFrom is stored as given: the
  pinned form is what inspect then shows.
- a user-defined `HostConfig.NetworkMode` and each `NetworkingConfig.EndpointsConfig` entry:
  the network is found by the endpoint's `NetworkID` when set, else by the key, at every start
  until the first one (container_operations.go getNetworkID, findAndAttachNetwork): a network
  removed and created again under its name by another caller was joined at start. The mode
  becomes the full ID, and each endpoint gets `NetworkID` (its key is kept: the daemon files
  the endpoint under the network's name); a mode with no endpoint of its own gets one, keyed
  by the ID, which the daemon moves under the network's name (updateContainerNetworkSettings).
- NetworkConnect/Disconnect `Container`, and `EndpointConfig.NetworkID`: full IDs.
- service `TaskTemplate.Networks[].Target` (or the old top-level `Networks`): the daemon
  itself turns each target into an ID at create (daemon/cluster/networks.go
  populateNetworkID); pinned here too, so that the ID is the one that was checked.
- service secrets and configs: not rewritten. Swarmkit takes `SecretID`/`ConfigID` as an exact
  ID and checks that the name matches (controlapi/service.go checkSecretExistence): the
  daemon pins them itself, and a name or prefix there is refused by the daemon.
- volumes (`Binds`, `Mounts`): a volume's name is its ID; nothing to pin. A volume deleted and
  created again under the same name by another caller is that caller's volume.
- `EndpointsConfig[].Links` are not pinned: libnetwork takes them as DNS names inside the
  network (daemon/network.go, CreateOptionAlias), and the network is the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from dockgate.body import gojson

# (kind name, reference as the body gave it) -> the full ID that was looked up.
Pins = Mapping[tuple[str, str], str]

# How deep a value re-written whole (an endpoint's settings, a service's network attachment)
# may be nested: theirs are a few levels; a deeper one is refused (400), never recursed into.
MAX_REWRITTEN_DEPTH = 32

# Networks every caller may name: the daemon's own (they carry no owner label).
PREDEFINED_NETWORKS = frozenset({"", "default", "bridge", "host", "none", "ingress"})


def parse_link(link: str) -> tuple[str, str] | None:
    """moby's opts.ParseLink: (container, alias), or None where the daemon refuses it."""
    parts = link.split(":")
    if not link or len(parts) > 2:
        return None
    if len(parts) == 1:
        return link, link
    name, alias = parts
    if name.startswith("/"):
        # An inspect answer's form, `/foo:/c1/bar`: the alias is the last path element.
        return name[1:], alias.rpartition("/")[2]
    return name, alias


def pinned_body(operation: str, body: bytes, pins: Pins) -> bytes:
    """`body` (one JSON object, already labelled) with every object it names that was looked
    up written as its full ID. ValueError for what cannot be written back (refused, 400)."""
    if not pins:
        return body
    top = _one_object(body)
    additions: list[tuple[str, str]] = []  # (key, JSON value) appended to the top object
    if operation == "ContainerCreate":
        additions = _container_create(top, pins)
    elif operation in ("NetworkConnect", "NetworkDisconnect"):
        one = (top,)
        container = gojson.scalar(one, "Container")
        full = _pin(pins, "container", container)
        if full is not None:
            additions.append(("Container", json.dumps(full)))
        endpoint = gojson.struct(one, "EndpointConfig", pointer=True)
        full = _pin(pins, "network", gojson.scalar(endpoint, "NetworkID"))
        if full is not None:
            additions.append(("EndpointConfig", _object([("NetworkID", json.dumps(full))])))
    elif operation in ("ServiceCreate", "ServiceUpdate"):
        additions = _service(top, pins)
    return _appended(body, additions)


def _container_create(top: gojson.GoObject, pins: Pins) -> list[tuple[str, str]]:
    one = (top,)
    inner = gojson.struct(one, "HostConfig", pointer=True)
    # The daemon reads the HostConfig object when there is one, else the deprecated top-level
    # fields (runconfig ContainerConfigWrapper.getHostConfig): pins go where it reads.
    host = inner if inner else one
    host_pins: list[tuple[str, str]] = []
    mode_network: str | None = None
    for field in ("NetworkMode", "PidMode", "IpcMode"):
        mode = gojson.scalar(host, field)
        if not isinstance(mode, str):
            continue
        if mode.startswith("container:"):
            full = _pin(pins, "container", mode.partition(":")[2])
            if full is not None:
                host_pins.append((field, json.dumps("container:" + full)))
        elif field == "NetworkMode" and mode not in PREDEFINED_NETWORKS:
            mode_network = _pin(pins, "network", mode)
            if mode_network is not None:
                host_pins.append((field, json.dumps(mode_network)))
    volumes_from = _strings(host, "VolumesFrom")
    if volumes_from is not None:
        pinned = []
        for item in volumes_from:
            name, colon, mode = item.partition(":")
            full = _pin(pins, "container", name)
            pinned.append(item if full is None else full + colon + mode)
        host_pins.append(("VolumesFrom", json.dumps(pinned)))
    links = _strings(host, "Links")
    if links is not None:
        pinned = []
        for link in links:
            parsed = parse_link(link)
            full = _pin(pins, "container", parsed[0]) if parsed is not None else None
            pinned.append(link if full is None or parsed is None else f"{full}:{parsed[1]}")
        host_pins.append(("Links", json.dumps(pinned)))
    additions: list[tuple[str, str]] = []
    if host_pins:
        if inner:
            additions.append(("HostConfig", _object(host_pins)))
        else:
            additions.extend(host_pins)
    endpoints = _endpoints(one, pins, mode_network)
    if endpoints:
        additions.append(("NetworkingConfig", _object([("EndpointsConfig", _object(endpoints))])))
    return additions


def _endpoints(one: gojson.Struct, pins: Pins, mode_network: str | None) -> list[tuple[str, str]]:
    """Each endpoint whose network was looked up, re-written whole with its NetworkID last;
    and one for the NetworkMode's network when no endpoint is about it."""
    networking = gojson.struct(one, "NetworkingConfig", pointer=True)
    endpoints = gojson.mapping(networking, "EndpointsConfig") or {}
    written: list[tuple[str, str]] = []
    covered = False
    for key, settings in endpoints.items():
        reference = None
        if isinstance(settings, gojson.GoObject):
            given = gojson.scalar((settings,), "NetworkID")
            if isinstance(given, str) and given:
                reference = given
        if key in PREDEFINED_NETWORKS:
            continue  # the daemon ignores NetworkID under a predefined network's key
        full = _pin(pins, "network", reference if reference is not None else key)
        if full is None:
            continue
        covered = covered or full == mode_network
        pairs = list(settings.pairs) if isinstance(settings, gojson.GoObject) else []
        fields = [(k, _dumps(v, 1)) for k, v in pairs]
        written.append((key, _object([*fields, ("NetworkID", json.dumps(full))])))
    if mode_network is not None and not covered:
        written.append((mode_network, _object([("NetworkID", json.dumps(mode_network))])))
    return written


def _service(top: gojson.GoObject, pins: Pins) -> list[tuple[str, str]]:
    one = (top,)
    task = gojson.struct(one, "TaskTemplate", pointer=False)
    # The daemon reads TaskTemplate.Networks, and the top-level Networks only when that is
    # empty (daemon/cluster/networks.go populateNetworkID): both pinned as given.
    additions: list[tuple[str, str]] = []
    task_networks = _pinned_networks(task, pins)
    if task_networks is not None:
        additions.append(("TaskTemplate", _object([("Networks", task_networks)])))
    top_networks = _pinned_networks(one, pins)
    if top_networks is not None:
        additions.append(("Networks", top_networks))
    return additions


def _pinned_networks(parent: gojson.Struct, pins: Pins) -> str | None:
    """The `Networks` list with each element re-written whole and its Target pinned (the
    appended list is decoded into the client's, element by element); None if nothing moves."""
    value = gojson.slice_(parent, "Networks")
    if not isinstance(value, list):
        return None
    elements = []
    moved = False
    for item in value:
        if not isinstance(item, gojson.GoObject):
            elements.append(_dumps(item, 1))
            continue
        fields = [(k, _dumps(v, 1)) for k, v in item.pairs]
        full = _pin(pins, "network", gojson.scalar((item,), "Target"))
        if full is not None:
            fields.append(("Target", json.dumps(full)))
            moved = True
        elements.append(_object(fields))
    return "[" + ",".join(elements) + "]" if moved else None


def _pin(pins: Pins, kind: str, reference: object) -> str | None:
    if not isinstance(reference, str) or not reference:
        return None
    return pins.get((kind, reference))


def _strings(parent: gojson.Struct, field: str) -> list[str] | None:
    value = gojson.slice_(parent, field)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None  # absent, or not a list of strings (the daemon refuses the body)
    return [v for v in value if isinstance(v, str)]


def _object(fields: list[tuple[str, str]]) -> str:
    return "{" + ",".join(json.dumps(key) + ":" + value for key, value in fields) + "}"


def _dumps(value: object, depth: int = 0) -> str:
    """A parsed value written back as JSON, duplicate keys and their order kept (Go acts on
    each). ValueError for a number Python read as infinite (Go would refuse it anyway), and
    for a value nested deeper than MAX_REWRITTEN_DEPTH."""
    if depth > MAX_REWRITTEN_DEPTH:
        # Bounded here, not by Python's recursion limit: a RecursionError in the look-up task
        # left the request without an answer (found by the attack review).
        raise ValueError(f"a pinned value is nested deeper than {MAX_REWRITTEN_DEPTH} levels")
    if isinstance(value, gojson.GoObject):
        return _object([(k, _dumps(v, depth + 1)) for k, v in value.pairs])
    if isinstance(value, list):
        return "[" + ",".join([_dumps(v, depth + 1) for v in value]) + "]"
    return json.dumps(value, allow_nan=False)


def _one_object(body: bytes) -> gojson.GoObject:
    try:
        parsed = gojson.parse(body, strict_end=True)
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
    if not isinstance(parsed, gojson.GoObject):
        raise ValueError("the body must be one JSON object")  # noqa: TRY004 - a 400
    return parsed


def _appended(body: bytes, additions: list[tuple[str, str]]) -> bytes:
    """The body with `additions` written after everything the client wrote."""
    if not additions:
        return body
    text = body.rstrip(b" \t\r\n")
    inner = text[:-1].rstrip(b" \t\r\n")
    separator = b"" if inner.endswith(b"{") else b","
    written = ",".join(json.dumps(key) + ":" + value for key, value in additions)
    return inner + separator + written.encode() + b"}"
