"""Guardrails, end to end: what a policy lets a request body ask for, through real clients.

Each test's docstring states the claim it checks. Three dockgate processes run in front of the
session's dockerd, one per policy file:

* ``guardrails-defaults.yaml``: one policy (``guarded``) without a ``guardrails:`` key, so with
  the safe defaults; no credentials needed;
* ``guardrails-host.yaml`` and ``guardrails-workload.yaml``: one policy per permission, each
  bound to a bearer token named like it. The module writes the tokens file; the docker CLI sends
  its token from ``config.json`` (``HttpHeaders``), the SDK from its session headers.

A request counts as denied only when the client shows dockgate's exact message (the CLI prints
``Error response from daemon: dockgate: OPERATION denied by policy NAME: REASON``, the SDK raises
``APIError`` with status 403 and that explanation) and the daemon's containers, volumes, images
and the target container's exec instances are the same afterwards. A request counts as allowed
only when it really runs (``docker run --rm IMAGE CMD`` exits 0, with the output it should have).

The bypasses found while writing this file were pinned as strict xfails and are all closed: each
of those tests states what the daemon did with the request that dockgate let through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from dockgate.auth.tokens import create_token_line
from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.fake_upstream import FakeUpstream
from support.gateway import Gateway, running
from support.paths import TEST_POLICIES
from support.rawhttp import json_message, parse_head

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's guardrails",
    ),
]

POLICIES = TEST_POLICIES
DEFAULTS_FILE = POLICIES / "guardrails-defaults.yaml"
HOST_FILE = POLICIES / "guardrails-host.yaml"
WORKLOAD_FILE = POLICIES / "guardrails-workload.yaml"
HOST_POLICIES = (
    "privileged",
    "host-paths",
    "namespaces",
    "caps-lower",
    "caps-prefixed",
    "no-new-privileges",
    "sysctls",
    "unguarded",
)
WORKLOAD_POLICIES = ("images", "labels", "limits", "exec-user", "runtimes")
GUARDED = "guarded"  # the policy of guardrails-defaults.yaml

IMAGE = "dockgate-test/busybox:latest"  # what the session's busybox_image fixture imports
RUN = uuid.uuid4().hex[:8]
TARGET = f"dgt-gr-target-{RUN}"  # a running container: exec target, namespace to join
ALLOWED_DIR = pathlib.Path("/tmp/dg-allowed")  # the host path guardrails-host.yaml allows (ro)
MARKER = f"dockgate-allowed-{RUN}"  # the content of ALLOWED_DIR/marker and ALLOWED_DIR/sub/marker
IO_TIMEOUT = 10.0

NO_NEW_PRIVS = "NoNewPrivs:\t1"
CAP_NET_BIND_SERVICE_ONLY = "CapEff:\t0000000000000400"  # bit 10, nothing else


def denial(policy: str, reason: str, operation: str = "ContainerCreate") -> str:
    """dockgate's message for a body its guardrails refuse."""
    return f"dockgate: {operation} denied by policy {policy}: {reason}"


# ----- the daemon, seen directly ------------------------------------------------------------


def daemon_request(daemon: PrivateDaemon, method: str, target: str) -> tuple[int, bytes]:
    """One HTTP/1.0 exchange straight with the daemon's unix socket (not through dockgate)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(IO_TIMEOUT)
        s.connect(str(daemon.socket_path))
        s.sendall(f"{method} {target} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def daemon_json(daemon: PrivateDaemon, target: str) -> Any:
    status, body = daemon_request(daemon, "GET", target)
    assert status == 200, f"GET {target} on the daemon: {status} {body[:300]!r}"
    return json.loads(body)


def inspect(daemon: PrivateDaemon, kind: str, name: str) -> Any | None:
    """`GET /KIND/NAME/json` (`/volumes/NAME` for volumes) on the daemon; None on 404."""
    target = f"/volumes/{name}" if kind == "volumes" else f"/{kind}/{name}/json"
    status, body = daemon_request(daemon, "GET", target)
    if status == 404:
        return None
    assert status == 200, f"GET {target} on the daemon: {status} {body[:300]!r}"
    return json.loads(body)


def daemon_state(daemon: PrivateDaemon) -> dict[str, Any]:
    """What a denied request would have changed, had it reached the daemon."""
    target = inspect(daemon, "containers", TARGET)
    return {
        "containers": sorted(
            (c["Id"], tuple(c["Names"])) for c in daemon_json(daemon, "/containers/json?all=1")
        ),
        "volumes": sorted(v["Name"] for v in daemon_json(daemon, "/volumes")["Volumes"] or ()),
        "images": sorted(
            (i["Id"], tuple(i["RepoTags"] or ())) for i in daemon_json(daemon, "/images/json")
        ),
        "target-execs": None if target is None else tuple(target["ExecIDs"] or ()),
    }


# ----- clients -------------------------------------------------------------------------------


@dataclasses.dataclass
class Caller:
    """A client of one gateway that gets one policy (by its bearer token, or anonymously)."""

    policy: str
    gateway: Gateway
    daemon: PrivateDaemon
    api_version: str
    env: dict[str, str]
    token: str | None

    def docker(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The docker CLI through the gateway; raises with its output unless it exits 0 (or
        unless ``check`` is false)."""
        proc = subprocess.run(
            [shutil.which("docker") or "docker", *args],
            env=self.env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        done = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"[{self.policy}] docker {' '.join(args)} exited {done.returncode}\n"
                f"stdout: {done.stdout[-2000:]!r}\nstderr: {done.stderr[-2000:]!r}"
            )
        return done

    def refused(
        self,
        *args: str,
        reason: str,
        operation: str = "ContainerCreate",
        input: bytes | None = None,
    ) -> None:
        """`docker ARGS` fails with dockgate's exact message, and the daemon is untouched."""
        before = daemon_state(self.daemon)
        proc = self.docker(*args, input=input, check=False)
        assert proc.returncode != 0, proc
        assert_cli_message(proc, denial(self.policy, reason, operation))
        assert daemon_state(self.daemon) == before

    def sdk(self) -> contextlib.closing[docker.DockerClient]:
        """A Docker SDK client through the gateway, with this caller's token."""
        client = docker.DockerClient(base_url=self.gateway.url, version=self.api_version)
        if self.token is not None:
            client.api.headers["Authorization"] = f"Bearer {self.token}"
        return contextlib.closing(client)


def assert_cli_message(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """The CLI printed `message` as the daemon's error, on a line of its own (`docker run`
    prefixes it with `docker: `)."""
    lines = [line.removeprefix("docker: ") for line in proc.stderr.splitlines()]
    assert f"Error response from daemon: {message}" in lines, proc.stderr


def assert_refused_by_dockgate(proc: subprocess.CompletedProcess[str], prefix: str) -> None:
    """For the bypass tests: refused by dockgate, whatever the exact reason will be."""
    assert proc.returncode != 0, f"allowed: {proc.stdout!r} {proc.stderr!r}"
    lines = [line.removeprefix("docker: ") for line in proc.stderr.splitlines()]
    wanted = f"Error response from daemon: {prefix}"
    assert any(line.startswith(wanted) for line in lines), proc.stderr


# ----- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_version(daemon: PrivateDaemon) -> str:
    version: str = daemon_json(daemon, "/version")["ApiVersion"]
    return version


@pytest.fixture(scope="module")
def target(daemon: PrivateDaemon, busybox_image: str) -> Iterator[str]:
    """A running container, made straight on the daemon: exec target and namespace owner."""
    assert busybox_image == IMAGE
    daemon.docker("run", "-d", "--name", TARGET, IMAGE, "sleep", "600")
    try:
        yield TARGET
    finally:
        daemon.docker("rm", "-f", "-v", TARGET, check=False, timeout=60)


@pytest.fixture(scope="module")
def allowed_dir() -> Iterator[pathlib.Path]:
    """The host directory guardrails-host.yaml allows read-only, with a marker file in it and
    in its `sub` directory."""
    created = not ALLOWED_DIR.exists()
    (ALLOWED_DIR / "sub").mkdir(parents=True, exist_ok=True)
    for directory in (ALLOWED_DIR, ALLOWED_DIR / "sub"):
        (directory / "marker").write_text(MARKER)
    try:
        yield ALLOWED_DIR
    finally:
        if created:
            shutil.rmtree(ALLOWED_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def callers(
    daemon: PrivateDaemon,
    busybox_image: str,
    api_version: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Caller]]:
    """A `Caller` per policy: the three gateways, the tokens file and the CLI configurations."""
    directory = tmp_path_factory.mktemp("guardrails")
    tokens: dict[str, str] = {}
    lines = []
    for name in (*HOST_POLICIES, *WORKLOAD_POLICIES):
        tokens[name], line = create_token_line(name, name)
        lines.append(line + "\n")
    tokens_file = directory / "tokens"
    tokens_file.write_text("".join(lines))
    tokens_file.chmod(0o600)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    with contextlib.ExitStack() as stack:
        defaults = stack.enter_context(
            running(Gateway(daemon.host, policy=DEFAULTS_FILE), "the defaults gateway")
        )
        host = stack.enter_context(
            running(
                Gateway(daemon.host, "--tokens", str(tokens_file), policy=HOST_FILE),
                "the host gateway",
            )
        )
        workload = stack.enter_context(
            running(
                Gateway(daemon.host, "--tokens", str(tokens_file), policy=WORKLOAD_FILE),
                "the workload gateway",
            )
        )
        result: dict[str, Caller] = {}
        for name, gateway in (
            (GUARDED, defaults),
            *((n, host) for n in HOST_POLICIES),
            *((n, workload) for n in WORKLOAD_POLICIES),
        ):
            token = tokens.get(name)
            config = directory / f"config-{name}"
            config.mkdir()
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            (config / "config.json").write_text(json.dumps({"HttpHeaders": headers}))
            env = base_env | {
                "DOCKER_HOST": gateway.url,
                "DOCKER_CONFIG": str(config),
                "DOCKER_BUILDKIT": "0",
                "DOCKER_CLI_HINTS": "false",
            }
            result[name] = Caller(name, gateway, daemon, api_version, env, token)
        yield result


@pytest.fixture
def guarded(callers: dict[str, Caller]) -> Caller:
    """The caller that gets the default guardrails."""
    return callers[GUARDED]


# ----- privileged ----------------------------------------------------------------------------


def test_privileged_container_is_denied_by_default(guarded: Caller) -> None:
    """`docker run --privileged` under the defaults: 403, nothing created."""
    guarded.refused(
        "run", "--rm", "--privileged", IMAGE, "true", reason="privileged containers are not allowed"
    )


@pytest.mark.parametrize("policy", ["privileged", "unguarded"])
def test_privileged_container_is_allowed_when_the_policy_says_so(
    callers: dict[str, Caller], cleanup: Cleanup, unique: Any, policy: str
) -> None:
    """`privileged: true` (and `guardrails: false`, the opt-out) let `docker run --privileged`
    through: the daemon creates a privileged container and runs it exactly as it does without
    dockgate (in a sandbox without every capability, runc fails the same way both times)."""
    caller = callers[policy]
    direct = caller.daemon.docker("run", "--rm", "--privileged", IMAGE, "true", check=False)
    name = cleanup.container(unique("priv"))
    proc = caller.docker("run", "--name", name, "--privileged", IMAGE, "true", check=False)
    assert "dockgate" not in proc.stderr
    container = inspect(caller.daemon, "containers", name)
    assert container is not None, proc.stderr
    assert container["HostConfig"]["Privileged"] is True
    assert proc.returncode == direct.returncode, (proc.stderr, direct.stderr)
    if direct.returncode != 0:
        direct_error = direct.stderr.decode(errors="replace").splitlines()[0]
        assert proc.stderr.splitlines()[0] == direct_error


def test_guardrails_false_lets_host_access_through(
    callers: dict[str, Caller], allowed_dir: pathlib.Path
) -> None:
    """`guardrails: false`: capabilities, devices, writable host mounts, the host's network and
    security overrides all reach the daemon, and the container runs."""
    proc = callers["unguarded"].docker(
        *("run", "--rm", "--cap-add", "SYS_ADMIN", "--device", "/dev/null"),
        *("-v", f"{allowed_dir}:/h", "--network", "host"),
        *("--security-opt", "seccomp=unconfined", IMAGE, "cat", "/h/marker"),
    )
    assert proc.stdout == MARKER


# ----- host paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("-v", "/:/host"), "host path / (Binds) is not allowed"),
        (("-v", "/tmp/xyz:/data"), "host path /tmp/xyz (Binds) is not allowed"),
        (("-v", "/tmp/dg-allowed:/d:ro"), "host path /tmp/dg-allowed (Binds) is not allowed"),
        (("-v", "/tmp/dg-allowed/../../etc:/d:ro"), "host path /etc (Binds) is not allowed"),
        (("--mount", "type=bind,src=/,dst=/h"), "host path / (Mounts) is not allowed"),
        (
            (
                "--mount",
                "type=volume,dst=/h,volume-driver=local,volume-opt=type=none,"
                "volume-opt=o=bind,volume-opt=device=/",
            ),
            "host path / (bind device, HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options) "
            "is not allowed",
        ),
        (
            ("--volumes-from", TARGET),
            "VolumesFrom is not allowed (it shares another container's mounts)",
        ),
    ],
    ids=["bind-root", "bind-tmp", "bind-ro", "dotdot", "mount-root", "volume-opt", "volumes-from"],
)
def test_host_paths_are_denied_by_default(
    guarded: Caller, target: str, args: tuple[str, ...], reason: str
) -> None:
    """No host path reaches a container under the defaults, whatever the way of asking
    (`-v`, `--mount type=bind`, a local volume's `device` option, another container's
    mounts); `..` is resolved before judging."""
    guarded.refused("run", "--rm", *args, IMAGE, "true", reason=reason)


def test_named_volume_is_allowed(guarded: Caller, cleanup: Cleanup, unique: Any) -> None:
    """`-v NAME:/data` names a volume, not a host path: allowed, and the volume is made."""
    volume = cleanup.volume(unique("vol"))
    guarded.docker("run", "--rm", "-v", f"{volume}:/data", IMAGE, "touch", "/data/file")
    assert inspect(guarded.daemon, "volumes", volume) is not None


def test_volume_binding_a_host_path_is_denied_by_default(guarded: Caller, unique: Any) -> None:
    """`docker volume create --driver local --opt type=none --opt o=bind --opt device=/` would
    hand out the host's root as a volume: 403, no volume."""
    name = unique("bindvol")
    guarded.refused(
        *("volume", "create", "--driver", "local", "--opt", "type=none", "--opt", "o=bind"),
        *("--opt", "device=/", name),
        reason="host path / (bind device, DriverOpts) is not allowed",
        operation="VolumeCreate",
    )
    assert inspect(guarded.daemon, "volumes", name) is None


@pytest.mark.parametrize(
    "args",
    [
        ("-v", "/tmp/dg-allowed:/d:ro"),
        ("-v", "/tmp/dg-allowed/sub:/d:ro"),
        ("--mount", "type=bind,src=/tmp/dg-allowed,dst=/d,readonly"),
    ],
    ids=["bind-ro", "subdirectory", "mount-readonly"],
)
def test_allowed_host_path_mounted_read_only_runs(
    callers: dict[str, Caller], allowed_dir: pathlib.Path, args: tuple[str, ...]
) -> None:
    """`host_paths: [{path: /tmp/dg-allowed, read_only: true}]`: that directory and what is
    under it may be mounted read-only, and the container reads the host's file."""
    proc = callers["host-paths"].docker("run", "--rm", *args, IMAGE, "cat", "/d/marker")
    assert proc.stdout == MARKER


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ("-v", "/tmp/dg-allowed:/d"),
            "host path /tmp/dg-allowed (Binds) must be mounted read-only",
        ),
        (
            ("-v", "/tmp/dg-allowed:/d:rw"),
            "host path /tmp/dg-allowed (Binds) must be mounted read-only",
        ),
        (
            ("--mount", "type=bind,src=/tmp/dg-allowed,dst=/d"),
            "host path /tmp/dg-allowed (Mounts) must be mounted read-only",
        ),
        (("-v", "/tmp/xyz:/data:ro"), "host path /tmp/xyz (Binds) is not allowed"),
        (
            ("-v", "/tmp/dg-allowed-not:/d:ro"),
            "host path /tmp/dg-allowed-not (Binds) is not allowed",
        ),
        (("-v", "/:/host:ro"), "host path / (Binds) is not allowed"),
    ],
    ids=["bind-rw-default", "bind-rw", "mount-rw", "elsewhere", "sibling-prefix", "root"],
)
def test_host_path_rules_deny_the_rest(
    callers: dict[str, Caller], allowed_dir: pathlib.Path, args: tuple[str, ...], reason: str
) -> None:
    """Under the same policy, a writable mount of the allowed directory, any other path (one
    that merely starts with the same characters included) and `/` are denied."""
    callers["host-paths"].refused("run", "--rm", *args, IMAGE, "true", reason=reason)


def test_volume_binding_an_allowed_host_path(
    callers: dict[str, Caller], allowed_dir: pathlib.Path, cleanup: Cleanup, unique: Any
) -> None:
    """A local volume binding the allowed directory is allowed with `o=bind,ro` (and the
    container reads the host's file through it), denied with a writable `o=bind`."""
    caller = callers["host-paths"]
    options = ("--driver", "local", "--opt", "type=none", "--opt", f"device={allowed_dir}")
    writable = unique("rwvol")
    caller.refused(
        "volume",
        "create",
        *options,
        "--opt",
        "o=bind",
        writable,
        reason="host path /tmp/dg-allowed (bind device, DriverOpts) must be mounted read-only",
        operation="VolumeCreate",
    )
    read_only = cleanup.volume(unique("rovol"))
    caller.docker("volume", "create", *options, "--opt", "o=bind,ro", read_only)
    proc = caller.docker("run", "--rm", "-v", f"{read_only}:/d", IMAGE, "cat", "/d/marker")
    assert proc.stdout == MARKER


# ----- namespaces ----------------------------------------------------------------------------

NAMESPACE_FLAGS = [
    (("--network", "host"), "the host's network namespace is not allowed"),
    (("--pid", "host"), "the host's pid namespace is not allowed"),
    (("--ipc", "host"), "the host's ipc namespace is not allowed"),
    (("--uts", "host"), "the host's uts namespace is not allowed"),
    (("--userns", "host"), "the host's userns namespace is not allowed"),
    (("--cgroupns", "host"), "the host's cgroup namespace is not allowed"),
    (
        ("--network", f"container:{TARGET}"),
        "joining another container's network namespace is not allowed",
    ),
    (("--pid", f"container:{TARGET}"), "joining another container's pid namespace is not allowed"),
]
NAMESPACE_IDS = [
    "network",
    "pid",
    "ipc",
    "uts",
    "userns",
    "cgroupns",
    "network-container",
    "pid-container",
]


@pytest.mark.parametrize(("args", "reason"), NAMESPACE_FLAGS, ids=NAMESPACE_IDS)
def test_host_namespaces_are_denied_by_default(
    guarded: Caller, target: str, args: tuple[str, ...], reason: str
) -> None:
    """The host's namespaces, and another container's, are denied under the defaults."""
    guarded.refused("run", "--rm", *args, IMAGE, "true", reason=reason)


@pytest.mark.parametrize(
    "args",
    [args for args, _ in NAMESPACE_FLAGS[:7]],
    ids=NAMESPACE_IDS[:7],
)
def test_listed_namespaces_are_allowed(
    callers: dict[str, Caller], target: str, args: tuple[str, ...]
) -> None:
    """`namespaces: [network, pid, ipc, uts, userns, cgroup, network:container]` lets each of
    them through, and the container runs."""
    callers["namespaces"].docker("run", "--rm", *args, IMAGE, "true")


def test_host_uts_namespace_shows_the_hosts_name(callers: dict[str, Caller]) -> None:
    """With `uts` listed, `--uts host` really runs in the host's UTS namespace."""
    proc = callers["namespaces"].docker("run", "--rm", "--uts", "host", IMAGE, "hostname")
    assert proc.stdout.strip() == socket.gethostname()


def test_unlisted_container_namespace_is_still_denied(
    callers: dict[str, Caller], target: str
) -> None:
    """`network:container` does not cover joining another container's pid namespace."""
    callers["namespaces"].refused(
        *("run", "--rm", "--pid", f"container:{target}", IMAGE, "true"),
        reason="joining another container's pid namespace is not allowed",
    )


# ----- capabilities and devices --------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "reason"),
    [
        ("SYS_ADMIN", "adding capability CAP_SYS_ADMIN is not allowed"),
        ("NET_BIND_SERVICE", "adding capability CAP_NET_BIND_SERVICE is not allowed"),
        ("ALL", "adding capability ALL is not allowed"),
    ],
)
def test_added_capabilities_are_denied_by_default(guarded: Caller, cap: str, reason: str) -> None:
    """`--cap-add` of anything is denied under the defaults (named in its CAP_ form)."""
    guarded.refused("run", "--rm", "--cap-add", cap, IMAGE, "true", reason=reason)


@pytest.mark.parametrize("policy", ["caps-lower", "caps-prefixed"])
@pytest.mark.parametrize(
    "spelling", ["NET_BIND_SERVICE", "net_bind_service", "CAP_NET_BIND_SERVICE"]
)
def test_listed_capability_is_allowed_in_any_spelling(
    callers: dict[str, Caller], policy: str, spelling: str
) -> None:
    """`capabilities: [net_bind_service]` and `[CAP_NET_BIND_SERVICE]` both allow
    `--cap-add NET_BIND_SERVICE`, however the CLI spells it; the container then has exactly
    that capability (after `--cap-drop ALL`)."""
    proc = callers[policy].docker(
        *("run", "--rm", "--cap-drop", "ALL", "--cap-add", spelling, IMAGE),
        *("grep", "CapEff", "/proc/self/status"),
    )
    assert proc.stdout.strip() == CAP_NET_BIND_SERVICE_ONLY


@pytest.mark.parametrize("policy", ["caps-lower", "caps-prefixed"])
def test_unlisted_capability_is_still_denied(callers: dict[str, Caller], policy: str) -> None:
    """Listing NET_BIND_SERVICE does not allow SYS_ADMIN."""
    callers[policy].refused(
        *("run", "--rm", "--cap-add", "SYS_ADMIN", IMAGE, "true"),
        reason="adding capability CAP_SYS_ADMIN is not allowed",
    )


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--device", "/dev/null"), "host devices are not allowed (/dev/null)"),
        (
            ("--device-cgroup-rule", "c 1:3 mr"),
            "host devices are not allowed (cgroup rule c 1:3 mr)",
        ),
        (("--gpus", "all"), "host devices are not allowed (device request 1)"),
    ],
    ids=["device", "cgroup-rule", "gpus"],
)
def test_devices_are_denied_by_default(guarded: Caller, args: tuple[str, ...], reason: str) -> None:
    """Host devices, device cgroup rules and device requests are denied under the defaults."""
    guarded.refused("run", "--rm", *args, IMAGE, "true", reason=reason)


# ----- security options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option", ["seccomp=unconfined", "apparmor=unconfined", "label=disable", "label:disable"]
)
def test_security_overrides_are_denied_by_default(guarded: Caller, option: str) -> None:
    """Turning off seccomp, AppArmor or SELinux labels (in either option syntax) is denied."""
    guarded.refused(
        *("run", "--rm", "--security-opt", option, IMAGE, "true"),
        reason=f"security option {option!r} is not allowed",
    )


def test_systempaths_unconfined_is_a_security_override(guarded: Caller) -> None:
    """`--security-opt systempaths=unconfined` unmasks the host's /proc files (the daemon gets
    empty `MaskedPaths` and `ReadonlyPaths`): a security override, denied under the defaults."""
    before = daemon_state(guarded.daemon)
    proc = guarded.docker(
        *("run", "--rm", "--security-opt", "systempaths=unconfined", IMAGE),
        *("sh", "-c", "head -c 20 /proc/timer_list | wc -c"),
        check=False,
    )
    assert_refused_by_dockgate(proc, f"dockgate: ContainerCreate denied by policy {GUARDED}: ")
    assert daemon_state(guarded.daemon) == before


@pytest.mark.parametrize("option", ["no-new-privileges", "no-new-privileges=false"])
def test_no_new_privileges_is_not_an_override(guarded: Caller, option: str) -> None:
    """`no-new-privileges` only takes privileges away: allowed under the defaults, either way."""
    proc = guarded.docker(
        *("run", "--rm", "--security-opt", option, IMAGE, "grep", "NoNewPrivs", "/proc/self/status")
    )
    assert (proc.stdout.strip() == NO_NEW_PRIVS) == (option == "no-new-privileges")


@pytest.mark.parametrize("args", [(), ("--security-opt", "no-new-privileges=false")])
def test_require_no_new_privileges_denies_without_it(
    callers: dict[str, Caller], args: tuple[str, ...]
) -> None:
    """`require_no_new_privileges: true`: a plain `docker run` (or one turning it off) is
    denied."""
    callers["no-new-privileges"].refused(
        "run",
        "--rm",
        *args,
        IMAGE,
        "true",
        reason="the security option no-new-privileges is required",
    )


@pytest.mark.parametrize(
    "option", ["no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"]
)
def test_require_no_new_privileges_allows_with_it(callers: dict[str, Caller], option: str) -> None:
    """... and `--security-opt no-new-privileges` (in any syntax) is allowed and applied."""
    proc = callers["no-new-privileges"].docker(
        *("run", "--rm", "--security-opt", option, IMAGE, "grep", "NoNewPrivs", "/proc/self/status")
    )
    assert proc.stdout.strip() == NO_NEW_PRIVS


# ----- sysctls -------------------------------------------------------------------------------


def test_sysctl_is_denied_by_default(guarded: Caller) -> None:
    """`--sysctl net.ipv4.ip_forward=1` under the defaults: denied."""
    guarded.refused(
        *("run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", IMAGE, "true"),
        reason="sysctl net.ipv4.ip_forward is not allowed",
    )


def test_sysctl_matching_a_pattern_is_allowed(callers: dict[str, Caller]) -> None:
    """`sysctls: ["net.ipv4.*"]`: allowed, and set in the container."""
    proc = callers["sysctls"].docker(
        *("run", "--rm", "--sysctl", "net.ipv4.ip_forward=1", IMAGE),
        *("sysctl", "net.ipv4.ip_forward"),
    )
    assert proc.stdout.strip() == "net.ipv4.ip_forward = 1"


def test_sysctl_outside_the_patterns_is_denied(callers: dict[str, Caller]) -> None:
    """... while a sysctl outside `net.ipv4.*` stays denied."""
    callers["sysctls"].refused(
        *("run", "--rm", "--sysctl", "kernel.shm_rmid_forced=1", IMAGE, "true"),
        reason="sysctl kernel.shm_rmid_forced is not allowed",
    )


# ----- runtimes ------------------------------------------------------------------------------


def test_listed_runtime_is_allowed(callers: dict[str, Caller]) -> None:
    """`runtimes: ["runc"]`: `--runtime runc` is allowed and runs, and so does no --runtime
    (the daemon's default)."""
    proc = callers["runtimes"].docker("run", "--rm", "--runtime", "runc", IMAGE, "echo", "ran")
    assert proc.stdout == "ran\n"
    proc = callers["runtimes"].docker("run", "--rm", IMAGE, "echo", "ran")
    assert proc.stdout == "ran\n"


def test_unlisted_runtime_is_denied(callers: dict[str, Caller]) -> None:
    """A runtime the list does not name is denied by dockgate (before the daemon could say it
    does not know it). No --runtime is the daemon's default, the operator's own choice: it is
    allowed whatever the list says (tested with the listed one above)."""
    callers["runtimes"].refused(
        "run", "--rm", "--runtime", "other", IMAGE, "true", reason="runtime 'other' is not allowed"
    )


# ----- images --------------------------------------------------------------------------------


def _image_id(daemon: PrivateDaemon) -> str:
    image = inspect(daemon, "images", IMAGE)
    assert image is not None
    image_id: str = image["Id"]
    return image_id


@pytest.mark.parametrize(
    ("reference", "tag_first"),
    [
        (IMAGE, False),
        ("dockgate-test/busybox", False),
        ("docker.io/dockgate-test/busybox:latest", False),
        (f"dockgate-test/busybox:other-{RUN}", True),
    ],
    ids=["test-image", "no-tag", "fully-qualified", "other-tag"],
)
def test_listed_image_is_allowed(
    callers: dict[str, Caller], cleanup: Cleanup, reference: str, tag_first: bool
) -> None:
    """`images: ["dockgate-test/busybox"]` allows the test image however it is named, and any
    tag of that repository."""
    caller = callers["images"]
    if tag_first:
        caller.daemon.docker("tag", IMAGE, cleanup.image(reference))
    proc = caller.docker("run", "--rm", reference, "echo", "ran")
    assert proc.stdout == "ran\n"


@pytest.mark.parametrize(
    ("reference", "repository", "tag_first"),
    [
        (f"dgt-other/busybox:{RUN}", "docker.io/dgt-other/busybox", True),
        (
            f"localhost:5000/dockgate-test/busybox:{RUN}",
            "localhost:5000/dockgate-test/busybox",
            True,
        ),
        ("busybox", "docker.io/library/busybox", False),
    ],
    ids=["other-repository", "other-registry", "absent-library-image"],
)
def test_unlisted_image_is_denied(
    callers: dict[str, Caller],
    cleanup: Cleanup,
    reference: str,
    repository: str,
    tag_first: bool,
) -> None:
    """The same image tagged in another repository (or registry) is denied, and so is a
    repository the daemon does not even have (dockgate answers before any pull)."""
    caller = callers["images"]
    if tag_first:
        caller.daemon.docker("tag", IMAGE, cleanup.image(reference))
    caller.refused("run", "--rm", reference, "true", reason=f"image {repository} is not allowed")


@pytest.mark.parametrize("form", ["full", "short"])
def test_image_by_id_is_denied_when_images_are_listed(
    callers: dict[str, Caller], form: str
) -> None:
    """With an `images` list, an image named by its ID (which says nothing of its repository)
    is denied."""
    image_id = _image_id(callers["images"].daemon)
    reference = image_id if form == "full" else image_id.removeprefix("sha256:")[:12]
    callers["images"].refused(
        "run",
        "--rm",
        reference,
        "true",
        reason=f"image {reference!r}: name images by repository, not by ID",
    )


# ----- labels --------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(), ("--label", "owner=x")], ids=["none", "other-label"])
def test_required_label_missing_is_denied(
    callers: dict[str, Caller], args: tuple[str, ...]
) -> None:
    """`required_labels: {team: "*"}`: `docker run` without `--label team=...` is denied."""
    callers["labels"].refused("run", "--rm", *args, IMAGE, "true", reason="label team is required")


def test_required_label_present_is_allowed(
    callers: dict[str, Caller], cleanup: Cleanup, unique: Any
) -> None:
    """... and with it, the container is made, with its label, and runs."""
    caller = callers["labels"]
    name = cleanup.container(unique("label"))
    proc = caller.docker("run", "--name", name, "--label", "team=x", IMAGE, "echo", "ran")
    assert proc.stdout == "ran\n"
    container = inspect(caller.daemon, "containers", name)
    assert container is not None
    assert container["Config"]["Labels"]["team"] == "x"


# ----- resource limits -----------------------------------------------------------------------

MEMORY_REASON = "a memory limit of at most 67108864 bytes is required"
CPU_REASON = "a CPU limit of at most 0.5 CPUs is required"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((), MEMORY_REASON),
        (("-m", "128m", "--cpus", "0.25"), MEMORY_REASON),
        (("-m", "32m"), CPU_REASON),
        (("-m", "32m", "--cpus", "1"), CPU_REASON),
        (("-m", "32m", "--cpu-quota", "100000"), CPU_REASON),
    ],
    ids=["no-limits", "too-much-memory", "no-cpu-limit", "too-many-cpus", "quota-too-high"],
)
def test_run_without_limits_is_denied(
    callers: dict[str, Caller], args: tuple[str, ...], reason: str
) -> None:
    """`max_memory: 64m, max_cpus: 0.5`: a container needs both limits, within the maxima
    (`--cpu-quota` counts as CPUs too)."""
    callers["limits"].refused("run", "--rm", *args, IMAGE, "true", reason=reason)


@pytest.mark.parametrize(
    "args",
    [
        ("-m", "32m", "--cpus", "0.25"),
        ("-m", "64m", "--cpus", "0.5"),
        ("-m", "32m", "--cpu-period", "100000", "--cpu-quota", "40000"),
    ],
    ids=["below", "at-the-maxima", "quota"],
)
def test_run_within_limits_is_allowed(callers: dict[str, Caller], args: tuple[str, ...]) -> None:
    """Limits within the maxima: allowed, and the container runs."""
    proc = callers["limits"].docker("run", "--rm", *args, IMAGE, "echo", "ran")
    assert proc.stdout == "ran\n"


def _limited_container(caller: Caller, cleanup: Cleanup, name: str, *limits: str) -> None:
    cleanup.container(name)
    caller.docker("run", "-d", "--name", name, *limits, IMAGE, "sleep", "300")


def test_update_within_limits(callers: dict[str, Caller], cleanup: Cleanup, unique: Any) -> None:
    """`docker update --memory 128m` is denied (the container keeps its limit); `--memory 48m`
    is allowed and applied."""
    caller = callers["limits"]
    name = unique("upd")
    _limited_container(caller, cleanup, name, "-m", "32m", "--cpus", "0.25")
    caller.refused(
        "update", "--memory", "128m", name, reason=MEMORY_REASON, operation="ContainerUpdate"
    )
    container = inspect(caller.daemon, "containers", name)
    assert container is not None
    assert container["HostConfig"]["Memory"] == 32 * 1024 * 1024
    caller.docker("update", "--memory", "48m", name)
    container = inspect(caller.daemon, "containers", name)
    assert container is not None
    assert container["HostConfig"]["Memory"] == 48 * 1024 * 1024


@pytest.mark.parametrize(
    ("limits", "update"),
    [
        (("--cpus", "0.25"), ("--cpus", "2")),
        (("--cpus", "0.25"), ("--cpu-quota", "-1")),
        (("--cpu-quota", "40000"), ("--cpu-period", "10000")),
        (("--cpu-period", "2000", "--cpu-quota", "1000"), ("--cpu-quota", "50000")),
    ],
    ids=["cpus", "quota-unlimited", "period-only", "quota-only-short-period"],
)
def test_update_cannot_lift_the_cpu_limit(
    callers: dict[str, Caller],
    cleanup: Cleanup,
    unique: Any,
    limits: tuple[str, ...],
    update: tuple[str, ...],
) -> None:
    """`docker update` of CPUs only must stay within `max_cpus`: `--cpus 2`, `--cpu-quota -1`
    (unlimited), a shorter `--cpu-period` (40000/10000 = 4 CPUs) and a quota judged against
    the default period while the container has a short one (50000/2000 = 25 CPUs) are denied,
    and the container's CPU settings are unchanged."""
    caller = callers["limits"]
    name = unique("updcpu")
    _limited_container(caller, cleanup, name, "-m", "32m", *limits)

    def cpu_settings() -> tuple[int, int, int]:
        container = inspect(caller.daemon, "containers", name)
        assert container is not None
        host = container["HostConfig"]
        return host["NanoCpus"], host["CpuQuota"], host["CpuPeriod"]

    before = cpu_settings()
    proc = caller.docker("update", *update, name, check=False)
    assert_refused_by_dockgate(proc, "dockgate: ContainerUpdate denied by policy limits: ")
    assert cpu_settings() == before


def test_cpu_quota_minus_one_cannot_lift_the_cpu_limit(callers: dict[str, Caller]) -> None:
    """`docker run -m 32m --cpus 0.25 --cpu-quota -1` asks for an unlimited CFS quota (the
    daemon applies CpuQuota after NanoCpus): denied, nothing created."""
    caller = callers["limits"]
    before = daemon_state(caller.daemon)
    proc = caller.docker(
        *("run", "--rm", "-m", "32m", "--cpus", "0.25", "--cpu-quota", "-1", IMAGE, "true"),
        check=False,
    )
    assert_refused_by_dockgate(proc, "dockgate: ContainerCreate denied by policy limits: ")
    assert daemon_state(caller.daemon) == before


# ----- exec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((), "exec without a user runs as the container's user: give a numeric user (-u UID)"),
        (("-u", "0"), "exec as root is not allowed"),
        (("-u", "0000"), "exec as root is not allowed"),
        (("-u", "0:0"), "exec as root is not allowed"),
        (("-u", "root"), "exec as user 'root': give a numeric user id (names may resolve to root)"),
    ],
    ids=["no-user", "uid-0", "uid-0000", "uid-gid-0", "root-by-name"],
)
def test_exec_as_root_is_denied(
    callers: dict[str, Caller], target: str, args: tuple[str, ...], reason: str
) -> None:
    """`exec: {root: false}`: exec without a user, as uid 0 however written, or as a name
    (which may resolve to root) is denied; no exec instance is made."""
    callers["exec-user"].refused(
        "exec", *args, target, "id", reason=reason, operation="ContainerExec"
    )


@pytest.mark.parametrize(
    ("user", "expected"), [("1000", "uid=1000 "), ("1000:1000", "uid=1000 gid=1000")]
)
def test_exec_as_a_numeric_user_is_allowed(
    callers: dict[str, Caller], target: str, user: str, expected: str
) -> None:
    """... and `docker exec -u 1000` runs, as uid 1000."""
    proc = callers["exec-user"].docker("exec", "-u", user, target, "id")
    assert proc.stdout.startswith(expected), proc.stdout


def test_privileged_exec_is_denied_by_default(guarded: Caller, target: str) -> None:
    """`docker exec --privileged` under the defaults: denied."""
    guarded.refused(
        *("exec", "--privileged", target, "id"),
        reason="privileged exec is not allowed",
        operation="ContainerExec",
    )


@pytest.mark.parametrize("args", [(), ("-u", "0")], ids=["no-user", "root"])
def test_exec_as_root_is_allowed_by_default(
    guarded: Caller, target: str, args: tuple[str, ...]
) -> None:
    """The defaults allow exec as root (exec root: true)."""
    proc = guarded.docker("exec", *args, target, "id")
    assert proc.stdout.startswith("uid=0(root) "), proc.stdout


# ----- build and import ----------------------------------------------------------------------


def _dockerfile() -> bytes:
    return f"FROM {IMAGE}\nRUN echo built > /built\n".encode()


def test_build_with_the_host_network_is_denied_by_default(guarded: Caller, unique: Any) -> None:
    """`docker build --network host` (legacy builder) is denied before the context is read;
    no image is made."""
    tag = f"{unique('build')}:1"
    guarded.refused(
        *("build", "--network", "host", "-t", tag, "-"),
        input=_dockerfile(),
        reason="building with the host's network namespace is not allowed",
        operation="ImageBuild",
    )
    assert inspect(guarded.daemon, "images", tag) is None


@pytest.mark.parametrize(
    ("policy", "args"),
    [(GUARDED, ()), ("namespaces", ("--network", "host"))],
    ids=["default-network", "host-network-listed"],
)
def test_build_is_allowed(
    callers: dict[str, Caller], cleanup: Cleanup, unique: Any, policy: str, args: tuple[str, ...]
) -> None:
    """A build without `--network host` is allowed (and builds); with `network` listed in
    `namespaces`, so is a build with it."""
    caller = callers[policy]
    tag = cleanup.image(f"{unique('build')}:1")
    caller.docker("build", *args, "-t", tag, "-", input=_dockerfile())
    proc = caller.docker("run", "--rm", tag, "cat", "/built")
    assert proc.stdout == "built\n"


def test_import_from_a_url_is_denied(guarded: Caller, unique: Any) -> None:
    """`docker import http://...` would make the daemon fetch a URL: denied."""
    tag = f"{unique('import')}:1"
    guarded.refused(
        "import",
        "http://example.invalid/x.tar",
        tag,
        reason="importing an image from a URL is not allowed",
        operation="ImageCreate",
    )


def test_import_from_stdin_is_allowed(guarded: Caller, cleanup: Cleanup, unique: Any) -> None:
    """`docker import - TAG` (the archive in the request body) is allowed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"imported\n"
        info = tarfile.TarInfo("hello")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tag = cleanup.image(f"{unique('import')}:1")
    guarded.docker("import", "-", tag, input=buffer.getvalue())
    assert inspect(guarded.daemon, "images", tag) is not None


# ----- the Docker SDK for Python -------------------------------------------------------------

SDK_DENIED = [
    ({"privileged": True}, "privileged containers are not allowed"),
    ({"volumes": {"/": {"bind": "/host", "mode": "rw"}}}, "host path / (Binds) is not allowed"),
    ({"network_mode": "host"}, "the host's network namespace is not allowed"),
    ({"cap_add": ["SYS_ADMIN"]}, "adding capability CAP_SYS_ADMIN is not allowed"),
    ({"devices": ["/dev/null:/dev/null:rwm"]}, "host devices are not allowed (/dev/null)"),
    (
        {"security_opt": ["seccomp=unconfined"]},
        "security option 'seccomp=unconfined' is not allowed",
    ),
]


@pytest.mark.parametrize("method", ["run", "create"])
@pytest.mark.parametrize(
    ("kwargs", "reason"),
    SDK_DENIED,
    ids=["privileged", "volumes", "network", "cap_add", "devices", "security_opt"],
)
def test_sdk_create_is_denied(
    guarded: Caller, method: str, kwargs: dict[str, Any], reason: str
) -> None:
    """`client.containers.run/create(...)` asking for host access: `APIError` 403 with
    dockgate's message; nothing created."""
    before = daemon_state(guarded.daemon)
    with guarded.sdk() as client:
        call = client.containers.run if method == "run" else client.containers.create
        with pytest.raises(docker.errors.APIError) as caught:
            call(IMAGE, ["true"], **kwargs)
    assert caught.value.status_code == 403
    assert caught.value.explanation == denial(GUARDED, reason)
    assert daemon_state(guarded.daemon) == before


def test_sdk_ordinary_container_is_allowed(guarded: Caller, cleanup: Cleanup, unique: Any) -> None:
    """An ordinary `client.containers.create(...)` is allowed: created, started, exits 0."""
    name = cleanup.container(unique("sdk"))
    with guarded.sdk() as client:
        container = client.containers.create(IMAGE, ["sh", "-c", "exit 0"], name=name)
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0
    assert inspect(guarded.daemon, "containers", name) is not None


def test_sdk_volume_binding_the_host_is_denied(guarded: Caller, unique: Any) -> None:
    """`client.volumes.create(driver_opts={"device": "/", ...})`: 403, no volume."""
    name = unique("sdkvol")
    with guarded.sdk() as client, pytest.raises(docker.errors.APIError) as caught:
        client.volumes.create(
            name, driver="local", driver_opts={"type": "none", "o": "bind", "device": "/"}
        )
    assert caught.value.status_code == 403
    assert caught.value.explanation == denial(
        GUARDED, "host path / (bind device, DriverOpts) is not allowed", "VolumeCreate"
    )
    assert inspect(guarded.daemon, "volumes", name) is None


def test_sdk_privileged_exec_is_denied(guarded: Caller, target: str) -> None:
    """`container.exec_run(..., privileged=True)` under the defaults: 403."""
    before = daemon_state(guarded.daemon)
    with guarded.sdk() as client, pytest.raises(docker.errors.APIError) as caught:
        client.containers.get(target).exec_run(["id"], privileged=True)
    assert caught.value.status_code == 403
    assert caught.value.explanation == denial(
        GUARDED, "privileged exec is not allowed", "ContainerExec"
    )
    assert daemon_state(guarded.daemon) == before


def test_sdk_exec_user_rules(callers: dict[str, Caller], target: str) -> None:
    """With a token bound to `exec: {root: false}`: `exec_run(user="0")` is 403,
    `exec_run(user="1000")` runs as uid 1000."""
    with callers["exec-user"].sdk() as client:
        container = client.containers.get(target)
        with pytest.raises(docker.errors.APIError) as caught:
            container.exec_run(["id"], user="0")
        assert caught.value.status_code == 403
        assert caught.value.explanation == denial(
            "exec-user", "exec as root is not allowed", "ContainerExec"
        )
        result = container.exec_run(["id"], user="1000")
    assert result.exit_code == 0
    assert result.output.decode().startswith("uid=1000 ")


def test_sdk_privileged_create_under_the_privileged_policy(
    callers: dict[str, Caller], cleanup: Cleanup, unique: Any
) -> None:
    """With a token bound to `privileged: true`, `containers.create(privileged=True)` is
    allowed and the daemon's container is privileged."""
    name = cleanup.container(unique("sdkpriv"))
    with callers["privileged"].sdk() as client:
        client.containers.create(IMAGE, ["true"], name=name, privileged=True)
    container = inspect(callers["privileged"].daemon, "containers", name)
    assert container is not None
    assert container["HostConfig"]["Privileged"] is True


# ----- raw requests: framing, keep-alive, bodies dockgate cannot judge -----------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def message(self) -> str | None:
        return json_message(self.body)


class Raw:
    """One client connection to a gateway; bytes go out exactly as given."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.buffer = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.buffer += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise AssertionError(f"closed after {self.buffer!r}, wanted {n} bytes")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise AssertionError(f"closed in a line: {self.buffer!r}")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def response(self) -> Response:
        """The next response other than `100 Continue`."""
        while True:
            while b"\r\n\r\n" not in self.buffer:
                if not self._fill():
                    raise AssertionError(f"closed before a response: {self.buffer!r}")
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status, headers = parse_head(head)
            if status == 100:
                continue
            if status in (204, 304):
                return Response(status, headers, b"")
            if headers.get("transfer-encoding", "").lower() == "chunked":
                parts = []
                while size := int(self._line().split(b";")[0], 16):
                    parts.append(self._take(size))
                    assert self._take(2) == b"\r\n"
                while self._line():
                    pass
                return Response(status, headers, b"".join(parts))
            if "content-length" in headers:
                return Response(status, headers, self._take(int(headers["content-length"])))
            while self._fill():
                pass
            body, self.buffer = self.buffer, b""
            return Response(status, headers, body)

    def closed(self) -> bool:
        """True when the peer closes without sending anything more (within IO_TIMEOUT)."""
        return not self._fill() and not self.buffer


def create_request(name: str, body: bytes, *extra: str, chunks: list[bytes] | None = None) -> bytes:
    """`POST /containers/create?name=NAME`, with a Content-Length body, or chunked."""
    head = [f"POST /containers/create?name={name} HTTP/1.1", "Host: localhost"]
    head += ["Content-Type: application/json", *extra]
    if chunks is None:
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body
    head.append("Transfer-Encoding: chunked")
    framed = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    return ("\r\n".join(head) + "\r\n\r\n").encode() + framed


PING = b"GET /_ping HTTP/1.1\r\nHost: localhost\r\n\r\n"
PRIVILEGED_BODY = json.dumps(
    {"Image": IMAGE, "Cmd": ["true"], "HostConfig": {"Privileged": True}}
).encode()
ORDINARY_BODY = json.dumps({"Image": IMAGE, "Cmd": ["echo", "chunked"]}).encode()


def _split(body: bytes, sizes: tuple[int, ...]) -> list[bytes]:
    """`body` in pieces of `sizes` bytes (the rest as the last one)."""
    pieces, rest = [], body
    for size in sizes:
        pieces.append(rest[:size])
        rest = rest[size:]
    return [*pieces, rest]


def test_chunked_forbidden_body_is_denied(guarded: Caller, unique: Any) -> None:
    """A privileged create sent chunked, `"Privileged"` split across chunks: 403 with the
    message, nothing created, and the connection then serves the next request."""
    name = unique("chunk-deny")
    cut = PRIVILEGED_BODY.index(b"Privileged") + 4
    before = daemon_state(guarded.daemon)
    with Raw(guarded.gateway.port) as conn:
        conn.send(create_request(name, b"", chunks=_split(PRIVILEGED_BODY, (3, cut - 3, 1))))
        denied = conn.response()
        assert denied.status == 403, denied
        assert denied.message == denial(GUARDED, "privileged containers are not allowed")
        conn.send(PING)
        ping = conn.response()
        assert (ping.status, ping.body) == (200, b"OK")
    assert daemon_state(guarded.daemon) == before
    assert inspect(guarded.daemon, "containers", name) is None


def test_chunked_allowed_body_is_created(guarded: Caller, cleanup: Cleanup, unique: Any) -> None:
    """An ordinary create sent chunked (one byte per chunk at first) is created as sent."""
    name = cleanup.container(unique("chunk-ok"))
    with Raw(guarded.gateway.port) as conn:
        conn.send(create_request(name, b"", chunks=_split(ORDINARY_BODY, (1, 1, 1, 10))))
        created = conn.response()
    assert created.status == 201, created
    container = inspect(guarded.daemon, "containers", name)
    assert container is not None
    assert container["Id"] == json.loads(created.body)["Id"]
    assert container["Config"]["Cmd"] == ["echo", "chunked"]


def test_chunked_body_is_forwarded_with_a_content_length() -> None:
    """The judged body is what the daemon gets: a chunked upload is forwarded whole, with a
    `Content-Length` and no `Transfer-Encoding` (seen by a fake daemon)."""
    with (
        FakeUpstream() as fake,
        running(Gateway(fake.url, policy=DEFAULTS_FILE), "the gateway before a fake daemon") as gw,
        Raw(gw.port) as conn,
    ):
        conn.send(create_request("fwd", b"", chunks=_split(ORDINARY_BODY, (5, 7))))
        assert conn.response().status == 200  # the fake daemon's JSON echo
        (record,) = fake.requests_for("/containers/create")
        assert fake.errors == []
    assert record.header("Content-Length") == str(len(ORDINARY_BODY))
    assert record.header("Transfer-Encoding") is None
    assert bytes(record.body) == ORDINARY_BODY


def test_keep_alive_after_a_denied_create(guarded: Caller, cleanup: Cleanup, unique: Any) -> None:
    """After a 403 on a create body, the same connection serves the next request, sent
    separately or pipelined behind the denied one."""
    denied_name = unique("ka-deny")
    first, second = cleanup.container(unique("ka-1")), cleanup.container(unique("ka-2"))
    with Raw(guarded.gateway.port) as conn:
        conn.send(create_request(denied_name, PRIVILEGED_BODY))
        assert conn.response().status == 403
        conn.send(create_request(first, ORDINARY_BODY))
        assert conn.response().status == 201
        conn.send(
            create_request(denied_name, PRIVILEGED_BODY) + create_request(second, ORDINARY_BODY)
        )
        assert conn.response().status == 403
        assert conn.response().status == 201
    assert inspect(guarded.daemon, "containers", denied_name) is None
    assert inspect(guarded.daemon, "containers", first) is not None
    assert inspect(guarded.daemon, "containers", second) is not None
    log = guarded.gateway.stdout_text()
    assert f"decision=deny:{GUARDED}:guardrails" in log


def test_expect_continue_body_is_judged(guarded: Caller, unique: Any) -> None:
    """`Expect: 100-continue`: dockgate asks for the body itself, then judges it."""
    name = unique("expect")
    with Raw(guarded.gateway.port) as conn:
        request = create_request(name, PRIVILEGED_BODY, "Expect: 100-continue")
        head, _, body = request.partition(b"\r\n\r\n")
        conn.send(head + b"\r\n\r\n")
        assert conn._line() == b"HTTP/1.1 100 Continue"
        assert conn._line() == b""
        conn.send(body)
        denied = conn.response()
    assert denied.status == 403
    assert denied.message == denial(GUARDED, "privileged containers are not allowed")
    assert inspect(guarded.daemon, "containers", name) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "dockgate: ContainerCreate: the request body is not one JSON value"),
        (
            PRIVILEGED_BODY + b" {}",
            "dockgate: ContainerCreate: the request body is not one JSON value",
        ),
        (
            json.dumps({"Image": IMAGE, "HostConfig": {"Privileged": "yes"}}).encode(),
            "dockgate: ContainerCreate: HostConfig.Privileged must be true or false",
        ),
    ],
    ids=["not-json", "trailing-value", "wrong-type"],
)
def test_unreadable_body_is_400(guarded: Caller, unique: Any, body: bytes, message: str) -> None:
    """A body dockgate cannot read as the daemon would is refused with 400 (never passed on
    unjudged), and the connection goes on."""
    name = unique("bad")
    with Raw(guarded.gateway.port) as conn:
        conn.send(create_request(name, body))
        refused = conn.response()
        assert (refused.status, refused.message) == (400, message)
        conn.send(PING)
        assert conn.response().status == 200
    assert inspect(guarded.daemon, "containers", name) is None


def test_body_over_a_mebibyte_is_413(guarded: Caller, unique: Any) -> None:
    """A create body over 1 MiB cannot be checked: 413, and the connection is closed."""
    name = unique("big")
    body = json.dumps({"Image": IMAGE, "Labels": {"pad": "x" * (1024 * 1024)}}).encode()
    with Raw(guarded.gateway.port) as conn:
        with contextlib.suppress(OSError):  # the gateway may stop reading before the end
            conn.send(create_request(name, body))
        refused = conn.response()
        assert refused.status == 413
        assert refused.message == (
            "dockgate: a ContainerCreate body over 1048576 bytes cannot be checked"
        )
        assert refused.headers.get("connection", "").lower() == "close"
    assert inspect(guarded.daemon, "containers", name) is None


SMUGGLED = {
    # Go's encoding/json matches keys case-insensitively (with Unicode folding: U+017F, the
    # long s, is s), a later duplicate wins (and a repeated object merges), \u escapes are
    # keys like any other, and HostConfig fields may sit at the top level when there is no
    # "HostConfig".
    "lower-case": '{"Image": "%s", "hostconfig": {"privileged": true}}',
    "duplicate-case": '{"Image": "%s", "HostConfig": {"Privileged": false, "privileged": true}}',
    "duplicate-object": '{"Image": "%s", "HostConfig": {"Privileged": true}, "HostConfig": {}}',
    "escaped-key": '{"Image": "%s", "HostConfig": {"Privil\\u0065ged": true}}',
    "top-level": '{"Image": "%s", "Privileged": true}',
    "top-level-null-inner": '{"Image": "%s", "Privileged": true, "HostConfig": null}',
    "long-s": '{"Image": "%s", "HostConfig": {"Bind\u017f": ["/:/host"]}}',
}


@pytest.mark.parametrize("body", list(SMUGGLED.values()), ids=list(SMUGGLED))
def test_body_read_as_the_daemon_reads_it(guarded: Caller, unique: Any, body: str) -> None:
    """Spellings of a forbidden request that Go's JSON decoder (hence the daemon) accepts are
    denied too; nothing created."""
    name = unique("smuggle")
    before = daemon_state(guarded.daemon)
    with Raw(guarded.gateway.port) as conn:
        conn.send(create_request(name, (body % IMAGE).encode()))
        refused = conn.response()
    assert refused.status == 403, refused
    assert refused.message is not None
    assert re.fullmatch(
        rf"dockgate: ContainerCreate denied by policy {GUARDED}: "
        r"(privileged containers are not allowed|host path / \(Binds\) is not allowed)",
        refused.message,
    )
    assert daemon_state(guarded.daemon) == before
