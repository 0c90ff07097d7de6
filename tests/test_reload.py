"""Reload without a restart: a changed policy file is taken within a couple of seconds, and
SIGHUP loads it at once (with credentials and certificates); a bad file leaves the old policy
in force, with the reason logged. Connections in progress are not dropped."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

DENY_LIST = """\
policies:
  p:
    rules:
      - allow: {sections: [ping, version]}
"""
ALLOW_LIST = """\
policies:
  p:
    rules:
      - allow: {sections: [ping, version, containers]}
"""


def _status(port: int, path: str, conn: socket.socket | None = None) -> int:
    own = conn is None
    sock = conn or socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        keep = "" if not own else "Connection: close\r\n"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\n{keep}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        remaining = length
        while remaining > 0:
            remaining -= len(sock.recv(remaining))
        return int(head.split(b" ")[1])
    finally:
        if own:
            sock.close()


def _wait_for(predicate: object, timeout: float = 8) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_policy_file_change_and_sighup(daemon: PrivateDaemon, tmp_path: Path, workers: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(DENY_LIST)
    with running(Gateway(daemon.host, "--workers", workers, policy=str(policy))) as gw:
        assert _status(gw.port, "/v1.41/containers/json") == 403
        kept = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
        try:
            assert _status(gw.port, "/_ping", kept) == 200
            # An edit (atomic rename, as Docker configs and editors do) is picked up.
            fresh = tmp_path / "policy.new"
            fresh.write_text(ALLOW_LIST)
            os.replace(fresh, policy)
            assert _wait_for(lambda: _status(gw.port, "/v1.41/containers/json") == 200)
            # The connection opened before the reload still works, under the new policy.
            assert _status(gw.port, "/v1.41/containers/json", kept) == 200
        finally:
            kept.close()
        # A bad file: the old policy stays, and the reason is logged.
        policy.write_text("policies: {p: {rules: [{allow: {sections: [nonsense]}}]}}\n")
        assert _wait_for(lambda: "reload of" in gw.stderr_text() and "nonsense" in gw.stderr_text())
        assert _status(gw.port, "/v1.41/containers/json") == 200
        # SIGHUP loads at once, even when the file's stamp looks the same as before.
        policy.write_text(DENY_LIST)
        gw.signal(signal.SIGHUP)
        assert _wait_for(lambda: _status(gw.port, "/v1.41/containers/json") == 403)
        assert gw.alive()  # still running
