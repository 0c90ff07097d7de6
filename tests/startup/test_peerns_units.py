"""Start-up warnings for bindings by the unix-socket peer (startup/peerns.py): no unix listener,
and dockgate in a container without the host's PID namespace."""

from __future__ import annotations

from pathlib import Path

from dockgate.addresses import parse_address
from dockgate.policy.loader import parse_policy_text
from dockgate.startup.doctor import describe_binding
from dockgate.startup.peerns import own_pid_namespace, peer_warnings

ID = "ab" * 32
POLICY = """\
bindings:
  - {policy: p, users: [alice]}
  - {policy: p, container: {labels: {role: proxy}}}
policies:
  p: {rules: [{allow: {sections: ["*"]}}]}
"""
UNIX = [parse_address("unix:///run/dockgate.sock")]


def _mountinfo(container: str | None) -> str:
    lines = ["22 1 0:21 / / rw - overlay overlay rw"]
    if container is not None:
        lines += [
            f"{30 + i} 22 8:1 /var/lib/docker/containers/{container}/{name} /etc/{name} rw - "
            "ext4 /dev/sda1 rw"
            for i, name in enumerate(("hostname", "hosts", "resolv.conf"))
        ]
    return "\n".join(lines) + "\n"


def _proc(tmp_path: Path, own: str | None, init: str | None) -> Path:
    for pid, container in (("self", own), ("1", init)):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "mountinfo").write_text(_mountinfo(container))
    return tmp_path


def test_dockgate_in_its_containers_own_pid_namespace_is_told_to_use_the_hosts(
    tmp_path: Path,
) -> None:
    proc = _proc(tmp_path, ID, ID)  # PID 1 is in dockgate's own container
    assert own_pid_namespace(proc)
    policies = parse_policy_text(POLICY, "p.yaml")
    (warning,) = peer_warnings(policies, UNIX, proc)
    assert "need the host's PID namespace" in warning and "--pid host" in warning


def test_on_the_host_or_with_pid_host_nothing_is_said(tmp_path: Path) -> None:
    policies = parse_policy_text(POLICY, "p.yaml")
    (tmp_path / "host").mkdir()
    (tmp_path / "pidhost").mkdir()
    host = _proc(tmp_path / "host", None, None)
    pid_host = _proc(tmp_path / "pidhost", ID, None)
    assert peer_warnings(policies, UNIX, host) == []
    assert peer_warnings(policies, UNIX, pid_host) == []  # PID 1 is the host's init
    assert not own_pid_namespace(tmp_path / "missing")


def test_peer_bindings_without_a_unix_listener_bind_nobody(tmp_path: Path) -> None:
    policies = parse_policy_text(POLICY, "p.yaml")
    tcp = [parse_address("tcp://127.0.0.1:2376")]
    (warning,) = peer_warnings(policies, tcp, _proc(tmp_path, None, None))
    assert warning.startswith("bindings 2 name callers by their unix-socket peer")


def test_policies_without_peer_bindings_are_not_looked_at(tmp_path: Path) -> None:
    policies = parse_policy_text(
        "policies:\n  p: {rules: [{allow: {sections: ['*']}}]}\n", "p.yaml"
    )
    assert peer_warnings(policies, [], _proc(tmp_path, ID, ID)) == []


def test_doctor_shows_who_the_peer_bindings_name() -> None:
    policies = parse_policy_text(
        """\
bindings:
  - {policy: p, container: {labels: {role: "proxy*", team: web}, names: [ci-*]}}
  - {policy: p, service: edge_traefik, uids: [1000, 0], gids: [10]}
policies:
  p: {rules: [{allow: {sections: ["*"]}}]}
""",
        "p.yaml",
    )
    assert policies.bindings is not None
    assert [describe_binding(b) for b in policies.bindings] == [
        "binding 1 (line 2): containers with labels role=proxy*, team=web; names ci-*",
        "binding 2 (line 3): tasks of services edge_traefik; host processes of uids 0, 1000; "
        "host processes of gids 10",
    ]
