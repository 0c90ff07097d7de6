"""Unit tests of the strict PROXY protocol parser (`dockgate.http.proxyproto`).

Every valid header is parsed whole, with an HTTP request after it that must stay untouched, and
fed byte by byte: every proper prefix must ask for more bytes. Every malformed header must raise
ProxyHeaderError for the rule it breaks, and must never be taken for a header at any prefix.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from dockgate.http.proxyproto import (
    MAX_HEADER_BYTES,
    ProxyHeader,
    ProxyHeaderError,
    parse_proxy_header,
)

# What follows the header on the wire; it looks like a header of both versions in parts, so a
# parser that read too far would misparse it.
HTTP = (
    b"GET /v1.43/containers/json HTTP/1.1\r\nHost: docker\r\n\r\nPROXY TCP4 \r\n\r\n\x00\r\nQUIT\n"
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
V1_UNKNOWN_LONGEST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)


def v2(ver_cmd: int, family: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """A v2 header; `length` overrides the length field (default: the payload's length)."""
    declared = len(payload) if length is None else length
    return SIG + bytes([ver_cmd, family]) + struct.pack("!H", declared) + payload


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A v2 address block for TCP over IPv4 or IPv6 (both addresses of the same family)."""
    return (
        ipaddress.ip_address(src).packed
        + ipaddress.ip_address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# An ALPN TLV, an authority TLV holding bytes that look like HTTP, and NOOP padding.
TLVS = tlv(0x01, b"h2") + tlv(0x02, b"GET / HTTP/1.1\r\n") + tlv(0x04, b"\x00" * 5)
UNIX_PATHS = b"/run/haproxy.sock".ljust(108, b"\x00") + b"/run/dockgate.sock".ljust(108, b"\x00")

Endpoint = tuple[str, int] | None

# (header, expected source, expected destination)
VALID: dict[str, tuple[bytes, Endpoint, Endpoint]] = {
    "v1-tcp4": (
        b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n",
        ("192.168.0.1", 56324),
        ("10.0.0.2", 443),
    ),
    "v1-tcp4-extremes": (
        b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
        ("0.0.0.0", 0),
        ("255.255.255.255", 65535),
    ),
    "v1-tcp4-octets": (
        b"PROXY TCP4 100.20.3.249 199.250.0.10 10 2375\r\n",
        ("100.20.3.249", 10),
        ("199.250.0.10", 2375),
    ),
    "v1-tcp6": (
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2376\r\n",
        ("2001:db8::1", 1),
        ("2001:db8::2", 2376),
    ),
    "v1-tcp6-canonicalised": (
        b"PROXY TCP6 2001:DB8:0:0:0:0:0:0001 0:0:0:0:0:0:0:1 65535 80\r\n",
        ("2001:db8::1", 65535),
        ("::1", 80),
    ),
    "v1-tcp6-longest": (
        b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n",
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535),
    ),
    "v1-tcp6-ipv4-mapped": (
        b"PROXY TCP6 ::ffff:10.0.0.1 ::ffff:a00:2 4000 443\r\n",
        ("10.0.0.1", 4000),
        ("10.0.0.2", 443),
    ),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", None, None),
    "v1-unknown-with-addresses": (
        b"PROXY UNKNOWN 192.168.0.1 10.0.0.2 56324 443\r\n",
        None,
        None,
    ),
    "v1-unknown-longest": (V1_UNKNOWN_LONGEST, None, None),
    "v1-unknown-anything": (b"PROXY UNKNOWN  \x00\xff junk\t \r\n", None, None),
    "v2-local-unspec": (v2(0x20, 0x00), None, None),
    "v2-local-tcp4": (v2(0x20, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2)), None, None),
    "v2-local-tlvs": (v2(0x20, 0x00, TLVS), None, None),
    "v2-proxy-tcp4": (
        v2(0x21, 0x11, inet("192.168.0.1", "10.0.0.2", 56324, 443)),
        ("192.168.0.1", 56324),
        ("10.0.0.2", 443),
    ),
    "v2-proxy-tcp4-tlvs": (
        v2(0x21, 0x11, inet("203.0.113.7", "10.0.0.2", 0, 65535) + TLVS),
        ("203.0.113.7", 0),
        ("10.0.0.2", 65535),
    ),
    "v2-proxy-tcp6": (
        v2(0x21, 0x21, inet("2001:db8::1", "2001:db8::2", 40000, 2376)),
        ("2001:db8::1", 40000),
        ("2001:db8::2", 2376),
    ),
    "v2-proxy-tcp6-tlvs": (
        v2(0x21, 0x21, inet("2001:db8::1", "2001:db8::2", 40000, 2376) + TLVS),
        ("2001:db8::1", 40000),
        ("2001:db8::2", 2376),
    ),
    "v2-proxy-tcp6-ipv4-mapped": (
        v2(0x21, 0x21, inet("::ffff:10.0.0.1", "::ffff:10.0.0.2", 1234, 443)),
        ("10.0.0.1", 1234),
        ("10.0.0.2", 443),
    ),
    "v2-proxy-unspec": (v2(0x21, 0x00), None, None),
    "v2-proxy-unspec-tlvs": (v2(0x21, 0x00, TLVS), None, None),
    "v2-proxy-unix": (v2(0x21, 0x31, UNIX_PATHS), None, None),
    "v2-proxy-unix-tlvs": (v2(0x21, 0x31, UNIX_PATHS + TLVS), None, None),
    "v2-largest-accepted": (
        v2(0x21, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2) + b"\x00" * (4096 - 12)),
        ("10.0.0.1", 1),
        ("10.0.0.2", 2),
    ),
}


@pytest.mark.parametrize(("header", "source", "destination"), VALID.values(), ids=VALID.keys())
def test_valid_header_is_parsed_and_request_untouched(
    header: bytes, source: Endpoint, destination: Endpoint
) -> None:
    data = header + HTTP
    parsed = parse_proxy_header(data)
    assert parsed == ProxyHeader(source, destination, consumed=len(header))
    assert parsed is not None
    assert data[parsed.consumed :] == HTTP


@pytest.mark.parametrize(("header", "source", "destination"), VALID.values(), ids=VALID.keys())
def test_valid_header_without_trailing_bytes(
    header: bytes, source: Endpoint, destination: Endpoint
) -> None:
    assert parse_proxy_header(header) == ProxyHeader(source, destination, len(header))


@pytest.mark.parametrize("header", [case[0] for case in VALID.values()], ids=VALID.keys())
def test_every_prefix_of_a_valid_header_needs_more(header: bytes) -> None:
    for end in range(len(header)):
        assert parse_proxy_header(header[:end]) is None, f"prefix of {end} bytes"


@pytest.mark.parametrize(("header", "source", "destination"), VALID.values(), ids=VALID.keys())
def test_bytewise_feeding_completes_on_the_last_header_byte(
    header: bytes, source: Endpoint, destination: Endpoint
) -> None:
    # The way a caller uses the parser: append what the socket gave, parse again.
    buffer = b""
    result = None
    for byte in header + HTTP:
        buffer += bytes([byte])
        result = parse_proxy_header(buffer)
        if result is not None:
            break
    assert result == ProxyHeader(source, destination, consumed=len(header))
    assert len(buffer) == len(header)


def test_header_sizes() -> None:
    assert MAX_HEADER_BYTES == 16 + 4096
    assert len(V1_UNKNOWN_LONGEST) == 107
    assert len(VALID["v2-largest-accepted"][0]) == MAX_HEADER_BYTES


def test_v1_line_of_exactly_107_bytes_is_accepted() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert len(line) == 107
    assert parse_proxy_header(line + HTTP) == ProxyHeader(None, None, consumed=107)


def test_v2_header_followed_by_another_v2_header() -> None:
    # The second header belongs to the byte stream after the first; it must not be read.
    first = v2(0x21, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2))
    second = v2(0x21, 0x11, inet("10.9.9.9", "10.0.0.2", 3, 4))
    assert parse_proxy_header(first + second) == ProxyHeader(
        ("10.0.0.1", 1), ("10.0.0.2", 2), consumed=28
    )


@pytest.mark.parametrize(
    "prefix",
    [b"", b"P", b"PROXY", b"PROXY ", b"PROXY UNK", b"PROXY TCP4 1", b"\r", SIG[:11], SIG],
)
def test_short_prefixes_need_more(prefix: bytes) -> None:
    assert parse_proxy_header(prefix) is None


# (bytes, fragment of the error message): each breaks exactly one rule.
MALFORMED: dict[str, tuple[bytes, str]] = {
    # Neither signature.
    "http-request": (b"GET / HTTP/1.1\r\nHost: d\r\n\r\n", "signature"),
    "tls-hello": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "signature"),
    "v1-lowercase": (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature"),
    "v1-no-space": (b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature"),
    "v1-tab-after-proxy": (b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "signature"),
    "v2-last-signature-byte": (b"\r\n\r\n\x00\r\nQUIT\x0b\x21\x11\x00\x00", "signature"),
    "v2-first-signature-bytes": (b"\r\n\r\nGET / HTTP/1.1\r\n", "signature"),
    # v1 protocol.
    "v1-empty-protocol": (b"PROXY \r\n", "protocol"),
    "v1-udp4": (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    "v1-tcp5": (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    "v1-lowercase-protocol": (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    "v1-unknown-glued": (b"PROXY UNKNOWNX\r\n", "protocol"),
    "v1-double-space-before-protocol": (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "protocol"),
    # v1 field layout.
    "v1-double-space-between-addresses": (
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "canonical IPv4",  # the empty field between the spaces is not an address
    ),
    "v1-double-space-between-ports": (
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n",
        "port",  # the empty field between the spaces is not a port
    ),
    "v1-trailing-space": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "four single-spaced fields"),
    "v1-missing-port": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "four single-spaced fields"),
    "v1-protocol-only": (b"PROXY TCP4\r\n", "four single-spaced fields"),
    "v1-tab-separator": (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "address"),
    # v1 addresses.
    "v1-ipv4-leading-zero": (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "canonical IPv4"),
    "v1-ipv4-leading-zeros-last": (b"PROXY TCP4 1.2.3.4 5.6.7.008 1 2\r\n", "canonical IPv4"),
    "v1-ipv4-octet-256": (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "canonical IPv4"),
    "v1-ipv4-three-octets": (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "canonical IPv4"),
    "v1-ipv4-five-octets": (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "canonical IPv4"),
    "v1-ipv4-hostname": (b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n", "canonical IPv4"),
    "v1-ipv4-fullwidth-digit": (
        "PROXY TCP4 \uff11.2.3.4 5.6.7.8 1 2\r\n".encode(),
        "canonical IPv4",
    ),
    "v1-ipv6-under-tcp4": (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "canonical IPv4"),
    "v1-ipv4-under-tcp6": (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "IPv6"),
    "v1-ipv4-under-tcp6-destination": (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "IPv6"),
    "v1-ipv6-nine-groups": (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", "IPv6"),
    "v1-ipv6-triple-colon": (b"PROXY TCP6 ::: ::1 1 2\r\n", "IPv6"),
    "v1-ipv6-scope-id": (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6"),
    "v1-ipv6-brackets": (b"PROXY TCP6 [::1] ::1 1 2\r\n", "IPv6"),
    # v1 ports.
    "v1-port-65536": (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "port"),
    "v1-port-99999": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "port"),
    "v1-port-leading-zero": (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "port"),
    "v1-port-double-zero": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "port"),
    "v1-port-sign": (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "port"),
    "v1-port-negative": (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "port"),
    "v1-port-six-digits": (b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", "port"),
    "v1-port-hex": (b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n", "port"),
    # v1 line ends.
    "v1-bare-lf": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n", "bare LF"),
    "v1-unknown-bare-lf": (b"PROXY UNKNOWN\nGET / HTTP/1.1\r\n", "bare LF"),
    "v1-cr-without-lf": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET / HTTP/1.1\r\n", "stray CR"),
    "v1-unknown-cr-inside": (b"PROXY UNKNOWN a\rb\r\n", "stray CR"),
    "v1-crcrlf": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "stray CR"),
    "v1-no-crlf-in-107": (b"PROXY UNKNOWN " + b"x" * 93 + b"\r\n", "107"),
    "v1-crlf-at-108": (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", "107"),
    "v1-tcp6-longest-mapped-too-long": (
        b"PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 "
        b"0000:0000:0000:0000:0000:ffff:255.255.255.254 65535 65535\r\n",
        "107",
    ),
    # v2 version and command.
    "v2-version-1": (v2(0x11, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "version"),
    "v2-version-3": (v2(0x31, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "version"),
    "v2-version-0": (v2(0x01, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "version"),
    "v2-command-2": (v2(0x22, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "command"),
    "v2-command-f": (v2(0x2F, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "command"),
    # v2 family and transport.
    "v2-udp4": (v2(0x21, 0x12, inet("1.2.3.4", "5.6.7.8", 1, 2)), "family"),
    "v2-udp6": (v2(0x21, 0x22, inet("::1", "::2", 1, 2)), "family"),
    "v2-unix-dgram": (v2(0x21, 0x32, UNIX_PATHS), "family"),
    "v2-local-udp4": (v2(0x20, 0x12, inet("1.2.3.4", "5.6.7.8", 1, 2)), "family"),
    "v2-inet-unspec-transport": (v2(0x21, 0x10, inet("1.2.3.4", "5.6.7.8", 1, 2)), "family"),
    "v2-unspec-stream": (v2(0x21, 0x01), "family"),
    "v2-family-4": (v2(0x21, 0x41, inet("1.2.3.4", "5.6.7.8", 1, 2)), "family"),
    "v2-family-ff": (v2(0x21, 0xFF), "family"),
    # v2 length.
    "v2-tcp4-length-11": (
        v2(0x21, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)[:11]),
        "too short",
    ),
    "v2-tcp4-length-0": (v2(0x21, 0x11), "too short"),
    "v2-tcp6-length-35": (v2(0x21, 0x21, inet("::1", "::2", 1, 2)[:35]), "too short"),
    "v2-tcp6-with-tcp4-block": (v2(0x21, 0x21, inet("1.2.3.4", "5.6.7.8", 1, 2)), "too short"),
    "v2-unix-length-215": (v2(0x21, 0x31, UNIX_PATHS[:215]), "too short"),
    "v2-local-tcp4-length-0": (v2(0x20, 0x11), "too short"),
    "v2-length-4097": (
        v2(0x21, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2) + b"\x00" * (4097 - 12)),
        "bound",
    ),
    "v2-length-ffff": (v2(0x21, 0x00, length=0xFFFF), "bound"),
}


@pytest.mark.parametrize(("data", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_header_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(data + HTTP)


@pytest.mark.parametrize(("data", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_header_is_never_accepted_at_any_prefix(data: bytes, reason: str) -> None:
    # Fed byte by byte, each step either waits for more or refuses; once refused, it stays
    # refused (an error is never followed by a header for a longer prefix).
    refused = False
    for end in range(len(data) + 1):
        try:
            result = parse_proxy_header(data[:end])
        except ProxyHeaderError as error:
            refused = True
            assert reason in str(error), f"prefix of {end} bytes: {error}"
        else:
            assert not refused, f"prefix of {end} bytes accepted after a refusal"
            assert result is None, f"prefix of {end} bytes parsed as a header"
    assert refused


# (bytes that already cannot start a valid header, fragment of the error message)
EARLY: dict[str, tuple[bytes, str]] = {
    "first-byte": (b"G", "signature"),
    "first-byte-nul": (b"\x00", "signature"),
    "v1-sixth-byte": (b"PROXYX", "signature"),
    "v2-fifth-byte": (b"\r\n\r\n\r", "signature"),
    "v1-protocol": (b"PROXY X", "protocol"),
    "v1-protocol-overlong": (b"PROXY TCP44", "protocol"),
    "v1-unknown-glued": (b"PROXY UNKNOWNX", "protocol"),
    "v1-ipv4-leading-zero": (b"PROXY TCP4 01", "address"),
    "v1-ipv4-octet-256": (b"PROXY TCP4 256", "address"),
    "v1-ipv4-fifth-octet": (b"PROXY TCP4 1.2.3.4.", "address"),
    "v1-ipv6-letter": (b"PROXY TCP6 ::g", "address"),
    "v1-double-space": (b"PROXY TCP4 1.2.3.4  ", "canonical IPv4"),
    "v1-port-65536": (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536", "port"),
    "v1-port-leading-zero": (b"PROXY TCP4 1.2.3.4 5.6.7.8 00", "port"),
    "v1-sixth-field": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "four single-spaced fields"),
    "v1-cr-too-early": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r", "four single-spaced fields"),
    "v1-byte-after-cr": (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "stray CR"),
    "v1-106-bytes-no-cr": (b"PROXY UNKNOWN " + b"x" * 92, "107"),
    "v2-version": (SIG + b"\x11", "version"),
    "v2-command": (SIG + b"\x22", "command"),
    "v2-udp": (SIG + b"\x21\x12", "family"),
    "v2-length-short": (SIG + b"\x21\x11\x00\x0b", "too short"),
    "v2-length-bound": (SIG + b"\x21\x11\x10\x01", "bound"),
}


@pytest.mark.parametrize(("data", "reason"), EARLY.values(), ids=EARLY.keys())
def test_refused_as_soon_as_the_bytes_cannot_be_a_header(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse_proxy_header(data)


def test_v1_cr_at_byte_106_waits_for_the_lf() -> None:
    line = b"PROXY UNKNOWN " + b"x" * 91 + b"\r"
    assert len(line) == 106
    assert parse_proxy_header(line) is None
    with pytest.raises(ProxyHeaderError, match="107"):
        parse_proxy_header(line + b"x")
    assert parse_proxy_header(line + b"\n") == ProxyHeader(None, None, consumed=107)


def test_error_message_does_not_echo_input() -> None:
    with pytest.raises(ProxyHeaderError) as caught:
        parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 secret-token\r\n")
    message = str(caught.value)
    assert message == "PROXY v1 port is not a decimal 0-65535 without leading zeros"
    assert "secret" not in message


def test_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="signature"):
        parse_proxy_header(b"GET")
