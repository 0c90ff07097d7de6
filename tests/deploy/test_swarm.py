"""dockgate as a Swarm service on the managers, deployed from the repository's own stack files
with `docker stack deploy`, on a real one-node swarm.

The swarm runs on a private daemon in a network namespace of its own (support/netns.py), so that
dockerd may set up iptables, its bridges and host-mode published ports without touching this
machine's networking. The host reaches the manager at its namespace address, as a client outside
the cluster would. The image is the one tests/deploy/test_image.py builds, copied over.

Claims checked, through the published port with the docker CLI and the SDK over TLS:
`GET /services` with credentials lists the stack's own service; without credentials 401; a
request the policy does not allow 403 with the reason; the gateway runs as uid 65532 on a
read-only root; its log is the audit trail. A new policy version deployed with the stack, and a
broken one rolled back by Swarm on its own. The private variant (stack-private.yml) answers
clients on its overlay network and opens no port on the node. Cleanup removes the stacks,
leaves the swarm and removes the image (then the daemon and its namespace go).
"""

from __future__ import annotations

import http.client
import json
import pathlib
import shlex
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import docker
import pytest

from support.daemon import PrivateDaemon
from support.image import REPO, copy_image
from support.netns import NamespacedDaemon, namespaced_daemon
from support.remote import basic_header, remote_docker
from support.swarm import create_stack_secrets, deploy_stack, healthy_task

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(1200)]

STACK = "dgtest"
SERVICE = f"{STACK}_gateway"
PRIVATE_STACK = "dgpriv"
PORT = 2376  # stack.yml's default published port: the namespace is ours, nothing else uses it
USER = "alice"
PASSWORD = f"pw-{uuid.uuid4().hex}"
POLICY_V1 = REPO / "deploy" / "policy.yaml"
# Version 2 also lets callers list containers (`docker ps`), which version 1 refuses.
POLICY_V2 = POLICY_V1.read_text().replace(
    "sections: [ping, version, info, events, services, tasks, nodes, networks]",
    "sections: [ping, version, info, events, services, tasks, nodes, networks, containers]",
)
BROKEN_POLICY = "version: 1\npolicies:\n  p: {rules: [{allow: {operations: [NoSuchOperation]}}]}\n"

T = TypeVar("T")


@dataclass
class Swarm:
    node: NamespacedDaemon
    image: str  # the image ID: a task given an ID never tries a registry
    work: pathlib.Path
    client_certs: pathlib.Path  # ca.pem, for DOCKER_CERT_PATH
    ca_file: pathlib.Path

    def cli(self, *args: str, user: str | None = USER, port: int = PORT) -> tuple[int, str, str]:
        """The docker CLI through the published ``port``, over verified TLS, as ``user``."""
        headers = {"Authorization": basic_header(user, PASSWORD)} if user else {}
        url = f"tcp://{self.node.netns.address}:{port}"
        proc = remote_docker(url, self.work, *args, headers=headers, cert_path=self.client_certs)
        return proc.returncode, proc.stdout, proc.stderr

    def https(self, path: str, user: str | None = USER) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTPS request through the published port."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        conn = http.client.HTTPSConnection(
            self.node.netns.address, PORT, context=context, timeout=30
        )
        try:
            headers = {"Authorization": basic_header(user, PASSWORD)} if user else {}
            conn.request("GET", path, headers=headers)
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()

    def deploy(self, stack_file: str, stack: str, **variables: str) -> None:
        """deploy/``stack_file`` with the image and socket of this node."""
        socket_path = str(self.node.socket_path)
        variables = {"DOCKGATE_IMAGE": self.image, "DOCKER_SOCKET": socket_path, **variables}
        deploy_stack(self.node, stack_file, stack, **variables)

    def service(self, name: str = SERVICE) -> dict[str, object]:
        return json.loads(self.node.docker("service", "inspect", name).stdout)[0]  # type: ignore[no-any-return]

    def wait_healthy(self, service: str = SERVICE, timeout: float = 180) -> str:
        cid = wait_for(lambda: healthy_task(self.node, service), timeout)
        assert cid, f"no healthy task of {service}:\n{self.tasks(service)}"
        return cid

    def tasks(self, service: str = SERVICE) -> str:
        proc = self.node.docker("service", "ps", "--no-trunc", service, check=False)
        return proc.stdout.decode() + proc.stderr.decode()


def wait_for(probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T | None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = probe()
        except (OSError, http.client.HTTPException):
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)


def _remove_stack(node: NamespacedDaemon, stack: str) -> None:
    node.docker("stack", "rm", stack, check=False)
    label = f"label=com.docker.stack.namespace={stack}"
    wait_for(lambda: not node.docker("ps", "-aq", "--filter", label).stdout.strip(), 60)


@pytest.fixture(scope="module")
def swarm(
    daemon: PrivateDaemon, dockgate_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Swarm]:
    work = tmp_path_factory.mktemp("swarm")
    with namespaced_daemon() as node:
        image = copy_image(daemon, node, dockgate_image)
        try:
            node.docker("swarm", "init", "--advertise-addr", node.netns.address, timeout=60)
            client_certs = create_stack_secrets(node, work, [node.netns.address], {USER: PASSWORD})
            yield Swarm(node, image, work, client_certs, client_certs / "ca.pem")
        finally:
            for stack in (STACK, PRIVATE_STACK):
                _remove_stack(node, stack)
            node.docker("swarm", "leave", "--force", check=False, timeout=60)
            node.docker("image", "rm", "--force", image, check=False)


@pytest.fixture(scope="module")
def stack(swarm: Swarm) -> Swarm:
    """deploy/stack.yml deployed as it stands (policy version 1), and healthy."""
    swarm.deploy("stack.yml", STACK)
    swarm.wait_healthy()
    return swarm


def test_the_stack_runs_on_the_manager_with_its_secrets_and_config(stack: Swarm) -> None:
    spec = stack.service()["Spec"]
    assert isinstance(spec, dict)
    assert spec["Mode"] == {"Global": {}}
    task = spec["TaskTemplate"]
    assert task["Placement"]["Constraints"] == ["node.role == manager"]
    assert [p["PublishMode"] for p in spec["EndpointSpec"]["Ports"]] == ["host"]
    assert spec["UpdateConfig"]["FailureAction"] == "rollback"
    assert task["Resources"]["Limits"]["MemoryBytes"] == 256 * 1024 * 1024
    secrets = {s["SecretName"]: s["File"] for s in task["ContainerSpec"]["Secrets"]}
    names = ("dockgate_htpasswd", "dockgate_tls_cert", "dockgate_tls_key")
    assert set(secrets) == {f"{name}_1" for name in names}
    assert {f["Name"] for f in secrets.values()} == set(names)  # /run/secrets/<name>
    assert all((f["UID"], f["Mode"]) == ("65532", 0o400) for f in secrets.values())
    assert [c["ConfigName"] for c in task["ContainerSpec"]["Configs"]] == ["dockgate_policy_1"]


def test_services_listed_with_credentials_through_the_published_port(stack: Swarm) -> None:
    status, out, err = stack.cli("service", "ls", "--format", "{{.Name}}")
    assert status == 0, err
    assert SERVICE in out.split()


def test_the_sdk_lists_the_stack_over_tls(stack: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets these override the CA the SDK asks for.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    client = docker.DockerClient(
        base_url=f"https://{stack.node.netns.address}:{PORT}",
        tls=docker.tls.TLSConfig(ca_cert=str(stack.ca_file), verify=True),
        version="1.41",
        timeout=60,
    )
    try:
        client.api.headers["Authorization"] = basic_header(USER, PASSWORD)
        assert SERVICE in [s.name for s in client.services.list()]
        assert [n.attrs["Spec"]["Role"] for n in client.nodes.list()] == ["manager"]
    finally:
        client.close()


def test_without_credentials_401(stack: Swarm) -> None:
    status, headers, _ = stack.https("/v1.41/services", user=None)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    code, _, err = stack.cli("service", "ls", user=None)
    assert code != 0 and "authentication required" in err, err


def test_a_request_the_policy_refuses_403_with_the_reason(stack: Swarm) -> None:
    status, _, body = stack.https("/v1.41/containers/json")
    assert status == 403
    assert "ContainerList" in json.loads(body)["message"]
    code, _, err = stack.cli("ps")
    assert code != 0 and "dockgate" in err, err


def test_the_gateway_runs_unprivileged_on_a_read_only_root(stack: Swarm) -> None:
    cid = stack.wait_healthy()
    state = json.loads(stack.node.docker("inspect", cid).stdout)[0]
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    status = pathlib.Path(f"/proc/{state['State']['Pid']}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[:2] == ["65532", "65532"]
    assert str(stack.node.socket_path.stat().st_gid) in fields["Groups"].split()


def test_the_task_log_is_the_audit_trail(stack: Swarm) -> None:
    stack.https("/v1.41/containers/json")  # refused: one record to look for
    cid = stack.wait_healthy()

    def refusal() -> dict[str, object] | None:
        lines = stack.node.docker("logs", cid).stdout.decode().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        found = [r for r in records if r.get("operation") == "ContainerList"]
        return found[-1] if found else None

    record = wait_for(refusal, 10)
    assert record is not None
    assert record["identity"] == USER
    assert record["decision"] == "deny"
    assert record["source"] == stack.node.netns.lan.host_address  # host mode: the real client


def test_a_new_policy_version_then_a_broken_one_rolled_back(stack: Swarm) -> None:
    before = healthy_task(stack.node, SERVICE)
    # Version 2, the way docs/deploy.md says: bump the version, deploy the stack again.
    policy_v2 = stack.work / "policy-v2.yaml"
    policy_v2.write_text(POLICY_V2)
    stack.deploy(
        "stack.yml",
        STACK,
        DOCKGATE_POLICY_VERSION="2",
        DOCKGATE_POLICY_FILE=str(policy_v2),
    )

    def ps_allowed() -> bool:
        return stack.cli("ps")[0] == 0

    assert wait_for(ps_allowed, 180, every=2), stack.tasks()
    after = stack.wait_healthy()
    assert after != before

    # A broken policy by hand: a new config, `docker service update`. The new task cannot
    # start; Swarm rolls the service back to version 2 without anyone's help.
    broken = stack.work / "broken.yaml"
    broken.write_text(BROKEN_POLICY)
    stack.node.docker("config", "create", "dockgate_policy_broken", str(broken))
    stack.node.docker(
        *("service", "update", "--detach", "--config-rm", "dockgate_policy_2"),
        *("--config-add", "source=dockgate_policy_broken,target=/etc/dockgate/policy.yaml"),
        SERVICE,
        timeout=120,
    )

    def rolled_back() -> bool:
        update = stack.service().get("UpdateStatus")
        return isinstance(update, dict) and update.get("State") == "rollback_completed"

    assert wait_for(rolled_back, 300, every=2), (stack.service().get("UpdateStatus"), stack.tasks())
    task = stack.service()["Spec"]["TaskTemplate"]  # type: ignore[index]
    assert [c["ConfigName"] for c in task["ContainerSpec"]["Configs"]] == ["dockgate_policy_2"]
    # The failed task said why.
    failed = stack.node.docker(
        "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={SERVICE}",
        "--filter", "status=exited",
    ).stdout.split()  # fmt: skip
    logs = "".join(stack.node.docker("logs", c.decode()).stderr.decode() for c in failed)
    assert "NoSuchOperation" in logs, logs
    stack.wait_healthy()
    assert wait_for(ps_allowed, 120, every=2)


def test_a_task_that_never_gets_healthy_is_rolled_back(stack: Swarm) -> None:
    """The other half of `failure_action: rollback`: a new task that runs but is not healthy
    (here: pointed at a daemon that is not there, so /readyz says 503) fails the update, and
    Swarm puts the previous spec back."""
    before = stack.service()["UpdateStatus"]  # from the test above: a finished rollback
    stack.node.docker(
        *("service", "update", "--detach", "--env-add", "DOCKGATE_UPSTREAM=tcp://127.0.0.1:9"),
        SERVICE,
        timeout=120,
    )

    def rolled_back_again() -> bool:
        update = stack.service().get("UpdateStatus")
        return (
            isinstance(update, dict)
            and update != before
            and update.get("State") == "rollback_completed"
        )

    assert wait_for(rolled_back_again, 300, every=2), (stack.service(), stack.tasks())
    env = stack.service()["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]  # type: ignore[index]
    assert not any(e.startswith("DOCKGATE_UPSTREAM=") for e in env)
    stack.wait_healthy()
    assert wait_for(lambda: stack.cli("ps")[0] == 0, 120, every=2)


def test_the_private_variant_answers_only_on_its_overlay(swarm: Swarm) -> None:
    swarm.deploy("stack-private.yml", PRIVATE_STACK)
    swarm.wait_healthy(f"{PRIVATE_STACK}_gateway")
    # A client service's view: a container on the stack's attachable overlay network.
    script = (
        "import base64, json, sys, urllib.request, urllib.error\n"
        "def get(auth):\n"
        "    req = urllib.request.Request('http://gateway:2375/v1.41/services')\n"
        "    if auth: req.add_header('Authorization', sys.argv[1])\n"
        "    try:\n"
        "        with urllib.request.urlopen(req, timeout=20) as r:\n"
        "            return r.status, [s['Spec']['Name'] for s in json.load(r)]\n"
        "    except urllib.error.HTTPError as e:\n"
        "        return e.code, []\n"
        "print(json.dumps([get(True), get(False)]))\n"
    )
    proc = swarm.node.docker(
        "run", "--rm", "--network", f"{PRIVATE_STACK}_api", "--user", "65532",
        "--entrypoint", "python3", swarm.image, "-c", script, basic_header(USER, PASSWORD),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    (with_auth, names), (without, _) = json.loads(proc.stdout)
    assert with_auth == 200 and f"{PRIVATE_STACK}_gateway" in names
    assert without == 401
    # Nothing is published on the node; names resolve to the tasks; the overlay is encrypted.
    with pytest.raises(OSError), socket.create_connection((swarm.node.netns.address, 2375), 5):
        pass
    endpoint = swarm.service(f"{PRIVATE_STACK}_gateway")["Spec"]["EndpointSpec"]  # type: ignore[index]
    assert endpoint["Mode"] == "dnsrr" and not endpoint.get("Ports")
    network = json.loads(swarm.node.docker("network", "inspect", f"{PRIVATE_STACK}_api").stdout)
    assert "encrypted" in network[0]["Options"]


def _readme_service_create() -> list[str]:
    """docs/deploy.md's one-command `docker service create`, as words."""
    text = (REPO / "docs" / "deploy.md").read_text()
    marker = text.index("<!-- test_swarm.py runs this command")
    block = text[marker:].split("```sh\n", 1)[1].split("```", 1)[0]
    words = shlex.split(block)
    assert words[:3] == ["docker", "service", "create"], words
    return words[1:]


def test_the_readme_one_command_service(stack: Swarm) -> None:
    port = 12376  # the stack holds 2376 on this node, and swarm itself 2377
    replaced = {
        "dockgate:latest": stack.image,
        "src=/var/run/docker.sock,dst=/var/run/docker.sock": (
            f"src={stack.node.socket_path},dst=/var/run/docker.sock"
        ),
        f"mode=host,published={PORT},target={PORT}": f"mode=host,published={port},target={PORT}",
    }
    words = _readme_service_create()
    for old, new in replaced.items():
        assert any(old in w for w in words), old
        words = [w.replace(old, new) for w in words]
    if stack.node.docker("config", "inspect", "dockgate_policy_1", check=False).returncode:
        stack.node.docker("config", "create", "dockgate_policy_1", str(POLICY_V1))
    stack.node.docker(*words[:2], "--detach", *words[2:], timeout=120)
    try:
        stack.wait_healthy("dockgate")
        status, out, err = stack.cli("service", "ls", "--format", "{{.Name}}", port=port)
        assert status == 0, err
        assert {"dockgate", SERVICE} <= set(out.split())
    finally:
        stack.node.docker("service", "rm", "dockgate", check=False)
