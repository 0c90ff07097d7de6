"""Strict, sans-IO parser for the HAProxy PROXY protocol, versions 1 (text) and 2 (binary).

A load balancer in front of the gateway prepends one PROXY header to each connection to say who
the real client is. The gateway uses that address for its access log and its policy, so a header
the gateway reads differently from the proxy that wrote it would let a client choose the address
it is judged by. The parser therefore accepts only the exact forms of the specification
(https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt) and refuses everything else instead
of guessing: no extra spaces, no leading zeros, no address of the wrong family, no bare LF, no
unknown command, family or transport, no header longer than a small bound.

It does no I/O: the caller passes what it has read so far and gets back either a header (with the
exact number of bytes it took, so the HTTP request that follows stays untouched), None when more
bytes are needed, or a ProxyHeaderError as soon as the bytes cannot become a valid header.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["MAX_HEADER_BYTES", "ProxyHeader", "ProxyHeaderError", "parse_proxy_header"]


class ProxyHeaderError(ValueError):
    """Bytes that are not a valid PROXY protocol header.

    str() says what is wrong; it never echoes input bytes, so it is safe to log.
    """


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header: the endpoints the proxy reported and how many bytes the header took."""

    # (ip text in canonical ipaddress form, port); None for v1 UNKNOWN, v2 LOCAL, v2 AF_UNSPEC and
    # v2 AF_UNIX, where the caller keeps the endpoints of the connection itself.
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    # The HTTP request starts right after this many bytes.
    consumed: int


# --- Version 1 -----------------------------------------------------------------------------------

_V1_PREFIX = b"PROXY "
# The specification's worst case ("PROXY UNKNOWN" with two full IPv6 addresses and ports),
# CRLF included; a receiver may refuse anything longer.
_V1_MAX_BYTES = 107
_CRLF = b"\r\n"

# A canonical IPv4 octet: 0-255 without leading zeros ("010" could be read as octal elsewhere).
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_V4_FULL = re.compile(rb"(?:" + _OCTET + rb"\.){3}" + _OCTET)
# Every prefix of a canonical dotted quad, and nothing else: complete octets, then a partial one
# (a prefix of a canonical octet is itself a canonical octet, or empty).
_V4_PREFIX = re.compile(rb"(?:" + _OCTET + rb"\.){0,3}" + _OCTET + rb"?")
# The characters of IPv6 text, embedded IPv4 included; no "%" so no scope id. The longest form
# ipaddress accepts is six 4-digit groups and a dotted quad: 45 characters.
_V6_CHARS = re.compile(rb"[0-9A-Fa-f:.]{0,45}")
# A port: decimal, no leading zeros except "0" itself; the range is checked as an integer. A
# prefix of a valid port is a valid port, so the same pattern checks partial ports.
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")

# Shared by the whole-line and partial-line checks, so both report a broken rule alike.
_PROTOCOL_ERROR = "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"
_FIELDS_ERROR = "PROXY v1 line does not have exactly four single-spaced fields"
_LENGTH_ERROR = "PROXY v1 line has no CRLF within 107 bytes"
_V4_ERROR = "PROXY v1 TCP4 address is not a canonical IPv4 address"
_V6_ERROR = "PROXY v1 TCP6 address is not an IPv6 address"

_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
# proto, source address, destination address, source port, destination port.
_V1_TCP_FIELDS = 5


def _parse_v1(data: bytes) -> ProxyHeader | None:
    """Parse a v1 line; `data` starts with the full "PROXY " prefix."""
    window = data[:_V1_MAX_BYTES]
    end = window.find(b"\n")
    if end < 0:
        _check_v1_incomplete(window)
        return None
    if end == 0 or window[end - 1] != 0x0D:
        raise ProxyHeaderError("PROXY v1 line ends with a bare LF")
    source, destination = _parse_v1_line(window[: end - 1])
    return ProxyHeader(source, destination, consumed=end + 1)


def _check_v1_incomplete(window: bytes) -> None:
    """Raise unless `window`, which holds no LF yet, can still become a valid v1 line."""
    if len(window) >= _V1_MAX_BYTES:
        raise ProxyHeaderError(_LENGTH_ERROR)
    if window.endswith(b"\r"):
        # Only LF may follow a CR, and it ends the line: what precedes must already be whole.
        _parse_v1_line(window[:-1])
    elif len(window) == _V1_MAX_BYTES - 1:
        # The 107th byte could only be LF, which needs a CR here.
        raise ProxyHeaderError(_LENGTH_ERROR)
    else:
        _check_v1_partial_line(window)


def _parse_v1_line(line: bytes) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """Parse a whole v1 line without its CRLF; return (source, destination)."""
    _refuse_line_breaks(line)
    fields = line[len(_V1_PREFIX) :].split(b" ")
    protocol = fields[0]
    if protocol == b"UNKNOWN":
        # The specification says to ignore whatever follows UNKNOWN up to the CRLF.
        return None, None
    if protocol not in _V1_PROTOCOLS:
        raise ProxyHeaderError(_PROTOCOL_ERROR)
    _check_v1_complete_fields(protocol, fields[1:])
    if len(fields) != _V1_TCP_FIELDS:
        raise ProxyHeaderError(_FIELDS_ERROR)
    _, src, dst, sport, dport = fields
    source = (_v1_address(protocol, src), _v1_port(sport))
    destination = (_v1_address(protocol, dst), _v1_port(dport))
    return source, destination


def _check_v1_partial_line(line: bytes) -> None:
    """Raise unless `line` (no CR, no LF, shorter than the bound) is a prefix of a valid line.

    Fields followed by a space are complete and are checked fully; the last one may still grow,
    so it is checked as a prefix. A partial IPv6 address is only checked for its characters and
    length; the full check comes with the space or CRLF that completes it.
    """
    _refuse_line_breaks(line)
    fields = line[len(_V1_PREFIX) :].split(b" ")
    protocol, last = fields[0], len(fields) - 1
    if last == 0:
        if not any(known.startswith(protocol) for known in _V1_PROTOCOLS):
            raise ProxyHeaderError(_PROTOCOL_ERROR)
        return
    if protocol == b"UNKNOWN":
        return
    if protocol not in _V1_PROTOCOLS:
        raise ProxyHeaderError(_PROTOCOL_ERROR)
    _check_v1_complete_fields(protocol, fields[1:last])
    _check_v1_partial_field(protocol, last, fields[last])


def _check_v1_complete_fields(protocol: bytes, fields: list[bytes]) -> None:
    """Check the complete fields after the protocol, left to right.

    Whole and partial lines are checked in the same order, so a line gets the same error however
    its bytes arrive: the first bad field, then a field too many.
    """
    for index, field in enumerate(fields, start=1):
        if index >= _V1_TCP_FIELDS:
            raise ProxyHeaderError(_FIELDS_ERROR)
        if index <= 2:
            _v1_address(protocol, field)
        else:
            _v1_port(field)


def _check_v1_partial_field(protocol: bytes, index: int, field: bytes) -> None:
    """Raise unless `field`, at position `index` of a TCP line, can still grow into a valid one."""
    if index >= _V1_TCP_FIELDS:
        raise ProxyHeaderError(_FIELDS_ERROR)
    if index > 2:
        if field:  # an empty port is a port that has not started yet
            _v1_port(field)
    elif protocol == b"TCP4":
        if _V4_PREFIX.fullmatch(field) is None:
            raise ProxyHeaderError(_V4_ERROR)
    elif _V6_CHARS.fullmatch(field) is None:
        raise ProxyHeaderError(_V6_ERROR)


def _refuse_line_breaks(line: bytes) -> None:
    # A CR or LF inside the line would make its end ambiguous (CR without LF, bare LF).
    if b"\r" in line or b"\n" in line:
        raise ProxyHeaderError("PROXY v1 line holds a stray CR or LF")


def _v1_address(protocol: bytes, field: bytes) -> str:
    """Return the canonical text of a v1 address, which must belong to the line's family."""
    if protocol == b"TCP4":
        # The pattern already admits only canonical dotted quads, so the text is kept as is.
        if _V4_FULL.fullmatch(field) is None:
            raise ProxyHeaderError(_V4_ERROR)
        return field.decode("ascii")
    if _V6_CHARS.fullmatch(field) is None:
        raise ProxyHeaderError(_V6_ERROR)
    try:
        address = ipaddress.IPv6Address(field.decode("ascii"))
    except ValueError:
        raise ProxyHeaderError(_V6_ERROR) from None
    return _ipv6_text(address)


def _v1_port(field: bytes) -> int:
    if not _is_port(field):
        raise ProxyHeaderError("PROXY v1 port is not a decimal 0-65535 without leading zeros")
    return int(field)


def _is_port(field: bytes) -> bool:
    return _PORT.fullmatch(field) is not None and int(field) <= 0xFFFF


# --- Version 2 -----------------------------------------------------------------------------------

_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# Signature, version/command, family/transport and a 16-bit length of what follows.
_V2_FIXED_BYTES = 16
# What may follow the fixed part: the largest address block (AF_UNIX, 216 bytes) leaves plenty of
# room for TLVs; a larger header is refused rather than buffered.
_V2_MAX_PAYLOAD = 4096

_V2_VERSION = 0x2
_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_V2_UNSPEC, _V2_TCP4, _V2_TCP6, _V2_UNIX_STREAM = 0x00, 0x11, 0x21, 0x31
# The size of the address block for each accepted family/transport byte; anything else
# (datagram transports, unknown families) is refused.
_V2_ADDRESS_BYTES = {_V2_UNSPEC: 0, _V2_TCP4: 12, _V2_TCP6: 36, _V2_UNIX_STREAM: 216}


def _parse_v2(data: bytes) -> ProxyHeader | None:
    """Parse a v2 header; `data` starts with the full 12-byte signature."""
    _check_v2_fixed(data[len(_V2_SIGNATURE) : _V2_FIXED_BYTES])
    if len(data) < _V2_FIXED_BYTES:
        return None
    total = _V2_FIXED_BYTES + int.from_bytes(data[14:16], "big")
    if len(data) < total:
        return None
    command, family = data[12] & 0x0F, data[13]
    if command == _V2_LOCAL or family in (_V2_UNSPEC, _V2_UNIX_STREAM):
        return ProxyHeader(None, None, consumed=total)
    # Only the address block is read; the TLVs after it are skipped, up to exactly `total`.
    addresses = data[_V2_FIXED_BYTES : _V2_FIXED_BYTES + _V2_ADDRESS_BYTES[family]]
    source, destination = _v2_endpoints(family, addresses)
    return ProxyHeader(source, destination, consumed=total)


def _check_v2_fixed(fixed: bytes) -> None:
    """Check the bytes after the signature as far as they have arrived (0 to 4 of them)."""
    if len(fixed) >= 1:
        version, command = fixed[0] >> 4, fixed[0] & 0x0F
        if version != _V2_VERSION:
            raise ProxyHeaderError("PROXY v2 version is not 2")
        if command not in (_V2_LOCAL, _V2_PROXY):
            raise ProxyHeaderError("PROXY v2 command is not LOCAL or PROXY")
    if len(fixed) >= 2 and fixed[1] not in _V2_ADDRESS_BYTES:
        raise ProxyHeaderError("PROXY v2 family/transport is not UNSPEC or TCP/IPv4/IPv6/UNIX")
    if len(fixed) >= 4:
        length = int.from_bytes(fixed[2:4], "big")
        if length < _V2_ADDRESS_BYTES[fixed[1]]:
            raise ProxyHeaderError("PROXY v2 length is too short for the address family")
        if length > _V2_MAX_PAYLOAD:
            raise ProxyHeaderError("PROXY v2 length is above the accepted bound")


def _v2_endpoints(family: int, block: bytes) -> tuple[tuple[str, int], tuple[str, int]]:
    """Decode an address block: source address, destination address, source port, dest port."""
    size = 4 if family == _V2_TCP4 else 16
    src, dst = block[:size], block[size : 2 * size]
    sport = int.from_bytes(block[2 * size : 2 * size + 2], "big")
    dport = int.from_bytes(block[2 * size + 2 : 2 * size + 4], "big")
    return (_v2_address(src), sport), (_v2_address(dst), dport)


def _v2_address(packed: bytes) -> str:
    if len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    return _ipv6_text(ipaddress.IPv6Address(packed))


def _ipv6_text(address: ipaddress.IPv6Address) -> str:
    # A dual-stack proxy reports IPv4 clients as ::ffff:a.b.c.d; the IPv4 form is what the same
    # client looks like when it connects directly, so policy and logs see one address, not two.
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


# --- Entry point ---------------------------------------------------------------------------------

# A v2 header is the longer of the two; a caller buffering this much without a result has a bug.
MAX_HEADER_BYTES: int = _V2_FIXED_BYTES + _V2_MAX_PAYLOAD


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """Parse a PROXY header at the start of `data`.

    Returns None when `data` is a valid prefix and more bytes are needed; raises ProxyHeaderError
    as soon as the bytes cannot be a valid header (including: not starting with either signature).
    """
    if _V2_SIGNATURE.startswith(data[: len(_V2_SIGNATURE)]):
        return None if len(data) < len(_V2_SIGNATURE) else _parse_v2(data)
    if _V1_PREFIX.startswith(data[: len(_V1_PREFIX)]):
        return None if len(data) < len(_V1_PREFIX) else _parse_v1(data)
    raise ProxyHeaderError("data does not start with a PROXY protocol v1 or v2 signature")
