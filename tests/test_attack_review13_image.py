"""Issue 13, "attack your own change": dockgate's image (Dockerfile, deploy/entrypoint.py), as
the README's nginx migration runs it with examples/policies/quickstart.yaml.

The entrypoint drops the gateway's own process to uid 65532, but the image has no `USER`: the
container's user is root, so every `docker exec` into it (which the entrypoint never sees)
runs as uid 0, next to the mounted Docker socket. Marked `xfail(strict=True)`, asserting what
should hold: it fails while the hole is open and XPASSes once it is closed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import uuid
from collections.abc import Iterator

import pytest

from support.attack import ATTACK_MARKS, Api, logs
from support.daemon import PrivateDaemon, free_tcp_port
from support.remote import json_call

# The session's image build counts into the first test's time: a longer timeout than the
# other reviews' 120 s.
pytestmark = [*(m for m in ATTACK_MARKS if m.name != "timeout"), pytest.mark.timeout(900)]

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "policies" / "quickstart.yaml"
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


@pytest.fixture
def host_secret() -> Iterator[pathlib.Path]:
    path = pathlib.Path(f"/tmp/dg-atk13b-img-{uuid.uuid4().hex[:8]}")
    path.write_text(f"host-only-{RUN}\n")
    path.chmod(0o600)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


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


@pytest.mark.xfail(
    strict=True,
    reason="image: no USER, so `docker exec` into dockgate's container is uid 0 beside the socket;"
    " a quickstart caller of the containerised gateway execs into it and reads host files",
)
def test_exec_into_the_gateways_own_container_is_not_root_with_the_socket(
    daemon: PrivateDaemon, dockgate_image: str, busybox_image: str, host_secret: pathlib.Path
) -> None:
    """The README's "after" for nginx users: the image, the socket mounted, DOCKGATE_POLICY =
    quickstart.yaml (here on loopback without credentials, which changes nothing for a caller
    who has them), `--read-only` as docs/image.md advises. The caller asks the gateway for
    `docker exec <the gateway's own container> id -u` (ContainerExec and ExecStart: section
    `exec`, any container, `exec.root: true` by default) and gets 0; then execs the image's
    python3 against the socket: a container binding `/` that the gateway itself refuses."""
    gateway, escaped = f"atk13b-gw-{RUN}", f"atk13b-img-escaped-{RUN}"
    port = free_tcp_port()
    daemon.docker(
        "run", "-d", "--name", gateway, "--network", "host", "--read-only",
        "-v", f"{daemon.socket_path}:/var/run/docker.sock",
        "-v", f"{QUICKSTART}:/etc/dockgate/policy.yaml:ro",
        "-e", "DOCKGATE_POLICY=/etc/dockgate/policy.yaml",
        "-e", f"DOCKGATE_LISTEN=tcp://127.0.0.1:{port}",
        "-e", f"DOCKGATE_ADMIN_LISTEN=tcp://127.0.0.1:{free_tcp_port()}",
        dockgate_image,
    )  # fmt: skip
    try:
        assert _ready(port), daemon.docker("logs", gateway, check=False).stderr
        caller = Api(_Listening(port))  # type: ignore[arg-type]

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
