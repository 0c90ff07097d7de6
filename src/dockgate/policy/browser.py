"""Refuse what only a web browser would send: cross-site requests and DNS-rebinding attacks.

A TCP port on loopback is reachable from any web page the operator opens: a page can POST to
`http://127.0.0.1:2375/containers/create` (the browser sends an `Origin` header), or rebind its
own DNS name to 127.0.0.1 and then read the answers (the browser sends that name as `Host`).
Docker clients send neither an `Origin` nor a DNS name other than the ones accepted here, with
one exception: websocket-client (docker-py's `attach_socket(ws=True)`) sends the origin of the URL
it connects to, `http://HOST:PORT`, which is the gateway's own. That origin is accepted: a page
can only have it if the gateway served it, and every answer the gateway sends, its own and the
daemon's, carries `ANSWER_HEADERS`, so no document served from that origin can run a script
(`Content-Security-Policy: sandbox` gives it an opaque origin and no scripts) or be sniffed
into HTML (`X-Content-Type-Options: nosniff`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from dockgate.caching import remember

# Host names the Docker clients themselves send: the CLI over a unix socket sends
# `api.moby.localhost` (older: `docker`), the Python SDK `localhost`.
_CLIENT_HOST_NAMES = frozenset({"localhost", "docker"})
HOST_CACHE_ENTRIES = 1024
# Longer Host values are not remembered: 1,024 of 64 KiB each held ~60 MiB per process (issue
# 14's attack review); a DNS name is at most 253 bytes, with a port 259.
HOST_CACHE_MAX_BYTES = 512
# On every answer (complete header lines): a document from the gateway's origin is sandboxed
# (no scripts, an opaque origin of its own) and never sniffed into another type.
ANSWER_HEADERS = b"Content-Security-Policy: sandbox\r\nX-Content-Type-Options: nosniff\r\n"
# A Host value that can be an origin's authority: a name or an IP literal, and a port.
_AUTHORITY = re.compile(r"(?:\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::[0-9]{1,5})?")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


@dataclass(frozen=True, slots=True)
class BrowserGuard:
    origins: frozenset[str] = frozenset()  # lower-case `scheme://host[:port]`
    hosts: frozenset[str] = frozenset()  # lower-case DNS names accepted in Host
    scheme: str = "http"  # the listeners' scheme: "https" when they speak TLS
    # Host values seen, with their answer: clients send the same one or two. Bounded.
    _host_cache: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)

    def refusal(self, host: bytes | None, origin: bytes | None, authenticated: bool) -> str | None:
        """Why this request is refused, or None. `authenticated`: the listener checks identity."""
        if origin is not None:
            text = origin.decode("latin-1").strip().lower()
            if text not in self.origins and not self._own_origin(text, host):
                return (
                    f"dockgate: requests from web pages are refused (Origin {text} is not allowed)"
                )
        if host is not None and not authenticated:
            allowed = self._host_cache.get(host)
            if allowed is None:
                allowed = self._host_allowed(_host_name(host.decode("latin-1").strip().lower()))
                if len(host) <= HOST_CACHE_MAX_BYTES:  # a long one is judged each time
                    remember(self._host_cache, host, allowed, HOST_CACHE_ENTRIES)
            if not allowed:
                name = _host_name(host.decode("latin-1").strip().lower())
                return (
                    f"dockgate: Host {name!r} is not accepted on this listener "
                    f"(DNS-rebinding protection); allow it with --allow-host {name} "
                    "(DOCKGATE_ALLOW_HOST in the environment) or under 'hosts' in the policy file"
                )
        return None

    def _own_origin(self, origin: str, host: bytes | None) -> bool:
        """Whether `origin` is the gateway's own: the listeners' scheme and this request's Host,
        a Host the guard accepts (checked here even where authentication skips the Host check:
        a rebinding page's origin names the attacker's DNS name)."""
        if host is None or not origin.startswith(self.scheme + "://"):
            return False
        own = host.decode("latin-1").strip().lower()
        if _AUTHORITY.fullmatch(own) is None:
            return False
        # Browsers leave the scheme's default port out of an origin; clients may send it.
        default = _DEFAULT_PORTS[self.scheme]
        authority = origin[len(self.scheme) + 3 :]
        if authority.removesuffix(default) != own.removesuffix(default):
            return False
        return self._host_allowed(_host_name(own))

    def _host_allowed(self, name: str) -> bool:
        if not name or name in _CLIENT_HOST_NAMES or name.endswith(".localhost"):
            return True
        if name in self.hosts:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def _host_name(value: str) -> str:
    """The name part of a Host header value: `[::1]:2375` -> `::1`, `a.b:80` -> `a.b`."""
    if value.startswith("["):
        return value[1:].partition("]")[0]
    name, _, _ = value.partition(":")
    return name.rstrip(".")
