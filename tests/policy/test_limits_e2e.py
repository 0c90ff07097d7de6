"""Rate and concurrency limits through a real dockgate to the real daemon (policy/limits.py).

Claims under test: once a caller's burst is spent its next request is answered 429 with
`Retry-After` and Docker's error body, never reaches the daemon, and is recorded in the access
log, the audit log and `dockgate_limited_total`, while another identity goes on; after
Retry-After seconds the same request passes. An open event stream stays up (and delivers
events) while its caller's other requests are limited, and the streams limit refuses the next
stream only. Callers without credentials are limited per source address. An image pull costs
more of the bucket than a ping. Slots come back when answers end, streams end, tunnels close,
and clients vanish mid-request or mid-stream: after many such exchanges, a caller allowed one
at a time still gets the next one.

The buckets below refill so slowly (0.001 tokens per second) that no test depends on how fast
the machine is, except the refill test, which waits Retry-After seconds (waiting longer could
only refill more).
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.identity import Reply, audit_records, raw_request, wait_audit
from support.metrics import scrape
from support.remote import create_token, remote_docker
from support.streams import LineReader, wait_until

POLICY = """\
bindings:
  - {policy: rated, tokens: [alice, bob]}
  - {policy: watched, tokens: [watcher]}
  - {policy: watched-cli, tokens: [cli-watcher]}
  - {policy: costly, tokens: [builder]}
  - {policy: slots, tokens: [leaker]}
  - {policy: anon, anonymous: true}
policies:
  rated:
    rules: [{allow: {sections: ["*"]}}]
    limits: {rate: 0.25, burst: 3}
  watched:
    rules: [{allow: {sections: ["*"]}}]
    limits: {rate: 0.001, burst: 4, streams: 1}
  watched-cli:
    rules: [{allow: {sections: ["*"]}}]
    limits: {rate: 0.001, burst: 12, streams: 1}
  costly:
    rules: [{allow: {sections: ["*"]}}]
    limits: {rate: 0.001, burst: 12}
  slots:
    rules: [{allow: {sections: ["*"]}}]
    limits: {concurrent: 1, streams: 1}
  anon:
    rules: [{allow: {sections: ["*"]}}]
    limits: {rate: 0.001, burst: 2}
"""

NAMES = ("alice", "bob", "watcher", "cli-watcher", "builder", "leaker")


@dataclass
class Limited:
    gw: Gateway
    audit: pathlib.Path
    tokens: dict[str, str]  # token name -> the token
    admin: int  # the admin listener's port (metrics)
    tmp: pathlib.Path

    @property
    def port(self) -> int:
        return self.gw.port

    def auth(self, name: str) -> list[tuple[str, str]]:
        return [("Authorization", f"Bearer {self.tokens[name]}")]

    def get(self, name: str | None, target: str, *, source: str | None = None) -> Reply:
        headers = self.auth(name) if name is not None else []
        return raw_request(self.port, "GET", target, headers, source=source)

    def log_lines(self, predicate: Callable[[str], bool]) -> int:
        return sum(1 for line in self.gw.stdout() if predicate(line))


@pytest.fixture(scope="module")
def limited(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    tmp = tmp_path_factory.mktemp("limits")
    tokens_file = tmp / "tokens"
    # Each token its own identity: limits count per identity.
    tokens = {name: create_token(tokens_file, name, f"id-{name}") for name in NAMES}
    policy = tmp / "limits.yaml"
    policy.write_text(POLICY)
    audit = tmp / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *("--tokens", str(tokens_file), "--audit-log", str(audit)),
        *("--admin-listen", "tcp://127.0.0.1:0"),
        policy=policy,
    )
    with running(gw, "the limits gateway"):
        yield Limited(gw, audit, tokens, gw.admin_port(), tmp)


def _create(limited: Limited, name: str, caller: str, image: str) -> Reply:
    body = json.dumps({"Image": image, "Cmd": ["true"]}).encode()
    headers = [*limited.auth(caller), ("Content-Type", "application/json")]
    return raw_request(limited.port, "POST", f"/v1.41/containers/create?name={name}", headers, body)


def _exists(daemon: PrivateDaemon, name: str) -> bool:
    return daemon.docker("container", "inspect", name, check=False).returncode == 0


def test_burst_spent_is_429_with_retry_after_and_the_refill_lets_it_through(
    limited: Limited,
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    name = unique("limited")
    cleanup.container(name)
    for _ in range(3):
        assert limited.get("alice", "/v1.41/containers/json").status == 200
    refused = _create(limited, name, "alice", busybox_image)
    assert refused.status == 429, refused
    retry = int(refused.headers["retry-after"])
    assert 1 <= retry <= 4
    assert refused.message == (
        "dockgate: ContainerCreate refused by the limits of policy rated: limited to "
        f"0.25 requests/s (burst 3); try again in {retry} s"
    )
    assert not _exists(daemon, name)  # never reached the daemon
    # Another identity under the same policy has a bucket of its own.
    assert limited.get("bob", "/v1.41/containers/json").status == 200
    # Recorded: the access log's decision, the audit record, the metric.
    assert wait_until(
        lambda: limited.log_lines(lambda line: "decision=deny:rated:limit" in line) >= 1, 5
    ), limited.gw.stdout_text()[-2000:]
    record = wait_audit(limited.audit, lambda r: r["identity"] == "id-alice" and r["status"] == 429)
    assert (record["decision"], record["policy"], record["reason"]) == (
        "deny",
        "rated",
        "limit: rate",
    )
    assert record["operation"] == "ContainerCreate"
    samples = scrape(limited.admin)
    key = (
        "dockgate_limited_total",
        (("limit", "rate"), ("operation", "ContainerCreate"), ("policy", "rated")),
    )
    assert samples[key] == 1.0
    # After Retry-After seconds, the same request passes and the daemon has the container.
    time.sleep(retry)
    created = _create(limited, name, "alice", busybox_image)
    assert created.status == 201, created
    assert _exists(daemon, name)


def _open_stream(limited: Limited, caller: str, target: str) -> tuple[socket.socket, bytes]:
    """A streamed GET on a connection of its own; its answer head (and what came with it)."""
    sock = socket.create_connection(("127.0.0.1", limited.port), timeout=15)
    token = limited.tokens[caller]
    sock.sendall(
        f"GET {target} HTTP/1.1\r\nHost: docker\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return sock, data


def _read_until(sock: socket.socket, data: bytes, needle: bytes) -> bytes:
    while needle not in data:
        chunk = sock.recv(65536)
        assert chunk, data[-500:]
        data += chunk
    return data


def test_an_open_stream_stays_up_while_its_caller_is_limited(
    limited: Limited,
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    sleeper = unique("sleeper")
    cleanup.container(sleeper)
    daemon.docker("run", "-d", "--name", sleeper, busybox_image, "sleep", "600")
    events, data = _open_stream(limited, "watcher", "/v1.41/events")
    try:
        assert data.startswith(b"HTTP/1.1 200 "), data
        # The next stream is refused by the streams limit ...
        follow = limited.get("watcher", f"/v1.41/containers/{sleeper}/logs?follow=1&stdout=1")
        assert follow.status == 429, follow
        assert "at most 1 streams at once" in (follow.message or "")
        # ... and ordinary requests still pass, until the burst (4, the stream spent one) is
        # spent.
        for _ in range(3):
            assert limited.get("watcher", "/v1.41/containers/json").status == 200
        over = limited.get("watcher", "/v1.41/containers/json")
        assert over.status == 429
        assert "limited to 0.001 requests/s (burst 4)" in (over.message or "")
        # The stream was never cut: it still delivers the daemon's events.
        marker = unique("event")
        cleanup.container(marker)
        daemon.docker("create", "--name", marker, busybox_image)
        _read_until(events, data, marker.encode())
    finally:
        events.close()


def _docker_popen(limited: Limited, caller: str, *args: str) -> subprocess.Popen[bytes]:
    """The docker CLI through the gateway as `caller` (its token in config.json), running."""
    config = limited.tmp / f"docker-config-{caller}"
    config.mkdir(exist_ok=True)
    headers = {"Authorization": f"Bearer {limited.tokens[caller]}"}
    (config / "config.json").write_text(json.dumps({"HttpHeaders": headers}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(config)
    return subprocess.Popen(
        ["docker", "-H", limited.gw.url, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_docker_events_stays_up_while_docker_ps_and_logs_f_are_limited(
    limited: Limited,
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """The same, with the docker CLI: `docker events` keeps printing while `docker logs -f`
    is refused by the streams limit and `docker ps` runs until the bucket is spent."""
    sleeper = unique("sleeper")
    cleanup.container(sleeper)
    daemon.docker("run", "-d", "--name", sleeper, busybox_image, "sleep", "600")
    events = _docker_popen(
        limited, "cli-watcher", "events", "--format", "{{.Actor.Attributes.name}}"
    )
    try:
        assert events.stdout is not None
        printed = LineReader(events.stdout)
        first = unique("event")
        cleanup.container(first)
        daemon.docker("create", "--name", first, busybox_image)
        printed.expect(re.escape(first))  # the stream is up
        logs = _docker_popen(limited, "cli-watcher", "logs", "-f", sleeper)
        _, err = logs.communicate(timeout=60)
        assert logs.returncode != 0
        assert b"at most 1 streams at once" in err, err
        results = []
        for _ in range(12):  # each `docker ps` spends a token or two (its ping, the list)
            ps = _docker_popen(limited, "cli-watcher", "ps", "-q")
            _, err = ps.communicate(timeout=60)
            results.append(ps.returncode)
            if ps.returncode != 0:
                assert b"refused by the limits of policy watched-cli" in err, err
                break
        assert results[0] == 0 and results[-1] != 0, results
        # The stream was never cut: it still prints the daemon's events.
        second = unique("event")
        cleanup.container(second)
        daemon.docker("create", "--name", second, busybox_image)
        printed.expect(re.escape(second))
        assert events.poll() is None
    finally:
        events.terminate()
        events.wait(timeout=30)
        for pipe in (events.stdout, events.stderr):
            if pipe is not None:
                pipe.close()


def test_anonymous_callers_are_limited_per_source(limited: Limited) -> None:
    for _ in range(2):
        assert limited.get(None, "/_ping", source="127.0.0.1").status == 200
    refused = limited.get(None, "/_ping", source="127.0.0.1")
    assert refused.status == 429
    assert "policy anon" in (refused.message or "")
    # Another address has its own bucket.
    assert limited.get(None, "/_ping", source="127.0.0.2").status == 200


def test_an_image_pull_costs_more_than_a_ping(limited: Limited) -> None:
    # A pull from a registry that is not there: the daemon fails it at once, but it was
    # forwarded, and cost 10 of the 12 tokens.
    pull = raw_request(
        limited.port,
        "POST",
        "/v1.41/images/create?fromImage=127.0.0.1:9/nothing&tag=x",
        limited.auth("builder"),
    )
    assert pull.status != 429, pull
    again = raw_request(
        limited.port,
        "POST",
        "/v1.41/images/create?fromImage=127.0.0.1:9/nothing&tag=x",
        limited.auth("builder"),
    )
    assert again.status == 429
    assert "ImageCreate costs 10" in (again.message or "")
    # The two tokens left are two pings.
    assert [limited.get("builder", "/_ping").status for _ in range(3)] == [200, 200, 429]


def _wait_logged(limited: Limited, predicate: Callable[[str], bool], count: int) -> None:
    """The access log has `count` such lines: those exchanges have ended (a slot is given back
    before the line is written)."""
    assert wait_until(lambda: limited.log_lines(predicate) >= count, 10), limited.gw.stdout_text()[
        -3000:
    ]


ROUNDS = 4


def test_slots_come_back_however_exchanges_end(
    limited: Limited,
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """`leaker` may run one request and one stream at a time: each round below would be
    refused if any earlier exchange had kept its slot."""
    sleeper = unique("sleeper")
    cleanup.container(sleeper)
    daemon.docker("run", "-d", "--name", sleeper, busybox_image, "sleep", "600")
    exited = unique("exited")
    cleanup.container(exited)
    daemon.docker("run", "--name", exited, busybox_image, "echo", "hello")
    # Answers that end, and streams that end (a followed log of an exited container, an
    # event stream up to now).
    for _ in range(ROUNDS):
        assert limited.get("leaker", "/v1.41/containers/json").status == 200
        logs = limited.get("leaker", f"/v1.41/containers/{exited}/logs?follow=1&stdout=1")
        assert logs.status == 200 and b"hello" in logs.body
        until = int(time.time())
        assert limited.get("leaker", f"/v1.41/events?since=0&until={until}").status == 200
    # The same on one keep-alive connection: the connection stays, each exchange ends.
    conn = http.client.HTTPConnection("127.0.0.1", limited.port, timeout=15)
    try:
        for _ in range(ROUNDS):
            for target in (
                "/v1.41/containers/json",
                f"/v1.41/containers/{exited}/logs?follow=1&stdout=1",
            ):
                conn.request("GET", target, headers=dict(limited.auth("leaker")))
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 200, (target, answer.status)
    finally:
        conn.close()
    # Tunnels that close: `docker exec` hijacks its exec start.
    tmp = limited.tmp
    headers = {"Authorization": f"Bearer {limited.tokens['leaker']}"}
    for round_ in range(ROUNDS):
        done = remote_docker(
            limited.gw.url, tmp, "exec", sleeper, "echo", "tunnel", headers=headers
        )
        assert done.returncode == 0 and done.stdout == "tunnel\n", done
        _wait_logged(
            limited, lambda line: "op=ExecStart" in line and "user=id-leaker" in line, round_ + 1
        )
    # Clients that vanish: mid-stream, and mid-request (a body half sent).
    gone = 0
    for _ in range(ROUNDS):
        sock, head = _open_stream(
            limited, "leaker", f"/v1.41/containers/{sleeper}/logs?follow=1&stdout=1"
        )
        sock.close()
        assert head.startswith(b"HTTP/1.1 200 "), head
        gone += 1
        _wait_logged(limited, lambda line: "client gone" in line and "user=id-leaker" in line, gone)
        with socket.create_connection(("127.0.0.1", limited.port), timeout=15) as half:
            half.sendall(
                b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
                + f"Authorization: Bearer {limited.tokens['leaker']}\r\n".encode()
                + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"Ima'
            )
        gone += 1
        _wait_logged(limited, lambda line: "client gone" in line and "user=id-leaker" in line, gone)
    # After all of them: a request and a stream are still admitted, and nothing was refused.
    assert limited.get("leaker", "/v1.41/containers/json").status == 200
    sock, head = _open_stream(limited, "leaker", "/v1.41/events")
    try:
        assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        sock.close()
    refused = [
        r
        for r in audit_records(limited.audit)
        if r["identity"] == "id-leaker" and r["status"] == 429
    ]
    assert refused == []
