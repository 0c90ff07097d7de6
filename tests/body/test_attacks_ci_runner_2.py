"""Issue 11, "attack your own change", second and third passes: what a CI runner still gets past
the guardrails, beyond the first pass's findings (tests/body/test_attacks_ci_runner.py). The
third pass attacked the second's fixes (tmpfs option allowlist, bind volumes judged by their own
`o`, legacy top-level HostConfig fields, build limits, network subnets, blkio paths, logs
details, loopback registry names, the checked-body cost bound).

Each test is one finding, proven by its effect on the real daemon (or, for the gateway's own
robustness, by a measurement). Each was pinned as an `xfail(strict=True)` while the hole was
open; the closed ones are ordinary tests now, and the tests still marked so are holes that stay
open (their reasons say why). The second pass's findings about a user's lockout are
tests/auth/test_attacks_lockout.py.

Callers: a CI runner (the guardrails of examples/policies/ci-runner.yaml, one read-only host
directory), ownership tenants alice and bob, a dashboard policy with redaction, and a gateway
with a `network_subnets` guardrail.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dockgate.body import bodycost, guardrails
from support.attack import (
    ATTACK_MARKS,
    Api,
    LoopbackHandler,
    build_context,
    ci_container,
    ci_runner_policy,
    demux,
    leftovers_fixture,
    loopback_service,
    pings_under_load,
    tenants_fixture,
    tenants_policy,
)
from support.daemon import PrivateDaemon, free_tcp_port
from support.gateway import Gateway, running
from support.remote import UnixHTTPConnection

pytestmark = ATTACK_MARKS

RUN = uuid.uuid4().hex[:8]
ALLOWED_DIR = pathlib.Path(f"/tmp/dgb-allowed-{RUN}")  # allowed read-only by the CI policy
LISTED_PORT = free_tcp_port()  # the one fixed host port the CI policy lets a job publish on

# examples/policies/ci-runner.yaml with the read-only cache at ALLOWED_DIR and no `hosts:`.
CI_POLICY = ci_runner_policy(
    ALLOWED_DIR,
    f"      fetch_urls: false\n      network_drivers: []\n      host_ports: [{LISTED_PORT}]\n",
)


TENANTS_POLICY = tenants_policy(
    "ping, version, info, events, containers, exec, images, build, volumes, networks",
    more="    redact: {env: true, mounts: true, labels: true}\n",
)


# ----- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ci(
    daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """A gateway with the CI runner's policy; no credentials."""
    ALLOWED_DIR.mkdir(exist_ok=True)
    base = tmp_path_factory.mktemp("attack2-ci")
    (base / "policy.yaml").write_text(CI_POLICY)
    try:
        with running(Gateway(daemon.host, policy=str(base / "policy.yaml"))) as gateway:
            yield Api(gateway)
    finally:
        shutil.rmtree(ALLOWED_DIR, ignore_errors=True)


tenants = tenants_fixture(TENANTS_POLICY, "attack2-tenants")


leftovers = leftovers_fixture()


# ----- networks --------------------------------------------------------------------------------

# TEST-NET-2 (RFC 5737): the host reaches it through its default route, out of its uplink.
HIJACKED_SUBNET = "198.51.100.0/24"
HIJACKED_ADDRESS = "198.51.100.77"


def _route(address: str) -> str:
    return subprocess.run(
        ["ip", "route", "get", address], capture_output=True, text=True, check=False
    ).stdout


def test_bridge_subnet_and_static_address_capture_the_hosts_traffic(
    ci: Api, busybox_image: str, daemon: PrivateDaemon, leftovers: dict[str, list[str]]
) -> None:
    """Found by the review: NetworkCreate IPAM.Config Subnet/Gateway and an endpoint's
    IPv4Address were inert: a job's bridge network took over a host route, and a container
    answered the host's own traffic to that address (the host's resolver, its registry, a LAN
    peer). Closed: explicit ranges must lie inside the policy's `network_subnets` (none by
    default: the daemon's own pools). Straight to the daemon the same subnet does take the
    route (the attack is real); through dockgate it is refused and nothing is made."""
    assert "dev br-" not in _route(HIJACKED_ADDRESS)
    direct = f"dgb-route-direct-{RUN}"
    leftovers["network"].append(direct)
    daemon.docker("network", "create", "--subnet", HIJACKED_SUBNET, direct)
    try:
        assert "dev br-" in _route(HIJACKED_ADDRESS)
    finally:
        daemon.docker("network", "rm", direct, check=False)
    network = f"dgb-route-{RUN}"
    status, answer = ci.call(
        "POST",
        "/v1.41/networks/create",
        {"Name": network, "IPAM": {"Config": [{"Subnet": HIJACKED_SUBNET}]}},
    )
    if status == 201:
        leftovers["network"].append(network)
        body = ci_container(
            busybox_image, "echo answered-by-the-job | nc -l -p 8080", {"NetworkMode": network}
        )
        endpoint = {"IPAMConfig": {"IPv4Address": HIJACKED_ADDRESS}}
        body["NetworkingConfig"] = {"EndpointsConfig": {network: endpoint}}
        status, created = ci.call("POST", "/v1.41/containers/create", body)
        if status == 201:
            leftovers["container"].append(created["Id"])
            ci.start(created["Id"])
    route = _route(HIJACKED_ADDRESS)
    heard = b""
    if "dev br-" in route:
        # The host's own connection to that (outside) address ends in the job's container.
        for _ in range(30):
            try:
                with socket.create_connection((HIJACKED_ADDRESS, 8080), timeout=2) as conn:
                    heard = conn.recv(100)
                    break
            except OSError:
                time.sleep(0.2)
    assert "dev br-" not in route, route
    assert b"answered-by-the-job" not in heard
    assert status == 403 and "network_subnets" in json.dumps(answer), (status, answer)
    listed = daemon.docker("network", "ls", "-q", "--filter", f"name={network}").stdout
    assert not listed.strip(), listed


# ----- builds ----------------------------------------------------------------------------------


class _LoopbackSecret(LoopbackHandler):
    """A service on the host's loopback only (an admin port, a metadata proxy, a daemon's TCP
    socket): it answers a secret to any GET."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.answer(200, "text/plain", f"loopback-only-secret-{RUN}\n".encode())


# Within the CI policy's max_memory and max_cpus (a classic build's RUN steps get them).
BUILD_LIMITS = "memory=268435456&cpuquota=100000&cpuperiod=100000"


def _built_images(text: str) -> list[str]:
    return [
        json.loads(line)["aux"]["ID"]
        for line in text.splitlines()
        if '"aux"' in line and '"ID"' in line
    ]


@pytest.mark.xfail(
    strict=True,
    reason="a Dockerfile's ADD http://127.0.0.1:PORT/... is fetched by the daemon from the "
    "host's network namespace and its whole answer lands in the image (RUN cat prints it): "
    "fetch_urls: false (remote=, fromSrc=) is bypassed, loopback-only services are read"
    "; not closable in the gateway (the Dockerfile is in the context tar, which cannot be "
    "read soundly): documented in docs/policy.md 'What guardrails do not see'",
)
def test_dockerfile_add_url_reads_a_loopback_only_service(
    ci: Api, busybox_image: str, daemon: PrivateDaemon
) -> None:
    with loopback_service(_LoopbackSecret) as (port, requests):
        dockerfile = (
            f"FROM {busybox_image}\n"
            f"ADD http://127.0.0.1:{port}/internal/secret /secret\n"
            "RUN cat /secret\n"
        ).encode()
        _, answer = ci.call(
            "POST",
            f"/v1.41/build?rm=1&forcerm=1&nocache=1&{BUILD_LIMITS}",
            build_context({"Dockerfile": dockerfile}),
            headers={"Content-Type": "application/x-tar"},
        )
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else json.dumps(answer)
    for image in _built_images(text):
        daemon.docker("rmi", "-f", image, check=False)
    assert f"loopback-only-secret-{RUN}" not in text
    assert requests == []


# ----- redaction -------------------------------------------------------------------------------

DASHBOARD_POLICY = """
policies:
  dashboard:
    read_only: true
    redact: {env: true, mounts: true, labels: true}
    rules:
      - allow: {sections: [ping, version, info, events, containers]}
"""


def test_log_details_print_redacted_env_and_labels(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """Found by the review: ContainerLogs details=1 prefixes every line with the values of the
    variables and labels named by the json-file/local log options env=/labels= (a
    deployment's log shipping, or daemon-wide log-opts): redact env/labels was bypassed.
    Closed: a truthy `details` is refused (403) where env or labels are redacted; the same
    request straight to the daemon prints them (the attack is real), and the logs without
    details still pass."""
    secret, token = f"db-pw-{RUN}", f"vault-token-{RUN}"
    # Made by the operator's deployment, straight on the daemon; the dashboard only reads.
    made = daemon.docker(
        "run", "-d",
        "--log-opt", "env=DB_PASSWORD", "--log-opt", "labels=vault.token",
        "-e", f"DB_PASSWORD={secret}", "-l", f"vault.token={token}",
        busybox_image, "sh", "-c", "echo started; sleep 60",
    )  # fmt: skip
    cid = made.stdout.decode().strip()
    (tmp_path / "policy.yaml").write_text(DASHBOARD_POLICY)
    try:
        with running(Gateway(daemon.host, policy=str(tmp_path / "policy.yaml"))) as gateway:
            dashboard = Api(gateway)
            status, inspect = dashboard.call("GET", f"/v1.41/containers/{cid}/json")
            assert status == 200, (status, inspect)
            assert secret not in json.dumps(inspect)  # what redaction promises
            for _ in range(50):
                direct = daemon.docker("logs", "--details", cid).stdout.decode()
                if "started" in direct:
                    break
                time.sleep(0.1)
            # Straight to the daemon, details print both values: the attack is not vacuous.
            assert secret in direct and token in direct, direct
            status, raw = dashboard.call("GET", f"/v1.41/containers/{cid}/logs?stdout=1&details=1")
            text = raw.decode(errors="replace") if isinstance(raw, bytes) else json.dumps(raw)
            assert status == 403, (status, text)
            assert "dockgate" in text and "details" in text, text
            status, raw = dashboard.call("GET", f"/v1.41/containers/{cid}/logs?stdout=1")
            assert status == 200, (status, raw)
            plain = demux(raw if isinstance(raw, bytes) else json.dumps(raw).encode())
            assert "started" in plain, plain
    finally:
        daemon.docker("rm", "-f", cid, check=False)
    assert secret not in text + plain, text
    assert token not in text + plain, text


# ----- inert fields that reach the host ----------------------------------------------------------


def test_blkio_device_path_tells_which_host_files_exist(
    ci: Api, busybox_image: str, leftovers: dict[str, list[str]], tmp_path: pathlib.Path
) -> None:
    """Found by the review: HostConfig.Blkio*Device*[].Path was inert, but the daemon stats
    it on the host at start: its error told whether any host path exists ('stat X: no such
    file' vs a cgroup write error), e.g. /root/.ssh/id_rsa; the paths policy was not asked.
    Closed: those paths are host devices, judged by the `devices` guardrail (refused here)."""
    present = tmp_path / f"present-{RUN}"
    present.write_text("x")
    answers = {}
    for path in (present, tmp_path / f"absent-{RUN}"):
        body = ci_container(
            busybox_image, "true", {"BlkioDeviceReadBps": [{"Path": str(path), "Rate": 1 << 20}]}
        )
        status, created = ci.call("POST", "/v1.41/containers/create", body)
        if status != 201:
            answers[path.name] = f"create {status}"
            continue
        leftovers["container"].append(created["Id"])
        status, started = ci.call("POST", f"/v1.41/containers/{created['Id']}/start")
        answers[path.name] = json.dumps(started, default=repr)
    told = [name for name, text in answers.items() if "no such file or directory" in text]
    # The two answers must not differ by whether a host path the policy does not allow exists.
    assert told != [f"absent-{RUN}"], answers
    assert answers == {f"present-{RUN}": "create 403", f"absent-{RUN}": "create 403"}, answers


def _answer_on(port: int, tries: int = 30) -> bytes:
    """What a listener on the host's 127.0.0.1:`port` says first (b"" if nothing answers)."""
    for _ in range(tries):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                heard = conn.recv(100)
            if heard:
                return heard
        except OSError:
            pass
        time.sleep(0.2)
    return b""


def _published_container(image: str, network: str, bindings: dict[str, Any]) -> dict[str, Any]:
    body = ci_container(
        image,
        "echo answered-by-the-job | nc -l -p 8080",
        {"NetworkMode": network, "PortBindings": {"8080/tcp": [bindings]}},
    )
    body["ExposedPorts"] = {"8080/tcp": {}}
    return body


def test_port_binding_squats_a_host_loopback_port(
    ci: Api, busybox_image: str, daemon: PrivateDaemon, leftovers: dict[str, list[str]]
) -> None:
    """Found by the review: HostConfig.PortBindings HostIp/HostPort were inert, so a job took
    any free port on the host's loopback (privileged ones too; docker-proxy runs as root) and
    answered the host's own clients of a local service that was down or not started yet.
    Closed: a fixed host port must lie in the policy's `host_ports` (none by default);
    ephemeral ones (the daemon picks) stay allowed. Sent straight to the daemon, the squat
    answers on the host port; through dockgate it is refused (inner and legacy top-level
    PortBindings) and no container is made; `-p 127.0.0.1::8080` and a listed port still work.
    Fails on the old code (the create passed and the job answered on the port)."""
    network = f"dgb-ports-{RUN}"
    status, answer = ci.call("POST", "/v1.41/networks/create", {"Name": network})
    assert status == 201, (status, answer)
    leftovers["network"].append(network)

    # The attack works when sent straight to the daemon (so the refusal below is not vacuous).
    port = free_tcp_port()
    direct = f"dgb-squat-direct-{RUN}"
    leftovers["container"].append(direct)
    daemon.docker(
        *("run", "-d", "--name", direct, "--network", network),
        *("-p", f"127.0.0.1:{port}:8080", busybox_image),
        *("sh", "-c", "echo answered-by-the-job | nc -l -p 8080"),
    )
    assert b"answered-by-the-job" in _answer_on(port)

    # Through dockgate: refused, inner HostConfig and the legacy top-level form alike.
    port = free_tcp_port()
    squat = {"HostIp": "127.0.0.1", "HostPort": str(port)}
    inner = _published_container(busybox_image, network, squat)
    legacy = {**inner, **inner["HostConfig"]}
    del legacy["HostConfig"]
    for body in (inner, legacy, _published_container(busybox_image, network, {"HostPort": "80"})):
        name = f"dgb-squat-{RUN}"
        status, refused = ci.call("POST", f"/v1.41/containers/create?name={name}", body)
        if status == 201:
            leftovers["container"].append(refused["Id"])
        assert status == 403, (status, refused)
        assert "is not allowed" in refused["message"] and "host_ports" in refused["message"]
        listed = daemon.docker("ps", "-aq", "--filter", f"name={name}").stdout.strip()
        assert listed == b"", listed
    assert _answer_on(port, tries=3) == b""

    # An ephemeral port on the loopback (`-p 127.0.0.1::8080`): the daemon picks it.
    body = _published_container(busybox_image, network, {"HostIp": "127.0.0.1", "HostPort": ""})
    cid = ci.create(body)
    leftovers["container"].append(cid)
    ci.start(cid)
    status, inspected = ci.call("GET", f"/v1.41/containers/{cid}/json")
    assert status == 200, (status, inspected)
    picked = int(inspected["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"])
    assert picked != 0
    assert b"answered-by-the-job" in _answer_on(picked)

    # The port the policy lists.
    body = _published_container(
        busybox_image, network, {"HostIp": "127.0.0.1", "HostPort": str(LISTED_PORT)}
    )
    cid = ci.create(body)
    leftovers["container"].append(cid)
    ci.start(cid)
    assert b"answered-by-the-job" in _answer_on(LISTED_PORT)


# ----- the gateway's own resources -------------------------------------------------------------


def test_one_caller_s_checked_bodies_stall_the_event_loop(ci: Api) -> None:
    """Found by the review: checked bodies are parsed and walked on the event loop (~0.1-0.2 s
    of CPU per 1 MiB create of many small mounts): one caller sending them back to back from 8
    connections took everyone's /_ping from ~1 ms to a median of hundreds of ms. Closed: a
    checked body may hold at most bodycost.MAX_SEPARATORS keys and list entries, counted
    before it is parsed (413), and the readers' per-entry work is cheaper. Deterministic part:
    the body is refused 413 for its count; timing part: /_ping stays fast meanwhile. Fails on
    the old code (the body was judged, and /_ping's median was ~1 s)."""
    port = ci.gateway.port
    mounts = ",".join('{"Type":"tmpfs","Target":"/t"}' for _ in range(33000))
    body = (
        '{"Image":"x","HostConfig":{"SecurityOpt":["no-new-privileges"],"Memory":268435456,'
        f'"NanoCpus":1000000000,"Mounts":[{mounts}]}}}}'
    ).encode()
    assert len(body) <= 1024 * 1024
    status, refused = ci.call("POST", "/v1.41/containers/create", body)
    assert status == 413, (status, refused)
    assert f"at most {bodycost.MAX_SEPARATORS} are checked" in refused["message"], refused
    idle, loaded, sent = pings_under_load(port, "/v1.41/containers/create", body)
    median = loaded[len(loaded) // 2]
    assert sent > 0
    # Measured on a loaded 2-core machine: ~0.03 s now (the gateway reads ~250 MiB/s of
    # bodies), ~1 s before; the bound leaves room for the load of other tests.
    assert median < 0.15, (f"idle median {idle[5]:.4f}s", f"loaded median {median:.3f}s", sent)


def _buildkit_output(raw: bytes) -> bytes:
    """The step output of a BuildKit build answer (its base64 trace records)."""
    out = b""
    for line in raw.split(b"\r\n"):
        if b"moby.buildkit.trace" not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            out += base64.b64decode(json.loads(line)["aux"])
    return out


def test_buildkit_cache_mount_is_shared_between_tenants(
    tenants: dict[str, Api], busybox_image: str, daemon: PrivateDaemon
) -> None:
    """Found by the review: BuildKit cache mounts (RUN --mount=type=cache,id=X,
    POST /build?version=2) are one daemon-wide store: alice's build read what bob's build left
    in it (and could plant into it for bob's next build). Closed: ownership mode refuses
    BuildKit builds (403, use the classic builder) and BuildPrune. Shown straight on the daemon
    first (bob's secret is there for any BuildKit build), then through the gateway: both
    builds are refused and nothing of bob's is read. Fails on the old code (both were 200)."""
    alice, bob = tenants["alice"], tenants["bob"]
    secret = f"bob-build-secret-{RUN}"
    # networkmode=none: the session's daemon has no default bridge (--bridge=none).
    query = "/v1.41/build?version=2&networkmode=none&rm=1"
    tar = {"Content-Type": "application/x-tar"}
    writes = (
        f"FROM {busybox_image}\n"
        f"RUN --mount=type=cache,id=deps-{RUN},target=/cache "
        f"sh -c 'echo {secret} > /cache/token'\n"
    ).encode()
    reads = (
        f"FROM {busybox_image}\n"
        f"RUN --mount=type=cache,id=deps-{RUN},target=/c sh -c 'cat /c/token || true'\n"
    ).encode()
    try:
        # Straight on the daemon: one build's cache mount is read by the next one's.
        status, answer = _direct(daemon, "POST", query, build_context({"Dockerfile": writes}), tar)
        assert status == 200 and b'"error"' not in answer, (status, answer)
        status, answer = _direct(daemon, "POST", query, build_context({"Dockerfile": reads}), tar)
        assert status == 200, (status, answer)
        assert secret.encode() in _buildkit_output(answer)
        # Through dockgate, in ownership mode: both refused, nothing of bob's read.
        status, refused = bob.call("POST", query, build_context({"Dockerfile": writes}), tar)
        assert status == 403, (status, refused)
        assert "classic builder" in refused["message"], refused
        status, refused = alice.call("POST", query, build_context({"Dockerfile": reads}), tar)
        assert status == 403, (status, refused)
        assert secret not in json.dumps(refused)
        # The classic builder still works for tenants (no cache mounts there).
        classic = f"FROM {busybox_image}\nRUN true\n".encode()
        status, built = alice.call(
            "POST",
            "/v1.41/build?networkmode=none&rm=1",
            build_context({"Dockerfile": classic}),
            tar,
        )
        assert status == 200 and b'"error"' not in built, (status, built)
        # A build-cache prune would wipe every tenant's cache: refused.
        status, refused = alice.call("POST", "/v1.41/build/prune?all=1")
        assert status == 403, (status, refused)
    finally:
        daemon.docker("builder", "prune", "-af", check=False)
        daemon.docker("image", "prune", "-f", check=False)  # the untagged images built


def _direct(
    daemon: PrivateDaemon, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """One request straight to the daemon's unix socket (no gateway)."""
    conn = UnixHTTPConnection(daemon.host.removeprefix("unix://"))
    try:
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


class _LoopbackRegistry(_LoopbackSecret):
    """The same service answering as a broken registry would: a 404 whose body the daemon
    quotes in its error."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.answer(404, "text/plain", f"loopback-only-secret-{RUN}".encode())

    do_HEAD = do_POST = do_PUT = do_PATCH = do_GET


@pytest.mark.xfail(
    strict=True,
    reason="the loopback-registry refusal judges ImageCreate fromImage only: a build's "
    "FROM 127.0.0.1:PORT/x (or COPY --from=) makes the daemon GET the loopback-only service "
    "and quote its answer in the build's error"
    "; not closable in the gateway (the Dockerfile is in the context tar, which cannot be "
    "read soundly): documented in docs/policy.md 'What guardrails do not see'",
)
def test_build_from_a_loopback_registry_reads_a_loopback_only_service(ci: Api) -> None:
    with loopback_service(_LoopbackRegistry) as (port, requests):
        dockerfile = f"FROM 127.0.0.1:{port}/internal/x\n".encode()
        _, answer = ci.call(
            "POST",
            f"/v1.41/build?rm=1&forcerm=1&{BUILD_LIMITS}",
            build_context({"Dockerfile": dockerfile}),
            headers={"Content-Type": "application/x-tar"},
        )
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else json.dumps(answer)
    assert f"loopback-only-secret-{RUN}" not in text
    assert requests == []


def test_push_to_a_loopback_registry_reads_a_loopback_only_service(
    ci: Api, busybox_image: str, daemon: PrivateDaemon
) -> None:
    """Found by the review: the loopback-registry refusal judged ImageCreate fromImage only:
    tagging an image 127.0.0.1:PORT/x and pushing it made the daemon send GET and POST (the
    layers' upload) to a loopback-only service and quote its answer. Closed: image names on a
    loopback registry are judged wherever a caller gives one (ImageTag/ImageCommit `repo`,
    ImageBuild `t`, ImagePush's path name), refused unless `images` lists them. The push of a
    name tagged straight on the daemon (as an ImageLoad tar could carry it) is refused too,
    and the service hears nothing. Fails on the old code (tag and push went through)."""
    with loopback_service(_LoopbackRegistry) as (port, requests):
        repository = f"127.0.0.1:{port}/internal/x"
        auth = {"X-Registry-Auth": base64.b64encode(b"{}").decode()}
        try:
            status, answer = ci.call(
                "POST", f"/v1.41/images/{busybox_image}/tag?repo={repository}&tag=latest"
            )
            assert status == 403, (status, answer)
            assert "loopback" in answer["message"], answer
            # The other ways a caller names an image: a commit's (the CI policy has no commit: as
            # a unit) and a build's (every `t`).
            with pytest.raises(guardrails.BodyRefused, match="loopback"):
                guardrails.check_request(
                    guardrails.Guardrails(), "ImageCommit", f"container=x&repo={repository}", b""
                )
            status, answer = ci.call(
                "POST",
                f"/v1.41/build?t=ok:1&t=localhost:{port}/y&{BUILD_LIMITS}",
                build_context({"Dockerfile": f"FROM {busybox_image}\n".encode()}),
                headers={"Content-Type": "application/x-tar"},
            )
            assert status == 403 and "loopback" in answer["message"], (status, answer)
            # A local image with that name (made straight on the daemon, as a loaded tar would
            # name it): its push is refused before the daemon is asked.
            daemon.docker("tag", busybox_image, f"{repository}:latest")
            status, answer = ci.call(
                "POST", f"/v1.41/images/{repository}/push?tag=latest", headers=auth
            )
            assert status == 403 and "pushing" in answer["message"], (status, answer)
            assert requests == []
            # Not vacuous: the same push straight to the daemon reaches the service.
            _, direct = _direct(
                daemon, "POST", f"/v1.41/images/{repository}/push?tag=latest", b"", auth
            )
            assert requests, direct
        finally:
            daemon.docker("rmi", f"{repository}:latest", check=False)
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else json.dumps(answer)
    assert f"loopback-only-secret-{RUN}" not in text


# ----- third pass ------------------------------------------------------------------------------


SECRET = f"loopback-only-secret-{RUN}"


class _LoopbackIndex(LoopbackHandler):
    """A service on the host's loopback only, answering as a v1 registry index would: its
    search results are whatever it holds (here, a secret)."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/v1/search"):
            data = json.dumps(
                {"num_results": 1, "query": "x", "results": [{"name": SECRET, "description": ""}]}
            ).encode()
        else:
            data = b"true"
        self.answer(200, "application/json", data)


def test_image_search_reads_a_loopback_only_service(ci: Api) -> None:
    """Found by the review: ImageSearch term=127.0.0.1:PORT/x was not judged, and the daemon
    GET /v1/_ping and /v1/search from a loopback-only service and returned its answer. Closed:
    a search of a loopback registry is refused like a pull (guardrails.search_problem), and
    the service sees no request; a Docker Hub term is still searched by the daemon."""
    with loopback_service(_LoopbackIndex) as (port, requests):
        # The same registry is refused for a pull (guardrails.pull_problem).
        status, answer = ci.call("POST", f"/v1.41/images/create?fromImage=127.0.0.1:{port}/x")
        assert status == 403 and "loopback" in answer["message"], (status, answer)
        status, answer = ci.call("GET", f"/v1.41/images/search?term=127.0.0.1:{port}/x")
    assert status == 403 and "searching a registry on the daemon's loopback" in answer["message"]
    assert SECRET not in json.dumps(answer, default=repr), (status, answer)
    assert requests == []


def _hosts_file_loopback_name() -> str | None:
    """A name other than localhost that /etc/hosts maps to a loopback address (the daemon's
    resolver reads /etc/hosts before DNS)."""
    try:
        lines = pathlib.Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.partition("#")[0].split()
        if len(fields) < 2 or not fields[0].startswith("127."):
            continue
        for name in fields[1:]:
            if "." not in name and name != "localhost" and name.isalnum():
                return name
    return None


@pytest.mark.xfail(
    strict=True,
    reason="a registry named by a host name that /etc/hosts maps to 127.0.0.1 (here `vm`, "
    "`runsc`) is not seen as loopback: a pull of NAME:PORT/x makes the daemon GET the "
    "loopback-only service and quote its answer (documented as 'a DNS name'; the gateway "
    "could resolve the name as the daemon does)",
)
def test_pull_from_a_hosts_file_name_reads_a_loopback_only_service(ci: Api) -> None:
    name = _hosts_file_loopback_name()
    if name is None:
        pytest.skip("no name other than localhost maps to 127.0.0.1 in /etc/hosts")
    with loopback_service(_LoopbackRegistry) as (port, requests):
        status, answer = ci.call(
            "POST", f"/v1.41/images/create?fromImage={name}:{port}/internal/x&tag=latest"
        )
    assert SECRET not in json.dumps(answer, default=repr), (status, answer)
    assert requests == []


# ----- the gateway's own resources -------------------------------------------------------------

SUBNETS_POLICY = """
version: 1
policies:
  ci-runner:
    rules:
      - allow: {sections: [ping, version, info, networks]}
    guardrails:
      network_subnets: [10.0.0.0/8]
"""


@pytest.fixture(scope="module")
def subnets_gateway(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway whose policy lets networks take subnets inside 10.0.0.0/8."""
    base = tmp_path_factory.mktemp("attack3-subnets")
    (base / "policy.yaml").write_text(SUBNETS_POLICY)
    with running(Gateway(daemon.host, policy=str(base / "policy.yaml"))) as gateway:
        yield gateway


def test_network_subnets_of_one_caller_stall_the_event_loop(subnets_gateway: Gateway) -> None:
    """Found by the review: a NetworkCreate of ~5,000 IPAM.Config subnets (under the body cost
    bound) cost ~0.1 s of event-loop CPU to judge against network_subnets, and 8 connections
    sending it took everyone's /_ping to a median of ~1 s. Closed: IPAM.Config may have at most
    16 entries (subnets.MAX_IPAM_CONFIGS), refused before any address is parsed."""
    port = subnets_gateway.port
    configs = ",".join(['{"Subnet":"10.19.0.0/16"}'] * 4990 + ['{"Subnet":"192.0.2.0/24"}'])
    body = f'{{"Name":"x-{RUN}","IPAM":{{"Config":[{configs}]}}}}'.encode()
    assert bodycost.cost_problem(body) is None
    api = Api(subnets_gateway)
    status, refused = api.call("POST", "/v1.41/networks/create", body)
    assert status == 400, (status, refused)
    assert "IPAM.Config may have at most 16 entries" in refused["message"], refused
    idle, loaded, sent = pings_under_load(port, "/v1.41/networks/create", body)
    median = loaded[len(loaded) // 2]
    assert sent > 0
    # The bound of the second pass's stall test (checked container bodies now: ~0.03 s).
    assert median < 0.15, (f"idle median {idle[5]:.4f}s", f"loaded median {median:.3f}s", sent)
