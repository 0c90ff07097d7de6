"""Requests that come back through this gateway: a loop, refused with 508 before it grows.

With `DOCKER_HOST` pointing at a gateway, a second `dockgate serve` (or the gateway itself,
through a chain of gateways) can take that gateway as its upstream: every request then goes
round until file descriptors run out. Each request the gateway forwards carries one more
`X-Dockgate-Hop` field with this process's token (random, made once per `dockgate serve` and
inherited by its workers); a request that arrives already carrying it has gone round, and is
answered here (508 Loop Detected) and never forwarded. The fields of other gateways are kept,
so a chain A -> B -> A is caught by A on the second pass whatever B does.

The daemon ignores header fields it does not know (moby's api/server/httputils reads only the
ones it names), so the extra field changes nothing for it; docs/policy.md lists it.
"""

from __future__ import annotations

import re
import secrets

HOP_HEADER = b"X-Dockgate-Hop"
# 16 random bytes: a client cannot guess it (and could only get its own request refused).
TOKEN = b"dockgate-" + secrets.token_hex(16).encode()
_HOP_LINE = HOP_HEADER + b": " + TOKEN + b"\r\n"
_HOP_FIELD = re.compile(rb"\r\nx-dockgate-hop[ \t]*:([^\r]*)", re.IGNORECASE)

LOOP_MESSAGE = (
    "dockgate: this request came back to the gateway that forwarded it (a loop: its upstream "
    "leads back to itself); set --upstream to the Docker daemon's socket, not a dockgate listener"
)


def with_hop(raw: bytes) -> bytes:
    """A complete request head (ending in CRLF CRLF) with this gateway's hop field added."""
    return raw[:-2] + _HOP_LINE + b"\r\n"


def came_back(raw: bytes) -> bool:
    """True when the head carries this process's own hop token (in any of its hop fields,
    each of which may list several, comma-separated, as proxies merge repeated fields)."""
    if TOKEN not in raw:  # the common case, without a regex
        return False
    for match in _HOP_FIELD.finditer(raw):
        if any(part.strip() == TOKEN for part in match[1].split(b",")):
            return True
    return False
