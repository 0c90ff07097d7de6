"""A policy's reach, end to end (issue 16): in a policy whose restart, inspect, rename and
commit are scoped to the containers labelled `com.example.team=web`, creates are allowed by a
rule without `objects:`. Such a create still may not join, share or borrow a container out of
the scope; a commit reads only a covered container; hex-only names are refused. Each claim is
checked on the daemon (what it made, what it stores)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from support.attack import Api, build_context, policy_api
from support.daemon import PrivateDaemon

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's policy",
    ),
]

LABEL = "com.example.team"
POLICY = f"""\
policies:
  web:
    guardrails:
      volumes_from: true
      namespaces: ["network:container", "pid:container", "ipc:container"]
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: [ContainerRestart, ContainerInspect, ContainerRename, ImageCommit]
          objects: {{labels: {{{LABEL}: web}}}}
      # (networks are scoped too, for the build's `networkmode`: the reach is per kind)
      - allow: {{operations: [NetworkInspect], objects: {{labels: {{{LABEL}: web}}}}}}
      - allow: {{operations: [ContainerCreate, ContainerStart, ContainerWait, ContainerLogs,
                              ContainerDelete, ImageInspect, ImageBuild]}}
"""


@pytest.fixture(scope="module")
def api(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from policy_api(daemon, tmp_path_factory, POLICY)


@pytest.fixture(scope="module")
def pair(daemon: PrivateDaemon, busybox_image: str) -> Iterator[dict[str, str]]:
    """A running web container and a db one (whose /secret holds a secret): names and IDs."""
    suffix = os.urandom(4).hex()
    names = {"web": f"web-reach-{suffix}", "db": f"db-reach-{suffix}"}
    for team, name in names.items():
        daemon.docker(
            *("run", "-d", "--name", name, "--label", f"{LABEL}={team}", busybox_image),
            *("sh", "-c", f"echo {team}-reach-secret > /secret; sleep 600"),
        )
    ids = {f"{team}_id": daemon.inspect(name)["Id"] for team, name in names.items()}
    yield names | ids
    daemon.docker("rm", "-f", *names.values(), check=False)


@pytest.fixture
def made(daemon: PrivateDaemon) -> Iterator[list[str]]:
    """Containers and images to remove afterwards."""
    found: list[str] = []
    yield found
    for item in found:
        daemon.docker("rm", "-f", item, check=False)
        daemon.docker("rmi", "-f", item, check=False)


def _exists(daemon: PrivateDaemon, name: str) -> bool:
    return daemon.docker("inspect", name, check=False).returncode == 0


def test_an_unscoped_create_cannot_join_an_out_of_scope_container(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, busybox_image: str, made: list[str]
) -> None:
    """The create is allowed by a rule without `objects:`, yet db's namespaces and volumes
    stay out of reach (by name, ID prefix, folded keys, an older API version): 403, no
    container made."""
    db, db12 = pair["db"], pair["db_id"][:12]
    hosts: list[dict[str, Any]] = [
        {"NetworkMode": f"container:{db}"},
        {"PidMode": f"container:{db12}"},
        {"ipcmode": f"container:{db}"},
        {"VolumesFrom": [f"{db}:ro"]},
    ]
    for version in ("v1.41", "v1.24"):
        for host in hosts:
            name = f"reach-join-{os.urandom(4).hex()}"
            made.append(name)
            body = {"Image": busybox_image, "Cmd": ["cat", "/secret"], "HostConfig": host}
            status, answer = api.call("POST", f"/{version}/containers/create?name={name}", body)
            assert status == 403, (version, host, status, answer)
            assert "No such container" in answer["message"], answer
            assert not _exists(daemon, name), (version, host)


def test_an_unscoped_create_joins_a_covered_container(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, busybox_image: str, made: list[str]
) -> None:
    """The same create naming the web container is made, pinned to its full ID, and reads
    what the web container's volumes-from shares (nothing here) in its pid namespace."""
    name = f"reach-ok-{os.urandom(4).hex()}"
    made.append(name)
    body = {
        "Image": busybox_image,
        "Cmd": ["true"],
        "HostConfig": {"PidMode": f"container:{pair['web']}"},
    }
    status, answer = api.call("POST", f"/v1.41/containers/create?name={name}", body)
    assert status == 201, answer
    assert daemon.inspect(name)["HostConfig"]["PidMode"] == f"container:{pair['web_id']}"


def test_a_commit_reads_only_a_covered_container(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, made: list[str]
) -> None:
    """`docker commit` of web makes an image holding web's file; of db, by name, ID prefix,
    a duplicated `container` (the first is read), an older API version: 404 and no image."""
    repo = f"reach-commit-{os.urandom(3).hex()}"
    made.append(f"{repo}:web")
    status, answer = api.call("POST", f"/v1.41/commit?container={pair['web']}&repo={repo}&tag=web")
    assert status == 201, answer
    assert daemon.inspect(f"{repo}:web")["Id"] == answer["Id"]
    for target in (
        f"/v1.41/commit?container={pair['db']}&repo={repo}&tag=db",
        f"/v1.41/commit?container={pair['db_id'][:12]}&repo={repo}&tag=db",
        f"/v1.41/commit?container={pair['db']}&container={pair['web']}&repo={repo}&tag=db",
        f"/v1.24/commit?container={pair['db']}&repo={repo}&tag=db",
    ):
        status, answer = api.call("POST", target)
        assert status == 404, (target, status, answer)
        assert "No such container" in answer["message"]
        assert not _exists(daemon, f"{repo}:db"), target


def test_hex_only_names_are_refused(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, busybox_image: str, made: list[str]
) -> None:
    """A create (unscoped) and a rename (scoped) to db's short ID: 400; db keeps the short ID
    on the daemon, web its name."""
    short = pair["db_id"][:12]
    made.append(short)
    status, answer = api.call(
        "POST", f"/v1.41/containers/create?name={short}", {"Image": busybox_image}
    )
    assert status == 400, answer
    status, answer = api.call("POST", f"/v1.41/containers/{pair['web']}/rename?name={short}")
    assert status == 400, answer
    assert daemon.inspect(short)["Id"] == pair["db_id"]
    assert daemon.inspect(pair["web"])["Name"] == f"/{pair['web']}"


def test_a_build_joins_only_a_covered_container_or_network(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, busybox_image: str, made: list[str]
) -> None:
    """An unscoped build whose `networkmode` is the web container (by name) runs, pinned; one
    naming a network the scope does not cover (labelled db), by name or ID prefix, or the db
    container behind a duplicated `networkmode` (the first is read): 404, no image."""
    net = f"db-reach-net-{os.urandom(3).hex()}"
    net_id = daemon.docker("network", "create", "--label", f"{LABEL}=db", net).stdout
    tag = f"reach-build-{os.urandom(3).hex()}"
    made.extend([f"{tag}:web", f"{tag}:db"])
    context = build_context({"Dockerfile": f"FROM {busybox_image}\nRUN true\n".encode()})
    headers = {"Content-Type": "application/x-tar"}
    try:
        target = f"/v1.41/build?t={tag}:web&rm=1&networkmode=container:{pair['web']}"
        status, answer = api.call("POST", target, context, headers=headers)
        assert status == 200, answer
        assert _exists(daemon, f"{tag}:web"), answer
        for mode in (
            net,
            net_id.decode().strip()[:12],
            f"container:{pair['db']}&networkmode=container:{pair['web']}",
        ):
            target = f"/v1.41/build?t={tag}:db&rm=1&networkmode={mode}"
            status, answer = api.call("POST", target, context, headers=headers)
            assert status == 404, (mode, status, answer)
            assert not _exists(daemon, f"{tag}:db"), mode
    finally:
        daemon.docker("network", "rm", net, check=False)
