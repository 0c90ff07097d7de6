"""deploy/stack.yml on a three-manager swarm: three private daemons, each in a network namespace
of its own on one private LAN (support/netns.py), joined as managers. The gateway runs as a
global service on all three; requests go through each node's published port; then one node is
stopped, and the other two keep answering (three managers keep a raft quorum with one down).
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from support.daemon import PrivateDaemon
from support.image import image_id
from support.netns import NamespacedDaemon, namespaced_daemons
from support.remote import basic_header, remote_docker
from support.swarm import create_stack_secrets, deploy_stack, healthy_task

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(1200)]

STACK = "dgcluster"
SERVICE = f"{STACK}_gateway"
PORT = 2376
USER, PASSWORD = "ops", "cluster-test-password"


@dataclass
class Cluster:
    nodes: list[NamespacedDaemon]
    image: str
    work: pathlib.Path
    client_certs: pathlib.Path

    def service_names(self, node: NamespacedDaemon) -> list[str] | None:
        """`docker service ls` through ``node``'s published port, None if it does not answer."""
        proc = remote_docker(
            f"tcp://{node.netns.address}:{PORT}",
            self.work,
            *("service", "ls", "--format", "{{.Name}}"),
            headers={"Authorization": basic_header(USER, PASSWORD)},
            cert_path=self.client_certs,
            timeout=60,
        )
        return proc.stdout.split() if proc.returncode == 0 else None


def _until(probe: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(1)
    return False


@pytest.fixture(scope="module")
def cluster(
    daemon: PrivateDaemon, dockgate_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    saved = daemon.docker("save", dockgate_image, timeout=300).stdout
    with namespaced_daemons(3) as nodes:
        first = nodes[0]
        try:
            for node in nodes:
                node.docker("load", input=saved, timeout=300)
            image = image_id(first, dockgate_image)
            first.docker("swarm", "init", "--advertise-addr", first.netns.address, timeout=60)
            token = first.docker("swarm", "join-token", "-q", "manager").stdout.decode().strip()
            for node in nodes[1:]:
                node.docker(
                    *("swarm", "join", "--token", token, "--advertise-addr", node.netns.address),
                    f"{first.netns.address}:2377",
                    timeout=120,
                )
            # Every node's socket under one path that names the node: the stack's bind mount
            # is the same on all nodes, as /var/run/docker.sock would be on real hosts.
            sockets = work / "sockets"
            sockets.mkdir()
            for node in nodes:
                node_id = node.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.decode().strip()
                (sockets / f"{node_id}.sock").symlink_to(node.socket_path)
            addresses = [n.netns.address for n in nodes]
            client_certs = create_stack_secrets(first, work, addresses, {USER: PASSWORD})
            deploy_stack(
                first,
                "stack.yml",
                STACK,
                DOCKGATE_IMAGE=image,
                # Swarm expands the template per node when it creates the task's mount.
                DOCKER_SOCKET=f"{sockets}/{{{{.Node.ID}}}}.sock",
            )
            yield Cluster(nodes, image, work, client_certs)
        finally:
            running = [n for n in nodes if n.running()]
            if running:
                running[0].docker("stack", "rm", STACK, check=False)
            for node in reversed(running):
                node.docker("swarm", "leave", "--force", check=False, timeout=60)


def test_three_managers_answer_and_two_keep_answering(cluster: Cluster) -> None:
    nodes = cluster.nodes
    assert _until(lambda: all(healthy_task(n, SERVICE) for n in nodes), 240), [
        n.docker("service", "ps", SERVICE, check=False).stdout.decode() for n in nodes[:1]
    ]
    for node in nodes:
        assert SERVICE in (cluster.service_names(node) or []), node.netns.address
    roles = nodes[0].docker("node", "ls", "--format", "{{.ManagerStatus}}").stdout.split()
    assert sorted(r.decode() for r in roles) == ["Leader", "Reachable", "Reachable"]

    # The leader goes away (its daemon, its tasks, its published port).
    stopped, *alive = nodes
    leader = stopped.docker("node", "inspect", "self", "--format", "{{.ManagerStatus.Leader}}")
    assert leader.stdout.decode().strip() == "true"
    stopped.stop()
    for node in alive:
        assert _until(lambda n=node: SERVICE in (cluster.service_names(n) or []), 60), (
            node.netns.address
        )

    # The swarm noticed, and still has a leader to answer the Swarm APIs.
    def down_seen() -> bool:
        states = alive[0].docker("node", "ls", "--format", "{{.Status}}").stdout.split()
        return sorted(s.decode() for s in states) == ["Down", "Ready", "Ready"]

    assert _until(down_seen, 120)
    assert cluster.service_names(alive[1]) is not None
