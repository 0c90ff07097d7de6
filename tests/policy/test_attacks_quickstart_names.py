"""Issue 13, attack review, second pass: examples/policies/quickstart.yaml (now with ownership for
the anonymous callers of loopback) attacked as its caller, against the real daemon.

Each finding is one test, proven by its effect; the two about shared names stay open,
`xfail(strict=True)`, the other two are fixed and ordinary tests:
- names are shared (as image names are, THREAT_MODEL.md): a caller who creates a volume or a
  network under a name the host's own containers later use by name owns it, and gets what the
  host's container writes to the volume, or reaches its ports on the network (the controls: the
  same objects made first by the operator are refused to the caller);
- systemd.swappable reads mode bits only: a directory a POSIX ACL opens to another user passes,
  and that user swaps the inherited 0666 socket for a link to a root file (the final file need
  not be a socket): the gateway serves the real socket without authentication;
- shown_address keeps text starting with `/` or `.` whole: a DOCKER_HOST without its scheme
  (`//USER:PASSWORD@HOST`) is quoted with its password by serve and doctor.

What held (tried through the quickstart gateway against the real daemon, not kept as tests):
containers: `--volumes-from`, `--network`/`--pid`/`--ipc container:X` of a container made on the
daemon (403), a link to it (404 as missing), its named volume by `Binds` or `Mounts` (the
`Type` in any case: refused as missing), the host's cgroup, uts and user namespaces (403), the
events of the daemon's own containers (none shown). Swarm (a one-node swarm on the private
daemon, a service made on it directly with an environment secret): `docker service inspect`
and `docker service logs` of it (404), `/tasks` (empty; with `filters={"service":[it]}` 404, by
`name` or an `id` prefix empty), its task's inspect and logs (404), its container in `docker
ps -a` (absent); a service create with a `local` volume mount binding `/`
(`VolumeOptions.DriverConfig.Options` o=bind, named or anonymous), the daemon's named volume,
a bind of `/`, `CapabilityAdd`, a sysctl, the daemon's overlay network (in
`TaskTemplate.Networks` or the top-level `Networks`), the `host` network, `Runtime: plugin`,
`Privileges.SELinuxContext.Disable` (all 403); `GenericResources`, `Hosts`, `Isolation`,
`Init`, `User: 0` and `Ulimits` are created (nothing of the host in them).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from support.attack import ATTACK_MARKS, Api, logs
from support.daemon import PrivateDaemon
from support.gateway import ALLOW_ALL_POLICY, Gateway, gateway_env, running
from support.paths import REPO
from support.sdnotify import ActivatedGateway, high_fds

pytestmark = ATTACK_MARKS

QUICKSTART = REPO / "examples" / "policies" / "quickstart.yaml"
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def qs(daemon: PrivateDaemon, busybox_image: str) -> Iterator[Api]:
    """A caller of the README's quick start: `dockgate serve --policy quickstart.yaml`
    (127.0.0.1 only, no credentials) in front of the private daemon."""
    with running(Gateway(daemon.host, policy=str(QUICKSTART))) as gw:
        yield Api(gw)


def _read_volume(qs: Api, image: str, volume: str, path: str) -> tuple[int, str]:
    """`docker run --rm -v VOLUME:/data IMAGE cat /data/PATH` through the gateway: the create's
    status, and the output when it was created."""
    body = {
        "Image": image,
        "Cmd": ["cat", f"/data/{path}"],
        "HostConfig": {"Binds": [f"{volume}:/data"]},
    }
    status, created = qs.call("POST", "/v1.41/containers/create", body)
    if status != 201:
        return status, ""
    cid = created["Id"]
    qs.start(cid)
    qs.call("POST", f"/v1.41/containers/{cid}/wait")
    out = logs(qs, cid)
    qs.call("DELETE", f"/v1.41/containers/{cid}?force=1")
    return status, out


@pytest.mark.xfail(
    strict=True,
    reason="quickstart ownership: volume names are shared; a caller creates the named volume a"
    " host container will mount (docker run -v NAME:/path creates it only when missing) and"
    " reads what the host's container writes there",
)
def test_a_volume_made_first_gets_the_host_containers_data(
    qs: Api, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """The operator runs its own containers on the daemon directly with named volumes, as
    `docker run -v appdata:/data` and Compose do: the daemon creates the volume when none has
    that name, and uses the existing one otherwise (a Compose project's `myapp_data` too, with
    a warning only, and none when the volume carries the project's labels, which a caller can
    give it). Ownership keeps a quickstart caller from the operator's volume once it exists
    (the control: 404-like refusal). But a caller who creates the name first (VolumeCreate,
    allowed: `volumes`) owns the volume the operator's container then writes its secret to, and
    reads it back with a container of its own. The same volume lets the caller plant files the
    operator's container reads (its configuration, its scripts), where that container may hold
    the Docker socket (Portainer's `portainer_data:/data`)."""
    token = f"operator-token-{uuid.uuid4().hex}"
    squatted, control = f"appdata-{RUN}", f"opdata-{RUN}"
    operator_write = ["sh", "-c", f"echo {token} > /data/token"]
    try:
        # Control: a volume the operator made first is not the caller's.
        daemon.docker("run", "--rm", "-v", f"{control}:/data", busybox_image, *operator_write)
        status, out = _read_volume(qs, busybox_image, control, "token")
        assert status != 201 and token not in out, (status, out)

        # The caller makes the name first; the operator's own run uses it.
        status, answer = qs.call("POST", "/v1.41/volumes/create", {"Name": squatted})
        assert status == 201, (status, answer)
        daemon.docker("run", "--rm", "-v", f"{squatted}:/data", busybox_image, *operator_write)
        status, out = _read_volume(qs, busybox_image, squatted, "token")
        assert token not in out, "the caller read what the operator's container wrote"
    finally:
        daemon.docker("volume", "rm", "-f", squatted, control, check=False)


# ----- systemd: the directory chain of an inherited unix socket ---------------------------------

NOBODY = 65534

# Run as nobody: move the socket at argv[1] to argv[2], and put at argv[1] a symbolic link to a
# file root owns that nobody may not write (its mode is what the check then reads).
SWAP_FOR_LINK = """
import os, sys
os.rename(sys.argv[1], sys.argv[2])
os.symlink("/etc/passwd", sys.argv[1])
"""

# Run as nobody: GET /containers/json through the unix socket at argv[1].
CALL = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /v1.41/containers/json?all=1 HTTP/1.0\\r\\nHost: docker\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    print(json.dumps({"status": int(head.split()[1]), "body": json.loads(body)}))
except OSError as exc:
    print(json.dumps({"status": None, "error": str(exc)}))
"""


def _as_nobody(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["/usr/bin/python3", *args], user=NOBODY, group=NOBODY, extra_groups=[],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip


def _acl_entry(tag: int, perm: int, qualifier: int = 0xFFFFFFFF) -> bytes:
    return struct.pack("<HHI", tag, perm, qualifier)


@pytest.fixture
def acl_dir() -> Iterator[str]:
    """A root directory, mode 0755, whose POSIX ACL lets user nobody write (what `setfacl -m
    u:nobody:rwx DIR` does; written here as the kernel's xattr, linux/posix_acl_xattr.h). The
    mode then shows 0775: the ACL mask in the group bits, the group root's."""
    path = tempfile.mkdtemp(prefix="dg-a13c-")
    os.chmod(path, 0o755)
    acl = struct.pack("<I", 2) + b"".join(
        (
            _acl_entry(0x01, 7),  # ACL_USER_OBJ rwx
            _acl_entry(0x02, 7, NOBODY),  # ACL_USER nobody rwx
            _acl_entry(0x04, 5),  # ACL_GROUP_OBJ r-x
            _acl_entry(0x10, 7),  # ACL_MASK rwx
            _acl_entry(0x20, 5),  # ACL_OTHER r-x
        )
    )
    try:
        os.setxattr(path, "system.posix_acl_access", acl)
    except OSError as exc:
        shutil.rmtree(path, ignore_errors=True)
        pytest.skip(f"no POSIX ACLs here: {exc}")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_socket_swapped_in_a_directory_an_acl_opens(daemon: PrivateDaemon, acl_dir: str) -> None:
    """The socket-activation check (systemd._unix) trusts the path's directories by their mode
    bits (StrictModes-like). A POSIX ACL entry (`setfacl -m u:nobody:rwx /run/dockgate`, as an
    operator gives one service account access) lets user nobody rename entries in a
    directory that shows 0775, owner and group root: not flagged. Nobody moves systemd's
    0666 socket (SocketMode='s default) away and puts at its path a symbolic link to
    /etc/passwd (root's, 0644, in root's directories: the chain check follows the link and
    is content; the final file is not required to be a socket). The gateway reads "mode 644",
    starts without authentication, and user nobody calls the daemon through the moved socket.
    Not vacuous: the same socket left in place is refused (pinned by the systemd tests)."""
    path = os.path.join(acl_dir, "dockgate.sock")
    moved = os.path.join(acl_dir, "mine.sock")
    real = socket.socket(socket.AF_UNIX)
    real.bind(path)
    os.chmod(path, 0o666)
    real.listen(64)
    try:
        swap = _as_nobody("-c", SWAP_FOR_LINK, path, moved)
        assert swap.returncode == 0, swap.stderr.decode()
        fds = high_fds([real])
        gw = ActivatedGateway(
            daemon.host, "--policy", str(ALLOW_ALL_POLICY),
            listen=None, env=gateway_env({"LISTEN_FDS": "1"}), cwd=REPO, fds=fds,
        )  # fmt: skip
        try:
            gw.spawn()
        finally:
            for fd in fds:
                os.close(fd)
        try:
            deadline = time.monotonic() + 20
            while gw.alive() and "listening on" not in gw.stderr_text():
                assert time.monotonic() < deadline, gw.stderr_text()
                time.sleep(0.2)
            call = _as_nobody("-c", CALL, moved)
            assert call.returncode == 0, call.stderr.decode()
            answer = json.loads(call.stdout)
            assert answer["status"] != 200, (
                f"user nobody got {answer['status']} with {len(answer.get('body') or [])} "
                f"containers through {moved}: {gw.stderr_text().strip().splitlines()[:2]}"
            )
        finally:
            gw.stop()
    finally:
        real.close()


# ----- messages: a password given in an address -------------------------------------------------

_PASSWORD = "hunter2-a13c"


@pytest.mark.parametrize("command", [["serve"], ["doctor"], ["doctor", "--format", "json"]])
@pytest.mark.parametrize(
    "value",
    [f"//admin:{_PASSWORD}@10.0.0.5:2375", f"/tcp://admin:{_PASSWORD}@10.0.0.5:2375"],
)
def test_a_password_in_a_mistyped_docker_host_is_printed(command: list[str], value: str) -> None:
    """shown_address treats any text starting with `/` or `.` as a unix path (a file name, shown
    as it is). A DOCKER_HOST with the scheme left out (`//USER:PASSWORD@HOST`, a
    scheme-relative URL Go's url.Parse reads with its user info) or a stray leading `/` is
    refused by parse_address, and the refusal quotes the whole value, password included, on
    stderr (serve) and in doctor's report (text and JSON: "paste it into an issue"). The same
    value with the scheme (`tcp://admin:PASSWORD@HOST`) is shown as `tcp://***@HOST`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER", "DOCKGATE"))}
    env |= {"PYTHONPATH": str(REPO / "src"), "DOCKER_HOST": value}
    done = subprocess.run(
        ["python3", "-m", "dockgate", *command],
        env=env, capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "DOCKER_HOST" in output, output  # the refusal itself, not a start
    assert _PASSWORD not in output, output


@pytest.mark.xfail(
    strict=True,
    reason="quickstart ownership: network names are shared; a caller creates the network a host"
    " container later joins by name and reaches its ports from a container of its own",
)
def test_a_network_made_first_reaches_the_host_containers_ports(
    qs: Api, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """The operator's scripts run `docker network create appnet || true` then `docker run
    --network appnet ...` (Compose does the same for `myapp_default`, with a warning only):
    the daemon uses the network that has the name. A quickstart caller who made the name first
    (NetworkCreate, allowed: `networks`) owns it, and its own container on it reaches the
    operator's service there by name, here a web server handing out a token. Control: a
    network the operator made first is refused to the caller (not the caller's)."""
    token = f"operator-token-{uuid.uuid4().hex}"
    squatted, control, server = f"appnet-{RUN}", f"opnet-{RUN}", f"opweb-{RUN}"
    serve = f"mkdir -p /www && echo {token} > /www/t && httpd -f -p 8080 -h /www"
    fetch = ["sh", "-c", f"printf 'GET /t HTTP/1.0\\r\\n\\r\\n' | nc {server} 8080"]
    try:
        daemon.docker("network", "create", control)
        status, answer = qs.call(
            "POST",
            "/v1.41/containers/create",
            {"Image": busybox_image, "Cmd": fetch, "HostConfig": {"NetworkMode": control}},
        )
        assert status != 201, (status, answer)

        status, answer = qs.call("POST", "/v1.41/networks/create", {"Name": squatted})
        assert status == 201, (status, answer)
        daemon.docker("network", "create", squatted, check=False)  # `|| true`: it exists
        daemon.docker(
            "run", "-d", "--name", server, "--network", squatted, busybox_image, "sh", "-c", serve
        )  # fmt: skip
        time.sleep(1)
        # By address: this static busybox cannot resolve names (its wget crashes); a client
        # with a resolver reaches the same by the name the daemon's DNS gives it.
        inspected = json.loads(daemon.docker("inspect", server).stdout)[0]
        address = inspected["NetworkSettings"]["Networks"][squatted]["IPAddress"]
        fetch[:] = ["sh", "-c", f"printf 'GET /t HTTP/1.0\\r\\n\\r\\n' | nc {address} 8080"]
        body = {"Image": busybox_image, "Cmd": fetch, "HostConfig": {"NetworkMode": squatted}}
        _, out = qs.run(body)
        assert token not in out, f"the caller's container read the operator's service: {out}"
    finally:
        daemon.docker("rm", "-f", server, check=False)
        for cid in (
            daemon.docker("ps", "-aq", "--filter", f"network={squatted}").stdout.decode().split()
        ):
            daemon.docker("rm", "-f", cid, check=False)
        daemon.docker("network", "rm", squatted, control, check=False)
