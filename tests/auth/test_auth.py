"""Basic and bearer authentication in front of the real daemon, with the real clients.

The docker CLI sends an Authorization header with every request when its config.json says so
(`HttpHeaders`); the SDK takes one as a custom header.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from support.daemon import PrivateDaemon
from support.fake_upstream import FakeUpstream
from support.gateway import Gateway
from support.remote import create_token, write_htpasswd

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(180)]

USER, PASSWORD = "alice", "correct horse"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """An htpasswd file (bcrypt) for USER and a tokens file with one token, and that token."""
    directory = tmp_path_factory.mktemp("auth")
    htpasswd = directory / "htpasswd"
    write_htpasswd(htpasswd, {USER: PASSWORD})
    tokens = directory / "tokens"
    return htpasswd, tokens, create_token(tokens, "ci", "runner")


@pytest.fixture(scope="module")
def auth_gateway(daemon: PrivateDaemon, credentials: tuple[Path, Path, str]) -> Iterator[Gateway]:
    htpasswd, tokens, _ = credentials
    # Many tests here fail on purpose from one address: throttling has tests of its own.
    no_throttle = ("--auth-failures", "0", "--auth-failures-per-user", "0")
    with Gateway(
        daemon.host, "--htpasswd", str(htpasswd), "--tokens", str(tokens), *no_throttle
    ) as gateway:
        yield gateway


def docker_with_header(
    gateway: Gateway, config_dir: Path, authorization: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    config_dir.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {}
    if authorization is not None:
        config["HttpHeaders"] = {"Authorization": authorization}
    (config_dir / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {"DOCKER_HOST": gateway.url, "DOCKER_CONFIG": str(config_dir), "DOCKER_BUILDKIT": "0"}
    return subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_cli_with_basic_credentials_works(
    auth_gateway: Gateway, tmp_path: Path, busybox_image: str
) -> None:
    """`docker ps` and `docker run` work with Basic credentials in config.json HttpHeaders."""
    ps = docker_with_header(auth_gateway, tmp_path, basic(USER, PASSWORD), "ps")
    assert ps.returncode == 0, ps.stderr
    run = docker_with_header(
        auth_gateway,
        tmp_path,
        basic(USER, PASSWORD),
        "run",
        "--rm",
        busybox_image,
        "echo",
        "basic-ok",
    )
    assert run.returncode == 0 and run.stdout.strip() == "basic-ok", run.stderr


def test_cli_with_a_token_works(
    auth_gateway: Gateway, credentials: tuple[Path, Path, str], tmp_path: Path, busybox_image: str
) -> None:
    """`docker run -i` (a hijacked connection) works with a bearer token, and the access log
    names the token's identity."""
    _, _, token = credentials
    run = subprocess.run(
        ["docker", "run", "--rm", "-i", busybox_image, "cat"],
        input="through the token\n",
        env={k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        | {"DOCKER_HOST": auth_gateway.url, "DOCKER_CONFIG": str(_config(tmp_path, token))},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0 and run.stdout == "through the token\n", run.stderr
    assert any("user=runner" in line for line in auth_gateway.stdout())


def _config(directory: Path, token: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(
        json.dumps({"HttpHeaders": {"Authorization": f"Bearer {token}"}})
    )
    return directory


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "dockgate: authentication required"),
        (basic(USER, "wrong"), "dockgate: invalid credentials"),
        (basic("mallory", PASSWORD), "dockgate: invalid credentials"),
        ("Bearer dg_not-a-real-token", "dockgate: invalid credentials"),
        ("Basic !!!not-base64", "dockgate: invalid credentials"),
    ],
    ids=["none", "wrong-password", "unknown-user", "unknown-token", "garbage"],
)
def test_cli_shows_the_401_message(
    auth_gateway: Gateway, tmp_path: Path, authorization: str | None, message: str
) -> None:
    """Missing or wrong credentials fail with the gateway's 401 message, which the CLI shows;
    an unknown user and a wrong password read the same."""
    ps = docker_with_header(auth_gateway, tmp_path, authorization, "ps")
    assert ps.returncode != 0
    assert message in ps.stderr


def test_401_carries_a_basic_challenge(auth_gateway: Gateway) -> None:
    """A 401 says how to authenticate (WWW-Authenticate: Basic) in Docker's error shape."""
    with socket.create_connection(("127.0.0.1", auth_gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b'\r\nWWW-Authenticate: Basic realm="dockgate"' in head
    assert b"authentication required" in body or b"Content-Length" in head


def test_sdk_with_a_custom_header_works(
    auth_gateway: Gateway, credentials: tuple[Path, Path, str]
) -> None:
    """The Docker SDK for Python authenticates with an Authorization header it sends itself."""
    _, _, token = credentials
    # A fixed API version: "auto" would ask /version before the header is set.
    client = docker.DockerClient(base_url=auth_gateway.url, version="1.41")
    try:
        client.api.headers["Authorization"] = f"Bearer {token}"
        assert isinstance(client.containers.list(all=True), list)
    finally:
        client.close()


def test_credentials_never_reach_the_daemon(credentials: tuple[Path, Path, str]) -> None:
    """The Authorization header is removed before forwarding: the daemon never sees it."""
    htpasswd, tokens, token = credentials
    with (
        FakeUpstream() as fake,
        Gateway(fake.url, "--htpasswd", str(htpasswd), "--tokens", str(tokens)) as gateway,
    ):
        for authorization in (basic(USER, PASSWORD), f"bearer {token}"):
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
                sock.sendall(
                    b"GET /_ping HTTP/1.1\r\nHost: docker\r\nAuthorization: "
                    + authorization.encode()
                    + b"\r\n\r\n"
                )
                data = b""
                while b"OK" not in data:
                    piece = sock.recv(4096)
                    if not piece:
                        break
                    data += piece
            assert data.startswith(b"HTTP/1.1 200 "), data
        # (Without the gateway's own start-up _ping, which carries no credentials anyway.)
        seen = [
            record
            for record in fake.requests_for("/_ping")
            if record.header("user-agent") != "dockgate-startup"
        ]
        assert len(seen) == 2
        for record in seen:
            assert record.header("authorization") is None
            assert b"uthorization" not in record.head_raw
