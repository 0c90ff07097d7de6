"""Refuse what only a web browser would send: cross-site requests and DNS-rebinding attacks.

A TCP port on loopback is reachable from any web page the operator opens: a page can POST to
`http://127.0.0.1:2375/containers/create` (the browser sends an `Origin` header), or rebind its
own DNS name to 127.0.0.1 and then read the answers (the browser sends that name as `Host`).
Docker clients send neither an `Origin` nor a DNS name other than the ones accepted here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from dockgate.caching import remember

# Host names the Docker clients themselves send: the CLI over a unix socket sends
# `api.moby.localhost` (older: `docker`), the Python SDK `localhost`.
_CLIENT_HOST_NAMES = frozenset({"localhost", "docker"})
HOST_CACHE_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class BrowserGuard:
    origins: frozenset[str] = frozenset()  # lower-case `scheme://host[:port]`
    hosts: frozenset[str] = frozenset()  # lower-case DNS names accepted in Host
    # Host values seen, with their answer: clients send the same one or two. Bounded.
    _host_cache: dict[bytes, bool] = field(default_factory=dict, compare=False, repr=False)

    def refusal(self, host: bytes | None, origin: bytes | None, authenticated: bool) -> str | None:
        """Why this request is refused, or None. `authenticated`: the listener checks identity."""
        if origin is not None:
            text = origin.decode("latin-1").strip().lower()
            if text not in self.origins:
                return (
                    f"dockgate: requests from web pages are refused (Origin {text} is not allowed)"
                )
        if host is not None and not authenticated:
            allowed = self._host_cache.get(host)
            if allowed is None:
                allowed = self._host_allowed(_host_name(host.decode("latin-1").strip().lower()))
                remember(self._host_cache, host, allowed, HOST_CACHE_ENTRIES)
            if not allowed:
                name = _host_name(host.decode("latin-1").strip().lower())
                return (
                    f"dockgate: Host {name!r} is not accepted on this listener "
                    "(DNS-rebinding protection); configure it under 'hosts'"
                )
        return None

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
