"""The address ranges a NetworkCreate body asks for (`IPAM.Config[]`), judged against the
policy's `network_subnets`.

A bridge network's subnet becomes a route on the host (libnetwork drivers/bridge: the bridge
gets the gateway address, and the kernel adds the subnet's connected route). A subnet over a
range the host otherwise reaches through its uplink (a LAN, the host's resolver, a registry, a
cloud's metadata range) sends the host's own traffic for it into the job's bridge, where a
container with that address (a static IPv4Address inside the subnet) answers it. The gateway,
IPRange and AuxiliaryAddresses are addresses inside the subnet; each is judged the same way.

Without an explicit subnet the daemon picks one from its default address pools, which the
operator configured (`default-address-pools`): that needs no permission. With one, every
address and range given must lie inside a range of `network_subnets` (default: none).

Text is read as Go's net.ParseCIDR / net.ParseIP would (libnetwork network.go IpamConf.Validate,
ipam/allocator.go); what Python would read differently is refused: zones (`%eth0`), netmask
prefixes (`/255.255.255.0`), and IPv4-mapped IPv6 forms (`::ffff:198.51.100.1`), which Go
stores as the IPv4 address itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from dockgate.body import gojson

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class SubnetError(ValueError):
    """A range or address that is refused: `status` 400 (unreadable) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_address(text: str) -> Address:
    """An IP address as Go's net.ParseIP reads it; ValueError for anything else, or for a form
    Go reads differently from Python (zones, IPv4-mapped IPv6)."""
    if not text.isascii() or "%" in text or text != text.strip():
        raise ValueError(f"{text!r} is not an IP address")
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(f"{text!r}: write IPv4 addresses in their IPv4 form")
    return address


def parse_network(text: str) -> Network:
    """`ADDRESS/PREFIX` as Go's net.ParseCIDR reads it (host bits are dropped, as it does)."""
    address_text, slash, prefix = text.partition("/")
    if not slash or not (prefix.isascii() and prefix.isdigit()):
        raise ValueError(f"{text!r} is not an address range (write ADDRESS/PREFIX)")
    address = parse_address(address_text)
    return ipaddress.ip_network(f"{address}/{int(prefix)}", strict=False)


# Bounds on what one NetworkCreate body makes the gateway parse and compare.
MAX_IPAM_CONFIGS = 16
MAX_IPAM_VALUES = 256


def ipam_problem(allowed: Sequence[Network], body: gojson.GoObject) -> str | None:
    """The first range or address of NetworkCreate's `IPAM.Config` outside `allowed`, as a
    sentence; None when there is none. Raises SubnetError(400) for what cannot be read."""
    for name, text in _ipam_values(body):
        try:
            network = parse_address_or_network(name, text)
        except ValueError as exc:
            raise SubnetError(400, f"IPAM.Config {name}: {exc}") from None
        if not any(_inside(network, range_) for range_ in allowed):
            return (
                f"IPAM.Config {name} {text} is outside the policy's network_subnets "
                "(leave the subnet out: the daemon picks one from its own address pools)"
            )
    return None


def parse_address_or_network(name: str, text: str) -> Network:
    """Subnet and IPRange are ranges; Gateway and the auxiliary addresses are addresses (a
    one-address range here)."""
    if name in ("Subnet", "IPRange"):
        return parse_network(text)
    return ipaddress.ip_network(parse_address(text))


def _inside(network: Network, range_: Network) -> bool:
    if isinstance(network, ipaddress.IPv4Network) and isinstance(range_, ipaddress.IPv4Network):
        return network.subnet_of(range_)
    if isinstance(network, ipaddress.IPv6Network) and isinstance(range_, ipaddress.IPv6Network):
        return network.subnet_of(range_)
    return False


def _ipam_values(body: gojson.GoObject) -> list[tuple[str, str]]:
    """(field name, text) of every non-empty Subnet, IPRange, Gateway and AuxiliaryAddresses
    value, as encoding/json decodes `IPAM *network.IPAM` (api/types/network/network.go)."""
    ipam = gojson.struct((body,), "IPAM", pointer=True)
    if not ipam:
        return []
    # Go decodes a second Config list into the first one's elements (golang/go#21092):
    # refused, as the field table does.
    if sum(value is not None for value in gojson.values(tuple(ipam), "Config")) > 1:
        raise SubnetError(400, "IPAM.Config is given more than once")
    configs = gojson.slice_(tuple(ipam), "Config")
    if configs is gojson.MISSING:
        return []
    if not isinstance(configs, list) or not all(isinstance(c, gojson.GoObject) for c in configs):
        raise SubnetError(400, "IPAM.Config must be a list of objects")
    if len(configs) > MAX_IPAM_CONFIGS:
        # A network has a subnet or two per address family; thousands of entries only make
        # the gateway parse and compare addresses on its event loop (review 3).
        raise SubnetError(400, f"IPAM.Config may have at most {MAX_IPAM_CONFIGS} entries")
    found: list[tuple[str, str]] = []
    for index, config in enumerate(configs):
        entry = (config,)
        for name in ("Subnet", "IPRange", "Gateway"):
            value = gojson.scalar(entry, name)
            if value is gojson.MISSING or value == "":
                continue
            if not isinstance(value, str):
                raise SubnetError(400, f"IPAM.Config[{index}].{name} must be a string")
            found.append((name, value))
        for value in gojson.values(entry, "AuxiliaryAddresses"):
            if value is not None and not isinstance(value, gojson.GoObject):
                raise SubnetError(400, "IPAM.Config[].AuxiliaryAddresses must be an object")
        for key, value in (gojson.mapping(entry, "AuxiliaryAddresses") or {}).items():
            if not isinstance(value, str):
                raise SubnetError(400, "IPAM.Config[].AuxiliaryAddresses values must be strings")
            found.append((f"AuxiliaryAddresses[{key}]", value))
        if len(found) > MAX_IPAM_VALUES:
            raise SubnetError(400, f"IPAM.Config may name at most {MAX_IPAM_VALUES} addresses")
    return found
