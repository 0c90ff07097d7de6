"""The admin listener: /healthz while the process serves, /readyz while the daemon answers,
on a listener of its own that the Engine API never shares."""

from __future__ import annotations

import json
import socket

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str] | None]:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(body) if body else None


def test_health_and_readiness(daemon: PrivateDaemon) -> None:
    with running(Gateway(daemon.host, "--admin-listen", "tcp://127.0.0.1:0")) as gw:
        port = gw.admin_port()
        assert _get(port, "/healthz") == (200, {"status": "ok"})
        assert _get(port, "/readyz") == (200, {"status": "ready"})
        assert _get(port, "/healthz", "HEAD") == (200, None)
        assert _get(port, "/_ping")[0] == 404  # the Engine API is not served here
        assert _get(port, "/healthz", "POST")[0] == 405
        # And the health paths are not the API listener's business: there, the policy decides.
        assert _get(gw.port, "/healthz")[0] == 403


def test_readiness_follows_the_daemon(tmp_path: object) -> None:
    """With no daemon behind it, the process is alive but not ready (503 with the reason)."""
    with running(
        Gateway("unix:///nonexistent/docker.sock", "--admin-listen", "tcp://127.0.0.1:0")
    ) as gw:
        port = gw.admin_port()
        assert _get(port, "/healthz") == (200, {"status": "ok"})
        status, body = _get(port, "/readyz")
        assert status == 503
        assert body is not None and body["status"] == "not ready" and "connect" in body["reason"]
