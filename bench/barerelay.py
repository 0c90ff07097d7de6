"""The floor for a gateway in Python on uvloop: a relay that does nothing but relay.

Each client connection gets its own connection to the daemon's unix socket; bytes go across
both ways as they come, unread (no HTTP parsing, no policy, no log, no metrics). It is not a
gateway (nothing is checked), only a yardstick: `bench/hotpath.py --bare` measures its CPU per
request beside dockgate's and nginx's, which tells how much of dockgate's cost is its own work
and how much any Python relay on this loop pays (the two callbacks and two writes per request).

    python3 bench/barerelay.py PORT SOCKET
"""

from __future__ import annotations

import asyncio
import sys


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.WriteTransport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.upstream: asyncio.WriteTransport | None = None
        self.waiting: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses; they have its methods)
        self.transport: asyncio.WriteTransport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_unix_connection(
            lambda: _Upstream(self.transport), self.socket_path
        )
        self.upstream = upstream
        for data in self.waiting:
            upstream.write(data)
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.waiting.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


def main() -> None:
    import uvloop  # noqa: PLC0415 - a dependency of dockgate, present where it runs

    port, socket_path = int(sys.argv[1]), sys.argv[2]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Client(socket_path), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
