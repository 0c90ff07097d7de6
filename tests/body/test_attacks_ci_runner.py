"""Issue 11, "attack your own change", first pass: what a CI runner still gets past the guardrails.

Each test is one finding of the review, proven by its effect on the real daemon (a container
wrote a file of a read-only host path, the daemon used a volume plugin the policy excludes,
...). Each was pinned as an `xfail(strict=True)` while the hole was open; all are closed,
and each test is an ordinary one that fails if its hole reopens.

Callers: a CI runner (the guardrails of examples/policies/ci-runner.yaml, one read-only host
directory) and a dashboard (examples/policies/dashboard.yaml, redacted answers). The ownership
tenants' findings of the same pass are tests/ownership/test_attacks_tenants.py.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import pathlib
import shutil
import threading
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from support.attack import (
    ATTACK_MARKS,
    Api,
    LoopbackHandler,
    build_context,
    ci_container,
    ci_runner_policy,
    leftovers_fixture,
    logs,
    loopback_service,
)
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.paths import REPO

pytestmark = ATTACK_MARKS

RUN = uuid.uuid4().hex[:8]
ALLOWED_DIR = pathlib.Path(f"/tmp/dga-allowed-{RUN}")  # allowed read-only by the CI policy
SECRET_DIR = pathlib.Path(f"/tmp/dga-secret-{RUN}")  # allowed by no policy
MARKER = f"dga-secret-file-{RUN}"

# examples/policies/ci-runner.yaml with the read-only cache at ALLOWED_DIR and no `hosts:`.
CI_POLICY = ci_runner_policy(ALLOWED_DIR, "      image_import_urls: false\n")


# ----- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_dirs() -> Iterator[None]:
    ALLOWED_DIR.mkdir()
    (ALLOWED_DIR / "tool").write_text("the shared cache\n")
    SECRET_DIR.mkdir()
    (SECRET_DIR / "marker").write_text(MARKER)
    try:
        yield
    finally:
        shutil.rmtree(ALLOWED_DIR, ignore_errors=True)
        shutil.rmtree(SECRET_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def ci(
    daemon: PrivateDaemon,
    busybox_image: str,
    host_dirs: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """A gateway with the CI runner's policy; no credentials."""
    base = tmp_path_factory.mktemp("attack-ci")
    (base / "policy.yaml").write_text(CI_POLICY)
    with running(Gateway(daemon.host, policy=str(base / "policy.yaml"))) as gateway:
        yield Api(gateway)


leftovers = leftovers_fixture(("container", "volume", "network"))


# ----- volumes ---------------------------------------------------------------------------------


def test_read_only_host_path_written_through_the_same_volume_mounted_twice(
    ci: Api, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """Found by the review: a `local` bind volume was judged read-only by the ReadOnly of the
    mount carrying its options, but the driver binds the device once as the volume's own `o`
    says, and a second (read-write) mount of the same new volume wrote the read-only host path.
    Closed: a bind volume is read-only only by `ro` in its own `o` (guardrails.py
    _local_mount_problem), so the body is refused. Fails on the old code (the file is planted)."""
    volume = f"dga-twice-{RUN}"
    leftovers["volume"].append(volume)
    options = {"type": "none", "o": "bind", "device": str(ALLOWED_DIR)}
    body = ci_container(
        busybox_image,
        "echo planted > /rw/planted",
        {
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": volume,
                    "Target": "/ro",
                    "ReadOnly": True,
                    "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": options}},
                },
                {"Type": "volume", "Source": volume, "Target": "/rw"},
            ]
        },
    )
    status, created = ci.call("POST", "/v1.41/containers/create", body)
    if status == 201:
        leftovers["container"].append(created["Id"])
        ci.call("POST", f"/v1.41/containers/{created['Id']}/start")
        ci.call("POST", f"/v1.41/containers/{created['Id']}/wait")
    # The policy allows that directory read-only: nothing may be written into it.
    assert not (ALLOWED_DIR / "planted").exists()
    assert status == 403 and "must be mounted read-only" in created["message"], created


def test_read_only_host_path_written_by_the_copy_of_image_content_into_a_new_volume(
    ci: Api, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """Found by the review: a bind volume without `ro` in its options, mounted ReadOnly, was
    allowed under a read-only rule, but the daemon copies the image's files at the target into
    a new volume whatever the mount says: they landed in the read-only host path. Closed: the
    volume's own `o` decides (guardrails.py _local_mount_problem). Fails on the old code."""
    empty = ALLOWED_DIR / f"empty-{uuid.uuid4().hex[:6]}"  # under the read-only rule
    empty.mkdir()
    volume = f"dga-copyup-{RUN}"
    leftovers["volume"].append(volume)
    options = {"type": "none", "o": "bind", "device": str(empty)}
    body = ci_container(
        busybox_image,
        "true",
        {
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": volume,
                    "Target": "/etc",  # the image has files there: passwd, group
                    "ReadOnly": True,
                    "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": options}},
                }
            ]
        },
    )
    status, created = ci.call("POST", "/v1.41/containers/create", body)
    if status == 201:
        leftovers["container"].append(created["Id"])
        ci.call("POST", f"/v1.41/containers/{created['Id']}/start")
        ci.call("POST", f"/v1.41/containers/{created['Id']}/wait")
    assert sorted(p.name for p in empty.iterdir()) == []
    assert status == 403 and "must be mounted read-only" in created["message"], created


class _PluginHandler(http.server.BaseHTTPRequestHandler):
    """A legacy volume plugin (docs: plugins_volume.md) whose every volume is SECRET_DIR."""

    calls: list[str]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        name = request.get("Name", "")
        created = any(call == f"/VolumeDriver.Create {name}" for call in self.calls)
        self.calls.append(f"{self.path} {name}")
        answers: dict[str, object] = {
            "/Plugin.Activate": {"Implements": ["VolumeDriver"]},
            "/VolumeDriver.Capabilities": {"Capabilities": {"Scope": "local"}},
            "/VolumeDriver.Get": (
                {"Volume": {"Name": name}, "Err": ""} if created else {"Err": "no such volume"}
            ),
            "/VolumeDriver.List": {"Volumes": [], "Err": ""},
            "/VolumeDriver.Path": {"Mountpoint": str(SECRET_DIR), "Err": ""},
            "/VolumeDriver.Mount": {"Mountpoint": str(SECRET_DIR), "Err": ""},
        }
        data = json.dumps(answers.get(self.path, {"Err": ""})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


_plugin_server: http.server.ThreadingHTTPServer | None = None
_plugin_calls: list[str] = []


@pytest.fixture
def volume_plugin(host_dirs: None) -> Iterator[tuple[str, list[str]]]:
    """A volume plugin the daemon finds by its spec file (/etc/docker/plugins/NAME.spec): the
    kind of plugin an operator installs for another policy. Its name, and the calls it got.

    The server lives as long as the test process: once the daemon has used a plugin it keeps
    asking it about every volume name looked up, and a plugin gone away would make each such
    look-up wait for the daemon's retries (tens of seconds) in every later test."""
    global _plugin_server  # noqa: PLW0603 - one server per process, see above
    name = f"dga-plugin-{RUN}"
    if _plugin_server is None:
        handler = type("Handler", (_PluginHandler,), {"calls": _plugin_calls})
        _plugin_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=_plugin_server.serve_forever, daemon=True).start()
    spec = pathlib.Path("/etc/docker/plugins") / f"{name}.spec"
    made = [d for d in (spec.parent.parent, spec.parent) if not d.exists()]
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(f"tcp://127.0.0.1:{_plugin_server.server_address[1]}\n")
    try:
        yield name, _plugin_calls
    finally:
        spec.unlink(missing_ok=True)
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()


def test_volume_driver_at_the_top_level_beside_a_host_config(
    ci: Api,
    busybox_image: str,
    volume_plugin: tuple[str, list[str]],
    leftovers: dict[str, list[str]],
) -> None:
    """Found by the review: a top-level (deprecated) VolumeDriver beside an inner HostConfig
    is copied in by the daemon when the inner one has none (runconfig/config_unix.go
    getHostConfig), but only HostConfig.VolumeDriver was judged: volume_drivers bypassed.
    Closed: workload.container_create reads the top-level fields getHostConfig copies.
    Fails on the old code (the plugin is asked to create the volume)."""
    plugin, calls = volume_plugin
    volume = f"dga-plugvol-{RUN}"
    leftovers["volume"].append(volume)
    # The policy names no volume driver: inside HostConfig, the same field is refused.
    inner = ci_container(busybox_image, "cat /v/marker", {"Binds": [f"{volume}:/v"]})
    inner["HostConfig"]["VolumeDriver"] = plugin
    status, answer = ci.call("POST", "/v1.41/containers/create", inner)
    assert status == 403, (status, answer)
    body = ci_container(busybox_image, "cat /v/marker", {"Binds": [f"{volume}:/v"]})
    body["VolumeDriver"] = plugin  # runconfig getHostConfig copies it into the HostConfig
    status, created = ci.call("POST", "/v1.41/containers/create", body)
    output = ""
    if status == 201:
        leftovers["container"].append(created["Id"])
        ci.call("POST", f"/v1.41/containers/{created['Id']}/start")
        ci.call("POST", f"/v1.41/containers/{created['Id']}/wait")
        output = logs(ci, created["Id"])
    # The plugin was never asked to make a volume, and no host directory was read through it.
    assert f"/VolumeDriver.Create {volume}" not in calls
    assert MARKER not in output
    assert (status, created) == (403, answer), created  # refused as the inner field is


def test_tmpfs_remount_makes_sysfs_writable(
    ci: Api, busybox_image: str, daemon: PrivateDaemon, leftovers: dict[str, list[str]]
) -> None:
    """Found by the review: HostConfig.Tmpfs options were never judged; {'/sys/': 'remount'}
    makes runc remount the container's sysfs read-write and root in the job writes the host
    kernel's parameters. Closed: tmpfs option words are an allowlist (body/tmpfs.py), so
    `remount` is refused. Fails on the old code (HOST-KNOB-WRITTEN)."""
    # A harmless host-wide knob: the value read is written back unchanged; on the read-only
    # sysfs of every unprivileged container the write fails with EROFS.
    knob = "/sys/module/printk/parameters/time"
    script = (
        "grep ' /sys sysfs ' /proc/mounts; "
        f"v=$(cat {knob}); echo $v > {knob} && echo HOST-KNOB-WRITTEN"
    )
    body = ci_container(busybox_image, script, {"Tmpfs": {"/sys/": "remount"}})
    status, created = ci.call("POST", "/v1.41/containers/create", body)
    output = ""
    if status == 201:
        leftovers["container"].append(created["Id"])
        ci.call("POST", f"/v1.41/containers/{created['Id']}/start")
        ci.call("POST", f"/v1.41/containers/{created['Id']}/wait")
        output = logs(ci, created["Id"])
    assert "HOST-KNOB-WRITTEN" not in output, output
    assert status == 403 and "tmpfs option 'remount'" in created["message"], (status, created)
    # Not vacuous: straight to the daemon, the same option makes sysfs writable.
    direct = daemon.docker(
        "run", "--rm", "--tmpfs", "/sys/:remount", busybox_image, "sh", "-c", script
    ).stdout.decode()
    assert "HOST-KNOB-WRITTEN" in direct, direct
    # What a job asks of a tmpfs (size, mode, exec) still runs through dockgate.
    cid, output = ci.run(
        ci_container(
            busybox_image,
            "grep ' /scratch ' /proc/mounts && touch /scratch/f",
            {"Tmpfs": {"/scratch": "size=1m,mode=1777,exec"}},
        )
    )
    leftovers["container"].append(cid)
    assert output.startswith("tmpfs /scratch tmpfs rw,") and "size=1024k" in output, output


def test_tmpfs_remount_makes_a_read_only_host_path_writable(
    ci: Api, busybox_image: str, daemon: PrivateDaemon, leftovers: dict[str, list[str]]
) -> None:
    """Found by the review: a 'remount' tmpfs over an allowed read-only bind
    ({'/cache/': 'remount'}) made it read-write, and the host path was written. Closed: tmpfs
    option words are an allowlist (body/tmpfs.py). Fails on the old code (the file is planted)."""
    planted = ALLOWED_DIR / f"tmpfs-planted-{uuid.uuid4().hex[:6]}"
    body = ci_container(
        busybox_image,
        f"echo planted > /cache/{planted.name}",
        {"Binds": [f"{ALLOWED_DIR}:/cache:ro"], "Tmpfs": {"/cache/": "remount"}},
    )
    status, created = ci.call("POST", "/v1.41/containers/create", body)
    if status == 201:
        leftovers["container"].append(created["Id"])
        ci.call("POST", f"/v1.41/containers/{created['Id']}/start")
        ci.call("POST", f"/v1.41/containers/{created['Id']}/wait")
    assert not planted.exists()
    assert status == 403 and "tmpfs option 'remount'" in created["message"], (status, created)
    # Not vacuous: straight to the daemon, the same body writes the read-only host path.
    try:
        daemon.docker(
            "run", "--rm", "-v", f"{ALLOWED_DIR}:/cache:ro", "--tmpfs", "/cache/:remount",
            busybox_image, "sh", "-c", f"echo planted > /cache/{planted.name}",
        )  # fmt: skip
        assert planted.exists()
    finally:
        planted.unlink(missing_ok=True)


def test_build_run_steps_escape_the_memory_limit(
    ci: Api, busybox_image: str, daemon: PrivateDaemon
) -> None:
    """Found by the review: a classic build's RUN steps are containers without the policy's
    memory and CPU limits (the build's memory/cpuquota parameters were unset or unjudged).
    Closed: with max_memory/max_cpus a build must ask for limits within them
    (body/buildlimits.py); this one asks for none and is refused (403), and one with
    `memory` and `cpuquota` within the maxima runs its steps under that limit. Fails on the
    old code (the unlimited build ran)."""
    dockerfile = (
        f"FROM {busybox_image}\n"
        "RUN echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
        "|| cat /sys/fs/cgroup/memory.max)\n"
    ).encode()
    context = build_context({"Dockerfile": dockerfile})
    tar = {"Content-Type": "application/x-tar"}
    # The review's build, without limits: refused, naming the docker build flag.
    status, answer = ci.call("POST", "/v1.41/build?rm=1&forcerm=1&nocache=1", context, tar)
    text = answer.decode() if isinstance(answer, bytes) else json.dumps(answer)
    for line in text.splitlines():
        if '"aux"' in line:  # {"aux":{"ID":"sha256:..."}}: the image built
            daemon.docker("rmi", "-f", json.loads(line)["aux"]["ID"], check=False)
    assert "limit=" not in text, text  # no RUN step ran
    assert status == 403 and "--memory" in text, (status, text)
    # With limits within the maxima, every RUN step runs under them.
    limited = "memory=268435456&cpuquota=100000&cpuperiod=100000"
    status, answer = ci.call(
        "POST", f"/v1.41/build?rm=1&forcerm=1&nocache=1&{limited}", context, tar
    )
    assert status == 200, (status, answer)
    text = answer.decode() if isinstance(answer, bytes) else json.dumps(answer)
    for line in text.splitlines():
        if '"aux"' in line:
            daemon.docker("rmi", "-f", json.loads(line)["aux"]["ID"], check=False)
    found = [line for line in text.splitlines() if "limit=" in line and "RUN" not in line]
    assert found, text
    limit = json.loads(found[0])["stream"].strip().removeprefix("limit=")
    # The CI policy's max_memory is 4g: every container it runs is limited to that.
    assert limit.isdigit() and int(limit) <= 4 * 1024**3, limit


class _LoopbackService(LoopbackHandler):
    """A service listening on the host's loopback only, answering a secret to any GET (as a
    404: the daemon quotes the body of an error answer it cannot parse)."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.answer(404, "text/plain", f"loopback-only-secret-{RUN}".encode())

    do_HEAD = do_GET


def test_image_pull_reads_a_loopback_only_service(ci: Api) -> None:
    """Found by the review: ImageCreate fromImage=127.0.0.1:PORT/x made the daemon GET a
    loopback-only service (loopback registries are plain HTTP by default) and echo its answer
    in the error. Closed: a pull from a loopback registry is refused unless `images` lists it
    (guardrails.pull_problem), and the service sees no request."""
    with loopback_service(_LoopbackService) as (port, requests):
        _, answer = ci.call(
            "POST", f"/v1.41/images/create?fromImage=127.0.0.1:{port}/internal/x&tag=latest"
        )
    assert f"loopback-only-secret-{RUN}" not in json.dumps(answer, default=repr)
    assert requests == []


# ----- redaction -------------------------------------------------------------------------------

DASHBOARD_POLICY = REPO / "examples/policies/dashboard.yaml"


@pytest.fixture(scope="module")
def dashboard(daemon: PrivateDaemon, busybox_image: str) -> Iterator[Api]:
    """A gateway with the dashboard example (env and mounts redacted); no credentials."""
    with running(Gateway(daemon.host, policy=str(DASHBOARD_POLICY))) as gateway:
        yield Api(gateway)


def test_volume_filter_tells_redacted_host_paths(
    dashboard: Api, daemon: PrivateDaemon, busybox_image: str, host_dirs: None
) -> None:
    """Found by the review: where mounts are redacted, ContainerList's `volume` filter answered
    whether a host path is mounted in a container (an oracle on every host path). Closed: the
    filter is refused there (body/exposure.py), so both probes get the same answer."""
    name = f"dga-mounted-{RUN}"
    daemon.docker("create", "--name", name, "-v", f"{SECRET_DIR}:/data:ro", busybox_image, "true")
    try:
        status, inspect = dashboard.call("GET", f"/v1.41/containers/{name}/json")
        assert status == 200, (status, inspect)
        assert str(SECRET_DIR) not in json.dumps(inspect)  # redacted there
        hits = {}
        for probe in (str(SECRET_DIR), "/nowhere"):
            filters = urllib.parse.quote(json.dumps({"volume": [probe], "name": [name]}))
            status, listed = dashboard.call(
                "GET", f"/v1.41/containers/json?all=1&filters={filters}"
            )
            hits[probe] = status == 200 and len(listed) > 0
        # Whether the container mounts SECRET_DIR must not be told by what the filter matches.
        assert hits[str(SECRET_DIR)] == hits["/nowhere"]
    finally:
        daemon.docker("rm", "-f", name, check=False)
