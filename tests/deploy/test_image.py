"""The container image, built for real: the repository's Dockerfile on the repository root
(tests/support/image.py: a Debian base made here with debootstrap as BASE, since no registry is
reachable, and the offline WHEELS argument, since no PyPI is), run on the private daemon with
the daemon's socket mounted, a read-only root file system, and its HEALTHCHECK.

Claims checked: the gateway process runs as uid 65532 with the socket's group; a read-only root
works; /readyz answers and Docker reports the container healthy; the API answers through it;
started as another user without the socket's group it says which --group-add to pass; the
final stage holds dockgate's venv and nothing of the build (no pip, no source)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from support.daemon import PrivateDaemon, free_tcp_port
from support.image import REPO

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(900)]


def _run(daemon: PrivateDaemon, image: str, *args: str) -> str:
    name = f"dgt-img-{uuid.uuid4().hex[:8]}"
    daemon.docker(
        "run", "-d", "--name", name, "--network", "host", "--read-only",
        "-v", f"{daemon.socket_path}:/var/run/docker.sock", *args, image,
    )  # fmt: skip
    return name


def _get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@contextlib.contextmanager
def _serving(daemon: PrivateDaemon, image: str, *args: str) -> Iterator[tuple[str, int]]:
    """The image run with ``args``, the API and admin listeners on free loopback ports, once
    /readyz answers; yields the container's name and the API port, removes it afterwards."""
    api, admin = free_tcp_port(), free_tcp_port()
    name = _run(
        daemon, image, *args,
        "-e", f"DOCKGATE_LISTEN=tcp://127.0.0.1:{api}",
        "-e", f"DOCKGATE_ADMIN_LISTEN=tcp://127.0.0.1:{admin}",
    )  # fmt: skip
    try:
        ready = _wait(lambda: _get(admin, "/readyz")[0] == 200, 60)
        assert ready, daemon.docker("logs", name, check=False).stderr
        yield name, api
    finally:
        daemon.docker("rm", "-f", name, check=False)


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def test_the_image_runs_unprivileged_read_only_and_healthy(
    daemon: PrivateDaemon, dockgate_image: str
) -> None:
    api, admin = free_tcp_port(), free_tcp_port()
    name = _run(
        daemon, dockgate_image,
        "-e", f"DOCKGATE_LISTEN=tcp://127.0.0.1:{api}",
        "-e", f"DOCKGATE_ADMIN_LISTEN=tcp://127.0.0.1:{admin}",
        "--health-cmd",
        "python3 -c \"import sys,urllib.request;"
        f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{admin}/readyz',timeout=4).status!=200)\"",
        "--health-interval", "2s",
    )  # fmt: skip
    try:
        assert _wait(lambda: _get(admin, "/readyz")[0] == 200, 60), daemon.docker(
            "logs", name, check=False
        ).stderr
        status, body = _get(api, "/_ping")
        assert (status, body) == (200, b"OK")
        state = json.loads(daemon.docker("inspect", name).stdout)[0]
        # The container's main process, seen from the host: the gateway itself, not a root
        # parent (the entrypoint drops privileges and runs dockgate in the same process).
        status = pathlib.Path(f"/proc/{state['State']['Pid']}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split()[:2] == ["65532", "65532"], fields["Uid"]
        assert fields["Gid"].split()[0] == "65532"
        assert str(daemon.socket_path.stat().st_gid) in fields["Groups"].split()
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        assert _wait(
            lambda: (
                json.loads(daemon.docker("inspect", name).stdout)[0]["State"]["Health"]["Status"]
                == "healthy"
            ),
            60,
        )
    finally:
        daemon.docker("rm", "-f", name, check=False)


def test_the_final_stage_is_the_venv_without_pip_or_the_build(
    daemon: PrivateDaemon, dockgate_image: str
) -> None:
    """`python3` on the image's PATH is the venv's, which has dockgate and not pip (uninstalled
    in the build stage); the source copied into the build stage did not come along. Would fail
    on the old image (wheels unpacked into /opt/dockgate/lib, run by the system python3)."""
    probe = (
        "import importlib.util, json, os, sys; print(json.dumps(["
        "sys.prefix, importlib.util.find_spec('dockgate').origin,"
        "importlib.util.find_spec('pip') is None, os.path.exists('/build')]))"
    )
    out = daemon.docker(
        "run", "--rm", "--read-only", "--entrypoint", "python3", dockgate_image, "-c", probe
    ).stdout
    prefix, origin, no_pip, build_left = json.loads(out)
    assert prefix == "/opt/dockgate"
    assert origin.startswith("/opt/dockgate/lib/python3.") and origin.endswith(
        "/site-packages/dockgate/__init__.py"
    )
    assert no_pip is True
    assert build_left is False


def test_another_user_without_the_socket_group_is_told_what_to_add(
    daemon: PrivateDaemon, dockgate_image: str
) -> None:
    group = daemon.socket_path.stat().st_gid
    name = _run(
        daemon, dockgate_image, "--user", "1000:1000", "-e", "DOCKGATE_LISTEN=tcp://127.0.0.1:0"
    )
    try:
        assert _wait(
            lambda: not json.loads(daemon.docker("inspect", name).stdout)[0]["State"]["Running"],
            30,
        )
        logs = daemon.docker("logs", name).stderr.decode()
        assert f"--group-add {group}" in logs, logs
    finally:
        daemon.docker("rm", "-f", name, check=False)


def _rewrite_unseen(path: pathlib.Path, text: str) -> None:
    """Rewrite ``path`` in place with ``text`` of the same size and put its mtime back: the
    file watcher's stamp (inode, size, mtime) stays as it was, so only SIGHUP can load it."""
    before = path.stat()
    data = text.encode()
    assert len(data) == before.st_size
    with path.open("r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _same_size(*texts: str) -> list[str]:
    width = max(len(t) for t in texts)
    return [t + "#" * (width - len(t)) + "\n" for t in texts]


def test_sighup_to_the_container_reloads_and_a_bad_file_keeps_the_old_policy(
    daemon: PrivateDaemon, dockgate_image: str, tmp_path: pathlib.Path
) -> None:
    """The single-host set-up of docs/deploy.md: the policy in a host directory mounted read-only;
    edit it, then `docker kill --signal HUP`."""
    closed, opened, broken = _same_size(
        "version: 1\npolicies: {p: {rules: [{allow: {sections: [ping, version]}}]}}\n",
        "version: 1\npolicies: {p: {rules: [{allow: {sections: [ping, version, containers]}}]}}\n",
        "version: 1\npolicies: {p: {rules: [{allow: {sections: [nonsense]}}]}}\n",
    )
    conf = tmp_path / "conf"
    conf.mkdir(mode=0o755)
    policy = conf / "policy.yaml"
    policy.write_text(closed)
    policy.chmod(0o644)
    with _serving(
        daemon, dockgate_image,
        "-v", f"{conf}:/etc/dockgate:ro", "-e", "DOCKGATE_POLICY=/etc/dockgate/policy.yaml",
    ) as (name, api):  # fmt: skip
        assert _get(api, "/v1.41/containers/json")[0] == 403
        # A broken file, then SIGHUP: refused with the reason, the old policy stays.
        _rewrite_unseen(policy, broken)
        daemon.docker("kill", "--signal", "HUP", name)
        assert _wait(lambda: "nonsense" in daemon.docker("logs", name).stderr.decode(), 10)
        assert _get(api, "/v1.41/containers/json")[0] == 403
        assert _get(api, "/_ping") == (200, b"OK")
        # Unseen by the watcher, so only the signal can make this one count.
        _rewrite_unseen(policy, opened)
        time.sleep(3)  # longer than the watcher's interval: it must not have noticed
        assert _get(api, "/v1.41/containers/json")[0] == 403
        daemon.docker("kill", "--signal", "HUP", name)
        assert _wait(lambda: _get(api, "/v1.41/containers/json")[0] == 200, 10)
        assert json.loads(daemon.docker("inspect", name).stdout)[0]["State"]["Running"]


def test_tecnativa_variables_work_in_the_image(daemon: PrivateDaemon, dockgate_image: str) -> None:
    """docker-socket-proxy's switches, unchanged: CONTAINERS=1 opens container reads, and
    images stay closed (as with Tecnativa's defaults)."""
    with _serving(daemon, dockgate_image, "-e", "CONTAINERS=1") as (_, api):
        status, body = _get(api, "/v1.41/containers/json")
        assert status == 200 and isinstance(json.loads(body), list)
        assert _get(api, "/v1.41/images/json")[0] == 403


def test_the_entrypoint_finds_the_socket_the_command_line_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In process: `--upstream` on the command line wins over the variables, as in dockgate."""
    spec = importlib.util.spec_from_file_location("entrypoint", REPO / "deploy" / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    entrypoint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entrypoint)
    monkeypatch.setenv("DOCKGATE_UPSTREAM", "unix:///from/env.sock")
    assert entrypoint._socket_path(["serve"]) == "/from/env.sock"
    assert entrypoint._socket_path(["serve", "--upstream", "unix:///a.sock"]) == "/a.sock"
    assert entrypoint._socket_path(["serve", "--upstream=unix:///b.sock"]) == "/b.sock"
    assert entrypoint._socket_path(["serve", "--upstream", "tcp://10.0.0.1:2375"]) is None
    monkeypatch.delenv("DOCKGATE_UPSTREAM")
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert entrypoint._socket_path(["serve"]) == "/var/run/docker.sock"
