"""The container image, built for real: a Debian base made here with debootstrap (no registry
is reachable), dockgate installed from wheels built on the host, run on the private daemon with
the daemon's socket mounted, a read-only root file system, and its HEALTHCHECK.

Claims checked: the image builds from the repository's Dockerfile with the base as a build
argument; the gateway process runs as uid 65532 with the socket's group; a read-only root
works; /readyz answers and Docker reports the container healthy; the API answers through it;
started as another user without the socket's group it says which --group-add to pass."""

from __future__ import annotations

import json
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(900)]

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE_TAG = "dockgate-test/debian-python:bookworm"
IMAGE_TAG = "dockgate-test/dockgate:test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def image(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap not found: scripts/test.sh installs it")
    work = tmp_path_factory.mktemp("image")
    if daemon.docker("image", "inspect", BASE_TAG, check=False).returncode != 0:
        rootfs = work / "rootfs"
        subprocess.run(
            [
                "debootstrap", "--variant=minbase", "--include=python3",
                "bookworm", str(rootfs), "http://deb.debian.org/debian",
            ],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "-c", "."], check=True, capture_output=True, timeout=300
        ).stdout
        daemon.docker("import", "-", BASE_TAG, input=tar, timeout=300)
    context = work / "context"
    context.mkdir()
    shutil.copy(REPO / "Dockerfile", context / "Dockerfile")
    shutil.copytree(REPO / "deploy", context / "deploy")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-w", str(context / "wheels")],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    daemon.docker(
        "build", "--build-arg", f"BASE={BASE_TAG}", "-t", IMAGE_TAG, str(context), timeout=600
    )
    yield IMAGE_TAG


def _run(daemon: PrivateDaemon, image: str, *args: str) -> str:
    name = f"dgt-img-{uuid.uuid4().hex[:8]}"
    daemon.docker(
        "run", "-d", "--name", name, "--network", "host", "--read-only",
        "-v", f"{daemon.socket_path}:/var/run/docker.sock", *args, image,
    )  # fmt: skip
    return name


def _get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def test_the_image_runs_unprivileged_read_only_and_healthy(
    daemon: PrivateDaemon, image: str
) -> None:
    api, admin = _free_port(), _free_port()
    name = _run(
        daemon, image,
        "-e", f"DOCKGATE_LISTEN=tcp://127.0.0.1:{api}",
        "-e", f"DOCKGATE_ADMIN_LISTEN=tcp://127.0.0.1:{admin}",
        "--health-cmd",
        "python3 -c \"import sys,urllib.request;"
        f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{admin}/readyz',timeout=4).status!=200)\"",
        "--health-interval", "2s",
    )  # fmt: skip
    try:
        assert _wait(lambda: _get(admin, "/readyz")[0] == 200, 60), daemon.docker(
            "logs", name, check=False
        ).stderr
        status, body = _get(api, "/_ping")
        assert (status, body) == (200, b"OK")
        state = json.loads(daemon.docker("inspect", name).stdout)[0]
        # The container's main process, seen from the host: the gateway itself, not a root
        # parent (the entrypoint drops privileges and runs dockgate in the same process).
        status = pathlib.Path(f"/proc/{state['State']['Pid']}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split()[:2] == ["65532", "65532"], fields["Uid"]
        assert fields["Gid"].split()[0] == "65532"
        assert str(daemon.socket_path.stat().st_gid) in fields["Groups"].split()
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        assert _wait(
            lambda: (
                json.loads(daemon.docker("inspect", name).stdout)[0]["State"]["Health"]["Status"]
                == "healthy"
            ),
            60,
        )
    finally:
        daemon.docker("rm", "-f", name, check=False)


def test_another_user_without_the_socket_group_is_told_what_to_add(
    daemon: PrivateDaemon, image: str
) -> None:
    group = daemon.socket_path.stat().st_gid
    name = _run(daemon, image, "--user", "1000:1000", "-e", "DOCKGATE_LISTEN=tcp://127.0.0.1:0")
    try:
        assert _wait(
            lambda: not json.loads(daemon.docker("inspect", name).stdout)[0]["State"]["Running"],
            30,
        )
        logs = daemon.docker("logs", name).stderr.decode()
        assert f"--group-add {group}" in logs, logs
    finally:
        daemon.docker("rm", "-f", name, check=False)
