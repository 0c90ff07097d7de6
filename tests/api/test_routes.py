"""Operation identification (dockgate.api.routes) against the specs, moby's router, and a real
dockerd.

Three independent references:

- the Engine API specs (``/work/shared/docker-api/v1.41.yaml`` and ``v1.56.yaml``): every
  operation of both is identified from a sample request, with and without a version prefix;
- a literal, slow emulation of gorilla/mux written here from the router source (every route
  registered twice, versioned then unversioned, tried in order, after ``cleanPath``), which the
  fast dispatch of `identify` must agree with on thousands of generated paths;
- the 20.10 dockerd of the test session (``daemon`` marker): a request to ``/v9.99/...`` is
  answered "client version 9.99 is too new" (400) by the version middleware when a route
  matched, before any handler runs, and "page not found" (404) when none did, so the daemon's own
  router can be probed without changing anything.
"""

from __future__ import annotations

import json
import pathlib
import random
import re
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dockgate.api import routes
from dockgate.api.routes import (
    DAEMON_SPECIFIC,
    OPERATIONS,
    SECTIONS,
    Operation,
    RouteMatch,
    identify,
)
from support.daemon import PrivateDaemon

SPEC_DIR = pathlib.Path("/work/shared/docker-api")
SPEC_FILES = ("v1.41.yaml", "v1.56.yaml")
HTTP_METHODS = ("get", "head", "post", "put", "delete", "options", "patch")


def _load_spec(name: str) -> dict[str, Any]:
    with open(SPEC_DIR / name, encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


SPECS = {name: _load_spec(name) for name in SPEC_FILES}


def _spec_operations() -> Iterator[tuple[str, str, str, str, str]]:
    """(spec file, METHOD, path template, operationId, first tag) for every spec operation."""
    for name, spec in SPECS.items():
        for path, item in spec["paths"].items():
            for method, op in item.items():
                if method in HTTP_METHODS:
                    yield name, method.upper(), path, op["operationId"], op["tags"][0]


SPEC_OPERATIONS = list(_spec_operations())

# Realistic values for a path variable, by the template's first segment and the variable name.
# Image, plugin and distribution names carry registry hosts with ports, slashes, tags and digests;
# each list also has a value spelled like a literal route ("json", "create", ...), which must
# still reach the variable route: the daemon registers literals first only where they collide.
DIGEST = "sha256:" + "4f" * 32
SAMPLES: dict[tuple[str, str], tuple[str, ...]] = {
    ("containers", "id"): ("3f4e8d2c1b0a" * 5 + "9f8e", "web_1", "json"),
    ("images", "name"): (
        "registry.example.com:5000/team/app:1.2",
        f"team/app@{DIGEST}",
        "busybox",
        "json",
    ),
    ("plugins", "name"): ("registry.example.com/vendor/plugin:latest", "privileges"),
    ("distribution", "name"): ("registry.example.com/team/app:1", f"app@{DIGEST}"),
    ("volumes", "name"): ("data-volume", "create"),
    ("networks", "id"): ("frontend-net", "create"),
    ("exec", "id"): ("e7" * 32, "json"),
}
DEFAULT_SAMPLES = ("x7zq2c0dn3kv9ewbj5tl0hy8m", "create")


def _fill(template: str, pick: int) -> tuple[str, dict[str, str]]:
    first = template.lstrip("/").split("/", 1)[0]
    params: dict[str, str] = {}

    def value(m: re.Match[str]) -> str:
        options = SAMPLES.get((first, m.group(1)), DEFAULT_SAMPLES)
        params[m.group(1)] = options[pick % len(options)]
        return params[m.group(1)]

    return re.sub(r"\{([^}]+)\}", value, template), params


def _spec_cases() -> Iterator[Any]:
    for name, method, template, op_id, _tag in SPEC_OPERATIONS:
        count = 1
        for var in re.findall(r"\{([^}]+)\}", template):
            first = template.lstrip("/").split("/", 1)[0]
            count = max(count, len(SAMPLES.get((first, var), DEFAULT_SAMPLES)))
        for pick in range(count):
            path, params = _fill(template, pick)
            for prefix, version in (("", None), ("/v1.41", "1.41"), ("/v1.56", "1.56")):
                yield pytest.param(
                    method,
                    prefix + path,
                    (op_id, template, version, params),
                    id=f"{name}:{method} {prefix}{path}",
                )


Expected = tuple[str, str, str | None, dict[str, str]]


@pytest.mark.parametrize(("method", "path", "expected"), _spec_cases())
def test_every_spec_operation_is_identified(method: str, path: str, expected: Expected) -> None:
    op_id, template, version, params = expected
    match = identify(method, path)
    assert match is not None, f"{method} {path} not routed"
    assert match.operation.name == op_id
    assert match.operation.method == method
    assert match.operation.path == template
    assert match.version == version
    assert dict(match.params) == params


def test_operations_cover_both_specs_and_nothing_unexplained() -> None:
    spec_ids = {op_id for _n, _m, _p, op_id, _t in SPEC_OPERATIONS}
    assert spec_ids <= set(OPERATIONS)
    for _name, method, template, op_id, _tag in SPEC_OPERATIONS:
        op = OPERATIONS[op_id]
        assert (op.method, op.path) == (method, template)
    # Everything beyond the specs is a route of the daemon, with its source written down.
    assert set(OPERATIONS) - spec_ids == set(routes.EXTRA_SOURCES)
    assert set(DAEMON_SPECIFIC) <= set(OPERATIONS)
    assert len(OPERATIONS) == len(spec_ids) + len(routes.EXTRA_SOURCES) == 122
    for name, op in OPERATIONS.items():
        assert isinstance(op, Operation)
        assert op.name == name
        assert op.section in SECTIONS
        assert op.method in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS")


def test_only_in_one_spec() -> None:
    ids = {name: {op_id for n, _m, _p, op_id, _t in SPEC_OPERATIONS if n == name} for name in SPECS}
    assert ids["v1.56.yaml"] - ids["v1.41.yaml"] == {"ImageAttestations", "VolumeUpdate"}
    assert ids["v1.41.yaml"] - ids["v1.56.yaml"] == set()


# -- sections ----------------------------------------------------------------------------------

# The spec's tag names the section, except where the sections split a tag: the System
# tag into ping/events/info/version/auth/system, the Image tag into images/build/commit.
TAG_SECTIONS = {
    "Container": "containers",
    "Image": "images",
    "Exec": "exec",
    "Network": "networks",
    "Volume": "volumes",
    "Service": "services",
    "Task": "tasks",
    "Node": "nodes",
    "Swarm": "swarm",
    "Secret": "secrets",
    "Config": "configs",
    "Plugin": "plugins",
    "System": "system",
    "Distribution": "distribution",
    "Session": "session",
}
SECTION_OVERRIDES = {
    "ImageBuild": "build",
    "BuildPrune": "build",
    "ImageCommit": "commit",
    "SystemAuth": "auth",
    "SystemEvents": "events",
    "SystemInfo": "info",
    "SystemVersion": "version",
    "SystemPing": "ping",
    "SystemPingHead": "ping",
}
EXTRA_SECTIONS = {
    "SystemOptions": "system",
    "BuildCancel": "build",
    "GrpcSession": "session",
    "CheckpointList": "containers",
    "CheckpointCreate": "containers",
    "CheckpointDelete": "containers",
    "ContainerCopy": "containers",
    "DebugVars": "debug",
    "DebugPprofIndex": "debug",
    "DebugPprofCmdline": "debug",
    "DebugPprofProfile": "debug",
    "DebugPprofSymbol": "debug",
    "DebugPprofTrace": "debug",
    "DebugPprofNamed": "debug",
}


def test_sections() -> None:
    expected = dict(EXTRA_SECTIONS)
    for _name, _method, _path, op_id, tag in SPEC_OPERATIONS:
        expected[op_id] = SECTION_OVERRIDES.get(op_id, TAG_SECTIONS[tag])
    assert {name: op.section for name, op in OPERATIONS.items()} == expected
    # ContainerExec lives under /containers but the spec tags it Exec: granting "containers"
    # must not grant running commands.
    assert OPERATIONS["ContainerExec"].section == "exec"
    assert set(SECTIONS) == set(expected.values())
    assert len(SECTIONS) == len(set(SECTIONS))


# -- writes ------------------------------------------------------------------------------------

# Every operation, and whether it can change something (daemon, host or registry state) or opens
# a channel the client can write through. Read-only policies allow only the False ones.
WRITES: dict[str, bool] = {
    # containers
    "ContainerList": False,
    "ContainerCreate": True,
    "ContainerInspect": False,
    "ContainerTop": False,
    "ContainerLogs": False,
    "ContainerChanges": False,
    "ContainerExport": False,  # streams the filesystem out as a tar; changes nothing
    "ContainerStats": False,
    "ContainerResize": True,  # resizes a running process's TTY (SIGWINCH)
    "ContainerStart": True,
    "ContainerStop": True,
    "ContainerRestart": True,
    "ContainerKill": True,
    "ContainerUpdate": True,
    "ContainerRename": True,
    "ContainerPause": True,
    "ContainerUnpause": True,
    "ContainerAttach": True,  # hijacked stream that carries stdin
    "ContainerAttachWebsocket": True,  # a GET, but a WebSocket that carries stdin
    "ContainerWait": False,  # a POST that only blocks until a state is reached
    "ContainerDelete": True,
    "ContainerArchiveInfo": False,
    "ContainerArchive": False,
    "PutContainerArchive": True,
    "ContainerPrune": True,
    "ContainerCopy": False,  # 20.10 only: a POST that serves a tar out of the container
    "CheckpointList": False,
    "CheckpointCreate": True,
    "CheckpointDelete": True,
    # exec
    "ContainerExec": True,  # creates the exec instance that ExecStart runs
    "ExecStart": True,
    "ExecResize": True,
    "ExecInspect": False,
    # images, build, commit
    "ImageList": False,
    "ImageBuild": True,
    "BuildPrune": True,
    "BuildCancel": True,
    "ImageCreate": True,
    "ImageInspect": False,
    "ImageAttestations": False,
    "ImageHistory": False,
    "ImagePush": True,  # changes a registry
    "ImageTag": True,
    "ImageDelete": True,
    "ImageSearch": False,  # queries a registry
    "ImagePrune": True,
    "ImageCommit": True,
    "ImageGet": False,  # exports a tarball
    "ImageGetAll": False,
    "ImageLoad": True,
    # system
    "SystemOptions": False,  # the CORS pre-flight handler does nothing
    "SystemAuth": False,  # checks credentials with a registry; the daemon stores nothing
    "SystemInfo": False,
    "SystemVersion": False,
    "SystemPing": False,
    "SystemPingHead": False,
    "SystemEvents": False,
    "SystemDataUsage": False,
    # volumes
    "VolumeList": False,
    "VolumeCreate": True,
    "VolumeInspect": False,
    "VolumeUpdate": True,
    "VolumeDelete": True,
    "VolumePrune": True,
    # networks
    "NetworkList": False,
    "NetworkInspect": False,
    "NetworkDelete": True,
    "NetworkCreate": True,
    "NetworkConnect": True,
    "NetworkDisconnect": True,
    "NetworkPrune": True,
    # plugins
    "PluginList": False,
    "GetPluginPrivileges": False,  # queries a registry
    "PluginPull": True,
    "PluginInspect": False,
    "PluginDelete": True,
    "PluginEnable": True,
    "PluginDisable": True,
    "PluginUpgrade": True,
    "PluginCreate": True,
    "PluginPush": True,
    "PluginSet": True,
    # swarm
    "NodeList": False,
    "NodeInspect": False,
    "NodeDelete": True,
    "NodeUpdate": True,
    "SwarmInspect": False,
    "SwarmInit": True,
    "SwarmJoin": True,
    "SwarmLeave": True,
    "SwarmUpdate": True,
    "SwarmUnlockkey": False,  # reveals the key, changes nothing (SwarmUnlock is the write)
    "SwarmUnlock": True,
    "ServiceList": False,
    "ServiceCreate": True,
    "ServiceInspect": False,
    "ServiceDelete": True,
    "ServiceUpdate": True,
    "ServiceLogs": False,
    "TaskList": False,
    "TaskInspect": False,
    "TaskLogs": False,
    "SecretList": False,
    "SecretCreate": True,
    "SecretInspect": False,
    "SecretDelete": True,
    "SecretUpdate": True,
    "ConfigList": False,
    "ConfigCreate": True,
    "ConfigInspect": False,
    "ConfigDelete": True,
    "ConfigUpdate": True,
    # distribution, session
    "DistributionInspect": False,  # queries a registry
    "Session": True,  # hijacked long-lived channel into BuildKit
    "GrpcSession": True,  # h2c tunnel to BuildKit's gRPC API (solve, prune, ...)
    # debug router: observation only
    "DebugVars": False,
    "DebugPprofIndex": False,
    "DebugPprofCmdline": False,
    "DebugPprofProfile": False,
    "DebugPprofSymbol": False,
    "DebugPprofTrace": False,
    "DebugPprofNamed": False,
}


def test_writes_table() -> None:
    assert {name: op.writes for name, op in OPERATIONS.items()} == WRITES


def test_method_alone_does_not_decide_writes() -> None:
    reads_by_post = {n for n, op in OPERATIONS.items() if op.method == "POST" and not op.writes}
    assert reads_by_post == {"ContainerWait", "ContainerCopy", "SystemAuth"}
    writes_by_get = {
        n for n, op in OPERATIONS.items() if op.method in ("GET", "HEAD") and op.writes
    }
    assert writes_by_get == {"ContainerAttachWebsocket"}


def test_spec_get_endpoints_that_upgrade_are_writes() -> None:
    # A GET whose description speaks of a WebSocket or of hijacking is a write channel.
    found = set()
    for name, method, template, op_id, _tag in SPEC_OPERATIONS:
        if method != "GET":
            continue
        text = json.dumps(SPECS[name]["paths"][template]["get"]).lower()
        if "websocket" in text or "hijack" in text:
            assert OPERATIONS[op_id].writes, op_id
            found.add(op_id)
    assert found == {"ContainerAttachWebsocket"}


# -- first match, as the daemon registers ------------------------------------------------------


def _name(method: str, path: str) -> str | None:
    match = identify(method, path)
    return None if match is None else match.operation.name


def _params(method: str, path: str) -> dict[str, str]:
    match = identify(method, path)
    assert match is not None
    return dict(match.params)


@pytest.mark.parametrize(
    ("method", "path", "expected", "params"),
    [
        # Greedy {name:.*} keeps slashes and colons; the suffix picks the route.
        ("GET", "/images/reg.example.com/team/app:1/json", "ImageInspect",
         {"name": "reg.example.com/team/app:1"}),
        ("DELETE", "/images/reg.example.com/team/app:1/json", "ImageDelete",
         {"name": "reg.example.com/team/app:1/json"}),
        ("GET", "/images/a/json/json", "ImageInspect", {"name": "a/json"}),
        ("GET", "/images/get", "ImageGetAll", {}),
        ("GET", "/images/get/get", "ImageGet", {"name": "get"}),
        ("GET", "/images/reg:5000/app/get", "ImageGet", {"name": "reg:5000/app"}),
        ("GET", "/images/search", "ImageSearch", {}),
        ("GET", "/images/json", "ImageList", {}),
        ("POST", "/images/prune", "ImagePrune", {}),
        ("DELETE", "/images/prune", "ImageDelete", {"name": "prune"}),
        ("POST", "/images/load", "ImageLoad", {}),
        ("POST", "/images/create", "ImageCreate", {}),
        # containers: literals before variables, DELETE last
        ("GET", "/containers/json", "ContainerList", {}),
        ("GET", "/containers/json/json", "ContainerInspect", {"id": "json"}),
        ("POST", "/containers/prune", "ContainerPrune", {}),
        ("POST", "/containers/create", "ContainerCreate", {}),
        ("POST", "/containers/create/start", "ContainerStart", {"id": "create"}),
        ("DELETE", "/containers/x", "ContainerDelete", {"id": "x"}),
        ("DELETE", "/containers/x/json", "ContainerDelete", {"id": "x/json"}),
        ("DELETE", "/containers/x/archive/", "ContainerDelete", {"id": "x/archive/"}),
        ("DELETE", "/containers/json", "ContainerDelete", {"id": "json"}),
        # DELETE /containers/{name:.*} matches an empty name ("/containers/" is a clean path).
        ("DELETE", "/containers/", "ContainerDelete", {"id": ""}),
        ("POST", "/containers/a/start/stop", "ContainerStop", {"id": "a/start"}),
        ("GET", "/containers/x/attach/ws", "ContainerAttachWebsocket", {"id": "x"}),
        ("POST", "/containers/x/attach", "ContainerAttach", {"id": "x"}),
        ("GET", "/containers/x/attach/ws/json", "ContainerInspect", {"id": "x/attach/ws"}),
        # The checkpoint router is registered before the container router ("or the DELETE gets
        # masked"); its DELETE uses {name} and {checkpoint}, single segments.
        ("DELETE", "/containers/x/checkpoints/cp1", "CheckpointDelete",
         {"id": "x", "checkpoint": "cp1"}),
        ("DELETE", "/containers/a/b/checkpoints/cp1", "ContainerDelete",
         {"id": "a/b/checkpoints/cp1"}),
        ("DELETE", "/containers/x/checkpoints", "ContainerDelete", {"id": "x/checkpoints"}),
        ("GET", "/containers/x/checkpoints", "CheckpointList", {"id": "x"}),
        ("POST", "/containers/x/checkpoints", "CheckpointCreate", {"id": "x"}),
        ("POST", "/containers/x/copy", "ContainerCopy", {"id": "x"}),
        ("POST", "/containers/x/exec", "ContainerExec", {"id": "x"}),
        # exec: the daemon's variables are {id:.*} and {name:.*}, the spec's {id}
        ("GET", "/exec/a/b/json", "ExecInspect", {"id": "a/b"}),
        ("POST", "/exec/abc/start", "ExecStart", {"id": "abc"}),
        # networks: GET "/networks/" is registered (list); {id:.+} and {id:.*} span slashes
        ("GET", "/networks", "NetworkList", {}),
        ("GET", "/networks/", "NetworkList", {}),
        ("GET", "/networks/a/b", "NetworkInspect", {"id": "a/b"}),
        ("GET", "/networks/create", "NetworkInspect", {"id": "create"}),
        ("GET", "/networks/none/", "NetworkInspect", {"id": "none/"}),
        ("DELETE", "/networks/", "NetworkDelete", {"id": ""}),
        ("POST", "/networks/prune", "NetworkPrune", {}),
        ("POST", "/networks/prune/connect", "NetworkConnect", {"id": "prune"}),
        # volumes: {name:.*} takes an empty name and a trailing slash
        ("GET", "/volumes", "VolumeList", {}),
        ("GET", "/volumes/", "VolumeInspect", {"name": ""}),
        ("GET", "/volumes/a/b", "VolumeInspect", {"name": "a/b"}),
        ("PUT", "/volumes/v1", "VolumeUpdate", {"name": "v1"}),
        ("POST", "/volumes/prune", "VolumePrune", {}),
        # swarm {id} is [^/]+
        ("GET", "/services/create", "ServiceInspect", {"id": "create"}),
        ("GET", "/services/s1/logs", "ServiceLogs", {"id": "s1"}),
        ("GET", "/swarm", "SwarmInspect", {}),
        ("GET", "/swarm/unlockkey", "SwarmUnlockkey", {}),
        # plugins
        ("GET", "/plugins/privileges", "GetPluginPrivileges", {}),
        ("GET", "/plugins/privileges/json", "PluginInspect", {"name": "privileges"}),
        ("POST", "/plugins/pull", "PluginPull", {}),
        ("DELETE", "/plugins/vendor/p:1", "PluginDelete", {"name": "vendor/p:1"}),
        # routes beyond the specs
        ("POST", "/build/cancel", "BuildCancel", {}),
        ("POST", "/grpc", "GrpcSession", {}),
        ("GET", "/debug/vars", "DebugVars", {}),
        ("GET", "/debug/pprof/", "DebugPprofIndex", {}),
        ("GET", "/debug/pprof/heap", "DebugPprofNamed", {"name": "heap"}),
        ("GET", "/debug/pprof/trace", "DebugPprofTrace", {}),
        ("OPTIONS", "/containers/x/json", "SystemOptions", {"anyroute": "containers/x/json"}),
        ("OPTIONS", "/", "SystemOptions", {"anyroute": ""}),
        ("OPTIONS", "/nowhere/at/all", "SystemOptions", {"anyroute": "nowhere/at/all"}),
    ],
)  # fmt: skip
def test_first_match(method: str, path: str, expected: str, params: dict[str, str]) -> None:
    for prefix in ("", "/v1.41"):
        match = identify(method, prefix + path)
        assert match is not None, prefix + path
        assert match.operation.name == expected, prefix + path
        assert dict(match.params) == params


@pytest.mark.parametrize(
    ("method", "path"),
    [
        # unknown
        ("GET", "/"),
        ("GET", "/nope"),
        ("GET", "/containers"),
        ("GET", "/images"),
        ("POST", "/containers"),
        ("GET", "/containers/x"),
        ("GET", "/containers/x/nope"),
        ("GET", "/images/get/"),  # no {name} before /get, and "/images/get/" is not "/images/get"
        ("GET", "/images//get"),  # not clean
        ("POST", "/images/x/get"),
        ("GET", "/services/a/b"),  # {id} is one segment
        ("GET", "/services/"),
        ("DELETE", "/nodes/a/b"),
        ("GET", "/plugins/privileges/"),
        ("GET", "/debug"),
        ("GET", "/debug/pprof"),
        ("GET", "/debug/pprof/a/b"),
        ("GET", "/grpc"),
        ("GET", "/session"),
        # trailing slash: no StrictSlash, so only templates that allow it
        ("GET", "/containers/json/"),
        ("GET", "/_ping/"),
        ("GET", "/version/"),
        ("GET", "/volumes/x/../y"),
        ("POST", "/build/"),
        ("POST", "/containers/create/"),
        ("GET", "/swarm/"),
        # wrong method for the path
        ("POST", "/containers/json"),
        ("PUT", "/containers/x"),
        ("PATCH", "/containers/x"),
        ("GET", "/containers/x/attach"),
        ("POST", "/containers/x/attach/ws"),
        ("GET", "/build"),
        ("PUT", "/images/x/tag"),
        ("CONNECT", "/containers/x/attach"),
        ("TRACE", "/_ping"),
        ("", "/_ping"),
        # HEAD is a method of its own: only HEAD /_ping and HEAD /containers/{name}/archive
        ("HEAD", "/version"),
        ("HEAD", "/containers/json"),
        ("HEAD", "/containers/x/json"),
        ("HEAD", "/images/x/json"),
        ("HEAD", "/debug/vars"),
        # methods are case-sensitive
        ("get", "/_ping"),
        ("Get", "/containers/json"),
        ("head", "/_ping"),
        ("post", "/containers/create"),
        ("delete", "/containers/x"),
        ("options", "/_ping"),
        # Go's "." does not match a newline
        ("GET", "/containers/a\nb/json"),
        ("OPTIONS", "/a\nb"),
        # paths the daemon redirects (301) instead of routing
        ("GET", ""),
        ("GET", "_ping"),
        ("GET", "//_ping"),
        ("GET", "/./_ping"),
        ("GET", "/x/../_ping"),
        ("GET", "/containers/a/./json"),
        ("GET", "/containers/a/../b/json"),
        ("GET", "/containers/a//json"),
        ("DELETE", "/containers/."),
        ("DELETE", "/containers/.."),
        ("GET", "/v1.41/../_ping"),
        ("GET", "/v1.41//_ping"),
        ("OPTIONS", "/x/../y"),
        # the version prefix is stripped once, and only as /v[0-9.]+/
        ("GET", "/v1.41/v1.41/_ping"),
        ("GET", "/V1.41/_ping"),
        ("GET", "/v1.41_ping"),
        ("GET", "/v/_ping"),
        ("GET", "/va/_ping"),
        ("GET", "/v1.41"),
        ("GET", "/v1.41/"),
        ("GET", "/v\u0661/_ping"),  # a non-ASCII digit is not [0-9]
    ],
)
def test_not_routed(method: str, path: str) -> None:
    assert identify(method, path) is None


def test_dotted_names_are_not_dot_segments() -> None:
    assert _params("GET", "/containers/.hidden/json") == {"id": ".hidden"}
    assert _params("GET", "/images/a/..b/json") == {"name": "a/..b"}
    assert _params("DELETE", "/containers/...") == {"id": "..."}
    assert _name("GET", "/v1.41/.x") is None


@pytest.mark.parametrize(
    ("path", "version"),
    [
        ("/v1.41/_ping", "1.41"),
        ("/v1/_ping", "1"),
        ("/v./_ping", "."),
        ("/v1.41.0/_ping", "1.41.0"),
        ("/v..1/_ping", "..1"),
        ("/v999/_ping", "999"),
        ("/_ping", None),
    ],
)
def test_version_prefix_is_recorded_not_judged(path: str, version: str | None) -> None:
    match = identify("GET", path)
    assert match is not None
    assert match.operation.name == "SystemPing"
    assert match.version == version


def test_head_routes() -> None:
    assert _name("HEAD", "/_ping") == "SystemPingHead"
    assert _name("GET", "/_ping") == "SystemPing"
    assert _name("HEAD", "/v1.41/containers/a/b/archive") == "ContainerArchiveInfo"
    assert _params("HEAD", "/containers/a/b/archive") == {"id": "a/b"}
    heads = sorted(n for n, op in OPERATIONS.items() if op.method == "HEAD")
    assert heads == ["ContainerArchiveInfo", "SystemPingHead"]


def test_options_catch_all_versions() -> None:
    match = identify("OPTIONS", "/v1.41")
    assert match is not None
    assert (match.version, dict(match.params)) == (None, {"anyroute": "v1.41"})
    match = identify("OPTIONS", "/v1.41/")
    assert match is not None
    assert (match.version, dict(match.params)) == ("1.41", {"anyroute": ""})


def test_match_values() -> None:
    match = identify("POST", "/v1.41/containers/abc/start")
    assert isinstance(match, RouteMatch)
    assert match.operation is OPERATIONS["ContainerStart"]
    assert match == RouteMatch(OPERATIONS["ContainerStart"], "1.41", {"id": "abc"})
    with pytest.raises(AttributeError):
        match.version = "1.40"  # type: ignore[misc]
    # Shared values for routes without variables stay equal to fresh ones.
    assert identify("GET", "/_ping") == RouteMatch(OPERATIONS["SystemPing"], None, {})
    assert identify("GET", "/_ping") is identify("GET", "/_ping")


def test_long_and_odd_names() -> None:
    long_name = "r.example.com:5000/" + "/".join(["seg"] * 200) + ":tag"
    assert _params("GET", f"/images/{long_name}/json") == {"name": long_name}
    odd = "a b?c#d%e@f+g;h=i,j'k(l)m*n!o$p&q"
    assert _params("GET", f"/containers/{odd}/json") == {"id": odd}
    assert _params("GET", "/containers/é/json") == {"id": "é"}


# -- the mux emulation: a literal reading of the router, against the fast dispatch -------------


def _go_path_clean(p: str) -> str:
    """Go's path.Clean for a rooted path."""
    out: list[str] = []
    for seg in p.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def _mux_clean_path(p: str) -> str:
    """gorilla/mux cleanPath: path.Clean, keeping a trailing slash."""
    if p == "":
        return "/"
    if p[0] != "/":
        p = "/" + p
    np = _go_path_clean(p)
    if p[-1] == "/" and np != "/":
        np += "/"
    return np


def _mux_regex(template: str) -> tuple[re.Pattern[str], list[str]]:
    parts: list[str] = []
    names: list[str] = []
    pos = 0
    for m in re.finditer(r"\{(\w+)(?::([^{}]+))?\}", template):
        parts.append(re.escape(template[pos : m.start()]))
        parts.append(f"({m.group(2) or '[^/]+'})")
        names.append(m.group(1))
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts)), names


class MuxEmulation:
    """Every route registered as /v{version:[0-9.]+}<path> then <path>, tried in order."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], bool, Operation, list[str]]] = []
        for method, template, name, spec_path, _section, _writes in routes._TABLE:
            regex, daemon_vars = _mux_regex(template)
            spec_vars = re.findall(r"\{(\w+)\}", spec_path)
            assert len(spec_vars) == len(daemon_vars)
            versioned = re.compile(r"/v([0-9.]+)" + regex.pattern)
            self.routes.append((method, versioned, True, OPERATIONS[name], spec_vars))
            self.routes.append((method, regex, False, OPERATIONS[name], spec_vars))

    def route(self, method: str, path: str) -> RouteMatch | None:
        if _mux_clean_path(path) != path:
            return None  # 301
        for route_method, regex, versioned, op, names in self.routes:
            if route_method != method:
                continue
            m = regex.fullmatch(path)
            if m is None:
                continue
            groups = m.groups()
            version = groups[0] if versioned else None
            values = groups[1:] if versioned else groups
            return RouteMatch(op, version, dict(zip(names, values, strict=True)))
        return None


MUX = MuxEmulation()

_WORDS = (
    "containers images exec networks volumes plugins services nodes tasks secrets configs swarm "
    "distribution session grpc build debug pprof vars _ping version info events system df auth "
    "commit json create prune start stop kill attach ws archive checkpoints copy export logs "
    "update get search history push tag load privileges pull enable connect disconnect "
    "unlockkey init unlock attestations heap cancel x a:b r.io:5000 v1.41 v1 v. V1.41 . .. "
    "a\nb é"
)
VOCABULARY = [*_WORDS.split(" "), "", "", ""]  # "" makes "//" and trailing slashes
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "get")


def _random_paths(seed: int, count: int, versions: bool = True) -> Iterator[tuple[str, str]]:
    rng = random.Random(seed)
    for _ in range(count):
        segments = [rng.choice(VOCABULARY) for _ in range(rng.randint(1, 6))]
        if versions and rng.random() < 0.5:
            segments.insert(0, rng.choice(("v1.41", "v1.56", "v1", "v.", "v1.41.0")))
        path = "/" + "/".join(segments)
        if rng.random() < 0.1:
            path += "/"
        yield rng.choice(METHODS), path


def _interesting_paths() -> Iterator[tuple[str, str]]:
    for method, template, _name, _spec, _section, _writes in routes._TABLE:
        for value in ("x", "a/b", "json", "", "create", "a:1", "..", "."):
            path = re.sub(r"\{[^}]+\}", value, template)
            for prefix in ("", "/v1.41"):
                for m in (method, "GET", "POST", "HEAD", "DELETE"):
                    yield m, prefix + path
                    yield m, prefix + path + "/"


def test_fast_dispatch_agrees_with_mux_emulation() -> None:
    checked = 0
    for method, path in [*_interesting_paths(), *_random_paths(41, 30000)]:
        assert identify(method, path) == MUX.route(method, path), (method, path)
        checked += 1
    assert checked > 30000


def test_spec_samples_agree_with_mux_emulation() -> None:
    for case in _spec_cases():
        method, path = case.values[0], case.values[1]
        assert identify(method, path) == MUX.route(method, path)


# -- the real daemon (20.10 here) --------------------------------------------------------------

# Newest-only routes: a 20.10 daemon answers 404 for them. Its debug routes are unversioned
# only (and accept any method), so a versioned probe of /debug reaches the 404 catch-all.
NOT_ON_2010 = {n for n, why in DAEMON_SPECIFIC.items() if why.startswith("newest")}


def _request(sock_path: str, method: str, path: str) -> tuple[int, bytes]:
    target = urllib.parse.quote(path, safe="/:@!$&'()*+,;=-._~")
    head = f"{method} {target} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n"
    head += "Connection: close\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        s.sendall(head.encode("utf-8"))
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body


def _daemon_routed(sock_path: str, method: str, path: str) -> bool:
    status, body = _request(sock_path, method, path)
    if status == 301:
        return False
    return not (status == 404 and (method == "HEAD" or b"page not found" in body))


def _expected_on_2010(method: str, probe: str) -> bool:
    match = identify(method, probe)
    if match is None:
        return False
    return match.operation.name not in NOT_ON_2010 and match.operation.section != "debug"


@pytest.mark.daemon
def test_daemon_probe_is_side_effect_free(daemon: PrivateDaemon) -> None:
    status, body = _request(str(daemon.socket_path), "POST", "/v9.99/containers/create")
    assert status == 400
    assert b"9.99 is too new" in body
    status, body = _request(str(daemon.socket_path), "POST", "/v9.99/nowhere")
    assert (status, json.loads(body)) == (404, {"message": "page not found"})


@pytest.mark.daemon
def test_daemon_routes_every_table_route(daemon: PrivateDaemon) -> None:
    sock = str(daemon.socket_path)
    mismatches = []
    for method, template, name, _spec, _section, _writes in routes._TABLE:
        for value in ("x1", "a/b:1", "json"):
            probe = "/v9.99" + re.sub(r"\{[^}]+\}", value, template)
            if identify(method, probe) is None:
                continue  # e.g. a [^/]+ variable given "a/b:1"
            if _daemon_routed(sock, method, probe) != _expected_on_2010(method, probe):
                mismatches.append((method, probe, name))
    assert mismatches == []


@pytest.mark.daemon
def test_daemon_agrees_on_generated_requests(daemon: PrivateDaemon) -> None:
    sock = str(daemon.socket_path)
    cases = [(m, "/v9.99" + p) for m, p in _random_paths(7, 1500, versions=False)]
    cases += [(m, "/v9.99" + p) for m, p in _interesting_paths() if "/v1.41" not in p][::7]
    mismatches = []
    for method, probe in cases:
        if _daemon_routed(sock, method, probe) != _expected_on_2010(method, probe):
            mismatches.append((method, probe, _name(method, probe)))
    assert mismatches == []
    assert len(cases) > 1500


@pytest.mark.daemon
@pytest.mark.parametrize(
    ("method", "path", "routed"),
    [
        # Unversioned requests whose handlers are harmless, or that no route takes.
        ("GET", "/_ping", True),
        ("HEAD", "/_ping", True),
        ("GET", "/version", True),
        ("HEAD", "/version", False),
        ("GET", "/containers/json", True),
        ("HEAD", "/containers/json", False),
        ("GET", "/networks/", True),
        ("GET", "/containers/json/", False),
        ("GET", "/_ping/", False),
        ("get", "/_ping", False),
        ("GET", "/V1.41/_ping", False),
        ("GET", "/v1.41/v1.41/_ping", False),
        ("GET", "/v1.41/_ping", True),
        ("GET", "/v1/_ping", True),  # routed: the version middleware then rejects 1 as too old
        ("GET", "/v1.41.0/_ping", True),
        ("OPTIONS", "/anything/at/all", True),
        ("GET", "/debug/vars", True),
        ("GET", "/debug/pprof/", True),
        ("GET", "/containers/a\nb/json", False),
        # not clean: 301 to the cleaned path, never routed
        ("GET", "//_ping", False),
        ("GET", "/x/../_ping", False),
        ("GET", "/./_ping", False),
        ("GET", "/v1.41//_ping", False),
        ("DELETE", "/containers/..", False),
    ],
)
def test_daemon_agrees_unversioned(
    daemon: PrivateDaemon, method: str, path: str, routed: bool
) -> None:
    assert (identify(method, path) is not None) is routed
    assert _daemon_routed(str(daemon.socket_path), method, path) is routed


@pytest.mark.daemon
def test_daemon_redirects_unclean_paths(daemon: PrivateDaemon) -> None:
    status, _ = _request(str(daemon.socket_path), "GET", "/x/../_ping")
    assert status == 301


@pytest.mark.daemon
def test_2010_debug_routes_take_any_method(daemon: PrivateDaemon) -> None:
    # 20.10 registers /debug/... without a method matcher; dockgate identifies GET only, so
    # another method there is denied (stricter than the daemon, never looser).
    assert _daemon_routed(str(daemon.socket_path), "POST", "/debug/vars")
    assert identify("POST", "/debug/vars") is None


@pytest.mark.daemon
def test_daemon_first_match_by_handler(daemon: PrivateDaemon) -> None:
    # Which handler won shows in its error message (no such objects exist: nothing changes).
    sock = str(daemon.socket_path)
    _, body = _request(sock, "DELETE", "/v1.41/containers/nosuch/checkpoints/cp1")
    assert b"experimental" in body  # the checkpoint router's DELETE, not ContainerDelete
    assert _name("DELETE", "/v1.41/containers/nosuch/checkpoints/cp1") == "CheckpointDelete"
    _, body = _request(sock, "GET", "/v1.41/images/reg.example.com/team/nosuch:1/json")
    assert b"reg.example.com/team/nosuch:1" in body
    assert b"/json" not in body
    _, body = _request(sock, "GET", "/v1.41/containers/json/json")
    assert b"No such container: json" in body
