"""Client source addresses (dockgate.auth.sourceaddr): address lists, allow/deny rules, and the
client a chain of trusted proxies reports in X-Forwarded-For.

Claims under test: entries are IPs, CIDRs, "unix" or comma lists of them, and anything else is an
`AddressListError` naming the entry; deny wins over allow, an empty allow list allows every
address, and unix-socket clients are judged only by lists that name "unix"; IPv4-mapped IPv6
peers (dual-stack sockets) are judged as the IPv4 address they carry; X-Forwarded-For is read
right to left, only from trusted peers, skipping trusted hops, never believing what the client
wrote itself, and a malformed entry met before the client is a 400.
"""

from __future__ import annotations

import ipaddress

import pytest

from dockgate.auth.sourceaddr import (
    UNIX_SOURCE,
    AddressList,
    AddressListError,
    SourceRules,
    forwarded_client,
    parse_address_list,
)
from dockgate.http.errors import ClientProtocolError


def rules(allow: list[str] | None = None, deny: list[str] | None = None) -> SourceRules:
    return SourceRules(parse_address_list(allow or []), parse_address_list(deny or []))


# ----- parse_address_list -----------------------------------------------------------------------


def test_single_addresses_become_host_networks() -> None:
    parsed = parse_address_list(["192.0.2.7", "2001:db8::1"])
    assert parsed.networks == (
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::1/128"),
    )
    assert parsed.unix is False


def test_cidrs_unix_and_comma_lists_with_blanks() -> None:
    parsed = parse_address_list([" 10.0.0.0/8 , unix,,", "2001:db8::/32", ""])
    assert parsed.networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert parsed.unix is True
    assert str(parsed) == "10.0.0.0/8, 2001:db8::/32, unix"


def test_empty_list_is_falsy_and_unix_alone_is_truthy() -> None:
    assert not parse_address_list([])
    assert not parse_address_list([" , "])
    assert str(parse_address_list([])) == ""
    only_unix = parse_address_list(["unix"])
    assert only_unix
    assert only_unix.networks == ()
    assert str(only_unix) == "unix"


def test_host_bits_set_is_an_error_naming_the_entry() -> None:
    with pytest.raises(AddressListError) as caught:
        parse_address_list(["10.0.0.0/8,10.0.0.1/8"])
    assert str(caught.value) == "'10.0.0.1/8': 10.0.0.1/8 has host bits set"


@pytest.mark.parametrize("entry", ["nope", "10.0.0.0/33", "UNIX", "unix:///run/x.sock", "*"])
def test_entries_that_are_not_addresses_are_errors(entry: str) -> None:
    with pytest.raises(AddressListError) as caught:
        parse_address_list([f"10.0.0.0/8, {entry}"])
    assert str(caught.value) == (
        f"{entry!r}: {entry!r} does not appear to be an IPv4 or IPv6 network"
    )


# ----- AddressList.contains ---------------------------------------------------------------------


def test_contains_ipv4_and_ipv6() -> None:
    listed = parse_address_list(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert listed.contains("10.255.0.1")
    assert listed.contains("192.0.2.7")
    assert not listed.contains("192.0.2.8")
    assert not listed.contains("11.0.0.1")
    assert listed.contains("2001:db8:1::5")
    assert not listed.contains("2001:db9::1")
    assert not listed.contains("not-an-address")
    assert not listed.contains("")


def test_ipv4_mapped_ipv6_peers_are_judged_as_ipv4() -> None:
    listed = parse_address_list(["10.0.0.0/8"])
    assert listed.contains("::ffff:10.1.2.3")
    assert listed.contains("::FFFF:10.1.2.3")
    assert not listed.contains("::ffff:11.1.2.3")


def test_unix_is_contained_only_when_listed() -> None:
    assert not parse_address_list(["0.0.0.0/0", "::/0"]).contains(UNIX_SOURCE)
    assert parse_address_list(["unix"]).contains(UNIX_SOURCE)
    # "unix" names only unix-socket clients, never an IP address.
    assert not parse_address_list(["unix"]).contains("127.0.0.1")


def test_union_of_lists() -> None:
    joined = parse_address_list(["10.0.0.0/8"]) | parse_address_list(["unix"])
    assert joined == AddressList((ipaddress.ip_network("10.0.0.0/8"),), True)
    assert joined.contains("10.0.0.1")
    assert joined.contains(UNIX_SOURCE)


def test_ipv4_mapped_entries_in_a_list_match_their_clients() -> None:
    # An operator who sees `::ffff:192.0.2.7` in the logs of a dual-stack listener and denies
    # it must get that client denied, whichever way the address arrives.
    denied = parse_address_list(["::ffff:192.0.2.7", "::ffff:10.0.0.0/104"])
    assert denied.contains("::ffff:192.0.2.7")
    assert denied.contains("192.0.2.7")
    assert denied.contains("10.1.2.3")


# ----- SourceRules --------------------------------------------------------------------------------


def test_no_lists_permit_everything_and_are_falsy() -> None:
    empty = SourceRules()
    assert not empty
    for source in ("192.0.2.1", "2001:db8::1", UNIX_SOURCE, "garbage"):
        assert empty.permits(source)


def test_deny_wins_over_allow() -> None:
    both = rules(allow=["10.0.0.0/8"], deny=["10.6.0.0/16"])
    assert both
    assert both.permits("10.5.0.1")
    assert not both.permits("10.6.0.1")
    assert not both.permits("::ffff:10.6.0.1")
    assert not both.permits("192.0.2.1")  # not in the allow list


def test_empty_allow_list_allows_all_but_the_denied() -> None:
    deny_only = rules(deny=["192.0.2.0/24"])
    assert deny_only
    assert deny_only.permits("198.51.100.1")
    assert deny_only.permits("2001:db8::1")
    assert not deny_only.permits("192.0.2.200")
    assert deny_only.permits(UNIX_SOURCE)


def test_allow_list_of_networks_does_not_shut_out_unix_clients() -> None:
    allow_net = rules(allow=["10.0.0.0/8"])
    assert allow_net.permits(UNIX_SOURCE)
    assert not allow_net.permits("192.0.2.1")


def test_allow_list_naming_unix_judges_unix_clients() -> None:
    only_unix = rules(allow=["unix"])
    assert only_unix.permits(UNIX_SOURCE)
    assert not only_unix.permits("127.0.0.1")
    assert not only_unix.permits("::1")
    unix_and_net = rules(allow=["unix", "10.0.0.0/8"])
    assert unix_and_net.permits(UNIX_SOURCE)
    assert unix_and_net.permits("10.0.0.1")
    assert not unix_and_net.permits("192.0.2.1")


def test_deny_list_naming_unix_refuses_unix_clients() -> None:
    assert not rules(deny=["unix"]).permits(UNIX_SOURCE)
    assert rules(deny=["unix"]).permits("192.0.2.1")
    assert not rules(allow=["unix"], deny=["unix"]).permits(UNIX_SOURCE)


def test_allow_list_refuses_unparseable_sources() -> None:
    assert not rules(allow=["0.0.0.0/0", "::/0"]).permits("garbage")


def test_union_of_rules_keeps_both_sides() -> None:
    joined = rules(allow=["10.0.0.0/8"]) | rules(allow=["192.0.2.0/24"], deny=["10.9.0.0/16"])
    assert joined.permits("10.1.0.1")
    assert joined.permits("192.0.2.9")
    assert not joined.permits("10.9.0.1")
    assert not joined.permits("198.51.100.1")


# ----- forwarded_client --------------------------------------------------------------------------

TRUSTED = parse_address_list(["10.0.0.0/24", "2001:db8:ffff::/48"])
BALANCER = "10.0.0.1"


def test_trusted_peer_names_the_client() -> None:
    assert forwarded_client(BALANCER, [b"203.0.113.9"], TRUSTED) == "203.0.113.9"


def test_untrusted_peer_is_its_own_client_whatever_it_writes() -> None:
    assert forwarded_client("198.51.100.4", [b"203.0.113.9"], TRUSTED) == "198.51.100.4"
    # Even a malformed header is ignored: nothing from an untrusted peer is read.
    assert forwarded_client("198.51.100.4", [b"not an address"], TRUSTED) == "198.51.100.4"
    assert forwarded_client(UNIX_SOURCE, [b"203.0.113.9"], TRUSTED) == UNIX_SOURCE


def test_no_header_means_the_peer() -> None:
    assert forwarded_client(BALANCER, [], TRUSTED) == BALANCER


def test_several_trusted_hops_are_skipped() -> None:
    chain = [b"203.0.113.9, 10.0.0.7, 10.0.0.8"]
    assert forwarded_client(BALANCER, chain, TRUSTED) == "203.0.113.9"


def test_entries_left_of_the_client_are_ignored() -> None:
    # The client wrote "1.2.3.4, 10.0.0.5" itself; the balancer appended the real address.
    spoofed = [b"1.2.3.4, 10.0.0.5, 198.51.100.77"]
    assert forwarded_client(BALANCER, spoofed, TRUSTED) == "198.51.100.77"
    # Garbage left of the client is never reached, so it is not an error either.
    assert forwarded_client(BALANCER, [b"garbage, 198.51.100.77"], TRUSTED) == "198.51.100.77"


def test_several_header_fields_are_one_chain_in_order() -> None:
    fields = [b"6.6.6.6", b"203.0.113.9", b"10.0.0.3"]
    assert forwarded_client(BALANCER, fields, TRUSTED) == "203.0.113.9"


def test_chain_of_only_trusted_hops_ends_at_the_leftmost() -> None:
    assert forwarded_client(BALANCER, [b"10.0.0.2, 10.0.0.3"], TRUSTED) == "10.0.0.2"


@pytest.mark.parametrize(
    ("entry", "client"),
    [
        (b"203.0.113.9:51234", "203.0.113.9"),
        (b"[2001:db8::9]:443", "2001:db8::9"),
        (b"2001:db8::9", "2001:db8::9"),
        (b"::ffff:203.0.113.9", "203.0.113.9"),
        (b"2001:DB8:0:0::9", "2001:db8::9"),
        (b"  203.0.113.9  ", "203.0.113.9"),
    ],
)
def test_entry_forms_are_normalised(entry: bytes, client: str) -> None:
    assert forwarded_client(BALANCER, [entry], TRUSTED) == client


def test_ipv4_mapped_peer_is_trusted_as_its_ipv4() -> None:
    assert forwarded_client("::ffff:10.0.0.1", [b"203.0.113.9"], TRUSTED) == "203.0.113.9"


def test_ipv6_trusted_hops() -> None:
    chain = [b"203.0.113.9, [2001:db8:ffff::2]:8080"]
    assert forwarded_client("2001:db8:ffff::1", chain, TRUSTED) == "203.0.113.9"


@pytest.mark.parametrize(
    "chain",
    [
        [b"garbage"],
        [b"203.0.113.9, garbage"],
        [b"203.0.113.9, "],  # an empty entry
        [b""],
        [b"unknown"],
        [b"203.0.113.9, 10.0.0.7, 999.1.1.1"],
        [b"203.0.113.9, \xff"],
        [b"203.0.113.9/32"],
        [b"10.0.0.0/8"],
    ],
)
def test_malformed_entry_before_the_client_is_refused(chain: list[bytes]) -> None:
    with pytest.raises(ClientProtocolError) as caught:
        forwarded_client(BALANCER, chain, TRUSTED)
    assert caught.value.message == "malformed X-Forwarded-For"
    assert caught.value.status == 400
