"""Operation identification: which Engine API operation the daemon will run for a request.

The policy decides on *operations* (``ContainerCreate``, ``ExecStart``, ...), never on raw
paths, so this module must route a request exactly as dockerd's own router does, no more and no
less. The table below mirrors that router; where the OpenAPI specs
(moby's ``api/swagger.yaml``: v1.41 in the 20.10 tree, v1.56 today) and the router disagree, the
router wins, because it decides what actually runs.

Ground truth (moby/moby)
------------------------
- Registration: ``Server.CreateMux`` (``api/server/server.go`` in the 20.10 tree,
  ``daemon/server/server.go`` today) walks the routers in order and registers every route
  twice, first as ``/v{version:[0-9.]+}<path>`` then as ``<path>``, each with
  ``.Methods(<method>)``; then a catch-all ``/v{version:[0-9.]+}/{path:.*}`` (any method) that
  answers 404, and the same 404 handler for ``NotFoundHandler`` and ``MethodNotAllowedHandler``.
- Router order: ``initRouter`` (20.10, ``cmd/dockerd/daemon.go``) / ``buildRouters`` (today,
  ``daemon/command/daemon.go``): checkpoint ("we need to add the checkpoint router before the
  container router or the DELETE gets masked"), container, image, system, volume, build,
  session, swarm, plugin, distribution, then grpc and network (20.10), or network, debug and
  grpc (today). Those last three share no path, so their relative order never matters.
- Routes: ``<tree>/router/{checkpoint,container,image,system,volume,build,session,swarm,plugin,
  distribution,grpc,network,debug}/*.go`` (``initRoutes``/``NewRouter``).
- Matching is gorilla/mux (v1.8 in 20.10): routes are tried in registration order and the first
  whose path regexp *and* method both match wins (a path match with the wrong method only
  records "method mismatch" and the search goes on). The method matcher compares the request
  method byte for byte with the upper-cased registered one: ``get`` matches nothing, and HEAD is
  not GET (moby registers its two HEAD routes explicitly: ``HEAD /containers/{name:.*}/archive``
  and ``HEAD /_ping``). Path templates compile to anchored Go regexps: literal text quoted,
  ``{x}`` is ``[^/]+``, ``{x:re}`` is ``re``; Go's ``.`` does not match ``\\n`` (nor does
  Python's) and ``$`` is end of text (``re.fullmatch`` here). No StrictSlash: a trailing slash
  matches only a template that allows it (``GET /networks/`` is registered on purpose; a
  ``{name:.*}`` at the end takes it: ``DELETE /containers/`` reaches ContainerDelete with an
  empty name, ``GET /networks/x/`` NetworkInspect with the id ``x/``).
- Before matching, ``Router.ServeHTTP`` answers ``301`` when ``cleanPath(path) != path``
  (``path.Clean`` with the trailing slash kept): such paths are never routed, and `identify`
  returns None for them (``dockgate.api.target`` refuses them earlier anyway).

Routes the specs do not list (kept, because the daemon routes them; see `EXTRA_SOURCES`):
``OPTIONS /{anyroute:.*}`` (system router, CORS pre-flight, answers 200 for any path),
``POST /build/cancel``, ``POST /grpc`` (BuildKit's gRPC API over an h2c upgrade), the
experimental checkpoint routes (registered even when experimental is off: the handler then
answers 501, but the route still wins the match), ``POST /containers/{name:.*}/copy`` (20.10
only; deprecated, still serves a file out of the container to API < 1.24 clients), and the
debug router (``/debug/vars``, ``/debug/pprof/...``). In 20.10 the debug routes are registered
without a version prefix and *without a method matcher* (any method); today they are ordinary
versioned ``GET`` routes. Only GET is identified here: another method on ``/debug/...`` is left
unidentified (denied), which is stricter than a 20.10 daemon, never looser.

Both daemons are covered: the table is the union of 20.10 (API 1.41) and today's router (API
1.56). An operation that only one of them has still identifies (`DAEMON_SPECIFIC`); the other
daemon answers 404 itself.

Speed: a request is dispatched on its method, its first path segment (every template but the
OPTIONS catch-all starts with a literal segment) and its last path segment (a template ending in
the literal ``/start`` can only match a path whose last segment is ``start``; templates ending
in a variable stay candidates for any). Each resulting bucket is one precompiled alternation of
the remaining candidates in registration order, so Python's ordered, backtracking alternation
gives exactly mux's first-match-wins with greedy variables, and ``m.lastindex`` names the
winning route. tests/api/test_routes.py checks this against a literal emulation of mux (every route
tried in order) and against a real dockerd.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

SECTIONS: tuple[str, ...] = (
    "containers",
    "images",
    "exec",
    "build",
    "networks",
    "volumes",
    "services",
    "tasks",
    "nodes",
    "swarm",
    "secrets",
    "configs",
    "plugins",
    "system",
    "distribution",
    "session",
    "events",
    "info",
    "version",
    "ping",
    "auth",
    "commit",
    # Not an Engine API section: the daemon's debug router (expvar, pprof). Its own section so
    # that no grant of "system" or of read-only access opens it by accident of naming.
    "debug",
)


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    section: str
    method: str
    path: str
    writes: bool


@dataclass(frozen=True, slots=True)
class RouteMatch:
    operation: Operation
    version: str | None
    params: Mapping[str, str]


# The route table, in the daemon's registration order (router by router, route by route).
# Columns: method, the daemon's path template (exactly as registered, variable patterns
# included), operation name, the spec's path template (whose variable names the params use,
# position by position), section, writes.
#
# `writes` is True when the operation can change daemon, host or registry state, or opens a
# channel through which the client can write (a hijacked stream with stdin, a gRPC/session
# tunnel). Read-only policies allow only writes=False operations. The non-obvious ones:
#   ContainerAttachWebsocket  GET, but a WebSocket carrying the container's stdin: writes.
#   ContainerAttach           a hijacked stream with stdin (stdin=0 is a query detail that the
#                             route cannot see): writes.
#   ContainerResize/ExecResize  change a running process's TTY (SIGWINCH): writes.
#   ContainerExec             creates an exec instance (daemon state; the step before ExecStart).
#   ContainerWait             POST, but only blocks until the container reaches a state: reads.
#   ContainerCopy             POST (20.10 only), but serves a tar of a path out of the container,
#                             like GET .../archive: reads.
#   ContainerExport, ImageGet, ImageGetAll  stream tarballs out: reads.
#   ContainerTop/Stats/Logs/Changes  observe: reads.
#   SystemAuth                POST /auth only checks credentials against a registry and returns
#                             a status (and maybe an identity token); the daemon stores nothing
#                             (the CLI keeps credentials client-side): reads. It does make the
#                             daemon contact a registry of the caller's choice, so it has its own
#                             section ("auth") for policies that want it closed.
#   ImageSearch, GetPluginPrivileges, DistributionInspect  query a registry, change nothing.
#   ImagePush, PluginPush     change a registry (and copy data out): writes.
#   SwarmUnlockkey            GET that reveals the unlock key but changes nothing: reads
#                             (unlocking is SwarmUnlock, a write).
#   Session, GrpcSession      open a long-lived bidirectional channel into BuildKit (builds,
#                             cache pruning, file transfer): writes.
#   BuildCancel               stops a running build: writes.
#   SystemOptions             the CORS pre-flight handler does nothing: reads.
#   Debug*                    expvar/pprof only observe (a profile costs CPU for its duration):
#                             reads; section "debug".
_C = "containers"
_TABLE: tuple[tuple[str, str, str, str, str, bool], ...] = (
    # -- checkpoint router (experimental): checkpoint/checkpoint.go --------------------------
    ("GET", "/containers/{name:.*}/checkpoints", "CheckpointList",
     "/containers/{id}/checkpoints", _C, False),
    ("POST", "/containers/{name:.*}/checkpoints", "CheckpointCreate",
     "/containers/{id}/checkpoints", _C, True),
    ("DELETE", "/containers/{name}/checkpoints/{checkpoint}", "CheckpointDelete",
     "/containers/{id}/checkpoints/{checkpoint}", _C, True),
    # -- container router: container/container.go -------------------------------------------
    ("HEAD", "/containers/{name:.*}/archive", "ContainerArchiveInfo",
     "/containers/{id}/archive", _C, False),
    ("GET", "/containers/json", "ContainerList", "/containers/json", _C, False),
    ("GET", "/containers/{name:.*}/export", "ContainerExport", "/containers/{id}/export", _C,
     False),
    ("GET", "/containers/{name:.*}/changes", "ContainerChanges", "/containers/{id}/changes", _C,
     False),
    ("GET", "/containers/{name:.*}/json", "ContainerInspect", "/containers/{id}/json", _C, False),
    ("GET", "/containers/{name:.*}/top", "ContainerTop", "/containers/{id}/top", _C, False),
    ("GET", "/containers/{name:.*}/logs", "ContainerLogs", "/containers/{id}/logs", _C, False),
    ("GET", "/containers/{name:.*}/stats", "ContainerStats", "/containers/{id}/stats", _C, False),
    ("GET", "/containers/{name:.*}/attach/ws", "ContainerAttachWebsocket",
     "/containers/{id}/attach/ws", _C, True),
    ("GET", "/exec/{id:.*}/json", "ExecInspect", "/exec/{id}/json", "exec", False),
    ("GET", "/containers/{name:.*}/archive", "ContainerArchive", "/containers/{id}/archive", _C,
     False),
    ("POST", "/containers/create", "ContainerCreate", "/containers/create", _C, True),
    ("POST", "/containers/{name:.*}/kill", "ContainerKill", "/containers/{id}/kill", _C, True),
    ("POST", "/containers/{name:.*}/pause", "ContainerPause", "/containers/{id}/pause", _C, True),
    ("POST", "/containers/{name:.*}/unpause", "ContainerUnpause", "/containers/{id}/unpause", _C,
     True),
    ("POST", "/containers/{name:.*}/restart", "ContainerRestart", "/containers/{id}/restart", _C,
     True),
    ("POST", "/containers/{name:.*}/start", "ContainerStart", "/containers/{id}/start", _C, True),
    ("POST", "/containers/{name:.*}/stop", "ContainerStop", "/containers/{id}/stop", _C, True),
    ("POST", "/containers/{name:.*}/wait", "ContainerWait", "/containers/{id}/wait", _C, False),
    ("POST", "/containers/{name:.*}/resize", "ContainerResize", "/containers/{id}/resize", _C,
     True),
    ("POST", "/containers/{name:.*}/attach", "ContainerAttach", "/containers/{id}/attach", _C,
     True),
    ("POST", "/containers/{name:.*}/copy", "ContainerCopy", "/containers/{id}/copy", _C, False),
    ("POST", "/containers/{name:.*}/exec", "ContainerExec", "/containers/{id}/exec", "exec",
     True),
    ("POST", "/exec/{name:.*}/start", "ExecStart", "/exec/{id}/start", "exec", True),
    ("POST", "/exec/{name:.*}/resize", "ExecResize", "/exec/{id}/resize", "exec", True),
    ("POST", "/containers/{name:.*}/rename", "ContainerRename", "/containers/{id}/rename", _C,
     True),
    ("POST", "/containers/{name:.*}/update", "ContainerUpdate", "/containers/{id}/update", _C,
     True),
    ("POST", "/containers/prune", "ContainerPrune", "/containers/prune", _C, True),
    ("POST", "/commit", "ImageCommit", "/commit", "commit", True),
    ("PUT", "/containers/{name:.*}/archive", "PutContainerArchive", "/containers/{id}/archive",
     _C, True),
    ("DELETE", "/containers/{name:.*}", "ContainerDelete", "/containers/{id}", _C, True),
    # -- image router: image/image.go -------------------------------------------------------
    ("GET", "/images/json", "ImageList", "/images/json", "images", False),
    ("GET", "/images/search", "ImageSearch", "/images/search", "images", False),
    ("GET", "/images/get", "ImageGetAll", "/images/get", "images", False),
    ("GET", "/images/{name:.*}/get", "ImageGet", "/images/{name}/get", "images", False),
    ("GET", "/images/{name:.*}/history", "ImageHistory", "/images/{name}/history", "images",
     False),
    ("GET", "/images/{name:.*}/json", "ImageInspect", "/images/{name}/json", "images", False),
    ("GET", "/images/{name:.*}/attestations", "ImageAttestations", "/images/{name}/attestations",
     "images", False),
    ("POST", "/images/load", "ImageLoad", "/images/load", "images", True),
    ("POST", "/images/create", "ImageCreate", "/images/create", "images", True),
    ("POST", "/images/{name:.*}/push", "ImagePush", "/images/{name}/push", "images", True),
    ("POST", "/images/{name:.*}/tag", "ImageTag", "/images/{name}/tag", "images", True),
    ("POST", "/images/prune", "ImagePrune", "/images/prune", "images", True),
    ("DELETE", "/images/{name:.*}", "ImageDelete", "/images/{name}", "images", True),
    # -- system router: system/system.go ----------------------------------------------------
    ("OPTIONS", "/{anyroute:.*}", "SystemOptions", "/{anyroute}", "system", False),
    ("GET", "/_ping", "SystemPing", "/_ping", "ping", False),
    ("HEAD", "/_ping", "SystemPingHead", "/_ping", "ping", False),
    ("GET", "/events", "SystemEvents", "/events", "events", False),
    ("GET", "/info", "SystemInfo", "/info", "info", False),
    ("GET", "/version", "SystemVersion", "/version", "version", False),
    ("GET", "/system/df", "SystemDataUsage", "/system/df", "system", False),
    ("POST", "/auth", "SystemAuth", "/auth", "auth", False),
    # -- volume router: volume/volume.go ----------------------------------------------------
    ("GET", "/volumes", "VolumeList", "/volumes", "volumes", False),
    ("GET", "/volumes/{name:.*}", "VolumeInspect", "/volumes/{name}", "volumes", False),
    ("POST", "/volumes/create", "VolumeCreate", "/volumes/create", "volumes", True),
    ("POST", "/volumes/prune", "VolumePrune", "/volumes/prune", "volumes", True),
    ("PUT", "/volumes/{name:.*}", "VolumeUpdate", "/volumes/{name}", "volumes", True),
    ("DELETE", "/volumes/{name:.*}", "VolumeDelete", "/volumes/{name}", "volumes", True),
    # -- build router: build/build.go -------------------------------------------------------
    ("POST", "/build", "ImageBuild", "/build", "build", True),
    ("POST", "/build/prune", "BuildPrune", "/build/prune", "build", True),
    ("POST", "/build/cancel", "BuildCancel", "/build/cancel", "build", True),
    # -- session router: session/session.go -------------------------------------------------
    ("POST", "/session", "Session", "/session", "session", True),
    # -- swarm router: swarm/cluster.go -----------------------------------------------------
    ("POST", "/swarm/init", "SwarmInit", "/swarm/init", "swarm", True),
    ("POST", "/swarm/join", "SwarmJoin", "/swarm/join", "swarm", True),
    ("POST", "/swarm/leave", "SwarmLeave", "/swarm/leave", "swarm", True),
    ("GET", "/swarm", "SwarmInspect", "/swarm", "swarm", False),
    ("GET", "/swarm/unlockkey", "SwarmUnlockkey", "/swarm/unlockkey", "swarm", False),
    ("POST", "/swarm/update", "SwarmUpdate", "/swarm/update", "swarm", True),
    ("POST", "/swarm/unlock", "SwarmUnlock", "/swarm/unlock", "swarm", True),
    ("GET", "/services", "ServiceList", "/services", "services", False),
    ("GET", "/services/{id}", "ServiceInspect", "/services/{id}", "services", False),
    ("POST", "/services/create", "ServiceCreate", "/services/create", "services", True),
    ("POST", "/services/{id}/update", "ServiceUpdate", "/services/{id}/update", "services", True),
    ("DELETE", "/services/{id}", "ServiceDelete", "/services/{id}", "services", True),
    ("GET", "/services/{id}/logs", "ServiceLogs", "/services/{id}/logs", "services", False),
    ("GET", "/nodes", "NodeList", "/nodes", "nodes", False),
    ("GET", "/nodes/{id}", "NodeInspect", "/nodes/{id}", "nodes", False),
    ("DELETE", "/nodes/{id}", "NodeDelete", "/nodes/{id}", "nodes", True),
    ("POST", "/nodes/{id}/update", "NodeUpdate", "/nodes/{id}/update", "nodes", True),
    ("GET", "/tasks", "TaskList", "/tasks", "tasks", False),
    ("GET", "/tasks/{id}", "TaskInspect", "/tasks/{id}", "tasks", False),
    ("GET", "/tasks/{id}/logs", "TaskLogs", "/tasks/{id}/logs", "tasks", False),
    ("GET", "/secrets", "SecretList", "/secrets", "secrets", False),
    ("POST", "/secrets/create", "SecretCreate", "/secrets/create", "secrets", True),
    ("DELETE", "/secrets/{id}", "SecretDelete", "/secrets/{id}", "secrets", True),
    ("GET", "/secrets/{id}", "SecretInspect", "/secrets/{id}", "secrets", False),
    ("POST", "/secrets/{id}/update", "SecretUpdate", "/secrets/{id}/update", "secrets", True),
    ("GET", "/configs", "ConfigList", "/configs", "configs", False),
    ("POST", "/configs/create", "ConfigCreate", "/configs/create", "configs", True),
    ("DELETE", "/configs/{id}", "ConfigDelete", "/configs/{id}", "configs", True),
    ("GET", "/configs/{id}", "ConfigInspect", "/configs/{id}", "configs", False),
    ("POST", "/configs/{id}/update", "ConfigUpdate", "/configs/{id}/update", "configs", True),
    # -- plugin router: plugin/plugin.go ----------------------------------------------------
    ("GET", "/plugins", "PluginList", "/plugins", "plugins", False),
    ("GET", "/plugins/{name:.*}/json", "PluginInspect", "/plugins/{name}/json", "plugins", False),
    ("GET", "/plugins/privileges", "GetPluginPrivileges", "/plugins/privileges", "plugins",
     False),
    ("DELETE", "/plugins/{name:.*}", "PluginDelete", "/plugins/{name}", "plugins", True),
    ("POST", "/plugins/{name:.*}/enable", "PluginEnable", "/plugins/{name}/enable", "plugins",
     True),
    ("POST", "/plugins/{name:.*}/disable", "PluginDisable", "/plugins/{name}/disable", "plugins",
     True),
    ("POST", "/plugins/pull", "PluginPull", "/plugins/pull", "plugins", True),
    ("POST", "/plugins/{name:.*}/push", "PluginPush", "/plugins/{name}/push", "plugins", True),
    ("POST", "/plugins/{name:.*}/upgrade", "PluginUpgrade", "/plugins/{name}/upgrade", "plugins",
     True),
    ("POST", "/plugins/{name:.*}/set", "PluginSet", "/plugins/{name}/set", "plugins", True),
    ("POST", "/plugins/create", "PluginCreate", "/plugins/create", "plugins", True),
    # -- distribution router: distribution/distribution.go ----------------------------------
    ("GET", "/distribution/{name:.*}/json", "DistributionInspect", "/distribution/{name}/json",
     "distribution", False),
    # -- grpc router: grpc/grpc.go (h2c upgrade into BuildKit's gRPC services) ---------------
    ("POST", "/grpc", "GrpcSession", "/grpc", "session", True),
    # -- network router: network/network.go ------------------------------------------------
    ("GET", "/networks", "NetworkList", "/networks", "networks", False),
    ("GET", "/networks/", "NetworkList", "/networks", "networks", False),
    ("GET", "/networks/{id:.+}", "NetworkInspect", "/networks/{id}", "networks", False),
    ("POST", "/networks/create", "NetworkCreate", "/networks/create", "networks", True),
    ("POST", "/networks/{id:.*}/connect", "NetworkConnect", "/networks/{id}/connect", "networks",
     True),
    ("POST", "/networks/{id:.*}/disconnect", "NetworkDisconnect", "/networks/{id}/disconnect",
     "networks", True),
    ("POST", "/networks/prune", "NetworkPrune", "/networks/prune", "networks", True),
    ("DELETE", "/networks/{id:.*}", "NetworkDelete", "/networks/{id}", "networks", True),
    # -- debug router: debug/debug.go (GET only here; see the module docstring) -------------
    ("GET", "/debug/vars", "DebugVars", "/debug/vars", "debug", False),
    ("GET", "/debug/pprof/", "DebugPprofIndex", "/debug/pprof/", "debug", False),
    ("GET", "/debug/pprof/cmdline", "DebugPprofCmdline", "/debug/pprof/cmdline", "debug", False),
    ("GET", "/debug/pprof/profile", "DebugPprofProfile", "/debug/pprof/profile", "debug", False),
    ("GET", "/debug/pprof/symbol", "DebugPprofSymbol", "/debug/pprof/symbol", "debug", False),
    ("GET", "/debug/pprof/trace", "DebugPprofTrace", "/debug/pprof/trace", "debug", False),
    ("GET", "/debug/pprof/{name}", "DebugPprofNamed", "/debug/pprof/{name}", "debug", False),
)  # fmt: skip

# Operations that only one of the two daemons routes (the other answers 404 itself).
DAEMON_SPECIFIC: Mapping[str, str] = MappingProxyType(
    {
        "ContainerCopy": "20.10 only (removed from the container router since)",
        "ImageAttestations": "newest only (API 1.55+)",
        "VolumeUpdate": "newest only (cluster volumes, API 1.42+)",
    }
)

# Where each operation that the specs lack comes from (moby/moby, both trees unless noted).
EXTRA_SOURCES: Mapping[str, str] = MappingProxyType(
    {
        "SystemOptions": 'router/system/system.go: NewOptionsRoute("/{anyroute:.*}")',
        "BuildCancel": 'router/build/build.go: NewPostRoute("/build/cancel")',
        "GrpcSession": 'router/grpc/grpc.go: NewPostRoute("/grpc")',
        "CheckpointList": "router/checkpoint/checkpoint.go (experimental)",
        "CheckpointCreate": "router/checkpoint/checkpoint.go (experimental)",
        "CheckpointDelete": "router/checkpoint/checkpoint.go (experimental)",
        "ContainerCopy": "api/server/router/container/container.go (20.10)",
        "DebugVars": "router/debug/debug.go",
        "DebugPprofIndex": "router/debug/debug.go",
        "DebugPprofCmdline": "router/debug/debug.go",
        "DebugPprofProfile": "router/debug/debug.go",
        "DebugPprofSymbol": "router/debug/debug.go",
        "DebugPprofTrace": "router/debug/debug.go",
        "DebugPprofNamed": "router/debug/debug.go",
    }
)

# mux template syntax: `{name}` or `{name:pattern}` (moby's patterns contain no braces).
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")
# server.go's versionMatcher "/v{version:[0-9.]+}", followed by a route that starts with "/".
_VERSION_PREFIX = re.compile(r"/v([0-9.]+)(?=/)")

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def _template_regex(template: str) -> tuple[str, list[str]]:
    """A mux path template as regexp source (unanchored) and its variable names in order."""
    parts: list[str] = []
    names: list[str] = []
    pos = 0
    for match in _VARIABLE.finditer(template):
        parts.append(re.escape(template[pos : match.start()]))
        parts.append("(" + (match.group(2) or "[^/]+") + ")")
        names.append(match.group(1))
        pos = match.end()
    parts.append(re.escape(template[pos:]))
    return "".join(parts), names


def _spec_variables(path: str) -> list[str]:
    return [m.group(1) for m in _VARIABLE.finditer(path)]


def _last_literal_segment(template: str) -> str | None:
    """The template's last path segment when it is literal text, else None (a variable)."""
    last = template[template.rfind("/") + 1 :]
    return None if "{" in last else last


# A bucket: one alternation over some routes in registration order, and for each outer group
# number the route's operation, its spec variable names and their group numbers.
_Route = tuple[Operation, tuple[str, ...], tuple[int, ...]]
_Bucket = tuple[re.Pattern[str], dict[int, _Route]]
# Per method, per first path segment: buckets by the path's last segment, and the bucket for a
# last segment that no template spells out (only templates ending in a variable can match it).
_Segment = tuple[dict[str, _Bucket], _Bucket | None]
_Candidate = tuple[str, Operation, list[str], str | None]


def _bucket(routes: list[_Candidate]) -> _Bucket | None:
    if not routes:
        return None
    alternatives: list[str] = []
    table: dict[int, _Route] = {}
    group = 0
    for source, op, spec_vars, _last in routes:
        group += 1
        table[group] = (op, tuple(spec_vars), tuple(range(group + 1, group + 1 + len(spec_vars))))
        group += len(spec_vars)
        alternatives.append("(" + source + ")")
    pattern = re.compile("|".join(alternatives))
    if pattern.groups != group:
        raise ValueError(f"unexpected groups in {pattern.pattern}")
    return pattern, table


def _build() -> tuple[dict[str, Operation], dict[str, dict[str, _Segment]], Operation]:
    operations: dict[str, Operation] = {}
    candidates: dict[str, dict[str, list[_Candidate]]] = {}
    catch_all: Operation | None = None
    for method, template, name, spec_path, section, writes in _TABLE:
        if section not in SECTIONS:
            raise ValueError(f"{name}: unknown section {section!r}")
        op = Operation(name, section, method, spec_path, writes)
        if operations.setdefault(name, op) != op:
            raise ValueError(f"{name}: two different definitions")
        source, daemon_vars = _template_regex(template)
        spec_vars = _spec_variables(spec_path)
        if len(spec_vars) != len(daemon_vars):
            raise ValueError(f"{name}: {template} and {spec_path} disagree on variables")
        if template == "/{anyroute:.*}":
            catch_all = op
            continue
        end = template.find("/", 1)
        first = template[1:] if end < 0 else template[1:end]
        if "{" in first:
            raise ValueError(f"{template}: only the OPTIONS catch-all may start with a variable")
        last = _last_literal_segment(template)
        candidates.setdefault(method, {}).setdefault(first, []).append(
            (source, op, spec_vars, last)
        )
    if catch_all is None:
        raise ValueError("the OPTIONS catch-all is missing")
    dispatch: dict[str, dict[str, _Segment]] = {}
    for method, by_first in candidates.items():
        for first, routes in by_first.items():
            # A path whose last segment is L can only match templates ending in the literal L
            # or in a variable; keep those, in registration order.
            by_last: dict[str, _Bucket] = {}
            for literal in {c[3] for c in routes if c[3] is not None}:
                bucket = _bucket([c for c in routes if c[3] in (literal, None)])
                assert bucket is not None
                by_last[literal] = bucket
            default = _bucket([c for c in routes if c[3] is None])
            dispatch.setdefault(method, {})[first] = (by_last, default)
    return operations, dispatch, catch_all


_OPERATIONS, _DISPATCH, _OPTIONS_OPERATION = _build()
OPERATIONS: Mapping[str, Operation] = MappingProxyType(_OPERATIONS)

# RouteMatch values without variables are shared (bounded: the version string is the client's).
_SHARED: dict[tuple[str, str | None], RouteMatch] = {}
_SHARED_MAX = 4096


def identify(method: str, path: str) -> RouteMatch | None:
    """The operation the daemon's router would run for `method` and `path`, or None.

    `path` is the already-decoded, already-validated URL path (no query string), exactly as
    Go's ``r.URL.Path``. Returns None when the daemon's router would not route it (the daemon
    answers 404/405, or 301 for a path that is not clean).
    """
    # gorilla/mux redirects (301) instead of routing when cleanPath(path) != path: a path not
    # starting with "/", an empty segment ("//"), or a "." or ".." segment.
    if path[:1] != "/" or "//" in path:
        return None
    version: str | None = None
    rest = path
    if path[1:2] == "v":
        prefix = _VERSION_PREFIX.match(path)
        if prefix is not None:
            version = prefix[1]
            rest = path[prefix.end() :]
    # rest starts with "/", so parts[0] == "" and parts[1] is the first segment (the version
    # prefix, when there is one, is neither "." nor "..").
    parts = rest.split("/")
    if "/." in rest and ("." in parts or ".." in parts):
        return None
    by_first = _DISPATCH.get(method)
    if by_first is None:
        # OPTIONS has one route, the system router's catch-all "/{anyroute:.*}".
        if method == "OPTIONS" and "\n" not in rest:
            return RouteMatch(_OPTIONS_OPERATION, version, {"anyroute": rest[1:]})
        return None
    segment = by_first.get(parts[1])
    if segment is None:
        return None
    by_last, default = segment
    bucket = by_last.get(parts[-1], default)
    if bucket is None:
        return None
    pattern, table = bucket
    match = pattern.fullmatch(rest)
    if match is None:
        return None
    index = match.lastindex
    assert index is not None  # every alternative is a group
    operation, names, groups = table[index]
    if len(names) == 1:
        return RouteMatch(operation, version, {names[0]: match[groups[0]]})
    if names:
        return RouteMatch(operation, version, dict(zip(names, match.group(*groups), strict=True)))
    key = (operation.name, version)
    shared = _SHARED.get(key)
    if shared is None:
        shared = RouteMatch(operation, version, _NO_PARAMS)
        if len(_SHARED) < _SHARED_MAX:
            _SHARED[key] = shared
    return shared
