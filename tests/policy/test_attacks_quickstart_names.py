"""Issue 13, attack review, second pass: examples/policies/quickstart.yaml (now with ownership for
the anonymous callers of loopback) attacked as its caller, against the real daemon.

Each finding is one test, proven by its effect; both stay open, `xfail(strict=True)`:
names are shared (as image names are, THREAT_MODEL.md): a caller who creates a volume or a
network under a name the host's own containers later use by name owns it, and gets what the
host's container writes to the volume, or reaches its ports on the network (the controls: the
same objects made first by the operator are refused to the caller). The other findings of this
pass are fixed: the socket in a directory a POSIX ACL opens
(tests/startup/test_attacks_socket_swap.py), and a password in a mistyped DOCKER_HOST
(tests/server/test_attacks_docker_host.py).

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
import time
import uuid

import pytest

from support.attack import ATTACK_MARKS, Api, logs, quickstart_fixture
from support.daemon import PrivateDaemon

pytestmark = ATTACK_MARKS

RUN = uuid.uuid4().hex[:8]


qs = quickstart_fixture()


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
