"""The Tecnativa drop-in: dockgate's image run as `docker run -e CONTAINERS=1 -v
/var/run/docker.sock:/var/run/docker.sock` on a container network, with no other option
(startup/containerself.py, startup/dropin.py, THREAT_MODEL.md "The container drop-in").

Every case runs the real image on a private daemon in a network namespace of its own (its own
iptables, so `-p` really publishes). Claims checked by effect:
- on a user-defined network, no port published: it starts with one warning line naming the
  container and its network; a client container on the network calling
  `tcp://dockerproxy:2375` (so Host `dockerproxy:2375`) lists the containers, a POST is refused,
  and a dotted Host name is still refused (the DNS-rebinding check stays for those);
- with a published port (`-p`, `-P`, even on 127.0.0.1) or `--network host`: it exits, the
  message naming what was found, DOCKGATE_INSECURE=1 and authentication.
Before this change the first case exited ("refusing to listen on tcp://0.0.0.0:2375") and the
client got 403 for its Host header.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dockgate.startup.containerself import container_id_from_mountinfo
from support.daemon import PrivateDaemon
from support.dropin import settle, start_tecnativa
from support.image import copy_image
from support.netns import NamespacedDaemon, namespaced_daemon
from support.swarm import single_node_swarm

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(600)]

WARNING = "accepts anyone without authentication"

# A client on the network: what a Tecnativa client does, over plain HTTP to SERVICE:2375.
CLIENT = """
import http.client, json, socket, sys, time
for _ in range(60):  # a Swarm service's name is in the network's DNS a moment after its task
    try:
        socket.getaddrinfo(sys.argv[1], 2375)
        break
    except OSError:
        time.sleep(0.5)
def call(method, path, host=None, body=None):
    conn = http.client.HTTPConnection(sys.argv[1], 2375, timeout=20)
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    return answer.status, json.loads(answer.read() or b"null")
print(json.dumps({
    "list": call("GET", "/v1.41/containers/json"),
    "create": call("POST", "/v1.41/containers/create", body=b'{"Image": "x"}'),
    "dotted": call("GET", "/v1.41/containers/json", host="rebind.example.com:2375"),
}))
"""


@dataclass
class Node:
    daemon: NamespacedDaemon
    image: str
    network: str


@pytest.fixture(scope="module")
def node(daemon: PrivateDaemon, dockgate_image: str) -> Iterator[Node]:
    with namespaced_daemon() as ns:
        image = copy_image(daemon, ns, dockgate_image)
        network = f"dgdrop-{uuid.uuid4().hex[:6]}"
        ns.docker("network", "create", network)
        yield Node(ns, image, network)


def _start(node: Node, name: str, *options: str) -> None:
    start_tecnativa(node.daemon, node.image, name, *options)


def _settle(node: Node, name: str, timeout: float = 60) -> tuple[str, str]:
    return settle(node.daemon, name, timeout)


def _remove(node: Node, name: str) -> None:
    node.daemon.docker("rm", "-f", name, check=False)


def test_starts_on_a_network_and_serves_clients_by_service_name(node: Node) -> None:
    """Fails on the old code: the container exited (no listener without --insecure), and once
    started with DOCKGATE_INSECURE=1 the client's Host `dockerproxy:2375` got 403."""
    _start(node, "dockerproxy", "--network", node.network)
    try:
        status, logs = _settle(node, "dockerproxy")
        assert status == "running", logs
        warnings = [line for line in logs.splitlines() if WARNING in line]
        assert len(warnings) == 1, logs
        assert "container dockerproxy" in warnings[0] and node.network in warnings[0]
        assert "CONTAINERS=1" in warnings[0]
        proc = node.daemon.docker(
            "run", "--rm", "--network", node.network, "--entrypoint", "python3",
            node.image, "-c", CLIENT, "dockerproxy",
            check=False, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
        answers = json.loads(proc.stdout)
        status_list, containers = answers["list"]
        assert status_list == 200, answers
        assert any("/dockerproxy" in c["Names"] for c in containers)
        assert answers["create"][0] == 403, answers
        status_dotted, body = answers["dotted"]
        assert status_dotted == 403 and "DNS-rebinding" in body["message"], answers
    finally:
        _remove(node, "dockerproxy")


@pytest.mark.parametrize(
    ("options", "found"),
    [
        (("-p", "2375"), "port 2375/tcp is published on 0.0.0.0:"),
        (("-p", "127.0.0.1:2375:2375"), "port 2375/tcp is published on 127.0.0.1:2375"),
        (("-P",), "all exposed ports are published (-P)"),
        (("--network", "host"), "network mode host"),
    ],
    ids=["published", "published-loopback", "publish-all", "network-host"],
)
def test_refused_when_reachable_from_outside(
    node: Node, options: tuple[str, ...], found: str
) -> None:
    """Exposed otherwise than on its networks: the container exits with what was found and the
    two ways out (DOCKGATE_INSECURE=1, authentication)."""
    name = f"dgdrop-{uuid.uuid4().hex[:6]}"
    network = () if "--network" in options else ("--network", node.network)
    _start(node, name, *network, *options)
    try:
        status, logs = _settle(node, name)
        assert status == "exited", logs
        errors = [line for line in logs.splitlines() if line.startswith("dockgate: error:")]
        assert len(errors) == 1, logs
        assert found in errors[0] and "DOCKGATE_INSECURE=1" in errors[0], errors[0]
        assert "--htpasswd" in errors[0]
        assert WARNING not in logs
    finally:
        _remove(node, name)


def test_mountinfo_of_a_real_container_names_it(node: Node) -> None:
    """The parser (containerself.container_id_from_mountinfo) on what the daemon really mounts."""
    name = f"dgdrop-{uuid.uuid4().hex[:6]}"
    proc = node.daemon.docker(
        "run", "--name", name, "--network", node.network, "--entrypoint", "cat",
        node.image, "/proc/self/mountinfo",
    )  # fmt: skip
    try:
        full_id = node.daemon.docker("inspect", "-f", "{{.Id}}", name).stdout.decode().strip()
    finally:
        _remove(node, name)
    assert container_id_from_mountinfo(proc.stdout.decode()) == full_id


def _task_logs(node: Node, service: str, until: str, timeout: float = 90) -> str:
    """The logs of a task container of `service` once they contain `until` (or at timeout)."""
    label = f"label=com.docker.swarm.service.name={service}"
    deadline = time.monotonic() + timeout
    logs = ""
    while time.monotonic() < deadline:
        for cid in node.daemon.docker("ps", "-aq", "--filter", label).stdout.decode().split():
            logs = node.daemon.docker("logs", cid, check=False).stderr.decode()
            if until in logs:
                return logs
        time.sleep(1)
    return logs


def test_swarm_service_by_its_name_and_refused_when_it_publishes(node: Node) -> None:
    """A Swarm task: reached by its service name on an overlay network; a service that
    publishes its port through the routing mesh (which the task's own container does not show)
    exits with the service port named."""
    mount = f"type=bind,src={node.daemon.socket_path},dst=/var/run/docker.sock"
    with single_node_swarm(node.daemon):
        overlay = f"dgdrop-ov-{uuid.uuid4().hex[:6]}"
        node.daemon.docker("network", "create", "-d", "overlay", "--attachable", overlay)
        try:
            # The service name answers with the task's own address (dnsrr): the virtual IP's
            # load balancing (IPVS) does not answer in this test's network namespace.
            for name, publish in (
                ("swarmproxy", ("--endpoint-mode", "dnsrr")),
                ("swarmpublished", ("-p", "2375")),
            ):
                node.daemon.docker(
                    "service", "create", "--detach", "--name", name, "--network", overlay,
                    "-e", "CONTAINERS=1", "--mount", mount, *publish, node.image,
                )  # fmt: skip
            logs = _task_logs(node, "swarmproxy", "dockgate: listening on")
            warnings = [line for line in logs.splitlines() if WARNING in line]
            assert len(warnings) == 1 and overlay in warnings[0], logs
            proc = node.daemon.docker(
                "run", "--rm", "--network", overlay, "--entrypoint", "python3",
                node.image, "-c", CLIENT, "swarmproxy",
                check=False, timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr.decode()
            answers = json.loads(proc.stdout)
            assert answers["list"][0] == 200 and answers["create"][0] == 403, answers
            refused = _task_logs(node, "swarmpublished", "dockgate: error:")
            assert "service port 2375/tcp is published on" in refused, refused
            assert "DOCKGATE_INSECURE=1" in refused and WARNING not in refused
        finally:
            node.daemon.docker("service", "rm", "swarmproxy", "swarmpublished", check=False)
            node.daemon.docker("network", "rm", overlay, check=False)


@pytest.mark.parametrize("publish", [False, True], ids=["unpublished", "published"])
def test_network_of_another_container_is_judged_as_that_container(
    node: Node, publish: bool
) -> None:
    """`--network container:X`: the daemon bind-mounts X's /etc/hostname, /etc/hosts and
    /etc/resolv.conf into the joining container (moby v20.10.24 daemon/container_operations.go
    initializeNetworking, container_operations_unix.go initializeNetworkingPaths: X's paths,
    X's hostname), so mountinfo names X and dockgate judges X, whose
    network namespace the listener is in: X's networks, X's published ports. It starts when X
    is reachable from its networks only (the warning names X), and is refused when X publishes
    a port (the listener is behind it). THREAT_MODEL.md said this mode was refused."""
    holder = f"dgholder-{uuid.uuid4().hex[:6]}"
    name = f"dgdrop-{uuid.uuid4().hex[:6]}"
    ports = ("-p", "2375") if publish else ()
    node.daemon.docker(
        "run", "-d", "--name", holder, "--network", node.network, *ports,
        "--entrypoint", "python3", node.image, "-c", "import time; time.sleep(600)",
    )  # fmt: skip
    try:
        _start(node, name, "--network", f"container:{holder}")
        status, logs = _settle(node, name)
        if publish:
            assert status == "exited", logs
            assert "port 2375/tcp is published on 0.0.0.0:" in logs, logs
            assert f"container {holder}" in logs, logs
        else:
            assert status == "running", logs
            warnings = [line for line in logs.splitlines() if WARNING in line]
            assert len(warnings) == 1 and f"container {holder}" in warnings[0], logs
            assert node.network in warnings[0]
    finally:
        _remove(node, name)
        _remove(node, holder)
