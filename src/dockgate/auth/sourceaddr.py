"""Client source addresses: allow/deny lists, and who the client is behind a trusted proxy.

A connection's source is the peer's IP address, or "unix" for a unix-socket client (whose only
protection is the socket's file mode; address lists never match it unless they name "unix").

Behind a load balancer every connection comes from the balancer. Its word about the real client
(`X-Forwarded-For`, or a PROXY protocol header) is taken only when the connection comes from an
address listed with `--trusted-proxy`; from anywhere else those headers are ignored, since
anybody can write them. With `--proxy-protocol` the trusted proxies are layer-4 balancers and
only their PROXY header counts: X-Forwarded-For is never read (policy/admission.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from dockgate.addresses import shown_address
from dockgate.http.errors import ClientProtocolError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNIX_SOURCE = "unix"


class AddressListError(ValueError):
    """An entry that is neither an IP address, a CIDR network, nor "unix"."""


@dataclass(frozen=True, slots=True)
class AddressList:
    networks: tuple[Network, ...] = ()
    unix: bool = False  # whether "unix" (unix-socket clients) is in the list

    def __bool__(self) -> bool:
        return bool(self.networks) or self.unix

    def __str__(self) -> str:
        return ", ".join([str(n) for n in self.networks] + ([UNIX_SOURCE] if self.unix else []))

    def contains(self, source: str) -> bool:
        if source == UNIX_SOURCE:
            return self.unix
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def __or__(self, other: AddressList) -> AddressList:
        return AddressList(self.networks + other.networks, self.unix or other.unix)


def parse_address_list(entries: Iterable[str]) -> AddressList:
    """`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`, `unix`; comma-separated entries too."""
    networks: list[Network] = []
    unix = False
    for entry in entries:
        for part in entry.split(","):
            item = part.strip()
            if not item:
                continue
            if item == UNIX_SOURCE:
                unix = True
                continue
            try:
                network = ipaddress.ip_network(item, strict=True)
            except ValueError as exc:
                if "@" in item:  # an address with user info (a password): not quoted
                    shown = shown_address(item)
                    raise AddressListError(f"{shown!r}: not an address or network") from None
                raise AddressListError(f"{item!r}: {exc}") from None
            networks.append(_unmapped(network))
    return AddressList(tuple(networks), unix)


def _unmapped(network: Network) -> Network:
    """`::ffff:10.0.0.0/104` is written for IPv4 clients, which are compared as IPv4."""
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@dataclass(frozen=True, slots=True)
class SourceRules:
    """Allow and deny lists: deny wins; an empty allow list allows every address.

    Globally (`unix_exempt`), unix-socket clients are judged by the lists only when a list
    names "unix": an allow list of networks does not shut out the local socket, which its file
    mode guards. In a binding, an allow list means "only from these": unix clients must be
    listed like any other.
    """

    allow: AddressList = field(default_factory=AddressList)
    deny: AddressList = field(default_factory=AddressList)
    unix_exempt: bool = True

    def __bool__(self) -> bool:
        return bool(self.allow) or bool(self.deny)

    def permits(self, source: str) -> bool:
        if self.deny.contains(source):
            return False
        if not self.allow:
            return True
        if source == UNIX_SOURCE and self.unix_exempt and not self.allow.unix:
            return True
        return self.allow.contains(source)

    def __or__(self, other: SourceRules) -> SourceRules:
        return SourceRules(
            self.allow | other.allow, self.deny | other.deny, self.unix_exempt and other.unix_exempt
        )


def forwarded_client(peer: str, forwarded_for: list[bytes], trusted: AddressList) -> str:
    """The client address that a chain of trusted proxies reports.

    `forwarded_for` holds the X-Forwarded-For field values in order. Reading from the right
    (the entry the nearest proxy added), trusted proxies are skipped; the first address that is
    not a trusted proxy is the client. Entries left of it were written by the client itself and
    are never believed. A malformed entry reached before the client is found is refused (400):
    the chain cannot be read, and guessing would let a client choose its own address.
    """
    if not forwarded_for or not trusted.contains(peer):
        return peer
    entries = [e.strip() for value in forwarded_for for e in value.split(b",")]
    client = peer
    for raw in reversed(entries):
        try:
            text = raw.decode("ascii")
            address = ipaddress.ip_address(_strip_port(text))
        except (UnicodeDecodeError, ValueError):
            raise ClientProtocolError("malformed X-Forwarded-For") from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        client = str(address)
        if not trusted.contains(client):
            return client
    return client


def _strip_port(entry: str) -> str:
    """Some proxies write `addr:port` or `[v6]:port`; the address is what counts."""
    if entry.startswith("["):
        return entry[1:].partition("]")[0]
    if entry.count(":") == 1:
        return entry.partition(":")[0]
    return entry
