"""Guardrails: what a policy lets a request body (and a few query parameters) ask for.

A rule that allows `ContainerCreate` says nothing about what the container may do; these
checks do. They run on what `workload.py` read from the body (as the daemon reads it), after
the policy's rules allowed the operation, and before a byte of the body reaches the daemon.

Every finding is a sentence for the caller: the first one denies (403).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import posixpath
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from dockgate.body import bodycost, buildlimits, fields, gojson, hostports, subnets, tmpfs
from dockgate.body.volumeopts import (
    NETWORK_TYPES,
    VolumeOptionRefused,
    local_mount,
    network_servers,
    tmpfs_problem,
)
from dockgate.body.workload import (
    BodyError,
    HostPath,
    LocalVolume,
    NamedVolume,
    Workload,
    container_create,
    container_update,
    exec_create,
    service_spec,
    volume_create,
)
from dockgate.http.query import query_pairs
from dockgate.policy.scopes import labels_match

# Operations whose body is read whole and judged before it is forwarded: by the guardrails'
# readers (workload.py) and by the field table (fields.py). ExecStart's body (Detach, Tty,
# ConsoleSize: all inert) opens a hijacked stream and is not held.
BODY_CHECKED = frozenset(
    {
        "ContainerCreate",
        "ContainerUpdate",
        "ContainerExec",
        "ServiceCreate",
        "ServiceUpdate",
        "VolumeCreate",
        "VolumeUpdate",
        "NetworkCreate",
        "NetworkConnect",
        "NetworkDisconnect",
        "ImageCommit",
        "SecretCreate",
        "SecretUpdate",
        "NodeUpdate",
        "PluginPull",
        "PluginUpgrade",
        "CheckpointCreate",
    }
)
# The largest body of those the gateway reads whole; a larger one gets 413. Create bodies
# are a few kilobytes; a megabyte leaves room for long command lines and many labels, and for
# a secret (500 KiB at most, base64-encoded). Swarm configs hold up to 1000 KiB: their bodies
# (ConfigCreate, ConfigUpdate) are classified in fields.py but not held, so `Templating` in
# them is not judged.
CHECKED_BODY_LIMIT = 1024 * 1024
# Operations judged by their query string only: their bodies are tar streams or images, or
# none, or (swarm membership, plugin settings) the whole operation needs a guardrail.
QUERY_CHECKED = frozenset(fields.QUERIES) - BODY_CHECKED
_SWARM_MEMBERSHIP = frozenset({"SwarmInit", "SwarmJoin", "SwarmUpdate"})
# Where a build takes its context from the client rather than fetching it (moby
# builder/remotecontext/detect.go ClientSessionRemote, builder-next "upload-request").
_CLIENT_CONTEXTS = frozenset({"", "client-session", "upload-request"})
# The Dockerfile instructions `changes` may hold (moby builder/dockerfile/builder.go
# validCommitCommands; the daemon refuses any other): they change the image's config only.
_CHANGE_INSTRUCTIONS = frozenset(
    {
        "cmd",
        "entrypoint",
        "healthcheck",
        "env",
        "expose",
        "label",
        "onbuild",
        "user",
        "volume",
        "workdir",
    }
)
# Network drivers that stay inside the host (a bridge of its own, or swarm's overlay); others
# (macvlan, ipvlan, plugins) attach containers to the host's interfaces or run plugin code.
BUILTIN_NETWORK_DRIVERS = frozenset({"bridge", "overlay"})
# Driver options of bridge and overlay networks that reach nothing outside the network
# (libnetwork drivers/bridge/labels.go, netlabel/labels.go, drivers/overlay). Not here, so
# refused: com.docker.network.bridge.name (an existing host bridge, perhaps with the host's
# uplink in it), com.docker.network.bridge.default_bridge, trusted host interfaces.
INERT_NETWORK_OPTIONS = frozenset(
    {
        "com.docker.network.bridge.enable_icc",
        "com.docker.network.bridge.enable_ip_masquerade",
        "com.docker.network.bridge.host_binding_ipv4",
        "com.docker.network.bridge.inhibit_ipv4",
        "com.docker.network.driver.mtu",
        "com.docker.network.container_iface_prefix",
        "com.docker.network.enable_ipv6",
        "com.docker.network.driver.overlay.vxlanid_list",
        "encrypted",
    }
)

_READERS = {
    "ContainerCreate": container_create,
    "ContainerUpdate": container_update,
    "ContainerExec": exec_create,
    "ServiceCreate": service_spec,
    "ServiceUpdate": service_spec,
    "VolumeCreate": volume_create,
}

NAMESPACES = ("network", "pid", "ipc", "uts", "userns", "cgroup")


@dataclass(frozen=True, slots=True)
class HostPathRule:
    prefix: str  # an absolute, normalised path
    read_only: bool  # mounts under it must be read-only

    def covers(self, path: str) -> bool:
        return self.prefix in ("/", path) or path.startswith(self.prefix + "/")


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Defaults are the safe ones: nothing that reaches the host."""

    privileged: bool = False
    capabilities: frozenset[str] = frozenset()  # CAP_X names that may be added; "ALL" too
    devices: bool = False
    host_paths: tuple[HostPathRule, ...] = ()
    volumes_from: bool = False
    # Host namespaces that may be used ("network", ...), and "network:container" etc. for
    # joining another container's.
    namespaces: frozenset[str] = frozenset()
    security_overrides: bool = False  # seccomp/apparmor/label/systempaths options
    require_no_new_privileges: bool = False
    sysctls: tuple[str, ...] = ()  # allowed names, `*` wildcards
    runtimes: frozenset[str] | None = None  # None: any; "" is the daemon's default
    images: tuple[str, ...] | None = None  # repository patterns; None: any
    required_labels: Mapping[str, str] = field(default_factory=dict)  # name -> value pattern
    # The label conditions of the policy set's container bindings (docs/policy.md, "The calling
    # container as the identity"): a container or service created with labels that meet every
    # condition of one would call as that binding's caller; refused unless the policy says
    # `peer_labels: true` (then empty). Each: (which binding, ((label, value pattern), ...)).
    peer_labels: tuple[tuple[str, tuple[tuple[str, re.Pattern[str]], ...]], ...] = ()
    max_memory: int | None = None  # bytes
    max_nano_cpus: int | None = None
    volume_drivers: frozenset[str] = frozenset()  # besides `local`
    # Network file systems the `local` driver may mount (nfs, cifs, ...), each with the servers
    # (`*` wildcards) it may connect to; tmpfs needs no entry, and nothing else can have one.
    volume_types: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exec_root: bool = True
    exec_privileged: bool = False
    # The daemon fetches a URL the caller names: ImageCreate fromSrc=URL (docker import) and
    # ImageBuild remote=URL (docker build URL), loopback included. `image_import_urls` in
    # policy files is the older name.
    fetch_urls: bool = False
    # Network drivers allowed besides bridge and overlay (macvlan, ipvlan, plugins); a driver
    # named here also takes any driver Options (bridge.name, parent=...).
    network_drivers: frozenset[str] = frozenset()
    # Address ranges a NetworkCreate may name in IPAM.Config (Subnet, IPRange, Gateway,
    # AuxiliaryAddresses), of any driver; none: the daemon's own address pools only.
    network_subnets: tuple[subnets.Network, ...] = ()
    # Fixed host ports a published port may take (merged ranges, hostports.merge); ephemeral
    # ones (the daemon picks) are always allowed. None by default: a fixed port would let a
    # job answer the host's own clients of a local service that is not listening.
    host_ports: tuple[hostports.PortRange, ...] = ()
    plugin_privileges: bool = False
    swarm: bool = False  # init, join, or reconfigure a swarm (CA, join tokens, raft)
    # BuildKit's control API (POST /grpc, docker buildx): solve requests travel inside an
    # HTTP/2 tunnel the gateway cannot read, and may ask for the network.host entitlement,
    # which the daemon grants by default.
    buildkit: bool = False


class BodyRefused(Exception):
    """A body the guardrails do not let through: `status` 400 (unreadable) or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_request(
    guardrails: Guardrails,
    operation: str,
    query: str,
    body: bytes,
    path_params: Mapping[str, str] | None = None,
) -> tuple[NamedVolume, ...]:
    """Raise `BodyRefused` when the request asks for more than the guardrails allow: what the
    guardrails judge (workload.py's readers), and every query parameter and body field against
    the table (fields.py), which refuses what is unknown or not allowed. What it returns is
    still to be judged: the volumes the body uses by name, whose options only the daemon knows
    (`named_volume_problem` on each one's inspect answer)."""
    pairs = query_pairs(query)
    _check_fields(guardrails, operation, pairs, None)
    _check_path(guardrails, operation, path_params or {})
    if operation not in BODY_CHECKED:
        return ()
    if operation == "ImageCommit" and not body.strip(b" \t\r\n"):
        return ()  # no config given: the container's own is committed
    check_body_cost(body)
    parsed = _parse(body)
    try:
        if operation in ("PluginPull", "PluginUpgrade"):
            _check_plugin(guardrails, parsed)
            return ()
        reader = _READERS.get(operation)
        workload = reader(parsed) if reader is not None else None
    except BodyError as exc:
        raise BodyRefused(400, str(exc)) from None
    if workload is not None:
        problem = find_problem(guardrails, workload)
        if problem is not None:
            raise BodyRefused(403, problem)
    _check_fields(guardrails, operation, [], parsed)
    return tuple(workload.named_volumes) if workload is not None else ()


def check_body_cost(body: bytes) -> None:
    """Refuse (413) a body too costly to check: more keys and list entries than
    `bodycost.MAX_SEPARATORS`, counted before it is parsed."""
    problem = bodycost.cost_problem(body)
    if problem is not None:
        raise BodyRefused(413, problem)


def _parse(body: bytes) -> object:
    try:
        return gojson.parse(body, strict_end=True)
    except (ValueError, RecursionError):
        raise BodyRefused(400, "the request body is not one JSON value") from None


def _check_fields(
    g: Guardrails, operation: str, pairs: list[tuple[str, str]], parsed: object | None
) -> None:
    """The query parameters (`pairs`) or the parsed body against the table, and the judged
    values that no workload reader covers (network drivers, build remotes, changes)."""
    try:
        if parsed is None:
            _check_query(g, operation, pairs)
            fields.check_query(operation, pairs)
            return
        if operation == "NetworkCreate":
            _check_network(g, parsed)
        fields.check_body(operation, parsed)
    except fields.FieldError as exc:
        raise BodyRefused(exc.status, exc.reason) from None


def find_problem(g: Guardrails, w: Workload) -> str | None:
    """The first thing `w` asks for that `g` does not allow, as a sentence; None if none."""
    for check in _CHECKS:
        problem = check(g, w)
        if problem is not None:
            return problem
    return None


def explain_request(
    guardrails: Guardrails,
    operation: str,
    query: str,
    body: bytes,
    path_params: Mapping[str, str] | None = None,
) -> list[tuple[str, str | None]]:
    """Every guardrail check with its finding (None: passed), for `dockgate check --body`,
    then the field table's ("fields"). A body that cannot be read gives one ("read", reason)."""
    if operation not in _READERS:
        try:
            check_request(guardrails, operation, query, body, path_params)
        except BodyRefused as refusal:
            return [("request", refusal.reason)]
        return [("request", None)]
    try:
        parsed = gojson.parse(body, strict_end=True)
        workload = _READERS[operation](parsed)
    except (ValueError, RecursionError) as exc:
        reason = (
            str(exc) if isinstance(exc, BodyError) else "the request body is not one JSON value"
        )
        return [("read", reason)]
    found = [
        (check.__name__.lstrip("_"), check(guardrails, workload))
        for check in _CHECKS
        # (listed only where the policy file has container bindings by labels)
        if check is not _peer_labels or guardrails.peer_labels
    ]
    table: str | None = None
    try:
        _check_fields(guardrails, operation, query_pairs(query), None)
        _check_fields(guardrails, operation, [], parsed)
    except BodyRefused as refusal:
        table = refusal.reason
    return [*found, ("fields", table)]


def _privileges(g: Guardrails, w: Workload) -> str | None:
    if w.privileged and not (g.exec_privileged if w.kind == "exec" else g.privileged):
        return (
            "privileged exec is not allowed"
            if w.kind == "exec"
            else ("privileged containers are not allowed")
        )
    return None


def _capabilities(g: Guardrails, w: Workload) -> str | None:
    for cap in w.cap_add:
        name = normalize_capability(cap)
        if name not in g.capabilities:
            return f"adding capability {name} is not allowed"
    return None


def _devices(g: Guardrails, w: Workload) -> str | None:
    if w.devices and not g.devices:
        return f"host devices are not allowed ({w.devices[0]})"
    return None


def _host_paths(g: Guardrails, w: Workload) -> str | None:
    for mount in w.host_paths:
        problem = host_path_problem(g, mount)
        if problem is not None:
            return problem
    for made in w.tmpfs:
        # Whatever the policy: `remount` over a read-only bind or sysfs makes it writable.
        problem = tmpfs.tmpfs_problem(made)
        if problem is not None:
            return problem
    if w.volumes_from and not g.volumes_from:
        return "VolumesFrom is not allowed (it shares another container's mounts)"
    for driver in w.volume_drivers:
        if driver not in ("local", *g.volume_drivers):
            # A volume plugin mounts whatever it likes: only the ones the policy names.
            return f"volume driver {driver!r} is not allowed"
    return None


def host_path_problem(g: Guardrails, mount: HostPath) -> str | None:
    path = posixpath.normpath(mount.path) if mount.path else ""
    if not path.startswith("/"):
        return f"host path {mount.path!r} ({mount.via}) is not an absolute path"
    path = "/" + path.lstrip("/")  # normpath keeps a leading "//"
    for rule in g.host_paths:
        if rule.covers(path):
            if rule.read_only and not mount.read_only:
                return f"host path {path} ({mount.via}) must be mounted read-only"
            return None
    return f"host path {path} ({mount.via}) is not allowed"


def _volume_options(g: Guardrails, w: Workload) -> str | None:
    for volume in w.local_volumes:
        problem = local_volume_problem(g, volume)
        if problem is not None:
            return problem
    return None


def local_volume_problem(g: Guardrails, volume: LocalVolume) -> str | None:
    """`local` driver options judged as the kernel would mount them (volumeopts.py): a bind
    (any `bind`/`rbind` in `o`, whatever `type` says) is a host path; a file system must be a
    plain tmpfs or a network file system the policy allows, with allowed servers."""
    try:
        return _local_mount_problem(g, volume)
    except VolumeOptionRefused as refused:
        return f"{refused} ({volume.via})"


def _local_mount_problem(g: Guardrails, volume: LocalVolume) -> str | None:
    where = volume.via
    mount = local_mount(volume.options)
    if mount.kind == "none":
        return None
    if mount.kind == "bind":
        # Read-only only by the volume's own `o`, never by the mount that uses it: the driver
        # binds the device once, as `o` says, and the daemon writes into the volume whatever
        # the mount says (it copies the image's files at the target into a new volume,
        # daemon/volumes.go), as does any other mount of the same volume (in the same body,
        # or later, by name).
        return host_path_problem(
            g, HostPath(mount.device, mount.read_only, f"bind device, {where}")
        )
    if mount.fs_type == "tmpfs":
        problem = tmpfs_problem(mount)
        return None if problem is None else f"{problem} ({where})"
    servers = g.volume_types.get(mount.fs_type)
    if servers is None or mount.fs_type not in NETWORK_TYPES:
        return f"file system type {mount.fs_type!r} (type=, {where}) is not allowed"
    for server in network_servers(mount):
        if not any(fnmatch.fnmatchcase(server.lower(), p.lower()) for p in servers):
            return f"{mount.fs_type} server {server!r} ({where}) is not allowed"
    return None


def named_volume_problem(g: Guardrails, volume: NamedVolume, inspect: object) -> str | None:
    """A volume used by name, judged on the daemon's `GET /volumes/NAME` answer (None: no such
    volume, which the daemon creates as a plain one) as if its options were in the body."""
    if inspect is None:
        return None
    if not isinstance(inspect, dict):
        return f"volume {volume.name!r}: the daemon's answer cannot be read"
    driver = inspect.get("Driver")
    options = inspect.get("Options") or {}
    if not isinstance(driver, str) or not isinstance(options, dict):
        return f"volume {volume.name!r}: the daemon's answer cannot be read"
    if not all(isinstance(v, str) for v in options.values()):
        return f"volume {volume.name!r}: the daemon's answer cannot be read"
    if driver not in ("local", *g.volume_drivers):
        return f"volume {volume.name!r} of driver {driver!r} is not allowed"
    if driver != "local" or not options:
        return None
    via = f"volume {volume.name!r} used by {volume.via}"
    return local_volume_problem(g, LocalVolume(dict(options), volume.read_only, via))


def _namespaces(g: Guardrails, w: Workload) -> str | None:
    for namespace in w.host_namespaces:
        if namespace not in g.namespaces:
            if namespace.endswith(":container"):
                kind = namespace.partition(":")[0]
                return f"joining another container's {kind} namespace is not allowed"
            return f"the host's {namespace} namespace is not allowed"
    return None


def _security(g: Guardrails, w: Workload) -> str | None:
    no_new_privileges = False
    for option in w.security_opt:
        key, value = _split_option(option)
        if key == "no-new-privileges":
            # The daemon reads the value with Go's strconv.ParseBool.
            no_new_privileges = value in ("", "1", "t", "true")
            continue
        if not g.security_overrides:
            return f"security option {option!r} is not allowed"
    if g.require_no_new_privileges and w.kind in ("container", "service") and not no_new_privileges:
        return "the security option no-new-privileges is required"
    return None


def _split_option(option: str) -> tuple[str, str]:
    """`seccomp=unconfined`, and the older `seccomp:unconfined` the daemon still accepts."""
    for separator in ("=", ":"):
        if separator in option:
            key, _, value = option.partition(separator)
            return key.strip().lower(), value.strip().lower()
    return option.strip().lower(), ""


def _sysctls(g: Guardrails, w: Workload) -> str | None:
    for name in w.sysctls:
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in g.sysctls):
            return f"sysctl {name} is not allowed"
    return None


def _runtime(g: Guardrails, w: Workload) -> str | None:
    # The daemon's default runtime (no Runtime given) is the operator's own choice: allowed.
    if g.runtimes is not None and w.kind == "container" and w.runtime not in ("", *g.runtimes):
        return f"runtime {w.runtime or '(default)'!r} is not allowed"
    return None


def _image(g: Guardrails, w: Workload) -> str | None:
    if g.images is None or w.kind not in ("container", "service"):
        return None
    if w.image is None:
        # A service update may leave the image alone; a container needs one anyway.
        return None if w.kind == "service" else "an image is required"
    repository = image_repository(w.image)
    if repository is None:
        return f"image {w.image!r}: name images by repository, not by ID"
    if not any(fnmatch.fnmatchcase(repository, image_repository(p) or p) for p in g.images):
        return f"image {repository} is not allowed"
    return None


def _labels(g: Guardrails, w: Workload) -> str | None:
    if w.kind not in ("container", "service", "volume"):
        return None
    for name, pattern in g.required_labels.items():
        value = w.labels.get(name)
        if value is None:
            return f"label {name} is required"
        if not fnmatch.fnmatchcase(value, pattern):
            return f"label {name}={value!r} does not match {pattern!r}"
    return None


def _peer_labels(g: Guardrails, w: Workload) -> str | None:
    """Labels that would make the new container (or a service's task containers) a caller
    some container binding names, on dockgate's unix socket: whoever may create it could then
    call as that binding's caller (THREAT_MODEL.md)."""
    if not g.peer_labels or w.kind not in ("container", "service"):
        return None
    labels = w.labels
    for binding, conditions in g.peer_labels:
        if labels_match(conditions, labels):
            shown = ", ".join(f"{key}={labels[key]}" for key, _ in conditions)
            return (
                f"labels {shown} would make the container a caller bound by {binding} on the "
                "unix socket (allowed with the guardrail peer_labels: true)"
            )
    return None


def _resources(g: Guardrails, w: Workload) -> str | None:
    if w.kind not in ("container", "service", "update"):
        return None
    # An update that does not mention a resource leaves it alone (0: not given).
    update = w.kind == "update"
    memory, cpus = g.max_memory, g.max_nano_cpus
    if memory is not None and not (update and w.memory == 0) and not 0 < w.memory <= memory:
        return f"a memory limit of at most {memory} bytes is required"
    if cpus is not None and not (update and w.nano_cpus == 0) and not 0 < w.nano_cpus <= cpus:
        return f"a CPU limit of at most {cpus / 1e9:g} CPUs is required"
    return None


def _host_ports(g: Guardrails, w: Workload) -> str | None:
    for port in w.host_ports:
        problem = hostports.host_port_problem(g.host_ports, port)
        if problem is not None:
            return problem
    return None


def _exec_user(g: Guardrails, w: Workload) -> str | None:
    if w.kind != "exec" or g.exec_root:
        return None
    # Judged as written: the daemon does not trim, and "1000 " is a user *name* (which the
    # container's /etc/passwd may map to uid 0).
    uid = (w.user or "").partition(":")[0]
    if not uid:
        return "exec without a user runs as the container's user: give a numeric user (-u UID)"
    if not (uid.isascii() and uid.isdigit()):
        # A name may resolve to uid 0 in the container's /etc/passwd: only numbers are judged.
        return f"exec as user {uid!r}: give a numeric user id (names may resolve to root)"
    if int(uid) == 0:
        return "exec as root is not allowed"
    return None


_CHECKS = (
    _privileges,
    _capabilities,
    _devices,
    _host_paths,
    _volume_options,
    _namespaces,
    _security,
    _sysctls,
    _runtime,
    _image,
    _labels,
    _resources,
    _host_ports,
    _exec_user,
    _peer_labels,
)


def normalize_capability(name: str) -> str:
    """`sys_admin`, `SYS_ADMIN` and `CAP_SYS_ADMIN` are one capability to the daemon."""
    upper = name.strip().upper()
    if upper == "ALL" or upper.startswith("CAP_"):
        return upper
    return "CAP_" + upper


def image_repository(reference: str) -> str | None:
    """The repository of an image reference, normalised as the daemon does:
    `busybox` -> `docker.io/library/busybox`, `me/app:1` -> `docker.io/me/app`. None for a
    reference by image ID (`sha256:...`, or a bare hex ID)."""
    ref = reference.strip()
    if ref.startswith("sha256:"):
        return None
    name = ref.partition("@")[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    if not name:
        return None
    if "/" not in name and all(c in "0123456789abcdef" for c in name):
        # The daemon takes an unknown name that could be an image ID prefix for one, so a
        # hex name may run any local image: refused when images are restricted.
        return None
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    # A first element with an upper-case letter is a domain to newer daemons (distribution
    # reference normalize.go splitDockerDomain; 20.10 refuses such a name): `LOCALHOST/x`.
    if "." in first or ":" in first or first == "localhost" or first.lower() != first:
        return name.lower() if first == "localhost" else name
    return f"docker.io/{name}"


def _check_query(g: Guardrails, operation: str, params: list[tuple[str, str]]) -> None:
    """The query parameters the table marks as judged. Every value of a repeated key is
    judged: the daemon reads the first for most, all of them for `changes`."""
    if operation in _SWARM_MEMBERSHIP and not g.swarm:
        # Joining a swarm hands the node to that swarm's managers (they can run anything on
        # it); init and update set its CA, tokens and raft: a guardrail, not only a rule.
        raise BodyRefused(403, "initialising, joining or reconfiguring a swarm is not allowed")
    if operation == "GrpcSession" and not g.buildkit:
        raise BodyRefused(
            403,
            "BuildKit's control API (docker buildx) cannot be judged: use the classic builder "
            "(DOCKER_BUILDKIT=0), or allow buildkit",
        )
    if operation in ("PluginCreate", "PluginSet") and not g.plugin_privileges:
        # A plugin's config (in PluginCreate's tar) or settings (PluginSet: mounts, devices,
        # env) decide its host privileges; they are not read, so they need the permission.
        raise BodyRefused(403, "creating or reconfiguring plugins is not allowed")
    if operation == "ImageBuild":
        problem = buildlimits.build_limits_problem(g.max_memory, g.max_nano_cpus, params)
        if problem is not None:
            raise BodyRefused(403, problem)
    for key, value in params:
        if operation == "ImageBuild" and key == "networkmode":
            if value == "host" and "network" not in g.namespaces:
                raise BodyRefused(403, "building with the host's network namespace is not allowed")
            if value.startswith("container:") and "network:container" not in g.namespaces:
                raise BodyRefused(403, "building in another container's network is not allowed")
        elif operation == "ImageBuild" and key == "remote":
            if value not in _CLIENT_CONTEXTS and not g.fetch_urls:
                # The daemon fetches it (or clones it) from the host, loopback included.
                raise BodyRefused(403, "building from a URL (remote=) is not allowed")
        elif operation == "ImageSearch" and key == "term":
            problem = search_problem(g, value)
            if problem is not None:
                raise BodyRefused(403, problem)
        elif operation == "ImageCreate" and key == "fromImage" and value:
            problem = pull_problem(g, value)
            if problem is not None:
                raise BodyRefused(403, problem)
        elif (operation, key) in _IMAGE_NAMES and value:
            problem = registry_name_problem(g, value)
            if problem is not None:
                raise BodyRefused(403, f"{problem} ({key}=)")
        elif operation == "ImageBuild" and key == "cachefrom" and value:
            for reference in cache_from_references(value):
                problem = registry_name_problem(g, reference)
                if problem is not None:
                    raise BodyRefused(403, f"{problem} (cachefrom=)")
        elif operation == "ImageCreate" and key == "fromSrc":
            if value not in ("", "-") and not g.fetch_urls:
                raise BodyRefused(403, "importing an image from a URL is not allowed")
        elif key == "changes" and operation in ("ImageCommit", "ImageCreate"):
            problem = change_problem(value)
            if problem is not None:
                raise BodyRefused(403, problem)
        elif operation == "ServiceUpdate" and key == "rollback" and value != "":
            # The daemon deploys the service's PreviousSpec, which dockgate never judged
            # (it may predate the policy, or have been written by someone else).
            raise BodyRefused(
                403, "rollback= deploys the service's previous spec, which dockgate did not judge"
            )


def pull_problem(g: Guardrails, reference: str) -> str | None:
    """A pull (`fromImage`): with `images` set, the repository must be one of them; without,
    a registry on the daemon host's loopback is refused, since the daemon reaches it over plain
    HTTP (127.0.0.0/8 is an insecure registry by default) and quotes its answers back: a
    service only the host can reach would answer the caller."""
    repository = image_repository(reference)
    if g.images is not None:
        if repository is None or not any(
            fnmatch.fnmatchcase(repository, image_repository(p) or p) for p in g.images
        ):
            return f"pulling {reference!r} is not allowed (images)"
        return None
    if repository is not None and is_loopback_registry(repository.partition("/")[0]):
        return (
            f"pulling from a registry on the daemon's loopback ({reference!r}) is not allowed; "
            "list it under images to allow it"
        )
    return None


# Query parameters that name an image the daemon may later push or build under (moby
# api/server/router/image/image_routes.go postImagesTag `repo`, postCommit `repo`, build
# `t`, one per value: every value is judged). A build's `cachefrom` names images BuildKit
# fetches: `cache_from_references`. A name on a loopback registry is refused at the
# tag, so that no local image gets one through the API (ImageLoad tars can still carry any
# names: the push, judged on its path, is what stops them).
_IMAGE_NAMES = frozenset({("ImageTag", "repo"), ("ImageCommit", "repo"), ("ImageBuild", "t")})


def registry_name_problem(g: Guardrails, reference: str) -> str | None:
    """An image name given to tag, commit, build or push: a name on a registry on the daemon
    host's loopback is refused unless `images` lists it, as for pulls (`pull_problem`): a push
    of it makes the daemon talk plain HTTP (GET, then POST/PUT of the layers) to a service only
    the host can reach, and quote its answers. Names on other registries are not judged here
    (`images` is about what runs)."""
    repository = image_repository(reference)
    if repository is None or not is_loopback_registry(repository.partition("/")[0]):
        return None
    if g.images is not None and any(
        fnmatch.fnmatchcase(repository, image_repository(p) or p) for p in g.images
    ):
        return None
    return (
        f"an image name on a registry on the daemon's loopback ({reference!r}) is not allowed; "
        "list it under images to allow it"
    )


def cache_from_references(value: str) -> list[str]:
    """The image references of a build's `cachefrom` (a JSON list of strings, moby
    api/server/router/build/build_routes.go). BuildKit joins them with "," into the frontend's
    `cache-from`, which splits on "," and imports each piece from its registry (buildkit
    frontend/dockerfile/builder/build.go); newer frontends read `type=registry,ref=X`. Every
    piece is judged, `ref=` stripped. Unreadable: refused (the daemon refuses it too)."""
    try:
        entries = json.loads(value)
    except ValueError:
        raise BodyRefused(400, "cachefrom must be a JSON list of image names") from None
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise BodyRefused(400, "cachefrom must be a JSON list of image names")
    pieces = [piece.strip() for entry in entries for piece in entry.split(",")]
    return [piece.removeprefix("ref=") for piece in pieces if piece]


def _check_path(g: Guardrails, operation: str, params: Mapping[str, str]) -> None:
    """The image name in ImagePush's path (`/images/{name}/push`): the registry the daemon
    pushes to is the name's (moby api/server/router/image/image_routes.go postImagesPush,
    distribution/push.go), with `tag=` only choosing the tag."""
    if operation != "ImagePush":
        return
    name = params.get("name", "")
    problem = registry_name_problem(g, name) if name else None
    if problem is not None:
        raise BodyRefused(403, f"pushing: {problem}")


def search_problem(g: Guardrails, term: str) -> str | None:
    """ImageSearch `term`: `INDEX/TERM` searches the registry INDEX when it looks like a host
    (moby registry.ParseSearchIndexInfo, via splitReposSearchTerm: a dot, a colon or
    `localhost` before the first `/`). A loopback one is refused unless `images` names a
    repository on it."""
    index, slash, _ = term.partition("/")
    if not slash or not ("." in index or ":" in index or index.lower() == "localhost"):
        return None  # Docker Hub
    if not is_loopback_registry(index):
        return None
    listed = g.images or ()
    if any((image_repository(p) or p).startswith(index + "/") for p in listed):
        return None
    return (
        f"searching a registry on the daemon's loopback ({index!r}) is not allowed; "
        "list a repository on it under images to allow it"
    )


def is_loopback_registry(host: str) -> bool:
    """`localhost[:port]`, `*.localhost`, `127.x.y.z[:port]`, `[::1]:port`, `0.0.0.0`,
    `[::ffff:127.0.0.1]` (an IPv4-mapped IPv6 address): names
    and addresses that reach the daemon host itself (a DNS name that resolves there cannot be
    told from its text)."""
    name = host.lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.removesuffix(".")  # `localhost.` is the same name
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(name)
    except ValueError:
        # The C resolver also takes inet_aton's forms: `127.1`, `0x7f.1`, `2130706433`.
        if not name or name.strip("0123456789abcdefx.") or name.startswith("."):
            return False
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # `[::ffff:127.0.0.1]` and `[::ffff:7f00:1]`: Go's net.Dial reaches the IPv4 address.
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified or address.is_link_local


def change_problem(change: str) -> str | None:
    """One `changes` entry (docker commit/import --change): one Dockerfile instruction of the
    kinds the daemon applies to an image's config. Several lines (or a continuation, whose
    next line could be anything) are refused rather than parsed as the daemon's Dockerfile
    parser would."""
    if not change.strip():
        return None
    if "\n" in change or "\r" in change or change.rstrip().endswith(("\\", "`")):
        return "a changes entry must be one single-line instruction"
    instruction = change.split(None, 1)[0].lower()
    if instruction not in _CHANGE_INSTRUCTIONS:
        return f"the {instruction.upper()} instruction is not allowed in changes"
    return None


def _check_network(g: Guardrails, parsed: object) -> None:
    """NetworkCreate: the address ranges (network_subnets), the driver, and its options when
    the driver is a built-in one."""
    if not isinstance(parsed, gojson.GoObject):
        raise BodyRefused(400, "the body must be a JSON object")
    try:
        problem = subnets.ipam_problem(g.network_subnets, parsed)
    except subnets.SubnetError as exc:
        raise BodyRefused(exc.status, exc.reason) from None
    if problem is not None:
        # Judged whatever the driver: a bridge's subnet is a route on the host.
        raise BodyRefused(403, problem)
    top = (parsed,)
    driver = gojson.scalar(top, "Driver")
    if driver is gojson.MISSING or driver == "":
        driver = "bridge"  # the daemon's default (daemon/network.go createNetwork)
    if not isinstance(driver, str):
        raise BodyRefused(400, "Driver must be a string")
    if driver in g.network_drivers:
        return  # the operator trusts this driver with any options
    if driver not in BUILTIN_NETWORK_DRIVERS:
        raise BodyRefused(403, f"network driver {driver!r} is not allowed")
    for value in gojson.values(top, "Options"):
        if value is not None and not isinstance(value, gojson.GoObject):
            raise BodyRefused(400, "Options must be an object")
    for key in gojson.mapping(top, "Options") or {}:
        if key not in INERT_NETWORK_OPTIONS:
            raise BodyRefused(403, f"network option {key!r} is not allowed")


def _check_plugin(g: Guardrails, parsed: object) -> None:
    if not isinstance(parsed, list):
        raise BodyRefused(400, "the body must be a list of plugin privileges")
    if parsed and not g.plugin_privileges:
        raise BodyRefused(403, "plugins that ask for privileges are not allowed")


def image_peer_label_problem(
    g: Guardrails, operation: str, body: bytes, image: str, image_labels: Mapping[str, str]
) -> str | None:
    """`_peer_labels` on the labels the new container WILL have: the daemon copies each label
    of its image the create does not set (moby daemon/commit.go `merge`, which the create
    calls; swarmkit's task containers likewise), so an image committed or built with
    `LABEL dockgate.role=...` would make a container created from it, with no label in the
    body, a bound caller (issue 16's attack). None: no problem, or a body the guardrails
    already judged unreadable (refused there)."""
    reader = _READERS.get(operation)
    if not g.peer_labels or not image_labels or reader is None:
        return None
    try:
        workload = reader(_parse(body))
    except (BodyRefused, BodyError, ValueError, RecursionError):
        return None
    workload.labels = {**image_labels, **workload.labels}
    problem = _peer_labels(g, workload)
    if problem is None:
        return None
    return f"the image {image!r} gives the container its labels: {problem}"


def stored_peer_label_problem(g: Guardrails, labels: Mapping[str, str]) -> str | None:
    """`_peer_labels` on a created container's labels as the daemon stored them
    (`Config.Labels`: the body's and its image's, merged at the create): the judgement made
    on the body and the image looked up before the create, made again on what the daemon
    did, since the image's name is resolved again at the create (a tag moved in between:
    issue 16, second round; auth/peercreate.py)."""
    problem = _peer_labels(g, Workload("container", labels=dict(labels)))
    if problem is None:
        return None
    return f"the new container got its labels from its image: {problem}"
