"""Volume options, end to end: the `local` driver's options judged as the kernel mounts them.

Issue 11, findings 1 and 2. The local driver mounts `mount(device, volume, type, o)`; any
`bind`/`rbind` word in `o` makes the kernel bind `device` (a host path) whatever `type` says, and
types such as proc, sysfs or overlay mount the host's kernel views or directories. Each attack
here is first shown to work when sent straight to the session's daemon (a container reads a
marker file of a host directory no policy allows, or another container's environment), then
sent through dockgate: refused with a 403 naming the option, and the daemon's containers and
volumes unchanged. Ordinary volumes still work through the same gateway.

Two gateways, no credentials: the default guardrails (tests/policies/guardrails-defaults.yaml,
policy `guarded`), and `vol-host`, which allows one host directory read-only.

Tests marked "fails on the old code" passed an attack before this change (dockgate judged only
`device`, not at all with `type=tmpfs`, and trusted a volume used by name).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dockgate.ownership.operations import OWNER_LABEL
from support.clients import Cleanup
from support.daemon import PrivateDaemon, run_docker
from support.gateway import Gateway, running
from support.paths import TEST_POLICIES
from support.remote import write_htpasswd

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's guardrails",
    ),
]

POLICIES = TEST_POLICIES
IMAGE = "dockgate-test/busybox:latest"
RUN = uuid.uuid4().hex[:8]
SECRET_DIR = pathlib.Path(f"/tmp/dgv-secret-{RUN}")  # a host directory no policy allows
SECRET_DIR2 = pathlib.Path(f"/tmp/dgv-secret2-{RUN}")  # a second overlay layer
ALLOWED_DIR = pathlib.Path(f"/tmp/dgv-allowed-{RUN}")  # allowed read-only by `vol-host`
MARKER = f"dgv-host-file-{RUN}"
ALLOWED_MARKER = f"dgv-allowed-file-{RUN}"
ENV_SECRET = f"DGV_SECRET=dgv-env-{RUN}"  # in the environment of another container

HOST_POLICY = f"""
policies:
  vol-host:
    rules: [{{allow: {{sections: ["*"]}}}}]
    guardrails:
      host_paths:
        - {{path: {ALLOWED_DIR}, read_only: true}}
"""


@dataclass
class Via:
    """The docker CLI through one gateway (one policy)."""

    policy: str
    env: dict[str, str]
    daemon: PrivateDaemon

    def docker(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return run_docker(self.env, *args)

    def ok(self, *args: str) -> str:
        proc = self.docker(*args)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout.decode()

    def refused(self, *args: str, operation: str, reason: str) -> None:
        """`docker ARGS` gets dockgate's 403 for `reason`, and the daemon is unchanged."""
        before = state(self.daemon)
        proc = self.docker(*args)
        stderr = proc.stderr.decode(errors="replace")
        assert proc.returncode != 0, proc.stdout
        message = f"dockgate: {operation} denied by policy {self.policy}: {reason}"
        assert message in stderr, stderr
        assert state(self.daemon) == before


def state(daemon: PrivateDaemon) -> tuple[list[str], list[str]]:
    """The daemon's containers and volumes (what a refused request must not change)."""
    containers = daemon.docker("ps", "-aq", "--no-trunc").stdout.decode().split()
    volumes = daemon.docker("volume", "ls", "-q").stdout.decode().split()
    return sorted(containers), sorted(volumes)


def direct_read(daemon: PrivateDaemon, *args: str) -> str:
    """`docker run --rm ARGS` straight on the daemon; its output."""
    proc = daemon.docker("run", "--rm", *args, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


# ----- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_dirs() -> Iterator[None]:
    for directory, marker in (
        (SECRET_DIR, MARKER),
        (SECRET_DIR2, MARKER),
        (ALLOWED_DIR, ALLOWED_MARKER),
    ):
        directory.mkdir()
        (directory / "marker").write_text(marker)
    try:
        yield
    finally:
        for directory in (SECRET_DIR, SECRET_DIR2, ALLOWED_DIR):
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def gateways(
    daemon: PrivateDaemon,
    busybox_image: str,
    host_dirs: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Via]]:
    assert busybox_image == IMAGE
    directory = tmp_path_factory.mktemp("volopts")
    host_file = directory / "vol-host.yaml"
    host_file.write_text(HOST_POLICY)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    with contextlib.ExitStack() as stack:
        result = {}
        for policy, file in (
            ("guarded", POLICIES / "guardrails-defaults.yaml"),
            ("vol-host", host_file),
        ):
            gateway = stack.enter_context(running(Gateway(daemon.host, policy=file), policy))
            config = directory / f"config-{policy}"
            config.mkdir()
            env = base_env | {"DOCKER_HOST": gateway.url, "DOCKER_CONFIG": str(config)}
            result[policy] = Via(policy, env, daemon)
        yield result


@pytest.fixture
def guarded(gateways: dict[str, Via]) -> Via:
    return gateways["guarded"]


@pytest.fixture
def host_policy(gateways: dict[str, Via]) -> Via:
    return gateways["vol-host"]


@pytest.fixture(scope="module")
def host_process(daemon: PrivateDaemon, busybox_image: str) -> Iterator[int]:
    """Another caller's container, made straight on the daemon, with a secret in its
    environment: its host PID (what a proc volume shows)."""
    name = f"dgv-victim-{RUN}"
    daemon.docker("run", "-d", "--name", name, "-e", ENV_SECRET, IMAGE, "sleep", "300")
    try:
        pid = daemon.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.decode().strip()
        yield int(pid)
    finally:
        daemon.docker("rm", "-f", name, check=False)


def volume_name(prefix: str) -> str:
    return f"dgv-{prefix}-{RUN}-{uuid.uuid4().hex[:6]}"


# ----- attacks through VolumeCreate ----------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    name: str
    options: tuple[str, ...]  # `docker volume create -o` values
    reason: str  # dockgate's reason, {via} for where the options are
    command: tuple[str, ...]  # run in a container with the volume at /h, straight on the daemon
    exposed: str  # what that prints, from the host; "" when the daemon does not mount it


ATTACKS = [
    Attack(
        "tmpfs-typed-bind",  # finding 1, as reported
        ("type=tmpfs", f"device={SECRET_DIR}", "o=bind,ro"),
        f"host path {SECRET_DIR} (bind device, {{via}}) is not allowed",
        ("cat", "/h/marker"),
        MARKER,
    ),
    Attack(
        "rbind-in-the-middle",
        ("type=tmpfs", f"device={SECRET_DIR}", "o=nosuid,rbind,ro"),
        f"host path {SECRET_DIR} (bind device, {{via}}) is not allowed",
        ("cat", "/h/marker"),
        MARKER,
    ),
    Attack(
        "none-typed-bind",
        ("type=none", f"device={SECRET_DIR}", "o=bind"),
        f"host path {SECRET_DIR} (bind device, {{via}}) is not allowed",
        ("cat", "/h/marker"),
        MARKER,
    ),
    Attack(
        "proc",  # finding 2: the host's /proc, other processes' environments
        ("type=proc", "device=proc"),
        "file system type 'proc' (type=, {via}) is not allowed",
        ("sh", "-c", "cat /h/$HOSTPID/environ | tr '\\0' '\\n'"),
        ENV_SECRET,
    ),
    Attack(
        "sysfs",  # the host's network namespace's view of /sys, writable
        ("type=sysfs", "device=sysfs"),
        "file system type 'sysfs' (type=, {via}) is not allowed",
        ("ls", "/h/class/net"),
        "HOST-INTERFACES",
    ),
    Attack(
        "overlay-of-host-directories",
        ("type=overlay", "device=overlay", f"o=lowerdir={SECRET_DIR}:{SECRET_DIR2}"),
        "file system type 'overlay' (type=, {via}) is not allowed",
        ("cat", "/h/marker"),
        MARKER,
    ),
    Attack(
        "upper-case-BIND-is-tmpfs-data",  # not a bind for moby (flags are exact): tmpfs data
        ("type=tmpfs", f"device={SECRET_DIR}", "o=BIND"),
        "tmpfs option 'BIND' (o=) is not allowed ({via})",
        ("true",),
        "",
    ),
    Attack(
        "remount",
        ("type=tmpfs", "device=tmpfs", "o=remount,size=1m"),
        "mount option 'remount' (o=) is not allowed ({via})",
        ("true",),
        "",
    ),
]


def expected_output(attack: Attack, host_pid: int) -> str:
    if attack.exposed == "HOST-INTERFACES":
        return "\n".join(sorted(os.listdir("/sys/class/net")))
    return attack.exposed


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_volume_create_attacks_work_on_the_daemon_and_are_refused_by_dockgate(
    guarded: Via, daemon: PrivateDaemon, cleanup: Cleanup, host_process: int, attack: Attack
) -> None:
    """Each option set exposes the host when sent straight to the daemon (where the daemon
    mounts it at all) and is refused through dockgate with the default guardrails, nothing
    created. On the old code tmpfs-typed-bind, rbind-in-the-middle, upper-case-BIND and remount
    were allowed (type=tmpfs was never judged); proc, sysfs and overlay were refused only because
    their device is not an absolute path (see the allowed-device case below)."""
    opts = [arg for option in attack.options for arg in ("-o", option)]
    direct = cleanup.volume(volume_name(attack.name))
    daemon.docker("volume", "create", "-d", "local", *opts, direct)
    proc = daemon.docker(
        "run", "--rm", "-e", f"HOSTPID={host_process}", "-v", f"{direct}:/h", IMAGE,
        *attack.command, check=False,
    )  # fmt: skip
    if attack.exposed:
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert expected_output(attack, host_process) in proc.stdout.decode()
    name = volume_name(attack.name)
    guarded.refused(
        "volume", "create", "-d", "local", *opts, name,
        operation="VolumeCreate", reason=attack.reason.format(via="DriverOpts"),
    )  # fmt: skip


def test_proc_volume_with_an_allowed_device_is_refused(
    host_policy: Via, daemon: PrivateDaemon, cleanup: Cleanup, host_process: int
) -> None:
    """Finding 2 as reported: `type=proc` with `device` an allowed host path passed (only the
    device was judged) and mounts the host's /proc, other processes' environments readable.
    Fails on the old code."""
    opts = ("-o", "type=proc", "-o", f"device={ALLOWED_DIR}", "-o", "o=ro")
    direct = cleanup.volume(volume_name("proc-direct"))
    daemon.docker("volume", "create", *opts, direct)
    script = f"cat /h/{host_process}/environ | tr '\\0' '\\n'"
    assert ENV_SECRET in direct_read(daemon, "-v", f"{direct}:/h", IMAGE, "sh", "-c", script)
    host_policy.refused(
        "volume", "create", *opts, volume_name("proc"),
        operation="VolumeCreate",
        reason="file system type 'proc' (type=, DriverOpts) is not allowed",
    )  # fmt: skip


# ----- the same options inline (HostConfig.Mounts) --------------------------------------------


def test_inline_tmpfs_typed_bind_is_refused(guarded: Via, daemon: PrivateDaemon) -> None:
    """`docker run --mount type=volume,volume-opt=type=tmpfs,volume-opt=device=DIR,
    volume-opt=o=bind` reads the host directory straight on the daemon; through dockgate it is
    refused, naming where the options are. Fails on the old code."""
    mount = (
        f"type=volume,dst=/h,volume-opt=type=tmpfs,volume-opt=device={SECRET_DIR},volume-opt=o=bind"
    )
    assert MARKER in direct_read(daemon, "--mount", mount, IMAGE, "cat", "/h/marker")
    via = "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options"
    guarded.refused(
        "run", "--rm", "--mount", mount, IMAGE, "cat", "/h/marker",
        operation="ContainerCreate",
        reason=f"host path {SECRET_DIR} (bind device, {via}) is not allowed",
    )  # fmt: skip


def test_inline_proc_is_refused(guarded: Via, daemon: PrivateDaemon, host_process: int) -> None:
    """An inline proc volume: the host's /proc straight on the daemon, refused by dockgate."""
    mount = "type=volume,dst=/h,volume-opt=type=proc,volume-opt=device=proc"
    script = f"cat /h/{host_process}/environ | tr '\\0' '\\n'"
    assert ENV_SECRET in direct_read(daemon, "--mount", mount, IMAGE, "sh", "-c", script)
    via = "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options"
    guarded.refused(
        "run", "--rm", "--mount", mount, IMAGE, "true",
        operation="ContainerCreate",
        reason=f"file system type 'proc' (type=, {via}) is not allowed",
    )  # fmt: skip


# ----- volumes used by name -------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(daemon: PrivateDaemon, host_dirs: None) -> Iterator[dict[str, str]]:
    """Volumes made straight on the daemon (outside dockgate): a tmpfs-typed bind of the secret
    directory, a proc volume, and a read-write bind of the allowed directory."""
    volumes = {
        "bind": (volume_name("planted-bind"), ("type=tmpfs", f"device={SECRET_DIR}", "o=bind")),
        "proc": (volume_name("planted-proc"), ("type=proc", "device=proc")),
        "allowed": (
            volume_name("planted-allowed"), ("type=none", f"device={ALLOWED_DIR}", "o=bind")
        ),
    }  # fmt: skip
    for name, options in volumes.values():
        opts = [arg for option in options for arg in ("-o", option)]
        daemon.docker("volume", "create", *opts, name)
    try:
        yield {key: name for key, (name, _) in volumes.items()}
    finally:
        for name, _ in volumes.values():
            daemon.docker("volume", "rm", "-f", name, check=False)


def test_a_volume_made_outside_dockgate_is_judged_by_its_options(
    guarded: Via, daemon: PrivateDaemon, planted: dict[str, str]
) -> None:
    """`-v NAME:/h` and `--mount src=NAME` of a volume created straight on the daemon with
    host-binding options read the host; through dockgate the daemon is asked for the volume's
    options and the create is refused as if they were in the body. Fails on the old code (a
    volume was trusted by name)."""
    name = planted["bind"]
    assert MARKER in direct_read(daemon, "-v", f"{name}:/h", IMAGE, "cat", "/h/marker")
    for args, via in (
        (("-v", f"{name}:/h"), "HostConfig.Binds"),
        (("-v", f"{name}:/h:ro"), "HostConfig.Binds"),
        (("--mount", f"type=volume,src={name},dst=/h"), "HostConfig.Mounts[0].Source"),
    ):
        guarded.refused(
            "run", "--rm", *args, IMAGE, "cat", "/h/marker",
            operation="ContainerCreate",
            reason=f"host path {SECRET_DIR} (bind device, volume {name!r} used by {via}) "
            "is not allowed",
        )  # fmt: skip
    proc_volume = planted["proc"]
    guarded.refused(
        "run", "--rm", "-v", f"{proc_volume}:/h", IMAGE, "true",
        operation="ContainerCreate",
        reason=f"file system type 'proc' (type=, volume {proc_volume!r} used by "
        "HostConfig.Binds) is not allowed",
    )  # fmt: skip


def test_a_planted_bind_of_an_allowed_path_follows_the_path_rule(
    host_policy: Via, planted: dict[str, str]
) -> None:
    """A volume binding the allowed (read-only) directory read-write, used by name: refused
    whether the use is read-only or not, as the host-path rule says. The volume's own `o`
    decides: a read-only use does not make it read-only (the attack review wrote the host path
    through another use of such a volume; tests/body/test_attacks_ci_runner.py)."""
    name = planted["allowed"]
    for mode in (":ro", ""):
        host_policy.refused(
            "run", "--rm", "-v", f"{name}:/h{mode}", IMAGE, "true",
            operation="ContainerCreate",
            reason=f"host path {ALLOWED_DIR} (bind device, volume {name!r} used by "
            "HostConfig.Binds) must be mounted read-only",
        )  # fmt: skip


# ----- ordinary uses still work ---------------------------------------------------------------


def test_ordinary_volumes_work(guarded: Via, cleanup: Cleanup) -> None:
    """A plain volume, a volume that does not exist yet (the daemon creates it), a tmpfs volume
    with size and mode, a tmpfs whose device is `/` (a label: an empty file system, nothing of
    the host), and `--mount type=tmpfs`: all allowed by the default guardrails, and they do
    what they say."""
    plain = cleanup.volume(volume_name("plain"))
    guarded.ok("volume", "create", plain)
    script = "echo kept > /d/f && cat /d/f"
    assert guarded.ok("run", "--rm", "-v", f"{plain}:/d", IMAGE, "sh", "-c", script) == "kept\n"
    assert guarded.ok("run", "--rm", "-v", f"{plain}:/d:ro", IMAGE, "cat", "/d/f") == "kept\n"
    fresh = cleanup.volume(volume_name("fresh"))
    guarded.ok("run", "--rm", "--mount", f"type=volume,src={fresh},dst=/d", IMAGE, "true")
    tmpfs = cleanup.volume(volume_name("tmpfs"))
    guarded.ok(
        "volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs",
        "-o", "o=size=1m,mode=1777,nosuid,nodev", tmpfs,
    )  # fmt: skip
    mounts = guarded.ok("run", "--rm", "-v", f"{tmpfs}:/d", IMAGE, "grep", " /d ", "/proc/mounts")
    assert mounts.startswith("tmpfs /d tmpfs ") and "size=1024k" in mounts, mounts
    label = cleanup.volume(volume_name("tmpfs-root-label"))
    guarded.ok("volume", "create", "-o", "type=tmpfs", "-o", "device=/", label)
    assert guarded.ok("run", "--rm", "-v", f"{label}:/d", IMAGE, "ls", "-A", "/d") == ""
    guarded.ok("run", "--rm", "--mount", "type=tmpfs,dst=/t", IMAGE, "true")


def test_an_allowed_host_path_through_a_bind_volume(host_policy: Via, cleanup: Cleanup) -> None:
    """`type=none,o=bind,ro,device=ALLOWED` under a read-only host-path rule: created and read;
    without `ro` (or with `ro,rw`, where rw wins) it must be read-only."""
    name = cleanup.volume(volume_name("allowed"))
    host_policy.ok(
        "volume", "create", "-o", "type=none", "-o", "o=bind,ro", "-o", f"device={ALLOWED_DIR}",
        name,
    )  # fmt: skip
    out = host_policy.ok("run", "--rm", "-v", f"{name}:/h", IMAGE, "cat", "/h/marker")
    assert out == ALLOWED_MARKER
    for o in ("o=bind", "o=bind,ro,rw"):
        host_policy.refused(
            "volume", "create", "-o", "type=none", "-o", o, "-o", f"device={ALLOWED_DIR}",
            volume_name("allowed-rw"),
            operation="VolumeCreate",
            reason=f"host path {ALLOWED_DIR} (bind device, DriverOpts) must be mounted read-only",
        )  # fmt: skip


# ----- ownership mode ---------------------------------------------------------------------------

OWNERSHIP_POLICY = """
policies:
  owned:
    ownership: true
    rules: [{allow: {sections: ["*"]}}]
bindings:
  - {policy: owned, authenticated: true}
"""


@pytest.fixture(scope="module")
def alice(
    daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Via]:
    """A caller of an ownership policy with the default guardrails (Basic auth as alice)."""
    directory = tmp_path_factory.mktemp("volopts-owned")
    write_htpasswd(directory / "htpasswd", {"alice": "alice-pw"})
    (directory / "policy.yaml").write_text(OWNERSHIP_POLICY)
    gateway = Gateway(
        daemon.host,
        *("--htpasswd", str(directory / "htpasswd"), "--auth-failures", "0"),
        policy=directory / "policy.yaml",
    )
    token = base64.b64encode(b"alice:alice-pw").decode()
    config = directory / "config"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps({"HttpHeaders": {"Authorization": f"Basic {token}"}})
    )
    with running(gateway, "the ownership gateway") as gw:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        yield Via("owned", base_env | {"DOCKER_HOST": gw.url, "DOCKER_CONFIG": str(config)}, daemon)


def test_ownership_mode_judges_own_volumes_and_hides_others(
    alice: Via, daemon: PrivateDaemon, planted: dict[str, str], cleanup: Cleanup
) -> None:
    """In ownership mode a volume used by name is judged after ownership: someone else's (here
    nobody's: planted straight on the daemon) reads as missing, with nothing said about its
    options or host path; the caller's own volume is judged by its options (one planted with
    the caller's owner label and a bind of the secret directory is refused), and an ordinary
    own volume works."""
    own = cleanup.volume(volume_name("owned"))
    alice.ok("volume", "create", own)
    assert alice.ok("run", "--rm", "-v", f"{own}:/d", IMAGE, "sh", "-c", "echo ok") == "ok\n"
    labels = daemon.docker("volume", "inspect", "-f", "{{json .Labels}}", own).stdout
    owner = json.loads(labels)[OWNER_LABEL]
    before = state(daemon)
    proc = alice.docker("run", "--rm", "-v", f"{planted['bind']}:/h", IMAGE, "true")
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0 and "no such volume" in stderr, stderr
    assert str(SECRET_DIR) not in stderr and "host path" not in stderr, stderr
    assert state(daemon) == before
    mine = cleanup.volume(volume_name("owned-bind"))
    daemon.docker(
        "volume", "create", "--label", f"{OWNER_LABEL}={owner}", "-o", "type=tmpfs",
        "-o", f"device={SECRET_DIR}", "-o", "o=bind", mine,
    )  # fmt: skip
    alice.refused(
        "run", "--rm", "-v", f"{mine}:/h", IMAGE, "cat", "/h/marker",
        operation="ContainerCreate",
        reason=f"host path {SECRET_DIR} (bind device, volume {mine!r} used by HostConfig.Binds) "
        "is not allowed",
    )  # fmt: skip


def test_rbind_ro_leaves_submounts_writable_so_it_is_not_read_only(
    host_policy: Via, daemon: PrivateDaemon, cleanup: Cleanup
) -> None:
    """moby makes only the top of a bind read-only: with `o=rbind,ro` a container writes into
    a mount under the bound directory (shown straight on the daemon, the file appears on the
    host), so under a read-only host-path rule dockgate refuses it. Old code: allowed."""
    sub = ALLOWED_DIR / f"sub-{uuid.uuid4().hex[:6]}"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "dgv-sub", str(sub)], check=True)
    try:
        options = ("-o", "type=none", "-o", "o=rbind,ro", "-o", f"device={ALLOWED_DIR}")
        direct = cleanup.volume(volume_name("rbind-ro-direct"))
        daemon.docker("volume", "create", *options, direct)
        script = f"touch /h/{sub.name}/written && ! touch /h/top 2>/dev/null"
        direct_read(daemon, "-v", f"{direct}:/h", IMAGE, "sh", "-c", script)
        assert (sub / "written").exists()
        host_policy.refused(
            "volume", "create", *options, volume_name("rbind-ro"),
            operation="VolumeCreate",
            reason=f"host path {ALLOWED_DIR} (bind device, DriverOpts) must be mounted read-only",
        )  # fmt: skip
    finally:
        cleanup.run()  # the volume's mount holds the submount
        subprocess.run(["umount", "-l", str(sub)], check=False)
