"""Attack review of issue 13's container drop-in (startup/containerself.py, startup/dropin.py):
make the gateway believe it is reachable only from its container networks while something else
reaches it, unauthenticated, with the environment policy.

Every case runs the real image on a private daemon in a network namespace of its own (its own
iptables, as tests/deploy/test_dropin.py does), started the Tecnativa way (`-e CONTAINERS=1 -v
SOCKET:/var/run/docker.sock`, no DOCKGATE_INSECURE), and proves reachability by effect: a
process in ANOTHER network namespace (a machine on the LAN, not a container and not the
Docker host) lists the daemon's containers through the gateway.

Findings (pinned as strict xfails raising `Hole` only for the finding itself, a broken
precondition being an ordinary failure; fixed since, so they pass, and would fail on the old
code):
- a `bridge` network whose bridge is an existing host bridge with a LAN port
  (`-o com.docker.network.bridge.name=br0`, the usual way to put containers on the LAN without
  macvlan) passes the "bridge or overlay driver" condition: the gateway starts with its warning
  line and any machine on that LAN segment is root on the Docker host;
- a ULA (fd00::/8) IPv6 address on the container is not a "public IPv6 address", but on the
  20.10 daemon (no ip6tables unless --ip6tables; the bridge driver turns IPv6 forwarding on
  itself) a machine with a route to the network's IPv6 subnet reaches the unpublished port, and
  so does a container on ANOTHER IPv6 network of the same daemon; over IPv4 both are dropped
  (the controls), so this is not THREAT_MODEL's documented IPv4 FORWARD-policy caveat.

The daemon's namespace gets the FORWARD policy DROP that Docker sets when it turns forwarding
on itself, so nothing here relies on a host that forwards everything.

The fixes: containerself.network_problems refuses a bridge network that names its bridge
(`com.docker.network.bridge.name`) but the daemon's default `bridge` on docker0;
containerself.ipv6_problems refuses any IPv6 address but a link-local one when a listener
accepts IPv6 (dropin.accepts_ipv6).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.daemon import PrivateDaemon
from support.dropin import settle, start_tecnativa
from support.image import copy_image
from support.netns import NETNS_DIR, NamespacedDaemon, namespaced_daemon

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(600)]

WARNING = "accepts anyone without authentication"

# A client on the LAN: plain HTTP to ADDRESS:2375 (the Host is the address, an IP literal,
# which the DNS-rebinding check accepts like any client's).
LAN_CLIENT = """
import http.client, json, sys
host = sys.argv[1]
try:
    conn = http.client.HTTPConnection(host, 2375, timeout=5)
    conn.request("GET", "/v1.41/containers/json?all=1")
    answer = conn.getresponse()
    print(json.dumps({"status": answer.status, "body": json.loads(answer.read() or b"null")}))
except OSError as exc:
    print(json.dumps({"status": None, "error": str(exc)}))
"""


class Hole(AssertionError):
    """The finding itself (it made the strict xfails of the review fail as expected); a failed
    precondition is an ordinary failure."""


def hole(condition: bool, message: str) -> None:
    if not condition:
        raise Hole(message)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass
class Node:
    daemon: NamespacedDaemon
    image: str


@pytest.fixture(scope="module")
def node(daemon: PrivateDaemon, dockgate_image: str) -> Iterator[Node]:
    with namespaced_daemon() as ns:
        # The FORWARD policy Docker sets when it turns IPv4 forwarding on itself (a fresh
        # namespace may inherit forwarding from this machine, and then the daemon leaves the
        # policy as it is): THREAT_MODEL's IPv4 caveat (a FORWARD policy that accepts) is
        # closed, so what reaches the gateway here is not that.
        subprocess.run(
            ["nsenter", f"--net={NETNS_DIR / ns.netns.name}", "iptables", "-P", "FORWARD", "DROP"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        yield Node(ns, copy_image(daemon, ns, dockgate_image))


class LanMachine:
    """A network namespace of its own (a machine on the LAN), linked to the daemon's namespace
    by a veth pair: `inside` in the machine, `outside` in the daemon's namespace."""

    def __init__(self, node: Node) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"dglp-{tag}"
        self.outside = f"lp{tag}"
        self.daemon_ns = node.daemon.netns.name

    def __enter__(self) -> LanMachine:
        _ip("netns", "add", self.name)
        _ip("-n", self.daemon_ns, "link", "add", self.outside, "type", "veth",
            "peer", "name", "eth0", "netns", self.name)  # fmt: skip
        _ip("-n", self.name, "link", "set", "lo", "up")
        _ip("-n", self.name, "link", "set", "eth0", "up")
        _ip("-n", self.daemon_ns, "link", "set", self.outside, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "-n", self.daemon_ns, "link", "del", self.outside],
                       capture_output=True, check=False)  # fmt: skip
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["nsenter", f"--net={NETNS_DIR / self.name}", *args],
            capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip

    def get_containers(self, address: str) -> dict[str, object]:
        proc = self.run(sys.executable, "-c", LAN_CLIENT, address)
        assert proc.returncode == 0, proc.stderr.decode()
        answer: dict[str, object] = json.loads(proc.stdout)
        return answer


def _start(node: Node, name: str, *options: str) -> None:
    start_tecnativa(node.daemon, node.image, name, *options)


def _settle(node: Node, name: str, timeout: float = 60) -> tuple[str, str]:
    return settle(node.daemon, name, timeout)


def _inspect(node: Node, name: str) -> dict[str, object]:
    inspected: dict[str, object] = json.loads(node.daemon.docker("inspect", name).stdout)[0]
    return inspected


def test_bridge_network_on_an_existing_lan_bridge(node: Node) -> None:
    """`docker network create -o com.docker.network.bridge.name=brlan`, where `brlan` is a
    bridge the operator made with a LAN interface in it (the LAN here: another namespace's veth
    on that bridge): the driver is `bridge`, so containerself.network_problems says nothing,
    yet every machine on the segment reaches the container's address (moby
    libnetwork/drivers/bridge/bridge.go: an existing bridge is used as it is, ifaceCreatedByUser).
    Pinned by the attack review (a strict xfail on the old code); now the drop-in refuses to
    start (network_problems names the option)."""
    tag = uuid.uuid4().hex[:6]
    bridge, network, name = f"brl{tag}", f"dglan-{tag}", f"dgdrop-{tag}"
    daemon_ns = node.daemon.netns.name
    _ip("-n", daemon_ns, "link", "add", bridge, "type", "bridge")
    try:
        _ip("-n", daemon_ns, "link", "set", bridge, "up")
        with LanMachine(node) as lan:
            _ip("-n", daemon_ns, "link", "set", lan.outside, "master", bridge)
            _ip("-n", lan.name, "addr", "add", "10.77.0.50/24", "dev", "eth0")
            node.daemon.docker(
                "network", "create", "-o", f"com.docker.network.bridge.name={bridge}",
                "--subnet", "10.77.0.0/24", "--ip-range", "10.77.0.128/25", network,
            )  # fmt: skip
            try:
                _start(node, name, "--network", network)
                status, logs = _settle(node, name)
                settings = _inspect(node, name)["NetworkSettings"]
                assert isinstance(settings, dict)
                address = settings["Networks"][network]["IPAddress"]
                answer = lan.get_containers(address)
                refused = status == "exited" and "DOCKGATE_INSECURE=1" in logs
                hole(
                    refused or answer["status"] is None,
                    f"the gateway started ({[x for x in logs.splitlines() if WARNING in x]}) "
                    f"and a machine on the LAN got {answer['status']} with "
                    f"{len(answer.get('body') or [])} containers from {address}:2375",
                )
            finally:
                node.daemon.docker("rm", "-f", name, check=False)
                node.daemon.docker("network", "rm", network, check=False)
    finally:
        subprocess.run(["ip", "-n", daemon_ns, "link", "del", bridge],
                       capture_output=True, check=False)  # fmt: skip


def _ipv6_network(node: Node, network: str, tag: str) -> tuple[str, str]:
    """A dual-stack network: (its IPv6 ULA subnet, its IPv4 subnet)."""
    v6, v4 = f"fd77:{tag[:4]}::/64", f"10.{79 + int(tag[4:], 16) % 100}.{int(tag[:2], 16)}.0/24"
    node.daemon.docker("network", "create", "--ipv6", "--subnet", v6, "--subnet", v4, network)
    return v6, v4


DUAL_STACK = "DOCKGATE_LISTEN=tcp://0.0.0.0:2375,tcp://[::]:2375"


def _gateway(node: Node, name: str, network: str, *env: str) -> tuple[str, str, str]:
    """The drop-in on `network` with the variables `env`: (its logs, its IPv4 address, its IPv6
    address); it must have started."""
    _start(node, name, "--network", network, *(x for v in env for x in ("-e", v)))
    status, logs = _settle(node, name)
    assert status == "running", logs  # the precondition: it started
    endpoint = _inspect(node, name)["NetworkSettings"]["Networks"][network]  # type: ignore[index]
    v4, v6 = endpoint["IPAddress"], endpoint["GlobalIPv6Address"]
    assert v6.startswith("fd77:"), endpoint
    return logs, v4, v6


def _refused_on_ipv6(node: Node, name: str, network: str) -> None:
    """The fix: the drop-in listening on IPv4 and IPv6 (0.0.0.0 and `[::]`) without
    DOCKGATE_INSECURE does not start, and says why (the IPv6 address) and what to do."""
    _start(node, name, "--network", network, "-e", DUAL_STACK)
    status, logs = _settle(node, name)
    hole(
        status == "exited" and "gives it the IPv6 address fd77:" in logs
        and "DOCKGATE_LISTEN=tcp://0.0.0.0:2375" in logs,
        f"the drop-in on an IPv6 network listening on [::] was not refused ({status}): {logs}",
    )  # fmt: skip


def test_ula_ipv6_address_reached_by_a_routed_machine(node: Node) -> None:
    """Pinned by the attack review (a strict xfail on the old code, which refused only a
    *global* GlobalIPv6Address): an IPv6 network with a ULA subnet (`docker network create
    --ipv6 --subnet fd77:...::/64`) and a listener on `[::]`. ULA prefixes are routed inside
    sites like any other; the bridge driver turns IPv6 forwarding on itself (moby
    libnetwork/drivers/bridge setupIPv6Forwarding) and 20.10 writes no ip6tables rules unless
    --ip6tables (experimental). The control (DOCKGATE_INSECURE=1): a machine with a route to
    the network's subnets through the Docker host has its IPv4 connection dropped (the FORWARD
    policy DROP Docker sets when it turns forwarding on, so this is not THREAT_MODEL's IPv4
    caveat) and its IPv6 one lists the daemon's containers. Without it the drop-in now refuses
    to start (containerself.ipv6_problems); with the image's default IPv4-only listener it
    starts, and the routed machine reaches nothing (the warning line stays true)."""
    tag = uuid.uuid4().hex[:6]
    network, name = f"dgv6-{tag}", f"dgdrop-{tag}"
    daemon_ns = node.daemon.netns.name
    with LanMachine(node) as lan:
        _ip("-n", daemon_ns, "-6", "addr", "add", "fd99::1/64", "dev", lan.outside, "nodad")
        _ip("-n", lan.name, "-6", "addr", "add", "fd99::2/64", "dev", "eth0", "nodad")
        _ip("-n", daemon_ns, "addr", "add", "10.78.0.1/30", "dev", lan.outside)
        _ip("-n", lan.name, "addr", "add", "10.78.0.2/30", "dev", "eth0")
        v6_subnet, v4_subnet = _ipv6_network(node, network, tag)
        try:
            _ip("-n", lan.name, "-6", "route", "add", v6_subnet, "via", "fd99::1")
            _ip("-n", lan.name, "route", "add", v4_subnet, "via", "10.78.0.1")
            _, v4, v6 = _gateway(node, name + "-ctl", network, DUAL_STACK, "DOCKGATE_INSECURE=1")
            by_v4 = lan.get_containers(v4)
            assert by_v4["status"] is None, by_v4  # IPv4: the host's FORWARD policy drops it
            by_v6 = lan.get_containers(v6)
            assert by_v6["status"] == 200, by_v6  # IPv6: the attack works (the control)
            node.daemon.docker("rm", "-f", name + "-ctl")
            _refused_on_ipv6(node, name, network)
            node.daemon.docker("rm", "-f", name)
            logs, v4, v6 = _gateway(node, name, network)  # the image's tcp://0.0.0.0:2375
            assert WARNING in logs, logs
            answer = lan.get_containers(v6)
            hole(answer["status"] is None, f"IPv4-only, yet [{v6}]:2375 answered: {answer}")
        finally:
            node.daemon.docker("rm", "-f", name, name + "-ctl", check=False)
            node.daemon.docker("network", "rm", network, check=False)


def test_ula_ipv6_address_reached_from_another_network(node: Node) -> None:
    """Pinned by the attack review (a strict xfail on the old code): the drop-in on IPv6
    network A; a client container on IPv6 network B (not one of the gateway's networks, so not
    among "every container on those networks" of its warning line). The control
    (DOCKGATE_INSECURE=1): over IPv4 Docker's DOCKER-ISOLATION chains drop B -> A; over IPv6
    nothing does on 20.10 (no ip6tables), and the client lists the daemon's containers.
    Without it the drop-in now refuses to start."""
    tag, other = uuid.uuid4().hex[:6], uuid.uuid4().hex[:6]
    network, elsewhere, name = f"dgv6-{tag}", f"dgv6-{other}", f"dgdrop-{tag}"
    _ipv6_network(node, network, tag)
    try:
        _ipv6_network(node, elsewhere, other)
        _, v4, v6 = _gateway(node, name, network, DUAL_STACK, "DOCKGATE_INSECURE=1")

        def call(address: str) -> dict[str, object]:
            proc = node.daemon.docker(
                "run", "--rm", "--network", elsewhere, "--entrypoint", "python3",
                node.image, "-c", LAN_CLIENT, address, check=False, timeout=60,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr.decode()
            answer: dict[str, object] = json.loads(proc.stdout)
            return answer

        by_v4 = call(v4)
        assert by_v4["status"] is None, by_v4  # IPv4: Docker's isolation between networks
        by_v6 = call(v6)
        assert by_v6["status"] == 200, by_v6  # IPv6: the attack works (the control)
        node.daemon.docker("rm", "-f", name)
        _refused_on_ipv6(node, name, network)
    finally:
        node.daemon.docker("rm", "-f", name, check=False)
        node.daemon.docker("network", "rm", network, elsewhere, check=False)
