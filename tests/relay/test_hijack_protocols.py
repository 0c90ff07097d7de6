"""The other hijacked connections, through the gateway to the real daemon: the WebSocket attach
(`GET /containers/{id}/attach/ws`) and BuildKit's session (`POST /session`, `Upgrade: h2c`)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import websocket

from support.clients import Cleanup

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

# HTTP/2 (RFC 9113 3.4): the client preface, then an empty SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
H2_SETTINGS_TYPE = 0x04


def _recv_until(sock: socket.socket, marker: bytes, limit: int = 1 << 16) -> bytes:
    data = b""
    while marker not in data and len(data) < limit:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return data


def test_websocket_attach_carries_stdin_and_stdout(
    gateway: Any,
    sdk: Any,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """A WebSocket attach through the gateway delivers a line to the container's stdin and
    brings back what the container writes."""
    name = cleanup.container(unique("ws"))
    container = sdk.containers.create(
        busybox_image,
        ["sh", "-c", "read line; echo got:$line"],
        name=name,
        stdin_open=True,
    )
    url = (
        f"ws://127.0.0.1:{gateway.port}/containers/{container.id}/attach/ws"
        "?stream=1&stdin=1&stdout=1&stderr=1"
    )
    # websocket-client sends an Origin by default, which dockgate refuses unless configured.
    ws = websocket.create_connection(url, timeout=20, suppress_origin=True)
    try:
        container.start()
        ws.send("hello\n")
        received = b""
        deadline = time.monotonic() + 20
        while b"got:hello" not in received and time.monotonic() < deadline:
            try:
                frame = ws.recv()
            except websocket.WebSocketConnectionClosedException:
                break
            received += frame.encode() if isinstance(frame, str) else frame
        assert b"got:hello" in received, received
    finally:
        ws.close()
    assert container.wait(timeout=20)["StatusCode"] == 0


def test_session_upgrade_becomes_an_http2_tunnel(gateway: Any) -> None:
    """`POST /session` with `Upgrade: h2c` is switched by the daemon (101) and the tunnel then
    carries HTTP/2 both ways: the daemon's gRPC server answers the client preface with its
    SETTINGS frame."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=20) as sock:
        sock.sendall(
            b"POST /v1.41/session HTTP/1.1\r\n"
            b"Host: docker\r\n"
            b"Connection: Upgrade\r\n"
            b"Upgrade: h2c\r\n"
            b"X-Docker-Expose-Session-Uuid: " + uuid.uuid4().hex.encode() + b"\r\n"
            b"X-Docker-Expose-Session-Name: dockgate-test\r\n"
            b"X-Docker-Expose-Session-Sharedkey: dockgate-test\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        data = _recv_until(sock, b"\r\n\r\n")
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        # In the daemon's session, the daemon is the gRPC *client*: it sends the preface.
        sock.sendall(H2_EMPTY_SETTINGS)
        while len(rest) < len(H2_PREFACE) + 9:
            piece = sock.recv(4096)
            if not piece:
                break
            rest += piece
        assert rest.startswith(H2_PREFACE), rest[:64]
        frame = rest[len(H2_PREFACE) :]
        assert frame[3] == H2_SETTINGS_TYPE, frame[:9]
