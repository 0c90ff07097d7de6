"""Object scopes by name pattern, end to end: the docker CLI through a real dockgate whose
policy allows networks, volumes and containers only when named `web-*` (policy/scoping.py).
Each claim is checked on the daemon: what was refused does not exist (or is unchanged), what
was allowed does."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon, run_docker
from support.gateway import Gateway, running

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's policy",
    ),
]

POLICY = """\
policies:
  web:
    rules:
      - allow: {sections: [ping, version]}
      - allow:
          operations: [NetworkCreate, NetworkInspect, NetworkConnect, NetworkDisconnect,
                       NetworkDelete, VolumeCreate, VolumeInspect, VolumeDelete,
                       ContainerCreate, ContainerInspect, ContainerRename, ContainerDelete]
          objects: {names: ["web-*"]}
"""


@pytest.fixture(scope="module")
def env(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("scopenames")
    policy = base / "policy.yaml"
    policy.write_text(POLICY)
    with running(Gateway(daemon.host, policy=policy)) as gw:
        variables = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        (base / "cli").mkdir()
        yield variables | {"DOCKER_HOST": gw.url, "DOCKER_CONFIG": str(base / "cli")}


@pytest.fixture
def names(daemon: PrivateDaemon) -> Iterator[dict[str, str]]:
    """Names for this test's objects (web-* in scope, db-* not), removed after it."""
    suffix = os.urandom(4).hex()
    made = {
        f"{team}-{kind}": f"{team}-{kind}-{suffix}"
        for team in ("web", "db")
        for kind in ("net", "vol", "c", "c2")
    }
    yield made
    for key, name in made.items():
        if key.endswith(("-c", "-c2")):
            daemon.docker("rm", "-f", name, check=False)
    for key, name in made.items():
        if key.endswith("-net"):
            daemon.docker("network", "rm", name, check=False)
        elif key.endswith("-vol"):
            daemon.docker("volume", "rm", "-f", name, check=False)


def _exists(daemon: PrivateDaemon, kind: str, name: str) -> bool:
    return daemon.docker(kind, "inspect", name, check=False).returncode == 0


def _fails(env: dict[str, str], *args: str, says: str) -> None:
    done = run_docker(env, *args)
    assert done.returncode != 0, (args, done.stdout)
    assert says in done.stderr.decode(), (args, done.stderr)


def test_networks_and_volumes_are_made_only_under_covered_names(
    env: dict[str, str], names: dict[str, str], daemon: PrivateDaemon
) -> None:
    """`web-*` networks and volumes are created; `db-*` ones are refused and do not exist."""
    for kind in ("network", "volume"):
        key = "net" if kind == "network" else "vol"
        done = run_docker(env, kind, "create", names[f"web-{key}"])
        assert done.returncode == 0, done.stderr
        assert _exists(daemon, kind, names[f"web-{key}"])
        _fails(env, kind, "create", names[f"db-{key}"], says="would not be covered by rule 2")
        assert not _exists(daemon, kind, names[f"db-{key}"])
    # A volume without a name gets one the daemon makes up: not covered by a names scope.
    _fails(env, "volume", "create", says="has no name")


def test_uncovered_networks_and_volumes_are_absent(
    env: dict[str, str], names: dict[str, str], daemon: PrivateDaemon
) -> None:
    """Made on the daemon, `db-*` objects read as missing and are not removed; `web-*` ones
    are inspected."""
    for name in (names["db-net"], names["web-net"]):
        daemon.docker("network", "create", name)
    for name in (names["db-vol"], names["web-vol"]):
        daemon.docker("volume", "create", name)
    _fails(env, "network", "inspect", names["db-net"], says=f"network {names['db-net']} not found")
    _fails(env, "network", "rm", names["db-net"], says=f"network {names['db-net']} not found")
    _fails(env, "volume", "inspect", names["db-vol"], says="no such volume")
    _fails(env, "volume", "rm", names["db-vol"], says="no such volume")
    assert _exists(daemon, "network", names["db-net"]) and _exists(
        daemon, "volume", names["db-vol"]
    )
    done = run_docker(env, "network", "inspect", "-f", "{{.Name}}", names["web-net"])
    assert done.returncode == 0 and done.stdout.decode().strip() == names["web-net"]
    done = run_docker(env, "volume", "inspect", "-f", "{{.Name}}", names["web-vol"])
    assert done.returncode == 0 and done.stdout.decode().strip() == names["web-vol"]


def test_a_create_may_name_only_covered_objects(
    env: dict[str, str], names: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """A container joining an uncovered network, or mounting an uncovered or missing volume,
    is not created; joining and mounting covered ones it is."""
    for name in (names["db-net"], names["web-net"]):
        daemon.docker("network", "create", name)
    for name in (names["db-vol"], names["web-vol"]):
        daemon.docker("volume", "create", name)
    container = names["web-c"]
    for option, says in (
        (("--network", names["db-net"]), f"network {names['db-net']} not found"),
        (("-v", f"{names['db-vol']}:/data"), "no such volume"),
        (("-v", f"{names['web-vol']}-missing:/data"), "must exist and be covered"),
    ):
        _fails(env, "create", "--name", container, *option, busybox_image, "true", says=says)
        assert not _exists(daemon, "container", container)
    done = run_docker(
        env, "create", "--name", container, "--network", names["web-net"],
        "-v", f"{names['web-vol']}:/data", busybox_image, "true",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    inspected = json.loads(daemon.docker("inspect", container).stdout)[0]
    assert list(inspected["NetworkSettings"]["Networks"]) == [names["web-net"]]
    assert [m["Name"] for m in inspected["Mounts"]] == [names["web-vol"]]


def test_network_connect_needs_the_network_and_the_container_covered(
    env: dict[str, str], names: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """A covered container joins a covered network; an uncovered container does not."""
    daemon.docker("network", "create", names["web-net"])
    daemon.docker("create", "--name", names["web-c"], busybox_image, "true")
    daemon.docker("create", "--name", names["db-c"], busybox_image, "true")
    _fails(
        env, "network", "connect", names["web-net"], names["db-c"],
        says=f"No such container: {names['db-c']}",
    )  # fmt: skip
    done = run_docker(env, "network", "connect", names["web-net"], names["web-c"])
    assert done.returncode == 0, done.stderr

    def networks(name: str) -> list[str]:
        inspected = json.loads(daemon.docker("inspect", name).stdout)[0]
        return list(inspected["NetworkSettings"]["Networks"])

    assert names["web-net"] in networks(names["web-c"])
    assert names["web-net"] not in networks(names["db-c"])


def test_a_rename_may_not_leave_the_scope(
    env: dict[str, str], names: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """Renamed to `db-*` a container would leave the scope: refused; to `web-*`: done."""
    daemon.docker("create", "--name", names["web-c"], busybox_image, "true")
    _fails(env, "rename", names["web-c"], names["db-c"], says="would not be covered")
    assert _exists(daemon, "container", names["web-c"])
    assert not _exists(daemon, "container", names["db-c"])
    done = run_docker(env, "rename", names["web-c"], names["web-c2"])
    assert done.returncode == 0, done.stderr
    assert _exists(daemon, "container", names["web-c2"])
    # (the uncovered container cannot be renamed into the scope: it is not found)
    daemon.docker("create", "--name", names["db-c2"], busybox_image, "true")
    _fails(env, "rename", names["db-c2"], names["web-c"], says="No such container")
    assert _exists(daemon, "container", names["db-c2"])
