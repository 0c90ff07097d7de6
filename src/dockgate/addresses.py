"""Listen and upstream addresses: `tcp://HOST:PORT` and `unix:///path`, parsed once."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass, field


class AddressError(ValueError):
    """An address the gateway cannot use; the message says why."""


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str  # "tcp" or "unix"
    host: str = ""  # tcp only; IPv6 without brackets
    port: int = 0  # tcp only
    path: str = ""  # unix only
    # An upstream reached over TLS: the client context every connection to it is made with
    # (relay/upstreamtls.py). None: plain. Not part of the address's identity.
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def with_port(self, port: int) -> Address:
        return Address(self.scheme, self.host, port, self.path)

    def is_loopback(self) -> bool:
        """True when only this machine can reach it: a unix socket or a loopback TCP address.

        A name is resolved, and every address it resolves to must be loopback.
        """
        if self.scheme == "unix":
            return True
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return False
        return bool(infos) and all(
            ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos
        )


# What the docker CLI does with `tcp://USER:PASSWORD@HOST`: Go's url.Parse splits the user info
# off (at the authority's last "@") and moby's opts/hosts.go ParseTCPAddr keeps only host and
# port, so the credentials go nowhere. dockgate refuses them instead of dropping them: an
# upstream gets no credentials from it, and a listener's clients authenticate with a header.
_USERINFO_HINT = (
    "tcp:// addresses take no USER:PASSWORD@ (the docker CLI drops them too): dockgate sends "
    "no credentials to the daemon, and its own clients authenticate with an Authorization "
    "header (--htpasswd or --tokens; HttpHeaders in the docker CLI's config.json, see "
    "`dockgate doctor`)"
)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


def shown_address(text: str) -> str:
    """`text` as messages may quote it: user info (`USER:PASSWORD@`, or a token as the user)
    replaced by `***@`, so a password given in an address is never printed. An absolute unix
    path is a file name, shown as it is (an "@" in it is no user info); a text that only
    starts like one (`//user:pw@host`, `/tcp://user:pw@host`: a mistyped DOCKER_HOST) is not."""
    if "@" not in text or text.startswith("unix:///"):
        return text
    if text.startswith(("/", ".")) and "://" not in text and not text.startswith("//"):
        return text
    scheme, sep, _ = text.partition("://")
    prefix = scheme + sep if sep and _SCHEME.fullmatch(scheme) else ""
    # The last "@": Go's url.Parse splits there, and a password may hold "@" or "/".
    return f"{prefix}***@{text.rpartition('@')[2]}"


def parse_address(text: str, *, default_port: int = 2375) -> Address:
    """Parse `tcp://HOST:PORT`, `tcp://[V6]:PORT`, `unix:///path` (and `http://` as `tcp://`).

    Messages quote the text through `shown_address`: never a password given in it."""
    shown = repr(shown_address(text))
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise AddressError(f"{shown}: expected tcp://HOST:PORT or unix:///path")
    if scheme == "unix":
        if not rest.startswith("/"):
            raise AddressError(f"{shown}: a unix socket path must be absolute")
        return Address("unix", path=rest)
    if scheme not in ("tcp", "http"):
        what = f" {scheme!r}" if _SCHEME.fullmatch(scheme) else ""
        raise AddressError(f"{shown}: unsupported scheme{what} (use tcp:// or unix://)")
    if "@" in rest:
        raise AddressError(f"{shown}: {_USERINFO_HINT}")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise AddressError(f"{shown}: malformed IPv6 address")
        port_text = after[1:]
    else:
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
        if ":" in host:
            raise AddressError(f"{shown}: write an IPv6 address in brackets, tcp://[::1]:2375")
    if not host:
        raise AddressError(f"{shown}: missing host")
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()):
            # Not shown: `tcp://user:PASSWORD` without the `@` puts a password here.
            masked = repr(shown_address(text)[: -len(port_text)] + "***")
            raise AddressError(f"{masked}: the port is not a number (not shown)")
        if not 0 <= int(port_text) <= 65535:
            raise AddressError(f"{shown}: invalid port {port_text!r}")
        port = int(port_text)
    else:
        port = default_port
    return Address("tcp", host=host, port=port)
