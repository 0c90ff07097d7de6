"""dockgate's image started as the Tecnativa drop-in (`-e CONTAINERS=1 -v SOCKET:...`, no
DOCKGATE_INSECURE) on a daemon in a network namespace of its own, and waited for."""

from __future__ import annotations

import json
import time

from support.netns import NamespacedDaemon


def start_tecnativa(daemon: NamespacedDaemon, image: str, name: str, *options: str) -> None:
    """The Tecnativa command line, with `options` (network, ports, variables) added."""
    daemon.docker(
        "run", "-d", "--name", name, *options, "-e", "CONTAINERS=1",
        "-v", f"{daemon.socket_path}:/var/run/docker.sock", image,
    )  # fmt: skip


def settle(daemon: NamespacedDaemon, name: str, timeout: float = 60) -> tuple[str, str]:
    """Wait until the gateway in container `name` listens or the container exits: (its status,
    its logs)."""
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(daemon.docker("inspect", name).stdout)[0]["State"]
        logs = daemon.docker("logs", name).stderr.decode()
        if state["Status"] == "exited" or "dockgate: listening on" in logs:
            return state["Status"], logs
        if time.monotonic() > deadline:
            return state["Status"], logs
        time.sleep(0.5)
