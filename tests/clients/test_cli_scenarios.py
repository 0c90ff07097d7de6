"""The real docker CLI, pointed at the gateway (DOCKER_HOST=tcp://...), against a real daemon.

Each test's docstring states the claim it checks. Everything a test creates is removed by the
``cleanup`` fixture straight through the daemon, so tests are independent of each other.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator

import pexpect
import pytest

from support.clients import Cleanup, DockerCLI, DockerPopen
from support.daemon import PrivateDaemon, free_tcp_port
from support.gateway import Gateway
from support.streams import LineReader, wait_for

pytestmark = pytest.mark.daemon

Unique = Callable[[str], str]


def _out(proc: subprocess.CompletedProcess[bytes]) -> str:
    return proc.stdout.decode(errors="replace")


def _run_detached(
    docker_cli: DockerCLI,
    cleanup: Cleanup,
    image: str,
    name: str,
    *command: str,
    interactive: bool = False,
) -> str:
    """Start a detached container (``-i`` if ``interactive``) running ``command``; returns its
    id."""
    options = ("-d", "-i") if interactive else ("-d",)
    cid = _out(docker_cli("run", *options, "--name", name, image, *command)).strip()
    cleanup.container(name)
    return cid


def _run_sleeper(docker_cli: DockerCLI, cleanup: Cleanup, image: str, name: str) -> str:
    """Start a detached container that just sleeps; returns its id."""
    return _run_detached(docker_cli, cleanup, image, name, "sleep", "300")


def _follow(
    docker_popen: DockerPopen, *args: str, stdin: int | None = None
) -> tuple[subprocess.Popen[bytes], LineReader]:
    """Start a long-running docker command; returns it and a reader of its stdout."""
    proc = docker_popen(*args, stdin=stdin)
    assert proc.stdout is not None
    return proc, LineReader(proc.stdout)


# --- basics ------------------------------------------------------------------------------------


def test_version_reports_server(docker_cli: DockerCLI) -> None:
    """`docker version` through the gateway reaches the daemon and reports its API version."""
    out = _out(docker_cli("version", "--format", "{{.Server.APIVersion}}")).strip()
    assert re.fullmatch(r"1\.\d+", out), out


def test_requests_pass_through_gateway(docker_cli: DockerCLI, gateway: object) -> None:
    """The CLI's requests really reach the gateway: its access log records them."""
    if not isinstance(gateway, Gateway):
        pytest.skip("DOCKGATE_TEST_DIRECT=1: no gateway in the path")
    volume_name = f"dg-probe-{time.time_ns()}"
    docker_cli("volume", "inspect", volume_name, check=False)  # a 404, logged all the same
    wait_for(
        lambda: f"/volumes/{volume_name}" in gateway.stdout_text(),
        timeout=10,
        what="the gateway's access-log line for GET /volumes/NAME",
    )


def test_ps_lists_running_and_all(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker ps` lists a running container, and `ps -a` also lists a created one."""
    running = unique("ps-run")
    created = unique("ps-created")
    _run_sleeper(docker_cli, cleanup, busybox_image, running)
    docker_cli("create", "--name", created, busybox_image, "true")
    cleanup.container(created)
    names = _out(docker_cli("ps", "--format", "{{.Names}}")).split()
    assert running in names
    assert created not in names
    all_names = _out(docker_cli("ps", "-a", "--format", "{{.Names}}")).split()
    assert {running, created} <= set(all_names)


def test_run_propagates_output_and_exit_code(docker_cli: DockerCLI, busybox_image: str) -> None:
    """`docker run --rm` prints the container's stdout/stderr and exits with its exit code."""
    proc = docker_cli(
        "run",
        "--rm",
        busybox_image,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
        check=False,
    )
    assert proc.returncode == 3, proc
    assert proc.stdout == b"to-out\n"
    assert b"to-err" in proc.stderr


def test_run_detached_and_inspect(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker run -d` starts a container that `docker inspect` shows running with its config."""
    name = unique("inspect")
    cid = _run_sleeper(docker_cli, cleanup, busybox_image, name)
    assert re.fullmatch(r"[0-9a-f]{64}", cid), cid
    info = json.loads(_out(docker_cli("inspect", name)))
    assert len(info) == 1
    assert info[0]["Id"] == cid
    assert info[0]["Name"] == "/" + name
    assert info[0]["State"]["Running"] is True
    assert info[0]["Config"]["Cmd"] == ["sleep", "300"]
    assert info[0]["Config"]["Image"] == busybox_image
    fmt = _out(docker_cli("inspect", "--format", "{{.State.Status}}", cid)).strip()
    assert fmt == "running"


# --- logs --------------------------------------------------------------------------------------


def test_logs_separates_stdout_and_stderr(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker logs` returns a finished container's stdout and stderr on the matching streams."""
    name = unique("logs")
    docker_cli(
        "run", "--name", name, busybox_image, "sh", "-c", "echo out-1; echo err-1 >&2; echo out-2"
    )
    cleanup.container(name)
    proc = docker_cli("logs", name)
    assert proc.stdout == b"out-1\nout-2\n"
    assert proc.stderr == b"err-1\n"
    tail = docker_cli("logs", "--tail", "1", name)
    # stdout and stderr are separate pipes, so which line the log recorded last is not fixed.
    assert (tail.stdout + tail.stderr).decode().splitlines() in (["out-2"], ["err-1"])


def test_logs_follow_until_container_exits(
    docker_cli: DockerCLI,
    docker_popen: DockerPopen,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
) -> None:
    """`docker logs -f` streams lines as they are printed and ends when the container exits."""
    name = unique("logsf")
    script = "for i in $(seq 1 20); do echo line-$i; sleep 0.05; done"
    _run_detached(docker_cli, cleanup, busybox_image, name, "sh", "-c", script)
    proc, reader = _follow(docker_popen, "logs", "-f", name)
    lines = reader.read_to_eof(timeout=30)
    assert proc.wait(10) == 0
    assert lines == [f"line-{i}" for i in range(1, 21)]


def test_logs_follow_streams_live(
    docker_cli: DockerCLI,
    docker_popen: DockerPopen,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
) -> None:
    """`docker logs -f` on an endless printer delivers new lines while the container still runs."""
    name = unique("logslive")
    script = "i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done"
    _run_detached(docker_cli, cleanup, busybox_image, name, "sh", "-c", script)
    proc, reader = _follow(docker_popen, "logs", "-f", "--tail", "0", name)
    first = int(reader.expect(r"^tick-(\d+)$", timeout=15).group(1))
    # Ten more lines: they can only come from a stream that is flushed as it goes.
    for _ in range(10):
        n = int(reader.expect(r"^tick-(\d+)$", timeout=5).group(1))
    assert n >= first + 10
    assert proc.poll() is None, "logs -f ended while the container was still running"


# --- stdin, exec, attach -----------------------------------------------------------------------


def test_run_interactive_cat_20mb_roundtrip(docker_cli: DockerCLI, busybox_image: str) -> None:
    """`docker run --rm -i IMAGE cat` returns 20 MB of random stdin byte for byte."""
    data = os.urandom(20 * 1024 * 1024)
    proc = docker_cli("run", "--rm", "-i", busybox_image, "cat", input=data, timeout=180)
    assert len(proc.stdout) == len(data)
    assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_run_interactive_small_stdin_to_shell(docker_cli: DockerCLI, busybox_image: str) -> None:
    """`docker run -i` passes a short stdin to the container and its half-close ends the input."""
    proc = docker_cli(
        "run", "--rm", "-i", busybox_image, "sh", "-c", "wc -l; echo done", input=b"a\nb\nc\n"
    )
    assert proc.stdout.split() == [b"3", b"done"]


def test_exec_without_tty(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker exec` (no tty) returns the command's stdout, stderr and exit code."""
    name = unique("exec")
    _run_sleeper(docker_cli, cleanup, busybox_image, name)
    proc = docker_cli(
        "exec", name, "sh", "-c", "echo exec-out; echo exec-err >&2; exit 7", check=False
    )
    assert proc.returncode == 7, proc
    assert proc.stdout == b"exec-out\n"
    assert proc.stderr == b"exec-err\n"
    piped = docker_cli("exec", "-i", name, "sha256sum", input=b"x" * 100_000)
    assert piped.stdout.split()[0].decode() == hashlib.sha256(b"x" * 100_000).hexdigest()


def test_exec_interactive_tty(
    docker_cli: DockerCLI,
    client_env: dict[str, str],
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
) -> None:
    """`docker exec -it CID sh` on a pty runs typed commands and exits cleanly."""
    name = unique("exec-it")
    _run_sleeper(docker_cli, cleanup, busybox_image, name)
    docker_bin = shutil.which("docker") or "docker"
    child = pexpect.spawn(
        docker_bin,
        ["exec", "-it", name, "sh"],
        env=client_env,
        timeout=20,
        dimensions=(24, 100),
    )
    try:
        child.expect(r"# ")
        child.sendline("echo $((6*7))")
        child.expect(r"\b42\b")
        child.sendline("stty size")
        child.expect(r"\b24 100\b")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.before)


def test_run_interactive_tty(
    client_env: dict[str, str], cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker run -it IMAGE sh` gives a shell on a pty whose exit status comes back."""
    name = unique("run-it")
    cleanup.container(name)
    docker_bin = shutil.which("docker") or "docker"
    child = pexpect.spawn(
        docker_bin, ["run", "-it", "--name", name, busybox_image, "sh"], env=client_env, timeout=20
    )
    try:
        child.expect(r"# ")
        child.sendline("echo tty-$((40+2))")
        child.expect(r"tty-42")
        child.sendline("exit 4")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 4, (child.exitstatus, child.before)


TICKER = (
    "i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo tick-$i; sleep 0.1; done; echo bye; exit 5"
)


def test_attach_to_running_container_output(
    docker_cli: DockerCLI,
    docker_popen: DockerPopen,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
) -> None:
    """`docker attach` streams a running container's output and exits with its exit code."""
    name = unique("attach")
    _run_detached(docker_cli, cleanup, busybox_image, name, "sh", "-c", TICKER)
    proc, reader = _follow(docker_popen, "attach", "--no-stdin", "--sig-proxy=false", name)
    reader.expect(r"^tick-\d+$", timeout=15)
    reader.expect(r"^tick-\d+$", timeout=5)
    docker_cli("exec", name, "touch", "/tmp/stop")
    reader.expect(r"^bye$", timeout=15)
    assert proc.wait(15) == 5


def test_run_interactive_then_attach_with_stdin(
    docker_cli: DockerCLI,
    docker_popen: DockerPopen,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
) -> None:
    """`docker attach` to a `run -d -i` container sends our stdin in and its answers back."""
    name = unique("attach-in")
    script = 'while read -r line; do [ "$line" = quit ] && exit 0; echo "got:$line"; done'
    _run_detached(docker_cli, cleanup, busybox_image, name, "sh", "-c", script, interactive=True)
    proc, reader = _follow(docker_popen, "attach", name, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    # The attach may not be connected yet when we first write: resend until an answer comes.
    deadline = time.monotonic() + 20
    while True:
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        try:
            reader.expect(r"^got:ping$", timeout=1)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    proc.stdin.write(b"hello gateway\n")
    proc.stdin.flush()
    reader.expect(r"^got:hello gateway$", timeout=10)
    proc.stdin.write(b"quit\n")
    proc.stdin.flush()
    assert proc.wait(15) == 0
    state = _out(docker_cli("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name))
    assert state.split() == ["exited", "0"]


# --- files -------------------------------------------------------------------------------------


def test_cp_in_and_out(  # noqa: PLR0917 - pytest fixtures
    docker_cli: DockerCLI,
    daemon: PrivateDaemon,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
    tmp_path: pathlib.Path,
) -> None:
    """`docker cp` copies a file and a directory into a container and back, bytes unchanged."""
    name = unique("cp")
    _run_sleeper(docker_cli, cleanup, busybox_image, name)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.txt").write_text("beta\n")

    docker_cli("cp", str(src), f"{name}:/tmp/payload.bin")
    docker_cli("cp", str(tree), f"{name}:/tmp/tree")
    # Checked straight on the daemon: the bytes really are inside the container.
    inside = daemon.docker("exec", name, "sha256sum", "/tmp/payload.bin").stdout.split()[0]
    assert inside.decode() == hashlib.sha256(payload).hexdigest()
    assert daemon.docker("exec", name, "cat", "/tmp/tree/sub/b.txt").stdout == b"beta\n"

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    docker_cli("cp", f"{name}:/tmp/payload.bin", str(out_dir / "back.bin"))
    assert (out_dir / "back.bin").read_bytes() == payload
    docker_cli("cp", f"{name}:/tmp/tree", str(out_dir / "tree"))
    assert (out_dir / "tree" / "a.txt").read_text() == "alpha\n"
    assert (out_dir / "tree" / "sub" / "b.txt").read_text() == "beta\n"

    # `docker cp CID:path -` writes a tar stream to stdout.
    tar_bytes = docker_cli("cp", f"{name}:/tmp/tree/a.txt", "-").stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.extractfile("a.txt")
        assert member is not None
        assert member.read() == b"alpha\n"


def test_build_from_local_image(
    docker_cli: DockerCLI,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
    tmp_path: pathlib.Path,
) -> None:
    """`docker build` (classic builder) runs COPY and RUN on the local image and tags the result."""
    tag = f"{unique('build')}:v1"
    cleanup.image(tag)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hello from the build context\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {busybox_image}\n"
        "COPY hello.txt /hello.txt\n"
        "RUN cp /hello.txt /copied.txt && echo built-by-run > /run.txt\n"
        'CMD ["sh", "-c", "cat /copied.txt /run.txt"]\n'
    )
    proc = docker_cli("build", "-t", tag, str(ctx), timeout=180)
    log = _out(proc) + proc.stderr.decode(errors="replace")
    assert "Successfully tagged" in log or "naming to" in log, log
    out = docker_cli("run", "--rm", tag).stdout
    assert out == b"hello from the build context\nbuilt-by-run\n"
    assert _out(docker_cli("images", "-q", tag)).strip()


def test_build_failure_reports_error(
    docker_cli: DockerCLI, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """A failing RUN step makes `docker build` exit non-zero with the step's error."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo failing-step && exit 9\n")
    proc = docker_cli("build", str(ctx), check=False, timeout=180)
    assert proc.returncode != 0
    text = _out(proc) + proc.stderr.decode(errors="replace")
    assert "failing-step" in text
    assert "9" in text


# --- events, stats -----------------------------------------------------------------------------


def test_events_since_until(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker events --since T0 --until T1` replays a container's create/start/die and ends."""
    name = unique("events")
    t0 = time.time() - 1
    docker_cli("run", "--name", name, busybox_image, "true")
    cleanup.container(name)
    t1 = time.time() + 1
    proc = docker_cli(
        "events",
        "--since",
        f"{t0:.3f}",
        "--until",
        f"{t1:.3f}",
        "--filter",
        f"container={name}",
        "--format",
        "{{.Type}} {{.Action}}",
        timeout=30,
    )
    actions = [line.split(" ", 1)[1] for line in _out(proc).splitlines() if line]
    assert all(line.startswith("container ") for line in _out(proc).splitlines() if line)
    for expected in ("create", "start", "die"):
        assert expected in actions, actions
    assert actions.index("create") < actions.index("start") < actions.index("die")


def test_events_stream_live(
    docker_cli: DockerCLI,
    docker_popen: DockerPopen,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
) -> None:
    """`docker events` (no --until) delivers a new container's events while the stream is open."""
    name = unique("events-live")
    t0 = time.time() - 1
    events = ("events", "--since", f"{t0:.3f}", "--filter", f"container={name}")
    proc, reader = _follow(docker_popen, *events, "--format", "{{.Action}}")
    _run_sleeper(docker_cli, cleanup, busybox_image, name)
    reader.expect(r"^start$", timeout=15)
    docker_cli("kill", name)
    reader.expect(r"^die$", timeout=15)
    assert proc.poll() is None, "events stream ended on its own"


def test_stats_no_stream(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker stats --no-stream` prints one sample for a running container and exits."""
    name = unique("stats")
    _run_sleeper(docker_cli, cleanup, busybox_image, name)
    proc = docker_cli(
        "stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}", name, timeout=60
    )
    lines = _out(proc).splitlines()
    assert len(lines) == 1, lines
    got_name, mem, pids = lines[0].split("|")
    assert got_name == name
    assert "/" in mem
    assert pids.strip().isdigit()


# --- images and filesystems as tar streams -----------------------------------------------------


def test_export_contains_busybox(
    docker_cli: DockerCLI,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
    tmp_path: pathlib.Path,
) -> None:
    """`docker export` streams the container filesystem as a tar that contains bin/busybox."""
    name = unique("export")
    docker_cli("create", "--name", name, busybox_image, "true")
    cleanup.container(name)
    tar_bytes = docker_cli("export", name).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = set(tar.getnames())
        member = tar.getmember("bin/busybox")
        assert member.isfile()
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read(4) == b"\x7fELF"
    assert "bin/sh" in names
    out_file = tmp_path / "export.tar"
    docker_cli("export", "-o", str(out_file), name)
    assert out_file.read_bytes() == tar_bytes


def test_save_and_load_roundtrip(
    docker_cli: DockerCLI,
    daemon: PrivateDaemon,
    cleanup: Cleanup,
    busybox_image: str,
    unique: Unique,
) -> None:
    """`docker save` then `docker load` (via stdin) restores a deleted tag to the same image."""
    tag = f"{unique('saveload')}:v1"
    daemon.docker("tag", busybox_image, tag)
    cleanup.image(tag)
    image_id = _out(docker_cli("image", "inspect", "--format", "{{.Id}}", tag)).strip()
    saved = docker_cli("save", tag).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        assert "manifest.json" in tar.getnames()
    docker_cli("rmi", tag)
    assert docker_cli("image", "inspect", tag, check=False).returncode != 0
    loaded = docker_cli("load", input=saved, timeout=180)
    assert f"Loaded image: {tag}" in _out(loaded)
    assert _out(docker_cli("image", "inspect", "--format", "{{.Id}}", tag)).strip() == image_id


# --- networks and volumes ----------------------------------------------------------------------


def test_network_create_inspect_rm(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker network create/ls/inspect/rm` manage a user network a container can join."""
    net = unique("net")
    cleanup.network(net)
    net_id = _out(docker_cli("network", "create", "--label", "dgtest=1", net)).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", net_id), net_id
    assert net in _out(docker_cli("network", "ls", "--format", "{{.Name}}")).split()
    info = json.loads(_out(docker_cli("network", "inspect", net)))
    assert info[0]["Id"] == net_id
    assert info[0]["Labels"] == {"dgtest": "1"}
    out = docker_cli("run", "--rm", "--network", net, busybox_image, "cat", "/etc/hosts").stdout
    assert b"127.0.0.1" in out
    assert _out(docker_cli("network", "rm", net)).strip() == net
    assert net not in _out(docker_cli("network", "ls", "--format", "{{.Name}}")).split()


def test_volume_create_use_rm(
    docker_cli: DockerCLI, cleanup: Cleanup, busybox_image: str, unique: Unique
) -> None:
    """`docker volume create/ls/inspect/rm` manage a volume whose data outlives a container."""
    vol = unique("vol")
    cleanup.volume(vol)
    assert _out(docker_cli("volume", "create", vol)).strip() == vol
    assert vol in _out(docker_cli("volume", "ls", "-q")).split()
    info = json.loads(_out(docker_cli("volume", "inspect", vol)))
    assert info[0]["Name"] == vol
    assert info[0]["Driver"] == "local"
    docker_cli(
        "run", "--rm", "-v", f"{vol}:/data", busybox_image, "sh", "-c", "echo kept > /data/f"
    )
    out = docker_cli("run", "--rm", "-v", f"{vol}:/data", busybox_image, "cat", "/data/f").stdout
    assert out == b"kept\n"
    assert _out(docker_cli("volume", "rm", vol)).strip() == vol
    assert vol not in _out(docker_cli("volume", "ls", "-q")).split()


# --- swarm -------------------------------------------------------------------------------------


def _swarm_init(port: int) -> tuple[str, ...]:
    """The arguments of ``docker swarm init`` on loopback, the swarm's listener on ``port``."""
    return ("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{port}")


@pytest.fixture(scope="class")
def swarm(daemon: PrivateDaemon, gateway: object) -> Iterator[PrivateDaemon]:
    """The session daemon as a one-node swarm manager; always leaves the swarm afterwards."""
    port = free_tcp_port()
    # Initialised straight on the daemon; the tests drive everything else through the gateway.
    daemon.docker(*_swarm_init(port))
    try:
        yield daemon
    finally:
        daemon.docker("swarm", "leave", "--force", check=False, timeout=60)


class TestSwarm:
    """Swarm mode through the gateway: init/leave, services, secrets (one swarm for the group)."""

    def test_swarm_init_and_leave_via_gateway(
        self, docker_cli: DockerCLI, daemon: PrivateDaemon
    ) -> None:
        """`docker swarm init` on a free port and `swarm leave --force` work through the gateway."""
        port = free_tcp_port()
        try:
            proc = docker_cli(*_swarm_init(port), timeout=60)
            assert "Swarm initialized" in _out(proc)
            state = _out(docker_cli("info", "--format", "{{.Swarm.LocalNodeState}}")).strip()
            assert state == "active"
            nodes = _out(docker_cli("node", "ls", "--format", "{{.ManagerStatus}}")).split()
            assert nodes == ["Leader"]
            assert _out(docker_cli("swarm", "leave", "--force", timeout=60)).strip()
            state = _out(docker_cli("info", "--format", "{{.Swarm.LocalNodeState}}")).strip()
            assert state == "inactive"
        finally:
            daemon.docker("swarm", "leave", "--force", check=False, timeout=60)

    def test_service_lifecycle(
        self,
        swarm: PrivateDaemon,
        docker_cli: DockerCLI,
        busybox_image: str,
        unique: Unique,
    ) -> None:
        """`docker service create/ls/ps/logs/rm` run a busybox service whose log line we read."""
        svc = unique("svc")
        try:
            docker_cli(
                "service",
                "create",
                "--detach",
                "--no-resolve-image",
                "--name",
                svc,
                busybox_image,
                "sh",
                "-c",
                "echo svc-hello; sleep 300",
                timeout=60,
            )
            listed = _out(docker_cli("service", "ls", "--format", "{{.Name}} {{.Mode}}"))
            assert f"{svc} replicated" in listed.splitlines()

            def task_running() -> bool:
                states = _out(
                    docker_cli("service", "ps", "--format", "{{.CurrentState}}", svc)
                ).splitlines()
                return any(s.startswith("Running") for s in states)

            wait_for(task_running, timeout=60, interval=0.25, what="the service task to run")

            def logs_show_line() -> bool:
                return "svc-hello" in _out(docker_cli("service", "logs", svc))

            wait_for(logs_show_line, timeout=30, interval=0.25, what="the service log line")
            raw = docker_cli("service", "logs", "--raw", svc).stdout
            assert raw.strip() == b"svc-hello"
            assert _out(docker_cli("service", "rm", svc)).strip() == svc
            svc_left = _out(docker_cli("service", "ls", "--format", "{{.Name}}")).split()
            assert svc not in svc_left
        finally:
            swarm.docker("service", "rm", svc, check=False)

    def test_secret_create_rm(
        self, swarm: PrivateDaemon, docker_cli: DockerCLI, unique: Unique
    ) -> None:
        """`docker secret create` (stdin), `ls`, `inspect` and `rm` work through the gateway."""
        name = unique("secret")
        try:
            sid = _out(docker_cli("secret", "create", name, "-", input=b"s3cr3t\n")).strip()
            assert re.fullmatch(r"[0-9a-z]{25}", sid), sid
            assert name in _out(docker_cli("secret", "ls", "--format", "{{.Name}}")).split()
            info = json.loads(_out(docker_cli("secret", "inspect", name)))
            assert info[0]["ID"] == sid
            assert "Data" not in info[0]["Spec"]
            assert _out(docker_cli("secret", "rm", name)).strip() == name
            assert name not in _out(docker_cli("secret", "ls", "--format", "{{.Name}}")).split()
        finally:
            swarm.docker("secret", "rm", name, check=False)
