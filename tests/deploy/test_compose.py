"""deploy/compose.sidecar.yml brought up with docker-compose on a private daemon in a network
namespace of its own.

Only the gateway half of the Traefik sidecar runs: there is no Traefik image without a
registry, so a client container that mounts the shared volume, as Traefik does, makes the
calls Traefik's Docker provider makes. Claims checked: the gateway answers discovery calls on
the unix socket in the volume (environment values redacted), refuses what the Traefik policy
does not allow, and has no network at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.daemon import PrivateDaemon
from support.image import REPO, copy_image
from support.netns import NamespacedDaemon, namespaced_daemon

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(600)]

PROJECT = "dgside"
VOLUME = f"{PROJECT}_dockgate-api"
SECRET = "sidecar-env-canary"

# What Traefik's Docker provider asks, then two things it must not be able to do.
CLIENT = """
import http.client, json, socket, sys
class UnixHTTP(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/run/dockgate/dockgate.sock")
def call(method, path, body=None):
    conn = UnixHTTP("docker", timeout=20)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    return answer.status, json.load(answer)
print(json.dumps({
    "version": call("GET", "/v1.41/version"),
    "list": call("GET", "/v1.41/containers/json"),
    "inspect": call("GET", "/v1.41/containers/" + sys.argv[1] + "/json"),
    "create": call("POST", "/v1.41/containers/create", b'{"Image": "x"}'),
    "exec": call("POST", "/v1.41/containers/" + sys.argv[1] + "/exec", b'{"Cmd": ["id"]}'),
}))
"""


@dataclass
class Sidecar:
    node: NamespacedDaemon
    image: str


def _wait_healthy(node: NamespacedDaemon, container: str, timeout: float = 90) -> bool:
    """The image's HEALTHCHECK says the gateway answers and the daemon behind it too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(node.docker("inspect", container).stdout)[0]["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return True
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def sidecar(daemon: PrivateDaemon, dockgate_image: str) -> Iterator[Sidecar]:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose not found: scripts/test.sh installs it")
    with namespaced_daemon() as node:
        image = copy_image(daemon, node, dockgate_image)
        command = [compose, "-p", PROJECT, "-f", str(REPO / "deploy" / "compose.sidecar.yml")]
        env = node.env() | {"DOCKGATE_IMAGE": image, "DOCKER_SOCKET": str(node.socket_path)}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*command, *args], env=env, capture_output=True, text=True, timeout=180, check=False
            )

        up = run("up", "-d", "--no-deps", "dockgate")
        try:
            assert up.returncode == 0, up.stderr
            assert _wait_healthy(node, f"{PROJECT}_dockgate_1"), run("logs").stdout
            yield Sidecar(node, image)
        finally:
            run("down", "--volumes")
            node.docker("image", "rm", "--force", image, check=False)


def test_traefik_calls_answered_on_the_shared_socket(sidecar: Sidecar) -> None:
    """A container started with a secret in its environment, as the sites Traefik routes to are."""
    site = f"dgside-site-{os.urandom(3).hex()}"
    sidecar.node.docker("create", "--name", site, "-e", f"TOKEN={SECRET}", sidecar.image)
    try:
        proc = sidecar.node.docker(
            "run", "--rm", "--network", "none", "-v", f"{VOLUME}:/run/dockgate:ro",
            "--user", "1000", "--entrypoint", "python3", sidecar.image, "-c", CLIENT, site,
            check=False, timeout=120,
        )  # fmt: skip
    finally:
        sidecar.node.docker("rm", "-f", site, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    answers = json.loads(proc.stdout)
    assert answers["version"][0] == 200
    status, containers = answers["list"]
    assert status == 200
    assert any(f"/{PROJECT}_dockgate_1" in c["Names"] for c in containers)
    status, inspected = answers["inspect"]
    assert status == 200 and "TOKEN=<redacted>" in inspected["Config"]["Env"]
    assert SECRET not in json.dumps(answers)
    for refused in ("create", "exec"):
        status, body = answers[refused]
        assert status == 403, answers
        assert body["message"].startswith("dockgate:")


def test_the_gateway_has_no_network(sidecar: Sidecar) -> None:
    state = json.loads(sidecar.node.docker("inspect", f"{PROJECT}_dockgate_1").stdout)[0]
    assert state["HostConfig"]["NetworkMode"] == "none"
    assert not state["NetworkSettings"]["Ports"]
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    # Its socket is in the volume, owned by the unprivileged user.
    mounts = {m["Destination"]: m for m in state["Mounts"]}
    assert mounts["/run/dockgate"]["Name"] == VOLUME
    listing = sidecar.node.docker(
        "run", "--rm", "-v", f"{VOLUME}:/v:ro", "--entrypoint", "python3", sidecar.image,
        "-c", "import os; s = os.stat('/v/dockgate.sock'); print(s.st_uid, oct(s.st_mode))",
    ).stdout.decode().split()  # fmt: skip
    assert listing == ["65532", "0o140666"], listing
