"""Unit tests of listen/upstream address parsing (`dockgate.addresses`)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from dockgate.addresses import Address, AddressError, parse_address

# (text, expected Address) -- claim of the table: each address parses to exactly this.
VALID = [
    ("tcp://127.0.0.1:2375", Address("tcp", host="127.0.0.1", port=2375)),
    ("tcp://0.0.0.0:2376", Address("tcp", host="0.0.0.0", port=2376)),
    ("tcp://localhost:1", Address("tcp", host="localhost", port=1)),
    ("tcp://docker.example:65535", Address("tcp", host="docker.example", port=65535)),
    ("tcp://127.0.0.1", Address("tcp", host="127.0.0.1", port=2375)),
    ("tcp://127.0.0.1/", Address("tcp", host="127.0.0.1", port=2375)),
    ("tcp://127.0.0.1:2375/", Address("tcp", host="127.0.0.1", port=2375)),
    ("tcp://[::1]:2375", Address("tcp", host="::1", port=2375)),
    ("tcp://[::1]", Address("tcp", host="::1", port=2375)),
    ("tcp://[fe80::1%eth0]:80", Address("tcp", host="fe80::1%eth0", port=80)),
    ("tcp://[2001:db8::1]:8080", Address("tcp", host="2001:db8::1", port=8080)),
    ("http://127.0.0.1:2375", Address("tcp", host="127.0.0.1", port=2375)),
    ("unix:///var/run/docker.sock", Address("unix", path="/var/run/docker.sock")),
    ("unix:///tmp/dg sock/d.sock", Address("unix", path="/tmp/dg sock/d.sock")),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_parse_valid(text: str, expected: Address) -> None:
    """The address parses to these scheme, host, port and path."""
    assert parse_address(text) == expected


def test_default_port_is_configurable() -> None:
    """A TCP address without a port takes `default_port`."""
    assert parse_address("tcp://127.0.0.1", default_port=2376).port == 2376
    assert parse_address("tcp://[::1]", default_port=9).port == 9
    assert parse_address("tcp://127.0.0.1:80", default_port=2376).port == 80


# (address, str()) -- claim of the table: str() gives back a canonical, re-parseable address.
ROUND_TRIP = [
    ("tcp://127.0.0.1:2375", "tcp://127.0.0.1:2375"),
    ("tcp://[::1]", "tcp://[::1]:2375"),
    ("http://h:1", "tcp://h:1"),
    ("unix:///run/d.sock", "unix:///run/d.sock"),
]


@pytest.mark.parametrize(("text", "canonical"), ROUND_TRIP)
def test_str_round_trip(text: str, canonical: str) -> None:
    """str() of a parsed address is canonical and parses back to the same address."""
    address = parse_address(text)
    assert str(address) == canonical
    assert parse_address(str(address)) == address


def test_with_port() -> None:
    """with_port() changes the port only."""
    assert parse_address("tcp://[::1]:1").with_port(2) == Address("tcp", host="::1", port=2)


# (text) -- claim of the table: each address is refused with AddressError.
INVALID = [
    # missing or unknown scheme
    "127.0.0.1:2375",
    "localhost",
    "/var/run/docker.sock",
    "",
    "udp://127.0.0.1:2375",
    "https://127.0.0.1:2376",
    "TCP//127.0.0.1:2375",
    # unix path not absolute
    "unix://var/run/docker.sock",
    "unix://docker.sock",
    "unix://",
    # missing host
    "tcp://",
    "tcp://:2375",
    "tcp://[]:2375",
    # bad ports
    "tcp://127.0.0.1:65536",
    "tcp://127.0.0.1:99999999999",
    "tcp://127.0.0.1:-1",
    "tcp://127.0.0.1:abc",
    "tcp://127.0.0.1:23 75",
    "tcp://127.0.0.1:+80",
    "tcp://127.0.0.1:0x10",
    "tcp://127.0.0.1:2375/path",
    "tcp://[::1]:65536",
    "tcp://[::1]:x",
    # malformed IPv6
    "tcp://[::1",
    "tcp://[::1]2375",
    "tcp://[::1]x:2375",
]


@pytest.mark.parametrize("text", INVALID)
def test_parse_invalid(text: str) -> None:
    """The address is refused with AddressError."""
    with pytest.raises(AddressError):
        parse_address(text)


# Claim of the table: a port must be written in ASCII digits; other Unicode digits (which
# str.isdigit() accepts) are refused with AddressError rather than read or crashing int().
NON_ASCII_PORTS = [
    "tcp://127.0.0.1:\u0662\u0663\u0667\u0665",  # Arabic-Indic digits for 2375
    "tcp://127.0.0.1:\u00b2",  # superscript two
    "tcp://[::1]:\uff18\uff10",  # fullwidth 80
]


@pytest.mark.parametrize("text", NON_ASCII_PORTS)
def test_non_ascii_port_refused(text: str) -> None:
    """A port in non-ASCII digits is refused with AddressError."""
    with pytest.raises(AddressError):
        parse_address(text)


@pytest.mark.parametrize("text", ["tcp://::1", "tcp://::1:2375", "tcp://fe80::1:80"])
def test_unbracketed_ipv6_refused(text: str) -> None:
    """An IPv6 address without brackets is refused, not split at its last colon."""
    with pytest.raises(AddressError):
        parse_address(text)


# ----- is_loopback ----------------------------------------------------------------------------

# (text, loopback) -- claim of the table: only unix sockets and loopback IPs are loopback.
LOOPBACK = [
    ("tcp://127.0.0.1:2375", True),
    ("tcp://127.1.2.3:2375", True),
    ("tcp://[::1]:2375", True),
    ("tcp://localhost:2375", True),
    ("unix:///var/run/docker.sock", True),
    ("tcp://0.0.0.0:2375", False),
    ("tcp://[::]:2375", False),
    ("tcp://10.0.0.1:2375", False),
    ("tcp://192.0.2.1:2375", False),
    ("tcp://[2001:db8::1]:2375", False),
]


@pytest.mark.parametrize(("text", "loopback"), LOOPBACK)
def test_is_loopback(text: str, loopback: bool) -> None:
    """is_loopback() is True only for loopback addresses (0.0.0.0 is every interface)."""
    assert parse_address(text).is_loopback() is loopback


def _fake_getaddrinfo(results: dict[str, list[str]]) -> Any:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in results:
            raise socket.gaierror(socket.EAI_NONAME, "not found")
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port),
            )
            for ip in results[host]
        ]

    return getaddrinfo


# (name, addresses it resolves to, loopback) -- claim of the table: a name is loopback only when
# it resolves, and every address it resolves to is loopback.
RESOLVED = [
    ("only-loopback", ["127.0.0.1", "::1"], True),
    ("scoped-loopback", ["::1%lo"], True),
    ("mixed", ["127.0.0.1", "192.0.2.7"], False),
    ("public", ["192.0.2.7"], False),
    ("nothing", [], False),
    ("unresolvable", None, False),
]


@pytest.mark.parametrize(("name", "ips", "loopback"), RESOLVED)
def test_is_loopback_resolves_names(
    monkeypatch: pytest.MonkeyPatch, name: str, ips: list[str] | None, loopback: bool
) -> None:
    """A host name is loopback only if it resolves and all its addresses are loopback."""
    table = {} if ips is None else {name: ips}
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(table))
    assert parse_address(f"tcp://{name}:2375").is_loopback() is loopback
