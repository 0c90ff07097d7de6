"""The learner (policy/learn.py) on handmade audit records: what each kind of record teaches,
that the result loads as a policy file, and `learn --policy`'s re-decisions
(policy/learndiff.py) grouped by reason."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from dockgate.policy.learn import Learner, LearnError, read_records
from dockgate.policy.learndiff import NO_BODY, PARTIAL_BODY, diff, recorded_body
from dockgate.policy.loader import load_policy_file


def rec(operation: str, method: str, path: str, **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "identity": "-",
        "auth": "none",
        "source": "10.0.0.7",
        "peer": "10.0.0.7:4000",
        "method": method,
        "path": path,
        "operation": operation,
        "decision": "allow",
        "status": 200,
    }
    record.update(extra)
    return record


def create(**details: object) -> dict[str, object]:
    return rec("ContainerCreate", "POST", "/v1.41/containers/create", details=details)


def learned(records: list[dict[str, object]], tmp_path: pathlib.Path, **kw: str) -> str:
    learner = Learner()
    for record in records:
        learner.add(record)
    text = learner.document(**kw)
    path = tmp_path / "learned.yaml"
    path.write_text(text)
    load_policy_file(str(path))  # valid, or PolicyError
    return text


def test_reads_alone_make_a_read_only_policy_of_exact_operations(tmp_path: pathlib.Path) -> None:
    text = learned(
        [
            rec("ContainerList", "GET", "/v1.41/containers/json", user_agent="probe/1"),
            rec("ContainerList", "GET", "/v1.41/containers/json", source="10.0.0.8"),
            rec("SystemPing", "GET", "/_ping"),
        ],
        tmp_path,
    )
    assert "read_only: true" in text
    assert "- allow: {operations: [ContainerList]}" in text
    assert "# ContainerList: 2 requests, from 10.0.0.7 (probe/1), 10.0.0.8" in text
    assert "sections" not in text


def test_refused_and_unknown_requests_are_not_learned(tmp_path: pathlib.Path) -> None:
    text = learned(
        [
            rec("SystemPing", "GET", "/_ping"),
            rec("SwarmInit", "POST", "/v1.41/swarm/init", decision="deny"),
            rec("unknown", "GET", "/v1.41/vendor/x"),
        ],
        tmp_path,
    )
    assert "SwarmInit" not in text
    assert "1 refused by the gateway" in text
    assert "# not learned (no Engine API operation): GET /v1.41/vendor/x x1" in text


def test_host_paths_read_only_only_where_every_use_was(tmp_path: pathlib.Path) -> None:
    text = learned(
        [
            create(image="busybox", binds=["/srv/ro:/a:ro", "/srv/rw:/b:ro", "cache:/c"]),
            create(image="busybox", mounts=[{"type": "bind", "source": "/srv/rw", "target": "/d"}]),
            create(
                image="busybox",
                mounts=[{"type": "bind", "source": "/srv/m", "target": "/e", "read_only": True}],
            ),
        ],
        tmp_path,
    )
    assert "{path: /srv/ro, read_only: true}" in text
    assert "{path: /srv/rw, read_only: false}" in text
    assert "{path: /srv/m, read_only: true}" in text
    assert "cache" not in text.split("host_paths:")[1]  # a named volume is no host path


def test_guardrails_open_only_what_was_seen(tmp_path: pathlib.Path) -> None:
    quiet = learned([create(image="busybox:1.36")], tmp_path)
    assert "privileged: false" in quiet
    assert "capabilities: []" in quiet
    assert "devices: false" in quiet
    assert "namespaces: []" in quiet
    loud = learned(
        [
            create(
                image="busybox",
                privileged=True,
                cap_add=["net_admin"],
                devices=["/dev/fuse"],
                namespaces=["network", "pid:container"],
            )
        ],
        tmp_path,
    )
    assert "privileged: true" in loud
    assert "- CAP_NET_ADMIN" in loud
    assert "devices: true" in loud
    assert "- network" in loud
    assert '- "pid:container"' in loud


def test_images_are_repositories_with_their_tags_said(tmp_path: pathlib.Path) -> None:
    text = learned(
        [
            create(image="busybox:1.36"),
            create(image="busybox:1.37"),
            create(image="registry.example.com/ci/app:3"),
        ],
        tmp_path,
    )
    assert "- docker.io/library/busybox    # as busybox:1.36, busybox:1.37; 2 requests" in text
    assert "- registry.example.com/ci/app" in text


def test_exec_root_only_when_some_exec_was_not_a_numeric_user(tmp_path: pathlib.Path) -> None:
    def execs(*users: str) -> str:
        records = [
            rec("ContainerExec", "POST", "/v1.41/containers/web/exec", details={"user": user})
            for user in users
        ]
        return learned(records, tmp_path)

    assert "exec: {root: false, privileged: false}" in execs("1000", "1000:1000")
    assert "exec: {root: true, privileged: false}" in execs("1000", "")
    assert "exec: {root: true, privileged: false}" in execs("postgres")
    assert "exec: {root: true, privileged: false}" in execs("0")


def test_ownership_suggested_only_where_every_container_touched_was_created(
    tmp_path: pathlib.Path,
) -> None:
    made = rec("ContainerCreate", "POST", "/v1.41/containers/create?name=web", object="web")
    start = rec("ContainerStart", "POST", "/v1.41/containers/web/start", object="web")
    other = rec("ContainerStop", "POST", "/v1.41/containers/db/stop", object="db")
    assert "# ownership: true  # suggested" in learned([made, start], tmp_path)
    assert "ownership not suggested: it addressed containers it did not create (db)" in (
        learned([made, start, other], tmp_path)
    )


def test_callers_get_a_policy_and_a_binding_each(tmp_path: pathlib.Path) -> None:
    alice = rec("SystemPing", "GET", "/_ping", identity="alice", auth="basic")
    ci = rec("ImageList", "GET", "/v1.41/images/json", identity="ci", auth="token")
    anon = rec("SystemPing", "GET", "/_ping", identity="anonymous", auth="anonymous")
    both = learned([alice, ci, anon], tmp_path)
    assert "- {policy: alice, users: [alice]}" in both
    assert "- {policy: ci, users: [ci]}" in both
    assert "- {policy: anonymous, anonymous: true}" in both
    alice_token = rec("ImageList", "GET", "/v1.41/images/json", identity="alice", auth="token")
    merged = learned([alice, alice_token], tmp_path)
    assert merged.count("{policy: alice") == 1
    assert "- allow: {operations: [ImageList]}" in merged
    one = learned([alice, ci], tmp_path, only="ci")
    assert "alice" not in one
    with pytest.raises(LearnError):
        learned([alice], tmp_path, only="bob")


def test_a_partial_last_line_is_skipped() -> None:
    read = read_records(['{"operation": "SystemPing"}\n', '{"operation": "Sys'])
    assert len(read.records) == 1
    assert read.bad_lines == 1


def test_comments_cannot_break_out_of_their_line(tmp_path: pathlib.Path) -> None:
    text = learned([rec("SystemPing", "GET", "/_ping", user_agent="x\ndefault: evil")], tmp_path)
    assert "\ndefault: evil" not in text


def test_recorded_bodies_are_rebuilt_for_the_guardrails() -> None:
    body = recorded_body(
        "ContainerCreate",
        {"image": "busybox", "privileged": True, "binds": ["/etc:/x"], "namespaces": ["pid"]},
    )
    assert body is not None
    assert b'"Privileged": true' in body
    assert b'"PidMode": "host"' in body
    assert recorded_body("ContainerCreate", {"body": "unparsable"}) is None


CURRENT = """\
policies:
  ci:
    rules:
      - allow: {operations: [SystemPing, ContainerCreate, VolumeCreate]}
    guardrails: {images: ["docker.io/library/*"]}
"""


def test_learn_policy_groups_what_the_current_policy_would_deny(tmp_path: pathlib.Path) -> None:
    """Re-decided by the gateway's own code: a rule missing, a guardrail (privileged), an image
    outside the list; a body the log does not keep is said to be undecided."""
    current = tmp_path / "current.yaml"
    current.write_text(CURRENT)
    records = [
        rec("SystemPing", "GET", "/_ping"),
        rec("SwarmInit", "POST", "/v1.41/swarm/init"),
        rec("SwarmInit", "POST", "/v1.41/swarm/init"),
        create(image="busybox"),
        create(image="busybox", privileged=True),
        create(image="quay.io/x/y:1"),
        rec("VolumeCreate", "POST", "/v1.41/volumes/create"),
        rec("ContainerList", "GET", "/v1.41/containers/json", decision="deny"),
    ]
    result = diff(records, load_policy_file(str(current)))
    assert result.decided == 7
    # The ping; the busybox create passes on its recorded fields only: not counted allowed.
    assert result.allowed == 1
    assert result.denied["no rule allows it"].count == 2
    guardrail_messages = [
        message
        for reason, denials in result.denied.items()
        if reason != "no rule allows it"
        for message in denials.messages
    ]
    assert any("privileged" in m for m in guardrail_messages), result.denied
    assert any("quay.io/x/y" in m for m in guardrail_messages), result.denied
    assert result.undecided == {NO_BODY: 1, PARTIAL_BODY: 1}

    log = tmp_path / "audit.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"partial')
    proc = subprocess.run(
        [sys.executable, "-m", "dockgate", "learn", "--from", str(log), "--policy", str(current)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "7 forwarded requests decided again: 1 allowed, 4 would be denied" in proc.stdout
    assert "     2  no rule allows it (403)" in proc.stdout
    assert "1 lines were not audit records" in proc.stderr
