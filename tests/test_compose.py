"""deploy/compose.sidecar.yml brought up with docker-compose on a private daemon in a network
namespace of its own (compose's bridge networks need a daemon that may manage them).

Only the gateway half of the Traefik sidecar runs: there is no Traefik image without a
registry, so a client container on the same private network makes the calls Traefik's Docker
provider makes. Claims checked: the gateway answers discovery calls by its service name on the
internal network, refuses what the Traefik policy does not allow, and publishes no port.
"""

from __future__ import annotations

import json
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
NETWORK = f"{PROJECT}_docker-api"

# What Traefik's Docker provider asks, then two things it must not be able to do.
CLIENT = """
import json, urllib.request, urllib.error
def call(method, path, body=None):
    req = urllib.request.Request("http://dockgate:2375" + path, method=method, data=body)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
print(json.dumps({
    "version": call("GET", "/v1.41/version"),
    "list": call("GET", "/v1.41/containers/json"),
    "create": call("POST", "/v1.41/containers/create", b'{"Image": "x"}'),
    "exec": call("POST", "/v1.41/containers/dgside_dockgate_1/exec", b'{"Cmd": ["id"]}'),
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


def test_traefik_calls_answered_on_the_private_network(sidecar: Sidecar) -> None:
    proc = sidecar.node.docker(
        "run", "--rm", "--network", NETWORK, "--user", "65532",
        "--entrypoint", "python3", sidecar.image, "-c", CLIENT,
        check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    answers = json.loads(proc.stdout)
    assert answers["version"][0] == 200
    status, containers = answers["list"]
    assert status == 200
    assert any(f"/{PROJECT}_dockgate_1" in c["Names"] for c in containers)
    for refused in ("create", "exec"):
        status, body = answers[refused]
        assert status == 403, answers
        assert body["message"].startswith("dockgate:")


def test_the_gateway_is_not_published_and_its_network_is_internal(sidecar: Sidecar) -> None:
    state = json.loads(sidecar.node.docker("inspect", f"{PROJECT}_dockgate_1").stdout)[0]
    assert not any(state["NetworkSettings"]["Ports"].values())
    assert list(state["NetworkSettings"]["Networks"]) == [NETWORK]
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    network = json.loads(sidecar.node.docker("network", "inspect", NETWORK).stdout)[0]
    assert network["Internal"] is True
