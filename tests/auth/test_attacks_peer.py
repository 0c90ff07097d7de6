"""Attacks on the calling container as the identity (issue 16), against the real daemon.

A caller with limited rights tries to get another container's policy on dockgate's unix
socket. The containers run tests/support/unixget.c as their HTTP client (as in
tests/auth/test_peer_e2e.py); what a caller got is what it printed. Findings are `xfail(strict)`
tests that assert what should happen; attacks that held are plain tests.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from dockgate.auth.cgroup import container_ids
from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.remote import UnixHTTPConnection
from support.unixget import build_unixget

NOBODY = 65534
SERVICE = "dgtatk_lister"


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[pathlib.Path]:
    # (short: AF_UNIX paths are at most 108 bytes; traversable by the unprivileged caller)
    path = pathlib.Path(tempfile.mkdtemp(prefix="dgatk-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def unixget(socket_dir: pathlib.Path) -> pathlib.Path:
    """The static client, where uid 65534 and containers (bind mount) can run it."""
    tools = socket_dir / "tools"
    tools.mkdir()
    tools.chmod(0o755)
    binary = build_unixget(tools)
    binary.chmod(0o755)
    return binary


def _policy(socket_dir: pathlib.Path) -> str:
    return f"""\
bindings:
  - policy: lister
    container: {{labels: {{dockgate.role: lister}}}}
  - policy: lister
    service: {SERVICE}
  - policy: creator
    uids: [0]
  - policy: anon
    anonymous: true
policies:
  lister:
    rules:
      - allow: {{operations: [ContainerList, SystemPing]}}
  creator:
    rules:
      - allow:
          operations: [ContainerCreate, ContainerStart, ContainerWait, ContainerLogs,
                       ContainerDelete, ContainerInspect, ImageCommit, SystemPing]
    guardrails:
      host_paths: [{{path: {socket_dir}}}]
  anon:
    rules:
      - allow: {{operations: [SystemPing]}}
"""


@pytest.fixture(scope="module")
def peer_gateway(daemon: PrivateDaemon, socket_dir: pathlib.Path) -> Iterator[Gateway]:
    policy = socket_dir / "policy.yaml"
    policy.write_text(_policy(socket_dir))
    gateway = Gateway(
        daemon.host,
        *("--socket-mode", "666", "--access-log", "-"),
        *("--listen", "tcp://127.0.0.1:0"),
        listen=f"unix://{socket_dir / 'gw.sock'}",
        policy=str(policy),
    )
    with running(gateway, "the attacked peer gateway") as gw:
        yield gw


def _answer(raw: bytes) -> tuple[int, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def _request(
    socket_dir: pathlib.Path, method: str, target: str, body: object = None
) -> tuple[int, object]:
    """`method target` from this test's process (a host process of uid 0: the creator)."""
    conn = UnixHTTPConnection(str(socket_dir / "gw.sock"))
    try:
        payload = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        conn.request(method, target, body=payload, headers=headers)
        answer = conn.getresponse()
        raw = answer.read()
    finally:
        conn.close()
    try:
        return answer.status, json.loads(raw)
    except ValueError:
        return answer.status, raw.decode(errors="replace")


def _bound_container(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup
) -> tuple[str, int]:
    """A running container the lister binding names: its full ID and main PID."""
    name = f"dgt-victim-{os.urandom(4).hex()}"
    cleanup.container(name)
    daemon.docker(
        *("run", "-d", "--name", name, "--label", "dockgate.role=lister", busybox_image),
        *("sleep", "300"),
    )
    inspected = daemon.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", name).stdout.split()
    return inspected[0].decode(), int(inspected[1])


# ----- a host process in a cgroup named like a container ---------------------------------------

UNIFIED = pathlib.Path("/sys/fs/cgroup/unified")  # cgroup v2 of a hybrid host
V2_ROOT = pathlib.Path("/sys/fs/cgroup")


def _cgroup2_root() -> pathlib.Path | None:
    for root in (V2_ROOT, UNIFIED):
        if (root / "cgroup.controllers").exists():
            return root
    return None


def _delegated_cgroup(owner: int) -> pathlib.Path:
    """A cgroup v2 subtree handed to `owner`, as systemd delegates `user@UID.service` to
    every logged-in user (Delegate=yes: the directory, cgroup.procs, cgroup.threads and
    cgroup.subtree_control are chowned to the user)."""
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup v2 hierarchy to delegate")
    path = root / f"dgt-user-{os.urandom(4).hex()}"
    path.mkdir()
    for target in (path, path / "cgroup.procs", path / "cgroup.threads"):
        os.chown(target, owner, owner)
    subtree = path / "cgroup.subtree_control"
    if subtree.exists():
        os.chown(subtree, owner, owner)
    return path


def _remove_cgroup(path: pathlib.Path) -> None:
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir():
            for _ in range(50):
                try:
                    child.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
    for _ in range(50):
        try:
            path.rmdir()
        except OSError:
            time.sleep(0.1)
        else:
            return


# Run as uid 65534 inside its delegated cgroup DELEG: read the victim container's ID from
# /proc/CPID/cgroup (world-readable), make a sub-cgroup named after it, move itself in, then
# call dockgate. Every step is one an unprivileged user with a systemd session can take
# (`systemd-run --user --scope --unit docker-<ID>` makes the same path under app.slice).
_IMPOSTOR = r"""
set -e
ID=$(grep -o '[0-9a-f]\{64\}' /proc/$CPID/cgroup | head -n 1)
mkdir "$DELEG/docker-$ID.scope"
echo $$ > "$DELEG/docker-$ID.scope/cgroup.procs"
exec "$UNIXGET" "$SOCK" GET /v1.41/containers/json
"""


@pytest.mark.xfail(
    strict=True,
    reason="an unprivileged host process in its own delegated cgroup named docker-<ID>.scope "
    "is taken for container <ID> and gets its binding's policy",
)
def test_a_host_process_in_a_cgroup_named_after_a_container_is_not_that_container(  # noqa: PLR0917 - fixtures
    daemon: PrivateDaemon,
    busybox_image: str,
    socket_dir: pathlib.Path,
    unixget: pathlib.Path,
    peer_gateway: Gateway,
    cleanup: Cleanup,
) -> None:
    """uid 65534 (no binding: the anonymous policy, ping only) names a sub-cgroup of the
    cgroup delegated to it after a running container the lister binding names. It must stay
    `uid:65534`, refused the list; the gateway takes it for the container and lists."""
    container_id, container_pid = _bound_container(daemon, busybox_image, cleanup)
    delegated = _delegated_cgroup(NOBODY)
    try:
        # like systemd starting the user's session in user@UID.service: root puts it there,
        # everything after runs as the user
        script = (
            f'echo $$ > "{delegated}/cgroup.procs"; '
            f'exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups sh -c "$IMPOSTOR"'
        )
        env = {
            "IMPOSTOR": _IMPOSTOR,
            "CPID": str(container_pid),
            "DELEG": str(delegated),
            "UNIXGET": str(unixget),
            "SOCK": str(socket_dir / "gw.sock"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        }
        proc = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, timeout=60, check=False
        )
    finally:
        _remove_cgroup(delegated)
    assert proc.returncode == 0, proc.stderr
    status, body = _answer(proc.stdout)
    time.sleep(0.2)  # (the access log line is written after the answer)
    logged = [line for line in peer_gateway.stdout() if "/containers/json" in line]
    assert status == 403, (status, logged[-1:], container_id)
    assert isinstance(body, dict) and 'policy "anon"' in body["message"], body


def test_an_anonymous_host_process_gets_the_anonymous_policy(
    socket_dir: pathlib.Path, unixget: pathlib.Path, peer_gateway: Gateway
) -> None:
    """The control for the attack above: uid 65534 in no container is refused the list by
    the anonymous policy."""
    proc = subprocess.run(
        [str(unixget), str(socket_dir / "gw.sock"), "GET", "/v1.41/containers/json"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        capture_output=True,
        timeout=60,
        check=True,
    )
    status, body = _answer(proc.stdout)
    assert status == 403
    assert isinstance(body, dict)
    assert body["message"].startswith('dockgate: no rule of policy "anon" allows ContainerList')


def test_the_cgroup_of_this_machines_containers_is_what_the_impostor_copies(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup
) -> None:
    """The path shape the impostor above copies is one auth/cgroup.py accepts as a
    container's (so the finding does not hang on this machine's cgroup driver)."""
    container_id, _ = _bound_container(daemon, busybox_image, cleanup)
    assert container_ids(f"0::/user.slice/user@1000.service/app.slice/docker-{container_id}.scope")
    assert container_ids(f"0::/dgt-user-x/docker-{container_id}.scope") == (container_id,)
