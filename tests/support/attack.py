"""What the attack reviews (tests/*/test_attacks_*.py) share: a caller of one gateway, the
CI runner's policy, a caller of the README's quick start, a file only the host has, a
loopback-only HTTP service, calls straight to the daemon, and the "does one caller stall
everyone's /_ping" measurement."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import pathlib
import socket
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.paths import REPO
from support.remote import (
    UnixHTTPConnection,
    basic_header,
    json_call,
    json_exchange,
    write_htpasswd,
)

# The marks of every attack-review module: they need the daemon, and are about the gateway.
ATTACK_MARKS = [
    pytest.mark.daemon,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's guardrails",
    ),
]


class Api:
    """HTTP/1.1 calls to one gateway as one caller."""

    def __init__(self, gateway: Gateway, authorization: str = "") -> None:
        self.gateway = gateway
        self.authorization = authorization

    def call(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        sent = {"Authorization": self.authorization} if self.authorization else {}
        return json_call(self.gateway.port, method, path, body, headers={**sent, **(headers or {})})

    def create(self, body: dict[str, Any], name: str = "") -> str:
        query = f"?name={name}" if name else ""
        status, created = self.call("POST", f"/v1.41/containers/create{query}", body)
        assert status == 201, (status, created)
        return str(created["Id"])

    def start(self, cid: str) -> None:
        status, answer = self.call("POST", f"/v1.41/containers/{cid}/start")
        assert status == 204, (status, answer)

    def run(self, body: dict[str, Any], name: str = "") -> tuple[str, str]:
        """Create, start and wait for a container; its ID and output (stdout and stderr)."""
        cid = self.create(body, name)
        self.start(cid)
        status, answer = self.call("POST", f"/v1.41/containers/{cid}/wait")
        assert status == 200, (status, answer)
        return cid, logs(self, cid)


@contextlib.contextmanager
def running_tenants(
    daemon: PrivateDaemon, base: pathlib.Path, policy: str, users: Mapping[str, str]
) -> Iterator[dict[str, Api]]:
    """A gateway with `policy` and an htpasswd file of `users` (both written in `base`), never
    locking a user out (the reviews' tenants guess on purpose); one Basic-authenticated caller
    per user."""
    write_htpasswd(base / "htpasswd", users)
    (base / "policy.yaml").write_text(policy)
    gateway = Gateway(
        daemon.host,
        *("--htpasswd", str(base / "htpasswd"), "--auth-failures", "0"),
        policy=str(base / "policy.yaml"),
    )
    with running(gateway) as started:
        yield {user: Api(started, basic_header(user, pw)) for user, pw in users.items()}


# ----- two tenants of one ownership policy ------------------------------------------------------

TENANT_USERS = {"alice": "alice-pw", "bob": "bob-pw"}
# What the issue-12 ownership reviews allow their tenants.
OWNERSHIP_SECTIONS = (
    "ping, version, info, events, containers, exec, images, build, commit, volumes, networks,"
    " services, tasks"
)


def tenants_policy(
    sections: str = OWNERSHIP_SECTIONS, *, more: str = "", bindings: str = ""
) -> str:
    """A policy `tenants` in ownership mode allowing `sections` (a YAML list's items), bound to
    every authenticated caller; `more` are further lines of the policy (four spaces in),
    `bindings` further bindings (two spaces in)."""
    return (
        "\npolicies:\n  tenants:\n    ownership: true\n"
        f"{more}    rules:\n      - allow:\n          sections: [{sections}]\n"
        f"bindings:\n  - {{policy: tenants, authenticated: true}}\n{bindings}"
    )


def tenants_fixture(
    policy: str, directory: str, users: Mapping[str, str] = TENANT_USERS
) -> Callable[..., Iterator[dict[str, Api]]]:
    """A module-scoped `tenants` fixture: the callers (an `Api` a user) of a gateway with
    `policy` (running_tenants in a new temporary `directory`)."""

    @pytest.fixture(scope="module")
    def tenants(
        daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[dict[str, Api]]:
        base = tmp_path_factory.mktemp(directory)
        with running_tenants(daemon, base, policy, users) as apis:
            yield apis

    return tenants


def logs(api: Api, cid: str) -> str:
    status, raw = api.call("GET", f"/v1.41/containers/{cid}/logs?stdout=1&stderr=1")
    assert status == 200, (status, raw)
    return demux(raw if isinstance(raw, bytes) else json.dumps(raw).encode())


def demux(raw: bytes) -> str:
    """The text of a multiplexed (non-TTY) log stream."""
    out = b""
    while len(raw) >= 8:
        size = int.from_bytes(raw[4:8], "big")
        out += raw[8 : 8 + size]
        raw = raw[8 + size :]
    return out.decode(errors="replace")


def ci_container(image: str, cmd: str, host_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A container body the CI policy's guardrails ask for (no-new-privileges, limits)."""
    return {
        "Image": image,
        "Cmd": ["sh", "-c", cmd],
        "HostConfig": {
            "SecurityOpt": ["no-new-privileges"],
            "Memory": 256 * 1024 * 1024,
            "NanoCpus": 1_000_000_000,
            **(host_config or {}),
        },
    }


def ci_runner_policy(allowed_dir: pathlib.Path, more_guardrails: str) -> str:
    """examples/policies/ci-runner.yaml with the read-only cache at `allowed_dir` and no
    `hosts:`; `more_guardrails` are further guardrail lines (six spaces in)."""
    return f"""
version: 1
policies:
  ci-runner:
    rules:
      - deny: {{sections: [swarm, services, tasks, nodes, secrets, configs]}}
      - deny: {{sections: [plugins]}}
      - deny:
          operations: [ContainerPrune, ImagePrune, VolumePrune, NetworkPrune, BuildPrune]
      - allow:
          sections: [ping, version, info, events, containers, exec, images, build, session,
                     volumes, networks]
    guardrails:
      privileged: false
      capabilities: []
      devices: false
      host_paths:
        - {{path: {allowed_dir}, read_only: true}}
      namespaces: []
      security_overrides: false
      require_no_new_privileges: true
      max_memory: 4g
      max_cpus: 2
      exec: {{root: true, privileged: false}}
{more_guardrails}"""


def build_context(files: Mapping[str, bytes]) -> bytes:
    """A tar of `files` (name: content), a build context for `POST /build`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def relabelled_image(daemon: PrivateDaemon, image: str, labels: dict[str, str], tag: str) -> bytes:
    """A `docker save` tar of `image` whose config carries `labels`, tagged `tag` (what any
    caller allowed ImageLoad can send)."""
    return relabelled_tar(daemon.docker("save", image).stdout, labels, tag)


def relabelled_tar(saved: bytes, labels: dict[str, str], tag: str) -> bytes:
    """`saved` (a `docker save` tar of one image) with `labels` in its config, tagged `tag`."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(saved)) as source,
        tarfile.open(fileobj=out, mode="w") as target,
    ):
        manifest = json.loads(source.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config_name = manifest[0]["Config"]
        config = json.loads(source.extractfile(config_name).read())  # type: ignore[union-attr]
        config["config"]["Labels"] = labels
        raw = json.dumps(config).encode()
        new_name = hashlib.sha256(raw).hexdigest() + ".json"
        manifest[0]["Config"] = new_name
        manifest[0]["RepoTags"] = [f"{tag}:latest"]
        for member in source.getmembers():
            if member.name in ("manifest.json", config_name, "repositories"):
                continue
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        for name, data in ((new_name, raw), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))
    return out.getvalue()


# ----- a service on the host's loopback only ---------------------------------------------------


class LoopbackHandler(http.server.BaseHTTPRequestHandler):
    """A quiet handler of a loopback-only service; subclasses answer, noting each path in
    `requests` (set by `loopback_service`)."""

    requests: list[str]

    def answer(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def loopback_service(handler: type[LoopbackHandler]) -> Iterator[tuple[int, list[str]]]:
    """`handler` served on 127.0.0.1 (a port of its own) while the block runs; the port and the
    paths it was asked for."""
    requests: list[str] = []
    served = type("Handler", (handler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), served)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], requests
    finally:
        server.shutdown()
        server.server_close()


# ----- straight to the daemon ------------------------------------------------------------------


def policy_api(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory, text: str
) -> Iterator[Api]:
    """A caller of a dockgate running the policy file `text` in front of the private daemon
    (a generator for a fixture: the gateway stops when it ends)."""
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(text)
    with running(Gateway(daemon.host, policy=policy)) as gw:
        yield Api(gw)


def direct(daemon: PrivateDaemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """One call straight to the daemon (no gateway): what the daemon does with a request."""
    return json_exchange(UnixHTTPConnection(str(daemon.socket_path)), method, path, body)


def remove_leftovers(daemon: PrivateDaemon, names: Mapping[str, list[str]]) -> None:
    """Remove straight on the daemon the objects a test noted under "container", "volume",
    "network" and "image" (the kinds its fixture has)."""
    if names.get("container"):
        daemon.docker("rm", "-f", *names["container"], check=False)
    if names.get("volume"):
        daemon.docker("volume", "rm", "-f", *names["volume"], check=False)
    for network in names.get("network", ()):
        daemon.docker("network", "rm", network, check=False)
    if names.get("image"):
        daemon.docker("rmi", "-f", *names["image"], check=False)


def leftovers_fixture(
    kinds: tuple[str, ...] = ("container", "volume", "network", "image"),
) -> Callable[..., Iterator[dict[str, list[str]]]]:
    """A `leftovers` fixture: lists (one of each of `kinds`) of the objects a test made, removed
    straight on the daemon after it (remove_leftovers)."""

    @pytest.fixture
    def leftovers(daemon: PrivateDaemon) -> Iterator[dict[str, list[str]]]:
        """Objects to remove straight on the daemon after the test."""
        names: dict[str, list[str]] = {kind: [] for kind in kinds}
        yield names
        remove_leftovers(daemon, names)

    return leftovers


# ----- the README's quick start, and what only the host has ------------------------------------

QUICKSTART_POLICY = REPO / "examples" / "policies" / "quickstart.yaml"


def quickstart_fixture() -> Callable[..., Iterator[Api]]:
    """A module-scoped `qs` fixture: a caller of the README's quick start, `dockgate serve
    --policy quickstart.yaml` (127.0.0.1 only, no credentials) in front of the private daemon."""

    @pytest.fixture(scope="module")
    def qs(daemon: PrivateDaemon, busybox_image: str) -> Iterator[Api]:
        with running(Gateway(daemon.host, policy=str(QUICKSTART_POLICY))) as gw:
            yield Api(gw)

    return qs


def host_secret_fixture() -> Callable[..., Iterator[pathlib.Path]]:
    """A `host_secret` fixture: a file only the host has (root's, 0600; in no image, mounted
    nowhere by the test), with a content of its own, so that a test finding
    `host_secret.read_text()` anywhere else shows it was read."""

    @pytest.fixture
    def host_secret() -> Iterator[pathlib.Path]:
        tag = uuid.uuid4().hex[:8]
        path = pathlib.Path(f"/tmp/dg-atk-secret-{tag}")
        path.write_text(f"host-only-{tag}\n")
        path.chmod(0o600)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    return host_secret


# ----- one caller's load and everyone's /_ping -------------------------------------------------


def ping_seconds(port: int) -> float:
    """How long one GET /_ping to the gateway at `port` takes, on a new connection."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(b"GET /_ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        while conn.recv(65536):
            pass
    return time.monotonic() - started


def pings_under_load(
    port: int, path: str, body: bytes, *, seconds: float = 4, connections: int = 8
) -> tuple[list[float], list[float], int]:
    """/_ping times (sorted) of 10 pings first, then while `connections` threads POST the JSON
    `body` to `path` back to back for `seconds` (one connection each); and how many of those
    requests were answered."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    stop = time.monotonic() + seconds
    sent = [0]

    def hammer() -> None:
        while time.monotonic() < stop:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
                    conn.sendall(request)
                    while conn.recv(65536):
                        pass
                sent[0] += 1
            except OSError:
                time.sleep(0.01)

    idle = sorted(ping_seconds(port) for _ in range(10))
    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    loaded: list[float] = []
    while time.monotonic() < stop:
        loaded.append(ping_seconds(port))
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    loaded.sort()
    return idle, loaded, sent[0]
