"""The policies under examples/policies/: each one validates, and each one does what its comments
say, through a real gateway in front of the session's dockerd.

The CI runner example makes the strongest claims ("the guardrails below keep every job container
away from the host"), so it is checked claim by claim with the docker CLI: what runs, runs (and
the container shows the no-new-privileges flag and the read-only cache it was promised), and what
is refused leaves no container behind on the daemon.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from dockgate.policy.loader import load_policy_file
from support.clients import Cleanup
from support.daemon import PrivateDaemon, run_docker
from support.gateway import Gateway, running
from support.paths import REPO
from support.rawhttp import dechunk, parse_head

EXAMPLES = REPO / "examples" / "policies"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".toml"))
IMAGE = "dockgate-test/busybox:latest"  # what the session's busybox_image fixture imports
RUN = uuid.uuid4().hex[:8]
SRC = REPO / "src"

# Daemon tests: about the gateway's policies, so not run with DOCKGATE_TEST_DIRECT=1.
GATEWAY_ONLY = pytest.mark.skipif(
    os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
    reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's policies",
)


def test_there_are_examples() -> None:
    """The directory holds the examples the README and docs/ point to (a rename would empty
    this test)."""
    names = {p.stem for p in EXAMPLE_FILES}
    assert {"ci-runner", "dashboard", "traefik", "portainer", "monitoring", "quickstart"} <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_validates(path: pathlib.Path) -> None:
    """`dockgate policy validate FILE` accepts every example, and the loader gives it a policy."""
    policies = load_policy_file(path)
    assert policies.policies, path
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "dockgate", "policy", "validate", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ----- every example, exercised with raw requests --------------------------------------------

# For each example: requests that its comments say are allowed, and some they say are not.
# (method, path, allowed). The identities example is reached over a unix socket, which its
# `sources` allow, as an anonymous caller (bound to its `health` policy).
EXERCISES: dict[str, list[tuple[str, str, bool]]] = {
    "ci-runner.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/containers/json", True),
        ("GET", "/images/json", True),
        ("GET", "/services", False),
        ("GET", "/secrets", False),
        ("POST", "/containers/prune", False),
        ("POST", "/swarm/init", False),
        ("GET", "/plugins", False),
    ],
    "dashboard.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/containers/json", True),
        ("GET", "/info", True),
        ("GET", "/containers/{c}/logs?stdout=1", False),
        ("GET", "/containers/{c}/export", False),
        ("POST", "/containers/{c}/stop", False),
    ],
    "homepage.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/containers/json", True),
        ("GET", "/containers/{c}/stats?stream=0", True),
        ("GET", "/containers/{c}/logs?stdout=1", False),
        ("GET", "/events?until=1", False),
        ("GET", "/containers/{c}/top", False),
    ],
    "identities.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/version", True),
        ("GET", "/containers/json", False),
    ],
    "monitoring.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/info", True),
        ("GET", "/containers/json", True),
        ("GET", "/containers/{c}/stats?stream=0", True),
        ("GET", "/containers/{c}/json", False),
        ("POST", "/containers/{c}/stop", False),
    ],
    "portainer.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/containers/json", True),
        ("GET", "/volumes", True),
        ("POST", "/swarm/init", False),
        ("POST", "/plugins/pull?remote=x", False),
    ],
    "quickstart.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/info", True),
        ("GET", "/containers/json", True),
        ("GET", "/images/{i}/json", True),
        ("POST", "/images/{i}/tag?repo=dgt-ex-moved&tag=1", False),  # image names are shared
        ("GET", "/volumes", True),
        ("GET", "/networks", True),
        ("GET", "/swarm", False),  # the join tokens
        ("GET", "/secrets", False),
        ("POST", "/swarm/leave", False),
        ("GET", "/plugins", False),
        ("POST", "/build", False),
        ("GET", "/debug/vars", False),
    ],
    "traefik.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/containers/json", True),
        ("GET", "/containers/{c}/json", True),
        ("GET", "/networks", True),
        ("POST", "/containers/{c}/stop", False),
        ("GET", "/containers/{c}/logs?stdout=1", False),
    ],
    # The proven `traefik` preset: only what the real Traefik's Docker provider asked for
    # (HEAD /_ping: a Go client sends GET only when HEAD fails).
    "traefik.toml": [
        ("HEAD", "/_ping", True),
        ("GET", "/containers/json", True),
        ("GET", "/containers/{c}/json", True),
        ("GET", "/networks", False),
        ("GET", "/services", False),
        ("POST", "/containers/{c}/stop", False),
    ],
    # Reached by this test's process, a host process of no bound uid: anonymous, health only.
    "shared-socket.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/version", True),
        ("GET", "/containers/json", False),
        ("POST", "/containers/{c}/stop", False),
    ],
    "watchtower.yaml": [
        ("GET", "/_ping", True),
        ("GET", "/containers/json", True),
        ("GET", "/images/{i}/json", True),
        ("POST", "/containers/{c}/exec", False),
        ("GET", "/volumes", False),
    ],
}


def test_every_example_has_exercises() -> None:
    """No example file escapes the exercise below."""
    assert {p.name for p in EXAMPLE_FILES} == set(EXERCISES)


@pytest.fixture(scope="module")
def target(daemon: PrivateDaemon, busybox_image: str) -> Iterator[str]:
    """A running container with a secret in its environment, straight on the daemon."""
    name = f"dgt-ex-target-{RUN}"
    daemon.docker(
        "run", "-d", "--name", name, "-e", f"SECRET=ex-{RUN}", busybox_image, "sleep", "600"
    )
    try:
        yield name
    finally:
        daemon.docker("rm", "-f", name, check=False)


def _unix_get(socket_path: str, method: str, path: str) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange (then close) over a unix socket: the status and the body."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(socket_path)
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return status, body


@pytest.mark.daemon
@GATEWAY_ONLY
@pytest.mark.parametrize("name", sorted(EXERCISES))
@pytest.mark.usefixtures("busybox_image")
def test_example_allows_and_denies_what_it_says(
    daemon: PrivateDaemon, target: str, tmp_path: pathlib.Path, name: str
) -> None:
    """Each example, run by a real gateway: what its comments allow answers as the daemon does;
    what they leave out gets dockgate's 403 (nothing of it reached the daemon)."""
    path = EXAMPLES / name
    socket_path = str(tmp_path / "gw.sock")
    with running(
        Gateway(daemon.host, listen=f"unix://{socket_path}", policy=path), f"the {name} gateway"
    ):
        for method, template, allowed in EXERCISES[name]:
            request_path = template.format(c=target, i=IMAGE)
            status, body = _unix_get(socket_path, method, request_path)
            what = f"{name}: {method} {request_path} -> {status} {body[:200]!r}"
            if allowed:
                assert status in (200, 204), what
            else:
                assert status == 403, what
                assert json.loads(body)["message"].startswith("dockgate: "), what


@pytest.mark.daemon
@GATEWAY_ONLY
@pytest.mark.usefixtures("busybox_image")
def test_traefik_example_hides_environment_values(
    daemon: PrivateDaemon, target: str, tmp_path: pathlib.Path
) -> None:
    """The Traefik example's claim: inspect shows the variable's name, never its value (which
    the daemon itself does return)."""
    secret = f"ex-{RUN}".encode()
    _, direct = _unix_get(str(daemon.socket_path), "GET", f"/containers/{target}/json")
    assert secret in direct
    socket_path = str(tmp_path / "gw.sock")
    with running(
        Gateway(daemon.host, listen=f"unix://{socket_path}", policy=EXAMPLES / "traefik.yaml"),
        "the traefik gateway",
    ):
        status, body = _unix_get(socket_path, "GET", f"/containers/{target}/json")
    assert status == 200
    assert secret not in body
    assert "SECRET=<redacted>" in json.loads(body)["Config"]["Env"]


# ----- the CI runner example, claim by claim -------------------------------------------------

CI_CACHE = pathlib.Path("/srv/ci-cache")  # the read-only cache the example allows
LIMITS = ("--memory", "1g", "--cpus", "1", "--security-opt", "no-new-privileges")


class Runner:
    """The docker CLI as a CI runner using the example through dockgate."""

    def __init__(self, daemon: PrivateDaemon, env: dict[str, str]) -> None:
        self.daemon = daemon
        self.env = env

    def docker(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return run_docker(self.env, *args)

    def refused(self, *run_args: str, reason: str) -> None:
        """`docker run --name X RUN_ARGS... IMAGE true` is refused with `reason`, and the
        daemon has no container X afterwards."""
        name = f"dgt-ci-refused-{uuid.uuid4().hex[:8]}"
        proc = self.docker("run", "--rm", "--name", name, *run_args, IMAGE, "true")
        stderr = proc.stderr.decode(errors="replace")
        assert proc.returncode != 0, stderr
        assert "dockgate: ContainerCreate denied by policy ci-runner" in stderr, stderr
        assert reason in stderr, stderr
        check = self.daemon.docker("container", "inspect", name, check=False)
        assert check.returncode != 0, f"the daemon has a container {name} after a refusal"


@pytest.fixture(scope="module")
def ci_cache() -> Iterator[str]:
    """/srv/ci-cache with a marker file (removed afterwards if this test made it)."""
    made = not CI_CACHE.exists()
    CI_CACHE.mkdir(parents=True, exist_ok=True)
    marker = CI_CACHE / f"marker-{RUN}"
    marker.write_text(f"cache-{RUN}\n")
    try:
        yield marker.name
    finally:
        marker.unlink(missing_ok=True)
        if made:
            shutil.rmtree(CI_CACHE, ignore_errors=True)


@pytest.fixture(scope="module")
def runner(
    daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    del busybox_image
    directory = tmp_path_factory.mktemp("ci-runner")
    (directory / "config.json").write_text("{}")
    with running(
        Gateway(daemon.host, policy=EXAMPLES / "ci-runner.yaml"), "the ci-runner gateway"
    ) as gw:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env |= {
            "DOCKER_HOST": gw.url,
            "DOCKER_CONFIG": str(directory),
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
        }
        yield Runner(daemon, env)


@pytest.mark.daemon
@GATEWAY_ONLY
def test_ci_runner_job_runs_with_its_promises(runner: Runner, ci_cache: str) -> None:
    """A job container with the runner's settings runs; it has no-new-privileges set, its memory
    limit, and reads (only reads) the shared cache."""
    proc = runner.docker(
        "run", "--rm", *LIMITS, "-v", f"{CI_CACHE}:/cache:ro", IMAGE,
        "sh", "-c", f"grep NoNewPrivs /proc/self/status; cat /cache/{ci_cache}; "
        "touch /cache/x 2>/dev/null && echo writable || echo read-only",
    )  # fmt: skip
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "NoNewPrivs:\t1" in out
    assert f"cache-{RUN}" in out
    assert "read-only" in out


@pytest.mark.daemon
@GATEWAY_ONLY
@pytest.mark.parametrize(
    ("run_args", "reason"),
    [
        (("--privileged",), "privileged containers are not allowed"),
        (("-v", f"{CI_CACHE}:/cache"), f"host path {CI_CACHE} (Binds) must be mounted read-only"),
        (("-v", "/:/host:ro"), "host path / (Binds) is not allowed"),
        (("--network", "host"), "the host's network namespace is not allowed"),
        (("--pid", "host"), "the host's pid namespace is not allowed"),
        (("--cap-add", "SYS_ADMIN"), "adding capability CAP_SYS_ADMIN is not allowed"),
        (("--device", "/dev/null"), "host devices are not allowed"),
        (("--security-opt", "seccomp=unconfined"), "security option"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_ci_runner_keeps_jobs_away_from_the_host(
    runner: Runner, ci_cache: str, run_args: tuple[str, ...], reason: str
) -> None:
    """Each way to the host the example's comment names is refused, even with the runner's
    limits, and the daemon keeps no container."""
    del ci_cache
    runner.refused(*LIMITS, *run_args, reason=reason)


@pytest.mark.daemon
@GATEWAY_ONLY
@pytest.mark.parametrize(
    ("run_args", "reason"),
    [
        (("--cpus", "1", "--security-opt", "no-new-privileges"), "a memory limit"),
        (("--memory", "8g", "--cpus", "1", "--security-opt", "no-new-privileges"), "memory"),
        (("--memory", "1g", "--security-opt", "no-new-privileges"), "a CPU limit"),
        (("--memory", "1g", "--cpus", "4", "--security-opt", "no-new-privileges"), "CPU"),
        (("--memory", "1g", "--cpus", "1"), "no-new-privileges is required"),
    ],
    ids=["no-memory", "too-much-memory", "no-cpus", "too-many-cpus", "no-nnp"],
)
def test_ci_runner_requires_limits_and_no_new_privileges(
    runner: Runner, run_args: tuple[str, ...], reason: str
) -> None:
    """Every job container needs a memory limit of at most 4g, at most 2 CPUs, and the
    no-new-privileges option."""
    runner.refused(*run_args, reason=reason)


@pytest.mark.daemon
@GATEWAY_ONLY
def test_ci_runner_exec_and_build_work_but_privileged_exec_does_not(
    runner: Runner, cleanup: Cleanup
) -> None:
    """Jobs exec into their containers and build images; a privileged exec is refused."""
    name = cleanup.container(f"dgt-ci-job-{RUN}")
    proc = runner.docker("run", "-d", "--name", name, *LIMITS, IMAGE, "sleep", "300")
    assert proc.returncode == 0, proc.stderr
    proc = runner.docker("exec", name, "echo", "in-job")
    assert proc.returncode == 0 and proc.stdout.strip() == b"in-job", proc.stderr
    proc = runner.docker("exec", "--privileged", name, "true")
    assert proc.returncode != 0
    assert b"privileged exec is not allowed" in proc.stderr
    tag = cleanup.image(f"dockgate-test/ci-built:{RUN}")
    docker = shutil.which("docker") or "docker"
    dockerfile = f"FROM {IMAGE}\nRUN echo built > /built\n".encode()
    # max_memory/max_cpus hold a build's RUN steps too: without limits it is refused.
    unlimited = subprocess.run(
        [docker, "build", "-q", "-t", tag, "-"],
        env=runner.env,
        input=dockerfile,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert unlimited.returncode != 0
    assert b"--memory" in unlimited.stderr, unlimited.stderr
    assert runner.daemon.docker("image", "inspect", tag, check=False).returncode != 0
    limits = ("--memory", "1g", "--cpu-quota", "100000", "--cpu-period", "100000")
    build = subprocess.run(
        [docker, "build", *limits, "-q", "-t", tag, "-"],
        env=runner.env,
        input=dockerfile,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    assert runner.daemon.docker("image", "inspect", tag, check=False).returncode == 0


@pytest.mark.daemon
@GATEWAY_ONLY
@pytest.mark.parametrize(
    "args",
    [
        ("system", "prune", "-f"),
        ("service", "ls"),
        ("secret", "ls"),
        ("swarm", "init"),
        ("plugin", "ls"),
    ],
    ids=" ".join,
)
def test_ci_runner_cannot_touch_the_cluster_or_prune(runner: Runner, args: tuple[str, ...]) -> None:
    """Cluster, plugins and host-wide prunes are denied by the example's rules."""
    proc = runner.docker(*args)
    assert proc.returncode != 0
    assert b"dockgate: " in proc.stderr and b"denied" in proc.stderr, proc.stderr
