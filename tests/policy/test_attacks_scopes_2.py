"""Second attack review of issue 16's object scopes, after the first round's fixes
(tests/policy/test_attacks_scopes.py): a caller whose policy allows container operations only
on the containers labelled `com.example.team=web` (or named `web-*`) looks for side doors the
fixes missed: link-alias route shapes and references, body fields naming containers, the
`limit` rewrite, the policy's reach in policies mixing scoped and unscoped rules (commits,
prunes), task-list filters, service and secret names on a single-node swarm.

A finding is an `xfail(strict=True)` test whose assertions say what should hold; an attack
that held is a plain test. Each claim is checked on the daemon or in what the caller read."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from support.attack import ATTACK_MARKS, Api, direct, logs, policy_api
from support.daemon import PrivateDaemon
from support.rawhttp import until_close
from support.swarm import single_node_swarm

pytestmark = ATTACK_MARKS

LABEL = "com.example.team"
CONTAINER_OPS = """[ContainerRestart, ContainerLogs, ContainerExec, ExecStart, ExecInspect,
                       ContainerInspect, ContainerCreate, ContainerStart, ContainerDelete,
                       ContainerWait, ContainerList, SystemEvents, ContainerArchive,
                       ContainerAttach, ContainerTop, ContainerKill, ContainerUpdate]"""
LABEL_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: {CONTAINER_OPS}
          objects: {{labels: {{{LABEL}: web}}}}
"""
# The container rule as above; network inspects given `objects:` so that their `Containers`
# maps are emptied (as docs/policy.md advises), every network covered; an unscoped commit.
MIXED_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: {CONTAINER_OPS}
          objects: {{labels: {{{LABEL}: web}}}}
      - allow: {{operations: [NetworkInspect, NetworkList], objects: {{names: ["*"]}}}}
      - allow: {{sections: [commit]}}
"""
# The container rule as above, an unscoped commit, and the guardrails that let a create share
# a container's volumes or namespaces (the scope then judges which container).
SHARING_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: {CONTAINER_OPS}
          objects: {{labels: {{{LABEL}: web}}}}
      - allow: {{sections: [commit]}}
    guardrails:
      volumes_from: true
      namespaces: ["network:container", "pid:container", "ipc:container"]
"""
NAMES_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: {CONTAINER_OPS}
          objects: {{names: ["web-*"]}}
"""


@pytest.fixture(scope="module")
def api(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A caller whose containers are those labelled com.example.team=web."""
    yield from policy_api(daemon, tmp_path_factory, LABEL_POLICY)


@pytest.fixture(scope="module")
def named_api(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A caller whose containers are those named web-*."""
    yield from policy_api(daemon, tmp_path_factory, NAMES_POLICY)


@pytest.fixture(scope="module")
def mixed_api(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A caller of MIXED_POLICY: containers labelled web; every network; commits."""
    yield from policy_api(daemon, tmp_path_factory, MIXED_POLICY)


@pytest.fixture(scope="module")
def sharing_api(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A caller of SHARING_POLICY: containers labelled web, volumes-from and container
    namespaces of covered ones, commits."""
    yield from policy_api(daemon, tmp_path_factory, SHARING_POLICY)


@pytest.fixture(scope="module")
def pair(daemon: PrivateDaemon, busybox_image: str) -> Iterator[dict[str, str]]:
    """A running web container and a running db one made on the daemon; the db one linked to
    the web one under the alias `w` (`docker run --link web:w`), as another team's container
    may be. Keys: web, db (names), web_id, db_id."""
    suffix = os.urandom(4).hex()
    names = {"web": f"web-atk2-{suffix}", "db": f"db-atk2-{suffix}"}
    daemon.docker(
        *("run", "-d", "--name", names["web"], "--label", f"{LABEL}=web", busybox_image),
        *("sleep", "600"),
    )
    daemon.docker(
        *("run", "-d", "--name", names["db"], "--label", f"{LABEL}=db"),
        *("--link", f"{names['web']}:w", busybox_image),
        *("sh", "-c", "echo top-db-secret > /secret; sleep 600"),
    )
    ids = {f"{team}_id": daemon.inspect(name)["Id"] for team, name in names.items()}
    yield names | ids
    daemon.docker("rm", "-f", *names.values(), check=False)


@pytest.fixture
def leftovers(daemon: PrivateDaemon) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    if made:
        daemon.docker("rm", "-f", *made, check=False)


# ----- findings -------------------------------------------------------------------------------


def test_network_rule_scope_opens_every_container_to_a_commit(
    mixed_api: Api, pair: dict[str, str], daemon: PrivateDaemon
) -> None:
    """MIXED_POLICY scopes containers to the web label and gives network inspects
    `objects: {names: ["*"]}` (docs/policy.md: "give it `objects:` too to have the maps
    emptied"). The reach that judges an unscoped commit's `container=` is the union of all
    `objects:`, network rules' included, so it covers every container by name: `docker commit
    <db>` succeeds, and a web-labelled container of the image prints the db's /secret."""
    repo = f"stolen2-{os.urandom(3).hex()}"
    output = ""
    try:
        status, answer = mixed_api.call(
            "POST", f"/v1.41/commit?container={pair['db']}&repo={repo}&tag=x"
        )
        if status == 201:
            body = {"Image": f"{repo}:x", "Cmd": ["cat", "/secret"], "Labels": {LABEL: "web"}}
            cid, output = mixed_api.run(body)
            daemon.docker("rm", "-f", cid, check=False)
    finally:
        daemon.docker("rmi", "-f", f"{repo}:x", check=False)
    assert "top-db-secret" not in output, (status, answer, output)
    assert status == 404, (status, answer)


@pytest.mark.parametrize("how", ["commit", "VolumesFrom", "NetworkMode", "PidMode"])
def test_link_alias_reference_tells_of_an_out_of_scope_linker(  # noqa: PLR0917 - fixtures
    sharing_api: Api,
    pair: dict[str, str],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: list[str],
    how: str,
) -> None:
    """The db container (out of scope) was run with `--link <web>:w`: the daemon lists
    `/<db>/w` among the web container's `Names`. A reference to `<db>/w` (a commit's
    `container=`, a scoped create's `VolumesFrom` or `container:` mode) is found among the
    covered containers by that alias and allowed (pinned to web), where the same reference
    with a db name that does not exist is refused as missing: the caller learns that an
    out-of-scope container of that name exists and links to web as `w`, which dropping the
    aliases from `docker ps` (first round) was to keep from it."""

    def attempt(reference: str) -> int:
        if how == "commit":
            repo = f"alias-{os.urandom(3).hex()}"
            target = f"/v1.41/commit?container={quote(reference)}&repo={repo}&tag=x"
            status, answer = sharing_api.call("POST", target)
            if status == 201:
                daemon.docker("rmi", "-f", f"{repo}:x", check=False)
            return status
        value = reference if how == "VolumesFrom" else f"container:{reference}"
        host = {how: [value] if how == "VolumesFrom" else value}
        body = {"Image": busybox_image, "Labels": {LABEL: "web"}, "HostConfig": host}
        status, answer = sharing_api.call("POST", "/v1.41/containers/create", body)
        if status == 201:
            leftovers.append(answer["Id"])
        return status

    missing = attempt(f"nosuch-{pair['db']}/w")
    assert missing in (403, 404)
    assert attempt(f"{pair['db']}/w") == missing


PRUNE_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: {CONTAINER_OPS}
          objects: {{labels: {{{LABEL}: web}}}}
      # (volumes and networks scoped too: the reach is per kind, and a kind no `objects:`
      # rule is about is not judged)
      - allow:
          operations: [VolumeInspect, NetworkInspect]
          objects: {{labels: {{{LABEL}: web}}}}
      - allow: {{operations: [ContainerPrune, VolumePrune, NetworkPrune]}}
"""


@pytest.mark.parametrize("kind", ["containers", "volumes", "networks"])
def test_an_unscoped_prune_removes_out_of_scope_objects(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory, busybox_image: str, kind: str
) -> None:
    """docs/policy.md: "A policy with `objects:` rules reaches only covered objects, whichever
    rule allows a request"; `system df` is refused for telling of every object. A prune allowed
    by a rule without `objects:` beside the web-scoped container rule removes the db team's
    stopped container (or unused volume, or network) and answers its ID or name."""
    name = f"db-prune-{os.urandom(3).hex()}"
    if kind == "containers":
        daemon.docker("create", "--name", name, "--label", f"{LABEL}=db", busybox_image, "true")
    elif kind == "volumes":
        daemon.docker("volume", "create", "--label", f"{LABEL}=db", name)
    else:
        daemon.docker("network", "create", "--label", f"{LABEL}=db", name)
    inspect = {"containers": "container", "volumes": "volume", "networks": "network"}[kind]
    try:
        for caller in policy_api(daemon, tmp_path_factory, PRUNE_POLICY):
            # Only the db object, so as not to remove other tests' objects.
            filters = quote(json.dumps({"label": [f"{LABEL}=db"]}))
            status, answer = caller.call("POST", f"/v1.41/{kind}/prune?filters={filters}")
            still = daemon.docker(inspect, "inspect", name, check=False).returncode == 0
            assert still, (status, answer)
            assert name not in json.dumps(answer), answer
    finally:
        daemon.docker(inspect, "rm", name, check=False)


# Containers by name; the services of the `shop` stack readable; an unscoped commit.
STACK_MIXED_POLICY = """\
policies:
  web:
    rules:
      - allow: {sections: [ping, version]}
      - allow:
          operations: [ContainerInspect, ContainerCreate, ContainerStart, ContainerLogs,
                       ContainerWait, ContainerDelete]
          objects: {names: ["web-*"]}
      - allow: {operations: [ServiceInspect, ServiceList, TaskList], objects: {stacks: [shop]}}
      - allow: {sections: [commit]}
"""


def test_a_stack_service_rule_opens_the_stacks_containers_to_a_commit(
    daemon: PrivateDaemon,
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
) -> None:
    """The names-scoped variant: containers `web-*`; the `shop` stack's services may only be
    read. A container of the stack (labelled `com.docker.stack.namespace=shop`, as a stack's
    task containers are; here the db one) is not covered by the container rule, yet
    `docker commit` of it is allowed and its files read back."""
    name = f"db-shop-{os.urandom(3).hex()}"
    daemon.docker(
        *("run", "-d", "--name", name, "--label", "com.docker.stack.namespace=shop"),
        *(busybox_image, "sh", "-c", "echo shop-db-secret > /secret; sleep 600"),
    )
    repo = f"stolen3-{os.urandom(3).hex()}"
    output, status, answer = "", 0, None
    try:
        for caller in policy_api(daemon, tmp_path_factory, STACK_MIXED_POLICY):
            inspected, _ = caller.call("GET", f"/v1.41/containers/{name}/json")
            assert inspected == 404
            target = f"/v1.41/commit?container={name}&repo={repo}&tag=x"
            status, answer = caller.call("POST", target)
            if status == 201:
                body = {"Image": f"{repo}:x", "Cmd": ["cat", "/secret"]}
                cid, output = caller.run(body, name=f"web-{repo}")
                daemon.docker("rm", "-f", cid, check=False)
        assert "shop-db-secret" not in output, (status, answer, output)
        assert status == 404, (status, answer)
    finally:
        daemon.docker("rm", "-f", name, check=False)
        daemon.docker("rmi", "-f", f"{repo}:x", check=False)


# ----- attacks that held ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["api", "named_api"])
def test_link_alias_path_tells_nothing_of_an_out_of_scope_linker(
    which: str, request: pytest.FixtureRequest, pair: dict[str, str]
) -> None:
    """`GET /containers/<db>/w/json`: the daemon registers the db container's link alias
    `/<db>/w` as a name of the web container, and the gateway resolves a reference among the
    covered containers' listed `Names`, aliases included: the answer is the web container's
    inspect (200) on the daemon. Held: the gateway answers it as the daemon answers a missing
    container, the same as for a linker that does not exist."""
    caller: Api = request.getfixturevalue(which)
    status, _ = caller.call("GET", f"/v1.41/containers/{pair['db']}/w/json")
    missing, _ = caller.call("GET", f"/v1.41/containers/nosuch-{pair['db']}/w/json")
    assert missing == 404
    assert status == missing, status


def test_endpoint_links_to_an_out_of_scope_container_reach_nothing(
    api: Api, pair: dict[str, str], busybox_image: str, leftovers: list[str]
) -> None:
    """A covered container created with `NetworkingConfig.EndpointsConfig.bridge.Links`
    naming the db container (a field the scope's body check does not look at): the daemon
    takes it, but the new container gets no host entry for db."""
    body = {
        "Image": busybox_image,
        "Cmd": ["cat", "/etc/hosts"],
        "Labels": {LABEL: "web"},
        "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Links": [f"{pair['db']}:dbx"]}}},
    }
    status, answer = api.call("POST", "/v1.41/containers/create", body)
    if status == 201:
        leftovers.append(answer["Id"])
    hosts = _hosts_of(api, answer["Id"]) if status == 201 else ""
    assert "dbx" not in hosts, hosts
    assert pair["db_id"][:12] not in hosts, hosts


def _hosts_of(api: Api, cid: str) -> str:
    status, _ = api.call("POST", f"/v1.41/containers/{cid}/start")
    assert status == 204
    api.call("POST", f"/v1.41/containers/{cid}/wait")
    return logs(api, cid)


@pytest.mark.parametrize(
    "field",
    [
        {"Cgroup": "container:{db}"},
        {"UTSMode": "container:{db}"},
        {"UsernsMode": "container:{db}"},
        {"CgroupnsMode": "container:{db}"},
    ],
)
def test_other_container_modes_naming_db_are_refused(
    api: Api, pair: dict[str, str], busybox_image: str, leftovers: list[str], field: dict[str, str]
) -> None:
    """HostConfig fields of the `container:X` form besides network/pid/ipc: refused."""
    host = {k: v.format(db=pair["db"]) for k, v in field.items()}
    body = {"Image": busybox_image, "Labels": {LABEL: "web"}, "HostConfig": host}
    status, answer = api.call("POST", "/v1.41/containers/create", body)
    if status == 201:
        leftovers.append(answer["Id"])
    assert status == 403, answer


def test_exec_instance_of_db_is_absent(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon
) -> None:
    """An exec instance made on the db container by someone else: inspecting or starting it
    by its exact ID is answered as a missing exec instance."""
    status, made = direct(
        daemon,
        "POST",
        f"/v1.41/containers/{pair['db_id']}/exec",
        {"Cmd": ["cat", "/etc/hostname"], "AttachStdout": True},
    )
    assert status == 201, made
    exec_id = made["Id"]
    status, answer = api.call("GET", f"/v1.41/exec/{exec_id}/json")
    assert status == 404, answer
    assert pair["db_id"] not in json.dumps(answer)
    status, answer = api.call("POST", f"/v1.41/exec/{exec_id}/start", {"Detach": True})
    assert status == 404, answer
    status, after = direct(daemon, "GET", f"/v1.41/exec/{exec_id}/json")
    assert after["Running"] is False and after["ExitCode"] is None, after


@pytest.mark.parametrize(
    "query",
    [
        "limit=1",
        "limit=%2B1",
        "limit=01",
        "limit=1&limit=5",
        "l%69mit=1",
        "limit=1&all=0",
        "all=0&limit=1&limit=7",
    ],
)
def test_limit_spellings_count_covered_containers_only(
    named_api: Api, daemon: PrivateDaemon, busybox_image: str, leftovers: list[str], query: str
) -> None:
    """A web container, then a newer db one: every spelling of `limit` the daemon reads as 1
    answers the web container (the gateway applies it after filtering), never []."""
    suffix = os.urandom(4).hex()
    web, db = f"web-lim2-{suffix}", f"db-lim2-{suffix}"
    for name in (web, db):
        daemon.docker("create", "--name", name, busybox_image, "true")
        leftovers.append(name)
    status, listed = named_api.call("GET", f"/v1.41/containers/json?{query}")
    assert status == 200, listed
    assert [c["Names"] for c in listed] == [[f"/{web}"]], listed


def test_limit_with_a_plus_read_as_a_space_tells_nothing(
    named_api: Api, daemon: PrivateDaemon, busybox_image: str, leftovers: list[str]
) -> None:
    """`limit=+1`: the daemon reads ` 1` and fails (the same answer whatever exists)."""
    status, answer = named_api.call("GET", "/v1.41/containers/json?limit=+1")
    assert status in (400, 500), answer


@pytest.mark.parametrize("which", ["api", "named_api"])
@pytest.mark.parametrize("rest", ["json", "archive?path=/secret", "logs?stdout=1"])
def test_a_covered_containers_link_alias_path_does_not_reach_the_linked_one(
    which: str,
    rest: str,
    request: pytest.FixtureRequest,
    pair: dict[str, str],
    web_linker: str,
) -> None:
    """An admin-made web container linked to db (`--link db:dbl`): the daemon resolves
    `/containers/<web>/dbl/...` to the db container (the link alias is one of its names). The
    gateway judges `<web>` and pins it to its full ID, which the daemon cannot resolve with
    `/dbl` after it: 404, nothing of db."""
    caller: Api = request.getfixturevalue(which)
    status, answer = caller.call("GET", f"/v1.41/containers/{web_linker}/dbl/{rest}")
    assert status == 404, answer
    assert pair["db_id"] not in json.dumps(answer)
    assert "top-db-secret" not in json.dumps(answer)


@pytest.fixture(scope="module")
def web_linker(daemon: PrivateDaemon, pair: dict[str, str], busybox_image: str) -> Iterator[str]:
    """A web container the admin ran linked to the db one under the alias `dbl`. Its name."""
    name = f"web-lnk-{os.urandom(3).hex()}"
    daemon.docker(
        *("run", "-d", "--name", name, "--label", f"{LABEL}=web"),
        *("--link", f"{pair['db']}:dbl", busybox_image, "sleep", "600"),
    )
    assert daemon.inspect(f"{name}/dbl")["Id"] == pair["db_id"]
    yield name
    daemon.docker("rm", "-f", name, check=False)


VOLUME_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: {CONTAINER_OPS}
          objects: {{labels: {{{LABEL}: web}}}}
      - allow:
          operations: [VolumeCreate, VolumeInspect, VolumeDelete]
          objects: {{labels: {{{LABEL}: web}}}}
"""


@pytest.mark.parametrize("how", ["VolumeCreate", "inline anonymous", "inline named"])
def test_a_web_volume_bound_to_the_db_volumes_data_is_refused(
    daemon: PrivateDaemon,
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    how: str,
) -> None:
    """A web-labelled volume (made by VolumeCreate, or inline in a container's `Mounts`)
    whose local driver options bind the db volume's data directory: refused."""
    root = json.loads(daemon.docker("info", "--format", "{{json .DockerRootDir}}").stdout)
    volume = f"dbv-{os.urandom(3).hex()}"
    daemon.docker("volume", "create", "--label", f"{LABEL}=db", volume)
    options = {"type": "none", "o": "bind", "device": f"{root}/volumes/{volume}/_data"}
    made: list[str] = []
    try:
        for caller in policy_api(daemon, tmp_path_factory, VOLUME_POLICY):
            if how == "VolumeCreate":
                body: dict[str, Any] = {
                    "Name": f"web-{volume}",
                    "Labels": {LABEL: "web"},
                    "DriverOpts": options,
                }
                status, answer = caller.call("POST", "/v1.41/volumes/create", body)
            else:
                config = {"Name": "local", "Options": options}
                mount = {
                    "Type": "volume",
                    "Target": "/d",
                    "VolumeOptions": {"DriverConfig": config},
                }
                if how == "inline named":
                    mount["Source"] = f"web-{volume}"
                body = {"Image": busybox_image, "Labels": {LABEL: "web"}}
                body["HostConfig"] = {"Mounts": [mount]}
                status, answer = caller.call("POST", "/v1.41/containers/create", body)
                if status == 201:
                    made.append(answer["Id"])
            assert status == 403, answer
    finally:
        if made:
            daemon.docker("rm", "-f", *made, check=False)
        daemon.docker("volume", "rm", "-f", volume, f"web-{volume}", check=False)


# ----- services on a single-node swarm ----------------------------------------------------------

SERVICE_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: [ServiceInspect, ServiceUpdate, ServiceList, ServiceLogs, TaskList,
                       TaskInspect, ServiceCreate, ServiceDelete]
          objects: {{labels: {{{LABEL}: web}}}}
"""


@pytest.fixture(scope="module")
def swarm(daemon: PrivateDaemon) -> Iterator[PrivateDaemon]:
    with single_node_swarm(daemon):
        yield daemon


@pytest.fixture(scope="module")
def service_api(swarm: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A caller whose services are those labelled web (guardrails on)."""
    yield from policy_api(swarm, tmp_path_factory, SERVICE_POLICY)


@pytest.fixture(scope="module")
def swarm_objects(swarm: PrivateDaemon, busybox_image: str) -> Iterator[dict[str, str]]:
    """Made by the admin: a web service (labelled web, its containers too) and a db one, one
    replica each; a db volume, a db overlay network, a db secret. Names by key; IDs as
    `<key>_id` for the services."""
    suffix = os.urandom(4).hex()
    made = {k: f"{k}-sw-{suffix}" for k in ("web", "db", "dbvol", "dbnet", "dbsecret")}
    swarm.docker("volume", "create", "--label", f"{LABEL}=db", made["dbvol"])
    swarm.docker(
        *("network", "create", "--driver", "overlay", "--label", f"{LABEL}=db"), made["dbnet"]
    )
    swarm.docker("secret", "create", "--label", f"{LABEL}=db", made["dbsecret"], "-", input=b"s")
    for team in ("web", "db"):
        created = swarm.docker(
            *("service", "create", "--detach", "--no-resolve-image", "--replicas", "1"),
            *("--name", made[team], "--label", f"{LABEL}={team}"),
            *("--container-label", f"{LABEL}={team}", busybox_image, "sleep", "600"),
        )
        made[f"{team}_id"] = created.stdout.decode().strip()
    yield made
    swarm.docker("service", "rm", made["web"], made["db"], check=False)
    swarm.docker("secret", "rm", made["dbsecret"], check=False)
    for _ in range(20):
        done = swarm.docker("network", "rm", made["dbnet"], check=False).returncode == 0
        if done:
            break
        time.sleep(0.5)
    swarm.docker("volume", "rm", "-f", made["dbvol"], check=False)


def _tasks(api: Api, filters: object) -> tuple[int, Any]:
    return api.call("GET", "/v1.41/tasks?filters=" + quote(json.dumps(filters)))


@pytest.mark.parametrize(
    "filters",
    [
        {"service": ["{db}"]},
        {"service": ["{DB}"]},
        {"service": ["{db_id}"]},
        {"service": {"{db}": True}},
        {"service": {"{db}": False}},
        {"service": ["{web}", "{db}"]},
        {"service": ["{db}"], "name": ["{db}"]},
    ],
)
def test_task_list_service_filter_on_db_is_answered_as_missing(
    service_api: Api, swarm_objects: dict[str, str], filters: dict[str, Any]
) -> None:
    """However the db service is named in a task list's `service` filter (its name, upper
    case, its ID, either JSON form, beside the web one): the same answer as for a service
    that does not exist, and no task of db."""
    values = swarm_objects | {"DB": swarm_objects["db"].upper()}

    def spelled(value: str) -> str:
        return value.format(**values)

    given = {
        k: (
            [spelled(v) for v in vs]
            if isinstance(vs, list)
            else {spelled(v): b for v, b in vs.items()}
        )
        for k, vs in filters.items()
    }
    status, answer = _tasks(service_api, given)
    db_value = next(v for v in given["service"] if v != swarm_objects["web"])
    missing_status, missing_answer = _tasks(service_api, {"service": ["no-such-svc"]})
    assert db_value == swarm_objects["db_id"] or swarm_objects["db_id"] not in json.dumps(answer)
    assert missing_status == 404, missing_answer
    assert (status, answer) == (404, {"message": f"service {db_value} not found"})


def _web_spec(name: str, image: str, **task: Any) -> dict[str, Any]:
    container = {"Image": image, "Command": ["sleep", "600"], "Labels": {LABEL: "web"}}
    container |= task.pop("ContainerSpec", {})
    return {
        "Name": name,
        "Labels": {LABEL: "web"},
        "TaskTemplate": {"ContainerSpec": container, **task},
        "Mode": {"Replicated": {"Replicas": 0}},
    }


@pytest.mark.parametrize(
    "extra",
    [
        {"ContainerSpec": {"Mounts": [{"Type": "VOLUME", "Source": "{dbvol}", "Target": "/d"}]}},
        {"ContainerSpec": {"mounts": [{"type": "volume", "source": "{dbvol}", "target": "/d"}]}},
        {"Networks": [{"Target": "{dbnet}"}]},
        {"ContainerSpec": {"Secrets": [{"SecretName": "{dbsecret}", "File": {"Name": "s"}}]}},
        {"top": {"Networks": [{"Target": "{dbnet}"}]}},
        {},  # the control: the plain web spec is allowed
    ],
)
@pytest.mark.parametrize("how", ["create", "update"])
def test_a_web_service_cannot_take_db_volumes_networks_or_secrets(  # noqa: PLR0917 - fixtures
    service_api: Api,
    swarm: PrivateDaemon,
    swarm_objects: dict[str, str],
    busybox_image: str,
    extra: dict[str, Any],
    how: str,
) -> None:
    """A web service (created, or the admin's web service updated) whose spec mounts the db
    volume (the mount type in any case, keys in any case), joins the db network (in the task
    template or the legacy top-level `Networks`) or takes the db secret: refused, nothing made
    or changed."""
    task = json.loads(json.dumps(extra).replace("{dbvol}", swarm_objects["dbvol"]))
    task = json.loads(json.dumps(task).replace("{dbnet}", swarm_objects["dbnet"]))
    task = json.loads(json.dumps(task).replace("{dbsecret}", swarm_objects["dbsecret"]))
    top = task.pop("top", {})
    if how == "create":
        name = f"web-take-{os.urandom(3).hex()}"
        spec = _web_spec(name, busybox_image, **task) | top
        status, answer = service_api.call("POST", "/v1.41/services/create", spec)
        if status == 201:
            swarm.docker("service", "rm", name, check=False)
    else:
        _, current = direct(swarm, "GET", f"/v1.41/services/{swarm_objects['web_id']}")
        spec = _web_spec(swarm_objects["web"], busybox_image, **task) | top
        version = current["Version"]["Index"]
        target = f"/v1.41/services/{swarm_objects['web_id']}/update?version={version}"
        status, answer = service_api.call("POST", target, spec)
        _, after = direct(swarm, "GET", f"/v1.41/services/{swarm_objects['web_id']}")
        if extra:
            assert after["Version"] == current["Version"], after
    if extra:
        assert status == 403, answer
        assert any(w in answer["message"] for w in ("not found", "no such")), answer
    else:
        assert status in (200, 201), answer


def test_service_list_with_status_shows_the_web_service_only(
    service_api: Api, swarm_objects: dict[str, str]
) -> None:
    """`GET /services?status=true` (running/desired task counts): only the web service."""
    status, listed = service_api.call("GET", "/v1.41/services?status=true")
    assert status == 200, listed
    assert [s["ID"] for s in listed] == [swarm_objects["web_id"]], listed
    assert swarm_objects["db_id"] not in json.dumps(listed)


@pytest.mark.parametrize(
    "filters",
    [
        {"container": ["{db}"]},
        {"container": ["{db_id}"]},
        {"label": [f"{LABEL}=db"]},
        {"type": ["container"], "container": ["{db}", "{web}"]},
    ],
)
def test_replayed_events_naming_db_show_nothing_of_it(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, filters: dict[str, list[str]]
) -> None:
    """`docker events --since 0 --until now --filter container=<db>` (and by ID, by the db
    label): the daemon replays the db container's create/start events; none reaches the
    caller, the web container's do when asked for."""
    given = {k: [v.format(**pair) for v in vs] for k, vs in filters.items()}
    now = int(time.time()) + 1
    target = f"/v1.41/events?since=0&until={now}&filters={quote(json.dumps(given))}"
    status, raw = api.call("GET", target)
    assert status == 200
    text = raw.decode() if isinstance(raw, bytes) else json.dumps(raw)
    assert pair["db_id"] not in text
    assert pair["db"] not in text
    if pair["web"] in given.get("container", []):
        assert pair["web_id"] in text


def test_limit_with_before_is_refused(named_api: Api, pair: dict[str, str]) -> None:
    """`limit` with the legacy `before` (or a `before` filter): refused, as `before` alone."""
    for query in (
        f"limit=1&before={pair['db']}",
        "limit=1&filters=" + quote(json.dumps({"before": [pair["db"]]})),
    ):
        status, answer = named_api.call("GET", f"/v1.41/containers/json?{query}")
        assert status == 403, answer


@pytest.mark.parametrize("key", ["id", "name", "node", "desired-state", "service+id"])
def test_task_list_other_filters_show_no_db_task(
    service_api: Api, swarm: PrivateDaemon, swarm_objects: dict[str, str], key: str
) -> None:
    """A task list filtered by the db task's ID, the db service's name (a task's name is
    `<service>.<slot>`), this node, a desired state, or the web service and the db task's
    ID: no task of the db service in the answer."""
    deadline = time.monotonic() + 15
    db_tasks: list[dict[str, Any]] = []
    while not db_tasks and time.monotonic() < deadline:
        filters = quote(json.dumps({"service": [swarm_objects["db_id"]]}))
        _, db_tasks = direct(swarm, "GET", f"/v1.41/tasks?filters={filters}")
        time.sleep(0.2)
    assert db_tasks
    _, info = direct(swarm, "GET", "/v1.41/info")
    node = info["Swarm"]["NodeID"]
    given = {
        "id": {"id": [db_tasks[0]["ID"]]},
        "name": {"name": [swarm_objects["db"]]},
        "node": {"node": [node]},
        "desired-state": {"desired-state": ["running"]},
        "service+id": {"service": [swarm_objects["web"]], "id": [db_tasks[0]["ID"]]},
    }[key]
    status, answer = _tasks(service_api, given)
    assert status == 200, answer
    assert all(t["ServiceID"] == swarm_objects["web_id"] for t in answer), answer
    assert swarm_objects["db_id"] not in json.dumps(answer)


def test_a_service_named_as_the_db_services_short_id_takes_it_over(
    service_api: Api, swarm: PrivateDaemon, swarm_objects: dict[str, str], busybox_image: str
) -> None:
    """docs/policy.md refuses new names made of hex digits only: the daemon resolves a name
    before an ID prefix, so an object named as another's short ID would take every later
    reference to that short ID. Service (and secret, config) IDs are 25 characters of
    [0-9a-z]: the db service's short ID has letters past `f`, passes the hex check, and
    `docker service inspect <short ID>` then answers the web caller's service."""
    db_id = swarm_objects["db_id"]
    short = _short_id_with_a_letter(db_id)
    status, answer = service_api.call(
        "POST", "/v1.41/services/create", _web_spec(short, busybox_image)
    )
    try:
        _, found = direct(swarm, "GET", f"/v1.41/services/{short}")
        assert found.get("ID") == db_id, found
        assert status == 400, answer
    finally:
        if status == 201:
            swarm.docker("service", "rm", answer["ID"], check=False)


def _short_id_with_a_letter(swarm_id: str) -> str:
    """The shortest prefix (at least 6 characters, as the CLI shows) of a swarm object's ID
    that is not all hex digits: a name that passes the gateway's hex-name check."""
    length = next(n for n in range(6, 26) if any(c not in "0123456789abcdef" for c in swarm_id[:n]))
    return swarm_id[:length]


SECRET_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: [SecretCreate, SecretInspect, SecretList, SecretDelete]
          objects: {{labels: {{{LABEL}: web}}}}
"""


def test_a_secret_named_as_the_db_secrets_short_id_takes_it_over(
    swarm: PrivateDaemon, swarm_objects: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """As for services: `docker secret inspect <short ID of the db secret>` then answers the
    web caller's secret."""
    _, db_secret = direct(swarm, "GET", f"/v1.41/secrets/{swarm_objects['dbsecret']}")
    db_id = db_secret["ID"]
    short = _short_id_with_a_letter(db_id)
    body = {"Name": short, "Labels": {LABEL: "web"}, "Data": "d2Vi"}
    status, answer = 0, None
    try:
        for caller in policy_api(swarm, tmp_path_factory, SECRET_POLICY):
            status, answer = caller.call("POST", "/v1.41/secrets/create", body)
        _, found = direct(swarm, "GET", f"/v1.41/secrets/{short}")
        assert found.get("ID") == db_id, found
        assert status == 400, answer
    finally:
        if status == 201:
            swarm.docker("secret", "rm", answer["ID"], check=False)


RENAME_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: [ContainerRename, ContainerInspect]
          objects: {{labels: {{{LABEL}: web}}}}
"""


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "Application/X-WWW-Form-Urlencoded; charset=utf-8"],
)
def test_a_hex_name_in_a_rename_form_body_is_refused(
    daemon: PrivateDaemon,
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    content_type: str,
) -> None:
    """A rename whose query names `web-…` and whose form body (which Go's ParseForm lets win)
    names a hex-only name, a short ID to take over: refused, the container keeps its name."""
    name = f"web-hx-{os.urandom(3).hex()}"
    made = daemon.docker("create", "--name", name, "--label", f"{LABEL}=web", busybox_image)
    cid = made.stdout.decode().strip()
    try:
        for caller in policy_api(daemon, tmp_path_factory, RENAME_POLICY):
            body = b"name=abc123"
            request = (
                f"POST /v1.41/containers/{cid}/rename?name=web-ok HTTP/1.1\r\nHost: x\r\n"
                f"Connection: close\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            answer = until_close(caller.gateway.port, request)
            assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
        assert daemon.inspect(cid)["Name"] == f"/{name}"
    finally:
        daemon.docker("rm", "-f", cid, check=False)


def test_a_base36_name_that_starts_no_id_is_created(
    swarm: PrivateDaemon, swarm_objects: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The ID-prefix check refuses only names that start an existing ID: a secret named
    `web…` (base 36, starting no secret's ID) is made, and is the one its name finds."""
    name = f"web{os.urandom(3).hex()}zz"
    _, listed = direct(swarm, "GET", "/v1.41/secrets")
    assert not any(s["ID"].startswith(name) for s in listed)
    body = {"Name": name, "Labels": {LABEL: "web"}, "Data": "d2Vi"}
    status, answer = 0, None
    try:
        for caller in policy_api(swarm, tmp_path_factory, SECRET_POLICY):
            status, answer = caller.call("POST", "/v1.41/secrets/create", body)
        assert status == 201, answer
        _, found = direct(swarm, "GET", f"/v1.41/secrets/{name}")
        assert found.get("ID") == answer["ID"], found
    finally:
        if status == 201:
            swarm.docker("secret", "rm", answer["ID"], check=False)
