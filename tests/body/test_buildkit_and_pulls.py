"""Two doors the guardrails close by default: BuildKit's control API and loopback registries.

- `POST /grpc` (docker buildx) carries BuildKit solve requests inside an HTTP/2 tunnel the
  gateway cannot read; they may ask for the `network.host` entitlement, which the daemon
  grants by default (moby builder/builder-next/controller.go getEntitlements). Refused under
  guardrails unless `buildkit: true`.
- `POST /images/create?fromImage=127.0.0.1:PORT/x` makes the daemon GET a service on its own
  loopback over plain HTTP (127.0.0.0/8 is an insecure registry by default) and quote the
  answer back (tests/body/test_attacks_ci_runner.py shows it on the real daemon). Refused unless the
  policy's `images` list allows that repository.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import textwrap

import pytest

from dockgate.body.guardrails import (
    Guardrails,
    is_loopback_registry,
    pull_problem,
    search_problem,
)
from dockgate.policy.loader import parse_policy_text
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.rawhttp import parse_head

POLICY = """\
policies:
  builder:
    rules:
      - allow: {sections: [ping, version, build, session, images]}
    guardrails:
      buildkit: %s
"""


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost:5000", True),
        ("LOCALHOST", True),
        ("localhost.:5000", True),
        ("registry.localhost", True),
        ("127.0.0.1:5000", True),
        ("127.1:5000", True),  # inet_aton's short form, which the C resolver takes
        ("0x7f.1", True),
        ("2130706433:80", True),
        ("[::1]:5000", True),
        ("0.0.0.0:5000", True),
        ("169.254.169.254", True),  # link-local: cloud metadata services
        ("registry.example.com", False),
        ("10.0.0.5:5000", False),
        ("ghcr.io", False),
        ("deadbeef", False),
    ],
)
def test_loopback_registries_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback_registry(host) is loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("[::ffff:7f00:1]:5000", True),
        ("[::ffff:127.0.0.1]", True),
        ("[::FFFF:127.0.0.2]:443", True),
        ("[::ffff:0.0.0.0]:5000", True),
        ("[::ffff:169.254.169.254]", True),
        ("[::ffff:10.0.0.5]:5000", False),
    ],
)
def test_ipv4_mapped_loopback_registries_are_recognised(host: str, loopback: bool) -> None:
    """Found by the second attack review: an IPv4-mapped IPv6 literal reaches the IPv4
    address (Go's net.Dial), yet was not taken for loopback (the old check asked ipaddress's
    is_loopback of the IPv6 address, which is false). Closed: the mapped address is judged."""
    assert is_loopback_registry(host) is loopback
    assert ("loopback" in (pull_problem(Guardrails(), f"{host}/x") or "")) is loopback


def test_pulls_are_judged_by_images_when_set() -> None:
    """Without `images`, only loopback registries are refused; with it, only what it lists
    may be pulled (a loopback registry included, when listed)."""
    assert pull_problem(Guardrails(), "busybox:latest") is None
    assert pull_problem(Guardrails(), "10.0.0.5:5000/team/app") is None
    assert "loopback" in (pull_problem(Guardrails(), "127.0.0.1:5000/x") or "")
    local = Guardrails(images=("localhost:5000/*",))
    assert pull_problem(local, "localhost:5000/tools") is None
    assert pull_problem(local, "busybox") == "pulling 'busybox' is not allowed (images)"
    official = Guardrails(images=("docker.io/library/*",))
    assert pull_problem(official, "busybox") is None
    assert pull_problem(official, "sha256:" + "a" * 64) is not None


def test_the_loader_reads_buildkit() -> None:
    text = POLICY % "true"
    guardrails = parse_policy_text(text, "p.yaml").policies["builder"].guardrails
    assert guardrails == Guardrails(buildkit=True)
    guardrails = parse_policy_text(POLICY % "false", "p.yaml").policies["builder"].guardrails
    assert guardrails == Guardrails()


def _grpc_upgrade(address: pathlib.Path) -> tuple[int, bytes]:
    """`POST /grpc` with `Upgrade: h2c`, as buildx sends it: the status and the body."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(address))
        s.sendall(
            b"POST /v1.41/grpc HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\nContent-Length: 0\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            piece = s.recv(4096)
            if not piece:
                break
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            piece = s.recv(4096)
            if not piece:
                break
            rest += piece
    return status, rest[:length]


@pytest.mark.daemon
@pytest.mark.skipif(
    os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
    reason="DOCKGATE_TEST_DIRECT=1: this is about the gateway's guardrails",
)
@pytest.mark.parametrize("buildkit", [False, True])
def test_buildkit_control_api_needs_the_guardrail(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, buildkit: bool
) -> None:
    """Under the default guardrails `POST /grpc` gets dockgate's 403 and no tunnel; with
    `buildkit: true` the daemon itself switches protocols (101), as it does without dockgate."""
    policy = tmp_path / "builder.yaml"
    policy.write_text(textwrap.dedent(POLICY % ("true" if buildkit else "false")))
    listen = tmp_path / "gw.sock"
    with running(Gateway(daemon.host, listen=f"unix://{listen}", policy=policy)):
        status, body = _grpc_upgrade(listen)
    if buildkit:
        assert status == 101
    else:
        assert status == 403
        message = json.loads(body)["message"]
        assert message.startswith("dockgate: GrpcSession denied by policy builder: ")
        assert "BuildKit's control API (docker buildx) cannot be judged" in message
    assert _grpc_upgrade(daemon.socket_path)[0] == 101  # the daemon's own answer


@pytest.mark.parametrize(
    ("term", "refused"),
    [
        ("busybox", False),  # Docker Hub
        ("library/busybox", False),  # Docker Hub: no dot, colon or localhost before the `/`
        ("registry.example.com/app", False),
        ("127.0.0.1:5000/x", True),
        ("localhost/x", True),
        ("LOCALHOST:5000/x", True),
        ("[::1]:5000/x", True),
    ],
)
def test_searches_of_loopback_registries_are_refused(term: str, refused: bool) -> None:
    """ImageSearch makes the daemon contact the registry a term names (review 3)."""
    assert (search_problem(Guardrails(), term) is not None) is refused
    listed = Guardrails(images=("localhost:5000/*",))
    assert search_problem(listed, "localhost:5000/tools") is None
