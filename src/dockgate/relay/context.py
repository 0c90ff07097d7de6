"""What a client connection needs from its process: the `ConnectionContext`.

Built once per serving process by `server.Gateway` and handed to every `ClientConnection`
(relay/connection.py) instead of the Gateway itself, so the relay depends on the pieces it uses
(a slice of the configuration, the loop, the upstream pool and the shared event streams,
admission, the memory budget for held bodies, the metrics and log sinks, two per-listener
hooks) and not on the server that owns them: `relay` never imports `server`. A test builds one
from fakes and gets a connection with `ClientConnection(context)`.

Only `admissions` changes after start: a policy reload puts a new `Admissions` in force for the
requests that follow (`Gateway.reload` sets it here too).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from dockgate.observe.accesslog import AccessLog
from dockgate.observe.audit import AuditLog
from dockgate.observe.metrics import RequestCounts
from dockgate.policy.admission import Admissions, ConnectionFacts
from dockgate.policy.limits import Limiter
from dockgate.relay.eventfeed import EventFeeds
from dockgate.relay.holding import HoldBudget
from dockgate.relay.upstream import UpstreamPool

if TYPE_CHECKING:
    # Only for the type of the registry below (the connection module imports this one).
    from dockgate.relay.connection import ClientConnection

# The client certificate hook: (transport, client as logged, the connection's facts to fill).
CertificateHook = Callable[[asyncio.Transport, str, ConnectionFacts], None]


def _no_certificate(transport: asyncio.Transport, client: str, facts: ConnectionFacts) -> None:
    """A listener without client certificates: nothing to add to the facts."""


def _no_proxy_header(address: str) -> bool:
    """A gateway without --proxy-protocol: no peer starts with a PROXY header."""
    return False


@dataclasses.dataclass(slots=True, eq=False)
class ConnectionContext:
    """The process's pieces one client connection uses (shared by all of them)."""

    loop: asyncio.AbstractEventLoop
    pool: UpstreamPool
    admissions: Admissions  # replaced on a policy reload
    holds: HoldBudget  # every body and answer held whole, together (relay/holding.py)
    metrics: RequestCounts
    access_log: AccessLog
    audit: AuditLog
    # The slice of the configuration the relay reads (seconds and bytes, as ServeConfig).
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0  # seconds for a request head, once its first byte is in
    idle_timeout: float = 120.0  # seconds a keep-alive connection waits for the next request
    body_timeout: float = 30.0  # seconds for a body held whole (--body-timeout)
    # On a TLS listener that requires client certificates: the caller the certificate names.
    add_certificate: CertificateHook = _no_certificate
    # Whether a peer at this address starts with a PROXY protocol header (--proxy-protocol).
    expects_proxy_header: Callable[[str], bool] = _no_proxy_header
    # The shared `GET /events` streams (relay/eventfeed.py); None: each stream its own
    # (--no-shared-events).
    event_feeds: EventFeeds | None = None
    # Every open client connection of the process (the sweeps and the shutdown walk it).
    connections: set[ClientConnection] = dataclasses.field(default_factory=set)
    # Every caller's rate and concurrency state in this process (policy/limits.py): it outlives
    # reloads, which change the limits but not what callers have spent.
    limiter: Limiter = dataclasses.field(default_factory=Limiter)
