"""The audit trail: one JSON object per line and per policy decision, apart from the access log.

A record says who (identity, how they authenticated, from where) asked for what (method, target,
Engine API operation, the object it is about and, for the operations that start processes, what
they would run) and what the gateway decided (allow/deny, policy, reason) and what came of it
(status, bytes, duration).

Secrets never reach the audit log: no header value is recorded (only, for example, that an
``X-Registry-Auth`` header was present), environment variables are recorded by name only, and
of a request body only the few fields listed in `body_details` are kept. Every string is cut at
`MAX_STRING_CHARS` and nesting at `_MAX_DEPTH`, so one record stays bounded.

Request bodies are read the way the daemon reads them (Go's ``encoding/json`` decoding into the
API's structs), because the record must name what the daemon will actually run, not what a
lenient reader guesses: object keys match field names case-insensitively (with Go's Unicode
simple folding, so ``"U\u017fer"`` sets ``User``), the last duplicate key wins, a ``null`` leaves a
string or bool field unchanged but clears a slice or pointer, objects given twice for the same
struct field merge, invalid UTF-8 is replaced, and only the first JSON value counts (20.10
ignores what follows it; newer daemons refuse the request).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from dockgate.api.routes import RouteMatch
from dockgate.body.gojson import MISSING, GoObject, Struct, parse, scalar, slice_, struct
from dockgate.http.query import query_value
from dockgate.observe.logsink import SinkLog, open_sink

AUDIT_BODY_LIMIT = 256 * 1024  # bytes of a request body the gateway keeps for body_details
AUDITED_BODIES = frozenset({"ContainerCreate", "ContainerExec", "ServiceCreate", "ServiceUpdate"})
MAX_STRING_CHARS = 4096  # a longer string is cut to this many characters, the last being "…"
ELLIPSIS = "…"
USER_AGENT_CHARS = 256  # of a User-Agent header kept in the record
_MAX_DEPTH = 8  # nesting kept in `details`; deeper values become "…"

Details: TypeAlias = dict[str, object]

UNPARSABLE: Final[Details] = {"body": "unparsable"}
TOO_LARGE: Final[Details] = {"body": "too large to record"}


@dataclass(slots=True)
class AuditRecord:
    started: float  # time.time() when the request head was read
    # user / token identity / certificate name; "anonymous"; "-" when no authentication is
    # configured at all
    identity: str
    auth: str  # "basic" | "token" | "certificate" | "anonymous" | "none"
    # | "container" | "process": named by the unix-socket peer (auth/peerlookup.py); the
    # detail is the container's full ID, or `gid:N`
    auth_detail: str  # token name, or the certificate subject; "" otherwise
    # effective client address ("10.0.0.7", "unix"), after trusted X-Forwarded-For / PROXY
    source: str
    peer: str  # the directly connected peer ("10.0.0.2:51234" or "unix")
    method: str
    target: str  # the request-target as received
    operation: str  # e.g. "ContainerCreate", or "unknown"/"-"
    object: str | None  # the target object id or name (see target_object)
    allowed: bool
    policy: str | None
    reason: str  # "rule 3", "read-only", "no rule allows it", "unauthenticated", ...
    status: int
    bytes_in: int
    bytes_out: int
    duration_s: float
    # from body_details, plus e.g. {"registry_auth": True} (never a header's value)
    details: Details | None = None
    # Rollout modes (policy/modes.py, observe/modefields.py): set only for a policy not in
    # enforce mode: its mode, what enforce would have refused ({status, stage, reason,
    # message}) and what it would have hidden of the answer.
    mode: str | None = None
    would_deny: Details | None = None
    would_hide: list[str] | None = None
    # The request's User-Agent (first USER_AGENT_CHARS characters), for `dockgate learn`;
    # None without one.
    user_agent: str | None = None
    # A policy's defaults (body/defaults.py): what was written into the create's body, or in
    # audit mode what would have been ({"labels": {...}, "memory": N, ...}); None: nothing.
    injected: Details | None = None
    would_inject: Details | None = None
    # Allowed only on the objects a scope covers (policy/scopes.py): the rules, as
    # `rule 2 (labels=team=web)`; None: no scope (every object).
    scope: str | None = None


# ----- rendering --------------------------------------------------------------------------------


def format_time(timestamp: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-27T23:11:24.123Z``."""
    try:
        seconds, millis = divmod(round(timestamp * 1000), 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):  # not a plausible time.time(): use "now"
        seconds, millis = divmod(round(time.time() * 1000), 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{millis:03d}Z"


def _cut(text: str) -> str:
    if len(text) > MAX_STRING_CHARS:
        return text[: MAX_STRING_CHARS - 1] + ELLIPSIS
    return text


def _bounded(value: object, depth: int = 0) -> object:
    """`value` as plain JSON data with strings cut, nesting limited, no NaN/Infinity."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return ELLIPSIS
    if isinstance(value, GoObject):
        return {_cut(k): _bounded(v, depth + 1) for k, v in value.pairs}
    if isinstance(value, dict):
        return {_cut(str(k)): _bounded(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_bounded(v, depth + 1) for v in value]
    return _cut(str(value))


def render(record: AuditRecord) -> str:
    """The record as one line of JSON (without the newline)."""
    fields: dict[str, object] = {
        "time": format_time(record.started),
        "identity": record.identity,
        "auth": record.auth,
    }
    if record.auth_detail:
        fields["auth_detail"] = record.auth_detail
    fields["source"] = record.source
    fields["peer"] = record.peer
    fields["method"] = record.method
    fields["path"] = record.target
    fields["operation"] = record.operation
    if record.object is not None:
        fields["object"] = record.object
    fields["decision"] = "allow" if record.allowed else "deny"
    fields["policy"] = record.policy
    fields["reason"] = record.reason
    fields["status"] = record.status
    fields["bytes_in"] = record.bytes_in
    fields["bytes_out"] = record.bytes_out
    fields["duration_ms"] = round(record.duration_s * 1000, 3)
    if record.details is not None:
        fields["details"] = record.details
    if record.mode is not None:
        fields["mode"] = record.mode
    if record.would_deny is not None:
        fields["would_deny"] = record.would_deny
    if record.would_hide:
        fields["would_hide"] = record.would_hide
    if record.user_agent is not None:
        fields["user_agent"] = record.user_agent
    if record.injected:
        fields["injected"] = record.injected
    if record.would_inject:
        fields["would_inject"] = record.would_inject
    if record.scope is not None:
        fields["scope"] = record.scope
    return json.dumps(_bounded(fields, -1), ensure_ascii=True, separators=(",", ":"))


class AuditLog(SinkLog):
    """Writes `AuditRecord`s as JSON lines to a `LineSink`; without one it writes nothing."""

    def write(self, record: AuditRecord) -> None:
        if self._sink is not None:
            self._sink.write(render(record))


def open_audit_log(target: str) -> AuditLog:
    """`-` is stdout, `off` an AuditLog that writes nothing (``enabled`` False), anything else a
    file appended to (created with mode 0600). Raises OSError when the file cannot be opened."""
    return AuditLog(open_sink(target))


# ----- the object of a request ------------------------------------------------------------------

_OBJECT_PARAMS = ("id", "name")  # the spec's path variables naming the target object


def target_object(match: RouteMatch | None, query: str) -> str | None:
    """The object a request is about: the route's ``id``/``name`` path variable (the container of
    ``/containers/web/start`` is ``web``), or, for the operations that name it in the query,
    ContainerCreate's ``name``, ImageCreate's ``fromImage[:tag]`` (an import's ``repo[:tag]``),
    ImagePush's ``name[:tag]``, ImageCommit's ``container``, PluginPull's ``remote`` and
    PluginCreate's ``name``. None when there is none (or it is empty)."""
    if match is None:
        return None
    found: str | None = None
    for param in _OBJECT_PARAMS:
        found = match.params.get(param)
        if found is not None:
            break
    operation = match.operation.name
    if operation in {"ContainerCreate", "PluginCreate"}:
        found = query_value(query, "name")
    elif operation == "ImageCreate":
        image = query_value(query, "fromImage") or query_value(query, "repo")
        found = _with_tag(image, query_value(query, "tag")) if image else None
    elif operation == "ImagePush":
        found = _with_tag(found, query_value(query, "tag")) if found else None
    elif operation == "ImageCommit":
        found = query_value(query, "container")
    elif operation == "PluginPull":
        found = query_value(query, "remote")
    return found or None


def _with_tag(image: str, tag: str | None) -> str:
    if not tag:
        return image
    # The daemon reads a `tag` that parses as a digest ("sha256:...") as one: name@digest.
    return f"{image}@{tag}" if ":" in tag else f"{image}:{tag}"


# ----- request bodies, read as the daemon reads them -------------------------------------------


def _env_names(struct: Struct) -> list[str] | None:
    """The names of an Env list (never its values); None when there is no such list."""
    env = slice_(struct, "Env")
    if not isinstance(env, list):
        return None
    return [item.partition("=")[0] for item in env if isinstance(item, str)]


def _mounts(struct: Struct) -> list[dict[str, object]] | None:
    """Type, Source and Target of each mount, and ``read_only`` when it is (never its options:
    driver options hold secrets)."""
    mounts = slice_(struct, "Mounts")
    if not isinstance(mounts, list):
        return None
    summary: list[dict[str, object]] = []
    for mount in mounts:
        if isinstance(mount, GoObject):
            item: dict[str, object] = {}
            for field in ("Type", "Source", "Target"):
                value = scalar((mount,), field)
                if value is not MISSING:
                    item[field.lower()] = value
            if scalar((mount,), "ReadOnly") is True:
                item["read_only"] = True
            summary.append(item)
    return summary


# HostConfig's namespace fields and the guardrail name of each (body/guardrails.py reads the
# same fields); only `host` and `container:X` values share a namespace, the rest are names of
# networks or the defaults.
_NAMESPACE_FIELDS = (
    ("NetworkMode", "network"),
    ("PidMode", "pid"),
    ("IpcMode", "ipc"),
    ("UTSMode", "uts"),
    ("UsernsMode", "userns"),
    ("CgroupnsMode", "cgroup"),
)


def _namespaces(host: Struct) -> list[str]:
    """`network`, `pid:container`, ...: the host namespaces (and other containers') a create
    joins, as the `namespaces` guardrail names them."""
    found: list[str] = []
    for field, name in _NAMESPACE_FIELDS:
        value = scalar(host, field)
        if value == "host":
            found.append(name)
        elif isinstance(value, str) and value.startswith("container:"):
            found.append(f"{name}:container")
    return found


def _devices(host: Struct) -> list[object]:
    """The host side of each `--device` (PathOnHost), and `gpus` for a device request."""
    found: list[object] = []
    devices = slice_(host, "Devices")
    if isinstance(devices, list):
        for device in devices:
            if isinstance(device, GoObject):
                path = scalar((device,), "PathOnHost")
                found.append(path if path is not MISSING else "?")
    requests = slice_(host, "DeviceRequests")
    if isinstance(requests, list) and requests:
        found.append("device-requests")
    rules = slice_(host, "DeviceCgroupRules")
    if isinstance(rules, list) and rules:
        found.append("cgroup-rules")
    return found


def _put(details: Details, key: str, value: object) -> None:
    if value is not MISSING:
        details[key] = value


def _container_create(config: Struct) -> Details:
    details: Details = {}
    _put(details, "image", scalar(config, "Image"))
    _put(details, "cmd", slice_(config, "Cmd", strslice=True))
    _put(details, "entrypoint", slice_(config, "Entrypoint", strslice=True))
    host = struct(config, "HostConfig", pointer=True)
    if scalar(host, "Privileged") is True:
        details["privileged"] = True
    binds = slice_(host, "Binds")
    if binds is not MISSING and binds != []:
        details["binds"] = binds
    mounts = _mounts(host)
    if mounts:
        details["mounts"] = mounts
    names = _env_names(config)
    if names:
        details["env_names"] = names
    # For `dockgate learn` (policy/learn.py): what the guardrails judge beyond the above.
    # CapAdd is a strslice (a lone string is one name); API 1.40's Capabilities adds too.
    cap_add = [
        name
        for field in ("CapAdd", "Capabilities")
        for value in (slice_(host, field, strslice=True),)
        if isinstance(value, list)
        for name in value
    ]
    if cap_add:
        details["cap_add"] = cap_add
    devices = _devices(host)
    if devices:
        details["devices"] = devices
    namespaces = _namespaces(host)
    if namespaces:
        details["namespaces"] = namespaces
    return details


def _exec_create(config: Struct) -> Details:
    details: Details = {}
    _put(details, "cmd", slice_(config, "Cmd"))
    user = scalar(config, "User")
    if user is not MISSING and user != "":
        details["user"] = user
    if scalar(config, "Privileged") is True:
        details["privileged"] = True
    _put(details, "tty", scalar(config, "Tty"))
    names = _env_names(config)
    if names:
        details["env_names"] = names
    return details


def _service(spec: Struct, *, create: bool) -> Details:
    details: Details = {}
    if create:
        _put(details, "name", scalar(spec, "Name"))
    task = struct(spec, "TaskTemplate", pointer=False)
    container = struct(task, "ContainerSpec", pointer=True)
    _put(details, "image", scalar(container, "Image"))
    _put(details, "cmd", slice_(container, "Command"))
    _put(details, "args", slice_(container, "Args"))
    mounts = _mounts(container)
    if mounts:
        details["mounts"] = mounts
    names = _env_names(container)
    if names:
        details["env_names"] = names
    return details


def body_details(operation: str, body: bytes, truncated: bool) -> Details | None:
    """What the request body of an operation in `AUDITED_BODIES` asks the daemon to run.

    ContainerCreate: image, cmd, entrypoint, privileged (only if true), binds (if any), mounts
    (type/source/target, and read_only when true; if any), env_names, and (for `dockgate
    learn`) cap_add, devices (host paths), namespaces (`network`, `pid:container`, ...), each
    only if any. ContainerExec (exec create): cmd, user (if set),
    privileged (only if true), tty, env_names. ServiceCreate/ServiceUpdate: image, cmd, args
    (TaskTemplate.ContainerSpec's Image, Command, Args), mounts, env_names, and for a create the
    service's name. Absent fields are left out; a field of the wrong type is recorded as sent
    (the daemon refuses such a request). `{"body": "unparsable"}` for a body that is not a JSON
    object, `{"body": "too large to record"}` when `truncated`, None for other operations.
    Never raises.
    """
    if operation not in AUDITED_BODIES:
        return None
    if truncated:
        return dict(TOO_LARGE)
    try:
        parsed = parse(body)
    except (ValueError, RecursionError):  # JSONDecodeError, an int too long to convert, ...
        return dict(UNPARSABLE)
    if not isinstance(parsed, GoObject):
        return dict(UNPARSABLE)
    top = (parsed,)
    if operation == "ContainerCreate":
        details = _container_create(top)
    elif operation == "ContainerExec":
        details = _exec_create(top)
    else:
        details = _service(top, create=operation == "ServiceCreate")
    bounded = _bounded(details)
    assert isinstance(bounded, dict)
    return bounded


def audit_details(
    operation: str, body: bytes, truncated: bool, *, registry_auth: bool = False
) -> Details | None:
    """`body_details`, plus ``"registry_auth": True`` when the request carried an
    ``X-Registry-Auth`` header (its value is never recorded)."""
    details = body_details(operation, body, truncated)
    if registry_auth:
        details = {**(details or {}), "registry_auth": True}
    return details


class _Injection(Protocol):
    @property
    def injected(self) -> Mapping[str, object] | None: ...
    @property
    def mode(self) -> str: ...


def injected_fields(allowed: _Injection | None) -> dict[str, Details | None]:
    """The record's `injected` (or, in audit mode, `would_inject`) from an allowed request's
    facts (policy/plan.Allowed); nothing for a refused request."""
    if allowed is None or not allowed.injected:
        return {}
    details = _bounded(dict(allowed.injected))
    assert isinstance(details, dict)
    return {"would_inject" if allowed.mode == "audit" else "injected": details}
