"""The calling container as the identity, for real: containers that share dockgate's unix
socket (bind-mounted into them) get the policies their labels bind, an unlabelled container
none, a host process its uid binding; a caller that exited before dockgate read it is refused,
also when its PID was given to a process inside a bound container (PID reuse).

The containers run tests/support/unixget.c, built static, as their HTTP client; what they got
is what they print.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from dockgate.auth.cgroup import container_ids
from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.fake_upstream import Exchange, FakeUpstream, default_handler
from support.gateway import Gateway, run_dockgate, running
from support.remote import UnixHTTPConnection
from support.swarm import single_node_swarm
from support.unixget import build_unixget

UID = os.getuid()
POLICY = f"""\
bindings:
  - policy: lister
    container: {{labels: {{dockgate.role: lister}}}}
  - policy: pinger
    container: {{labels: {{dockgate.role: "ping*"}}}}
  - policy: lister
    service: dgtpeer_lister
  - policy: host
    uids: [{UID}]
policies:
  lister:
    rules:
      - allow: {{operations: [ContainerList, SystemPing]}}
  pinger:
    rules:
      - allow: {{operations: [SystemPing]}}
  host:
    rules:
      - allow: {{operations: [SystemVersion, ContainerCreate]}}
"""


@pytest.fixture(scope="module")
def unixget(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_unixget(tmp_path_factory.mktemp("unixget"))


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[pathlib.Path]:
    # (short: AF_UNIX paths are at most 108 bytes; traversable by the unprivileged caller)
    path = pathlib.Path(tempfile.mkdtemp(prefix="dgpeer-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("policy") / "peer.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def peer_gateway(
    daemon: PrivateDaemon, socket_dir: pathlib.Path, policy: pathlib.Path
) -> Iterator[Gateway]:
    gateway = Gateway(
        daemon.host,
        *("--socket-mode", "666", "--access-log", "-"),
        listen=f"unix://{socket_dir / 'gw.sock'}",
        policy=str(policy),
    )
    with running(gateway, "the peer gateway") as gw:
        yield gw


@dataclasses.dataclass
class Containers:
    """Containers that call the gateway through its socket, mounted into them at /dg."""

    daemon: PrivateDaemon
    image: str
    unixget: pathlib.Path
    socket_dir: pathlib.Path

    def ask(self, name: str, labels: dict[str, str], method: str, path: str) -> tuple[int, object]:
        """`method path` sent from inside a new container `name` with `labels`: the status
        and body it got."""
        return _answer(self.raw(name, labels, method, path))

    def raw(
        self, name: str, labels: dict[str, str], method: str, path: str, count: int = 1
    ) -> bytes:
        """What the container got for `count` such requests pipelined in one write."""
        label_args = [a for key, value in labels.items() for a in ("--label", f"{key}={value}")]
        proc = self.daemon.docker(
            *("run", "--rm", "--name", name, *label_args),
            *("-v", f"{self.socket_dir}:/dg", "-v", f"{self.unixget}:/unixget:ro"),
            *(self.image, "/unixget", "/dg/gw.sock", method, path, str(count)),
        )
        return proc.stdout


@pytest.fixture
def containers(
    daemon: PrivateDaemon,
    busybox_image: str,
    unixget: pathlib.Path,
    socket_dir: pathlib.Path,
    peer_gateway: Gateway,
) -> Containers:
    return Containers(daemon, busybox_image, unixget, socket_dir)


def _answer(raw: bytes) -> tuple[int, object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def test_two_containers_on_one_socket_get_the_policies_their_labels_bind(
    containers: Containers, peer_gateway: Gateway
) -> None:
    """The lister container lists containers (itself among them: the daemon's answer came
    through); the pinger container, on the same socket, is refused the list, allowed a ping."""
    lister = f"dgt-lister-{os.urandom(4).hex()}"
    pinger = f"dgt-pinger-{os.urandom(4).hex()}"
    status, listed = containers.ask(
        lister, {"dockgate.role": "lister"}, "GET", "/v1.41/containers/json"
    )
    assert status == 200, listed
    assert isinstance(listed, list)
    assert [f"/{lister}"] in [entry["Names"] for entry in listed]
    status, body = containers.ask(
        pinger, {"dockgate.role": "ping-only"}, "GET", "/v1.41/containers/json"
    )
    assert status == 403
    assert isinstance(body, dict)
    assert body["message"].startswith('dockgate: no rule of policy "pinger" allows ContainerList')
    status, body = containers.ask(pinger, {"dockgate.role": "ping-only"}, "GET", "/_ping")
    assert (status, body) == (200, "OK")
    # the access log names the callers by their containers
    assert any(line.rstrip().endswith(f" user={lister}") for line in peer_gateway.stdout())
    assert any(line.rstrip().endswith(f" user={pinger}") for line in peer_gateway.stdout())


def test_requests_pipelined_behind_the_first_wait_for_the_peer_in_order(
    containers: Containers,
) -> None:
    """A new container's first connection waits for the daemon's answer about it; the three
    requests it sent at once are all answered, in order, under its policy."""
    name = f"dgt-pipeline-{os.urandom(4).hex()}"
    raw = containers.raw(name, {"dockgate.role": "ping-x"}, "GET", "/_ping", 3)
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3, raw
    assert raw.endswith(b"OK")


@pytest.mark.parametrize(
    ("labels", "target"),
    [
        ({"dockgate.role": "lister"}, "/v1.41/containers/json"),
        ({"dockgate.role": "ping-only"}, "/v1.41/containers/json"),
        ({"dockgate.role": "ping-only"}, "/_ping"),
        ({"other": "x"}, "/_ping"),
    ],
)
def test_check_as_a_container_decides_as_the_gateway_did(
    containers: Containers, policy: pathlib.Path, labels: dict[str, str], target: str
) -> None:
    """`dockgate check --as container:NAME --container-label ...` gives the status and
    message the container got through the gateway."""
    name = f"dgt-check-{os.urandom(4).hex()}"
    status, body = containers.ask(name, labels, "GET", target)
    label_args = [a for k, v in labels.items() for a in ("--container-label", f"{k}={v}")]
    checked = run_dockgate(
        *("check", "--policy", str(policy), "GET", target, "--as", f"container:{name}"),
        *label_args,
    )
    decision = checked.stdout.splitlines()[-1]
    if status == 200:
        assert checked.returncode == 0 and decision.startswith("decision:  allow"), checked
    else:
        assert isinstance(body, dict)
        assert decision == f"decision:  deny, {status}: {body['message']}", checked.stdout


def test_an_unlabelled_container_gets_no_policy(
    containers: Containers, peer_gateway: Gateway
) -> None:
    """No binding names it: 403, and it does not fall back to the host's uid binding (it runs
    as root, as the host process bound by uid does)."""
    name = f"dgt-stray-{os.urandom(4).hex()}"
    status, body = containers.ask(name, {"other": "x"}, "GET", "/v1.41/version")
    assert (status, body) == (403, {"message": f"dockgate: no policy is bound to container {name}"})


def test_a_host_process_gets_its_uid_binding(
    unixget: pathlib.Path, socket_dir: pathlib.Path, peer_gateway: Gateway
) -> None:
    """This test's process (in no container) is `uid:N`: its binding allows the version, not
    the list; another uid, bound by nothing, gets no policy."""
    path = str(socket_dir / "gw.sock")
    conn = UnixHTTPConnection(path)
    conn.request("GET", "/v1.41/version")
    answer = conn.getresponse()
    version = json.loads(answer.read())
    assert answer.status == 200 and "ApiVersion" in version
    conn.request("GET", "/v1.41/containers/json")
    answer = conn.getresponse()
    assert answer.status == 403
    message = json.loads(answer.read())["message"]
    assert message.startswith('dockgate: no rule of policy "host" allows ContainerList')
    conn.close()
    if os.getuid() != 0:
        return
    other = _as_nobody(unixget, socket_dir, "/v1.41/version")
    assert other.startswith(b"HTTP/1.1 403 ")
    assert b"no policy is bound to anonymous callers" in other


def _as_nobody(unixget: pathlib.Path, socket_dir: pathlib.Path, target: str) -> bytes:
    """The raw answer to `GET target` sent by a host process of uid/gid 65534 (unixget, copied
    where that user may run it)."""
    runnable = socket_dir / "unixget"
    shutil.copy(unixget, runnable)
    runnable.chmod(0o755)
    try:
        proc = subprocess.run(
            [str(runnable), str(socket_dir / "gw.sock"), "GET", target],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            timeout=60,
            check=True,
        )
    finally:
        runnable.unlink()
    return proc.stdout


def test_a_create_with_labels_a_container_binding_names_is_refused(
    socket_dir: pathlib.Path, peer_gateway: Gateway, busybox_image: str, cleanup: Cleanup
) -> None:
    """The host process may create containers, but not one labelled as a bound caller: given
    the socket, it would call as the lister (or the pinger, by its `ping*` pattern). Other
    labels are created (and the daemon has the container)."""
    path = str(socket_dir / "gw.sock")
    for role, binding in (("lister", "binding 1 (policy lister)"), ("ping-me", "binding 2")):
        status, message = _create(path, busybox_image, {"dockgate.role": role})
        assert status == 403, message
        assert (
            f"labels dockgate.role={role} would make the container a caller bound by {binding}"
            in (message)
        )
    name = f"dgt-created-{os.urandom(4).hex()}"
    cleanup.container(name)
    status, message = _create(path, busybox_image, {"dockgate.role": "web"}, name)
    assert status == 201, message


def _create(
    path: str, image: str, labels: dict[str, str], name: str | None = None
) -> tuple[int, str]:
    conn = UnixHTTPConnection(path)
    target = "/v1.41/containers/create" + (f"?name={name}" if name else "")
    body = json.dumps({"Image": image, "Cmd": ["true"], "Labels": labels})
    conn.request("POST", target, body=body, headers={"Content-Type": "application/json"})
    answer = conn.getresponse()
    raw = answer.read()
    conn.close()
    return answer.status, raw.decode()


# ----- the peer gone before dockgate reads it -------------------------------------------------

# A child that connects, hands its connection to this process (SCM_RIGHTS) and exits: the
# connection's peer credentials stay the child's (taken at connect), its process is gone.
_CONNECT_AND_LEAVE = """
import socket, sys
parent = socket.socket(fileno=int(sys.argv[2]))
conn = socket.socket(socket.AF_UNIX)
conn.connect(sys.argv[1])
socket.send_fds(parent, [b"x"], [conn.fileno()])
"""


def _connection_of_a_gone_process(path: str) -> tuple[socket.socket, int]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        child = subprocess.Popen(
            [sys.executable, "-c", _CONNECT_AND_LEAVE, path, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        assert child.wait(timeout=60) == 0  # exited and reaped: its PID is free
    return socket.socket(fileno=fds[0]), child.pid


def _ask(conn: socket.socket, target: str) -> bytes:
    conn.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
    out = b""
    while chunk := conn.recv(65536):
        out += chunk
    conn.close()
    return out


def test_a_caller_that_exited_before_it_was_read_is_refused(
    socket_dir: pathlib.Path, peer_gateway: Gateway
) -> None:
    """The gateway is stopped while the child connects (the kernel queues the connection) and
    leaves; when it runs again, the peer's PID names no process: refused with the reason, not
    taken for a host process of its uid (which has a binding)."""
    peer_gateway.signal(signal.SIGSTOP)
    try:
        conn, pid = _connection_of_a_gone_process(str(socket_dir / "gw.sock"))
    finally:
        peer_gateway.signal(signal.SIGCONT)
    answer = _ask(conn, "/v1.41/version")
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert (
        f"the calling process (pid {pid}) exited before dockgate could identify it".encode()
        in answer
    )


NS_LAST_PID = pathlib.Path("/proc/sys/kernel/ns_last_pid")
PID_ATTEMPTS = 200  # other processes on the machine may take the PID first: try again


def _process_with_pid(pid: int) -> subprocess.Popen[bytes]:
    """A `sleep` that has PID `pid` (the kernel gives the PID after ns_last_pid to the next
    process it makes: root may set it, for checkpoint/restore)."""
    for _ in range(PID_ATTEMPTS):
        NS_LAST_PID.write_text(str(pid - 1))
        proc = subprocess.Popen(["sleep", "300"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    raise AssertionError(f"no process got PID {pid} in {PID_ATTEMPTS} attempts")


def _move_into_container(pid: int, container_pid: int) -> None:
    """Put process `pid` into the cgroup of the container whose process is `container_pid`
    (as root: cgroup.procs), so that /proc/PID/cgroup names that container."""
    for line in pathlib.Path(f"/proc/{container_pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and pathlib.Path("/sys/fs/cgroup/cgroup.controllers").exists():
            procs = pathlib.Path(f"/sys/fs/cgroup{path}/cgroup.procs")  # cgroup v2
        elif controllers == "pids":
            procs = pathlib.Path(f"/sys/fs/cgroup/pids{path}/cgroup.procs")  # v1
        else:
            continue
        procs.write_text(str(pid))
        return
    raise AssertionError(f"no cgroup of process {container_pid} to move into")


def test_a_pid_reused_inside_a_bound_container_does_not_lend_its_container(
    daemon: PrivateDaemon,
    busybox_image: str,
    socket_dir: pathlib.Path,
    peer_gateway: Gateway,
    cleanup: Cleanup,
) -> None:
    """The caller connects and exits while the gateway is stopped; before the gateway runs
    again, its PID is given to a process put inside a container the lister binding names,
    which started before the connection was accepted (so its start time cannot tell). The
    peer's pidfd (SO_PEERPIDFD) does: the caller is refused as gone, never taken for the
    lister container (whose policy would allow the list)."""
    if not NS_LAST_PID.exists():
        pytest.skip("the kernel has no ns_last_pid (CONFIG_CHECKPOINT_RESTORE)")
    if not _kernel_gives_peer_pidfds():
        pytest.skip("the kernel gives no SO_PEERPIDFD (Linux 6.5): THREAT_MODEL.md says so")
    name = f"dgt-bound-{os.urandom(4).hex()}"
    cleanup.container(name)
    daemon.docker(
        *("run", "-d", "--name", name, "--label", "dockgate.role=lister", busybox_image),
        *("sleep", "300"),
    )
    inspected = daemon.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", name).stdout.split()
    container_id, container_pid = inspected[0].decode(), int(inspected[1])
    # what this machine's dockerd writes names the container (auth/cgroup.py)
    cgroup_text = pathlib.Path(f"/proc/{container_pid}/cgroup").read_text()
    assert container_ids(cgroup_text) == (container_id,), cgroup_text
    peer_gateway.signal(signal.SIGSTOP)
    impostor = None
    try:
        conn, pid = _connection_of_a_gone_process(str(socket_dir / "gw.sock"))
        impostor = _process_with_pid(pid)
        _move_into_container(pid, container_pid)
        assert container_id in container_ids(pathlib.Path(f"/proc/{pid}/cgroup").read_text())
    finally:
        peer_gateway.signal(signal.SIGCONT)
    try:
        answer = _ask(conn, "/v1.41/containers/json")
    finally:
        if impostor is not None:
            impostor.kill()
            impostor.wait()
    assert answer.startswith(b"HTTP/1.1 403 "), answer
    assert f"the calling process (pid {pid}) exited".encode() in answer


def _kernel_gives_peer_pidfds() -> bool:
    left, right = socket.socketpair()
    with left, right:
        try:
            fd = left.getsockopt(socket.SOL_SOCKET, 77, 4)  # SO_PEERPIDFD
        except OSError:
            return False
        os.close(int.from_bytes(fd, sys.byteorder))
        return True


def test_a_daemon_that_cannot_say_which_container_calls_is_a_502(
    daemon: PrivateDaemon,
    busybox_image: str,
    unixget: pathlib.Path,
    policy: pathlib.Path,
) -> None:
    """The gateway's daemon (a fake here) answers the container look-up with a 500: the
    container's request gets a 502 that says why, at once (no hang), never another policy."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="dgpeer-", dir="/tmp"))
    directory.chmod(0o755)
    with FakeUpstream() as fake:

        def handler(exchange: Exchange) -> None:
            if exchange.path.startswith("/containers/"):
                exchange.respond_json({"message": "boom"}, status=500, close=True)
            else:
                default_handler(exchange)

        fake.handler = handler
        gateway = Gateway(fake.url, listen=f"unix://{directory / 'gw.sock'}", policy=str(policy))
        try:
            with running(gateway, "the gateway in front of a failing daemon"):
                containers = Containers(daemon, busybox_image, unixget, directory)
                name = f"dgt-nodaemon-{os.urandom(4).hex()}"
                status, body = containers.ask(name, {"dockgate.role": "lister"}, "GET", "/_ping")
        finally:
            for child in directory.iterdir():
                child.unlink()
            directory.rmdir()
    assert status == 502
    assert isinstance(body, dict)
    assert body["message"].startswith("dockgate: cannot identify the calling container: ")
    assert "the daemon answered 500 to a look-up of container " in body["message"]


# ----- Swarm services ----------------------------------------------------------------------------


def _task_output(daemon: PrivateDaemon, service: str) -> bytes:
    """What the (one, run-once) task of `service` printed, once it exited."""
    label = f"label=com.docker.swarm.service.name={service}"
    for _ in range(TASK_POLLS):
        done = daemon.docker("ps", "-aq", "--filter", label, "--filter", "status=exited")
        ids = done.stdout.decode().split()
        if ids:
            return daemon.docker("logs", ids[0]).stdout
        time.sleep(0.5)
    states = daemon.docker("service", "ps", "--no-trunc", service, check=False)
    raise AssertionError(f"the task of {service} did not run: {states.stdout!r}")


TASK_POLLS = 240  # half-seconds for a task to be scheduled, run and exit


def test_the_tasks_of_a_bound_swarm_service_get_its_policy(
    daemon: PrivateDaemon,
    busybox_image: str,
    unixget: pathlib.Path,
    socket_dir: pathlib.Path,
    peer_gateway: Gateway,
) -> None:
    """On a single-node swarm, a task of `dgtpeer_lister` (a stack `dgtpeer`'s service
    `lister`: bound by `service:`) lists containers through the socket; a task of another
    service, carrying the same kind of label with another name, gets no policy."""
    with single_node_swarm(daemon, joined_ok=True):
        answers = {}
        for service in ("dgtpeer_lister", "dgtpeer_other"):
            daemon.docker(
                *("service", "create", "--detach", "--name", service),
                *("--restart-condition", "none", "--no-resolve-image"),
                *("--mount", f"type=bind,source={socket_dir},target=/dg"),
                *("--mount", f"type=bind,source={unixget},target=/unixget,readonly"),
                *(busybox_image, "/unixget", "/dg/gw.sock", "GET", "/v1.41/containers/json"),
            )
            try:
                answers[service] = _answer(_task_output(daemon, service))
            finally:
                daemon.docker("service", "rm", service, check=False)
    status, listed = answers["dgtpeer_lister"]
    assert status == 200 and isinstance(listed, list), listed
    assert any(
        entry["Labels"].get("com.docker.swarm.service.name") == "dgtpeer_lister" for entry in listed
    )
    status, body = answers["dgtpeer_other"]
    assert status == 403 and isinstance(body, dict)
    assert body["message"].startswith("dockgate: no policy is bound to container dgtpeer_other.1.")


# ----- a reload that makes bindings name peers -------------------------------------------------

BEFORE_RELOAD = """\
bindings:
  - {policy: anyone, anonymous: true}
policies:
  anyone: {rules: [{allow: {operations: [SystemVersion, SystemPing]}}]}
"""
AFTER_RELOAD = f"""\
bindings:
  - {{policy: local, uids: [{UID}]}}
policies:
  local: {{rules: [{{allow: {{operations: [SystemPing]}}}}]}}
"""


def test_a_reload_that_binds_peers_identifies_open_connections_too(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """A keep-alive connection opened under a policy without peer bindings repeats its request
    after a reload that binds its uid: it is identified then (its process read at that
    moment), and decided by the uid's policy, not as the anonymous caller it was."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix="dgpeer-", dir="/tmp"))
    policy = tmp_path / "policy.yaml"
    policy.write_text(BEFORE_RELOAD)
    path = str(directory / "gw.sock")
    gateway = Gateway(daemon.host, listen=f"unix://{path}", policy=str(policy))
    try:
        with running(gateway, "the reloading gateway"):
            kept = UnixHTTPConnection(path)
            assert _get(kept, "/v1.41/version")[0] == 200  # anonymous, forwarded
            policy.write_text(AFTER_RELOAD)
            gateway.signal(signal.SIGHUP)
            for _ in range(TASK_POLLS):  # until a new connection is decided by the new policy
                fresh = UnixHTTPConnection(path)
                answer = _get(fresh, "/v1.41/version")
                fresh.close()
                if answer[0] == 403:
                    break
                time.sleep(0.1)
            status, message = _get(kept, "/v1.41/version")
            kept.close()
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()
    assert status == 403
    assert message.startswith('dockgate: no rule of policy "local" allows SystemVersion')


def _get(conn: UnixHTTPConnection, target: str) -> tuple[int, str]:
    conn.request("GET", target)
    answer = conn.getresponse()
    body = answer.read()
    try:
        document = json.loads(body)
    except ValueError:
        return answer.status, body.decode()
    message = document.get("message", "") if isinstance(document, dict) else ""
    return answer.status, str(message)
