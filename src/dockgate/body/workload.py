"""What a request body asks the daemon to run, read as the daemon reads it.

Each operation that creates or changes what runs has its own struct layout; this module turns
each into one value, `Workload`, holding only what guardrails judge (privileges, host paths,
namespaces, devices, image, resources). A field of the wrong JSON type is a `BodyError`: the
daemon would refuse the request, and a checker that skipped what it does not understand would
be a bypass.

Container create (moby runconfig.ContainerConfigWrapper): the body is a `container.Config`
with two host configs, `"HostConfig": {...}` and, for backward compatibility, HostConfig fields
written at the top level. The daemon uses the inner one if given (taking Memory, MemorySwap,
CPUShares, CpusetCpus and VolumeDriver from the top level when the inner one leaves them zero),
else the top-level one. Both are read here the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockgate.body.gojson import MISSING, GoObject, Struct, mapping, scalar, slice_, struct, values
from dockgate.body.hostports import HostPort, parse_host_port
from dockgate.body.tmpfs import TmpfsMount, option_words, tmpfs_data_words


class BodyError(ValueError):
    """A body that cannot be judged; the message says why (it becomes a 400)."""


@dataclass(frozen=True, slots=True)
class HostPath:
    """A path of the host that would be visible in the container (or the task)."""

    path: str
    read_only: bool
    via: str  # "Binds", "Mounts", "bind device, DriverOpts", ...


@dataclass(frozen=True, slots=True)
class LocalVolume:
    """Options of the `local` volume driver in the body (VolumeCreate's DriverOpts, a volume
    mount's DriverConfig.Options), to be judged as the kernel mounts them (volumeopts.py)."""

    options: dict[str, str]
    # The mount that uses it is read-only. Not how a bind volume binds its device: the volume
    # is mounted once, by its own `o`, and may be used again read-write (volumeopts.py).
    read_only: bool
    via: str  # where the options are, for the refusal


@dataclass(frozen=True, slots=True)
class NamedVolume:
    """A volume a container or service uses by name: it may already exist, made with options
    the body does not show, so the daemon is asked for them before the body goes on."""

    name: str
    read_only: bool
    via: str


@dataclass(slots=True)
class Workload:
    kind: str  # "container", "service", "exec", "update", "volume"
    image: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)  # what reaches host devices
    host_paths: list[HostPath] = field(default_factory=list)
    volumes_from: list[str] = field(default_factory=list)
    # Host namespaces asked for: "network", "pid", "ipc", "uts", "userns", "cgroup".
    host_namespaces: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    runtime: str = ""
    memory: int = 0  # bytes, 0 = unlimited
    nano_cpus: int = 0  # 1e9 per CPU, 0 = unlimited (CpuQuota/CpuPeriod folded in)
    networks: list[str] = field(default_factory=list)  # service networks
    volume_drivers: list[str] = field(default_factory=list)  # named drivers other than local
    local_volumes: list[LocalVolume] = field(default_factory=list)
    named_volumes: list[NamedVolume] = field(default_factory=list)
    tmpfs: list[TmpfsMount] = field(default_factory=list)  # HostConfig.Tmpfs, tmpfs Mounts
    # Published ports' host ports (PortBindings, a service's EndpointSpec.Ports).
    host_ports: list[HostPort] = field(default_factory=list)


# ----- typed accessors: the daemon refuses a wrong type, so do we ----------------------------


def _string(parent: Struct, name: str, where: str) -> str | None:
    value = scalar(parent, name)
    if value is MISSING:
        return None
    if not isinstance(value, str):
        raise BodyError(f"{where}{name} must be a string")
    return value


def _bool(parent: Struct, name: str, where: str) -> bool:
    value = scalar(parent, name)
    if value is MISSING:
        return False
    if not isinstance(value, bool):
        raise BodyError(f"{where}{name} must be true or false")
    return value


def _int(parent: Struct, name: str, where: str) -> int:
    value = scalar(parent, name)
    if value is MISSING:
        return 0
    # Go refuses 1.5 and 1e3 for an int64, and "1" too; bool is not a number.
    if not isinstance(value, int) or isinstance(value, bool):
        raise BodyError(f"{where}{name} must be an integer")
    return value


def _strings(parent: Struct, name: str, where: str, *, strslice: bool = False) -> list[str]:
    value = slice_(parent, name, strslice=strslice)
    if value is MISSING:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BodyError(f"{where}{name} must be a list of strings")
    return list(value)


def _objects(parent: Struct, name: str, where: str) -> list[GoObject]:
    # Go decodes a second list of objects *into* the first one's elements, so their fields
    # merge (golang/go#21092); reading that exactly depends on the Go version: refused.
    if sum(v is not None for v in values(parent, name)) > 1:
        raise BodyError(f"{where}{name} is given more than once")
    value = slice_(parent, name)
    if value is MISSING:
        return []
    if not isinstance(value, list) or not all(isinstance(v, GoObject) for v in value):
        raise BodyError(f"{where}{name} must be a list of objects")
    return list(value)


def _string_map(parent: Struct, name: str, where: str) -> dict[str, str]:
    for value in values(parent, name):
        if value is not None and not isinstance(value, GoObject):
            raise BodyError(f"{where}{name} must be an object")
    result = mapping(parent, name) or {}
    if not all(v is None or isinstance(v, str) for v in result.values()):
        raise BodyError(f"{where}{name} values must be strings")
    # A null value is Go's zero value: the empty string.
    return {k: "" if v is None else str(v) for k, v in result.items()}


def _top_object(parsed: object) -> GoObject:
    if not isinstance(parsed, GoObject):
        raise BodyError("the body must be a JSON object")
    return parsed


# ----- mounts ----------------------------------------------------------------------------------


def parse_bind(spec: str) -> HostPath | None:
    """A `Binds` entry (`src:dst[:opts]`), as the daemon's Linux parser reads it: a source
    starting with "/" is a host path; anything else names a volume (None here)."""
    parts = spec.split(":")
    if len(parts) == 1 and spec.startswith("/"):
        return None  # a target alone: an anonymous volume
    if len(parts) < 2 or len(parts) > 3:
        raise BodyError(f"Binds entry {spec!r}: expected SOURCE:TARGET[:OPTIONS]")
    source = parts[0]
    if not source.startswith("/"):
        return None
    options = parts[2].split(",") if len(parts) == 3 else []
    return HostPath(source, "ro" in options, "Binds")


def bind_volume(spec: str) -> NamedVolume | None:
    """The volume a `Binds` entry names (`name:/dst[:opts]`), None for a host path or an
    anonymous volume (moby volume/mounts/linux_parser.go: a source not starting with "/")."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or parts[0].startswith("/"):
        return None
    options = parts[2].split(",") if len(parts) == 3 else []
    return NamedVolume(parts[0], "ro" in options, "Binds")


def _mount_paths(mounts: list[GoObject], where: str, workload: Workload) -> list[HostPath]:
    """Host paths of a Mounts list; the volumes it uses (by name, by driver, by local driver
    options) go to `workload`."""
    paths: list[HostPath] = []
    for index, mount in enumerate(mounts):
        here = f"{where}Mounts[{index}]."
        one = (mount,)
        kind = (_string(one, "Type", here) or "").lower()
        source = _string(one, "Source", here) or ""
        read_only = _bool(one, "ReadOnly", here)
        if kind == "bind":
            paths.append(HostPath(source, read_only, "Mounts"))
        elif kind == "volume":
            options = struct(one, "VolumeOptions", pointer=True)
            driver = struct(options, "DriverConfig", pointer=True)
            name = _string(driver, "Name", here + "VolumeOptions.DriverConfig.") or ""
            opts = _string_map(driver, "Options", here + "VolumeOptions.DriverConfig.")
            if name:
                workload.volume_drivers.append(name)
            if name in ("", "local") and opts:
                via = here + "VolumeOptions.DriverConfig.Options"
                workload.local_volumes.append(LocalVolume(opts, read_only, via))
            if source:
                # An existing volume of that name is used as it is (its options, not these).
                workload.named_volumes.append(NamedVolume(source, read_only, here + "Source"))
        elif kind == "tmpfs":
            _tmpfs_mount(one, here, workload)
        elif kind != "":
            # npipe and cluster volumes have nothing to do on Linux; an unknown type is refused.
            raise BodyError(f"{here}Type {kind!r} is not supported by dockgate's guardrails")
        if kind == "":
            raise BodyError(f"{here}Type is required")
    return paths


def _tmpfs_mount(one: Struct, here: str, workload: Workload) -> None:
    """A Mounts entry of Type tmpfs: SizeBytes and Mode are numbers the daemon formats itself
    (inert); `Options` (API 1.46+) are words like `--tmpfs`'s, judged (tmpfs.py)."""
    where = here + "TmpfsOptions."
    tmpfs_options = struct(one, "TmpfsOptions", pointer=True)
    if sum(v is not None for v in values(tmpfs_options, "Options")) > 1:
        raise BodyError(f"{where}Options is given more than once")
    value = slice_(tmpfs_options, "Options")
    if value is MISSING:
        return
    if not isinstance(value, list) or not all(
        isinstance(o, list) and 1 <= len(o) <= 2 and all(isinstance(w, str) for w in o)
        for o in value
    ):
        # linux_parser.go validateTmpfsOptions: "invalid option array length".
        raise BodyError(f"{where}Options must be a list of [option] or [option, value]")
    target = _string(one, "Target", here) or ""
    workload.tmpfs.append(TmpfsMount(target, option_words(value), where + "Options"))


# ----- operations ------------------------------------------------------------------------------


def container_create(parsed: object) -> Workload:
    top = _top_object(parsed)
    config = (top,)
    inner = struct(config, "HostConfig", pointer=True)
    # Top-level HostConfig fields (the deprecated form) count when there is no inner one.
    host: Struct = inner if inner else config
    workload = Workload("container")
    workload.image = _string(config, "Image", "")
    workload.user = _string(config, "User", "")
    workload.labels = _string_map(config, "Labels", "")
    _host_config(host, "HostConfig." if inner else "", workload)
    if inner:
        # runconfig/config_unix.go getHostConfig (v20.10.24): with an inner HostConfig, the
        # top-level Memory, MemorySwap, CPUShares, CpusetCpus and VolumeDriver (and Cpuset, as
        # CpusetCpus) are copied in where the inner one leaves them zero; every other
        # top-level field is ignored. Of those, Memory and VolumeDriver are judged.
        if workload.memory == 0:
            workload.memory = _int(config, "Memory", "")
        top_driver = _string(config, "VolumeDriver", "") or ""
        if top_driver and not _string(inner, "VolumeDriver", "HostConfig."):
            workload.volume_drivers.append(top_driver)
    return workload


def _host_config(host: Struct, where: str, workload: Workload) -> None:
    workload.privileged = _bool(host, "Privileged", where)
    # `Capabilities` (API 1.40) replaced the whole set; treat its entries as added.
    workload.cap_add = _strings(host, "CapAdd", where, strslice=True) + _strings(
        host, "Capabilities", where
    )
    for index, device in enumerate(_objects(host, "Devices", where)):
        path = _string((device,), "PathOnHost", f"{where}Devices[{index}].")
        workload.devices.append(path or "?")
    for rule in _strings(host, "DeviceCgroupRules", where):
        workload.devices.append(f"cgroup rule {rule}")
    for index, _request in enumerate(_objects(host, "DeviceRequests", where)):
        workload.devices.append(f"device request {index + 1}")
    _blkio_devices(host, where, workload)
    for bind in _strings(host, "Binds", where):
        bound = parse_bind(bind)
        if bound is not None:
            workload.host_paths.append(bound)
        named = bind_volume(bind)
        if named is not None:
            # Made anew rather than with dataclasses.replace: ten times cheaper, per entry.
            workload.named_volumes.append(NamedVolume(named.name, named.read_only, f"{where}Binds"))
    workload.host_paths += _mount_paths(_objects(host, "Mounts", where), where, workload)
    workload.volumes_from = _strings(host, "VolumesFrom", where)
    for name, mode_field in (
        ("network", "NetworkMode"),
        ("pid", "PidMode"),
        ("ipc", "IpcMode"),
        ("uts", "UTSMode"),
        ("userns", "UsernsMode"),
        ("cgroup", "CgroupnsMode"),
    ):
        mode = _string(host, mode_field, where) or ""
        if mode == "host":
            workload.host_namespaces.append(name)
        elif mode.startswith("container:"):
            # Joining another container's namespace: whatever that container has (perhaps the
            # host's), so it needs its own permission.
            workload.host_namespaces.append(f"{name}:container")
    workload.security_opt = _strings(host, "SecurityOpt", where)
    # The daemon fills in its masked and read-only /proc paths only when these are absent or
    # null: any list (even empty) unmasks them, like systempaths=unconfined.
    for paths_field in ("MaskedPaths", "ReadonlyPaths"):
        if slice_(host, paths_field) is not MISSING:
            _strings(host, paths_field, where)  # the type, as the daemon checks it
            workload.security_opt.append(f"{paths_field}=<set>")
    volume_driver = _string(host, "VolumeDriver", where) or ""
    if volume_driver:
        workload.volume_drivers.append(volume_driver)
    # container.TmpfsMounts (container/container_unix.go): one tmpfs per entry, its value the
    # option words oci_linux.go merges with the daemon's defaults.
    for target, data in _string_map(host, "Tmpfs", where).items():
        workload.tmpfs.append(TmpfsMount(target, tmpfs_data_words(data), f"{where}Tmpfs"))
    workload.sysctls = _string_map(host, "Sysctls", where)
    workload.runtime = _string(host, "Runtime", where) or ""
    workload.memory = _int(host, "Memory", where)
    _cpus(host, where, workload)
    _port_bindings(host, where, workload)


def _port_bindings(host: Struct, where: str, workload: Workload) -> None:
    """HostConfig.PortBindings (nat.PortMap: container port -> list of {HostIp, HostPort}).
    Map keys are exact and merge across objects, the last duplicate winning (gojson.mapping,
    as Go decodes a map); each entry's HostPort is read as the daemon reads it (hostports.py).
    PublishAllPorts and an empty HostPort ask for ephemeral ports."""
    for value in values(host, "PortBindings"):
        if value is not None and not isinstance(value, GoObject):
            raise BodyError(f"{where}PortBindings must be an object")
    for port, bindings in (mapping(host, "PortBindings") or {}).items():
        here = f"{where}PortBindings[{port!r}]"
        if bindings is None:
            continue  # a nil list: no binding
        if not isinstance(bindings, list):
            raise BodyError(f"{here} must be a list of objects")
        for index, binding in enumerate(bindings):
            if binding is None:
                continue  # Go leaves the element zero: HostPort "", ephemeral
            if not isinstance(binding, GoObject):
                raise BodyError(f"{here} must be a list of objects")
            text = _string((binding,), "HostPort", f"{here}[{index}].") or ""
            try:
                first, last = parse_host_port(text)
            except ValueError as exc:
                raise BodyError(f"{here}[{index}]: {exc}") from None
            workload.host_ports.append(HostPort(first, last, f"{here}[{index}].HostPort"))


def _cpus(resources: Struct, where: str, workload: Workload) -> None:
    """CPUs, in 1e9 per CPU: NanoCpus, or CpuQuota/CpuPeriod (the daemon writes the quota over
    the one it computes from NanoCpus). -1 means "no limit asked for", which differs from 0
    ("not given", for an update that leaves the limit alone)."""
    nano = _int(resources, "NanoCpus", where)
    quota = _int(resources, "CpuQuota", where)
    period = _int(resources, "CpuPeriod", where)
    if quota < 0 or (workload.kind == "update" and (quota > 0) != (period > 0)):
        # -1 is "no quota"; in an update, half of a quota/period pair combines with the
        # container's other half, which the gateway cannot see.
        nano = -1
    elif quota > 0:
        from_quota = quota * 1_000_000_000 // (period or 100_000)
        nano = max(nano, from_quota) if nano else from_quota
    elif period != 0 and nano == 0:
        nano = -1  # a new period alone rescales a quota the gateway cannot see
    workload.nano_cpus = nano


def container_update(parsed: object) -> Workload:
    top = (_top_object(parsed),)
    workload = Workload("update")
    workload.memory = _int(top, "Memory", "")
    _cpus(top, "", workload)
    for index, device in enumerate(_objects(top, "Devices", "")):
        path = _string((device,), "PathOnHost", f"Devices[{index}].")
        workload.devices.append(path or "?")
    _blkio_devices(top, "", workload)
    return workload


# Resources fields that name a host block device by path (api/types/blkiodev). The daemon
# stats each path on the host when the container starts (daemon/daemon_unix.go getBlkioWeightDevices
# and getBlkioThrottleDevices, unix.Stat), and its error tells whether any host path exists:
# a probe of the host's file system, judged as host devices.
BLKIO_DEVICE_FIELDS = (
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
)


def _blkio_devices(resources: Struct, where: str, workload: Workload) -> None:
    for name in BLKIO_DEVICE_FIELDS:
        for index, device in enumerate(_objects(resources, name, where)):
            path = _string((device,), "Path", f"{where}{name}[{index}].")
            workload.devices.append(f"{name} {path or '?'}")


def exec_create(parsed: object) -> Workload:
    top = (_top_object(parsed),)
    workload = Workload("exec")
    workload.user = _string(top, "User", "") or ""
    workload.privileged = _bool(top, "Privileged", "")
    return workload


def service_spec(parsed: object) -> Workload:
    """ServiceCreate/ServiceUpdate: the task's container as the swarm will run it."""
    top = (_top_object(parsed),)
    workload = Workload("service")
    workload.labels = _string_map(top, "Labels", "")
    task = struct(top, "TaskTemplate", pointer=False)
    where = "TaskTemplate.ContainerSpec."
    spec = struct(task, "ContainerSpec", pointer=True)
    workload.image = _string(spec, "Image", where)
    workload.user = _string(spec, "User", where)
    container_labels = _string_map(spec, "Labels", where)
    workload.labels = {**workload.labels, **container_labels}
    workload.cap_add = _strings(spec, "CapabilityAdd", where)
    workload.host_paths = _mount_paths(_objects(spec, "Mounts", where), where, workload)
    workload.sysctls = _string_map(spec, "Sysctls", where)
    _service_privileges(struct(spec, "Privileges", pointer=True), where + "Privileges.", workload)
    resources = struct(task, "Resources", pointer=True)
    limits = struct(resources, "Limits", pointer=True)
    workload.memory = _int(limits, "MemoryBytes", "TaskTemplate.Resources.Limits.")
    workload.nano_cpus = _int(limits, "NanoCPUs", "TaskTemplate.Resources.Limits.")
    for index, network in enumerate(_objects(task, "Networks", "TaskTemplate.")):
        target = _string((network,), "Target", f"TaskTemplate.Networks[{index}].") or ""
        workload.networks.append(target)
    for index, network in enumerate(_objects(top, "Networks", "")):
        target = _string((network,), "Target", f"Networks[{index}].") or ""
        workload.networks.append(target)
    if any(name == "host" for name in workload.networks):
        workload.host_namespaces.append("network")
    _endpoint_ports(top, workload)
    return workload


def _endpoint_ports(top: Struct, workload: Workload) -> None:
    """A service's EndpointSpec.Ports[].PublishedPort (uint32; 0: swarm picks one, from its
    dynamic range for the routing mesh, or any free port in host mode). Both publish modes
    listen on the node: `ingress` on every node, `host` where a task runs. A Ports list given
    twice is left to the field table, which refuses it (400) right after the guardrails."""
    endpoint = struct(top, "EndpointSpec", pointer=True)
    if sum(v is not None for v in values(endpoint, "Ports")) > 1:
        return
    for index, port in enumerate(_objects(endpoint, "Ports", "EndpointSpec.")):
        here = f"EndpointSpec.Ports[{index}]."
        published = _int((port,), "PublishedPort", here)
        if not 0 <= published <= 0xFFFFFFFF:
            raise BodyError(f"{here}PublishedPort must be an unsigned 32-bit integer")
        workload.host_ports.append(HostPort(published, published, f"{here}PublishedPort"))


def _service_privileges(privileges: Struct, where: str, workload: Workload) -> None:
    """Swarm's ContainerSpec.Privileges as the security options they amount to."""
    selinux = struct(privileges, "SELinuxContext", pointer=True)
    here = where + "SELinuxContext."
    if _bool(selinux, "Disable", here):
        workload.security_opt.append("label=disable")
    for name in ("User", "Role", "Type", "Level"):
        value = _string(selinux, name, here)
        if value:
            workload.security_opt.append(f"label={name.lower()}:{value}")
    seccomp = struct(privileges, "Seccomp", pointer=True)
    mode = _string(seccomp, "Mode", where + "Seccomp.") or ""
    if mode not in ("", "default"):
        workload.security_opt.append(f"seccomp={mode}")
    apparmor = struct(privileges, "AppArmor", pointer=True)
    mode = _string(apparmor, "Mode", where + "AppArmor.") or ""
    if mode not in ("", "default"):
        workload.security_opt.append(f"apparmor={mode}")
    if _bool(privileges, "NoNewPrivileges", where):
        workload.security_opt.append("no-new-privileges=true")


def volume_create(parsed: object) -> Workload:
    top = (_top_object(parsed),)
    workload = Workload("volume")
    driver = _string(top, "Driver", "") or ""
    options = _string_map(top, "DriverOpts", "")
    if driver not in ("", "local"):
        workload.volume_drivers.append(driver)
    elif options:
        workload.local_volumes.append(LocalVolume(options, False, "DriverOpts"))
    workload.labels = _string_map(top, "Labels", "")
    return workload
