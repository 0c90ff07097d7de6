"""Lists and the event stream under an object scope, against the real daemon with the real
docker CLI through a real dockgate (policy/scopelists.py): a policy allows the lists and
`docker events` only for `com.example.team=web`, and the caller sees exactly the web objects,
whatever else the daemon holds; in warn mode it sees everything and the audit record says what
enforce would hide. Services and tasks are on a single-node swarm of their own
(support/netns.py, as test_preset_swarm_clients.py)."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon, run_docker
from support.gateway import Gateway, running
from support.netns import NamespacedDaemon, namespaced_daemon
from support.procs import stop_process
from support.remote import write_htpasswd
from support.streams import LineReader

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(300)]

TEAM = "com.example.team"
RUN = uuid.uuid4().hex[:8]
SCOPED = (
    "[ContainerList, SystemEvents, NetworkList, VolumeList, ServiceList, TaskList, SecretList, "
    "ConfigList]"
)
POLICY = f"""\
policies:
  web:
    mode: MODE
    rules:
      - allow: {{sections: [ping, version]}}
      - allow: {{operations: [NodeList, NodeInspect]}}
      - allow: {{operations: {SCOPED}, objects: {{labels: {{{TEAM}: web}}}}}}
"""


def _gateway(upstream: str, work: pathlib.Path, mode: str = "enforce") -> Gateway:
    policy = work / f"policy-{mode}.yaml"
    policy.write_text(POLICY.replace("MODE", mode))
    return Gateway(upstream, "--audit-log", str(work / f"audit-{mode}.jsonl"), policy=policy)


def _env(gateway: Gateway, config: pathlib.Path) -> dict[str, str]:
    env = os.environ.copy()
    for key in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS"):
        env.pop(key, None)
    env.update(DOCKER_HOST=gateway.url, DOCKER_CONFIG=str(config), DOCKER_CLI_HINTS="false")
    return env


def _cli(env: dict[str, str], *args: str, check: bool = True) -> list[str]:
    """The docker CLI through the gateway: its output lines."""
    proc = run_docker(env, *args, timeout=60)
    if check:
        assert proc.returncode == 0, f"docker {args}: {proc.stderr.decode()}"
    return (proc.stdout + proc.stderr).decode().split()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("scope-lists")
    (path / "config").mkdir()
    return path


@pytest.fixture(scope="module")
def enforce(daemon: PrivateDaemon, work: pathlib.Path) -> Iterator[dict[str, str]]:
    with running(_gateway(daemon.host, work)) as gw:
        yield _env(gw, work / "config")


@pytest.fixture(scope="module")
def objects(daemon: PrivateDaemon, busybox_image: str) -> Iterator[dict[str, list[str]]]:
    """Containers, networks and volumes of the team web and of others, made on the daemon."""
    made: dict[str, list[str]] = {"web": [], "other": []}
    containers = [
        ("web", f"dgt-web-a-{RUN}", ["--label", f"{TEAM}=web"]),
        ("web", f"dgt-web-b-{RUN}", ["--label", f"{TEAM}=web", "--label", "x=1"]),
        ("other", f"dgt-db-{RUN}", ["--label", f"{TEAM}=db"]),
        ("other", f"dgt-web-impostor-{RUN}", []),  # a web-like name, no label
        ("other", f"dgt-web-case-{RUN}", ["--label", f"{TEAM}=Web"]),  # values are exact
    ]
    try:
        for team, name, labels in containers:
            daemon.docker("create", "--name", name, *labels, busybox_image, "sleep", "300")
            made[team].append(name)
        daemon.docker("start", f"dgt-web-a-{RUN}", f"dgt-db-{RUN}")
        for team, value in (("web", "web"), ("other", "db")):
            network, volume = f"dgt-{value}-net-{RUN}", f"dgt-{value}-vol-{RUN}"
            daemon.docker("network", "create", "--internal", "--label", f"{TEAM}={value}", network)
            daemon.docker("volume", "create", "--label", f"{TEAM}={value}", volume)
            made[team] += [network, volume]
        yield made
    finally:
        for team in made.values():
            for name in team:
                daemon.docker("rm", "-f", name, check=False)
                daemon.docker("network", "rm", name, check=False)
                daemon.docker("volume", "rm", name, check=False)


def _ours(lines: list[str]) -> set[str]:
    return {line for line in lines if line.endswith(RUN)}


def test_docker_ps_shows_exactly_the_web_containers(
    daemon: PrivateDaemon, enforce: dict[str, str], objects: dict[str, list[str]]
) -> None:
    """`docker ps -a` through the gateway lists the two web containers and none of the three
    others, which the daemon lists; the caller's own filters still narrow within them."""
    web = {f"dgt-web-a-{RUN}", f"dgt-web-b-{RUN}"}
    every = daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
    assert len(_ours(every)) == 5  # the others exist
    assert _ours(_cli(enforce, "ps", "-a", "--format", "{{.Names}}")) == web
    assert _ours(_cli(enforce, "ps", "--format", "{{.Names}}")) == {f"dgt-web-a-{RUN}"}
    assert _ours(_cli(enforce, "ps", "-aq", "--no-trunc", "--filter", "label=x=1")) == set()
    named = _cli(enforce, "ps", "-a", "--format", "{{.Names}}", "--filter", "label=x=1")
    assert _ours(named) == {f"dgt-web-b-{RUN}"}
    other = _cli(enforce, "ps", "-a", "--format", "{{.Names}}", "--filter", f"name=dgt-db-{RUN}")
    assert _ours(other) == set()


def test_a_scope_by_names_is_filtered_by_the_gateway_alone(
    daemon: PrivateDaemon, work: pathlib.Path, objects: dict[str, list[str]]
) -> None:
    """A scope by name pattern cannot be narrowed on the daemon (its `name` filter is a
    substring match): the gateway's filtering alone keeps the containers whose own name
    matches, and the db container out."""
    policy = work / "policy-names.yaml"
    policy.write_text(
        "policies:\n  p:\n    rules:\n      - allow: {sections: [ping, version]}\n"
        f"      - allow: {{operations: [ContainerList], objects: {{names: ['dgt-web-*-{RUN}']}}}}\n"
    )
    with running(Gateway(daemon.host, policy=policy)) as gw:
        names = _cli(_env(gw, work / "config"), "ps", "-a", "--format", "{{.Names}}")
    every = daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
    assert f"dgt-db-{RUN}" in every
    assert _ours(names) == {n for n in _ours(every) if n.startswith("dgt-web-")}
    assert f"dgt-web-impostor-{RUN}" in names  # (covered by its name: no label needed)


def test_docker_ps_last_n_counts_only_covered_containers(
    daemon: PrivateDaemon, work: pathlib.Path, objects: dict[str, list[str]], busybox_image: str
) -> None:
    """`docker ps -n N` and `-l` under a scope: the N newest covered containers, in the
    daemon's order, as if the uncovered ones did not exist; the daemon itself, asked the same,
    answers the uncovered container made last."""
    late = f"dgt-late-{RUN}"
    daemon.docker("create", "--name", late, busybox_image, "true")
    policy = work / "policy-last.yaml"
    policy.write_text(
        "policies:\n  p:\n    rules:\n      - allow: {sections: [ping, version]}\n"
        f"      - allow: {{operations: [ContainerList], objects: {{names: ['dgt-web-*-{RUN}']}}}}\n"
    )
    try:
        newest = daemon.docker("ps", "-n", "1", "--format", "{{.Names}}").stdout.decode().split()
        assert newest == [late]
        with running(Gateway(daemon.host, policy=policy)) as gw:
            env = _env(gw, work / "config")
            one = _cli(env, "ps", "-n", "1", "--format", "{{.Names}}")
            latest = _cli(env, "ps", "-l", "--format", "{{.Names}}")
            two = _cli(env, "ps", "-n", "2", "--format", "{{.Names}}")
    finally:
        daemon.docker("rm", "-f", late, check=False)
    # (made in this order by `objects`: web-a, web-b, db, web-impostor, web-case)
    assert one == latest == [f"dgt-web-case-{RUN}"]
    assert two == [f"dgt-web-case-{RUN}", f"dgt-web-impostor-{RUN}"]


def test_ordering_filters_are_refused_under_a_scope(
    enforce: dict[str, str], objects: dict[str, list[str]]
) -> None:
    """`--filter before=X` would tell whether an uncovered X exists: refused, whatever X."""
    for reference in (f"dgt-db-{RUN}", f"dgt-web-a-{RUN}", "nothing-of-that-name"):
        out = " ".join(_cli(enforce, "ps", "-a", "--filter", f"before={reference}", check=False))
        assert "since/before filters" in out


def test_networks_and_volumes_are_filtered(
    enforce: dict[str, str], objects: dict[str, list[str]]
) -> None:
    """`docker network ls` and `docker volume ls` list the web network and volume only (not
    the daemon's predefined networks either: they carry no label)."""
    networks = _cli(enforce, "network", "ls", "--format", "{{.Name}}")
    assert _ours(networks) == {f"dgt-web-net-{RUN}"}
    assert not {"bridge", "host", "none"} & set(networks)
    assert _ours(_cli(enforce, "volume", "ls", "--format", "{{.Name}}")) == {f"dgt-web-vol-{RUN}"}


def _until_open(
    reader: LineReader, daemon: PrivateDaemon, name: str, image: str, label: list[str] | None = None
) -> None:
    """Until the stream is open (the client's request may not have reached the gateway yet):
    a container `name` is made and removed until its `destroy` shows on the stream."""
    labels = ["--label", "=".join(label)] if label else []
    for _ in range(60):
        daemon.docker("create", "--name", name, *labels, image, "true")
        daemon.docker("rm", name)
        try:
            reader.expect(rf'"Action":"destroy".*"name":"{name}"', timeout=1)
        except AssertionError:
            continue
        return
    raise AssertionError(f"the event stream never opened: {reader.lines[-5:]}")


def test_docker_events_shows_only_the_web_containers_events(
    daemon: PrivateDaemon,
    busybox_image: str,
    enforce: dict[str, str],
    objects: dict[str, list[str]],
) -> None:
    """Started and stopped directly on the daemon, both containers' events happen in order;
    the caller's stream shows the web container's and none of the other's (its destroy
    included), up to the web container's own destroy, which comes last."""
    web, other = f"dgt-web-b-{RUN}", f"dgt-db-{RUN}"
    docker = shutil.which("docker") or "docker"
    proc = subprocess.Popen(
        [docker, "events", "--format", "{{json .}}"],
        env=enforce,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        reader = LineReader(proc.stdout)
        _until_open(reader, daemon, f"dgt-web-probe-{RUN}", busybox_image, [TEAM, "web"])
        daemon.docker("start", web)
        reader.expect(rf'"Action":"start".*"name":"{web}"', timeout=30)
        daemon.docker("start", other)
        daemon.docker("stop", "-t", "0", web, other)
        daemon.docker("network", "create", f"dgt-ev-net-{RUN}")  # a network event: not shown
        daemon.docker("network", "rm", f"dgt-ev-net-{RUN}")
        daemon.docker("rm", "-f", other)
        daemon.docker("rm", "-f", web)
        reader.expect(rf'"Action":"destroy".*"name":"{web}"', timeout=30)
        seen = list(reader.lines)
    finally:
        stop_process(proc)
    events = [json.loads(line) for line in seen]
    names = {e["Actor"]["Attributes"].get("name") for e in events}
    assert names == {web, f"dgt-web-probe-{RUN}"}, f"events of other objects passed: {names}"
    actions = [e["Action"] for e in events]
    assert {"start", "kill", "die", "stop", "destroy"} <= set(actions)
    assert {e["Type"] for e in events} == {"container"}


def test_warn_mode_relays_lists_unfiltered_and_records_what_it_would_hide(
    daemon: PrivateDaemon, work: pathlib.Path, objects: dict[str, list[str]]
) -> None:
    """Warn mode: `docker ps -a` lists every container, and each list's audit record says
    that enforce would hide the objects out of the scope."""
    with running(_gateway(daemon.host, work, "warn")) as gw:
        names = _cli(_env(gw, work / "config"), "ps", "-a", "--format", "{{.Names}}")
    every = daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
    assert _ours(names) == _ours(every) and f"dgt-web-impostor-{RUN}" in names
    records = [
        json.loads(line) for line in (work / "audit-warn.jsonl").read_text().splitlines() if line
    ]
    lists = [r for r in records if r.get("operation") == "ContainerList"]
    assert lists, records
    assert all("objects out of the scope" in r["would_hide"] for r in lists)


# ----- services and tasks, on a swarm of their own ------------------------------------------------


@pytest.fixture(scope="module")
def swarm(work: pathlib.Path) -> Iterator[tuple[NamespacedDaemon, dict[str, str]]]:
    """A single-node swarm with a web service and a db service (one task each), and a
    gateway with the scoped policy in front of it."""
    with namespaced_daemon() as manager:
        try:
            manager.docker("swarm", "init", "--advertise-addr", manager.netns.address, timeout=60)
            image = manager.make_busybox_image()
            for value in ("web", "db"):
                manager.docker(
                    *("service", "create", "--detach", "--no-resolve-image"),
                    *("--name", f"dgt-{value}-svc-{RUN}", "--label", f"{TEAM}={value}"),
                    *(image, "sleep", "300"),
                    timeout=60,
                )
                for kind in ("secret", "config"):
                    manager.docker(
                        *(kind, "create", "--label", f"{TEAM}={value}"),
                        *(f"dgt-{value}-{kind}-{RUN}", "-"),
                        input=b"x",
                    )
            with running(_gateway(manager.host, work, "enforce")) as gw:
                yield manager, _env(gw, work / "config")
        finally:
            for value in ("web", "db"):
                manager.docker("service", "rm", f"dgt-{value}-svc-{RUN}", check=False)
            manager.docker("swarm", "leave", "--force", check=False, timeout=60)


def test_services_and_their_tasks_are_filtered(
    swarm: tuple[NamespacedDaemon, dict[str, str]],
) -> None:
    """`docker service ls` lists the web service only; `docker service ps` shows its task,
    and the db service is no such service to the caller, by name and through the API's
    task list filtered by its ID (404, as for a service that does not exist)."""
    manager, env = swarm
    web, db = f"dgt-web-svc-{RUN}", f"dgt-db-svc-{RUN}"
    db_id = manager.docker("service", "inspect", "-f", "{{.ID}}", db).stdout.decode().strip()
    web_id = manager.docker("service", "inspect", "-f", "{{.ID}}", web).stdout.decode().strip()
    assert _ours(_cli(env, "service", "ls", "--format", "{{.Name}}")) == {web}
    # (--no-resolve: tasks are named by their service's ID, nodes are not looked up)
    tasks = _cli(env, "service", "ps", "--no-resolve", "--format", "{{.Name}}", web)
    assert tasks == [f"{web_id}.1"]
    refused = " ".join(_cli(env, "service", "ps", "--no-resolve", db, check=False))
    assert "no such service" in refused.lower(), refused
    every = manager.docker("service", "ps", "-q", "--no-trunc", db, web).stdout.decode().split()
    assert len(every) >= 2  # both services have tasks on the daemon
    gateway = env["DOCKER_HOST"].removeprefix("tcp://")
    answer = _http_get(gateway, "/v1.41/tasks")
    assert answer[0] == 200 and {t["ServiceID"] for t in answer[1]} == {web_id}
    filters = json.dumps({"service": {db_id: True}})
    status, body = _http_get(gateway, f"/v1.41/tasks?filters={filters}")
    assert (status, body) == (404, {"message": f"service {db_id} not found"})


def test_secrets_and_configs_are_filtered(
    swarm: tuple[NamespacedDaemon, dict[str, str]],
) -> None:
    """`docker secret ls` and `docker config ls` list the web ones only."""
    manager, env = swarm
    for kind in ("secret", "config"):
        every = manager.docker(kind, "ls", "--format", "{{.Name}}").stdout.decode().split()
        assert _ours(every) == {f"dgt-web-{kind}-{RUN}", f"dgt-db-{kind}-{RUN}"}
        assert _ours(_cli(env, kind, "ls", "--format", "{{.Name}}")) == {f"dgt-web-{kind}-{RUN}"}


def _http_get(hostport: str, target: str) -> tuple[int, object]:
    import http.client  # noqa: PLC0415
    from urllib.parse import quote  # noqa: PLC0415

    host, _, port = hostport.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", quote(target, safe="/?=&"))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_shared_event_feed_is_filtered_per_member(
    daemon: PrivateDaemon, busybox_image: str, work: pathlib.Path
) -> None:
    """Two `docker events` through one gateway share one daemon stream (the same forwarded
    target: a scope by name narrows nothing): the scoped caller sees its container's events
    only, the unscoped one sees both containers'."""
    web, other = f"dgt-feed-web-{RUN}", f"dgt-feed-db-{RUN}"
    probe = f"dgt-feed-web-probe-{RUN}"
    (work / "htpasswd").unlink(missing_ok=True)
    write_htpasswd(work / "htpasswd", {"admin": "admin-pass"})
    policy = work / "policy-feed.yaml"
    policy.write_text(
        "bindings:\n  - {policy: admin, users: [admin]}\n  - {policy: web, anonymous: true}\n"
        "policies:\n  admin: {rules: [{allow: {sections: ['*']}}]}\n  web:\n    rules:\n"
        "      - allow: {sections: [ping, version]}\n"
        "      - allow: {operations: [SystemEvents], objects: {names: ['dgt-feed-web-*']}}\n"
    )
    admin_config = work / "admin-config"
    admin_config.mkdir(exist_ok=True)
    basic = base64.b64encode(b"admin:admin-pass").decode()
    (admin_config / "config.json").write_text(
        json.dumps({"HttpHeaders": {"Authorization": f"Basic {basic}"}})
    )
    docker = shutil.which("docker") or "docker"
    procs: list[subprocess.Popen[bytes]] = []
    gateway = Gateway(daemon.host, "--htpasswd", str(work / "htpasswd"), policy=policy)
    try:
        with running(gateway) as gw:
            readers = {}
            for who, config in (("web", work / "config"), ("admin", admin_config)):
                proc = subprocess.Popen(
                    [docker, "events", "--format", "{{json .}}"],
                    env=_env(gw, config),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                procs.append(proc)
                assert proc.stdout is not None
                readers[who] = LineReader(proc.stdout)
            for reader in readers.values():
                _until_open(reader, daemon, probe, busybox_image)
            daemon.docker("create", "--name", web, busybox_image, "true")
            listeners = daemon.docker("info", "--format", "{{.NEventsListener}}")
            assert listeners.stdout.decode().strip() == "1"  # one feed for both
            daemon.docker("create", "--name", other, busybox_image, "true")
            daemon.docker("rm", other)  # one by one: the CLI removes several at once
            daemon.docker("rm", web)
            readers["admin"].expect(rf'"Action":"destroy".*"name":"{other}"', timeout=30)
            readers["web"].expect(rf'"Action":"destroy".*"name":"{web}"', timeout=30)
            readers["admin"].expect(rf'"Action":"destroy".*"name":"{web}"', timeout=30)
    finally:
        for proc in procs:
            stop_process(proc)
        daemon.docker("rm", "-f", web, other, check=False)
    seen = {who: [json.loads(line) for line in r.lines] for who, r in readers.items()}
    assert {e["Actor"]["Attributes"]["name"] for e in seen["web"]} == {probe, web}
    assert {e["Actor"]["Attributes"]["name"] for e in seen["admin"]} == {probe, web, other}
