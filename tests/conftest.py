"""Shared fixtures: one private Docker daemon per session, the busybox image, the gateway.

``DOCKGATE_TEST_DIRECT=1`` points the ``gateway`` fixture straight at the daemon's own TCP port
instead of a dockgate process: the same tests then check themselves (and serve as a differential
baseline) without the gateway.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dockgate.relay import phase as relay_phase
from support.clients import Cleanup, DirectEndpoint, DockerCLI, DockerPopen, GatewayLike
from support.daemon import PrivateDaemon, free_tcp_port, run_docker
from support.gateway import ILLEGAL_MOVES, Gateway, running
from support.image import build_dockgate_image
from support.procs import stop_process

DIRECT = os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0")

# Every gateway started by the tests (they inherit the environment) raises on a move between
# connection phases that relay/phase.py's table does not allow, and prints it; the
# `no_illegal_phase_moves` fixture below fails the test during which one was printed.
os.environ.setdefault("DOCKGATE_STRICT_PHASES", "1")
# Connections built in-process too (the module read the variable when imported, above).
relay_phase.STRICT = True


@pytest.fixture(autouse=True)
def no_illegal_phase_moves() -> Iterator[None]:
    """Fail a test during which a gateway made an illegal phase move (relay/phase.py)."""
    ILLEGAL_MOVES.clear()
    yield
    moves, ILLEGAL_MOVES[:] = list(ILLEGAL_MOVES), []
    if moves:
        pytest.fail("illegal phase moves in the gateway:\n" + "\n".join(moves))


@pytest.fixture(scope="session")
def daemon() -> Iterator[PrivateDaemon]:
    """A private dockerd for the whole session (its socket, data and exec roots under /tmp/dg-*)."""
    if os.geteuid() != 0:
        pytest.fail("the daemon tests need root (they start a private dockerd)")
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.fail("dockerd/docker not found: run scripts/test.sh, which installs docker.io")
    base = pathlib.Path(tempfile.mkdtemp(prefix="dg-", dir="/tmp"))
    d = PrivateDaemon(base, tcp_port=free_tcp_port() if DIRECT else None)
    try:
        d.start()
    except Exception:
        d.cleanup()
        raise
    try:
        yield d
    finally:
        d.cleanup()


@pytest.fixture(scope="session")
def busybox_image(daemon: PrivateDaemon) -> str:
    """Tag of a tiny image imported from the host's static busybox."""
    return daemon.make_busybox_image()


@pytest.fixture(scope="session")
def dockgate_image(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> str:
    """dockgate's container image, built on `daemon` from the repository's Dockerfile."""
    return build_dockgate_image(daemon, tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="session")
def gateway(daemon: PrivateDaemon) -> Iterator[GatewayLike]:
    """The endpoint under test: a dockgate process in front of `daemon` (or dockerd, if DIRECT)."""
    if DIRECT:
        assert daemon.tcp_host is not None
        port = int(daemon.tcp_host.rsplit(":", 1)[1])
        yield DirectEndpoint(url=daemon.tcp_host, port=port, http_base=f"http://127.0.0.1:{port}")
        return
    with running(Gateway(daemon.host), "the session's gateway") as gw:
        yield gw


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failure, attach the tail of the gateway's own output to the report."""
    report = yield
    if report.failed:
        gw = getattr(item, "funcargs", {}).get("gateway")
        if isinstance(gw, Gateway):
            tail = "\n".join(gw.output().splitlines()[-60:])
            report.sections.append(("dockgate output (last 60 lines)", tail))
    return report


@pytest.fixture(scope="session")
def client_config_dir() -> Iterator[pathlib.Path]:
    """A private DOCKER_CONFIG so no user config, context or credential helper interferes."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="dg-cfg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def client_env(gateway: GatewayLike, client_config_dir: pathlib.Path) -> dict[str, str]:
    """Environment for a docker CLI that talks to the endpoint under test."""
    env = os.environ.copy()
    for key in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_TLS"):
        env.pop(key, None)
    env["DOCKER_HOST"] = gateway.url
    env["DOCKER_BUILDKIT"] = "0"
    env["DOCKER_CONFIG"] = str(client_config_dir)
    env["DOCKER_CLI_HINTS"] = "false"
    return env


@pytest.fixture
def docker_cli(client_env: dict[str, str]) -> DockerCLI:
    """Run the docker CLI through the endpoint under test; raises with its output on failure."""

    def run(
        *args: str,
        input: bytes | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        proc = run_docker(client_env, *args, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
            )
        return proc

    return run


@pytest.fixture
def docker_popen(client_env: dict[str, str]) -> Iterator[DockerPopen]:
    """Start a long-running docker CLI (stdout/stderr piped) through the endpoint under test.

    Every process started this way is terminated (then killed) when the test ends.
    """
    docker_bin = shutil.which("docker") or "docker"
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [docker_bin, *args],
            env=client_env,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            stop_process(proc)


@pytest.fixture
def sdk(gateway: GatewayLike) -> Iterator[Any]:
    """A Docker SDK client (API version negotiated) talking to the endpoint under test."""
    import docker  # noqa: PLC0415 - only the daemon tests need the SDK

    client = docker.DockerClient(base_url=gateway.url, version="auto", timeout=120)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Names unique to this run: ``unique("ctr")`` -> ``dgt-ctr-1a2b3c4d``."""

    def make(prefix: str) -> str:
        return f"dgt-{prefix}-{uuid.uuid4().hex[:10]}"

    return make


@pytest.fixture
def cleanup(daemon: PrivateDaemon) -> Iterator[Cleanup]:
    """Register containers, images, volumes and networks to remove after the test."""
    c = Cleanup(daemon)
    try:
        yield c
    finally:
        c.run()
