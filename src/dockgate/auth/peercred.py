"""The uid of a unix-socket client, from the kernel (SO_PEERCRED).

Every unix-socket client has the source "unix" (address lists match it as one), but the
failure throttle counts each local user apart (auth/throttle.py): before, 20 wrong passwords
from any local user throttled every local client (issue 12, item 3). The kernel records the
peer's credentials at connect(); the client cannot choose them (unix(7), SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import socket
import struct

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(transport: asyncio.BaseTransport) -> int | None:
    """The connected peer's uid, or None where the platform or transport cannot tell (the
    client then counts under the shared "unix" key, as before)."""
    sock = transport.get_extra_info("socket")
    option = getattr(socket, "SO_PEERCRED", None)
    if sock is None or option is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _UCRED.size)
    except OSError:
        return None
    _pid, uid, _gid = _UCRED.unpack(raw)
    return int(uid)
