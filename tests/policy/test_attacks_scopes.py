"""Attack review of issue 16's object scopes: a caller whose policy allows restart, logs, exec,
inspect, lists and events only on the containers labelled `com.example.team=web` (and, in a
second gateway, only on those named `web-*`) tries to act on, read or learn about a container
out of its scope (labelled `com.example.team=db`), or to bring one into it.

A finding is an `xfail(strict=True)` test whose assertions say what should hold; an attack
that held is a plain test. Each claim is checked on the daemon or in what the caller read."""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from support.attack import ATTACK_MARKS, Api, build_context, direct, leftovers_fixture, policy_api
from support.daemon import PrivateDaemon
from support.gateway import Gateway, run_dockgate, running
from support.rawhttp import dechunk, until_close
from support.swarm import single_node_swarm

pytestmark = ATTACK_MARKS

LABEL = "com.example.team"
CONTAINER_OPS = """[ContainerRestart, ContainerLogs, ContainerExec, ExecStart, ExecInspect,
                       ContainerInspect, ContainerCreate, ContainerStart, ContainerDelete,
                       ContainerWait, ContainerList, SystemEvents, ContainerArchive,
                       ContainerArchiveInfo, ContainerExport, ContainerTop, ContainerChanges,
                       ContainerStats, ContainerKill, ContainerRename, ContainerUpdate]"""
LABEL_POLICY = f"""\
policies:
  web:
    rules:
      - allow: {{sections: [ping, version]}}
      - allow:
          operations: {CONTAINER_OPS}
          objects: {{labels: {{{LABEL}: web}}}}
      - allow: {{sections: [commit, build]}}
      - allow: {{operations: [ImageInspect, ImageDelete, SystemDataUsage]}}
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
def pair(daemon: PrivateDaemon, busybox_image: str) -> Iterator[dict[str, str]]:
    """A web container and a db one (made on the daemon), running; the db one keeps a secret
    in /secret. Keys: web, db (names), web_id, db_id."""
    suffix = os.urandom(4).hex()
    names = {"web": f"web-atk-{suffix}", "db": f"db-atk-{suffix}"}
    for team, name in names.items():
        daemon.docker(
            *("run", "-d", "--name", name, "--label", f"{LABEL}={team}", busybox_image),
            *("sh", "-c", f"echo top-{team}-secret > /secret; echo hello-{team}; sleep 600"),
        )
    ids = {f"{team}_id": daemon.inspect(name)["Id"] for team, name in names.items()}
    yield names | ids
    daemon.docker("rm", "-f", *names.values(), check=False)


leftovers = leftovers_fixture(("container", "image"))


def _raw(api: Api, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request exactly as written (target not normalised); the status and the body."""
    port = api.gateway.port
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if body or method in ("POST", "PUT"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    data = until_close(port, head.encode() + b"\r\n" + body, timeout=15)
    top, _, answer = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in top.lower():
        answer = dechunk(answer)
    assert b"is not accepted on" not in answer, answer
    return int(top.split(b" ")[1]), answer


# ----- findings -------------------------------------------------------------------------------


def test_commit_of_an_out_of_scope_container_reads_its_files(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, leftovers: dict[str, list[str]]
) -> None:
    """`docker commit db` through the gateway, then `docker run --label team=web` of the image
    prints the db container's /secret: its filesystem read through a scoped caller."""
    repo = f"stolen-{os.urandom(3).hex()}"
    leftovers["image"].append(f"{repo}:x")
    status, answer = api.call("POST", f"/v1.41/commit?container={pair['db']}&repo={repo}&tag=x")
    if status == 201:
        body = {"Image": f"{repo}:x", "Cmd": ["cat", "/secret"], "Labels": {LABEL: "web"}}
        cid, output = api.run(body)
        leftovers["container"].append(cid)
    else:
        output = ""
    assert "top-db-secret" not in output, (status, answer, output)
    assert status in (403, 404), (status, answer)


def test_list_limit_tells_of_a_newer_out_of_scope_container(
    named_api: Api, daemon: PrivateDaemon, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """`since`/`before` are refused under a scope for telling of uncovered containers; `limit`
    (the N newest, counted before the gateway filters) tells the same: with a db container made
    after the web one, `limit=1` answers [] instead of the web container."""
    suffix = os.urandom(4).hex()
    web, db = f"web-lim-{suffix}", f"db-lim-{suffix}"
    for name in (web, db):  # in this order: db is the newest container on the daemon
        daemon.docker("create", "--name", name, busybox_image, "true")
        leftovers["container"].append(name)
    status, unlimited = named_api.call("GET", "/v1.41/containers/json?all=1")
    assert status == 200
    assert any(f"/{web}" in c["Names"] for c in unlimited)
    status, limited = named_api.call("GET", "/v1.41/containers/json?all=1&limit=1")
    # Held: the limit is applied by the gateway after filtering: the newest covered container
    # (stopped, as the daemon's `limit` lists them), as if db did not exist.
    assert status == 200, limited
    assert [c["Names"] for c in limited] == [[f"/{web}"]], limited


# ----- attacks that held ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "/v1.41/containers/{db}/json",
        "/v1.41/containers//{db}/json",
        "/v1.41/containers/%2F{db}/json",
        "/v1.41/containers/%64{db_rest}/json",
        "/v1.41/containers/{web}/../{db}/json",
        "/v1.41/containers/{web}/%2E%2E/{db}/json",
        "/v1.41/containers/{web}%2F..%2F{db}/json",
        "//v1.41/containers/{db}/json",
        "/containers/{db}/json",
        "/v1.24/containers/{db}/json",
        "/v1.12/containers/{db}/json",
        "/V1.41/containers/{db}/json",
        "/v1.41/Containers/{db}/json",
        "/v1.41/containers/{db_id}/json",
        "/v1.41/containers/{db_id12}/json",
        "/v1.41/containers/{DB_ID12}/json",
        "/v1.41/containers/{db}/json?name={web}",
        "/v1.41/containers/{db}%00/json",
        "/v1.41/containers/{db}%20/json",
    ],
)
def test_inspect_of_db_by_any_spelling_tells_nothing(
    api: Api, pair: dict[str, str], template: str
) -> None:
    """However the db container is spelled in the path, the answer holds neither its ID nor
    its name's label, and is not a 200."""
    target = template.format(
        db=pair["db"],
        db_rest=pair["db"][1:],
        web=pair["web"],
        db_id=pair["db_id"],
        db_id12=pair["db_id"][:12],
        DB_ID12=pair["db_id"][:12].upper(),
    )
    status, body = _raw(api, "GET", target)
    assert status in (400, 403, 404), (target, status, body[:300])
    assert b'"Config"' not in body and b'"State"' not in body, (target, body[:300])
    if pair["db_id"] not in target:
        assert pair["db_id"].encode() not in body, (target, body[:300])


def test_a_link_alias_behind_a_covered_container_is_not_reached(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, busybox_image: str,
    leftovers: dict[str, list[str]],
) -> None:  # fmt: skip
    """The daemon's router takes `{name:.*}` across slashes: `/containers/web2/db/json` names
    the db container by the link alias `/web2/db` of a covered container `web2` an admin linked
    to it. The gateway pins `web2` to its ID, so the daemon looks up `ID/db`: missing."""
    web2 = f"web-link-{os.urandom(4).hex()}"
    daemon.docker(
        *("run", "-d", "--name", web2, "--label", f"{LABEL}=web", "--link", f"{pair['db']}:db"),
        *(busybox_image, "sleep", "600"),
    )
    leftovers["container"].append(web2)
    assert direct(daemon, "GET", f"/v1.41/containers/{web2}/db/json")[1]["Id"] == pair["db_id"]
    for method, target in (
        ("GET", f"/v1.41/containers/{web2}/db/json"),
        ("GET", f"/v1.41/containers/{web2}%2Fdb/json"),
        ("GET", f"/v1.41/containers/{web2}/db/logs?stdout=1"),
    ):
        status, body = _raw(api, method, target)
        assert status in (400, 404), (target, status, body[:300])
        assert b"hello-db" not in body and pair["db_id"].encode() not in body
    status, _ = _raw(api, "POST", f"/v1.41/containers/{web2}/db/restart?t=0")
    assert status in (400, 404)
    started = daemon.inspect(pair["db"])["State"]["StartedAt"]
    time.sleep(0.1)
    assert daemon.inspect(pair["db"])["State"]["StartedAt"] == started


def test_a_covered_create_cannot_join_or_borrow_the_db_container(
    api: Api, pair: dict[str, str], busybox_image: str, daemon: PrivateDaemon,
    leftovers: dict[str, list[str]],
) -> None:  # fmt: skip
    """A create labelled web that names db anywhere (namespaces, volumes-from, links, in
    case-variant and duplicated keys) is refused and makes no container."""
    db = pair["db"]
    host_configs: list[dict[str, Any]] = [
        {"NetworkMode": f"container:{db}"},
        {"PidMode": f"container:{db}"},
        {"IpcMode": f"container:{db}"},
        {"VolumesFrom": [f"{db}:ro"]},
        {"Links": [f"{db}:x"]},
        {"networkmode": f"container:{pair['db_id'][:12]}"},
    ]
    for host in host_configs:
        body = {"Image": busybox_image, "Cmd": ["true"], "Labels": {LABEL: "web"}}
        status, answer = api.call("POST", "/v1.41/containers/create", {**body, "HostConfig": host})
        if status == 201:
            leftovers["container"].append(answer["Id"])
        assert status == 403, (host, status, answer)
        assert "No such container" in answer["message"], (host, answer)
    # duplicate keys: gateway and daemon both keep the last HostConfig
    raw = (
        b'{"Image":"%s","Cmd":["true"],"Labels":{"%s":"web"},'
        b'"HostConfig":{"PidMode":"container:%s"},"hostconfig":{"IpcMode":"container:%s"}}'
        % (busybox_image.encode(), LABEL.encode(), db.encode(), db.encode())
    )
    status, answer = api.call("POST", "/v1.41/containers/create", raw)
    if status == 201:
        leftovers["container"].append(answer["Id"])
    assert status in (400, 403), (status, answer)


def test_label_spellings_do_not_make_a_db_create_covered(
    api: Api, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """Duplicate and case-variant `Labels` keys: what the daemon stores is what was judged."""
    bodies = [
        b'{"Image":"IMG","Labels":{"KEY":"web"},"labels":{"KEY":"db"}}',
        b'{"Image":"IMG","Labels":{"KEY":"web","KEY":"db"}}',
        b'{"Image":"IMG","LABELS":{"KEY":"db"},"Labels":{"KEY":"web"}}',
        b'{"Image":"IMG","Labels":{"KEY":"web","com\\u002eexample.team":"db"}}',
        b'{"Image":"IMG","Labels":{"KEY":"web"},"L\\u0061bels":{"KEY":"db"}}',
        b'{"Image":"IMG","Labels":{"KEY":"web"},"Label\xc5\xbf":{"KEY":"db"}}',
    ]
    for template in bodies:
        raw = template.replace(b"IMG", busybox_image.encode()).replace(b"KEY", LABEL.encode())
        status, answer = api.call("POST", "/v1.41/containers/create", raw)
        if status == 201:
            leftovers["container"].append(answer["Id"])
            status2, inspected = api.call("GET", f"/v1.41/containers/{answer['Id']}/json")
            assert status2 == 200, (raw, inspected)
            assert inspected["Config"]["Labels"].get(LABEL) == "web", (raw, inspected)


def test_exec_logs_archive_of_db_are_absent(api: Api, pair: dict[str, str]) -> None:
    """exec create, logs, archive, export, top, changes, stats on db: 404, nothing of it read."""
    db = pair["db"]
    checks = [
        ("POST", f"/v1.41/containers/{db}/exec", b'{"Cmd":["cat","/secret"]}'),
        ("GET", f"/v1.41/containers/{db}/logs?stdout=1&stderr=1", b""),
        ("GET", f"/v1.41/containers/{db}/archive?path=/secret", b""),
        ("HEAD", f"/v1.41/containers/{db}/archive?path=/secret", b""),
        ("GET", f"/v1.41/containers/{db}/export", b""),
        ("GET", f"/v1.41/containers/{db}/top", b""),
        ("GET", f"/v1.41/containers/{db}/changes", b""),
        ("GET", f"/v1.41/containers/{db}/stats?stream=0", b""),
    ]
    for method, target, body in checks:
        status, answer = _raw(api, method, target, body)
        assert status == 404, (target, status, answer[:200])
        assert b"secret" not in answer and b"hello-db" not in answer


def test_list_and_filters_show_nothing_of_db(api: Api, pair: dict[str, str]) -> None:
    """The container list, whatever its filters (id, name, a second `filters`, the legacy
    map form, a `label` asking for db), shows no db container."""
    db, db_id = pair["db"], pair["db_id"]

    def q(value: object) -> str:
        return quote(json.dumps(value))

    targets = [
        "/v1.41/containers/json?all=1",
        f"/v1.41/containers/json?all=1&filters={q({'id': [db_id]})}",
        f"/v1.41/containers/json?all=1&filters={q({'name': [db]})}",
        f"/v1.41/containers/json?all=1&filters={q({'label': [f'{LABEL}=db']})}",
        f"/v1.41/containers/json?all=1&filters={q({'label': {f'{LABEL}=db': True}})}",
        f"/v1.41/containers/json?all=1&filters={q({})}&filters={q({'label': [LABEL + '=db']})}",
        "/v1.41/containers/json?all=1&size=1&limit=100",
        "/v1.19/containers/json?all=1",
    ]
    for target in targets:
        status, body = _raw(api, "GET", target)
        assert db_id.encode() not in body and db.encode() not in body, (target, status, body)


def test_events_replayed_since_show_nothing_of_db(api: Api, pair: dict[str, str]) -> None:
    """`docker events --since` replays the db container's create and start: none reaches the
    caller, whatever filters ask for it; the web container's do."""
    start = int(time.time()) - 3600
    until = int(time.time()) + 1

    for filters in ("", quote(json.dumps({"container": [pair["db"]]}))):
        target = f"/v1.41/events?since={start}&until={until}"
        if filters:
            target += f"&filters={filters}"
        status, body = _raw(api, "GET", target)
        assert status == 200, body[:200]
        assert pair["db_id"].encode() not in body and pair["db"].encode() not in body
        if not filters:
            assert pair["web_id"].encode() in body


def test_a_covered_container_named_as_db_short_id_captures_its_references(
    api: Api, pair: dict[str, str], busybox_image: str, daemon: PrivateDaemon,
    leftovers: dict[str, list[str]],
) -> None:  # fmt: skip
    """The daemon resolves a name before an ID prefix: a web container named as db's 12-digit
    short ID (shown by `docker ps`, and as db's hostname in a linked container's /etc/hosts)
    takes `docker exec/cp/logs/stop <short ID>` of every client that is not resolved among the
    db team's objects (the admin on the socket, an unscoped policy) away from db. Ownership
    mode refuses such names (hex_name_problem); a scoped create does not."""
    short = pair["db_id"][:12]
    body = {"Image": busybox_image, "Cmd": ["sleep", "600"], "Labels": {LABEL: "web"}}
    status, answer = api.call("POST", f"/v1.41/containers/create?name={short}", body)
    if status == 201:
        leftovers["container"].append(answer["Id"])
    status_direct, seen = direct(daemon, "GET", f"/v1.41/containers/{short}/json")
    # What the admin's `docker inspect <short ID>` finds on the daemon: db, not the caller's.
    assert seen["Id"] == pair["db_id"], (status, answer, status_direct, seen.get("Name"))


def test_list_names_of_a_covered_container_tell_of_an_out_of_scope_linker(
    api: Api, pair: dict[str, str], daemon: PrivateDaemon, busybox_image: str,
    leftovers: dict[str, list[str]],
) -> None:  # fmt: skip
    """The admin runs a db-side container linked to the web one (`--link web:w`): the daemon
    adds `/<linker>/w` to the web container's Names. The caller's `docker ps` showed it; now
    only the web container's own name is listed. Its inspect never named the linker (it
    shows the links the container made, not those made to it), and a `name` filter on the
    linker's name does not find the web container through the alias (the daemon matches the
    filter on the container's own name too: moby daemon/list.go includeContainerInList)."""
    linker = f"db-linker-{os.urandom(4).hex()}"
    daemon.docker(
        *("run", "-d", "--name", linker, "--label", f"{LABEL}=db", "--link", f"{pair['web']}:w"),
        *(busybox_image, "sleep", "600"),
    )
    leftovers["container"].append(linker)
    status, listed = api.call("GET", "/v1.41/containers/json?all=1")
    assert status == 200
    names = [n for c in listed for n in c["Names"]]
    assert f"/{pair['web']}" in names
    assert not any(linker in n for n in names), names
    _, direct_listed = direct(daemon, "GET", "/v1.41/containers/json?all=1")
    assert any(f"/{linker}/w" in c["Names"] for c in direct_listed)  # (the daemon lists it)
    status, seen = api.call("GET", f"/v1.41/containers/{pair['web']}/json")
    assert status == 200 and linker not in json.dumps(seen), seen
    filters = quote(json.dumps({"name": [linker]}))
    status, found = api.call("GET", f"/v1.41/containers/json?all=1&filters={filters}")
    assert (status, found) == (200, []), found


NET_POLICY = """\
policies:
  web:
    rules:
      - allow: {sections: [ping, version]}
      - allow:
          operations: [NetworkInspect, NetworkList, NetworkConnect, NetworkDisconnect,
                       SystemEvents]
          objects: {names: ["web-*"]}
"""


@pytest.fixture(scope="module")
def net_api(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A caller whose networks are those named web-*."""
    yield from policy_api(daemon, tmp_path_factory, NET_POLICY)


@pytest.fixture
def web_net(daemon: PrivateDaemon, pair: dict[str, str]) -> Iterator[str]:
    """A network named web-* the admin connected the db container to. Its name."""
    name = f"web-net-{os.urandom(4).hex()}"
    daemon.docker("network", "create", name)
    daemon.docker("network", "connect", name, pair["db"])
    yield name
    daemon.docker("network", "disconnect", "-f", name, pair["db"], check=False)
    daemon.docker("network", "rm", name, check=False)


def test_inspect_of_a_covered_network_shows_out_of_scope_containers(
    net_api: Api, pair: dict[str, str], web_net: str
) -> None:
    """The db container is connected (by the admin) to web-net: the caller's `docker network
    inspect web-net` answers its full ID, name and IP addresses under `Containers`; the
    connect event the same caller may read has its `container` attribute taken out."""
    status, answer = net_api.call("GET", f"/v1.41/networks/{web_net}")
    assert status == 200, answer
    text = json.dumps(answer)
    assert pair["db_id"] not in text and pair["db"] not in text, answer.get("Containers")


@pytest.mark.timeout(420)  # (the precondition's waits: up to 180 s + 120 s under load)
def test_verbose_inspect_of_a_covered_overlay_shows_no_out_of_scope_service(
    net_api: Api, swarm: PrivateDaemon, busybox_image: str
) -> None:
    """On a swarm, `verbose=true` adds the services with tasks on the network (names, VIPs,
    task names and addresses): a db service on the caller's web-* overlay is not shown."""
    suffix = os.urandom(4).hex()
    network, service = f"web-ov-{suffix}", f"db-ovsvc-{suffix}"
    swarm.docker("network", "create", "--driver", "overlay", "--attachable", network)
    try:
        swarm.docker(
            *("service", "create", "--detach", "--no-resolve-image", "--name", service),
            *("--network", network, "--label", f"{LABEL}=db", busybox_image, "sleep", "600"),
        )
        target = f"/v1.41/networks/{network}?verbose=true"
        # The precondition, in two waits (a loaded machine schedules and starts the task
        # slowly): the service's task running, then the daemon's own verbose answer listing
        # it (the network's service records follow the task's endpoint).
        tasks = "/v1.41/tasks?filters=" + quote(json.dumps({"service": [service]}))
        states: list[object] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            _, listed = direct(swarm, "GET", tasks)
            states = [t.get("Status", {}).get("State") for t in listed or []]
            if "running" in states:
                break
            time.sleep(0.5)
        assert "running" in states, f"the task of {service} never ran in 180 s: {states}"
        seen: dict[str, object] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            _, seen = direct(swarm, "GET", target)
            if service in json.dumps(seen.get("Services") or {}):
                break
            time.sleep(0.5)
        assert service in json.dumps(seen.get("Services") or {}), (
            f"the daemon's verbose inspect never listed the running {service} in 120 s",
            seen,
        )
        status, answer = net_api.call("GET", target)
        assert status == 200, answer
        assert answer["Name"] == network and answer["Services"] == {}, answer
        assert service not in json.dumps(answer), answer
    finally:
        swarm.docker("service", "rm", service, check=False)
        for _ in range(60):  # the task's endpoint goes some time after the service
            if swarm.docker("network", "rm", network, check=False).returncode == 0:
                break
            time.sleep(0.5)


def test_connect_events_of_a_covered_network_hide_the_container(
    net_api: Api, pair: dict[str, str], web_net: str
) -> None:
    """The replayed `connect` event of web-net is shown without its `container` attribute."""
    since, until = int(time.time()) - 120, int(time.time()) + 1
    status, body = _raw(net_api, "GET", f"/v1.41/events?since={since}&until={until}")
    assert status == 200
    assert web_net.encode() in body, body[-500:]
    assert pair["db_id"].encode() not in body and pair["db"].encode() not in body


# ----- services on a single-node swarm ------------------------------------------------------------

SERVICE_POLICY = f"""\
policies:
  web:
    GUARDRAILS
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
def service_apis(
    swarm: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Api]]:
    """Callers of two gateways: the policy with its default guardrails, and without any."""
    texts = {
        "guarded": SERVICE_POLICY.replace("GUARDRAILS", "guardrails: true"),
        "unguarded": SERVICE_POLICY.replace("GUARDRAILS", "guardrails: false"),
    }
    base = tmp_path_factory.mktemp("attackservices")
    (base / "guarded.yaml").write_text(texts["guarded"])
    (base / "unguarded.yaml").write_text(texts["unguarded"])
    with (
        running(Gateway(swarm.host, policy=base / "guarded.yaml")) as guarded,
        running(Gateway(swarm.host, policy=base / "unguarded.yaml")) as unguarded,
    ):
        yield {"guarded": Api(guarded), "unguarded": Api(unguarded)}


@pytest.fixture
def handed_over(swarm: PrivateDaemon, busybox_image: str) -> Iterator[str]:
    """A service the admin made for the db team and then handed over to the web team (its
    label updated to web): its PreviousSpec is labelled db. Its ID."""
    name = f"svc-atk-{os.urandom(4).hex()}"
    made = swarm.docker(
        *("service", "create", "--detach", "--no-resolve-image", "--replicas", "0"),
        *("--name", name, "--label", f"{LABEL}=db", busybox_image, "sleep", "600"),
    )
    swarm.docker("service", "update", "--detach", "--label-add", f"{LABEL}=web", name)
    yield made.stdout.decode().strip()
    swarm.docker("service", "rm", name, check=False)


def _rollback(api: Api, swarm: PrivateDaemon, service: str) -> tuple[int, Any]:
    """`docker service rollback` as the CLI sends it: the current spec, `rollback=previous`."""
    status, current = api.call("GET", f"/v1.41/services/{service}")
    assert status == 200, current
    version = current["Version"]["Index"]
    target = f"/v1.41/services/{service}/update?version={version}&rollback=previous"
    return api.call("POST", target, current["Spec"])


def _service_team(swarm: PrivateDaemon, service: str) -> str:
    status, answer = direct(swarm, "GET", f"/v1.41/services/{service}")
    assert status == 200, answer
    return str(answer["Spec"]["Labels"].get(LABEL))


def test_rollback_is_refused_by_the_guardrails(
    service_apis: dict[str, Api], swarm: PrivateDaemon, handed_over: str
) -> None:
    """With guardrails, `rollback=previous` is refused: the service stays the web team's."""
    status, answer = _rollback(service_apis["guarded"], swarm, handed_over)
    assert status == 403, answer
    assert _service_team(swarm, handed_over) == "web"


def test_rollback_moves_a_covered_service_out_of_the_scope(
    service_apis: dict[str, Api], swarm: PrivateDaemon, handed_over: str
) -> None:
    """docs/policy.md: a whole-spec update must leave the service covered, "so an object cannot
    be moved out of the scope (or into it)". `guardrails: false` turns off only the guardrails,
    yet the scope's own check is then passed by a body the daemon does not use."""
    _rollback(service_apis["unguarded"], swarm, handed_over)
    assert _service_team(swarm, handed_over) == "web"


@pytest.fixture
def team_services(swarm: PrivateDaemon, busybox_image: str) -> Iterator[dict[str, str]]:
    """A web service and two db services (no replicas), made by the admin: name -> ID."""
    suffix = os.urandom(4).hex()
    made: dict[str, str] = {}
    for team, name in (("web", "web"), ("db", "db1"), ("db", "db2")):
        created = swarm.docker(
            *("service", "create", "--detach", "--no-resolve-image", "--replicas", "0"),
            *("--name", f"{name}-{suffix}", "--label", f"{LABEL}={team}"),
            *(busybox_image, "sleep", "600"),
        )
        made[name] = created.stdout.decode().strip()
    yield made
    swarm.docker("service", "rm", *(f"{n}-{suffix}" for n in made), check=False)


def test_task_list_service_filter_error_counts_out_of_scope_services(
    service_apis: dict[str, Api], team_services: dict[str, str]
) -> None:
    """A `service` filter is resolved by the daemon among ALL services (getService: full ID,
    name, ID prefix); only a 200 is judged by the gateway. An empty prefix matches every
    service: the 400 says how many there are; a prefix of the web service's ID that a db
    service shares says so too (prefix by prefix, the db services' IDs can be walked)."""
    api = service_apis["guarded"]
    missing_status, _ = api.call(
        "GET", "/v1.41/tasks?filters=" + quote(json.dumps({"service": ["no-such-service"]}))
    )
    status, answer = api.call("GET", "/v1.41/tasks?filters=" + quote(json.dumps({"service": [""]})))
    # Held: answered as for a service that does not exist (or filtered to the web service's).
    assert status in (200, missing_status), (status, answer)
    assert "matches found" not in json.dumps(answer), answer


def test_a_covered_service_plants_containers_in_another_scope(
    service_apis: dict[str, Api], swarm: PrivateDaemon, busybox_image: str
) -> None:
    """The service is judged on Spec.Labels (web: covered); its tasks' containers get
    TaskTemplate.ContainerSpec.Labels (db), which is where `docker stack deploy` puts the
    stack label too. The daemon then runs a container in the db team's scope that the web
    caller made (it shows in their `docker ps --filter label=...=db`, they exec into it)."""
    api = service_apis["guarded"]
    name = f"plant-{os.urandom(4).hex()}"
    spec = {
        "Name": name,
        "Labels": {LABEL: "web"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": busybox_image,
                "Command": ["sleep", "600"],
                "Labels": {LABEL: "db"},
            }
        },
        "Mode": {"Replicated": {"Replicas": 1}},
    }
    status, created = api.call("POST", "/v1.41/services/create", spec)
    planted: list[str] = []
    try:
        if status == 201:
            deadline = time.monotonic() + 15
            while not planted and time.monotonic() < deadline:
                filters = quote(json.dumps({"label": [f"com.docker.swarm.service.name={name}"]}))
                _, found = direct(swarm, "GET", f"/v1.41/containers/json?all=1&filters={filters}")
                planted = [c["Labels"].get(LABEL) for c in found]
                time.sleep(0.3)
        assert "db" not in planted, (status, created, planted)
    finally:
        swarm.docker("service", "rm", name, check=False)


def test_check_agrees_with_the_gateway_on_an_update_leaving_the_scope(
    service_apis: dict[str, Api], swarm: PrivateDaemon, handed_over: str,
    tmp_path: pathlib.Path,
) -> None:  # fmt: skip
    """The web service updated to the db label: the gateway answers 403 (the service as
    updated would not be covered) and the service stays web's; `dockgate check` with the
    same policy, target and body prints `allow ... if the look-ups above say so`."""
    api = service_apis["guarded"]
    status, current = api.call("GET", f"/v1.41/services/{handed_over}")
    assert status == 200, current
    spec = current["Spec"] | {"Labels": {LABEL: "db"}}
    target = f"/v1.41/services/{handed_over}/update?version={current['Version']['Index']}"
    status, answer = api.call("POST", target, spec)
    assert status == 403, answer
    assert _service_team(swarm, handed_over) == "web"
    base = tmp_path
    (base / "policy.yaml").write_text(SERVICE_POLICY.replace("GUARDRAILS", "guardrails: true"))
    (base / "body.json").write_text(json.dumps(spec))
    checked = run_dockgate(
        *("check", "--policy", str(base / "policy.yaml"), "--body", str(base / "body.json")),
        *("POST", target),
    )
    decision = next(line for line in checked.stdout.splitlines() if line.startswith("decision:"))
    assert "deny" in decision and "allow" not in decision, checked.stdout


def test_a_rename_form_body_does_not_take_the_container_out_of_a_names_scope(
    named_api: Api, daemon: PrivateDaemon, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """Go's ParseForm reads a form body of a POST and lets it win over the query: a rename to
    `web-…` in the query and `db-…` in an `application/x-www-form-urlencoded` body."""
    suffix = os.urandom(4).hex()
    web, web2, db = f"web-ren-{suffix}", f"web-ren2-{suffix}", f"db-ren-{suffix}"
    cid = daemon.docker("create", "--name", web, busybox_image, "true").stdout.decode().strip()
    leftovers["container"].append(cid)
    body = f"name={db}".encode()
    port = named_api.gateway.port
    request = (
        f"POST /v1.41/containers/{web}/rename?name={web2} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    answer = until_close(port, request)
    name = daemon.inspect(cid)["Name"]
    assert name in (f"/{web}", f"/{web2}"), (name, answer[:300])


def test_an_http10_list_is_filtered_too(api: Api, pair: dict[str, str]) -> None:
    """An HTTP/1.0 list, whose answer the daemon ends by closing, is filtered as well."""
    port = api.gateway.port
    request = f"GET /v1.41/containers/json?all=1 HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    answer = until_close(port, request.encode())
    assert pair["web_id"].encode() in answer or b" 502 " in answer[:20], answer[:300]
    assert pair["db_id"].encode() not in answer


def test_task_list_filter_on_an_out_of_scope_service_reads_as_absent(
    service_apis: dict[str, Api], team_services: dict[str, str], swarm: PrivateDaemon
) -> None:
    """docs/policy.md: a `service` filter naming a service out of the scope is answered
    `404 service X not found`, as for a service that does not exist. Compare the whole answers
    (the name swapped): status, headers but Date, body."""
    api = service_apis["guarded"]
    _, db = direct(swarm, "GET", f"/v1.41/services/{team_services['db1']}")
    name = db["Spec"]["Name"]
    absent = "x" * len(name)

    def answer(service: str) -> tuple[int, bytes]:
        filters = quote(json.dumps({"service": [service]}))
        port = api.gateway.port
        request = (
            f"GET /v1.41/tasks?filters={filters} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        raw = until_close(port, request.encode())
        lines = [line for line in raw.split(b"\r\n") if not line.lower().startswith(b"date:")]
        return int(raw.split(b" ")[1]), b"\r\n".join(lines).replace(service.encode(), b"NAME")

    out_of_scope, missing = answer(name), answer(absent)
    assert out_of_scope[0] == missing[0] == 404, (out_of_scope, missing)
    assert out_of_scope[1] == missing[1], (out_of_scope, missing)


def _whole(api: Api, method: str, target: str, reference: str) -> bytes:
    """The whole answer (Date taken out, `reference` replaced by NAME)."""
    port = api.gateway.port
    request = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if method == "POST":
        request += "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    else:
        request += "\r\n"
    raw = until_close(port, request.encode())
    lines = [line for line in raw.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(lines).replace(reference.encode(), b"NAME")


def test_an_out_of_scope_container_answers_as_a_missing_one_byte_for_byte(
    api: Api, pair: dict[str, str]
) -> None:
    """db by name, by full ID, by prefix, as a missing one of the same length would be."""
    absent_name = "x" * len(pair["db"])
    absent_id = "0" * 64
    for db, absent in (
        (pair["db"], absent_name),
        (pair["db_id"], absent_id),
        (pair["db_id"][:12], absent_id[:12]),
    ):
        for method, template in (
            ("GET", "/v1.41/containers/{}/json"),
            ("POST", "/v1.41/containers/{}/restart"),
            ("POST", "/v1.41/containers/{}/exec"),
            ("GET", "/v1.41/containers/{}/logs?stdout=1"),
        ):
            seen = _whole(api, method, template.format(db), db)
            missing = _whole(api, method, template.format(absent), absent)
            assert seen == missing, (template, seen, missing)


def test_an_out_of_scope_network_answers_as_a_missing_one_byte_for_byte(
    net_api: Api, daemon: PrivateDaemon
) -> None:
    """A db-* network by name and by ID, as a missing one would be."""
    name = f"db-net-{os.urandom(4).hex()}"
    net_id = daemon.docker("network", "create", name).stdout.decode().strip()
    try:
        for db, absent in ((name, "x" * len(name)), (net_id, "0" * 64), (net_id[:12], "0" * 12)):
            seen = _whole(net_api, "GET", f"/v1.41/networks/{db}", db)
            missing = _whole(net_api, "GET", f"/v1.41/networks/{absent}", absent)
            assert seen == missing, (seen, missing)
    finally:
        daemon.docker("network", "rm", name, check=False)


SERVE = "httpd -f -p 127.0.0.1:9999 -h /www"


def test_a_build_joins_an_out_of_scope_containers_network(
    api: Api, daemon: PrivateDaemon, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """The db container serves a secret on its own 127.0.0.1:9999 only. A covered create with
    `--network container:db` is refused by the scope (test above); a classic build with
    `networkmode=container:db` is not, and its RUN step reads the secret. (Ownership mode
    looks up a build's networkmode; the scope does not.)"""
    db = f"db-net-{os.urandom(4).hex()}"
    daemon.docker(
        *("run", "-d", "--name", db, "--label", f"{LABEL}=db", busybox_image),
        *(
            "sh",
            "-c",
            "mkdir /www; echo loopback-db-secret > /www/s; httpd -f -p 127.0.0.1:9999 -h /www",
        ),
    )
    leftovers["container"].append(db)
    deadline = time.monotonic() + 10
    while (
        b"loopback-db-secret"
        not in daemon.docker(
            "exec", db, "wget", "-qO-", "http://127.0.0.1:9999/s", check=False
        ).stdout
    ):
        assert time.monotonic() < deadline, "the db container's server did not start"
        time.sleep(0.2)
    tag = f"atk-build-{os.urandom(3).hex()}:x"
    leftovers["image"].append(tag)
    dockerfile = f"FROM {busybox_image}\nRUN wget -qO- http://127.0.0.1:9999/s || true\n".encode()
    context = build_context({"Dockerfile": dockerfile})
    target = f"/v1.41/build?t={tag}&rm=1&networkmode=container:{db}"
    status, answer = api.call(
        "POST", target, context, headers={"Content-Type": "application/x-tar"}
    )
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else json.dumps(answer)
    assert "loopback-db-secret" not in text, (status, text[-600:])
    assert status in (403, 404), (status, text[-600:])


def test_a_covered_network_cannot_disconnect_or_connect_the_db_container(
    net_api: Api, pair: dict[str, str], web_net: str, daemon: PrivateDaemon
) -> None:
    """NetworkDisconnect (forced) of db from web-net, by name and by ID prefix, and a connect
    of db to it by ID: refused, and db stays connected (once)."""
    for reference in (pair["db"], pair["db_id"][:12], pair["db_id"]):
        for action, extra in (("disconnect", {"Force": True}), ("connect", {})):
            body = {"Container": reference, **extra}
            status, answer = net_api.call("POST", f"/v1.41/networks/{web_net}/{action}", body)
            assert status in (403, 404), (action, reference, status, answer)
    _, network = direct(daemon, "GET", f"/v1.41/networks/{web_net}")
    assert list(network["Containers"]) == [pair["db_id"]]


def test_a_covered_create_cannot_mount_an_out_of_scope_volume(
    api: Api, daemon: PrivateDaemon, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """A db volume in Binds (modes), in Mounts (key spellings Go folds, a duplicated Mounts)
    of a create labelled web: refused, no container made."""
    vol = f"dbvol-{os.urandom(4).hex()}"
    daemon.docker("volume", "create", "--label", f"{LABEL}=db", vol)
    try:
        base = {"Image": busybox_image, "Cmd": ["true"], "Labels": {LABEL: "web"}}
        hosts: list[dict[str, Any]] = [
            {"Binds": [f"{vol}:/data"]},
            {"Binds": [f"{vol}:/data:ro,nocopy"]},
            {"Mounts": [{"Type": "volume", "Source": vol, "Target": "/data"}]},
            {"mounts": [{"type": "volume", "source": vol, "target": "/data"}]},
            {"Mounts": [{"TYPE": "volume", "SOURCE": vol, "TARGET": "/data"}]},
        ]
        for host in hosts:
            status, answer = api.call(
                "POST", "/v1.41/containers/create", base | {"HostConfig": host}
            )
            if status == 201:
                leftovers["container"].append(answer["Id"])
            assert status == 403, (host, status, answer)
        raw = (
            b'{"Image":"%s","Labels":{"%s":"web"},"HostConfig":{"Mounts":[{"Type":"volume",'
            b'"Source":"%s","Target":"/d"}]},"HostConfig":{"Binds":null}}'
            % (busybox_image.encode(), LABEL.encode(), vol.encode())
        )
        status, answer = api.call("POST", "/v1.41/containers/create", raw)
        if status == 201:
            leftovers["container"].append(answer["Id"])
        assert status in (400, 403), (status, answer)
    finally:
        daemon.docker("volume", "rm", "-f", vol, check=False)


def test_system_df_beside_a_scope_lists_out_of_scope_containers(
    api: Api, pair: dict[str, str]
) -> None:
    """Ownership mode makes `system df` unavailable for this reason (ownership/operations.py
    UNAVAILABLE); a scope cannot cover it (a rule with `objects:` may not name it), so a
    policy with `objects:` rules refuses it even where a rule without `objects:` allows it."""
    status, answer = api.call("GET", "/v1.41/system/df")
    listed = json.dumps(answer)
    assert pair["db_id"] not in listed and pair["db"] not in listed, listed[:300]
    assert status == 403, answer
    assert "objects:" in answer["message"], answer


def test_a_covered_create_cannot_join_an_out_of_scope_network_behind_a_predefined_key(
    api: Api, daemon: PrivateDaemon, busybox_image: str, leftovers: dict[str, list[str]]
) -> None:
    """An endpoint keyed `bridge` (predefined: not an object) whose NetworkID (which the
    daemon prefers to the key) is the db network's, in the spellings Go folds: refused."""
    name = f"db-net2-{os.urandom(4).hex()}"
    net_id = daemon.docker("network", "create", "--label", f"{LABEL}=db", name).stdout
    net_id_text = net_id.decode().strip()
    try:
        for key, field in (("bridge", "NetworkID"), ("bridge", "networkid"), ("none", "NetworkId")):
            body = {
                "Image": busybox_image,
                "Cmd": ["true"],
                "Labels": {LABEL: "web"},
                "HostConfig": {"NetworkMode": key},
                "NetworkingConfig": {"EndpointsConfig": {key: {field: net_id_text}}},
            }
            status, answer = api.call("POST", "/v1.41/containers/create", body)
            if status == 201:
                leftovers["container"].append(answer["Id"])
            assert status == 403, (key, field, status, answer)
    finally:
        daemon.docker("network", "rm", name, check=False)
