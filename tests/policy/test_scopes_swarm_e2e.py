"""Object scopes on swarm objects, end to end: a single-node swarm on the session's dockerd and
a real dockgate whose policy allows services (and their tasks and logs) only when labelled
`com.example.team=web` (policy/scoping.py, ownership/scopefind.py). Tasks follow their
service; service logs follow the service; a create or update must leave the service covered."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon, run_docker
from support.gateway import Gateway, running
from support.swarm import single_node_swarm

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's policy",
    ),
]

LABEL = "com.example.team"
POLICY = """\
policies:
  web:
    rules:
      - allow: {sections: [ping, version]}
      - allow:
          operations: [ServiceInspect, ServiceLogs, ServiceCreate, ServiceUpdate, ServiceDelete,
                       TaskInspect, TaskLogs, SecretInspect, SecretCreate]
          objects: {labels: {com.example.team: web}}
"""


@pytest.fixture(scope="module")
def env(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("scopeswarm")
    policy = base / "policy.yaml"
    policy.write_text(POLICY)
    with single_node_swarm(daemon), running(Gateway(daemon.host, policy=policy)) as gw:
        variables = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        (base / "cli").mkdir()
        yield variables | {"DOCKER_HOST": gw.url, "DOCKER_CONFIG": str(base / "cli")}


@pytest.fixture(scope="module")
def services(
    env: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> Iterator[dict[str, str]]:
    """A web service and a db service made on the daemon: name -> ID, and each one's task."""
    suffix = os.urandom(4).hex()
    made: dict[str, str] = {}
    for team in ("web", "db"):
        name = f"dgt-scope-{team}-{suffix}"
        created = daemon.docker(
            *("service", "create", "--detach", "--no-resolve-image", "--name", name),
            *("--label", f"{LABEL}={team}", busybox_image, "sleep", "600"),
        )
        made[team] = name
        made[f"{team}-id"] = created.stdout.decode().strip()
        made[f"{team}-task"] = _first_task(daemon, name)
    yield made
    daemon.docker("service", "rm", made["web"], made["db"], check=False)


def _first_task(daemon: PrivateDaemon, service: str) -> str:
    """The service's first task's ID (polled for: the orchestrator makes it shortly after)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = daemon.docker("service", "ps", "-q", "--no-trunc", service).stdout.split()
        if found:
            return found[0].decode()
        time.sleep(0.2)
    raise AssertionError(f"no task for {service}")


def _call(env: dict[str, str], path: str) -> tuple[int, object]:
    url = env["DOCKER_HOST"].replace("tcp://", "http://") + path
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            body = answer.read()
            return answer.status, body if "/logs" in path else json.loads(body)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_service_out_of_scope_is_absent_by_name_id_and_prefix(
    env: dict[str, str], services: dict[str, str]
) -> None:
    """The db service is "not found" however it is named; the web service is inspected."""
    for reference in (services["db"], services["db-id"], services["db-id"][:6]):
        status, body = _call(env, f"/v1.41/services/{reference}")
        assert (status, body) == (404, {"message": f"service {reference} not found"})
    for reference in (services["web"], services["web-id"], services["web-id"][:6]):
        status, body = _call(env, f"/v1.41/services/{reference}")
        assert status == 200 and body["ID"] == services["web-id"], body  # type: ignore[index]
    done = run_docker(env, "service", "inspect", services["db"])
    assert done.returncode != 0 and b"no such service" in done.stderr, done.stderr


def test_tasks_follow_their_service(env: dict[str, str], services: dict[str, str]) -> None:
    """The db service's task is "not found" (full ID and prefix); the web service's is found."""
    for reference in (services["db-task"], services["db-task"][:8]):
        status, body = _call(env, f"/v1.41/tasks/{reference}")
        assert (status, body) == (404, {"message": f"task {reference} not found"})
    for reference in (services["web-task"], services["web-task"][:8]):
        status, body = _call(env, f"/v1.41/tasks/{reference}")
        assert status == 200 and body["ID"] == services["web-task"], body  # type: ignore[index]


def test_service_logs_follow_the_service(env: dict[str, str], services: dict[str, str]) -> None:
    status, body = _call(env, f"/v1.41/services/{services['db']}/logs?stdout=1")
    assert (status, body) == (404, {"message": f"service {services['db']} not found"})
    status, _ = _call(env, f"/v1.41/services/{services['web']}/logs?stdout=1")
    assert status == 200


def test_a_service_is_created_and_updated_only_within_the_scope(
    env: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """Without the label the service is not created, nor with it on the service only (its
    task containers would not be covered); with it on both, it is; an update that drops the
    label is refused and the label stays on the daemon."""
    suffix = os.urandom(4).hex()
    plain, labelled = f"dgt-scope-plain-{suffix}", f"dgt-scope-lab-{suffix}"
    create = ("service", "create", "--detach", "--no-resolve-image")
    try:
        done = run_docker(env, *create, "--name", plain, busybox_image, "sleep", "60")
        assert done.returncode != 0 and b"would not be covered by rule 2" in done.stderr
        assert daemon.docker("service", "inspect", plain, check=False).returncode != 0
        done = run_docker(
            env, *create, "--name", labelled, "--label", f"{LABEL}=web",
            busybox_image, "sleep", "60",
        )  # fmt: skip
        assert done.returncode != 0 and b"task containers" in done.stderr, done.stderr
        assert daemon.docker("service", "inspect", labelled, check=False).returncode != 0
        done = run_docker(
            env, *create, "--name", labelled, "--label", f"{LABEL}=web",
            "--container-label", f"{LABEL}=web", busybox_image, "sleep", "60",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        done = run_docker(
            env, "service", "update", "--detach", "--no-resolve-image", "--label-rm", LABEL,
            labelled,
        )  # fmt: skip
        assert done.returncode != 0 and b"would not be covered" in done.stderr, done.stderr
        inspected = json.loads(daemon.docker("service", "inspect", labelled).stdout)[0]
        assert inspected["Spec"]["Labels"] == {LABEL: "web"}
    finally:
        daemon.docker("service", "rm", plain, labelled, check=False)


def test_secrets_out_of_scope_are_absent_and_not_made(
    env: dict[str, str], daemon: PrivateDaemon
) -> None:
    """A db secret is "not found" by name and ID; a web one is inspected; `docker secret
    create` without the label makes no secret, with it one."""
    suffix = os.urandom(4).hex()
    made = {team: f"dgt-scope-{team}-secret-{suffix}" for team in ("web", "db", "new", "plain")}
    try:
        ids = {}
        for team in ("web", "db"):
            created = daemon.docker(
                "secret", "create", "--label", f"{LABEL}={team}", made[team], "-", input=b"x"
            )
            ids[team] = created.stdout.decode().strip()
        for reference in (made["db"], ids["db"], ids["db"][:5]):
            status, body = _call(env, f"/v1.41/secrets/{reference}")
            assert (status, body) == (404, {"message": f"secret {reference} not found"})
        status, body = _call(env, f"/v1.41/secrets/{made['web']}")
        assert status == 200 and body["ID"] == ids["web"], body  # type: ignore[index]
        done = run_docker(env, "secret", "create", made["plain"], "-", input=b"x")
        assert done.returncode != 0 and b"would not be covered" in done.stderr, done.stderr
        assert daemon.docker("secret", "inspect", made["plain"], check=False).returncode != 0
        done = run_docker(
            env, "secret", "create", "--label", f"{LABEL}=web", made["new"], "-", input=b"x"
        )
        assert done.returncode == 0, done.stderr
        assert daemon.docker("secret", "inspect", made["new"], check=False).returncode == 0
    finally:
        daemon.docker("secret", "rm", *made.values(), check=False)
