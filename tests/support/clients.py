"""Types shared by the fixtures (tests/conftest.py) and the tests that use them."""

from __future__ import annotations

import dataclasses
import subprocess
from typing import Protocol

from support.daemon import PrivateDaemon


class GatewayLike(Protocol):
    url: str
    port: int
    http_base: str


@dataclasses.dataclass
class DirectEndpoint:
    """Stands in for `Gateway` when DOCKGATE_TEST_DIRECT=1: the daemon's own TCP listener."""

    url: str
    port: int
    http_base: str
    direct: bool = True

    def output(self) -> str:
        return "(direct mode: no gateway)"


class DockerCLI(Protocol):
    def __call__(
        self,
        *args: str,
        input: bytes | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]: ...


class DockerPopen(Protocol):
    def __call__(self, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]: ...


class Cleanup:
    """Removes what a test created, straight through the daemon (not through the gateway)."""

    def __init__(self, daemon: PrivateDaemon) -> None:
        self.daemon = daemon
        self.items: list[tuple[str, str]] = []

    def container(self, ref: str) -> str:
        self.items.append(("container", ref))
        return ref

    def image(self, ref: str) -> str:
        self.items.append(("image", ref))
        return ref

    def volume(self, ref: str) -> str:
        self.items.append(("volume", ref))
        return ref

    def network(self, ref: str) -> str:
        self.items.append(("network", ref))
        return ref

    def run(self) -> None:
        commands = {
            "container": ("rm", "-f", "-v"),
            "image": ("rmi", "-f"),
            "volume": ("volume", "rm", "-f"),
            "network": ("network", "rm"),
        }
        # Containers first (they hold volumes, networks and images), then the rest.
        order = {"container": 0, "network": 1, "volume": 2, "image": 3}
        for kind, ref in sorted(reversed(self.items), key=lambda item: order[item[0]]):
            self.daemon.docker(*commands[kind], ref, check=False, timeout=60)
        self.items.clear()
