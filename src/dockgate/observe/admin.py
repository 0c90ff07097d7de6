"""The admin listener: health and metrics for orchestrators, apart from the Engine API.

`GET /healthz` answers 200 while the process serves (liveness); `GET /readyz` answers 200 when
the daemon answers `_ping` through the same upstream, else 503 with the reason (readiness);
`GET /metrics` is the Prometheus exposition (dockgate/observe/metrics.py). They
live on their own listener (`--admin-listen`, loopback unless told otherwise) so that they never
collide with the Engine API's paths, are never subject to a policy, and are never exposed by
accident with the API. One request per connection; anything else is 404 or 405.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import cast

from dockgate.addresses import Address
from dockgate.observe.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from dockgate.ownership.lookup import LookupError_, get_json
from dockgate.policy.browser import ANSWER_HEADERS

MAX_REQUEST_BYTES = 8 * 1024
REQUEST_TIMEOUT_SECONDS = 5.0


def _answer(status: int, reason: str, body: dict[str, str], *, head_only: bool) -> bytes:
    return _raw_answer(
        status, reason, (json.dumps(body) + "\n").encode(), "application/json", head_only=head_only
    )


def _raw_answer(
    status: int, reason: str, payload: bytes, content_type: str, *, head_only: bool
) -> bytes:
    head = (
        (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nCache-Control: no-store\r\nConnection: close\r\n"
        ).encode()
        + ANSWER_HEADERS
        + b"\r\n"
    )
    return head if head_only else head + payload


class AdminConnection(asyncio.Protocol):
    def __init__(self, upstream: Address, metrics: Callable[[], bytes]) -> None:
        self._upstream = upstream
        self._metrics = metrics
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(
            REQUEST_TIMEOUT_SECONDS, self._transport.close
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._task is not None or self._transport is None:
            return
        self._buffer += data
        if b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_REQUEST_BYTES:
                self._send(_answer(400, "Bad Request", {"status": "bad request"}, head_only=False))
            return
        line = self._buffer.split(b"\r\n", 1)[0].split(b" ")
        if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
            self._send(_answer(400, "Bad Request", {"status": "bad request"}, head_only=False))
            return
        if self._timer is not None:
            self._timer.cancel()  # the answer may wait for the daemon (readyz)
        method, path = line[0], line[1].split(b"?", 1)[0]
        head_only = method == b"HEAD"
        if path not in (b"/healthz", b"/readyz", b"/metrics"):
            self._send(_answer(404, "Not Found", {"status": "not found"}, head_only=head_only))
        elif method not in (b"GET", b"HEAD"):
            self._send(_answer(405, "Method Not Allowed", {"status": "GET only"}, head_only=False))
        elif path == b"/healthz":
            self._send(_answer(200, "OK", {"status": "ok"}, head_only=head_only))
        elif path == b"/metrics":
            body = self._metrics()
            self._send(_raw_answer(200, "OK", body, METRICS_CONTENT_TYPE, head_only=head_only))
        else:
            self._task = asyncio.get_running_loop().create_task(self._ready(head_only))

    async def _ready(self, head_only: bool) -> None:
        try:
            status, _ = await get_json(self._upstream, "/_ping")
        except LookupError_ as exc:
            reason = str(exc)
        else:
            if status == 200:
                self._send(_answer(200, "OK", {"status": "ready"}, head_only=head_only))
                return
            reason = f"the daemon answered {status} to _ping"
        body = {"status": "not ready", "reason": reason}
        self._send(_answer(503, "Service Unavailable", body, head_only=head_only))

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)
            transport.close()
