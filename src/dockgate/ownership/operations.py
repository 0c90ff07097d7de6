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
`ownership/lookup.py`, the wiring in `relay/connection.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

from dockgate.api.daemonjson import daemon_object
from dockgate.body import gojson
from dockgate.http.query import query_pairs, query_value
from dockgate.ownership.pinning import PREDEFINED_NETWORKS, parse_link
from dockgate.refusal import Refusal

OWNER_LABEL = "io.dockgate.owner"
# Who built or committed an image through dockgate: provenance only, trusted by no rule (an
# image's owner label is emptied instead: images never vouch for an owner, `trusted_owner`).
BUILT_BY_LABEL = "io.dockgate.built-by"
# An owner written into a commit's `LABEL` change without quoting.
_PLAIN_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9:@._+-]*")


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
        "SecretUpdate",  # a full spec too
        "ConfigCreate",
        "ConfigUpdate",
    }
)
# Operations not available in ownership mode: their answers are about every caller's objects.
# BuildPrune wipes the daemon's one build cache, every tenant's (its filters name no owner:
# moby builder/builder-next/builder.go Prune), so it is refused rather than narrowed.
# ContainerPrune: the daemon's prune can be narrowed by label only, and a label does not make a
# container the caller's (`trusted_owner`): every build step's container sits in the `created`
# state between its create and its removal, carrying whatever owner label its image or its
# `LABEL` step gives it, so a prune narrowed to `user:bob` removed (and named) the steps of
# alice's build FROM an image carrying bob's label. Refused rather than emulated: containers
# are removed one by one, by name (`docker rm`), each looked up and pinned like any request.
UNAVAILABLE = frozenset({"SystemDataUsage", "BuildPrune", "ContainerPrune"})
UNAVAILABLE_REASONS = {
    "ContainerPrune": (
        "its filters cannot tell your containers from build steps carrying your label; "
        "remove your containers by name or ID (docker rm)"
    ),
}
# Operations naming an object in their query: (parameter, kind). Checked and pinned like a
# path reference.
QUERY_REFERENCES = {"ImageCommit": "container"}  # operation -> the parameter naming a container
# At most this many objects named in one body are looked up; more is refused.
MAX_REFERENCES = 64
# Builds: the image gets the label through the `labels` query parameter.
LABELLED_BUILD = "ImageBuild"
# Lists (and prunes, and events) narrowed to the caller's label through `filters`.
FILTERED = frozenset(
    {
        "ContainerList",
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


def concerns_objects(operation: str, template: str) -> bool:
    """Whether ownership mode narrows, labels, refuses or looks up anything for this
    operation: what a caller who owns nothing (anonymous) may not do."""
    return (
        operation in UNAVAILABLE
        or operation in FILTERED
        or operation in OWNED_CREATES
        or operation in REFERENCING
        or operation in QUERY_REFERENCES
        or operation == LABELLED_BUILD
        or object_kind(operation, template) is not None
    )


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
    containers are labelled too, so that they belong to the same caller; a network is created
    only under a name nobody holds (`CheckDuplicate`)."""
    # One JSON value only: 20.10 decodes the first and ignores the rest, so a label written
    # after a second value would be ignored, and one inside the first kept.
    _one_object(body)
    text = body.rstrip(b" \t\r\n")
    label = json.dumps({OWNER_LABEL: owner}).encode()
    addition = b'"Labels":' + label
    if operation in ("ServiceCreate", "ServiceUpdate"):
        addition += b',"TaskTemplate":{"ContainerSpec":{"Labels":' + label + b"}}"
    if operation == "NetworkCreate":
        # Network names are not unique: with `CheckDuplicate: false` the 20.10 daemon creates
        # a second network of a name another caller holds, and answers with a warning naming
        # the holder's network ID (daemon/network.go createNetwork); every look-up of that name
        # is then ambiguous (400), breaking the holder's requests. Written last, the check is
        # always made: the name taken is a 409 that names no one
        # (api/server/router/network/network_routes.go nameConflict). API 1.44 and newer
        # dropped the field and always check (daemon/libnetwork/controller.go NewNetwork);
        # Go ignores the unknown key there.
        addition += b',"CheckDuplicate":true'
    return with_members_last(text, addition)


def with_members_last(body: bytes, members: bytes) -> bytes:
    """A body that is one JSON object (checked by the caller) with `members` (`"Key":value`
    pairs, comma-separated) written after all of its own: Go's decoder applies every key in
    order, so these win over whatever the client wrote (a map merges key by key, a struct field
    by field, a slice or a scalar is replaced). Used for the owner label and for a policy's
    defaults (body/defaults.py)."""
    text = body.rstrip(b" \t\r\n")
    inner = text[:-1].rstrip(b" \t\r\n")
    separator = b"" if inner.endswith(b"{") else b","
    return inner + separator + members + b"}"


def with_build_label(raw_target: str, owner: str) -> str:
    """A build's target with the owner label emptied and the builder named under
    `BUILT_BY_LABEL` in its `labels` (a JSON object), and its step containers always removed.

    An image never vouches for an owner (see `trusted_owner`): the classic builder creates
    each `RUN` step's container from the previous step's image config, labels included
    (moby builder/dockerfile/internals.go create, containerbackend.go), so an image carrying
    `user:bob` would make the step containers of anyone's build `FROM` it bob's. The build's
    `labels` are applied as a last `LABEL` instruction (builder/dockerfile/builder.go
    buildLabelOptions), after whatever the Dockerfile says, so the owner label ends empty.
    `rm` and `forcerm` are forced on: a step container left behind is a stopped container
    carrying its image's labels, which a prune narrowed by label could remove for another
    caller (the daemon reads the first value: the only one kept)."""

    def label(labels: dict[str, object]) -> dict[str, object]:
        return {**labels, OWNER_LABEL: "", BUILT_BY_LABEL: owner}

    target = _with_json_parameter(raw_target, "labels", label)
    return _with_parameter(_with_parameter(target, "rm", "1"), "forcerm", "1")


def with_commit_label(raw_target: str, owner: str) -> str:
    """A commit's target with one more `changes` entry, last, that empties the owner label of
    the image made (and names the committer under `BUILT_BY_LABEL`). The daemon applies every
    `changes` entry in order on top of the body's config (moby builder/dockerfile/builder.go
    BuildFromConfig), then fills only the labels still unset from the container's config
    (daemon/commit.go merge): the last `LABEL` wins over the body, the other changes and the
    container's own owner label."""
    change = f'LABEL {OWNER_LABEL}=""'
    if _PLAIN_OWNER.fullmatch(owner):
        # Provenance only, and only when it needs no quoting in a Dockerfile word.
        change += f" {BUILT_BY_LABEL}={owner}"
    path, _, query = raw_target.partition("?")
    addition = urlencode([("changes", change)], quote_via=quote)
    return path + "?" + (query + "&" if query else "") + addition


# Creates whose image is looked up first: it must not carry the caller's own owner label.
IMAGE_CHECKED = frozenset({"ContainerCreate", "ServiceCreate", "ServiceUpdate"})


def created_image(operation: str, body: bytes) -> str | None:
    """The image a ContainerCreate body names, or a service's task containers will run
    (`TaskTemplate.ContainerSpec.Image`), as Go reads it (the last non-null value, keys
    folded), or None. ValueError for a body that cannot be read."""
    top: gojson.Struct = (_one_object(body),)
    if operation != "ContainerCreate":
        task = gojson.struct(top, "TaskTemplate", pointer=False)
        top = gojson.struct(task, "ContainerSpec", pointer=True)
    image = gojson.scalar(top, "Image")
    return image if isinstance(image, str) and image else None


def vouching_image_problem(image: str, owner: str) -> str:
    """Why a container may not be created from an image that carries `owner`'s own label."""
    return (
        f"the image {image!r} carries your owner label ({OWNER_LABEL}={owner}): a container "
        "created from it could not be told from one the daemon created from the image by "
        "itself (a build's step), and would not be yours; build it again through dockgate, "
        f"or give it an empty owner label (LABEL {OWNER_LABEL}=)"
    )


def continued_change(query: str) -> str | None:
    """Why the client's `changes` would swallow the one dockgate appends (with_commit_label),
    or None. The daemon joins them with newlines and parses the whole as a Dockerfile (moby
    builder/dockerfile/builder.go BuildFromConfig): an entry ending with the escape character
    (`\\`, or `` ` `` after an `# escape=` directive), trailing blanks allowed, continues onto
    dockgate's `LABEL` line, which would become part of the client's instruction (`ENV x \\`
    makes it an environment value), and an entry holding a line break is several lines. Judged
    in ownership mode whatever the guardrails say (they refuse the same, when on)."""
    for key, value in query_pairs(query):
        if key != "changes":
            continue
        if "\n" in value or "\r" in value or value.rstrip().endswith(("\\", "`")):
            return (
                "a changes entry must be one single-line instruction that does not continue "
                "onto the next (ownership mode appends its own)"
            )
    return None


def image_owner_of(image_answer: object) -> str | None:
    """The owner label of an image (the daemon's `GET /images/{id}/json` answer)."""
    config = image_answer.get("Config") if isinstance(image_answer, dict) else None
    labels = config.get("Labels") if isinstance(config, dict) else None
    owner = labels.get(OWNER_LABEL) if isinstance(labels, dict) else None
    return owner if isinstance(owner, str) else None


# No identity is longer (plan refuses one that is): a longer owner label is nobody's, so that
# the verdicts and image owners kept in memory (ownership/lookup.py) stay small whatever labels
# callers give their images (an owner label of 4 MB was kept whole by the image-owner cache).
MAX_OWNER_BYTES = 1024
# The log driver the classic builder gives EVERY container it creates, one per step (RUN,
# LABEL, COPY, ENV, ...: moby v20.10.24 builder/dockerfile/internals.go `defaultLogConfig =
# container.LogConfig{Type: "none"}`, used by hostConfigFromOptions for probeAndCreate; the
# same in daemon/builder/dockerfile/internals.go today). Containers with it are never trusted.
SILENT_LOG_DRIVER = "none"


def trusted_owner(
    container_owner: str | None, image_owner: str | None, log_driver: object
) -> str | None:
    """A container's owner as far as dockgate trusts it: its owner label, unless (a) its log
    driver (as the daemon stored it, `HostConfig.LogConfig.Type`) is `none`, or (b) its
    image carries the same value.

    (a) The classic builder creates each step's container with the log driver `none`
    (SILENT_LOG_DRIVER), with the previous step's image's labels, and for a `LABEL` step
    (also an `ONBUILD LABEL` trigger) with the NEW labels, which its image does not carry
    (moby builder/dockerfile/dispatchers.go dispatchLabel -> internals.go commit ->
    probeAndCreate): (b) alone trusted those. dockgate refuses to create a container or a
    service with the log driver `none` in ownership mode (`silent_log_problem`), and the
    daemon fills an empty type with its default at create (daemon/logs.go
    mergeAndVerifyLogConfig), so no container created through dockgate has it. A log driver
    cannot be changed after the create (ContainerUpdate has no LogConfig; the legacy start
    body that replaced a HostConfig is refused in every policy, body/content.py).

    (b) The daemon gives a container its image's labels under every key the create body did
    not set (daemon/create.go, merge in daemon/commit.go), and dockgate writes the caller's
    owner label last in every create body (`with_owner_label`, and a service's
    `ContainerSpec.Labels`): equal values mean the image put it there (a container created
    from a labelled image straight on the daemon, or by swarm outside dockgate). An image
    whose labels are unknown (`None`: removed) vouches for nothing; with (a) a leftover build
    step stays nobody's whatever happens to its image.

    A label over MAX_OWNER_BYTES is nobody's."""
    if container_owner is None or log_driver == SILENT_LOG_DRIVER:
        return None
    if not isinstance(log_driver, str) or not log_driver:
        return None  # not the daemon's answer (it always names the driver): cannot be judged
    if len(container_owner.encode("utf-8", "surrogatepass")) > MAX_OWNER_BYTES:
        return None
    if container_owner == image_owner:
        return None
    return container_owner


def log_driver_of(container_answer: object) -> object:
    """The log driver a container inspect answer names (`HostConfig.LogConfig.Type`)."""
    host = container_answer.get("HostConfig") if isinstance(container_answer, dict) else None
    config = host.get("LogConfig") if isinstance(host, dict) else None
    return config.get("Type") if isinstance(config, dict) else None


def silent_log_problem(operation: str, body: bytes, daemon_default: str | None) -> str | None:
    """Why a ContainerCreate, ServiceCreate or ServiceUpdate may not be made in ownership mode
    because of its log driver, or None: `none` (SILENT_LOG_DRIVER), the build steps' driver,
    would make the container nobody's (`trusted_owner`). An empty or absent driver is the
    daemon's default (`daemon_default`, /info's LoggingDriver; None: unknown), refused when that
    is `none`. Read as Go reads the body (struct fields case-insensitive, the value exact: the
    daemon refuses a driver it does not know, `None` included). ValueError for a body that
    cannot be read."""
    one: gojson.Struct = (_one_object(body),)
    if operation == "ContainerCreate":
        # The HostConfig the daemon uses: `HostConfig`, or the deprecated top-level fields
        # when it is absent (runconfig/config.go ContainerConfigWrapper.getHostConfig).
        inner = gojson.struct(one, "HostConfig", pointer=True)
        host = inner if inner else one
        log = gojson.struct(host, "LogConfig", pointer=False)
        driver = gojson.scalar(log, "Type")
        where = "HostConfig.LogConfig.Type"
    else:
        # swarm TaskSpec.LogDriver *Driver; absent, the node's default applies (daemon/cluster/
        # executor/container/container.go hostConfig).
        task = gojson.struct(one, "TaskTemplate", pointer=False)
        log = gojson.struct(task, "LogDriver", pointer=True)
        driver = gojson.scalar(log, "Name")
        where = "TaskTemplate.LogDriver.Name"
    if driver == SILENT_LOG_DRIVER:
        return (
            f"the log driver {SILENT_LOG_DRIVER!r} ({where}) is the one build steps run with: "
            "in ownership mode a container with it cannot be told from a build step and "
            "would not be yours; use another log driver"
        )
    if (driver is gojson.MISSING or driver == "") and daemon_default == SILENT_LOG_DRIVER:
        return (
            f"the daemon's default log driver is {SILENT_LOG_DRIVER!r}, the one build steps "
            "run with: in ownership mode a container with it would not be yours; name another "
            f"log driver ({where}, e.g. --log-driver local)"
        )
    return None


def vouched_list(
    entries: list[object], owner: str, verdicts: Mapping[str, str | None]
) -> list[object]:
    """A container list (the daemon's `GET /containers/json`, already narrowed to `owner`'s
    label) with only the containers trusted as `owner`'s: `verdicts` maps container IDs to
    their trusted owner (`trusted_owner`); a container without a verdict (its look-up failed)
    is left out."""
    kept: list[object] = []
    for entry in entries:
        cid = entry.get("Id") if isinstance(entry, dict) else None
        if isinstance(cid, str) and cid and verdicts.get(cid) == owner:
            kept.append(entry)
    return kept


def container_ids_of(entries: list[object]) -> list[str]:
    """The distinct container IDs of a container list's entries, in order."""
    seen: dict[str, None] = {}
    for entry in entries:
        cid = entry.get("Id") if isinstance(entry, dict) else None
        if isinstance(cid, str) and cid:
            seen.setdefault(cid, None)
    return list(seen)


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
    try:
        value = json.loads(given) if given else {}  # a ValueError is a 400, as the daemon's
    except RecursionError:
        raise ValueError(f"{key} is nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a JSON object")  # noqa: TRY004 - a 400 like the rest
    try:
        # Written back as read: a value Python just read deep enough is also written (the
        # same recursion limit), but it is bounded here all the same, as a 400.
        written = json.dumps(change(value), separators=(",", ":"))
    except RecursionError:
        raise ValueError(f"{key} is nested too deeply") from None
    kept = [(name, v) for name, v in pairs if name != key]
    kept.append((key, written))
    return path + "?" + urlencode(kept, quote_via=quote)


# ----- references to other objects inside a request body --------------------------------------

# Bodies that name other objects, which must then be the caller's too.
REFERENCING = frozenset(
    {"ContainerCreate", "ServiceCreate", "ServiceUpdate", "NetworkConnect", "NetworkDisconnect"}
)


def references(operation: str, body: bytes) -> list[tuple[Kind, str]]:
    """The objects a body names (read as the daemon reads it): networks, containers, volumes,
    secrets and configs it would join, share, mount or hand to a task. ValueError for a body
    that cannot be read here (refused: Go may read what Python cannot, e.g. deeper nesting)."""
    top = _one_object(body)
    found: list[tuple[Kind, str]] = []
    one = (top,)
    if operation in ("NetworkConnect", "NetworkDisconnect"):
        _add(found, CONTAINER, gojson.scalar(one, "Container"))
        # The daemon prefers an endpoint's NetworkID to the network the path names.
        endpoint = gojson.struct(one, "EndpointConfig", pointer=True)
        _add(found, NETWORK, gojson.scalar(endpoint, "NetworkID"))
    elif operation == "ContainerCreate":
        inner = gojson.struct(one, "HostConfig", pointer=True)
        host = inner if inner else one
        _container_references(host, found)
        networking = gojson.struct(one, "NetworkingConfig", pointer=True)
        endpoints = gojson.mapping(networking, "EndpointsConfig") or {}
        for network, settings in endpoints.items():
            if network not in PREDEFINED_NETWORKS:
                found.append((NETWORK, network))
            if isinstance(settings, gojson.GoObject):
                # Preferred by the daemon over the key.
                _add(found, NETWORK, gojson.scalar((settings,), "NetworkID"))
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


def _one_object(body: bytes) -> gojson.GoObject:
    """The body's one JSON object, or ValueError (a 400): not JSON, not an object, more than
    one value, or nested deeper than Python reads (Go reads deeper: never guess)."""
    try:
        parsed = gojson.parse(body, strict_end=True)
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, gojson.GoObject):
        raise ValueError("the body must be one JSON object")  # noqa: TRY004 - a 400
    return parsed


def hex_name_problem(operation: str, query: str, body: bytes) -> str | None:
    """A name made only of hex digits for a new container, network, service, secret or
    config: it could be read as (a prefix of) another object's ID wherever it is named later,
    and so stand for someone else's object. None when the name is fine. Names are judged as
    the daemon stores them: a container's without its leading `/`; networks (daemon/network.go
    createNetwork), services, secrets and configs (swarmkit's name validation) are stored as
    given. Volumes are not judged: the daemon finds a volume by its exact name only."""
    names: list[object] = []
    if operation in ("ContainerCreate", "ContainerRename"):
        # The daemon names the container without one leading `/` (daemon/names.go
        # reserveName: `strings.TrimPrefix(name, "/")`; rename.go adds the `/` back): judged
        # as it will be stored, so `/abc123` is `abc123`.
        names += [
            v.removeprefix("/") for k, v in parse_qsl(query, keep_blank_values=True) if k == "name"
        ]
    elif operation in ("NetworkCreate", "ServiceCreate", "SecretCreate", "ConfigCreate"):
        try:
            top = gojson.parse(body)
        except (ValueError, RecursionError):
            return None  # refused elsewhere
        if isinstance(top, gojson.GoObject):
            names.append(gojson.scalar((top,), "Name"))
    for name in names:
        if isinstance(name, str) and name and all(c in "0123456789abcdef" for c in name.lower()):
            return f"name {name!r}: names made only of hex digits could stand for another ID"
    return None


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
        parsed = parse_link(link)  # as the daemon reads it; what it refuses names nothing
        if parsed is not None:
            _add(found, CONTAINER, parsed[0])
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


# ----- what to do with one request: a plan the proxy carries out --------------------------------


def refuse(status: int, message: str) -> Refusal:
    """Ownership's refusal: 400 for what cannot be read here, else as the step says."""
    return Refusal(status, message, "ownership", "bad filters" if status == 400 else "ownership")


@dataclass(frozen=True, slots=True)
class LookUp:
    """Ask the daemon who owns `reference` (of `kind`); not the caller's: `status` with the
    kind's not-found message; the caller's: go on with `pin(full_id)` as the new target."""

    kind: Kind
    reference: str
    pin: Callable[[str], str]
    status: int = 404


Plan = Refusal | LookUp | str | None  # a str is the rewritten target; None: go on as it is


def plan(operation: str, template: str, raw_target: str, path: str, owner: str) -> Plan:
    """What ownership mode does with one allowed request (`path`: its decoded path)."""
    if operation in UNAVAILABLE:
        reason = UNAVAILABLE_REASONS.get(operation)
        return refuse(
            403,
            f"dockgate: {operation} is not available in ownership mode"
            + (f": {reason}" if reason else ""),
        )
    if len(owner.encode("utf-8", "surrogatepass")) > MAX_OWNER_BYTES:
        # Longer owner labels are nobody's (trusted_owner): refused rather than made and lost.
        return refuse(403, f"dockgate: identities over {MAX_OWNER_BYTES} bytes cannot own objects")
    query = raw_target.partition("?")[2]
    try:
        if operation in FILTERED:
            return with_owner_filter(raw_target, owner)
        if operation in ("ContainerCreate", "ContainerRename"):
            problem = hex_name_problem(operation, query, b"")
            if problem is not None:
                return refuse(400, f"dockgate: {problem}")
        if operation == LABELLED_BUILD:
            if _buildkit_build(query):
                return refuse(403, BUILDKIT_REFUSED)
            return _build_plan(with_build_label(raw_target, owner))
    except ValueError as exc:
        return refuse(400, f"dockgate: {exc}")
    if operation == "ImageCreate" and query_value(query, "fromSrc"):
        # An import applies its `changes` as a commit does (daemon/images/image_import.go
        # ImportImage, BuildFromConfig): its owner label is emptied the same way.
        problem = continued_change(query)
        if problem is not None:
            return refuse(400, f"dockgate: {problem}")
        return with_commit_label(raw_target, owner)
    if operation in QUERY_REFERENCES:
        parameter = QUERY_REFERENCES[operation]
        value = query_value(query, parameter)
        problem = continued_change(query)
        if problem is not None:
            return refuse(400, f"dockgate: {problem}")
        if not value:
            return None

        def pin(full_id: str) -> str:
            # The committed image's owner label ends empty (with_commit_label).
            return with_commit_label(_with_parameter(raw_target, parameter, full_id), owner)

        return LookUp(CONTAINER, value, pin)
    kind = object_kind(operation, template)
    if kind is None:
        return None
    found = reference_of(path, kind)
    if found is None:
        return None
    index, reference = found
    return LookUp(kind, reference, lambda full_id: with_reference(raw_target, index, full_id))


# BuildKit keeps one daemon-wide store of `RUN --mount=type=cache` directories (keyed by the
# Dockerfile's `id=`, moby builder/builder-next with buildkit's cache mounts), of local
# sources and of cache records: a tenant's build reads what another's left there and can
# plant files for the other's next build. The classic builder has no cache mounts.
BUILDKIT_REFUSED = (
    "dockgate: BuildKit builds (version=2) share their cache mounts between callers and are "
    "not available in ownership mode; use the classic builder (DOCKER_BUILDKIT=0)"
)


def _buildkit_build(query: str) -> bool:
    """Whether a build asks for BuildKit. The daemon reads the first `version` value, "1" or
    "2" (moby api/server/router/build/build_routes.go parseVersion, anything else is refused):
    any value but "1" or "" in any position is taken as BuildKit."""
    return any(key == "version" and value not in ("", "1") for key, value in query_pairs(query))


def _build_plan(target: str) -> Plan:
    """A build's `networkmode` may name a network or `container:X`: someone else's is refused
    (403, as for body references), the caller's is pinned to its full ID."""
    mode = query_value(target.partition("?")[2], "networkmode")
    if not mode or mode in PREDEFINED_NETWORKS:
        return target
    if mode.startswith("container:"):
        kind, reference, prefix = CONTAINER, mode.partition(":")[2], "container:"
    else:
        kind, reference, prefix = NETWORK, mode, ""
    return LookUp(
        kind,
        reference,
        lambda full_id: _with_parameter(target, "networkmode", prefix + full_id),
        status=403,
    )


def _with_parameter(raw_target: str, key: str, value: str) -> str:
    path, _, query = raw_target.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != key]
    kept.append((key, value))
    return path + "?" + urlencode(kept, quote_via=quote)


# ----- the daemon's answers that would show another caller's objects ----------------------------

# The daemon's container list, read whole in ownership mode: the containers whose owner label
# is not trusted as the caller's are taken out (trusted_owner, lookup.vouched_containers).
VOUCHED_LIST = (200, "ContainerList")
# The daemon's answers read whole in ownership mode, by status and operation: a name clash names
# the container that holds the name; creating a volume whose name exists returns that volume.
CHECKED_ANSWERS = frozenset(
    {(409, "ContainerCreate"), (409, "ContainerRename"), (201, "VolumeCreate")}
)
# `... is already in use by container "3f2c...". You have to remove ...` (moby's nameConflict).
_HOLDER_ID = re.compile(r'by container \\?"?[0-9a-f]{64}\\?"?')


def checked_answer(operation: str, status: int, body: bytes, owner: str) -> bytes | Refusal:
    """One of `CHECKED_ANSWERS`, made safe to show `owner`: the clash's message without the
    holder's ID (its name is what the caller asked for; which container holds it is not the
    caller's business), or, for a volume that is someone else's, a 409 in place of the
    volume. ValueError or TypeError for an answer that is not the JSON the daemon sends."""
    if status == 409:
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            # API versions before 1.24 get the error as plain text.
            text = body.decode("utf-8", errors="replace")
            return _HOLDER_ID.sub("by another container", text).encode()
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            document["message"] = _HOLDER_ID.sub("by another container", document["message"])
            return json.dumps(document).encode() + b"\n"
        return _HOLDER_ID.sub("by another container", body.decode("utf-8", "replace")).encode()
    document = daemon_object(operation, body)
    labels = document.get("Labels")
    holder = labels.get(OWNER_LABEL) if isinstance(labels, dict) else None
    if holder != owner:
        name = document.get("Name")
        return refuse(409, f"dockgate: a volume named {name!r} exists and is not yours")
    return body
