"""Response redaction with the real daemon: a dashboard policy sees containers, not their
secrets. The container is created straight on the daemon with an environment secret, a label
and a bind mount; the docker CLI and the SDK then read it through dockgate."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time
from collections.abc import Iterator

import docker
import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.procs import stop_process

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


def _http10_get(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """One HTTP/1.0 request (curl -0, old scripts): the response head and everything after it."""
    with socket.create_connection((host, port), timeout=20) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        while piece := conn.recv(65536):
            data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_an_http10_answer_ending_at_close_is_redacted(
    dashboard: Gateway, daemon: PrivateDaemon, victims: list[str]
) -> None:
    """To HTTP/1.0 the daemon sends a large answer without a length, ending at close; it is
    read to the close, redacted, and sent with a Content-Length (it was a 502 before)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(20)
        raw.connect(str(daemon.socket_path))
        raw.sendall(f"GET /containers/{victims[0]}/json HTTP/1.0\r\nHost: d\r\n\r\n".encode())
        direct = b""
        while piece := raw.recv(65536):
            direct += piece
    direct_head, _, direct_body = direct.partition(b"\r\n\r\n")
    assert b"content-length" not in direct_head.lower()  # framed by the close
    assert SECRET.encode() in direct_body
    head, body = _http10_get("127.0.0.1", dashboard.port, f"/containers/{victims[0]}/json")
    assert head.split(b" ")[1] == b"200", head
    assert b"content-length: %d" % len(body) in head.lower()
    assert SECRET.encode() not in body
    assert "DB_PASSWORD=<redacted>" in json.loads(body)["Config"]["Env"]


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


# ----- the event stream -------------------------------------------------------------------------


def _events_cli(gw: Gateway, since: str, until: str, *filters: str) -> list[dict[str, object]]:
    out = _cli(gw, "events", "--since", since, "--until", until, "--format", "{{json .}}", *filters)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_events_lose_labels_through_the_cli_and_the_sdk(
    daemon: PrivateDaemon, dashboard: Gateway, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """Container events carry the container's labels among their actor's attributes; with
    `redact: labels` they are gone (the attributes the daemon sets itself stay), in the docker
    CLI's stream and in the SDK's, and the same stream without redaction still has them."""
    started = str(int(time.time()) - 1)  # unix seconds: what the SDK and the CLI both take
    name = f"dgt-redact-ev-{os.urandom(3).hex()}"
    daemon.docker("run", "--name", name, "--label", f"api.key={SECRET}", busybox_image, "true")
    try:
        ended = str(int(time.time()) + 1)
        filters = ("--filter", f"container={name}")
        seen = _events_cli(dashboard, started, ended, *filters)
        assert {e["Action"] for e in seen} >= {"create", "start", "die"}, seen
        for event in seen:
            attributes = event["Actor"]["Attributes"]  # type: ignore[index]
            assert "api.key" not in attributes and SECRET not in json.dumps(event)
            assert attributes["name"] == name and attributes["image"] == busybox_image
        die = next(e for e in seen if e["Action"] == "die")
        assert die["Actor"]["Attributes"]["exitCode"] == "0"  # type: ignore[index]

        client = docker.DockerClient(base_url=dashboard.url, version="1.41", timeout=60)
        try:
            sdk_events = list(
                client.events(since=started, until=ended, filters={"container": name}, decode=True)
            )
        finally:
            client.close()
        assert len(sdk_events) == len(seen)
        assert SECRET not in json.dumps(sdk_events)

        plain_events = PLAIN_POLICY.replace("containers]", "containers, events]")
        with running(_gateway(daemon, tmp_path, plain_events)) as plain:
            unredacted = _events_cli(plain, started, ended, *filters)
        assert any(
            e["Actor"]["Attributes"].get("api.key") == SECRET  # type: ignore[index]
            for e in unredacted
        )
    finally:
        daemon.docker("rm", "-f", name, check=False)


def test_a_live_event_stream_is_redacted_as_it_goes(
    daemon: PrivateDaemon, dashboard: Gateway, busybox_image: str
) -> None:
    """`docker events` left running: each event arrives while the stream stays open."""
    name = f"dgt-redact-live-{os.urandom(3).hex()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = dashboard.url
    watcher = subprocess.Popen(
        ["docker", "events", "--format", "{{json .}}", "--filter", f"container={name}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1)  # the stream is open before the container exists
        daemon.docker("create", "--name", name, "--label", f"api.key={SECRET}", busybox_image)
        assert watcher.stdout is not None
        line = watcher.stdout.readline()  # blocks until the create event arrives
        event = json.loads(line)
        assert event["Action"] == "create"
        assert event["Actor"]["Attributes"] == {"image": busybox_image, "name": name}
        assert watcher.poll() is None  # still streaming
    finally:
        stop_process(watcher)
        daemon.docker("rm", "-f", name, check=False)


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_event_stream_redaction_whatever_the_chunking() -> None:
    """In process: events split across chunks, several in one chunk, fed a byte at a time; the
    output is valid chunked framing of the same events, redacted."""
    from dockgate.body.redact import EventStreamRedaction, Redaction  # noqa: PLC0415
    from dockgate.http.chunked import ChunkedDecoder  # noqa: PLC0415

    events = [
        {"Type": "container", "Action": "create", "Actor": {"ID": "c1", "Attributes": {
            "image": "busybox", "name": "web", "secret.label": "s3cret",
            "exitCode": "s3cret"}}},  # a label named like the attribute of another action
        {"Type": "container", "Action": "exec_start: sh -c id", "Actor": {"ID": "c1",
            "Attributes": {"image": "busybox", "name": "web", "execID": "e1", "a": "s3cret"}}},
        {"Type": "container", "Action": "die", "Actor": {"ID": "c1", "Attributes": {
            "image": "busybox", "name": "web", "exitCode": "3", "secret.label": "s3cret"}}},
        {"Type": "image", "Action": "tag", "Actor": {"ID": "i1", "Attributes": {
            "name": "busybox:x", "maintainer": "s3cret"}}},
        {"Type": "volume", "Action": "mount", "Actor": {"ID": "v1", "Attributes": {
            "container": "c1", "destination": "/s3cret", "driver": "local",
            "propagation": "", "read/write": "true"}}},
        {"Type": "network", "Action": "connect", "Actor": {"ID": "n1", "Attributes": {
            "container": "c1", "name": "bridge", "type": "bridge"}}},
        {"Type": "container", "Action": "commit", "Actor": {"ID": "c1", "Attributes": {
            "image": "busybox", "name": "web", "comment": "c", "imageID": "sha256:1",
            "imageRef": "r:1", "secret.label": "s3cret"}}},  # the daemon's own, kept
    ]  # fmt: skip
    text = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    # Chunk boundaries inside events, and two events in one chunk.
    raw = _chunked(text[:10], text[10:200], text[200:])
    for step in (len(raw), 1, 7):
        stream = EventStreamRedaction(Redaction(labels=True, mounts=True))
        out = b"".join(stream.feed(raw[i : i + step]) for i in range(0, len(raw), step))
        decoder = ChunkedDecoder()
        pieces, rest = decoder.feed(out)
        assert decoder.done and rest == b""
        got = [json.loads(line) for line in b"".join(pieces).splitlines()]
        assert b"s3cret" not in out
        assert [e["Action"] for e in got] == [e["Action"] for e in events]
        assert got[0]["Actor"]["Attributes"] == {"image": "busybox", "name": "web"}
        assert got[1]["Actor"]["Attributes"]["execID"] == "e1"
        assert got[2]["Actor"]["Attributes"]["exitCode"] == "3"
        assert got[3]["Actor"]["Attributes"] == {"name": "busybox:x"}
        assert got[4]["Actor"]["Attributes"] == {"container": "c1", "driver": "local"}
        assert got[5] == events[5]  # nothing to hide in a network event
        assert got[6]["Actor"]["Attributes"] == {
            "image": "busybox", "name": "web", "comment": "c", "imageID": "sha256:1",
            "imageRef": "r:1",
        }  # fmt: skip


def test_an_event_stream_that_cannot_be_redacted_is_cut() -> None:
    from dockgate.body.redact import (  # noqa: PLC0415
        MAX_EVENT_BYTES,
        EventStreamRedaction,
        Redaction,
        RedactionError,
    )

    for raw in (
        _chunked(b"{not json}\n"),
        _chunked(b"[1, 2]\n"),
        b"zz\r\n",  # not chunked framing
        b"%x\r\n" % (MAX_EVENT_BYTES + 10) + b"{" * (MAX_EVENT_BYTES + 10),
    ):
        with pytest.raises(RedactionError):
            EventStreamRedaction(Redaction(labels=True)).feed(raw)


def test_label_filters_are_refused_where_labels_are_redacted(
    daemon: PrivateDaemon, dashboard: Gateway, victims: list[str], tmp_path: pathlib.Path
) -> None:
    """Whether `label=owner.token=<guess>` matches would tell a hidden label's value: refused
    (403, with the reason) in lists and events; other filters go on; a policy that shows
    labels takes label filters as before."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = dashboard.url
    probe = f"label=owner.token={SECRET}-0-" + "x" * 200
    for args in (["ps", "-a", "--filter", probe], ["events", "--until", "1", "--filter", probe]):
        done = subprocess.run(
            ["docker", *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode != 0, done
        assert "label filters are not accepted where labels are redacted" in done.stderr
    assert victims[0] in _cli(dashboard, "ps", "-a", "--filter", f"name={victims[0]}")
    with running(_gateway(daemon, tmp_path, PLAIN_POLICY)) as plain:
        assert victims[0] in _cli(plain, "ps", "-a", "--filter", probe)


def test_text_409s_and_deep_answers_are_checked() -> None:
    """API versions before 1.24 get errors as plain text; an answer nested too deeply to read
    is refused (the connection then gets a 502), never passed on."""
    from dockgate.ownership.operations import checked_answer  # noqa: PLC0415

    holder = "b" * 64
    text = f'Conflict. The container name "/web" is already in use by container "{holder}".\n'
    out = checked_answer("ContainerCreate", 409, text.encode(), "alice")
    assert isinstance(out, bytes) and holder not in out.decode() and b"another container" in out
    deep = b'{"Name": "v", "Labels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ValueError, match="nested too deeply"):
        checked_answer("VolumeCreate", 201, deep, "alice")
