"""Attack review of issue 15's rollout modes (policy/modes.py) and presets
(dockgate/policy/presets), as a caller with limited rights against a real dockgate and the
real daemon.

Findings (each was a strict xfail; fixed since, their tests now pass):

- Medium: a caller bound in warn mode takes another caller's swarm object for good. Updating
  alice's secret (or config, or service) is ownership's 404, waived in warn mode, but the body
  is not "forwarded as it came" (docs/policy.md, the modes table): the warn caller's owner label
  is written into it (`with_owner_label`, for every OWNED_CREATES operation, updates
  included). The daemon relabels alice's object as mallory's: alice, whose binding enforces,
  loses it at once (404), and once mallory's binding is switched to enforce the object is
  mallory's.

- High: warn (and audit) mode leave a prune unnarrowed (`VolumePrune`, `NetworkPrune` are in
  ownership's FILTERED, which warn treats as a list to show whole): a warn caller's
  `POST /volumes/prune` deletes the unused volumes of every caller, enforce-bound ones
  included, and the record says `allow`, `would_hide: ["objects of other owners"]`, no
  `would_deny`, no `dockgate_would_deny_total`: the operator reading the would-denies before
  enforcing never learns that enforce would have spared them.

- Medium: audit mode's record lies about a body's references. A create mounting another
  caller's named volume (`HostConfig.Binds: ["alices-volume:/data"]`), which enforce and warn
  refuse (403, "no such volume"), is recorded in audit mode as `allow` with no `would_deny`
  (audit makes no look-up for the objects a body names), although docs/policy.md says every
  audit record carries "the decision it would have had". The container does mount alice's data.

- Low: audit mode applies the policy's `limits:` (the second ping past a burst of 1 is 429),
  while the startup warning says "nothing it decides is applied; every request is recorded",
  and neither docs/policy.md's "Enforced in every mode" list nor modes.py's docstring name the
  limits. An operator trying a policy in audit mode to avoid an outage gets 429s.

- Low: the `homepage` preset (docs/presets.md: "read-only: ping, version, container list,
  inspect, stats"; its header: a compromised dashboard "should learn as little as possible")
  allows ContainerInspect with no `redact:`: `GET /containers/X/json` answers every container's
  `Config.Env` values (passwords included). traefik, dashboard and dozzle redact env; Homepage
  reads states and health, not the environment.

Attacks that held (plain tests): bindings of one policy in warn and enforce mode alternating
on one keep-alive connection each get their own mode; a warn caller's create mounting another's
volume is recorded as would-deny; a preset name with path tricks reads no file outside the
presets directory; extends cannot reopen what a preset denies (dashboard's logs and export).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.identity import wait_audit
from support.remote import basic_header, json_call, write_htpasswd
from support.swarm import single_node_swarm

pytestmark = [pytest.mark.daemon]

USERS = {"alice": "alice-pw", "mallory": "mallory-pw", "audrey": "audrey-pw"}

POLICY = """\
policies:
  shared:
    ownership: true
    rules:
      - allow: {sections: [ping, version, info, containers, volumes, networks, secrets, configs]}
  ro:
    read_only: true
    rules:
      - allow: {sections: ["*"]}
bindings:
  - {policy: shared, users: [alice]}
  - {policy: shared, users: [mallory], mode: warn}
  - {policy: shared, users: [audrey], mode: audit}
"""


class Api:
    def __init__(self, gw: Gateway, user: str) -> None:
        self.gw = gw
        self.user = user

    def call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        auth = {"Authorization": basic_header(self.user, USERS[self.user])}
        return json_call(self.gw.port, method, path, body, headers=auth, timeout=30)


@pytest.fixture(scope="module")
def gw(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    base = tmp_path_factory.mktemp("attack-rollout")
    htpasswd = base / "htpasswd"
    write_htpasswd(htpasswd, USERS)
    policy = base / "policy.yaml"
    policy.write_text(POLICY)
    gateway = Gateway(
        daemon.host,
        *("--htpasswd", str(htpasswd), "--auth-failures", "0"),
        *("--audit-log", str(base / "audit.jsonl")),
        policy=str(policy),
    )
    with running(gateway) as started:
        yield started


def _audit(gw: Gateway) -> pathlib.Path:
    return pathlib.Path(gw.command[gw.command.index("--audit-log") + 1])


@pytest.fixture
def alice(gw: Gateway) -> Api:
    return Api(gw, "alice")


@pytest.fixture
def mallory(gw: Gateway) -> Api:
    return Api(gw, "mallory")


@pytest.fixture(scope="module")
def swarm(daemon: PrivateDaemon, gw: Gateway) -> Iterator[PrivateDaemon]:
    with single_node_swarm(daemon) as manager:
        yield manager


def test_a_warn_callers_update_does_not_take_another_callers_secret(
    alice: Api, mallory: Api, swarm: PrivateDaemon
) -> None:
    name = f"dgt-att-secret-{os.urandom(4).hex()}"
    status, answer = alice.call(
        "POST", "/v1.41/secrets/create", {"Name": name, "Data": base64.b64encode(b"x").decode()}
    )
    assert status == 201, answer
    secret_id = answer["ID"]
    try:
        status, inspected = alice.call("GET", f"/v1.41/secrets/{secret_id}")
        assert status == 200, inspected
        version = inspected["Version"]["Index"]
        # Mallory's binding is in warn mode: ownership's refusal is recorded, the update goes
        # through. As it came, it would drop the owner label (labels are the only update a
        # secret takes) ...
        status, _ = mallory.call(
            "POST", f"/v1.41/secrets/{secret_id}/update?version={version}",
            {"Name": name, "Labels": {"purpose": "warn-mode"}},
        )  # fmt: skip
        assert status == 200
        labels = json.loads(
            swarm.docker("secret", "inspect", "--format", "{{json .Spec.Labels}}", secret_id).stdout
        )
        # ... but it was labelled as mallory's: alice (enforced) lost her secret at once.
        status_alice, _ = alice.call("GET", f"/v1.41/secrets/{secret_id}")
        assert labels.get("io.dockgate.owner") != "user:mallory", (
            f"alice's secret is now mallory's: {labels}; alice gets {status_alice}"
        )
    finally:
        swarm.docker("secret", "rm", secret_id, check=False)


def test_a_warn_callers_prune_spares_others_volumes_or_is_recorded(
    gw: Gateway, alice: Api, mallory: Api, daemon: PrivateDaemon
) -> None:
    name = f"dgt-att-vol-{os.urandom(4).hex()}"
    status, answer = alice.call("POST", "/v1.41/volumes/create", {"Name": name})
    assert status == 201, answer
    try:
        status, pruned = mallory.call("POST", "/v1.41/volumes/prune")
        assert status == 200, pruned
        gone = daemon.docker("volume", "inspect", name, check=False).returncode != 0
        record = wait_audit(
            _audit(gw),
            lambda r: r.get("identity") == "mallory" and r.get("operation") == "VolumePrune",
        )
        # Enforce would have pruned mallory's volumes only. Deleting alice's is what warn
        # mode lets through, but then as a would-deny the operator sees before enforcing.
        assert not gone or record.get("would_deny"), (
            f"alice's volume pruned by mallory ({name} in {pruned.get('VolumesDeleted')}); "
            f"recorded as {record}"
        )
    finally:
        daemon.docker("volume", "rm", name, check=False)


@pytest.mark.parametrize(
    "mode_user",
    [
        "audrey",
        "mallory",
    ],
)
def test_a_create_mounting_anothers_volume_is_recorded_as_would_deny(
    gw: Gateway, alice: Api, daemon: PrivateDaemon, busybox_image: str, mode_user: str
) -> None:
    """Audit (and warn) mode: a create mounting alice's volume, which enforce refuses (the
    volume is not the caller's), goes through; its audit record must say what enforce does."""
    suffix = os.urandom(4).hex()
    volume, mine = f"dgt-att-v-{suffix}", f"dgt-att-m-{suffix}"
    assert alice.call("POST", "/v1.41/volumes/create", {"Name": volume})[0] == 201
    try:
        body = {"Image": busybox_image, "HostConfig": {"Binds": [f"{volume}:/data"]}}
        status, answer = Api(gw, mode_user).call(
            "POST", f"/v1.41/containers/create?name={mine}", body
        )
        assert status == 201, answer
        record = wait_audit(_audit(gw), lambda r: r.get("object") == mine)
        assert record["mode"] in ("audit", "warn")
        # (and the container does mount alice's volume)
        mounts = daemon.docker("inspect", "--format", "{{json .Mounts}}", mine).stdout
        assert volume in str(mounts)
        assert record.get("would_deny"), record
    finally:
        daemon.docker("rm", "-f", mine, check=False)
        daemon.docker("volume", "rm", volume, check=False)


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk
        rest += chunk
    return head


def test_warn_and_enforce_bindings_alternate_on_one_connection(
    gw: Gateway, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """On one keep-alive connection, mallory (warn) inspecting alice's container (forwarded)
    alternates with alice (enforce) inspecting mallory's (404): each request gets its own
    binding's mode, however the hot path's memos are reused."""
    name = f"dgt-att-own-{os.urandom(4).hex()}"
    created = Api(gw, "alice").call(
        "POST", f"/v1.41/containers/create?name={name}", {"Image": busybox_image}
    )
    assert created[0] == 201, created
    try:
        theirs = Api(gw, "mallory").call(
            "POST", f"/v1.41/containers/create?name={name}-m", {"Image": busybox_image}
        )
        assert theirs[0] == 201, theirs
        as_alice = (
            f"GET /v1.41/containers/{name}-m/json HTTP/1.1\r\nHost: docker\r\n"
            f"Authorization: {basic_header('alice', USERS['alice'])}\r\n\r\n"
        ).encode()
        as_mallory = (
            f"GET /v1.41/containers/{name}/json HTTP/1.1\r\nHost: docker\r\n"
            f"Authorization: {basic_header('mallory', USERS['mallory'])}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            for _ in range(4):
                assert _exchange(sock, as_mallory).startswith(b"HTTP/1.1 200 ")
                assert _exchange(sock, as_alice).startswith(b"HTTP/1.1 404 ")
                assert _exchange(sock, as_alice).startswith(b"HTTP/1.1 404 ")
                assert _exchange(sock, as_mallory).startswith(b"HTTP/1.1 200 ")
    finally:
        daemon.docker("rm", "-f", name, f"{name}-m", check=False)


@pytest.mark.parametrize(
    "name", ["../presets/traefik", "traefik.yaml", "/etc/passwd", "Traefik", "traefik\n", "..%2f"]
)
def test_a_preset_name_reads_no_other_file(tmp_path: pathlib.Path, name: str) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(f"policies:\n  p:\n    preset: {json.dumps(name)}\n")
    done = subprocess.run(
        ["python3", "-m", "dockgate", "policy", "validate", str(policy)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0, done
    assert "root:" not in done.stdout + done.stderr


def test_extends_cannot_reopen_what_a_preset_denies(tmp_path: pathlib.Path) -> None:
    """dashboard denies logs and exports: an allow of them in a policy extending it stays
    denied (a deny wins), while what the preset allows stays allowed."""
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "policies:\n  p:\n    extends: dashboard\n"
        "    rules:\n      - allow: {operations: [ContainerLogs, ContainerExport]}\n"
    )
    for target, allowed in (
        ("/v1.41/containers/x/logs?stdout=1", False),
        ("/v1.41/containers/x/export", False),
        ("/v1.41/containers/x/json", True),
    ):
        done = subprocess.run(
            ["python3", "-m", "dockgate", "check", "--policy", str(policy), "GET", target],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (done.returncode == 0) is allowed, done.stdout


def test_audit_mode_and_limits_say_the_same(daemon: PrivateDaemon, tmp_path: pathlib.Path) -> None:
    policy = tmp_path / "audit-limits.yaml"
    policy.write_text(
        "policies:\n  observed:\n    mode: audit\n    rules: [{allow: {sections: [ping]}}]\n"
        "    limits: {rate: 0.001, burst: 1}\n"
        "bindings:\n  - {policy: observed, anonymous: true}\n"
    )
    gw = Gateway(daemon.host, policy=str(policy))
    with running(gw):
        statuses = [json_call(gw.port, "GET", "/_ping", timeout=10)[0] for _ in range(2)]
        warning = "".join(gw.stderr_lines)
    applies_nothing = "nothing it decides is applied" in warning
    assert not (applies_nothing and 429 in statuses), (statuses, warning)


def test_the_homepage_preset_does_not_hand_out_environment_values(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    name = f"dgt-att-env-{os.urandom(4).hex()}"
    canary = f"canary-{os.urandom(6).hex()}"
    daemon.docker("create", "--name", name, "-e", f"DB_PASSWORD={canary}", busybox_image)
    try:
        policy = tmp_path / "homepage.yaml"
        policy.write_text("policies:\n  home:\n    preset: homepage\n")
        gw = Gateway(daemon.host, policy=str(policy))
        with running(gw):
            status, answer = json_call(gw.port, "GET", f"/v1.41/containers/{name}/json")
        assert status == 200, answer
        assert canary not in json.dumps(answer), answer["Config"]["Env"]
    finally:
        daemon.docker("rm", "-f", name, check=False)
