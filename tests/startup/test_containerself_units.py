"""startup/containerself.py and startup/dropin.py without a daemon: which container
/proc/self/mountinfo names, what in inspect answers makes a container reachable from outside its
networks, which names other containers reach it by, and that the rule is for the environment policy
only.

The daemon tests (test_dropin.py) run the same code on real answers; these pin the edges a
daemon test cannot set up cheaply (Swarm services, macvlan, routed bridges, existing bridges, IPv6
addresses).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import pytest

from dockgate.addresses import parse_address
from dockgate.policy.rules import PolicySet
from dockgate.policy.tecnativa import policy_from_environment
from dockgate.startup import dropin
from dockgate.startup.containerself import (
    CannotTell,
    ContainerSelf,
    container_id_from_mountinfo,
    container_problems,
    inspect_self,
    ipv6_problems,
    loopback_publish_filtered,
    network_problems,
    reachable_names,
    service_problems,
)

BRIDGE_NAME = "com.docker.network.bridge.name"
DEFAULT = {"com.docker.network.bridge.default_bridge": "true"}
ID = "0db4ce43a80c" + "5" * 52
OTHER = "687bb3390712" + "7" * 52


def _mountinfo(*files: tuple[str, str]) -> str:
    """mountinfo(5) lines: the overlay root, then `(root, mount point)` bind mounts."""
    lines = ["380 300 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/x,upperdir=/y"]
    for number, (root, point) in enumerate(files):
        lines.append(f"{400 + number} 380 259:1 {root} {point} rw,relatime - ext4 /dev/vda1 rw")
    return "\n".join(lines) + "\n"


def _own(container_id: str, data_root: str = "/var/lib/docker") -> list[tuple[str, str]]:
    return [
        (f"{data_root}/containers/{container_id}/resolv.conf", "/etc/resolv.conf"),
        (f"{data_root}/containers/{container_id}/hostname", "/etc/hostname"),
        (f"{data_root}/containers/{container_id}/hosts", "/etc/hosts"),
    ]


def test_mountinfo_names_the_container() -> None:
    assert container_id_from_mountinfo(_mountinfo(*_own(ID))) == ID
    # A data root on a file system of its own: the root field is relative to it.
    assert container_id_from_mountinfo(_mountinfo(*_own(ID, ""))) == ID


def test_mountinfo_of_a_host_names_none() -> None:
    assert container_id_from_mountinfo(_mountinfo()) is None
    assert container_id_from_mountinfo("") is None


def test_another_containers_directory_mounted_elsewhere_is_not_taken() -> None:
    """Only the daemon's three files count: a volume from another container's directory
    mounted at /data says nothing about which container this is."""
    mounted = [(f"/var/lib/docker/containers/{OTHER}/hostname", "/data/hostname")]
    assert container_id_from_mountinfo(_mountinfo(*_own(ID), *mounted)) == ID
    assert container_id_from_mountinfo(_mountinfo(*mounted)) is None


def test_mountinfo_that_disagrees_names_none() -> None:
    """Two IDs, or one of the three files from elsewhere: no guess."""
    mixed = [*_own(ID)[:2], (f"/var/lib/docker/containers/{OTHER}/hosts", "/etc/hosts")]
    assert container_id_from_mountinfo(_mountinfo(*mixed)) is None
    foreign = [*_own(ID)[:2], ("/srv/hosts", "/etc/hosts")]
    assert container_id_from_mountinfo(_mountinfo(*foreign)) is None


def _inspected(**changes: Any) -> dict[str, Any]:
    """A container's inspect answer (API 1.41 shape): on network `proxy`, nothing published."""
    answer: dict[str, Any] = {
        "Id": ID,
        "Name": "/dockerproxy",
        "Config": {"Hostname": "0db4ce43a80c", "Labels": {}},
        "HostConfig": {"NetworkMode": "proxy", "PortBindings": {}, "PublishAllPorts": False},
        "NetworkSettings": {
            "Ports": {"2375/tcp": None},
            "Networks": {
                "proxy": {
                    "NetworkID": "n" * 64,
                    "Aliases": ["dockerproxy", "0db4ce43a80c"],
                    "GlobalIPv6Address": "",
                }
            },
        },
    }
    for path, value in changes.items():
        node = answer
        *parents, last = path.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return answer


def test_a_container_on_its_network_only_has_no_problem() -> None:
    assert container_problems(_inspected(), "0db4ce43a80c") == []


@pytest.mark.parametrize(
    ("changes", "found"),
    [
        ({"HostConfig__NetworkMode": "host"}, "network mode host"),
        ({"HostConfig__NetworkMode": "container:" + OTHER}, "another container's network"),
        ({"HostConfig__PublishAllPorts": True}, "all exposed ports are published (-P)"),
        (
            {"HostConfig__PortBindings": {"2375/tcp": [{"HostIp": "", "HostPort": "2375"}]}},
            "port 2375/tcp is published on 0.0.0.0:2375",
        ),
        (
            {"NetworkSettings__Ports": {"2375/tcp": [{"HostIp": "::", "HostPort": "49153"}]}},
            "port 2375/tcp is published on [::]:49153",
        ),
        ({"Config__Hostname": "elsewhere"}, "is not this process's"),
    ],
)
def test_what_makes_a_container_reachable(changes: dict[str, Any], found: str) -> None:
    problems = container_problems(_inspected(**changes), "0db4ce43a80c")
    assert any(found in p for p in problems), problems


def test_a_bound_port_is_said_once_with_the_port_the_daemon_chose() -> None:
    """`-p 2375`: PortBindings asks for any host port, NetworkSettings.Ports has the one bound."""
    problems = container_problems(
        _inspected(
            HostConfig__PortBindings={"2375/tcp": [{"HostIp": "", "HostPort": ""}]},
            NetworkSettings__Ports={"2375/tcp": [{"HostIp": "0.0.0.0", "HostPort": "32768"}]},
        ),
        "0db4ce43a80c",
    )
    assert problems == ["port 2375/tcp is published on 0.0.0.0:32768"]


@pytest.mark.parametrize(
    ("address", "counts"),
    [
        ("2001:4860::5", True),  # global
        ("fd00:1::5", True),  # ULA: the old code let it through (is_global is False)
        ("fc00::5", True),
        ("2001:db8::5", True),  # documentation prefix, routed all the same
        ("not an address", True),  # not known to be harmless
        ("fe80::42:acff:fe11:2", False),  # link-local: the link only, as IPv4 on the bridge
        ("fe80::2%eth0", False),
        ("", False),  # no IPv6 on this network
    ],
)
def test_ipv6_addresses_but_link_local_count(address: str, counts: bool) -> None:
    """The attack review's ULA finding (tests/deploy/test_attacks_dropin.py): any IPv6
    address but a link-local one is reached by routed machines and other IPv6 networks on
    20.10 (no ip6tables). Not in container_problems: it counts for an IPv6 listener only."""
    inspected = _inspected(NetworkSettings__Networks__proxy__GlobalIPv6Address=address)
    assert container_problems(inspected, "0db4ce43a80c") == []
    found = ipv6_problems(inspected)
    if counts:
        assert len(found) == 1 and f"IPv6 address {address}" in found[0], found
        assert "network proxy" in found[0] and "DOCKGATE_LISTEN=tcp://0.0.0.0:2375" in found[0]
    else:
        assert found == []


@pytest.mark.parametrize(
    ("listen", "ipv6"),
    [
        ("tcp://0.0.0.0:2375", False),  # the image's default
        ("tcp://10.0.0.5:2375", False),
        ("tcp://[::]:2375", True),  # Linux binds it dual-stack
        ("tcp://[fd00::5]:2375", True),
        ("tcp://dockgate:2375", True),  # a name may resolve to IPv6
        ("unix:///run/dockgate.sock", False),
    ],
)
def test_ipv6_problems_count_for_a_listener_that_accepts_ipv6(listen: str, ipv6: bool) -> None:
    found = ContainerSelf(ID, "p", ("proxy",), frozenset(), (), ("network proxy gives it ...",))
    listeners = [parse_address("tcp://0.0.0.0:2375"), parse_address(listen)]
    assert dropin.accepts_ipv6(parse_address(listen)) == ipv6
    assert dropin.reachable_from_outside(found, listeners) == (
        ["network proxy gives it ..."] if ipv6 else []
    )
    both = ContainerSelf(ID, "p", ("proxy",), frozenset(), ("published",), ("v6",))
    assert dropin.reachable_from_outside(both, listeners) == ["published"] + (["v6"] * ipv6)


@pytest.mark.parametrize(
    ("network", "found"),
    [
        ({"Driver": "bridge", "Options": {}}, None),
        ({"Driver": "overlay", "Options": {}}, None),
        ({"Driver": "null"}, None),
        ({"Driver": "macvlan", "Options": {"parent": "eth0"}}, "the macvlan driver"),
        ({"Driver": "ipvlan"}, "the ipvlan driver"),
        ({"Driver": "weave"}, "the weave driver"),
        (
            {
                "Driver": "bridge",
                "Options": {"com.docker.network.bridge.gateway_mode_ipv4": "routed"},
            },
            "gateway_mode_ipv4=routed",
        ),
        (
            {
                "Driver": "bridge",
                "Options": {"com.docker.network.bridge.gateway_mode_ipv6": "nat-unprotected"},
            },
            "gateway_mode_ipv6=nat-unprotected",
        ),
        # The attack review's bridge finding: a bridge the operator made (a LAN port on it).
        (
            {"Name": "lan", "Driver": "bridge", "Options": {BRIDGE_NAME: "br0"}},
            "com.docker.network.bridge.name=br0 (the daemon uses an existing bridge",
        ),
        # default_bridge=true may be set by anyone (fromLabels parses it): not the default
        # network unless it is named `bridge` too.
        (
            {"Name": "lan", "Driver": "bridge", "Options": {BRIDGE_NAME: "docker0", **DEFAULT}},
            "com.docker.network.bridge.name=docker0",
        ),
        # dockerd -b br0: the default network on a bridge the operator made.
        (
            {"Name": "bridge", "Driver": "bridge", "Options": {BRIDGE_NAME: "br0", **DEFAULT}},
            "com.docker.network.bridge.name=br0",
        ),
        (
            {"Name": "bridge", "Driver": "bridge", "Options": {BRIDGE_NAME: "docker0", **DEFAULT}},
            None,
        ),
        # The other options of the bridge driver: harmless (the table in startup/containerself.py).
        (
            {
                "Name": "proxy",
                "Driver": "bridge",
                "Options": {
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                    "com.docker.network.bridge.enable_icc": "false",
                    "com.docker.network.bridge.inhibit_ipv4": "true",
                    "com.docker.network.bridge.host_binding_ipv4": "10.0.0.5",
                    "com.docker.network.bridge.trusted_host_interfaces": "eth0",
                    "com.docker.network.bridge.gateway_mode_ipv4": "nat",
                    "com.docker.network.bridge.gateway_mode_ipv6": "isolated",
                    "com.docker.network.driver.mtu": "1400",
                    "com.docker.network.container_iface_prefix": "lan",
                },
            },
            None,
        ),
    ],
)
def test_networks_that_let_the_lan_in(network: dict[str, Any], found: str | None) -> None:
    problems = network_problems("proxy", network)
    if found is None:
        assert problems == []
    else:
        assert len(problems) == 1 and found in problems[0] and "network proxy" in problems[0]


def test_a_swarm_service_that_publishes_is_found() -> None:
    """The routing mesh publishes on every node: the task's own container shows no port."""
    published = {
        "Spec": {"EndpointSpec": {"Mode": "vip"}},
        "Endpoint": {
            "Ports": [
                {
                    "Protocol": "tcp",
                    "TargetPort": 2375,
                    "PublishedPort": 2375,
                    "PublishMode": "ingress",
                }
            ]
        },
    }
    assert service_problems(published) == [
        "service port 2375/tcp is published on 2375 (ingress mode)"
    ]
    assert service_problems({"Spec": {}, "Endpoint": {"Spec": {}}}) == []


def test_names_other_containers_reach_it_by() -> None:
    inspected = _inspected(
        Name="/proj_socket-proxy_1",
        Config={
            "Hostname": "x",
            "Labels": {
                "com.docker.compose.service": "socket-proxy",
                "com.docker.swarm.service.name": "stack_dockerproxy",
                "com.docker.stack.namespace": "stack",
            },
        },
    )
    inspected["NetworkSettings"]["Networks"]["proxy"]["DNSNames"] = ["Proxy-Alias", "a.b.c"]
    assert reachable_names(inspected) == {
        "proj_socket-proxy_1",
        "dockerproxy",
        "0db4ce43a80c",
        "socket-proxy",
        "stack_dockerproxy",
        "proxy-alias",
    }  # a dotted DNS name is not taken: the Host check stays for those


def test_the_rule_is_for_the_environment_policy_only() -> None:
    """With a policy file no daemon is asked (the upstream here answers nothing)."""
    policies = PolicySet(policies={}, default="x", source="/etc/dockgate/policy.yaml")
    verdict = dropin.judge(parse_address("unix:///nonexistent/docker.sock"), policies)
    assert verdict.found is None and verdict.reason is not None
    assert "policy file" in verdict.reason


def test_the_warning_names_the_container_networks_and_variables() -> None:
    found = ContainerSelf(ID, "dockerproxy", ("front", "proxy"), frozenset(), ())
    line = dropin.warning_line("tcp://0.0.0.0:2375", found, {"CONTAINERS": "1", "POST": "0"})
    assert line.count("\n") == 0 and line.startswith("dockgate: warning: tcp://0.0.0.0:2375")
    assert "container dockerproxy (0db4ce43a80c) on network(s) front, proxy" in line
    assert "what CONTAINERS=1 POST=0 allow" in line
    assert policy_from_environment({"CONTAINERS": "1"}).source == "environment"


def _serve_answers(answers: dict[str, tuple[int, object]], path: str) -> Any:
    """A daemon on a unix socket that answers each path from `answers` (404 otherwise)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ")[1].decode()
        status, body = answers.get(target, (404, {"message": f"no such object: {target}"}))
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.0 {status} X\r\nContent-Type: application/json\r\n\r\n".encode() + data
        )
        await writer.drain()
        writer.close()

    return asyncio.start_unix_server(handle, path)


def _ask_daemon(answers: dict[str, tuple[int, object]], tmp_path: pathlib.Path) -> object:
    path = str(tmp_path / "d.sock")

    async def go() -> object:
        server = await _serve_answers(answers, path)
        async with server:
            try:
                return await inspect_self(parse_address(f"unix://{path}"), ID, "0db4ce43a80c")
            except CannotTell as exc:
                return str(exc)

    return asyncio.run(go())


NETWORK = ("/networks/" + "n" * 64, (200, {"Name": "proxy", "Driver": "bridge", "Options": {}}))
VERSION = ("/version", (200, {"Version": "20.10.24", "ApiVersion": "1.41"}))


def test_inspect_self_on_a_daemon_that_answers(tmp_path: pathlib.Path) -> None:
    found = _ask_daemon(
        {
            f"/containers/{ID}/json": (200, _inspected()),
            NETWORK[0]: NETWORK[1],
            VERSION[0]: VERSION[1],
        },
        tmp_path,
    )
    assert isinstance(found, ContainerSelf), found
    assert found.problems == () and found.networks == ("proxy",) and "dockerproxy" in found.names


def test_inspect_self_reads_a_config_from_network_with_its_config(tmp_path: pathlib.Path) -> None:
    """`docker network create --config-from lancfg`: the options are the config-only
    network's (libnetwork network.go applyConfigurationTo), which the bridge-name rule must see
    (on the old code no bridge name was looked at at all), and the IPv6 address is said apart."""
    network = {"Name": "proxy", "Driver": "bridge", "Options": {}, "ConfigFrom": {"Network": "c"}}
    config = {"Name": "c", "Driver": "null", "Options": {BRIDGE_NAME: "br0"}, "ConfigOnly": True}
    found = _ask_daemon(
        {
            f"/containers/{ID}/json": (
                200,
                _inspected(NetworkSettings__Networks__proxy__GlobalIPv6Address="fd00::5"),
            ),
            NETWORK[0]: (200, network),
            "/networks/c": (200, config),
            VERSION[0]: VERSION[1],
        },
        tmp_path,
    )
    assert isinstance(found, ContainerSelf), found
    assert len(found.problems) == 1 and f"{BRIDGE_NAME}=br0" in found.problems[0]
    assert len(found.ipv6_problems) == 1 and "fd00::5" in found.ipv6_problems[0]


def test_inspect_self_when_the_daemon_does_not_know_this_container(tmp_path: pathlib.Path) -> None:
    """A socket of another daemon mounted: it answers 404 (or another container's answer)."""
    said = _ask_daemon({NETWORK[0]: NETWORK[1]}, tmp_path)
    assert isinstance(said, str) and said.startswith("could not ask the daemon about container")
    said = _ask_daemon({f"/containers/{ID}/json": (200, _inspected(Id=OTHER))}, tmp_path)
    assert isinstance(said, str) and "does not know container 0db4ce43a80c" in said


def test_inspect_self_of_a_swarm_task_on_a_worker(tmp_path: pathlib.Path) -> None:
    """A worker cannot tell whether the service publishes: refused, with the daemon's words."""
    task = _inspected(
        Config={"Hostname": "0db4ce43a80c", "Labels": {"com.docker.swarm.service.id": "s1"}}
    )
    answers = {
        f"/containers/{ID}/json": (200, task),
        NETWORK[0]: NETWORK[1],
        VERSION[0]: VERSION[1],
        "/services/s1": (503, {"message": "This node is not a swarm manager."}),
    }
    said = _ask_daemon(answers, tmp_path)
    assert said == "could not ask the daemon about its service: This node is not a swarm manager."


LOOPBACK_PUBLISH = {
    "HostConfig__PortBindings": {"2375/tcp": [{"HostIp": "127.0.0.1", "HostPort": "2375"}]},
    "NetworkSettings__Ports": {"2375/tcp": [{"HostIp": "127.0.0.1", "HostPort": "2375"}]},
}


def test_a_loopback_publish_counts_unless_the_daemon_filters_it() -> None:
    """Tecnativa's own `-p 127.0.0.1:2375:2375`: from Docker 28.0 (API 1.48) the daemon drops
    what other machines send to a loopback-published port, so only the host's processes reach
    it; before, the LAN did (moby#45610), and the refusal says so. 0.0.0.0 counts either way."""
    inspected = _inspected(**LOOPBACK_PUBLISH)
    before = container_problems(inspected, "0db4ce43a80c")
    assert before == [
        "port 2375/tcp is published on 127.0.0.1:2375 (before Docker 28.0, which this daemon "
        "is, the LAN reaches a port published on loopback: moby#45610)"
    ]
    assert container_problems(inspected, "0db4ce43a80c", loopback_filtered=True) == []
    everywhere = _inspected(
        NetworkSettings__Ports={"2375/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2375"}]}
    )
    assert container_problems(everywhere, "0db4ce43a80c", loopback_filtered=True) != []


@pytest.mark.parametrize(
    ("api", "filtered"),
    [("1.41", False), ("1.47", False), ("1.48", True), ("1.52", True), ("", False), ("x", False)],
)
def test_which_daemons_filter_loopback_publishes(api: str, filtered: bool) -> None:
    assert loopback_publish_filtered({"ApiVersion": api}) is filtered


def test_inspect_self_asks_the_version_for_a_loopback_publish(tmp_path: pathlib.Path) -> None:
    answers = {
        f"/containers/{ID}/json": (200, _inspected(**LOOPBACK_PUBLISH)),
        NETWORK[0]: NETWORK[1],
        VERSION[0]: VERSION[1],
    }
    old = _ask_daemon(answers, tmp_path)
    assert isinstance(old, ContainerSelf) and "moby#45610" in old.problems[0]
    answers["/version"] = (200, {"Version": "28.0.0", "ApiVersion": "1.48"})
    new = _ask_daemon(answers, tmp_path)
    assert isinstance(new, ContainerSelf) and new.problems == ()
