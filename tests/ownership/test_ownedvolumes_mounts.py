"""Ownership mode: a new container's named volumes are checked after the create
(ownedvolumes.settle_create), and the volumes the gateway made for a refused create removed.

Unit tests pin settle_create's decisions against a fake daemon (what it removes, and how);
the end-to-end tests show the ordinary flows still work through the gateway against the real
daemon (the docker CLI's and the SDK's `run -v NAME:/data` of a new and of an existing volume
of the caller's, a create with anonymous volumes only), and measure what the check adds to
one ContainerCreate. The races themselves are in test_attacks_volume_swaps.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from dockgate.addresses import parse_address
from dockgate.ownership import volumes as ownedvolumes
from dockgate.ownership.lookup import LookupError_
from dockgate.ownership.operations import OWNER_LABEL
from dockgate.ownership.volumes import Settled, foreign_mount, settle_create, sweep_mounts
from support.attack import Api, direct, running_tenants, tenants_policy
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.remote import basic_header, write_htpasswd

ADDRESS = parse_address("tcp://127.0.0.1:1")
CID = "c" * 64
BOB = "user:bob"


class FakeDaemon:
    """Answers ask_json by (method, path); records every call."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, object]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    async def ask_json(
        self, address: object, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, object]:
        self.calls.append((method, path))
        answer = self.answers.get((method, path))
        if answer is None:
            raise LookupError_(f"no answer for {method} {path}")
        return answer

    async def get_json(self, address: object, path: str) -> tuple[int, object]:
        return await self.ask_json(address, "GET", path)


def _volume(owner: str | None) -> tuple[int, object]:
    return 200, {"Name": "v", "Labels": {OWNER_LABEL: owner} if owner else {}}


def _inspect(*mounts: tuple[str, str]) -> tuple[int, object]:
    return 200, {"Id": CID, "Mounts": [{"Type": kind, "Name": name} for kind, name in mounts]}


def _settle(
    fake: FakeDaemon,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    raw: bytes,
    *,
    names: frozenset[str],
    made: tuple[str, ...] = (),
) -> Settled:
    monkeypatch.setattr(ownedvolumes, "ask_json", fake.ask_json)
    monkeypatch.setattr(ownedvolumes, "get_json", fake.get_json)
    return asyncio.run(settle_create(ADDRESS, status, raw, names=names, made=made, owner=BOB))


CREATED = json.dumps({"Id": CID, "Warnings": []}).encode()
REMOVE = ("DELETE", f"/containers/{CID}?force=1&v=1")


def test_all_the_callers_volumes_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each named volume mounted is looked up by exact name; an anonymous one (a name the
    caller did not give) and a bind are not; nothing is removed."""
    fake = FakeDaemon(
        {
            ("GET", f"/containers/{CID}/json"): _inspect(
                ("volume", "mine"), ("volume", "a" * 64), ("bind", "mine")
            ),
            ("GET", "/volumes/mine"): _volume(BOB),
        }
    )
    assert _settle(fake, monkeypatch, 201, CREATED, names=frozenset({"mine"})) == Settled()
    assert fake.calls == [("GET", f"/containers/{CID}/json"), ("GET", "/volumes/mine")]


@pytest.mark.parametrize("owner", ["user:alice", None])
def test_someone_elses_volume_removes_the_container(
    monkeypatch: pytest.MonkeyPatch, owner: str | None
) -> None:
    """A mounted volume of someone else's (or nobody's): the container is removed with v=1
    (anonymous volumes only: moby removeMountPoints keeps named ones, so hers stays) and the
    volumes the gateway made, still bob's, go too. Failed before (no check at all)."""
    fake = FakeDaemon(
        {
            ("GET", f"/containers/{CID}/json"): _inspect(("volume", "mine"), ("volume", "v")),
            ("GET", "/volumes/mine"): _volume(BOB),
            ("GET", "/volumes/v"): _volume(owner),
            REMOVE: (204, None),
            ("DELETE", "/volumes/mine"): (409, {"message": "in use"}),
        }
    )
    settled = _settle(
        fake, monkeypatch, 201, CREATED, names=frozenset({"mine", "v"}), made=("mine",)
    )
    assert settled == Settled(foreign="v")
    assert REMOVE in fake.calls
    assert ("DELETE", "/volumes/v") not in fake.calls


@pytest.mark.parametrize(
    "inspect",
    [(500, {"message": "boom"}), (200, {"Id": CID}), None],
    ids=["daemon-500", "no-mounts", "unreachable"],
)
def test_a_check_that_fails_removes_the_container(
    monkeypatch: pytest.MonkeyPatch, inspect: tuple[int, object] | None
) -> None:
    """Fail closed: an inspect that fails (or answers without Mounts) is a 502 and the
    container is removed."""
    answers: dict[tuple[str, str], tuple[int, object]] = {REMOVE: (204, None)}
    if inspect is not None:
        answers["GET", f"/containers/{CID}/json"] = inspect
    fake = FakeDaemon(answers)
    settled = _settle(fake, monkeypatch, 201, CREATED, names=frozenset({"mine"}))
    assert settled.failure is not None and settled.foreign is None
    assert REMOVE in fake.calls


def test_an_answer_without_a_full_id_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeDaemon({})
    for raw in (b"", b"{}", json.dumps({"Id": "../../x"}).encode()):
        settled = _settle(fake, monkeypatch, 201, raw, names=frozenset({"mine"}))
        assert settled.failure is not None
    assert fake.calls == []


def test_a_refused_create_removes_the_made_volumes_still_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a 201: each volume the gateway made is removed while it is still bob's (one that
    is alice's by now stays). Nothing else is asked. Failed before (all left)."""
    fake = FakeDaemon(
        {
            ("GET", "/volumes/a"): _volume(BOB),
            ("DELETE", "/volumes/a"): (204, None),
            ("GET", "/volumes/b"): _volume("user:alice"),
            ("GET", "/volumes/c%2Fd"): (404, {"message": "no such volume"}),
        }
    )
    settled = _settle(
        fake, monkeypatch, 404, b"{}", names=frozenset({"a", "b", "x"}), made=("a", "b", "c/d")
    )
    assert settled == Settled()
    assert [call for call in fake.calls if call[0] == "DELETE"] == [("DELETE", "/volumes/a")]


def test_a_sweep_removes_the_callers_containers_mounting_anothers_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client left before its create's answer could be checked (the upstream is closed,
    the container's ID unknown): bob's containers mounting the names are listed (his label,
    the volume), each checked, the one mounting alice's `v` removed, his own left; then the
    volumes made for the create go if still his. Failed before (nothing looked)."""
    other = "d" * 64
    listed = (200, [{"Id": CID}, {"Id": other}])
    fake = FakeDaemon(
        {
            ("GET", f"/containers/{CID}/json"): _inspect(("volume", "v")),
            ("GET", f"/containers/{other}/json"): _inspect(("volume", "mine")),
            ("GET", "/volumes/v"): _volume("user:alice"),
            ("GET", "/volumes/mine"): _volume(BOB),
            REMOVE: (204, None),
            ("DELETE", "/volumes/mine"): (409, {"message": "in use"}),
        }
    )
    for name in ("mine", "v"):
        filters = {"label": [f"{OWNER_LABEL}={BOB}"], "volume": [name]}
        fake.answers[
            "GET", f"/containers/json?all=1&filters={quote(json.dumps(filters), safe='')}"
        ] = listed
    monkeypatch.setattr(ownedvolumes, "ask_json", fake.ask_json)
    monkeypatch.setattr(ownedvolumes, "get_json", fake.get_json)
    monkeypatch.setattr(ownedvolumes, "SWEEP_DELAYS", (0.0,))
    asyncio.run(sweep_mounts(ADDRESS, frozenset({"mine", "v"}), ("mine",), BOB))
    deletes = [call for call in fake.calls if call[0] == "DELETE"]
    assert REMOVE in deletes
    assert ("DELETE", f"/containers/{other}?force=1&v=1") not in deletes
    assert deletes[-1] == ("DELETE", "/volumes/mine")


# ----- end to end ------------------------------------------------------------------------------

RUN = os.urandom(3).hex()
POLICY = tenants_policy("ping, version, info, events, containers, exec, images, volumes")


@pytest.fixture(scope="module")
def bob(
    daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    base = tmp_path_factory.mktemp("ownvol-mounts")
    with running_tenants(daemon, base, POLICY, {"bob": "bob-pw"}) as apis:
        yield apis["bob"]


def _cli(bob: Api, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.json").write_text(
        json.dumps({"HttpHeaders": {"Authorization": bob.authorization}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {"DOCKER_HOST": bob.gateway.url, "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "0"}
    return subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _owner(daemon: PrivateDaemon, name: str) -> str | None:
    status, volume = direct(daemon, "GET", f"/volumes/{name}")
    assert status == 200, (status, volume)
    labels = volume.get("Labels") or {}
    return labels.get(OWNER_LABEL)


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_cli_run_with_a_new_then_an_existing_volume(
    bob: Api, daemon: PrivateDaemon, busybox_image: str, tmp_path: Path
) -> None:
    """`docker run --rm -v NAME:/data` of a new volume (the gateway makes it, bob's), then of
    the same volume again (it exists, his): both run, the data is kept; and a run with an
    anonymous volume only."""
    name = f"dgo-ownvol-{RUN}-cli"
    try:
        first = _cli(bob, tmp_path, "run", "--rm", "-v", f"{name}:/data", busybox_image,
                     "sh", "-c", "echo kept > /data/f && cat /data/f")  # fmt: skip
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == "kept"
        assert _owner(daemon, name) == "user:bob"
        again = _cli(bob, tmp_path, "run", "--rm", "-v", f"{name}:/data", busybox_image,
                     "cat", "/data/f")  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == "kept"
        anonymous = _cli(bob, tmp_path, "run", "--rm", "-v", "/data", busybox_image,
                         "sh", "-c", "echo anon > /data/f && cat /data/f")  # fmt: skip
        assert anonymous.returncode == 0, anonymous.stderr
        assert anonymous.stdout.strip() == "anon"
    finally:
        daemon.docker("volume", "rm", "-f", name, check=False)


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_sdk_run_with_a_new_then_an_existing_volume(
    bob: Api, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """The same through the docker SDK (its `volumes=` and `mounts=` forms)."""
    docker = pytest.importorskip("docker")
    name = f"dgo-ownvol-{RUN}-sdk"
    client = docker.DockerClient(
        base_url=bob.gateway.url.replace("tcp://", "http://"), version="1.41"
    )
    client.api.headers["Authorization"] = bob.authorization
    try:
        out = client.containers.run(
            busybox_image,
            ["sh", "-c", "echo sdk > /data/f && cat /data/f"],
            volumes={name: {"bind": "/data", "mode": "rw"}},
            remove=True,
        )
        assert out.strip() == b"sdk"
        assert _owner(daemon, name) == "user:bob"
        mount = docker.types.Mount("/data", name, type="volume")
        out = client.containers.run(busybox_image, ["cat", "/data/f"], mounts=[mount], remove=True)
        assert out.strip() == b"sdk"
    finally:
        client.close()
        daemon.docker("volume", "rm", "-f", name, check=False)


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_a_create_with_anonymous_volumes_only_is_not_held(
    bob: Api, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """A body naming no volume (only `Volumes`/an anonymous `-v /data`) goes through as before:
    201, and the container mounts its own anonymous volume."""
    cid = bob.create(
        {"Image": busybox_image, "Cmd": ["true"], "Volumes": {"/data": {}}, "HostConfig": {}}
    )
    try:
        status, inspected = direct(daemon, "GET", f"/containers/{cid}/json")
        assert status == 200
        assert [m["Type"] for m in inspected["Mounts"]] == ["volume"]
    finally:
        daemon.docker("rm", "-f", "-v", cid, check=False)


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_measure_the_added_latency(
    bob: Api, daemon: PrivateDaemon, busybox_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the check adds to one ContainerCreate (one inspect and one look-up per named
    volume: foreign_mount against the real daemon), beside the whole create through the
    gateway. Printed, not asserted (a shared CI machine)."""
    names = [f"dgo-ownvol-{RUN}-lat-{i}" for i in range(3)]
    made: list[str] = []
    try:
        for name in names:
            assert bob.call("POST", "/v1.41/volumes/create", {"Name": name})[0] == 201
        address = parse_address(daemon.host)
        results: dict[int, tuple[float, float]] = {}
        for count in (1, 3):
            body: dict[str, Any] = {
                "Image": busybox_image,
                "Cmd": ["true"],
                "HostConfig": {"Binds": [f"{n}:/v{i}" for i, n in enumerate(names[:count])]},
            }
            creates: list[float] = []
            checks: list[float] = []
            for _ in range(7):
                started = time.perf_counter()
                cid = bob.create(body)
                creates.append(time.perf_counter() - started)
                made.append(cid)
                started = time.perf_counter()
                foreign = asyncio.run(
                    foreign_mount(address, cid, frozenset(names[:count]), "user:bob")
                )
                checks.append(time.perf_counter() - started)
                assert foreign is None
            results[count] = (statistics.median(creates), statistics.median(checks))
        with capsys.disabled():
            for count, (create, check) in results.items():
                print(
                    f"\n[latency] ContainerCreate with {count} named volume(s) through the "
                    f"gateway: median {create * 1000:.1f} ms; the mounts' check alone: "
                    f"{check * 1000:.1f} ms"
                )
    finally:
        if made:
            daemon.docker("rm", "-f", *made, check=False)
        daemon.docker("volume", "rm", "-f", *names, check=False)


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_a_create_refused_while_the_gateway_makes_volumes_leaves_none(
    bob: Api, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """The gateway makes the missing volumes one after another; when one is refused (a name
    the local driver refuses), the create is refused and the ones already made are removed.
    Failed before (the first volume stayed)."""
    made = f"dgo-ownvol-{RUN}-first"
    status, answer = bob.call(
        "POST",
        "/v1.41/containers/create",
        {"Image": busybox_image, "HostConfig": {"Binds": [f"{made}:/a", "x!y:/b"]}},
    )
    try:
        assert status == 400, (status, answer)
        assert "x!y" in answer["message"], answer
        status, volume = direct(daemon, "GET", f"/volumes/{made}")
        assert status == 404, (status, volume)
    finally:
        daemon.docker("volume", "rm", "-f", made, check=False)


class SlowCreateRelay:
    """TCP on 127.0.0.1 to the daemon's unix socket, holding each container create `delay`
    seconds before passing it on, and passing it on even when the gateway has hung up by
    then (as a daemon that already had the request would go on with it)."""

    def __init__(self, socket_path: str, delay: float) -> None:
        self.socket_path = socket_path
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.creates = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(self.socket_path)

        def back() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    client.sendall(data)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)  # a FIN, whatever the other thread holds

        threading.Thread(target=back, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if b"/containers/create" in data:
                    self.creates += 1
                    time.sleep(self.delay)
                upstream.sendall(data)
        time.sleep(self.delay)  # the daemon finishes what it was given
        upstream.close()
        client.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_a_client_gone_before_the_check_leaves_no_container_on_anothers_volume(
    daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """bob's create of `V` (his) is forwarded; he hangs up at once, which closes the
    gateway's upstream connection, so the answer (and its check) never comes. Meanwhile he
    removes `V` and alice creates hers; the daemon then handles the create and mounts hers
    (a relay holds the create a second to make that order certain). The gateway sweeps bob's
    containers mounting `V` when the exchange ends unanswered: none is left mounting alice's
    volume (he would find it in his list and start it). Failed without the sweep."""
    base = tmp_path_factory.mktemp("ownvol-gone")
    relay = SlowCreateRelay(str(daemon.socket_path), 1.0)
    users = {"alice": "alice-pw", "bob": "bob-pw"}
    write_htpasswd(base / "htpasswd", users)
    (base / "policy.yaml").write_text(POLICY)
    gateway = Gateway(
        f"tcp://127.0.0.1:{relay.port}",
        *("--htpasswd", str(base / "htpasswd"), "--auth-failures", "0"),
        policy=str(base / "policy.yaml"),
    )
    name = f"dgo-ownvol-{RUN}-gone"
    try:
        with running(gateway) as started:
            alice = Api(started, basic_header("alice", "alice-pw"))
            bob = Api(started, basic_header("bob", "bob-pw"))
            assert bob.call("POST", "/v1.41/volumes/create", {"Name": name})[0] == 201
            body = json.dumps(
                {"Image": busybox_image, "Cmd": ["true"], "HostConfig": {"Binds": [f"{name}:/d"]}}
            ).encode()
            request = (
                "POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
                f"Authorization: {bob.authorization}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            with socket.create_connection(("127.0.0.1", started.port)) as conn:
                conn.sendall(request)
                deadline = time.monotonic() + 10
                while relay.creates == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert relay.creates == 1  # forwarded: every look-up was done
            # bob gone; while the relay holds his create, the swap.
            assert direct(daemon, "DELETE", f"/volumes/{name}")[0] == 204
            status, _ = alice.call("POST", "/v1.41/volumes/create", {"Name": name})
            assert status == 201
            time.sleep(1.5)  # the create lands (mounting alice's volume)
            query = quote(json.dumps({"volume": [name]}))
            deadline = time.monotonic() + 15
            users_of: list[Any] = [None]
            while users_of and time.monotonic() < deadline:
                status, users_of = direct(daemon, "GET", f"/containers/json?all=1&filters={query}")
                time.sleep(0.5)
            assert users_of == [], users_of
            status, volume = direct(daemon, "GET", f"/volumes/{name}")
            assert volume["Labels"][OWNER_LABEL] == "user:alice", volume
    finally:
        relay.close()
        query = quote(json.dumps({"volume": [name]}))
        status, left = direct(daemon, "GET", f"/containers/json?all=1&filters={query}")
        if status == 200 and left:
            daemon.docker("rm", "-f", *(entry["Id"] for entry in left), check=False)
        daemon.docker("volume", "rm", "-f", name, check=False)
