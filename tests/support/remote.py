"""A remote caller's side: Basic credentials, an htpasswd file, and the docker CLI pointed at a
gateway URL with extra HTTP headers (config.json ``HttpHeaders``) and, optionally, verified TLS."""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import os
import pathlib
import socket
import subprocess
from collections.abc import Mapping
from typing import Any

import bcrypt


def basic_header(user: str, password: str) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def json_call(
    port: int,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, Any]:
    """One HTTP/1.1 request to 127.0.0.1:`port` on a new connection: `body` as JSON (bytes as
    they are, `application/json` unless `headers` say otherwise); the status and the answer,
    decoded from JSON when it is JSON, else its bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    return json_exchange(conn, method, path, body, headers=headers)


def json_exchange(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: object = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One request on `conn` (any HTTP, HTTPS or unix-socket connection), which is closed
    after: `body` and the answer as for `json_call`."""
    sent = dict(headers or {})
    data: bytes | None = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=sent)
        answer = conn.getresponse()
        raw = answer.read()
    finally:
        conn.close()
    try:
        return answer.status, json.loads(raw)
    except ValueError:
        return answer.status, raw


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket (the daemon's), with `timeout` on every read."""

    def __init__(self, socket_path: str, timeout: float = 60) -> None:
        super().__init__("docker", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def htpasswd_text(users: Mapping[str, str]) -> str:
    """htpasswd lines (bcrypt at the lowest cost, so that tests stay fast) for ``users``."""
    return "".join(
        f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
        for user, pw in users.items()
    )


def write_htpasswd(path: pathlib.Path, users: Mapping[str, str]) -> None:
    """An htpasswd file for ``users``, replaced atomically (a watcher never sees half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(htpasswd_text(users))
    os.replace(tmp, path)


_config_numbers = itertools.count()


def remote_docker(
    url: str,
    tmp: pathlib.Path,
    *args: str,
    headers: Mapping[str, str] | None = None,
    cert_path: pathlib.Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The docker CLI against ``url``, with ``headers`` in a fresh config.json and, with
    ``cert_path`` (ca.pem, and cert.pem/key.pem if the server asks for them), over verified
    TLS. Never raises for the exit status."""
    config = tmp / f"docker-config-{next(_config_numbers)}"
    config.mkdir(parents=True)
    (config / "config.json").write_text(json.dumps({"HttpHeaders": dict(headers or {})}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {"DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "0", "DOCKER_CLI_HINTS": "false"}
    tls: list[str] = []
    if cert_path is not None:
        env["DOCKER_CERT_PATH"] = str(cert_path)
        tls = ["--tlsverify"]
    return subprocess.run(
        ["docker", *tls, "-H", url, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_token(tokens: pathlib.Path, name: str, identity: str) -> str:
    """A new token in the tokens file, made by ``dockgate token create``; returns the token."""
    created = subprocess.run(
        [
            *("python3", "-m", "dockgate", "token", "create"),
            *("--file", str(tokens), "--name", name, "--identity", identity),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    token = created.stdout.strip()
    assert token.startswith("dg_"), created
    return token
