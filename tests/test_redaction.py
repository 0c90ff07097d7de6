"""Response redaction with the real daemon: a dashboard policy sees containers, not their
secrets. The container is created straight on the daemon with an environment secret, a label
and a bind mount; the docker CLI and the SDK then read it through dockgate."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from collections.abc import Iterator

import docker
import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(180)]

SECRET = "hunter2-redaction-canary"
POLICY = """\
policies:
  dashboard:
    read_only: true
    redact: {env: true, mounts: true, labels: true}
    rules:
      - allow: {sections: [ping, version, info, containers, events]}
"""
PLAIN_POLICY = """\
policies:
  plain:
    read_only: true
    rules:
      - allow: {sections: [ping, version, info, containers]}
"""


@pytest.fixture(scope="module")
def victims(daemon: PrivateDaemon, busybox_image: str) -> Iterator[list[str]]:
    """One container with a secret, a label and a bind mount, and enough others (with long
    labels) that the container list outgrows one write and comes back chunked."""
    names = [f"dgt-redact-{i}" for i in range(25)]
    for index, name in enumerate(names):
        daemon.docker(
            "create",
            "--name",
            name,
            "-e",
            f"DB_PASSWORD={SECRET}",
            "--label",
            f"owner.token={SECRET}-{index}-" + "x" * 200,
            "-v",
            "/tmp:/host-tmp:ro",
            busybox_image,
            "true",
        )
    yield names
    daemon.docker("rm", "-f", *names, check=False)


def _gateway(daemon: PrivateDaemon, tmp: pathlib.Path, text: str) -> Gateway:
    policy = tmp / "policy.yaml"
    policy.write_text(text)
    return Gateway(daemon.host, policy=str(policy))


@pytest.fixture(scope="module")
def dashboard(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running(_gateway(daemon, tmp_path_factory.mktemp("redact"), POLICY)) as gw:
        yield gw


def _cli(gw: Gateway, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = gw.url
    done = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_inspect_hides_env_values_mounts_and_labels(dashboard: Gateway, victims: list[str]) -> None:
    inspected = json.loads(_cli(dashboard, "inspect", victims[0]))[0]
    assert "DB_PASSWORD=<redacted>" in inspected["Config"]["Env"]
    assert inspected["Config"]["Labels"] == {}
    assert inspected["Mounts"] == []
    assert inspected["HostConfig"]["Binds"] is None
    assert inspected["Name"] == f"/{victims[0]}"  # the rest is intact
    assert SECRET not in json.dumps(inspected)


def test_a_chunked_list_is_redacted_whole(
    dashboard: Gateway, victims: list[str], daemon: PrivateDaemon
) -> None:
    """The list is larger than the daemon writes in one piece (chunked): still redacted, and
    every container is there."""
    direct = subprocess.run(
        [
            "curl",
            "-sS",
            "-D",
            "-",
            "--unix-socket",
            str(daemon.socket_path),
            "http://d/containers/json?all=1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    assert b"Transfer-Encoding: chunked" in direct  # the case under test
    listed = _cli(dashboard, "ps", "-a", "--no-trunc", "--format", "{{.Names}} {{.Labels}}")
    client = docker.DockerClient(base_url=dashboard.url, version="1.41")
    try:
        answer = client.api.containers(all=True)
    finally:
        client.close()
    names = {name.lstrip("/") for item in answer for name in item["Names"]}
    assert set(victims) <= names
    mine = [item for item in answer if set(n.lstrip("/") for n in item["Names"]) & set(victims)]
    assert all(item["Labels"] == {} and item["Mounts"] == [] for item in mine)
    assert SECRET not in json.dumps(answer)
    assert victims[0] in listed and SECRET not in listed


def test_sdk_inspect_is_redacted(dashboard: Gateway, victims: list[str]) -> None:
    client = docker.DockerClient(base_url=dashboard.url, version="1.41")
    try:
        attrs = client.containers.get(victims[1]).attrs
    finally:
        client.close()
    assert attrs["Config"]["Env"][0].endswith("=<redacted>")
    assert SECRET not in json.dumps(attrs)


def test_without_redact_the_answer_is_untouched(
    daemon: PrivateDaemon, victims: list[str], tmp_path: pathlib.Path
) -> None:
    with running(_gateway(daemon, tmp_path, PLAIN_POLICY)) as gw:
        inspected = json.loads(_cli(gw, "inspect", victims[0]))[0]
    assert f"DB_PASSWORD={SECRET}" in inspected["Config"]["Env"]
    assert inspected["Mounts"] != []


# ----- the walkers, in process (services and tasks need a swarm; their shapes are the spec's) ---


def test_service_and_task_answers_are_redacted() -> None:
    from dockgate.body.redact import Redaction, redact_response  # noqa: PLC0415

    spec = {
        "Labels": {"k": "v"},
        "TaskTemplate": {
            "ContainerSpec": {"Image": "x", "Env": ["A=1", "B"], "Mounts": [{"Source": "/"}]}
        },
    }
    service = {"ID": "s1", "Spec": spec, "PreviousSpec": json.loads(json.dumps(spec))}
    out = json.loads(
        redact_response("ServiceList", json.dumps([service]).encode(), Redaction(env=True))
    )
    container = out[0]["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert container["Env"] == ["A=<redacted>", "B=<redacted>"]
    assert container["Mounts"] == [{"Source": "/"}]  # mounts not asked for
    assert out[0]["Spec"]["Labels"] == {"k": "v"}
    assert out[0]["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Env"][0] == "A=<redacted>"

    task = {"ID": "t1", "Labels": {"a": "b"}, "Spec": {"ContainerSpec": {"Env": ["X=y"]}}}
    out = json.loads(
        redact_response("TaskInspect", json.dumps(task).encode(), Redaction(labels=True))
    )
    assert out["Labels"] == {}
    assert out["Spec"]["ContainerSpec"]["Env"] == ["X=y"]  # env not asked for


def test_an_answer_that_is_not_json_is_not_passed_on() -> None:
    from dockgate.body.redact import Redaction, RedactionError, redact_response  # noqa: PLC0415

    with pytest.raises(RedactionError):
        redact_response("ContainerInspect", b"{not json", Redaction(env=True))
