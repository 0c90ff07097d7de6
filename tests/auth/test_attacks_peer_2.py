"""Attacks on the calling container as the identity, second round (issue 16's fixes), against
the real daemon.

The same gateway and callers as tests/auth/test_attacks_peer.py (its fixtures and helpers are
reused): the creator (host root) may create, start and commit, with the peer_labels guardrail;
a container labelled dockgate.role=lister is the lister. Findings are `xfail(strict)` tests
that assert what should happen; attacks that held are plain tests.

Covered: the image peer_labels judges versus the one the create gets (a tag moved in
between), creates in or below a bound container's cgroup or in its PID namespace, the
number of look-ups a host user's cgroup path costs, and a process of a known container that
is not in its main process's cgroup (taken for a host process).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse

import pytest
from test_attacks_peer import (  # the first round's gateway and helpers
    SLOW_POLICY,
    _answer,
    _bound_container,
    _caller_body,
    _create,
    _delegated_cgroup,
    _remove_cgroup,
    _request,
    _run_caller,
    peer_gateway,
    socket_dir,
    unixget,
)

from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running

pytestmark = pytest.mark.daemon

NOBODY = 65534

__all__ = ["peer_gateway", "socket_dir", "unixget"]  # (fixtures: used by name)


def _labels(daemon: PrivateDaemon, ref: str) -> dict[str, str]:
    answer = daemon.docker("inspect", "-f", "{{json .Config.Labels}}", ref, check=False)
    if answer.returncode != 0:
        return {}
    return json.loads(answer.stdout) or {}


# ----- the image's labels, judged on a name the daemon resolves again at create --------------


@pytest.mark.usefixtures("unixget", "peer_gateway")
def test_an_image_retagged_during_the_create_does_not_label_the_container(
    daemon: PrivateDaemon, busybox_image: str, socket_dir: pathlib.Path, cleanup: Cleanup
) -> None:
    """The creator commits, again and again, to one tag an unlabelled image and one labelled
    dockgate.role=lister (ImageCommit is allowed it), while it creates containers from that
    tag. A create whose look-up saw the unlabelled image but whose daemon resolved the labelled
    one makes a container labelled as the lister, which then lists: no container created by
    the creator may carry the label."""
    base = f"dgt-base-{os.urandom(4).hex()}"
    status, body = _create(socket_dir, base, {"Image": busybox_image, "Cmd": ["true"]}, cleanup)
    assert status == 201, body
    repo = f"dgt-atk-flip-{os.urandom(4).hex()}"
    cleanup.image(f"{repo}:flip")
    stop = threading.Event()
    commits: list[int] = []

    def flip() -> None:
        labelled = False
        while not stop.is_set():
            query = {"container": base, "repo": repo, "tag": "flip"}
            if labelled:
                query["changes"] = "LABEL dockgate.role=lister"
            done, _ = _request(socket_dir, "POST", f"/v1.41/commit?{urllib.parse.urlencode(query)}")
            commits.append(done)
            labelled = not labelled

    status, body = _request(
        socket_dir,
        "POST",
        f"/v1.41/commit?{urllib.parse.urlencode({'container': base, 'repo': repo, 'tag': 'flip'})}",
    )
    assert status == 201, body
    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    made: list[str] = []
    won = ""
    refused = 0
    deadline = time.monotonic() + 12
    try:
        while time.monotonic() < deadline and not won:
            name = f"dgt-flip-{os.urandom(4).hex()}"
            status, body = _request(
                socket_dir,
                "POST",
                f"/v1.41/containers/create?name={name}",
                _caller_body(f"{repo}:flip", socket_dir),
            )
            if status == 403:
                refused += 1
                continue
            assert status == 201, body
            made.append(name)
            if _labels(daemon, name).get("dockgate.role") == "lister":
                won = name
    finally:
        stop.set()
        flipper.join(30)
        losers = [name for name in made if name != won]
        if losers:
            daemon.docker("rm", "-f", *losers, check=False)
    if won:
        cleanup.container(won)
        answer = _run_caller(daemon, socket_dir, won)
        assert answer[0] != 200, (answer, len(made), refused, len(commits))
    assert not won, (won, len(made), refused, len(commits))


# ----- a created container placed in a bound container's cgroup ------------------------------


def _victim_cgroup(daemon: PrivateDaemon, pid: int) -> str:
    """The bound container's cgroup (its main process's, in the first hierarchy that names
    it): what `--cgroup-parent` would put a new container below."""
    text = pathlib.Path(f"/proc/{pid}/cgroup").read_text()
    for line in text.splitlines():
        path = line.split(":", 2)[2]
        if len(path) > 64:
            return path
    raise AssertionError(text)


@pytest.mark.parametrize("field", ["CgroupParent", "Cgroup", "PidMode"])
@pytest.mark.usefixtures("unixget", "peer_gateway")
def test_a_create_below_or_in_a_bound_containers_cgroup_is_refused(
    daemon: PrivateDaemon,
    busybox_image: str,
    socket_dir: pathlib.Path,
    cleanup: Cleanup,
    field: str,
) -> None:
    """Held: the creator asks for a container whose cgroup is below a running lister's
    (`HostConfig.CgroupParent` = its cgroup: every process of the new container would be
    `within` it, its ID named first) or is the lister's (`HostConfig.Cgroup` =
    `container:<ID>`), or one in its PID namespace (`HostConfig.PidMode` = `container:<ID>`:
    its root could take the lister's connected socket, pidfd_getfd): all are refused at
    create."""
    container_id, pid = _bound_container(daemon, busybox_image, cleanup)
    value = _victim_cgroup(daemon, pid) if field == "CgroupParent" else f"container:{container_id}"
    body = _caller_body(busybox_image, socket_dir)
    host = body["HostConfig"]
    assert isinstance(host, dict)
    host[field] = value
    name = f"dgt-cgparent-{os.urandom(4).hex()}"
    status, answer = _create(socket_dir, name, body, cleanup)
    assert status == 403, (status, answer)
    assert isinstance(answer, dict), answer
    expected = field if field != "PidMode" else "joining another container's pid namespace"
    assert expected in answer["message"], answer


# ----- look-ups a host user's cgroup path makes the gateway ask ------------------------------


class _CountingProxy:
    """A unix-socket relay to the real daemon that counts the container look-ups sent."""

    def __init__(self, daemon_socket: str, path: pathlib.Path) -> None:
        self.lookups = 0
        self._daemon = daemon_socket
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self._daemon)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    self.lookups += data.count(b"GET /containers/")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            src.close()  # (each socket is one pump's source)

    def close(self) -> None:
        self._server.close()


# As uid 65534 in its delegated cgroup: a chain of DEPTH nested cgroups, each named by a fresh
# random 64-hex "container ID" (no container of the daemon's), then one call.
_CHAIN = r"""
set -e
cd "$DELEG"
i=0
while [ $i -lt "$DEPTH" ]; do
    id=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    mkdir "$id"
    cd "$id"
    i=$((i + 1))
done
echo $$ > cgroup.procs
exec "$UNIXGET" "$SOCK" GET /_ping
"""


def test_a_host_users_cgroup_path_cannot_make_the_gateway_ask_about_many_containers(
    daemon: PrivateDaemon, unixget: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """uid 65534 (the anonymous policy: ping only) nests 40 cgroups in the subtree delegated to
    it, each named by a random 64-hex ID, and pings once: the gateway asks the daemon about
    each ID before refusing the caller as in an unknown container. One connection should cost
    a bounded, small number of look-ups (the first unknown ID already decides the refusal)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="dgstorm-", dir="/tmp"))
    directory.chmod(0o755)
    policy = tmp_path / "storm.yaml"
    policy.write_text(SLOW_POLICY)
    proxy = _CountingProxy(daemon.host.removeprefix("unix://"), directory / "daemon.sock")
    delegated = _delegated_cgroup(NOBODY)
    try:
        gateway = Gateway(
            f"unix://{directory / 'daemon.sock'}",
            *("--socket-mode", "666"),
            listen=f"unix://{directory / 'gw.sock'}",
            policy=str(policy),
        )
        with running(gateway, "the gateway behind a counting relay"):
            before = proxy.lookups
            script = (
                f'echo $$ > "{delegated}/cgroup.procs"; '
                f'exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups sh -c "$CHAIN"'
            )
            env = {
                "CHAIN": _CHAIN,
                "DEPTH": "40",
                "DELEG": str(delegated),
                "UNIXGET": str(unixget),
                "SOCK": str(directory / "gw.sock"),
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            }
            proc = subprocess.run(
                ["sh", "-c", script], env=env, capture_output=True, timeout=60, check=False
            )
            asked = proxy.lookups - before
    finally:
        proxy.close()
        _remove_cgroup(delegated)
        shutil.rmtree(directory, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    status, body = _answer(proc.stdout)
    assert status == 403, (status, body)
    assert isinstance(body, dict) and "does not know" in body["message"], body
    assert asked <= 4, asked


# ----- a process of a known container outside its main process's cgroup ---------------------


def _hierarchy_dir(controllers: str) -> pathlib.Path:
    """Where this host mounts the hierarchy a /proc/PID/cgroup line names."""
    if controllers == "":
        return UNIFIED if (UNIFIED / "cgroup.controllers").exists() else pathlib.Path(CGROUP_FS)
    return pathlib.Path(CGROUP_FS) / controllers.removeprefix("name=")


CGROUP_FS = "/sys/fs/cgroup"
UNIFIED = pathlib.Path(CGROUP_FS) / "unified"


def _move_main_below(pid: int) -> list[pathlib.Path]:
    """Move the container's main process into `init`, a sub-cgroup of its cgroup, in every
    hierarchy: what systemd as a container's PID 1 does first (init.scope). Returns the
    cgroups made."""
    made: list[pathlib.Path] = []
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        top = _hierarchy_dir(controllers)
        if not top.is_dir():
            pytest.skip(f"no mount of hierarchy {controllers!r} at {top}")
        where = top / path.lstrip("/") / "init"
        where.mkdir()
        made.append(where)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (where / name).exists():
                (where / name).write_text((where.parent / name).read_text())
        (where / "cgroup.procs").write_text(str(pid))
    return made


@pytest.mark.usefixtures("unixget", "peer_gateway")
def test_a_container_process_outside_its_main_process_cgroup_is_not_a_host_process(
    daemon: PrivateDaemon, busybox_image: str, socket_dir: pathlib.Path, cleanup: Cleanup
) -> None:
    """A running lister (root in it, no user namespace: uid 0 as on the host) whose main
    process sits in a sub-cgroup of the container's cgroup `init` (as systemd in a container
    puts itself); a process exec'd into it (runc joins the container's cgroup, above `init`)
    commits: it is in a container the daemon knows, so it must not be the host's uid 0, bound
    to `creator` (which may commit); it gets through to the daemon (404, no container x)."""
    name = f"dgt-sysd-{os.urandom(4).hex()}"
    cleanup.container(name)
    daemon.docker(
        *("run", "-d", "--name", name, "--label", "dockgate.role=lister"),
        *("-v", f"{socket_dir}:/dg:ro", busybox_image, "sleep", "300"),
    )
    pid = int(daemon.docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
    made = _move_main_below(pid)
    try:
        proc = daemon.docker(
            *("exec", name, "/dg/tools/unixget", "/dg/gw.sock"),
            *("POST", "/v1.41/commit?container=x"),
            check=False,
        )
    finally:
        daemon.docker("rm", "-f", name, check=False)
        for where in made:
            for _ in range(50):
                try:
                    where.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
    status, body = _answer(proc.stdout)
    assert status == 403, (status, body)
    assert isinstance(body, dict) and "not in its main process's cgroup" in body["message"], body


@pytest.mark.usefixtures("unixget", "peer_gateway")
def test_a_process_execd_into_a_bound_container_is_that_container(
    daemon: PrivateDaemon, busybox_image: str, socket_dir: pathlib.Path, cleanup: Cleanup
) -> None:
    """The control for the finding above: with the main process where docker put it, a
    process exec'd into the lister (root, as the host's root) is the lister, refused the
    commit by its policy, never the host's uid 0."""
    name = f"dgt-exec-{os.urandom(4).hex()}"
    cleanup.container(name)
    daemon.docker(
        *("run", "-d", "--name", name, "--label", "dockgate.role=lister"),
        *("-v", f"{socket_dir}:/dg:ro", busybox_image, "sleep", "300"),
    )
    proc = daemon.docker(
        *("exec", name, "/dg/tools/unixget", "/dg/gw.sock"),
        *("POST", "/v1.41/commit?container=x"),
    )
    status, body = _answer(proc.stdout)
    assert status == 403, (status, body)
    assert isinstance(body, dict), body
    assert body["message"].startswith('dockgate: no rule of policy "lister" allows ImageCommit')
