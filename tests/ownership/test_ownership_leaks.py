"""The small cross-tenant leaks of ownership mode (issue 12, item 8), by effect on the real
daemon with two tenants, alice and bob: each leak is first shown in the daemon's own answer
(what bob got through dockgate before the fix), then closed through dockgate.

- `GET /info` counted every tenant's containers: bob saw `ContainersRunning` grow when alice
  started hers. Now 0 (and images, event listeners, descriptors, goroutines), while the docker
  CLI and docker-py still read the daemon's version and OS from it.
- `DELETE /images/X` answered 409 with the ID of alice's container using the image.
- `docker ps --filter before=<alice's container>` listed bob's containers created before
  alice's, and an error or not told whether alice's container existed.
- In a swarm, `docker service ps <alice's service>` answered bob an empty list where a
  missing service is a 404, and a port alice's service publishes answered bob's service
  create with her service's name and ID.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from dockgate.ownership.answers import INFO_COUNTS
from support.attack import (
    ATTACK_MARKS,
    TENANT_USERS,
    Api,
    direct,
    leftovers_fixture,
    tenants_fixture,
    tenants_policy,
)
from support.daemon import PrivateDaemon
from support.swarm import single_node_swarm

pytestmark = ATTACK_MARKS

USERS = TENANT_USERS
PUBLISHED_PORT = 38000 + int.from_bytes(os.urandom(1), "big") % 100
TENANTS_POLICY = tenants_policy(
    "ping, version, info, events, containers, images, volumes, services, tasks",
    more=f"    guardrails: {{host_ports: [{PUBLISHED_PORT}]}}\n",
    bindings="  - {policy: tenants, anonymous: true}\n",
)
RUN = os.urandom(3).hex()


tenants = tenants_fixture(TENANTS_POLICY, "leaks-tenants")


leftovers = leftovers_fixture()


def _container(api: Api, image: str, leftovers: dict[str, list[str]], name: str = "") -> str:
    cid = api.create({"Image": image, "Cmd": ["sleep", "120"]}, name)
    leftovers["container"].append(cid)
    return cid


# ----- /info ------------------------------------------------------------------------------------


def test_info_does_not_count_other_tenants_containers(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: dict[str, list[str]],
) -> None:
    """Fails on the old code: bob's /info showed the daemon's counts, alice's container
    included."""
    alice, bob = tenants["alice"], tenants["bob"]
    _, before = direct(daemon, "GET", "/v1.41/info")
    cid = _container(alice, busybox_image, leftovers)
    alice.start(cid)
    _, after = direct(daemon, "GET", "/v1.41/info")
    # The leak, straight from the daemon: alice's `docker run` is a running container more.
    assert after["ContainersRunning"] == before["ContainersRunning"] + 1
    assert after["Containers"] >= 1 and after["Images"] >= 1
    status, info = bob.call("GET", "/v1.41/info")
    assert status == 200, info
    assert {key: info[key] for key in INFO_COUNTS} == dict.fromkeys(INFO_COUNTS, 0)
    # What clients read from it is the daemon's.
    for key in ("ID", "ServerVersion", "OperatingSystem", "OSType", "NCPU", "MemTotal", "Swarm"):
        assert info[key] == after[key], key
    # An old API version's answer too (its own shape, moby's v1p24 Info below 1.25), and an
    # anonymous caller's (who owns nothing but may read /info).
    status, old = bob.call("GET", "/v1.24/info")
    assert status == 200 and old["ContainersRunning"] == 0 and old["Containers"] == 0, old
    status, anonymous = Api(bob.gateway).call("GET", "/v1.41/info")
    assert status == 200 and anonymous["ServerVersion"] == after["ServerVersion"], anonymous
    assert {key: anonymous[key] for key in INFO_COUNTS} == dict.fromkeys(INFO_COUNTS, 0)


def _client_config(directory: pathlib.Path, user: str) -> dict[str, str]:
    """The environment of a docker CLI that sends `user`'s Basic credentials."""
    directory.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    headers = {"HttpHeaders": {"Authorization": f"Basic {token}"}}
    (directory / "config.json").write_text(json.dumps(headers))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    return env | {"DOCKER_CONFIG": str(directory)}


def test_docker_info_and_docker_py_still_read_info(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: dict[str, list[str]],
    tmp_path: pathlib.Path,
) -> None:
    """`docker info` (the CLI) and docker-py's `client.info()` through the gateway: the
    daemon's version and OS, counts 0, with a container of alice's running."""
    alice, bob = tenants["alice"], tenants["bob"]
    alice.start(_container(alice, busybox_image, leftovers))
    _, truth = direct(daemon, "GET", "/v1.41/info")
    env = _client_config(tmp_path / "bob", "bob") | {"DOCKER_HOST": bob.gateway.url}
    shown = subprocess.run(
        ["docker", "info", "--format", "{{json .}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cli = json.loads(shown.stdout)
    assert (cli["ServerVersion"], cli["OperatingSystem"]) == (
        truth["ServerVersion"],
        truth["OperatingSystem"],
    )
    assert (cli["Containers"], cli["ContainersRunning"], cli["Images"]) == (0, 0, 0)
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{bob.gateway.port}", version="1.41")
    try:
        client.api.headers["Authorization"] = bob.authorization
        info: dict[str, Any] = client.info()
        assert client.version()["Version"] == truth["ServerVersion"]
    finally:
        client.close()
    assert info["OSType"] == truth["OSType"] and info["ContainersRunning"] == 0


# ----- ImageDelete's 409 ----------------------------------------------------------------------


@pytest.fixture
def lone_image(daemon: PrivateDaemon, busybox_image: str) -> Iterator[tuple[str, str]]:
    """An image of its own under one tag (committed straight on the daemon): its tag and ID.
    Removing it conflicts with any container made from it."""
    tag = f"dockgate-leaks/lone-{RUN}:1"
    source = f"dockgate-leaks-source-{RUN}-{os.urandom(2).hex()}"
    daemon.docker("create", "--name", source, busybox_image, "true")
    try:
        daemon.docker("commit", source, tag)
    finally:
        daemon.docker("rm", "-f", source, check=False)
    image_id = daemon.docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.decode().strip()
    yield tag, image_id
    daemon.docker("rmi", "-f", image_id, check=False)


@pytest.mark.parametrize(
    "case",
    [
        # alice's container running?, the image deleted by ID (else by its one tag), the 409
        (False, False, "- a container is using its referenced image"),
        (False, True, "(in use) - image is being used by a container: remove"),
        (True, True, "(in use) - image is being used by a container: remove"),
    ],
)
def test_image_delete_conflict_names_no_container(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    lone_image: tuple[str, str],
    leftovers: dict[str, list[str]],
    case: tuple[bool, bool, str],
) -> None:
    """Fails on the old code: bob's `docker rmi` of an image alice's container uses answered
    with that container's ID (its first 12 digits, enough to name it to the daemon)."""
    running, by_id, conflict = case
    alice, bob = tenants["alice"], tenants["bob"]
    tag, image_id = lone_image
    cid = _container(alice, tag, leftovers)
    if running:
        alice.start(cid)
    reference = image_id if by_id else tag  # `/` and `:` as they are (images/{name:.*})
    # The leak, straight from the daemon (a 409: nothing is removed).
    status, answer = direct(daemon, "DELETE", f"/v1.41/images/{reference}")
    assert status == 409 and cid[:12] in answer["message"], answer
    status, answer = bob.call("DELETE", f"/v1.41/images/{reference}")
    assert status == 409, answer
    assert cid[:12] not in json.dumps(answer), answer
    assert conflict in answer["message"], answer
    assert image_id[7:19] in answer["message"] or tag in answer["message"]
    # An old API version's plain-text error too.
    status, text = bob.call("DELETE", f"/v1.23/images/{reference}")
    assert status == 409 and isinstance(text, bytes), text
    assert cid[:12].encode() not in text and conflict.encode() in text, text
    # Nothing changed: the image is there, alice's container too.
    assert daemon.docker("image", "inspect", image_id, check=False).returncode == 0
    assert direct(daemon, "GET", f"/v1.41/containers/{cid}/json")[0] == 200


# ----- VolumeDelete's 409 -------------------------------------------------------------------


def test_a_volume_in_use_names_no_container(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: dict[str, list[str]],
) -> None:
    """Fails on the old code: bob's `docker volume rm` of his volume, used by a container
    that is not his (here an operator's, made straight on the daemon), answered with that
    container's ID."""
    bob = tenants["bob"]
    volume = f"leaks-vol-{RUN}-{os.urandom(2).hex()}"
    leftovers["volume"].append(volume)
    status, answer = bob.call("POST", "/v1.41/volumes/create", {"Name": volume})
    assert status == 201, answer
    done = daemon.docker("create", "-v", f"{volume}:/data", busybox_image, "true")
    other = done.stdout.decode().strip()
    leftovers["container"].append(other)
    # The leak, straight from the daemon (a 409: nothing is removed).
    status, answer = direct(daemon, "DELETE", f"/v1.41/volumes/{volume}")
    assert status == 409 and other in answer["message"], answer
    status, answer = bob.call("DELETE", f"/v1.41/volumes/{volume}")
    assert status == 409, answer
    assert answer["message"] == f"remove {volume}: volume is in use - [1 container]", answer
    assert direct(daemon, "GET", f"/v1.41/volumes/{volume}")[0] == 200


# ----- ContainerList's since / before -----------------------------------------------------------


@pytest.fixture
def ordered(
    tenants: dict[str, Api], busybox_image: str, leftovers: dict[str, list[str]]
) -> dict[str, str]:
    """Containers created in this order: bob's b1, alice's a1, bob's b2 (by name -> ID)."""
    names = {}
    for owner, key in (("bob", "b1"), ("alice", "a1"), ("bob", "b2")):
        name = f"leaks-{key}-{RUN}-{os.urandom(2).hex()}"
        names[key] = _container(tenants[owner], busybox_image, leftovers, name)
        names[f"{key}-name"] = name
    return names


def _list(api: Api, filters: dict[str, object], legacy: str = "") -> tuple[int, Any]:
    query = urllib.parse.urlencode({"all": "1", "filters": json.dumps(filters)})
    return api.call("GET", f"/v1.41/containers/json?{query}{legacy}")


def _ids(answer: list[dict[str, Any]]) -> list[str]:
    return [str(item["Id"]) for item in answer]


def test_before_another_tenants_container_tells_nothing(
    tenants: dict[str, Api], daemon: PrivateDaemon, ordered: dict[str, str]
) -> None:
    """Fails on the old code: bob's list `before=<alice's container>` (narrowed to his label)
    showed which of his containers were created before hers. Now alice's container, by ID,
    name or either form of the filter, is answered exactly as a missing one (404; the
    daemon's own answer for a missing one is a 500 with the same message)."""
    bob = tenants["bob"]
    mine = {"label": ["io.dockgate.owner=user:bob"]}
    # The leak, straight from the daemon, with the label dockgate narrows bob's lists to.
    query = urllib.parse.urlencode(
        {"all": "1", "filters": json.dumps({**mine, "before": [ordered["a1"]]})}
    )
    status, answer = direct(daemon, "GET", f"/v1.41/containers/json?{query}")
    assert status == 200 and ordered["b1"] in _ids(answer) and ordered["b2"] not in _ids(answer)
    missing = "0" * 64
    status, absent = _list(bob, {"before": [missing]})
    assert (status, absent) == (404, {"message": f"No such container: {missing}"})
    for reference in (ordered["a1"], ordered["a1-name"]):
        for filters in ({"before": [reference]}, {"since": {reference: True}}):
            status, answer = _list(bob, filters)
            assert (status, answer) == (404, {"message": f"No such container: {reference}"})
    # The parameter docker-py sends (no daemon reads it; looked up all the same).
    status, answer = _list(bob, {}, legacy=f"&before={ordered['a1']}")
    assert status == 404, answer


def test_before_and_since_ones_own_containers_still_work(
    tenants: dict[str, Api], ordered: dict[str, str]
) -> None:
    """The caller's own containers, by name or ID, in both forms: pinned to their full IDs."""
    bob = tenants["bob"]
    status, answer = _list(bob, {"before": [ordered["b2-name"]]})
    assert status == 200 and ordered["b1"] in _ids(answer), answer
    assert ordered["b2"] not in _ids(answer) and ordered["a1"] not in _ids(answer)
    status, answer = _list(bob, {"since": {ordered["b1"]: True}})
    assert status == 200 and _ids(answer) == [ordered["b2"]], answer
    status, answer = _list(bob, {"since": [ordered["b1-name"]], "before": [ordered["b2"]]})
    assert (status, answer) == (200, []), answer


# ----- swarm: a task list's service, a service's port conflict -------------------------------


@pytest.fixture(scope="module")
def swarm(daemon: PrivateDaemon, tenants: dict[str, Api]) -> Iterator[PrivateDaemon]:
    with single_node_swarm(daemon) as manager:
        yield manager


def _service(name: str, image: str, port: int) -> dict[str, Any]:
    """A service of no replicas (nothing runs) publishing `port` on the ingress network."""
    return {
        "Name": name,
        "TaskTemplate": {"ContainerSpec": {"Image": image, "Command": ["sleep", "60"]}},
        "Mode": {"Replicated": {"Replicas": 0}},
        "EndpointSpec": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": port}]},
    }


@pytest.fixture
def alices_service(
    tenants: dict[str, Api], swarm: PrivateDaemon, busybox_image: str
) -> Iterator[tuple[str, str]]:
    """A service of alice's, created through dockgate: its name and ID."""
    name = f"leaks-web-{RUN}-{os.urandom(2).hex()}"
    body = _service(name, busybox_image, PUBLISHED_PORT)
    status, created = tenants["alice"].call("POST", "/v1.41/services/create", body)
    assert status == 201, created
    try:
        yield name, str(created["ID"])
    finally:
        swarm.docker("service", "rm", created["ID"], check=False)


def test_a_task_list_of_another_tenants_service_tells_nothing(
    tenants: dict[str, Api], swarm: PrivateDaemon, alices_service: tuple[str, str]
) -> None:
    """Fails on the old code: bob's `docker service ps <alice's service>` was an empty list
    (200) where a missing service is a 404. Now both are the same 404."""
    bob = tenants["bob"]
    name, service_id = alices_service
    mine = {"label": ["io.dockgate.owner=user:bob"]}
    for reference in (name, service_id, service_id[:6]):
        # The leak, straight from the daemon, narrowed as dockgate narrows bob's lists.
        query = urllib.parse.urlencode({"filters": json.dumps({**mine, "service": [reference]})})
        assert direct(swarm, "GET", f"/v1.41/tasks?{query}") == (200, [])
        query = urllib.parse.urlencode({"filters": json.dumps({"service": [reference]})})
        status, answer = bob.call("GET", f"/v1.41/tasks?{query}")
        assert (status, answer) == (404, {"message": f"service {reference} not found"})
    missing = f"leaks-none-{RUN}"
    query = urllib.parse.urlencode({"filters": json.dumps({"service": [missing]})})
    assert bob.call("GET", f"/v1.41/tasks?{query}")[0] == 404
    # alice's own service: her task list (empty: no replicas) by name.
    query = urllib.parse.urlencode({"filters": json.dumps({"service": {name: True}})})
    assert tenants["alice"].call("GET", f"/v1.41/tasks?{query}") == (200, [])


def test_a_port_conflict_names_no_other_service(
    tenants: dict[str, Api],
    swarm: PrivateDaemon,
    busybox_image: str,
    alices_service: tuple[str, str],
) -> None:
    """Fails on the old code: bob's service publishing the port alice's service holds was
    refused (400) with her service's name and ID."""
    name, service_id = alices_service
    mine = f"leaks-bob-{RUN}-{os.urandom(2).hex()}"
    body = _service(mine, busybox_image, PUBLISHED_PORT)
    # The leak, straight from the daemon (a 400: nothing is created).
    status, answer = direct(swarm, "POST", "/v1.41/services/create", body)
    assert status == 400 and name in answer["message"] and service_id in answer["message"]
    status, answer = tenants["bob"].call("POST", "/v1.41/services/create", body)
    assert status == 400, answer
    assert name not in answer["message"] and service_id not in answer["message"], answer
    assert "already in use by another service" in answer["message"], answer
    assert direct(swarm, "GET", f"/v1.41/services/{mine}")[0] == 404


def test_docker_ps_before_and_since_through_the_gateway(
    tenants: dict[str, Api], ordered: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """The docker CLI (filters in its map form): bob's own container works, alice's is an
    error like a missing one."""
    bob = tenants["bob"]
    env = _client_config(tmp_path / "bob", "bob") | {"DOCKER_HOST": bob.gateway.url}

    def ps(*filters: str) -> subprocess.CompletedProcess[str]:
        args = [arg for f in filters for arg in ("--filter", f)]
        return subprocess.run(
            ["docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}}", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    shown = ps(f"before={ordered['b2-name']}", f"since={ordered['b1-name']}")
    assert shown.returncode == 0 and shown.stdout == "", shown
    shown = ps(f"since={ordered['b1']}")
    assert shown.returncode == 0 and shown.stdout.split() == [ordered["b2"]], shown
    theirs, missing = ps(f"before={ordered['a1-name']}"), ps(f"before=leaks-none-{RUN}")
    assert theirs.returncode != 0 and "No such container" in theirs.stderr, theirs
    assert missing.returncode != 0 and "No such container" in missing.stderr, missing


# ----- an ID prefix the daemon finds ambiguous -------------------------------------------------


def test_an_ambiguous_prefix_of_other_tenants_containers_tells_nothing(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: dict[str, list[str]],
) -> None:
    """Fails on the old code: a prefix two containers of alice's share was the daemon's
    ambiguity to bob (a 502: the 20.10 daemon's 500), where a prefix of one or none is a
    404: probing prefixes told him how many containers there are and how their IDs begin.
    Now it reads as missing; and a prefix bob's container shares with alice's names his."""
    alice, bob = tenants["alice"], tenants["bob"]
    status, listed = bob.call("GET", "/v1.41/containers/json?all=1")
    assert status == 200, listed
    bobs = {str(item["Id"])[0] for item in listed}  # first digits bob holds already
    firsts: dict[str, list[str]] = {}
    shared = ""
    for _ in range(64):  # 16 digits: a few containers suffice
        cid = _container(alice, busybox_image, leftovers)
        firsts.setdefault(cid[0], []).append(cid)
        shared = next((f for f, ids in firsts.items() if len(ids) > 1 and f not in bobs), "")
        if shared:
            break
    assert shared, "no two containers of alice's share a first digit bob does not hold"
    # The leak, straight from the daemon: the prefix is ambiguous (20.10: a 500).
    status, answer = direct(daemon, "GET", f"/v1.41/containers/{shared}/json")
    assert status in (400, 500) and "Multiple IDs" in answer["message"], answer
    status, answer = bob.call("GET", f"/v1.41/containers/{shared}/json")
    assert (status, answer) == (404, {"message": f"No such container: {shared}"})
    # bob's own container sharing a first digit with one of alice's: ambiguous to the daemon,
    # his to dockgate.
    for _ in range(64):
        mine = _container(bob, busybox_image, leftovers)
        if mine[0] in firsts and mine[0] not in bobs:
            break
    else:
        pytest.fail("no container of bob's shares a first digit with alice's")
    assert direct(daemon, "GET", f"/v1.41/containers/{mine[0]}/json")[0] in (400, 500)
    status, answer = bob.call("GET", f"/v1.41/containers/{mine[0]}/json")
    assert status == 200 and answer["Id"] == mine, answer


def test_requests_pipelined_behind_a_list_look_up_wait_their_turn(
    tenants: dict[str, Api], ordered: dict[str, str]
) -> None:
    """A list whose filters name containers is held while they are looked up; what the
    client sent after it on the same connection is answered after it, in order (the
    refused one too)."""
    bob = tenants["bob"]

    def request(filters: dict[str, object]) -> bytes:
        query = urllib.parse.urlencode({"all": "1", "filters": json.dumps(filters)})
        return (
            f"GET /v1.41/containers/json?{query} HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: {bob.authorization}\r\n\r\n"
        ).encode()

    ping = f"GET /_ping HTTP/1.1\r\nHost: localhost\r\nAuthorization: {bob.authorization}\r\n"
    sent = (
        request({"before": [ordered["b2"]]})
        + request({"before": [ordered["a1"]]})
        + (ping + "Connection: close\r\n\r\n").encode()
    )
    with socket.create_connection(("127.0.0.1", bob.gateway.port), timeout=30) as conn:
        conn.sendall(sent)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    statuses = re.findall(rb"^HTTP/1\.1 (\d{3})", received, flags=re.MULTILINE)
    assert statuses == [b"200", b"404", b"200"], received
    assert ordered["b1"].encode() in received and ordered["a1"].encode() in received
