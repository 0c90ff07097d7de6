"""Redaction by effect against the real daemon (issue 11, finding 5): a running container with a
secret in its environment and in a label, and a host directory bind-mounted; a named volume that
binds another host directory; an image committed from the container (its Config carries the
container's Env and Labels). Through a gateway whose policy redacts env, mounts and labels, no
answer to an allowed read holds the secret or either host path, in the raw bytes; straight from
the daemon the same reads do hold them (the test is not vacuous).

Before this change, `top?ps_args=auxe` printed the environment and `/v1.19/containers/X/json`
carried the bind's host path in `Volumes`; image, volume and df answers were not redacted at all.

Not tested here: legacy links' injected environment. The test daemon runs with `--bridge=none`,
and links only inject `ALIAS_ENV_*` on the default bridge; moby puts them in the process's
environment only (daemon/oci_linux.go: `CreateDaemonEnvironment(..., linkedEnv)`), never in
Config.Env, so what shows them is `top` with `e` (refused here) and the workload's own output.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.rawhttp import dechunk, parse_head

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(180)]

SECRET = "s3cret-env-canary-5e1"
LABEL_SECRET = "s3cret-label-canary-9a2"
POLICY = """\
policies:
  dashboard:
    read_only: true
    redact: {env: true, mounts: true, labels: true}
    rules:
      - allow: {sections: [ping, version, info, containers, images, volumes, networks, system]}
"""


@dataclass(frozen=True)
class Planted:
    container: str
    volume: str
    image: str
    bind_path: str  # host directory bind-mounted into the container
    volume_path: str  # host directory the volume binds

    @property
    def canaries(self) -> tuple[str, ...]:
        return (SECRET, LABEL_SECRET, self.bind_path, self.volume_path)


@pytest.fixture(scope="module")
def planted(daemon: PrivateDaemon, busybox_image: str) -> Iterator[Planted]:
    tag = os.urandom(3).hex()
    bind_path = f"/tmp/dgt-bind-hostpath-{tag}"
    volume_path = f"/tmp/dgt-volume-hostpath-{tag}"
    for path in (bind_path, volume_path):
        pathlib.Path(path).mkdir()
    name, volume, image = f"dgt-bypass-{tag}", f"dgt-bypass-vol-{tag}", f"dgt-bypass-img:{tag}"
    daemon.docker(
        "volume", "create", "--label", f"owner={LABEL_SECRET}", "-o", "type=none",
        "-o", "o=bind", "-o", f"device={volume_path}", volume,
    )  # fmt: skip
    daemon.docker(
        "run", "-d", "--name", name, "-e", f"DB_PASSWORD={SECRET}",
        "--label", f"api.token={LABEL_SECRET}", "-v", f"{bind_path}:/data:ro",
        "-v", f"{volume}:/vol", busybox_image, "sleep", "600",
    )  # fmt: skip
    daemon.docker("commit", name, image)
    yield Planted(name, volume, image, bind_path, volume_path)
    daemon.docker("rm", "-f", name, check=False)
    daemon.docker("rmi", "-f", image, check=False)
    daemon.docker("volume", "rm", "-f", volume, check=False)
    for path in (bind_path, volume_path):
        pathlib.Path(path).rmdir()


@pytest.fixture(scope="module")
def dashboard(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    policy = tmp_path_factory.mktemp("bypass") / "policy.yaml"
    policy.write_text(POLICY)
    with running(Gateway(daemon.host, policy=str(policy))) as gw:
        yield gw


def _get(sock: socket.socket, target: str) -> tuple[int, bytes]:
    """One GET on a fresh connection: the status and the whole answer, head and body (chunks
    joined, so a canary split across two chunks is still found)."""
    with sock:
        sock.settimeout(30)
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return status, head + b"\r\n\r\n" + body


def _via_gateway(gw: Gateway, target: str) -> tuple[int, bytes]:
    return _get(socket.create_connection(("127.0.0.1", gw.port)), target)


def _direct(daemon: PrivateDaemon, target: str) -> tuple[int, bytes]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket_path))
    return _get(sock, target)


# Every read: (target, the canaries the daemon's own answer holds). `{c}` is the container,
# `{v}` the volume, `{i}` the committed image.
READS = [
    ("/v1.19/containers/{c}/json", ("env", "label", "bind")),  # Volumes, VolumesRW
    ("/v1.20/containers/{c}/json", ("env", "label", "bind")),
    ("/v1.24/containers/{c}/json", ("env", "label", "bind")),
    ("/v1.41/containers/{c}/json", ("env", "label", "bind")),
    ("/containers/{c}/json?size=1", ("env", "label", "bind")),
    ("/v1.19/containers/json?all=1", ("label", "bind")),
    ("/v1.41/containers/json?all=1", ("label", "bind")),
    ("/containers/{c}/top", ()),
    ("/containers/{c}/top?ps_args=aux", ()),
    ("/containers/{c}/top?ps_args=-eo%20pid,args", ()),
    ("/v1.41/images/{i}/json", ("env", "label")),  # the committed container's Config
    ("/v1.24/images/{i}/json", ("env", "label")),
    ("/images/json", ("label",)),
    ("/images/{i}/history", ()),
    ("/volumes", ("label", "volume")),
    ("/volumes/{v}", ("label", "volume")),
    ("/system/df", ("label", "bind")),
    ("/v1.24/system/df", ("label", "bind")),
    ("/info", ()),
    ("/networks", ()),
]


def _canaries(planted: Planted, kinds: tuple[str, ...]) -> list[str]:
    by_kind = {
        "env": SECRET,
        "label": LABEL_SECRET,
        "bind": planted.bind_path,
        "volume": planted.volume_path,
    }
    return [by_kind[k] for k in kinds]


@pytest.mark.parametrize(("template", "shows"), READS)
def test_no_allowed_read_shows_the_secrets(
    template: str,
    shows: tuple[str, ...],
    planted: Planted,
    dashboard: Gateway,
    daemon: PrivateDaemon,
) -> None:
    """Straight from the daemon the answer holds the canaries it should; through the gateway it
    is allowed (200) and holds none of them."""
    target = template.format(c=planted.container, v=planted.volume, i=planted.image)
    status, direct = _direct(daemon, target)
    assert status == 200, direct[:300]
    for canary in _canaries(planted, shows):
        assert canary.encode() in direct, (target, canary)
    status, answer = _via_gateway(dashboard, target)
    assert status == 200, answer[:300]
    leaked = [c for c in planted.canaries if c.encode() in answer]
    assert not leaked, (target, leaked)


@pytest.mark.parametrize(
    "ps_args",
    ["auxe", "e", "-ex", "-eHT", "aux%20e", "-ef%20u%20e"],
)
def test_top_that_prints_environments_is_refused(
    ps_args: str, planted: Planted, dashboard: Gateway, daemon: PrivateDaemon
) -> None:
    """`top?ps_args=auxe` printed the container's environment through a policy that redacts it
    (finding 5); each of these prints the secret straight from the daemon, and is refused."""
    target = f"/containers/{planted.container}/top?ps_args={ps_args}"
    status, direct = _direct(daemon, target)
    if ps_args in ("auxe", "e", "-ex"):
        assert status == 200 and SECRET.encode() in direct, direct[:500]
    status, answer = _via_gateway(dashboard, target)
    assert status == 403, answer[:300]
    assert SECRET.encode() not in answer
    body = answer.partition(b"\r\n\r\n")[2]
    assert "environments are redacted" in json.loads(body)["message"]


def test_filters_that_match_hidden_values_are_refused(
    planted: Planted, dashboard: Gateway, daemon: PrivateDaemon
) -> None:
    """`volume=/host/path` finds the containers that bind a path, `label=k=v` those with a
    hidden label's value: the daemon answers them, the gateway refuses them."""
    for filters in ({"volume": [planted.bind_path]}, {"label": [f"api.token={LABEL_SECRET}"]}):
        query = "filters=" + urllib.parse.quote(json.dumps(filters))
        status, direct = _direct(daemon, f"/containers/json?{query}")
        assert status == 200 and planted.container.encode() in direct
        status, answer = _via_gateway(dashboard, f"/containers/json?{query}")
        assert status == 403, answer[:300]


WRITER_POLICY = """\
policies:
  writer:
    redact: {mounts: true, labels: true}
    rules:
      - allow: {sections: [ping, version, volumes]}
"""


def test_creating_an_existing_volume_does_not_show_it(
    planted: Planted, daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """`POST /volumes/create` with an existing volume's name answers 201 with that volume, its
    labels and options included; it was not redacted (only 200 answers were held)."""
    body = json.dumps({"Name": planted.volume}).encode()
    raw = (
        f"POST /volumes/create HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket_path))
    direct = _send(sock, raw)
    assert direct.startswith(b"HTTP/1.1 201") and planted.volume_path.encode() in direct
    assert LABEL_SECRET.encode() in direct
    policy = tmp_path / "policy.yaml"
    policy.write_text(WRITER_POLICY)
    with running(Gateway(daemon.host, policy=str(policy))) as gw:
        answer = _send(socket.create_connection(("127.0.0.1", gw.port)), raw)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert planted.volume.encode() in answer
    assert planted.volume_path.encode() not in answer and LABEL_SECRET.encode() not in answer


def _send(sock: socket.socket, raw: bytes) -> bytes:
    with sock:
        sock.settimeout(30)
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


OWNERSHIP_POLICY = """\
policies:
  shared:
    ownership: true
    redact: {labels: true, mounts: true}
    rules:
      - allow: {sections: [ping, version, volumes]}
bindings:
  - {policy: shared, authenticated: true}
"""


def test_ownership_still_judges_a_redacted_volume_create(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """With ownership and redaction both on, `VolumeCreate` of another caller's volume name is
    still the ownership 409 (redaction of 201 answers must not take its place), and the
    caller's own volume comes back with its labels hidden."""
    from support.remote import write_htpasswd  # noqa: PLC0415

    users = {"alice": "alice-pw", "bob": "bob-pw"}
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, users)
    policy = tmp_path / "policy.yaml"
    policy.write_text(OWNERSHIP_POLICY)
    name = f"dgt-bypass-own-{os.urandom(3).hex()}"
    body = json.dumps({"Name": name, "Labels": {"note": LABEL_SECRET}}).encode()

    def create(port: int, user: str) -> bytes:
        token = base64.b64encode(f"{user}:{users[user]}".encode()).decode()
        raw = (
            f"POST /volumes/create HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        return _send(socket.create_connection(("127.0.0.1", port)), raw)

    gateway = Gateway(daemon.host, "--htpasswd", str(htpasswd), policy=str(policy))
    try:
        with running(gateway) as gw:
            mine = create(gw.port, "alice")
            assert mine.startswith(b"HTTP/1.1 201"), mine[:300]
            assert name.encode() in mine and LABEL_SECRET.encode() not in mine
            theirs = create(gw.port, "bob")
            assert theirs.startswith(b"HTTP/1.1 409"), theirs[:300]
            assert LABEL_SECRET.encode() not in theirs
    finally:
        daemon.docker("volume", "rm", "-f", name, check=False)
