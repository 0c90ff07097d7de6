"""Raw exchanges with a gateway and what it wrote down, for the identity tests
(tests/auth/test_identity_e2e.py and the PROXY/X-Forwarded-For and `;` tests built on it): one
request on its own connection, optionally behind a PROXY v2 header; waiting for an access-log
line or an audit record.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import docker.tls

from support.daemon import PrivateDaemon
from support.gateway import Gateway
from support.rawhttp import dechunk, parse_head

SDK_API_VERSION = "1.41"  # fixed: "auto" would ask /version before any header is set
NO_THROTTLE = ("--auth-failures", "0", "--auth-failures-per-user", "0")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-cased names; the last value of each
    body: bytes

    @property
    def message(self) -> str | None:
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value.get("message") if isinstance(value, dict) else None


def raw_exchange(
    port: int, data: bytes, *, source: str | None = None, timeout: float = 15
) -> Reply:
    """Send `data` (which should ask for `Connection: close`) and read the answer to EOF."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
    ) as sock:
        sock.sendall(data)
        answer = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {answer!r}"
    status, headers = parse_head(head)
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Reply(status, headers, body)


def request_bytes(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: docker", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw_request(
    port: int,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    source: str | None = None,
    prefix: bytes = b"",
) -> Reply:
    data = prefix + request_bytes(method, target, headers, body)
    return raw_exchange(port, data, source=source)


def audit_records(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_audit(
    path: pathlib.Path, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5
) -> dict[str, Any]:
    """The first audit record matching `predicate`, waiting for the buffered log to flush."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in audit_records(path) if predicate(r)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            tail = "\n".join(json.dumps(r) for r in audit_records(path)[-15:])
            raise AssertionError(f"no matching audit record in {path}; the last ones:\n{tail}")
        time.sleep(0.05)


def wait_access_log(gw: Gateway, predicate: Callable[[str], bool], timeout: float = 5) -> str:
    """The first access-log line matching `predicate` (the log is flushed shortly after)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in gw.stdout():
            if predicate(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no matching access-log line:\n{gw.stdout_text()[-3000:]}")
        time.sleep(0.05)


@dataclass
class Served:
    gw: Gateway
    audit: pathlib.Path

    @property
    def url(self) -> str:
        return self.gw.url

    @property
    def port(self) -> int:
        return self.gw.port

    @property
    def http(self) -> str:
        return self.gw.http_base


V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(source: str, destination: str, sport: int, dport: int) -> bytes:
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21
    block = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
    )
    return proc


def container_exists(daemon: PrivateDaemon, name: str) -> bool:
    return daemon.docker("container", "inspect", name, check=False).returncode == 0


def sdk_client(url: str, **kwargs: Any) -> docker.DockerClient:
    return docker.DockerClient(base_url=url, version=SDK_API_VERSION, timeout=60, **kwargs)
