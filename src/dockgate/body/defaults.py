"""Defaults put into what callers create: a policy's `defaults:`, written into the judged body.

A policy may give every container (ContainerCreate) and every service's task containers
(ServiceCreate, ServiceUpdate: a full spec each time) labels, limits, `no-new-privileges`, a
cgroup parent and a log driver. This module is the pure part: what the body already sets (read
as the daemon reads it: `gojson`, and the guardrails' readers in `workload.py` for the limits),
what is to be added, and the body with it added.

Values are written LAST, after everything the client wrote (and after the owner label of
ownership mode: `ownership.operations.with_members_last`, the same machinery), because Go's
decoder applies every key in order: a map given twice merges key by key, the last duplicate
winning, a struct given twice merges field by field, a slice is replaced whole. So a label
written last wins over the client's, and limits written last win over any duplicate the client
hid earlier in the body.

What counts as "set" (the default is written only where it is not, except where said):

- labels: a label the body sets (any value, empty included) is kept; `force_labels` are
  written over it. A service's labels (`Spec.Labels`) and its task containers' labels
  (`TaskTemplate.ContainerSpec.Labels`) are two maps, each given the defaults where it lacks
  them.
- memory: `HostConfig.Memory` (or the top-level one the daemon copies in) above 0; a service's
  `Resources.Limits.MemoryBytes` above 0.
- CPUs: a limit in effect, as the `resources` guardrail reads it: `NanoCpus`, or a positive
  `CpuQuota` (over `CpuPeriod`). `CpuShares` is a weight, not a limit. When the default is
  written, `CpuQuota` and `CpuPeriod` are written 0 with it: a quota of -1 ("unlimited") would
  otherwise override it (moby daemon/oci_linux.go getCPUResources writes the quota over the
  one it computes from NanoCpus), and the daemon refuses NanoCpus with a period.
- PIDs: `PidsLimit` above 0 (a pointer in Go: a later `null` clears it, and 0 or -1 mean
  unlimited); a service's `Resources.Limits.Pids` above 0 (API 1.41; the 20.10 daemon hands it
  to the task container, daemon/cluster/convert/service.go).
- no-new-privileges: always in effect when the default is on. The daemon reads `SecurityOpt`
  in order, the last `no-new-privileges` entry winning (daemon/daemon_unix.go
  parseSecurityOpt: the key is the text before the first `=`, else before the first `:`, and
  the value Go's strconv.ParseBool): every entry with that key is taken out and one
  `no-new-privileges` written at the end, so `no-new-privileges=false`, `:false`, `=0`, `=f`
  do not survive. A service gets `Privileges.NoNewPrivileges` (API 1.46+; the 20.10 daemon
  has no such field and ignores it: docs/policy.md).
- cgroup parent: written over whatever the body says (callers cannot name one under the
  guardrails: the field table refuses `CgroupParent`). Containers only: swarm's container spec
  has no cgroup parent.
- log driver: written where the body names none (an empty `Type`, or a service without
  `LogDriver.Name`), with `log_options` in place of any options the body gave the daemon's
  default driver; `force_log_driver` writes it over the body's own driver too.

Two parts are written at two moments (policy/plan.judge_body): `judged_part` (labels, limits,
no-new-privileges: fields callers may set) before the guardrails judge the body, so that they
judge what will run; `operator_part` (cgroup parent, log driver: the operator's own values for
fields the field table refuses to callers) after, and the body is then judged again
(`rejudged`). Nothing here can make a body ask for more than the caller's did: labels and
limits are added, `no-new-privileges` only ever turned on, and the values are checked when the
policy is loaded against its guardrails (policy/defaultspec.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockgate.body.gojson import MISSING, GoObject, Struct, mapping, parse, scalar, slice_, struct
from dockgate.body.gojson import values as go_values
from dockgate.body.guardrails import Guardrails, find_problem
from dockgate.body.workload import BodyError, Workload, container_create, service_spec
from dockgate.ownership.operations import with_members_last

# The creates that get a policy's defaults.
DEFAULTED = frozenset({"ContainerCreate", "ServiceCreate", "ServiceUpdate"})
NO_NEW_PRIVILEGES = "no-new-privileges"
# strconv.ParseBool's true spellings (Go's strconv/atob.go).
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})

# What was injected, for the audit record and `dockgate check`: {"labels": {...}, "memory": N}.
Injected = dict[str, object]


@dataclass(frozen=True, slots=True)
class Defaults:
    """A policy's `defaults:`, compiled (policy/defaultspec.py validates them)."""

    labels: Mapping[str, str] = field(default_factory=dict)  # added where the body lacks them
    force_labels: Mapping[str, str] = field(default_factory=dict)  # written over the body's
    memory: int | None = None  # bytes
    nano_cpus: int | None = None  # 1e9 per CPU
    pids: int | None = None
    no_new_privileges: bool = False
    cgroup_parent: str | None = None
    log_driver: str | None = None
    log_options: Mapping[str, str] = field(default_factory=dict)
    force_log_driver: bool = False

    @property
    def judged_part(self) -> Defaults:
        """What is written BEFORE the guardrails judge the body: labels, limits and
        no-new-privileges, fields a caller may set itself, so the guardrails judge the values
        that will run (a default memory meets `max_memory`, a default label
        `required_labels`), and the bytes judged are the bytes forwarded."""
        return Defaults(
            labels=self.labels,
            force_labels=self.force_labels,
            memory=self.memory,
            nano_cpus=self.nano_cpus,
            pids=self.pids,
            no_new_privileges=self.no_new_privileges,
        )

    @property
    def operator_part(self) -> Defaults:
        """What is written AFTER the guardrails judged the body: the cgroup parent and the log
        driver, the operator's own values for fields the field table refuses to callers
        (`CgroupParent`; log drivers that send to an address)."""
        return Defaults(
            cgroup_parent=self.cgroup_parent,
            log_driver=self.log_driver,
            log_options=self.log_options,
            force_log_driver=self.force_log_driver,
        )

    def summary(self) -> Injected:
        """What is set, as `inject` records it (for `dockgate doctor`)."""
        found: Injected = {}
        for key in ("labels", "force_labels", "log_options"):
            value = getattr(self, key)
            if value:
                found[key] = dict(value)
        for key in ("memory", "nano_cpus", "pids", "cgroup_parent", "log_driver"):
            value = getattr(self, key)
            if value:
                found[key] = value
        if self.no_new_privileges:
            found["no_new_privileges"] = True
        if self.force_log_driver:
            found["force_log_driver"] = True
        return found

    @property
    def active(self) -> bool:
        return bool(
            self.labels
            or self.force_labels
            or self.memory
            or self.nano_cpus
            or self.pids
            or self.no_new_privileges
            or self.cgroup_parent
            or self.log_driver
        )


def inject(defaults: Defaults, operation: str, body: bytes) -> tuple[bytes, Injected]:
    """The body with the defaults it lacks written last, and what was written (empty: the body
    is returned as it came). `BodyError` (a ValueError) for a body that cannot be read here."""
    if operation not in DEFAULTED or not defaults.active:
        return body, {}
    try:
        top = parse(body, strict_end=True)
    except (ValueError, RecursionError):
        raise BodyError("the body must be one JSON object") from None
    if not isinstance(top, GoObject):
        raise BodyError("the body must be one JSON object")
    if operation == "ContainerCreate":
        members, injected = _container(defaults, top)
    else:
        members, injected = _service(defaults, top)
    if not members:
        return body, {}
    return with_members_last(body, b",".join(members)), injected


def rejudged(guardrails: Guardrails, operation: str, body: bytes) -> str | None:
    """The guardrails' first finding on a body with its defaults (None: it passes), read with
    the same readers as the judged body was."""
    try:
        parsed = parse(body, strict_end=True)
        workload = container_create(parsed) if operation == "ContainerCreate" else None
        if workload is None:
            workload = service_spec(parsed)
    except (ValueError, RecursionError) as exc:
        return str(exc) if isinstance(exc, BodyError) else "the body cannot be read"
    return find_problem(guardrails, workload)


def describe(injected: Mapping[str, object]) -> str:
    """One line for `dockgate check`: `labels team=web; memory 536870912; ...`."""
    parts = []
    for key, value in injected.items():
        if isinstance(value, Mapping):
            shown = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            shown = json.dumps(value)
        parts.append(f"{key.replace('_', ' ')} {shown}")
    return "; ".join(parts)


# ----- containers -------------------------------------------------------------------------


def _container(defaults: Defaults, top: GoObject) -> tuple[list[bytes], Injected]:
    one = (top,)
    workload = container_create(top)  # the limits as the guardrails read them (BodyError)
    inner = struct(one, "HostConfig", pointer=True)
    # The HostConfig the daemon uses: the inner one, or, without it, the deprecated top-level
    # fields (runconfig ContainerConfigWrapper.getHostConfig). Writing an inner HostConfig
    # into a body without one would make the daemon drop the client's top-level fields.
    host: Struct = inner if inner else one
    injected: Injected = {}
    members: list[bytes] = []
    labels = _labels_to_write(defaults, mapping(one, "Labels"))
    if labels:
        members.append(_member("Labels", labels))
        injected["labels"] = labels
    host_members = _limits(defaults, workload, host, injected)
    if defaults.no_new_privileges:
        options = slice_(host, "SecurityOpt")
        written = _without_no_new_privileges(options)
        if written is not None:
            host_members.append(_member("SecurityOpt", written))
            injected["no_new_privileges"] = True
    if defaults.cgroup_parent and scalar(host, "CgroupParent") != defaults.cgroup_parent:
        host_members.append(_member("CgroupParent", defaults.cgroup_parent))
        injected["cgroup_parent"] = defaults.cgroup_parent
    log = struct(host, "LogConfig", pointer=False)
    if _log_wanted(defaults, scalar(log, "Type")):
        assert defaults.log_driver is not None
        host_members.append(
            b'"LogConfig":' + _log_object("Type", "Config", defaults.log_driver, defaults)
        )
        _record_log(defaults, injected)
    if host_members and inner:
        members.append(b'"HostConfig":{' + b",".join(host_members) + b"}")
    else:
        members.extend(host_members)
    return members, injected


def _limits(
    defaults: Defaults, workload: Workload, host: Struct, injected: Injected
) -> list[bytes]:
    members: list[bytes] = []
    if defaults.memory and workload.memory <= 0:
        members.append(_member("Memory", defaults.memory))
        injected["memory"] = defaults.memory
    if defaults.nano_cpus and workload.nano_cpus <= 0:
        members += [
            _member("NanoCpus", defaults.nano_cpus),
            _member("CpuQuota", 0),
            _member("CpuPeriod", 0),
        ]
        injected["nano_cpus"] = defaults.nano_cpus
    if defaults.pids and not _positive(_last_value(host, "PidsLimit")):
        members.append(_member("PidsLimit", defaults.pids))
        injected["pids"] = defaults.pids
    return members


def _without_no_new_privileges(options: object) -> list[str] | None:
    """The SecurityOpt list to write so that no-new-privileges is on: the body's entries
    without any `no-new-privileges` one, then `no-new-privileges`; None when it is on already
    (the last entry with that key is true)."""
    entries = [o for o in options if isinstance(o, str)] if isinstance(options, list) else []
    state: bool | None = None
    for option in entries:
        key, value = _daemon_option(option)
        if key == NO_NEW_PRIVILEGES:
            state = True if value is None else value in _GO_TRUE
    if state:
        return None
    kept = [o for o in entries if _daemon_option(o)[0] != NO_NEW_PRIVILEGES]
    return [*kept, NO_NEW_PRIVILEGES]


def _daemon_option(option: str) -> tuple[str, str | None]:
    """A SecurityOpt entry as moby's parseSecurityOpt splits it: the bare word
    `no-new-privileges` (value None: true), else `key=value`, else `key:value`; exact text,
    no trimming, no case folding."""
    if option == NO_NEW_PRIVILEGES:
        return option, None
    for separator in ("=", ":"):
        if separator in option:
            key, _, value = option.partition(separator)
            return key, value
    return option, ""


# ----- services ---------------------------------------------------------------------------


def _service(defaults: Defaults, top: GoObject) -> tuple[list[bytes], Injected]:
    one = (top,)
    workload = service_spec(top)  # BodyError for a body the guardrails could not read
    task = struct(one, "TaskTemplate", pointer=False)
    spec = struct(task, "ContainerSpec", pointer=True)
    injected: Injected = {}
    members: list[bytes] = []
    labels = _labels_to_write(defaults, mapping(one, "Labels"))
    if labels:
        members.append(_member("Labels", labels))
        injected["labels"] = labels
    container: list[bytes] = []
    task_labels = _labels_to_write(defaults, mapping(spec, "Labels"))
    if task_labels:
        container.append(_member("Labels", task_labels))
        injected["task_labels"] = task_labels
    privileges = struct(spec, "Privileges", pointer=True)
    if defaults.no_new_privileges and scalar(privileges, "NoNewPrivileges") is not True:
        container.append(b'"Privileges":{"NoNewPrivileges":true}')
        injected["no_new_privileges"] = True
    limits = struct(struct(task, "Resources", pointer=True), "Limits", pointer=True)
    wanted: list[bytes] = []
    if defaults.memory and workload.memory <= 0:
        wanted.append(_member("MemoryBytes", defaults.memory))
        injected["memory"] = defaults.memory
    if defaults.nano_cpus and workload.nano_cpus <= 0:
        wanted.append(_member("NanoCPUs", defaults.nano_cpus))
        injected["nano_cpus"] = defaults.nano_cpus
    if defaults.pids and not _positive(scalar(limits, "Pids")):
        wanted.append(_member("Pids", defaults.pids))
        injected["pids"] = defaults.pids
    task_members: list[bytes] = []
    if container:
        task_members.append(b'"ContainerSpec":{' + b",".join(container) + b"}")
    if wanted:
        task_members.append(b'"Resources":{"Limits":{' + b",".join(wanted) + b"}}")
    log = struct(task, "LogDriver", pointer=True)
    if _log_wanted(defaults, scalar(log, "Name")):
        assert defaults.log_driver is not None
        # null first: a pointer the body set is dropped with its options, then made anew.
        task_members.append(
            b'"LogDriver":null,"LogDriver":'
            + _log_object("Name", "Options", defaults.log_driver, defaults)
        )
        _record_log(defaults, injected)
    if task_members:
        members.append(b'"TaskTemplate":{' + b",".join(task_members) + b"}")
    return members, injected


# ----- shared -----------------------------------------------------------------------------


def _labels_to_write(defaults: Defaults, given: dict[str, object] | None) -> dict[str, str]:
    present = given or {}
    labels = {k: v for k, v in defaults.labels.items() if k not in present}
    labels.update({k: v for k, v in defaults.force_labels.items() if present.get(k) != v})
    return labels


def _log_wanted(defaults: Defaults, driver: object) -> bool:
    if defaults.log_driver is None:
        return False
    if defaults.force_log_driver:
        return True
    return driver is MISSING or driver == ""


def _log_object(name_key: str, options_key: str, driver: str, defaults: Defaults) -> bytes:
    """`{"Type": driver, "Config": null, "Config": {options}}`: the options the body gave the
    daemon's default driver are cleared (null), then the policy's written."""
    text = json.dumps(name_key) + ":" + json.dumps(driver) + "," + json.dumps(options_key) + ":null"
    if defaults.log_options:
        text += (
            ","
            + json.dumps(options_key)
            + ":"
            + json.dumps(dict(defaults.log_options), separators=(",", ":"))
        )
    return ("{" + text + "}").encode()


def _record_log(defaults: Defaults, injected: Injected) -> None:
    injected["log_driver"] = defaults.log_driver
    if defaults.log_options:
        injected["log_options"] = dict(defaults.log_options)


def _member(name: str, value: object) -> bytes:
    return (json.dumps(name) + ":" + json.dumps(value, separators=(",", ":"))).encode()


def _last_value(parent: Struct, name: str) -> object:
    """A pointer field (`*int64`): its last value, null included (Go sets the pointer nil)."""
    found = go_values(parent, name)
    return found[-1] if found else MISSING


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
