"""Ownership mode with the real daemon and the docker CLI: two users, each sees and touches
only what they created through dockgate (containers, volumes, networks), through `docker ps`,
`inspect`, `exec`, `rm` and `events`; someone else's object reads as missing."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import time
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.remote import write_htpasswd

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(240)]

POLICY = """\
policies:
  shared:
    ownership: true
    # What ownership is about here (sharing with another container) opened in the guardrails.
    guardrails: {volumes_from: true, namespaces: ["pid:container"]}
    rules:
      - allow:
          sections: [ping, version, info, events, containers, exec, volumes, networks, images]
bindings:
  - {policy: shared, authenticated: true}
"""
USERS = {"alice": "alice-pw", "bob": "bob-pw"}


class Caller:
    def __init__(self, gateway: Gateway, config: pathlib.Path, user: str) -> None:
        config.mkdir(parents=True, exist_ok=True)
        token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
        (config / "config.json").write_text(
            json.dumps({"HttpHeaders": {"Authorization": f"Basic {token}"}})
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env |= {"DOCKER_HOST": gateway.url, "DOCKER_CONFIG": str(config)}

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr}")
        return done


@pytest.fixture(scope="module")
def callers(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Caller]]:
    base = tmp_path_factory.mktemp("ownership")
    htpasswd = base / "htpasswd"
    write_htpasswd(htpasswd, USERS)
    policy = base / "policy.yaml"
    policy.write_text(POLICY)
    gateway = Gateway(
        daemon.host, "--htpasswd", str(htpasswd), "--auth-failures", "0", policy=str(policy)
    )
    with running(gateway) as gw:
        yield {user: Caller(gw, base / user, user) for user in USERS}


@pytest.fixture(scope="module")
def objects(
    callers: dict[str, Caller], daemon: PrivateDaemon, busybox_image: str
) -> Iterator[dict[str, str]]:
    """Alice's container, volume and network; one container made straight on the daemon."""
    suffix = os.urandom(4).hex()
    names = {
        "container": f"dgt-own-a-{suffix}",
        "volume": f"dgt-own-vol-{suffix}",
        "network": f"dgt-own-net-{suffix}",
        "outside": f"dgt-own-out-{suffix}",
    }
    alice = callers["alice"]
    alice.docker("volume", "create", names["volume"])
    alice.docker("network", "create", names["network"])
    alice.docker("run", "-d", "--name", names["container"], busybox_image, "sleep", "120")
    daemon.docker("create", "--name", names["outside"], busybox_image, "true")
    yield names
    daemon.docker("rm", "-f", names["container"], names["outside"], check=False)
    daemon.docker("volume", "rm", "-f", names["volume"], check=False)
    daemon.docker("network", "rm", names["network"], check=False)


def test_created_objects_carry_the_owner_label(
    daemon: PrivateDaemon, objects: dict[str, str]
) -> None:
    for kind, name, path in (
        ("container", objects["container"], "{{json .Config.Labels}}"),
        ("volume", objects["volume"], "{{json .Labels}}"),
        ("network", objects["network"], "{{json .Labels}}"),
    ):
        labels = json.loads(daemon.docker(kind, "inspect", "-f", path, name).stdout)
        assert labels.get("io.dockgate.owner") == "user:alice", (kind, labels)


def test_lists_show_only_the_callers_objects(
    callers: dict[str, Caller], objects: dict[str, str]
) -> None:
    alice, bob = callers["alice"], callers["bob"]
    assert objects["container"] in alice.docker("ps", "-a", "--format", "{{.Names}}").stdout
    listed_by_bob = bob.docker("ps", "-a", "--format", "{{.Names}}").stdout
    assert objects["container"] not in listed_by_bob
    assert objects["outside"] not in listed_by_bob  # made outside dockgate: nobody's
    assert objects["volume"] in alice.docker("volume", "ls", "-q").stdout
    assert objects["volume"] not in bob.docker("volume", "ls", "-q").stdout
    assert objects["network"] in alice.docker("network", "ls", "--format", "{{.Name}}").stdout
    assert objects["network"] not in bob.docker("network", "ls", "--format", "{{.Name}}").stdout
    # The caller's own filters still apply, merged with the owner's.
    filtered = alice.docker("ps", "-a", "--filter", "name=nothing-matches", "-q").stdout
    assert filtered == ""


def test_someone_elses_object_reads_as_missing(
    callers: dict[str, Caller], objects: dict[str, str], daemon: PrivateDaemon
) -> None:
    bob = callers["bob"]
    name = objects["container"]
    for args in (
        ("container", "inspect", name),
        ("exec", name, "true"),
        ("stop", name),
        ("rm", "-f", name),
    ):
        done = bob.docker(*args, check=False)
        # (`rm -f` exits 0 for a missing container, as it does with the daemon itself.)
        assert done.returncode != 0 or args[0] == "rm"
        assert f"No such container: {name}" in done.stderr, (args, done.stderr)
    done = bob.docker("volume", "rm", objects["volume"], check=False)
    assert "no such volume" in done.stderr
    done = bob.docker("network", "inspect", objects["network"], check=False)
    assert f"network {objects['network']} not found" in done.stderr
    # Nothing happened to them.
    assert daemon.docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == b"true"
    # By ID prefix too: the daemon resolves it, and the owner is checked on what it resolved.
    full_id = daemon.docker("inspect", "-f", "{{.Id}}", name).stdout.decode().strip()
    done = bob.docker("container", "inspect", full_id[:12], check=False)
    assert done.returncode != 0 and "No such container" in done.stderr


def test_the_owner_uses_its_objects(callers: dict[str, Caller], objects: dict[str, str]) -> None:
    alice = callers["alice"]
    name = objects["container"]
    assert alice.docker("exec", name, "echo", "mine").stdout == "mine\n"
    inspected = json.loads(alice.docker("inspect", name).stdout)
    assert inspected[0]["Name"] == f"/{name}"
    full_id = inspected[0]["Id"]
    assert alice.docker("inspect", "-f", "{{.Name}}", full_id[:10]).stdout.strip() == f"/{name}"


def test_exec_instances_belong_to_their_containers_owner(
    callers: dict[str, Caller], objects: dict[str, str], daemon: PrivateDaemon
) -> None:
    """Bob cannot start or inspect an exec instance alice created."""
    import urllib.request  # noqa: PLC0415

    alice, bob = callers["alice"], callers["bob"]
    url = alice.env["DOCKER_HOST"].replace("tcp://", "http://")

    def call(
        caller: Caller, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        config_file = pathlib.Path(caller.env["DOCKER_CONFIG"]) / "config.json"
        config = json.loads(config_file.read_text())
        request = urllib.request.Request(url + path, data=body, method=method)
        request.add_header("Authorization", config["HttpHeaders"]["Authorization"])
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    status, body = call(
        alice, "POST", f"/v1.41/containers/{objects['container']}/exec", b'{"Cmd": ["true"]}'
    )
    assert status == 201, body
    exec_id = json.loads(body)["Id"]
    status, body = call(bob, "GET", f"/v1.41/exec/{exec_id}/json")
    assert (status, json.loads(body)) == (404, {"message": f"No such exec instance: {exec_id}"})
    status, _ = call(alice, "GET", f"/v1.41/exec/{exec_id}/json")
    assert status == 200


def test_events_show_only_the_callers_objects(
    callers: dict[str, Caller], busybox_image: str, daemon: PrivateDaemon
) -> None:
    alice, bob = callers["alice"], callers["bob"]
    since = str(int(time.time()) - 1)
    name = f"dgt-own-ev-{os.urandom(4).hex()}"
    alice.docker("create", "--name", name, busybox_image, "true")
    try:
        until = str(int(time.time()) + 1)
        time.sleep(1.2)
        args = (
            "events",
            "--since",
            since,
            "--until",
            until,
            "--format",
            "{{.Actor.Attributes.name}}",
        )
        assert name in alice.docker(*args).stdout
        assert name not in bob.docker(*args).stdout
    finally:
        daemon.docker("rm", "-f", name, check=False)


def test_bodies_may_name_only_the_callers_objects(
    callers: dict[str, Caller], objects: dict[str, str], busybox_image: str, daemon: PrivateDaemon
) -> None:
    """Joining someone else's network, mounting their volume, sharing their container's volumes
    or namespaces, or connecting their container: each reads as a missing object."""
    alice, bob = callers["alice"], callers["bob"]
    volume, network, container = objects["volume"], objects["network"], objects["container"]
    cases = [
        (("run", "--rm", "-v", f"{volume}:/d", busybox_image, "true"), "no such volume"),
        (("run", "--rm", "--network", network, busybox_image, "true"), f"network {network}"),
        (("run", "--rm", "--volumes-from", container, busybox_image, "true"), container),
        (("run", "--rm", "--pid", f"container:{container}", busybox_image, "true"), container),
    ]
    for args, missing in cases:
        done = bob.docker(*args, check=False)
        assert done.returncode != 0, args
        assert "Error response from daemon: dockgate: " in done.stderr, (args, done.stderr)
        assert missing in done.stderr, (args, done.stderr)
    bob_network = f"dgt-own-bnet-{os.urandom(4).hex()}"
    bob.docker("network", "create", bob_network)
    try:
        done = bob.docker("network", "connect", bob_network, container, check=False)
        assert f"No such container: {container}" in done.stderr
        inspect = daemon.docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container)
        assert bob_network.encode() not in inspect.stdout
    finally:
        daemon.docker("network", "rm", bob_network, check=False)
    # The owner may name its own objects.
    done = alice.docker(
        "run", "--rm", "-v", f"{volume}:/d", "--network", network, busybox_image, "echo", "ok"
    )
    assert done.stdout == "ok\n"
