"""Issue 13, "attack your own change": examples/policies/quickstart.yaml, attacked as its caller.

The README and the policy's header say that with quickstart.yaml "nothing sent through the
gateway is root on the host". The policy allowed `containers` and `exec` on every container of
the daemon (no ownership), with the default guardrails, which judge only what a caller creates.
Each test below is one finding, proven by its effect on the real daemon. The review pinned them
as `xfail(strict=True)`; the policy now has ownership and refuses ImageTag and ImageLoad, and
they pass, but for the import, a known limit still marked so. The image's variant of the
first finding (exec
into dockgate's own container, as the README's nginx migration runs it with this policy) is in
tests/deploy/test_attacks_image.py.

What held (tried through the quickstart gateway against the real daemon, no test needed): a
create whose `NetworkingConfig.EndpointsConfig` names `host` (the container is attached by
name only and stays in a network namespace of its own: `ip a` shows only `lo`);
`POST /networks/host/connect` (the daemon's 400); ExecCreate `Privileged` in either key case;
ContainerUpdate `Devices`; a `/v1.23/.../start` body with `Binds`; VolumeCreate binding `/`;
a macvlan network; `images/create?fromSrc=` a loopback URL; plugins, `GET /swarm` and builds
(403 by the rules); a create binding `/` (403, host_paths).
"""

from __future__ import annotations

import io
import pathlib
import shutil
import tarfile
import time
import uuid

import pytest

from support.attack import ATTACK_MARKS, Api, host_secret_fixture, logs, quickstart_fixture
from support.daemon import PrivateDaemon, find_busybox

pytestmark = ATTACK_MARKS

RUN = uuid.uuid4().hex[:8]


qs = quickstart_fixture()


host_secret = host_secret_fixture()


def _remove(daemon: PrivateDaemon, *names: str) -> None:
    for name in names:
        daemon.docker("rm", "-f", name, check=False)


def _wait_exec(api: Api, exec_id: str, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        status, info = api.call("GET", f"/v1.41/exec/{exec_id}/json")
        assert status == 200, (status, info)
        if not info["Running"] and info["ExitCode"] is not None:
            return dict(info)
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


def _exec_detached(api: Api, container: str, command: str) -> int | None:
    """`docker exec -d CONTAINER sh -c COMMAND` through `api`; its exit code, or None when
    the gateway refused it."""
    status, created = api.call(
        "POST",
        f"/v1.41/containers/{container}/exec",
        {"Cmd": ["sh", "-c", command], "AttachStdout": False, "AttachStderr": False},
    )
    if status in (403, 404):  # refused, or (ownership) not one of the caller's containers
        return None
    assert status == 201, (status, created)
    status, answer = api.call(
        "POST", f"/v1.41/exec/{created['Id']}/start", {"Detach": True, "Tty": False}
    )
    if status == 403:
        return None
    assert status == 200, (status, answer)
    return int(str(_wait_exec(api, created["Id"])["ExitCode"]))


def test_exec_into_a_container_holding_the_socket_is_root_on_the_host(
    qs: Api, daemon: PrivateDaemon, busybox_image: str, host_secret: pathlib.Path
) -> None:
    """The operator runs a container that holds the Docker socket (the Traefik of the README's
    docker-socket-proxy migration before it switches, a Portainer, or dockgate's own image as
    the README's nginx migration runs it with DOCKGATE_POLICY=quickstart.yaml); here busybox
    with the socket and a static docker CLI, created on the daemon directly. A quickstart
    caller execs `docker run -v /:/host busybox cat /host/SECRET` in it (ContainerExec and
    ExecStart are allowed on every container, as root, by the default `exec` guardrail), then
    reads through the gateway the logs of the container it made that way: the host file.
    Not vacuous: the same container asked of the gateway directly is refused (host_paths).
    (`--privileged` is not used only because this sandbox's runc cannot apply its caps;
    `-v /:/host` read-write is root on the host already.)
    Pinned by the attack review when quickstart.yaml had no ownership (xfail then); since it
    has, the holder is not the caller's: the exec gets 404 and nothing is run in it."""
    docker_cli = shutil.which("docker")
    assert docker_cli is not None
    holder, escaped = f"atk13b-holder-{RUN}", f"atk13b-escaped-{RUN}"
    _remove(daemon, holder, escaped)
    daemon.docker(
        "run", "-d", "--name", holder,
        "-v", f"{daemon.socket_path}:/var/run/docker.sock",
        "-v", f"{docker_cli}:/usr/local/bin/docker:ro",
        busybox_image, "sleep", "300",
    )  # fmt: skip
    try:
        direct = {
            "Image": busybox_image,
            "Cmd": ["cat", f"/host{host_secret}"],
            "HostConfig": {"Binds": ["/:/host"]},
        }
        status, answer = qs.call("POST", "/v1.41/containers/create", direct)
        assert status == 403, (status, answer)

        command = f"docker run --name {escaped} -v /:/host {busybox_image} cat /host{host_secret}"
        exit_code = _exec_detached(qs, holder, command)
        leaked = ""
        if exit_code == 0:
            status, inspected = qs.call("GET", f"/v1.41/containers/{escaped}/json")
            assert status == 200, (status, inspected)
            assert inspected["HostConfig"]["Binds"] == ["/:/host"]
            leaked = logs(qs, escaped)
        assert host_secret.read_text() not in leaked
        assert exit_code is None, "an exec ran in a container the gateway did not make"
        gone = daemon.docker("inspect", escaped, check=False)
        assert gone.returncode != 0, "the exec'd docker CLI created a container on the daemon"
    finally:
        _remove(daemon, holder, escaped)


def _tar_member(raw: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


def test_cp_through_another_containers_host_mount_reads_and_writes_host_files(
    qs: Api, daemon: PrivateDaemon, busybox_image: str, host_secret: pathlib.Path
) -> None:
    """The operator runs a monitoring agent as cAdvisor's documentation does (`-v
    /:/rootfs:ro`) and a job with a read-write host directory, both on the daemon directly. A
    quickstart caller, with `docker cp` alone (ContainerArchive and PutContainerArchive,
    section `containers`; no exec, no container of its own), reads a host file through the
    first and plants a file on the host through the second. Pinned as an xfail before
    quickstart.yaml had ownership; now both containers are not the caller's (404)."""
    agent, job = f"atk13b-agent-{RUN}", f"atk13b-job-{RUN}"
    _remove(daemon, agent, job)
    daemon.docker(
        "run", "-d", "--name", agent, "-v", "/:/rootfs:ro", busybox_image, "sleep", "300"
    )  # fmt: skip
    daemon.docker(
        "run", "-d", "--name", job, "-v", f"{host_secret.parent}:/data",
        busybox_image, "sleep", "300",
    )  # fmt: skip
    planted = host_secret.parent / f"dg-atk13b-planted-{RUN}"
    try:
        status, raw = qs.call("GET", f"/v1.41/containers/{agent}/archive?path=/rootfs{host_secret}")
        read = _tar_member(raw, host_secret.name).decode() if status == 200 else ""

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            data = b"written by a quickstart caller\n"
            info = tarfile.TarInfo(planted.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        qs.call(
            "PUT",
            f"/v1.41/containers/{job}/archive?path=/data",
            buffer.getvalue(),
            headers={"Content-Type": "application/x-tar"},
        )
        assert read != host_secret.read_text(), "a host file was read through the agent"
        assert not planted.exists(), "a file was planted on the host through the job"
    finally:
        planted.unlink(missing_ok=True)
        _remove(daemon, agent, job)


def _payload_image_tar(busybox: pathlib.Path, marker: str) -> bytes:
    """A root file system whose /bin/sh plants `marker` in /data, then runs the real shell:
    whatever the operator later runs with `sh -c` in it does that first."""
    script = (
        "#!/bin/busybox sh\n"
        f'/bin/busybox sh -c "echo pwned > /data/{marker}" 2>/dev/null\n'
        'exec /bin/busybox sh "$@"\n'
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo("bin")
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        for name, data, mode in (("bin/busybox", busybox.read_bytes(), 0o755),
                                 ("bin/sh", script, 0o755)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _operator_runs(daemon: PrivateDaemon, image: str, host_dir: pathlib.Path) -> None:
    """The operator, later, straight on the daemon, with a host directory."""
    daemon.docker(
        "run", "--rm", "-v", f"{host_dir}:/data", image, "sh", "-c", "ls /data", check=False
    )  # fmt: skip


def test_retagging_over_the_operators_image_is_refused(
    qs: Api, daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """The operator keeps a maintenance image (`ops-tool:1`, here busybox retagged) and runs
    it directly on the daemon with a host directory (`docker run -v /srv/data:/data ops-tool:1
    sh -c 'ls /data'`). A quickstart caller imported a file system of its own (ImageCreate
    fromSrc=-) and tagged it `ops-tool:1` (ImageTag moves any existing tag; images are not
    scoped): the operator's next run executed the caller's /bin/sh with the host directory
    mounted. Pinned as an xfail by the attack review; quickstart.yaml now refuses ImageTag
    (and ImageLoad, whose archive names the tags it sets): the tag stays the operator's."""
    ops_tool = f"atk13b/ops-tool-{RUN}:1"
    daemon.docker("tag", busybox_image, ops_tool)
    host_dir = tmp_path / "srv-data"
    host_dir.mkdir()
    marker = f"planted-{RUN}"
    mine = f"atk13b/mine-{RUN}"
    try:
        status, answer = qs.call(
            "POST",
            f"/v1.41/images/create?fromSrc=-&repo={mine}&tag=1",
            _payload_image_tar(find_busybox(), marker),
            headers={"Content-Type": "application/x-tar"},
        )
        assert status == 200, (status, answer)
        repo, tag = ops_tool.rsplit(":", 1)
        status, answer = qs.call("POST", f"/v1.41/images/{mine}:1/tag?repo={repo}&tag={tag}")
        assert status == 403, (status, answer)
        _operator_runs(daemon, ops_tool, host_dir)
        assert not (host_dir / marker).exists(), "the caller's code ran with the host mount"
    finally:
        daemon.docker("rmi", "-f", ops_tool, f"{mine}:1", check=False)


@pytest.mark.xfail(
    strict=True,
    reason="quickstart: image names are shared; an import (ImageCreate fromSrc=-&repo=NAME)"
    " gives the operator's tag the caller's image (THREAT_MODEL.md, 'Image names are shared')",
)
def test_importing_over_the_operators_image_runs_the_callers_code_with_its_mounts(
    qs: Api, daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """The same without ImageTag: the import names the operator's repository and tag itself
    (`docker import - ops-tool:1`), which the daemon applies over the existing tag. The policy
    language has no rule on ImageCreate's query (pulls are ImageCreate too), so quickstart.yaml
    cannot refuse imports without refusing pulls: a known limit, documented."""
    ops_tool = f"atk13b/ops-tool-imp-{RUN}:1"
    daemon.docker("tag", busybox_image, ops_tool)
    host_dir = tmp_path / "srv-data"
    host_dir.mkdir()
    marker = f"planted-imp-{RUN}"
    repo, tag = ops_tool.rsplit(":", 1)
    try:
        status, _ = qs.call(
            "POST",
            f"/v1.41/images/create?fromSrc=-&repo={repo}&tag={tag}",
            _payload_image_tar(find_busybox(), marker),
            headers={"Content-Type": "application/x-tar"},
        )
        if status == 200:
            _operator_runs(daemon, ops_tool, host_dir)
        assert not (host_dir / marker).exists(), "the caller's code ran with the host mount"
    finally:
        daemon.docker("rmi", "-f", ops_tool, check=False)
