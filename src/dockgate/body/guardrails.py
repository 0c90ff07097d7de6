"""Guardrails: what a policy lets a request body (and a few query parameters) ask for.

A rule that allows `ContainerCreate` says nothing about what the container may do; these
checks do. They run on what `workload.py` read from the body (as the daemon reads it), after
the policy's rules allowed the operation, and before a byte of the body reaches the daemon.

Every finding is a sentence for the caller: the first one denies (403).
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from dockgate.body import gojson
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

# Operations whose body is read whole and judged before it is forwarded.
BODY_CHECKED = frozenset(
    {
        "ContainerCreate",
        "ContainerStart",
        "ContainerUpdate",
        "ContainerExec",
        "ServiceCreate",
        "ServiceUpdate",
        "VolumeCreate",
        "PluginPull",
        "PluginUpgrade",
    }
)
# The largest body of those the gateway reads whole; a larger one gets 413. Create bodies
# are a few kilobytes; a megabyte leaves room for long command lines and many labels.
CHECKED_BODY_LIMIT = 1024 * 1024
# Operations judged by their query string only (their bodies are tar streams or images), and
# the plugin operations that install or reconfigure what runs with host privileges.
QUERY_CHECKED = frozenset(
    {
        "ImageBuild",
        "ImageCreate",
        "PluginCreate",
        "PluginSet",
        "SwarmInit",
        "SwarmJoin",
        "SwarmUpdate",
    }
)
_SWARM_MEMBERSHIP = frozenset({"SwarmInit", "SwarmJoin", "SwarmUpdate"})

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
    max_memory: int | None = None  # bytes
    max_nano_cpus: int | None = None
    volume_drivers: frozenset[str] = frozenset()  # besides `local`
    # Network file systems the `local` driver may mount (nfs, cifs, ...), each with the servers
    # (`*` wildcards) it may connect to; tmpfs needs no entry, and nothing else can have one.
    volume_types: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exec_root: bool = True
    exec_privileged: bool = False
    image_import_urls: bool = False
    plugin_privileges: bool = False
    swarm: bool = False  # init, join, or reconfigure a swarm (CA, join tokens, raft)


class Refusal(Exception):
    """A body the guardrails do not let through: `status` 400 (unreadable) or 403."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_request(
    guardrails: Guardrails, operation: str, query: str, body: bytes
) -> tuple[NamedVolume, ...]:
    """Raise `Refusal` when the request asks for more than the guardrails allow. What it
    returns is still to be judged: the volumes it uses by name, whose options only the daemon
    knows (`named_volume_problem` on each one's inspect answer)."""
    if operation in QUERY_CHECKED:
        _check_query(guardrails, operation, query)
        return ()
    if operation not in BODY_CHECKED:
        return ()
    if operation == "ContainerStart":
        _check_start(body)
        return ()
    try:
        parsed = gojson.parse(body, strict_end=True)
    except (ValueError, RecursionError):
        raise Refusal(400, "the request body is not one JSON value") from None
    try:
        if operation in ("PluginPull", "PluginUpgrade"):
            _check_plugin(guardrails, parsed)
            return ()
        workload = _READERS[operation](parsed)
    except BodyError as exc:
        raise Refusal(400, str(exc)) from None
    problem = find_problem(guardrails, workload)
    if problem is not None:
        raise Refusal(403, problem)
    return tuple(workload.named_volumes)


def find_problem(g: Guardrails, w: Workload) -> str | None:
    """The first thing `w` asks for that `g` does not allow, as a sentence; None if none."""
    for check in _CHECKS:
        problem = check(g, w)
        if problem is not None:
            return problem
    return None


def explain_request(
    guardrails: Guardrails, operation: str, query: str, body: bytes
) -> list[tuple[str, str | None]]:
    """Every guardrail check with its finding (None: passed), for `dockgate check --body`.
    A body that cannot be read gives one ("read", reason) entry."""
    if operation in QUERY_CHECKED or operation in ("PluginPull", "PluginUpgrade", "ContainerStart"):
        try:
            check_request(guardrails, operation, query, body)
        except Refusal as refusal:
            return [("request", refusal.reason)]
        return [("request", None)]
    if operation not in BODY_CHECKED:
        return []
    try:
        workload = _READERS[operation](gojson.parse(body, strict_end=True))
    except (ValueError, RecursionError) as exc:
        reason = (
            str(exc) if isinstance(exc, BodyError) else "the request body is not one JSON value"
        )
        return [("read", reason)]
    return [(check.__name__.lstrip("_"), check(guardrails, workload)) for check in _CHECKS]


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
        read_only = mount.read_only or volume.read_only
        return host_path_problem(g, HostPath(mount.device, read_only, f"bind device, {where}"))
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
    _exec_user,
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
    if "." in first or ":" in first or first == "localhost":
        return name.lower() if first == "localhost" else name
    return f"docker.io/{name}"


def _check_query(g: Guardrails, operation: str, query: str) -> None:
    params = parse_qsl(query, keep_blank_values=True)
    if operation == "ImageBuild":
        for key, value in params:
            if key != "networkmode":
                continue
            if value == "host" and "network" not in g.namespaces:
                raise Refusal(403, "building with the host's network namespace is not allowed")
            if value.startswith("container:") and "network:container" not in g.namespaces:
                raise Refusal(403, "building in another container's network is not allowed")
    elif operation in _SWARM_MEMBERSHIP and not g.swarm:
        # Joining a swarm hands the node to that swarm's managers (they can run anything on
        # it); init and update set its CA, tokens and raft: a guardrail, not only a rule.
        raise Refusal(403, "initialising, joining or reconfiguring a swarm is not allowed")
    elif operation in ("PluginCreate", "PluginSet") and not g.plugin_privileges:
        # A plugin's config (in PluginCreate's tar) or settings (PluginSet: mounts, devices,
        # env) decide its host privileges; they are not read, so they need the permission.
        raise Refusal(403, "creating or reconfiguring plugins is not allowed")
    elif operation == "ImageCreate":
        for key, value in params:
            if key == "fromSrc" and value not in ("", "-") and not g.image_import_urls:
                raise Refusal(403, "importing an image from a URL is not allowed")


def _check_start(body: bytes) -> None:
    """Below API 1.24 the daemon (20.10) reads a start body as a HostConfig that replaces the
    container's own: a clean container could start privileged. Newer clients send none."""
    if body.strip(b" \t\r\n") not in (b"", b"{}", b"null"):
        raise Refusal(403, "a start request may not carry a HostConfig (API < 1.24)")


def _check_plugin(g: Guardrails, parsed: object) -> None:
    if not isinstance(parsed, list):
        raise Refusal(400, "the body must be a list of plugin privileges")
    if parsed and not g.plugin_privileges:
        raise Refusal(403, "plugins that ask for privileges are not allowed")
