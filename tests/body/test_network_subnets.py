"""NetworkCreate's address ranges (IPAM.Config) against `network_subnets`, and the endpoint's
static addresses (body/subnets.py, guardrails._check_network, the field table).

Found by the second attack review (tests/body/test_attacks_ci_runner_2.py,
test_bridge_subnet_and_static_address_capture_the_hosts_traffic): Subnet, IPRange, Gateway and
AuxiliaryAddresses were inert, so a bridge network's subnet could take over a range the host
reaches through its uplink. Every test here that expects a refusal failed on that code (it
passed every body)."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from typing import Any

import pytest

from dockgate.body import subnets
from dockgate.body.guardrails import BodyRefused, Guardrails, check_request
from dockgate.policy.loader import PolicyError, parse_policy_text

LAB = Guardrails(
    network_subnets=(
        ipaddress.ip_network("10.231.0.0/16"),
        ipaddress.ip_network("fd00:dead::/48"),
    )
)


def judge(g: Guardrails, operation: str, body: Any) -> tuple[int, str] | None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    try:
        check_request(g, operation, "", raw)
    except BodyRefused as refusal:
        return refusal.status, refusal.reason
    return None


def network(*configs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"Name": "n", "IPAM": {"Config": list(configs)}, **extra}


def test_no_explicit_subnet_needs_no_permission() -> None:
    """The daemon picks from its own (the operator's) default address pools."""
    assert judge(Guardrails(), "NetworkCreate", {"Name": "n"}) is None
    assert judge(Guardrails(), "NetworkCreate", {"Name": "n", "IPAM": None}) is None
    assert judge(Guardrails(), "NetworkCreate", network()) is None
    assert judge(Guardrails(), "NetworkCreate", network({})) is None
    assert judge(Guardrails(), "NetworkCreate", network({"Subnet": "", "Gateway": ""})) is None
    assert (
        judge(Guardrails(), "NetworkCreate", {"Name": "n", "IPAM": {"Driver": "default"}}) is None
    )


@pytest.mark.parametrize(
    "config",
    [
        {"Subnet": "198.51.100.0/24"},
        {"Subnet": "10.231.0.0/24"},  # refused too: the default allows no explicit subnet
        {"IPRange": "10.231.0.0/25"},
        {"Gateway": "10.231.0.1"},
        {"AuxiliaryAddresses": {"router": "10.231.0.2"}},
        {"Subnet": "fd00:dead::/64"},
    ],
)
def test_by_default_explicit_ranges_are_refused(config: dict[str, Any]) -> None:
    status, reason = judge(Guardrails(), "NetworkCreate", network(config)) or (0, "")
    assert status == 403 and "network_subnets" in reason, reason


@pytest.mark.parametrize(
    "config",
    [
        {"Subnet": "10.231.0.0/24"},
        {"Subnet": "10.231.7.0/24", "IPRange": "10.231.7.128/25", "Gateway": "10.231.7.1"},
        {"Subnet": "10.231.0.0/16", "AuxiliaryAddresses": {"a": "10.231.9.9", "b": "10.231.0.2"}},
        {"Subnet": "10.231.0.5/24"},  # host bits dropped, as Go's ParseCIDR does
        {"Subnet": "fd00:dead:0:1::/64", "Gateway": "fd00:dead:0:1::1"},
        {"Subnet": "FD00:DEAD::/64"},
    ],
)
def test_ranges_inside_network_subnets_pass(config: dict[str, Any]) -> None:
    assert judge(LAB, "NetworkCreate", network(config)) is None


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"Subnet": "198.51.100.0/24"}, "Subnet 198.51.100.0/24"),
        ({"Subnet": "10.0.0.0/8"}, "Subnet 10.0.0.0/8"),  # wider than the allowed range
        ({"Subnet": "10.231.0.0/24", "Gateway": "10.232.0.1"}, "Gateway 10.232.0.1"),
        ({"Subnet": "10.231.0.0/24", "IPRange": "198.51.100.0/25"}, "IPRange 198.51.100.0/25"),
        (
            {"Subnet": "10.231.0.0/24", "AuxiliaryAddresses": {"gw": "192.0.2.1"}},
            "AuxiliaryAddresses[gw] 192.0.2.1",
        ),
        ({"Subnet": "fd00:beef::/64"}, "Subnet fd00:beef::/64"),
        ({"Subnet": "::/0"}, "Subnet ::/0"),
    ],
)
def test_ranges_outside_network_subnets_are_refused(config: dict[str, Any], field: str) -> None:
    status, reason = judge(LAB, "NetworkCreate", network(config)) or (0, "")
    assert status == 403 and f"IPAM.Config {field} is outside" in reason, reason


def test_every_config_entry_is_judged() -> None:
    body = network({"Subnet": "10.231.0.0/24"}, {"Subnet": "198.51.100.0/24"})
    assert judge(LAB, "NetworkCreate", body) is not None


def test_judged_as_go_decodes() -> None:
    """Case-folded keys, the last duplicate winning, merged IPAM objects, null leaving a
    string alone: the value the daemon uses is the one judged."""
    folded = '{"Name":"n","ipam":{"config":[{"subnet":"198.51.100.0/24"}]}}'
    assert judge(LAB, "NetworkCreate", folded) is not None
    duplicate = (
        '{"Name":"n","IPAM":{"Config":[{"Subnet":"10.231.0.0/24","SUBNET":"198.51.100.0/24"}]}}'
    )
    assert judge(LAB, "NetworkCreate", duplicate) is not None
    null_after = '{"Name":"n","IPAM":{"Config":[{"Subnet":"198.51.100.0/24","Subnet":null}]}}'
    assert judge(LAB, "NetworkCreate", null_after) is not None
    merged = '{"Name":"n","IPAM":{"Config":[{"Subnet":"198.51.100.0/24"}]},"IPAM":{"Driver":""}}'
    assert judge(LAB, "NetworkCreate", merged) is not None
    aux_merged = (
        '{"Name":"n","IPAM":{"Config":[{"Subnet":"10.231.0.0/24",'
        '"AuxiliaryAddresses":{"a":"10.231.0.2"},"auxiliaryaddresses":{"b":"192.0.2.1"}}]}}'
    )
    assert judge(LAB, "NetworkCreate", aux_merged) is not None
    # A second Config list merges into the first one's elements (golang/go#21092): refused.
    twice = '{"Name":"n","IPAM":{"Config":[{"Subnet":"10.231.0.0/24"}],"Config":[{}]}}'
    assert (judge(LAB, "NetworkCreate", twice) or (0,))[0] == 400


@pytest.mark.parametrize(
    "config",
    [
        {"Subnet": "10.231.0.0"},  # no prefix
        {"Subnet": "10.231.0.0/255.255.0.0"},  # Python's netmask form; Go refuses it
        {"Subnet": "10.231.0.0/33"},
        {"Subnet": "fe80::%eth0/64"},  # a zone: Go's ParseCIDR refuses it
        {"Subnet": "::ffff:10.231.0.0/120"},  # IPv4-mapped: Go stores it as IPv4
        {"Gateway": "::ffff:10.231.0.1"},
        {"Gateway": "10.231.0.1 "},
        {"Gateway": "10.231.000.1"},
        {"Subnet": 12},
        {"AuxiliaryAddresses": {"a": 1}},
        {"AuxiliaryAddresses": ["10.231.0.2"]},
    ],
)
def test_unreadable_ranges_are_refused(config: dict[str, Any]) -> None:
    status, _ = judge(LAB, "NetworkCreate", network(config)) or (0, "")
    assert status in (400, 403)


def test_trusted_drivers_are_judged_too() -> None:
    """A driver named in network_drivers takes any Options, not any subnet."""
    trusted = Guardrails(network_drivers=frozenset({"macvlan"}))
    body = network({"Subnet": "192.0.2.0/24"}, Driver="macvlan", Options={"parent": "eth0"})
    assert judge(trusted, "NetworkCreate", body) is not None


def test_endpoint_static_addresses() -> None:
    """IPv4Address/IPv6Address pass (the daemon keeps them inside the network's pool);
    LinkLocalIPs are refused (added to the interface unchecked)."""
    static = {"IPAMConfig": {"IPv4Address": "10.231.0.7", "IPv6Address": "fd00:dead::7"}}
    create = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"n": static}}}
    assert judge(Guardrails(), "ContainerCreate", create) is None
    assert (
        judge(Guardrails(), "NetworkConnect", {"Container": "c", "EndpointConfig": static}) is None
    )
    link_local = {"IPAMConfig": {"LinkLocalIPs": ["169.254.9.9"]}}
    create = {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"n": link_local}}}
    assert (judge(LAB, "ContainerCreate", create) or (0,))[0] == 403
    connect = {"Container": "c", "EndpointConfig": link_local}
    assert (judge(LAB, "NetworkConnect", connect) or (0,))[0] == 403
    empty = {"IPAMConfig": {"LinkLocalIPs": []}}
    assert judge(LAB, "NetworkConnect", {"Container": "c", "EndpointConfig": empty}) is None


def policy_guardrails(guardrails_yaml: str) -> Guardrails | None:
    text = "policies:\n  ci:\n    rules:\n      - allow: {sections: ['*']}\n    guardrails:\n"
    text += textwrap.indent(textwrap.dedent(guardrails_yaml).strip("\n"), "      ") + "\n"
    return parse_policy_text(text, "p.yaml").policies["ci"].guardrails


def test_the_loader_reads_network_subnets() -> None:
    assert policy_guardrails("network_subnets: [10.231.0.0/16, 'fd00:dead::/48']") == LAB
    assert policy_guardrails("privileged: false") == Guardrails()
    assert policy_guardrails("network_subnets: [10.231.0.9/16]") == Guardrails(
        network_subnets=(ipaddress.ip_network("10.231.0.0/16"),)
    )
    for bad in ("10.231.0.0", "10.231.0.0/40", "nonsense", "::ffff:10.0.0.0/104"):
        with pytest.raises(PolicyError, match="network_subnets"):
            policy_guardrails(f"network_subnets: ['{bad}']")


def test_parse_network_reads_as_go() -> None:
    assert subnets.parse_network("10.231.0.5/24") == ipaddress.ip_network("10.231.0.0/24")
    assert subnets.parse_network("10.231.0.0/024") == ipaddress.ip_network("10.231.0.0/24")
    for bad in ("10.231.0.0/+24", "10.231.0.0/ 24", "10.231.0.0/-1", "/24", "10.231.0.0/"):
        with pytest.raises(ValueError):
            subnets.parse_network(bad)
