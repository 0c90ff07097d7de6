"""Rollout modes, end to end: the real docker CLI through a real dockgate in front of the
session's dockerd, with the policy in warn, audit or enforce mode.

The claim of each test is in its docstring. A request counts as let through only when the
daemon did it (the privileged container exists, privileged; the volume is gone); as refused
only when the CLI prints dockgate's message and the daemon's state is as before. What was
recorded is read where an operator reads it: the audit log's JSON lines (--audit-log), the
access log's decision (stderr), and `dockgate_would_deny_total` on --admin-listen's /metrics.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from support.clients import Cleanup
from support.daemon import PrivateDaemon, run_docker
from support.gateway import Gateway, running
from support.metrics import scrape
from support.remote import write_htpasswd

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's policy",
    ),
]

IO_TIMEOUT = 10.0

# Everything allowed, with the guardrails' safe defaults (no privileged containers).
GUARDED = """\
policies:
  guarded:
    mode: {mode}
    rules:
      - allow: {{sections: ["*"]}}
"""
# Everything readable, nothing that changes the daemon.
READ_ONLY = """\
policies:
  readonly:
    mode: {mode}
    read_only: true
    rules:
      - allow: {{sections: ["*"]}}
"""


@contextmanager
def gateway_with(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, policy: str
) -> Iterator[tuple[Gateway, pathlib.Path, pathlib.Path]]:
    """A gateway on `policy` (written to a file it watches), with an audit log and an admin
    listener: the gateway, the policy file, the audit log."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy)
    audit = tmp_path / "audit.jsonl"
    gateway = Gateway(
        daemon.host,
        "--audit-log",
        str(audit),
        "--admin-listen",
        "tcp://127.0.0.1:0",
        policy=policy_file,
    )
    with running(gateway) as gw:
        yield gw, policy_file, audit


def cli_env(gw: Gateway, daemon: PrivateDaemon) -> dict[str, str]:
    env = daemon.env()
    env["DOCKER_HOST"] = gw.url
    return env


def audit_records(path: pathlib.Path, operation: str) -> list[dict[str, object]]:
    """The audit records of `operation` (the audit log is written line by line, buffered:
    polled until one is there)."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [r for r in map(json.loads, lines) if r["operation"] == operation]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def access_logged(gw: Gateway, text: str) -> bool:
    """Whether the access log (stdout) has a line with `text` (polled: it is buffered)."""
    deadline = time.monotonic() + IO_TIMEOUT
    while text not in gw.stdout_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def would_deny_count(gw: Gateway, policy: str, operation: str, reason: str) -> float:
    key = (
        "dockgate_would_deny_total",
        (("operation", operation), ("policy", policy), ("reason", reason)),
    )
    return scrape(gw.admin_port()).get(key, 0.0)


def inspect(daemon: PrivateDaemon, kind: str, name: str) -> dict[str, object] | None:
    proc = daemon.docker(kind, "inspect", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


# ----- warn: recorded, and done ----------------------------------------------------------------


def test_warn_mode_runs_a_privileged_container_and_records_it(
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """`docker create --privileged` under the default guardrails in warn mode: the daemon
    creates the privileged container; the audit record says it would have been denied, and why;
    the access log's decision is warn; the metric counted it. (`create`, not `run`: this
    sandbox's runc may not start a privileged container; what the daemon stored is the claim.)"""
    name = cleanup.container(unique("warn-priv"))
    with gateway_with(daemon, tmp_path, GUARDED.format(mode="warn")) as (gw, _, audit):
        assert gw.wait_stderr(r"warning: policy 'guarded' is in warn mode")
        proc = run_docker(
            cli_env(gw, daemon), "create", "--privileged", "--name", name, busybox_image, "true"
        )
        assert proc.returncode == 0, proc.stderr
        created = inspect(daemon, "container", name)
        assert created is not None
        assert created["HostConfig"]["Privileged"] is True  # type: ignore[index]
        (record,) = audit_records(audit, "ContainerCreate")
        assert record["decision"] == "allow" and record["mode"] == "warn"
        assert record["status"] == 201
        would = record["would_deny"]
        assert isinstance(would, dict)
        assert would["stage"] == "guardrails" and would["status"] == 403
        assert "privileged" in str(would["reason"])
        assert "denied by policy guarded" in str(would["message"])
        assert access_logged(gw, "op=ContainerCreate decision=warn:guarded:guardrails")
        assert would_deny_count(gw, "guarded", "ContainerCreate", "guardrails") == 1


def test_warn_mode_removes_a_volume_under_read_only_and_records_it(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, unique: Callable[[str], str]
) -> None:
    """`docker volume rm` under `read_only: true` in warn mode: the volume is gone from the
    daemon; the audit record and the metric name the read-only denial."""
    volume = unique("warn-vol")
    daemon.docker("volume", "create", volume)
    with gateway_with(daemon, tmp_path, READ_ONLY.format(mode="warn")) as (gw, _, audit):
        proc = run_docker(cli_env(gw, daemon), "volume", "rm", volume)
        assert proc.returncode == 0, proc.stderr
        assert inspect(daemon, "volume", volume) is None
        (record,) = audit_records(audit, "VolumeDelete")
        assert record["status"] == 204 and record["mode"] == "warn"
        assert record["would_deny"] == {
            "status": 403,
            "stage": "policy",
            "reason": "read-only",
            "message": record["would_deny"]["message"],  # type: ignore[index]
        }
        assert would_deny_count(gw, "readonly", "VolumeDelete", "read-only") == 1
        # A read is no would-deny: its record carries the mode and no would_deny.
        assert run_docker(cli_env(gw, daemon), "volume", "ls").returncode == 0
        (listed,) = audit_records(audit, "VolumeList")
        assert listed["mode"] == "warn" and "would_deny" not in listed


def test_audit_mode_lets_everything_through_and_records_every_decision(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, unique: Callable[[str], str]
) -> None:
    """Audit mode: the volume is created and removed under a read-only policy, and each
    request's record carries the mode and the decision it would have had."""
    volume = unique("audit-vol")
    with gateway_with(daemon, tmp_path, READ_ONLY.format(mode="audit")) as (gw, _, audit):
        env = cli_env(gw, daemon)
        assert run_docker(env, "volume", "create", volume).returncode == 0
        assert inspect(daemon, "volume", volume) is not None
        assert run_docker(env, "volume", "rm", volume).returncode == 0
        assert inspect(daemon, "volume", volume) is None
        for operation in ("VolumeCreate", "VolumeDelete"):
            (record,) = audit_records(audit, operation)
            assert record["mode"] == "audit"
            assert record["would_deny"]["reason"] == "read-only"  # type: ignore[index]
        assert would_deny_count(gw, "readonly", "VolumeCreate", "read-only") == 1


# ----- enforce: the same requests refused, nothing done ------------------------------------------


def test_enforce_mode_refuses_the_same_and_the_daemon_does_nothing(
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    name = cleanup.container(unique("enforce-priv"))
    with gateway_with(daemon, tmp_path, GUARDED.format(mode="enforce")) as (gw, _, audit):
        proc = run_docker(
            cli_env(gw, daemon), "create", "--privileged", "--name", name, busybox_image, "true"
        )
        assert proc.returncode != 0
        assert b"dockgate: ContainerCreate denied by policy guarded" in proc.stderr
        assert inspect(daemon, "container", name) is None
        (record,) = audit_records(audit, "ContainerCreate")
        assert record["decision"] == "deny" and "mode" not in record
        assert would_deny_count(gw, "guarded", "ContainerCreate", "guardrails") == 0
        assert "is in warn mode" not in gw.stderr_text()
    volume = unique("enforce-vol")
    daemon.docker("volume", "create", volume)
    try:
        with gateway_with(daemon, tmp_path, READ_ONLY.format(mode="enforce")) as (gw, _, _):
            proc = run_docker(cli_env(gw, daemon), "volume", "rm", volume)
            assert proc.returncode != 0 and b"denied by policy readonly" in proc.stderr
            assert inspect(daemon, "volume", volume) is not None
    finally:
        daemon.docker("volume", "rm", volume, check=False)


# ----- a reload switches modes for the requests that follow -------------------------------------


def _delete(conn: socket.socket, volume: str) -> tuple[int, bytes]:
    """DELETE /volumes/NAME on a kept-alive connection: the status and the body."""
    conn.sendall(f"DELETE /v1.41/volumes/{volume} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        piece = conn.recv(1)
        assert piece, "the gateway closed the connection"
        head += piece
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return int(head.split(b" ")[1]), body


def test_a_reload_from_warn_to_enforce_refuses_the_next_request_on_the_same_connection(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, unique: Callable[[str], str]
) -> None:
    first, second = unique("reload-a"), unique("reload-b")
    for volume in (first, second):
        daemon.docker("volume", "create", volume)
    try:
        with (
            gateway_with(daemon, tmp_path, READ_ONLY.format(mode="warn")) as (gw, policy, _),
            socket.create_connection(("127.0.0.1", gw.port), timeout=IO_TIMEOUT) as conn,
        ):
            assert _delete(conn, first)[0] == 204
            assert inspect(daemon, "volume", first) is None
            policy.write_text(READ_ONLY.format(mode="enforce"))
            gw.signal(signal.SIGHUP)
            # (printed by the reload itself, before the next request is read)
            gw.wait_stderr(re.escape(f"{policy} changed: reloaded"))
            status, body = _delete(conn, second)
            assert status == 403, body
            assert b"denied by policy readonly" in body
            assert inspect(daemon, "volume", second) is not None
    finally:
        daemon.docker("volume", "rm", second, check=False)


PING_ONLY = """\
policies:
  pings:
    mode: {mode}
    rules:
      - allow: {{sections: [ping]}}
"""


def _get(conn: socket.socket, target: str) -> int:
    conn.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        piece = conn.recv(1)
        assert piece, "the gateway closed the connection"
        head += piece
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return int(head.split(b" ")[1])


def test_a_repeated_request_is_counted_each_time_and_refused_after_the_reload(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """A keep-alive client repeating the same head (the gateway reuses its plan) is let
    through and counted as a would-deny each time in warn mode; after a reload to enforce,
    the same head on the same connection is refused."""
    with gateway_with(daemon, tmp_path, PING_ONLY.format(mode="warn")) as (gw, policy, audit):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=IO_TIMEOUT) as conn:
            assert [_get(conn, "/v1.41/version") for _ in range(3)] == [200, 200, 200]
            assert would_deny_count(gw, "pings", "SystemVersion", "no rule allows it") == 3
            assert len(audit_records(audit, "SystemVersion")) == 3
            policy.write_text(PING_ONLY.format(mode="enforce"))
            gw.signal(signal.SIGHUP)
            gw.wait_stderr(re.escape(f"{policy} changed: reloaded"))
            assert _get(conn, "/v1.41/version") == 403
            assert _get(conn, "/_ping") == 200
        assert would_deny_count(gw, "pings", "SystemVersion", "no rule allows it") == 3


# ----- ownership and redaction in warn mode -----------------------------------------------------

OWNED_WARN = """\
policies:
  shared:
    mode: warn
    ownership: true
    redact: {env: true}
    rules:
      - allow: {sections: [ping, version, containers, images]}
bindings:
  - {policy: shared, authenticated: true}
"""
USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def user_env(gw: Gateway, daemon: PrivateDaemon, config: pathlib.Path, user: str) -> dict[str, str]:
    """The docker CLI's environment for `user` (Basic credentials from its config.json)."""
    config.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
    (config / "config.json").write_text(
        json.dumps({"HttpHeaders": {"Authorization": f"Basic {token}"}})
    )
    env = cli_env(gw, daemon)
    env["DOCKER_CONFIG"] = str(config)
    return env


def test_ownership_in_warn_mode_labels_lets_others_touch_and_records_it(
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """Warn mode with ownership and redaction: alice's create is labelled as hers (a later
    enforce finds it hers); bob sees it listed, its environment unredacted, and removes it:
    the daemon did, and the audit record says enforce would have answered as if it were
    missing and would have hidden the other owners' objects and the environment."""
    name = cleanup.container(unique("warn-owned"))
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, USERS)
    policy = tmp_path / "policy.yaml"
    policy.write_text(OWNED_WARN)
    audit = tmp_path / "audit.jsonl"
    gateway = Gateway(
        daemon.host,
        "--htpasswd",
        str(htpasswd),
        "--auth-failures",
        "0",
        "--audit-log",
        str(audit),
        policy=policy,
    )
    with running(gateway) as gw:
        alice = user_env(gw, daemon, tmp_path / "alice", "alice")
        bob = user_env(gw, daemon, tmp_path / "bob", "bob")
        made = run_docker(alice, "create", "--name", name, "-e", "SECRET=s3", busybox_image, "true")
        assert made.returncode == 0, made.stderr
        created = inspect(daemon, "container", name)
        assert created is not None
        labels = created["Config"]["Labels"]  # type: ignore[index]
        assert labels["io.dockgate.owner"] == "user:alice"
        listed = run_docker(bob, "ps", "-a", "--format", "{{.Names}}")
        assert name in listed.stdout.decode().split()
        shown = run_docker(bob, "inspect", "--format", "{{json .Config.Env}}", name)
        assert shown.returncode == 0 and "SECRET=s3" in shown.stdout.decode()
        removed = run_docker(bob, "rm", name)
        assert removed.returncode == 0, removed.stderr
        assert inspect(daemon, "container", name) is None
        (record,) = audit_records(audit, "ContainerDelete")
        assert record["identity"] == "bob" and record["status"] == 204
        assert record["would_deny"]["stage"] == "ownership"  # type: ignore[index]
        assert record["would_deny"]["status"] == 404  # type: ignore[index]
        lists = audit_records(audit, "ContainerList")
        assert lists and lists[0]["would_hide"] == ["objects of other owners"]
        inspected = audit_records(audit, "ContainerInspect")
        assert any(r.get("would_hide") == ["env"] for r in inspected)
