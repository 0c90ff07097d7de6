"""Object scopes enforced, end to end: the real docker CLI through a real dockgate in front of
the session's dockerd, with a policy that allows restart, logs, exec and inspect only on the
containers labelled `com.example.team=web` (policy/scoping.py, ownership/scopefind.py).

A request counts as done only when the daemon did it (the container's StartedAt moved, the
container exists); as refused only when the CLI prints the daemon's own "No such container"
(or dockgate's message) and the daemon's state is as before."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys
import time
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

LABEL = "com.example.team"
POLICY = """\
policies:
  web:
    mode: MODE
    rules:
      - allow: {sections: [ping, version]}
      - allow:
          operations: [ContainerRestart, ContainerLogs, ContainerExec, ExecStart, ExecInspect,
                       ExecResize, ContainerInspect, ContainerCreate, ContainerStart,
                       ContainerDelete, ContainerWait, ContainerAttach, ContainerResize]
          objects: {labels: {com.example.team: web}}
"""


def _logged(gw: Gateway, text: str) -> str:
    """The access log's (stdout) first line holding `text`, polled for: the log is buffered."""
    deadline = time.monotonic() + 10.0
    while True:
        found = [line for line in gw.stdout() if text in line]
        if found or time.monotonic() > deadline:
            return found[0] if found else ""
        time.sleep(0.05)


def _env(gateway: Gateway, config: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    config.mkdir(parents=True, exist_ok=True)
    return env | {"DOCKER_HOST": gateway.url, "DOCKER_CONFIG": str(config)}


@pytest.fixture(scope="module")
def web_env(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("scopes")
    policy = base / "policy.yaml"
    policy.write_text(POLICY.replace("MODE", "enforce"))
    with running(Gateway(daemon.host, policy=policy)) as gw:
        yield _env(gw, base / "cli")


@pytest.fixture(scope="module")
def containers(daemon: PrivateDaemon, busybox_image: str) -> Iterator[dict[str, str]]:
    """A web container and a db one, both running and printing a line, made on the daemon."""
    suffix = os.urandom(4).hex()
    names = {"web": f"dgt-scope-web-{suffix}", "db": f"dgt-scope-db-{suffix}"}
    for team, name in names.items():
        daemon.docker(
            *("run", "-d", "--name", name, "--label", f"{LABEL}={team}", busybox_image),
            *("sh", "-c", f"echo hello-{team}; sleep 600"),
        )
    yield names
    daemon.docker("rm", "-f", *names.values(), check=False)


def _started_at(daemon: PrivateDaemon, name: str) -> str:
    state = daemon.inspect(name)["State"]
    assert isinstance(state, dict)
    return str(state["StartedAt"])


def _id(daemon: PrivateDaemon, name: str) -> str:
    return str(daemon.inspect(name)["Id"])


def test_a_covered_container_is_restarted_by_name_and_by_id_prefix(
    web_env: dict[str, str], containers: dict[str, str], daemon: PrivateDaemon
) -> None:
    """Restarting the web container by name and by a 12-digit ID prefix restarts it."""
    name = containers["web"]
    for reference in (name, _id(daemon, name)[:12]):
        before = _started_at(daemon, name)
        done = run_docker(web_env, "restart", "-t", "0", reference)
        assert done.returncode == 0, done.stderr
        assert _started_at(daemon, name) != before


def test_an_uncovered_container_is_absent_by_name_full_id_and_prefix(
    web_env: dict[str, str], containers: dict[str, str], daemon: PrivateDaemon
) -> None:
    """The db container reads as missing, however it is named, and is not restarted."""
    name = containers["db"]
    full_id = _id(daemon, name)
    before = _started_at(daemon, name)
    for reference in (name, full_id, full_id[:12]):
        done = run_docker(web_env, "restart", "-t", "0", reference)
        assert done.returncode != 0
        assert f"No such container: {reference}" in done.stderr.decode(), done.stderr
    assert _started_at(daemon, name) == before


def test_exec_and_logs_follow_the_container(
    web_env: dict[str, str], containers: dict[str, str]
) -> None:
    """exec and logs work on the web container; on the db one they fail as for a missing one."""
    web, db = containers["web"], containers["db"]
    done = run_docker(web_env, "exec", web, "echo", "inside-web")
    assert done.returncode == 0 and done.stdout == b"inside-web\n", done.stderr
    done = run_docker(web_env, "logs", web)
    assert b"hello-web" in done.stdout + done.stderr, done
    for args in (("exec", db, "echo", "inside-db"), ("logs", db)):
        done = run_docker(web_env, *args)
        assert done.returncode != 0
        assert f"No such container: {db}" in done.stderr.decode(), (args, done.stderr)
        assert b"inside-db" not in done.stdout and b"hello-db" not in done.stdout


def test_exec_instances_follow_their_container(
    web_env: dict[str, str], containers: dict[str, str], daemon: PrivateDaemon
) -> None:
    """An exec instance made on the daemon in the db container is absent to the caller."""
    exec_id = _exec_on_daemon(daemon, containers["db"])
    done = run_docker(web_env, "container", "inspect", containers["web"])
    assert done.returncode == 0
    status, body = _get(web_env, f"/v1.41/exec/{exec_id}/json")
    assert (status, body) == (404, {"message": f"No such exec instance: {exec_id}"})
    web_exec = _exec_on_daemon(daemon, containers["web"])
    status, body = _get(web_env, f"/v1.41/exec/{web_exec}/json")
    assert status == 200 and body["ID"] == web_exec


def _exec_on_daemon(daemon: PrivateDaemon, container: str) -> str:
    import http.client  # noqa: PLC0415
    import socket  # noqa: PLC0415

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(daemon.host.removeprefix("unix://"))

    connection = UnixConnection("docker")
    connection.request(
        "POST",
        f"/v1.41/containers/{container}/exec",
        body=b'{"Cmd": ["true"]}',
        headers={"Content-Type": "application/json"},
    )
    answer = connection.getresponse()
    body = json.loads(answer.read())
    connection.close()
    assert answer.status == 201, body
    return str(body["Id"])


def _get(env: dict[str, str], path: str) -> tuple[int, dict[str, object]]:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    url = env["DOCKER_HOST"].replace("tcp://", "http://") + path
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_create_without_the_label_is_refused_and_with_it_works(
    web_env: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """`docker run` and `docker create` without the label leave no container on the daemon;
    with `--label com.example.team=web` they make one."""
    suffix = os.urandom(4).hex()
    plain, labelled = f"dgt-scope-plain-{suffix}", f"dgt-scope-lab-{suffix}"
    try:
        for command in (("run", "-d"), ("create",)):
            done = run_docker(web_env, *command, "--name", plain, busybox_image, "true")
            assert done.returncode != 0
            stderr = done.stderr.decode()
            assert "would not be covered by rule 2" in stderr and LABEL in stderr, stderr
            assert daemon.docker("inspect", plain, check=False).returncode != 0
        done = run_docker(
            web_env, "run", "-d", "--name", labelled, "--label", f"{LABEL}=web",
            busybox_image, "sleep", "60",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert daemon.inspect(labelled)["Config"]["Labels"][LABEL] == "web"
    finally:
        daemon.docker("rm", "-f", plain, labelled, check=False)


def test_a_prefix_is_resolved_among_covered_containers_only(
    web_env: dict[str, str], containers: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """A one-digit prefix that the web container shares with out-of-scope containers finds
    the web container (the daemon alone would call it ambiguous); so does a prefix that is
    also the name of a container out of scope; a prefix only an out-of-scope container fits
    is absent."""
    web_id = _id(daemon, containers["web"])
    made: list[str] = []
    try:
        shared = other = None
        while shared is None or other is None:
            assert len(made) < 200
            cid = daemon.docker("create", busybox_image, "true").stdout.decode().strip()
            made.append(cid)
            if cid[0] == web_id[0]:
                shared = cid
            elif not cid.startswith(web_id[:1]) and other is None:
                other = cid
        ambiguous = daemon.docker("container", "inspect", web_id[0], check=False)
        assert ambiguous.returncode != 0  # the daemon itself cannot tell
        done = run_docker(web_env, "container", "inspect", "-f", "{{.Id}}", web_id[0])
        assert done.returncode == 0 and done.stdout.decode().strip() == web_id, done.stderr
        # A name out of scope that is also the web container's ID prefix: the daemon finds
        # the name first; among covered containers, the prefix is the web container.
        shadow = web_id[:8]
        made.append(
            daemon.docker("create", "--name", shadow, busybox_image, "true").stdout.decode().strip()
        )
        done = run_docker(web_env, "container", "inspect", "-f", "{{.Id}}", shadow)
        assert done.returncode == 0 and done.stdout.decode().strip() == web_id, done.stderr
        prefix = other[:12]
        done = run_docker(web_env, "container", "inspect", prefix)
        assert done.returncode != 0 and f"No such container: {prefix}" in done.stderr.decode()
        status, body = _get(web_env, f"/v1.41/containers/{prefix}/json")
        assert (status, body) == (404, {"message": f"No such container: {prefix}"})
    finally:
        if made:
            daemon.docker("rm", "-f", *made, check=False)


def test_warn_mode_lets_an_uncovered_restart_through_and_records_it(
    daemon: PrivateDaemon, containers: dict[str, str], tmp_path: pathlib.Path
) -> None:
    """In warn mode the db container is restarted, and the access log and the audit record
    say what enforce would have answered (`warn:web:scope`, a 404 of stage `scope`) and the
    scope the request was allowed in."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("MODE", "warn"))
    audit = tmp_path / "audit.jsonl"
    name = containers["db"]
    with running(Gateway(daemon.host, "--audit-log", str(audit), policy=policy)) as gw:
        env = _env(gw, tmp_path / "cli")
        before = _started_at(daemon, name)
        done = run_docker(env, "restart", "-t", "0", name)
        assert done.returncode == 0, done.stderr
        assert _started_at(daemon, name) != before
        line = _logged(gw, "op=ContainerRestart")
        assert "decision=warn:web:scope" in line, line
        record = _audited(audit, "ContainerRestart")
        assert record["would_deny"]["stage"] == "scope"  # type: ignore[index]
        assert record["would_deny"]["status"] == 404  # type: ignore[index]
        assert record["scope"] == "rule 2 (labels=com.example.team=web)"


def _audited(path: pathlib.Path, operation: str) -> dict[str, object]:
    """The first audit record of `operation` (polled for: the audit log is buffered)."""
    deadline = time.monotonic() + 10.0
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [r for r in map(json.loads, lines) if r["operation"] == operation]
        if found or time.monotonic() > deadline:
            assert found, lines
            return dict(found[0])
        time.sleep(0.05)


OWNED_POLICY = """\
policies:
  web:
    ownership: true
    rules:
      - allow: {sections: [ping, version]}
      - allow:
          operations: [ContainerCreate, ContainerStart, ContainerInspect, ContainerRestart,
                       ContainerDelete, ContainerWait]
          objects: {labels: {com.example.team: web}}
bindings:
  - {policy: web, authenticated: true}
"""


def test_with_ownership_an_object_must_be_owned_and_covered(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """In ownership mode the caller restarts its own web container only: its own container
    out of scope, and a web container made straight on the daemon (nobody's), are absent."""
    from support.remote import write_htpasswd  # noqa: PLC0415

    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"alice": "alice-pw"})
    policy = tmp_path / "policy.yaml"
    policy.write_text(OWNED_POLICY)
    suffix = os.urandom(4).hex()
    mine, mine_out, foreign = (f"dgt-scope-{k}-{suffix}" for k in ("mine", "mineout", "foreign"))
    gateway = Gateway(daemon.host, "--htpasswd", str(htpasswd), policy=policy)
    try:
        with running(gateway) as gw:
            env = _env(gw, tmp_path / "cli")
            token = base64.b64encode(b"alice:alice-pw").decode()
            headers = {"HttpHeaders": {"Authorization": f"Basic {token}"}}
            (tmp_path / "cli" / "config.json").write_text(json.dumps(headers))
            done = run_docker(
                env, "run", "-d", "--name", mine, "--label", f"{LABEL}=web", busybox_image,
                "sleep", "600",
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            daemon.docker(
                "run", "-d", "--name", foreign, "--label", f"{LABEL}=web", busybox_image,
                "sleep", "600",
            )  # fmt: skip
            # Alice's own container, out of scope: made on the daemon with her owner label.
            daemon.docker(
                "create", "--name", mine_out, "--label", "io.dockgate.owner=user:alice",
                "--label", f"{LABEL}=db", busybox_image, "true",
            )  # fmt: skip
            for name in (foreign, mine_out):
                done = run_docker(env, "container", "inspect", name)
                assert done.returncode != 0, name
                assert f"No such container: {name}" in done.stderr.decode(), done.stderr
            before = _started_at(daemon, mine)
            done = run_docker(env, "restart", "-t", "0", mine)
            assert done.returncode == 0, done.stderr
            assert _started_at(daemon, mine) != before
    finally:
        daemon.docker("rm", "-f", mine, mine_out, foreign, check=False)


def test_a_name_held_out_of_scope_is_taken_without_naming_the_holder(
    web_env: dict[str, str], containers: dict[str, str], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """A covered create under the db container's name is a conflict whose message does not
    carry the db container's ID (the daemon's own would)."""
    name, db_id = containers["db"], _id(daemon, containers["db"])
    done = run_docker(
        web_env, "create", "--name", name, "--label", f"{LABEL}=web", busybox_image, "true"
    )
    stderr = done.stderr.decode()
    assert done.returncode != 0 and "is already in use by another container" in stderr, stderr
    assert db_id not in stderr and db_id[:12] not in stderr
    assert _id(daemon, name) == db_id  # the db container is still the one of that name


def _check(policy: pathlib.Path, *args: str) -> tuple[int, str]:
    """`dockgate check --policy POLICY ARGS...`: its exit status and output."""
    done = subprocess.run(
        [sys.executable, "-m", "dockgate", "check", "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_check_with_upstream_decides_a_scoped_lookup_as_the_gateway(
    web_env: dict[str, str],
    containers: dict[str, str],
    daemon: PrivateDaemon,
    tmp_path: pathlib.Path,
) -> None:
    """`dockgate check --upstream` asks the daemon the scoped look-up the gateway asks: a
    covered container is allowed, pinned to its full ID (by name and by prefix); an uncovered
    one is the same 404 the gateway answers, by name and by prefix."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("MODE", "enforce"))
    web, db = containers["web"], containers["db"]
    upstream = ("--upstream", daemon.host)
    for reference in (web, _id(daemon, web)[:12]):
        status, out = _check(policy, *upstream, f"GET /v1.41/containers/{reference}/json")
        assert status == 0, out
        assert f"forwarded: GET /v1.41/containers/{_id(daemon, web)}/json" in out
    for reference in (db, _id(daemon, db)[:12]):
        status, out = _check(policy, *upstream, f"GET /v1.41/containers/{reference}/json")
        assert status == 1, out
        code, answer = _get(web_env, f"/v1.41/containers/{reference}/json")
        assert code == 404
        assert f"decision:  deny, 404: {answer['message']}" in out
    # Without --upstream the same request is decided by a look-up: exit 3.
    status, out = _check(policy, f"GET /v1.41/containers/{db}/json")
    assert status == 3, out
