"""The Swarm presets, proven with the real clients on a single-node swarm: a private daemon in a
network namespace of its own (support/netns.py, as tests/deploy/test_swarm.py), made a swarm
manager, with one labelled service publishing a port.

- `traefik-swarm`: Traefik's Swarm provider, through a dockgate whose only policy is the preset,
  finds the labelled service (its router appears in Traefik's own API). Routing to it is not
  checked: Traefik sends to the service's virtual IP, which only a container on the service's
  network reaches; the Docker provider's routing is proven in test_preset_traefik.py.
- `prometheus-swarm`: Prometheus's `dockerswarm_sd_configs`, roles `services`, `tasks` and
  `nodes`, through a dockgate whose only policy is the preset, lists the service, its task and
  the node as targets.

Each client's every request is allowed, and a service create through the same gateway is
refused with nothing created.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sysconfig
import uuid
from collections.abc import Iterator

import pytest

from support.daemon import free_tcp_port
from support.gateway import Gateway
from support.netns import NamespacedDaemon, namespaced_daemon
from support.presetclients import api_post, audit_records, http_get, preset_gateway
from support.procs import stop_process
from support.streams import wait_for

pytestmark = pytest.mark.daemon

RUN = uuid.uuid4().hex[:8]
SERVICE = f"dgt-swarm-site-{RUN}"
LABEL = "dockgate.test.swarm"
TRAEFIK_POLICY = "policies:\n  traefik: {preset: traefik-swarm}\n"
PROMETHEUS_POLICY = "policies:\n  prometheus: {preset: prometheus-swarm}\n"


@pytest.fixture(scope="module")
def node() -> Iterator[NamespacedDaemon]:
    """A single-node swarm with one labelled service (a busybox httpd on published port 8080)."""
    with namespaced_daemon() as manager:
        try:
            manager.docker("swarm", "init", "--advertise-addr", manager.netns.address, timeout=60)
            image = manager.make_busybox_image()
            manager.docker(
                *("service", "create", "--detach", "--no-resolve-image", "--name", SERVICE),
                *("--label", f"{LABEL}={RUN}", "--label", "traefik.enable=true"),
                *("--label", f"traefik.http.routers.{SERVICE}.rule=Host(`{SERVICE}.test`)"),
                *("--label", f"traefik.http.services.{SERVICE}.loadbalancer.server.port=80"),
                *("--publish", "8080:80", image, "httpd", "-f", "-p", "80", "-h", "/"),
                timeout=60,
            )
            yield manager
        finally:
            manager.docker("service", "rm", SERVICE, check=False)
            manager.docker("swarm", "leave", "--force", check=False, timeout=60)


def _client(
    command: list[str], work: pathlib.Path, name: str
) -> tuple[subprocess.Popen[bytes], pathlib.Path]:
    log_path = work / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work
        )
    return proc, log_path


def test_traefik_swarm_provider_finds_the_service_with_only_its_preset(
    node: NamespacedDaemon, tmp_path: pathlib.Path
) -> None:
    """Traefik's Swarm provider lists the labelled service's router, having asked only what
    `traefik-swarm` allows; a service create by the same caller is refused, none created."""
    api_port, web_port = free_tcp_port(), free_tcp_port()
    traefik = str(pathlib.Path(sysconfig.get_path("scripts")) / "traefik")
    policy = TRAEFIK_POLICY
    with preset_gateway(node, tmp_path, policy) as (gateway, audit):
        proc, log = _client(
            [
                traefik,
                f"--entrypoints.web.address=127.0.0.1:{web_port}",
                f"--entrypoints.traefik.address=127.0.0.1:{api_port}",
                "--api.insecure=true",
                f"--providers.swarm.endpoint={gateway.url}",
                "--providers.swarm.exposedbydefault=false",
                "--providers.swarm.refreshSeconds=1",
            ],
            tmp_path,
            "traefik",
        )
        try:

            def router() -> bool:
                status, body = http_get(f"http://127.0.0.1:{api_port}/api/http/routers")
                return status == 200 and f"{SERVICE}@swarm" in body

            try:
                wait_for(router, timeout=40, interval=0.3, what="Traefik's router for the service")
            except AssertionError:
                raise AssertionError(log.read_text()[-4000:]) from None
        finally:
            stop_process(proc)
        records = audit_records(audit)
        denied = [r for r in records if r["decision"] != "allow"]
        assert not denied, json.dumps(denied, indent=1)
        _assert_service_create_denied(node, gateway, "traefik")


def test_prometheus_swarm_sd_lists_service_task_and_node_with_only_its_preset(
    node: NamespacedDaemon, tmp_path: pathlib.Path
) -> None:
    """`dockerswarm_sd_configs` with the roles services, tasks and nodes lists the labelled
    service, its task and the node as targets, having asked only what `prometheus-swarm`
    allows; a service create by the same caller is refused, none created."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: scripts/test.sh installs the Debian package")
    web_port = free_tcp_port()
    policy = PROMETHEUS_POLICY
    with preset_gateway(node, tmp_path, policy) as (gateway, audit):
        jobs = [
            {
                "job_name": role,
                "dockerswarm_sd_configs": [
                    {"host": gateway.url, "role": role, "refresh_interval": "1s"}
                ],
            }
            for role in ("services", "tasks", "nodes")
        ]
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": "1h"}, "scrape_configs": jobs}))
        proc, log = _client(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
            ],
            tmp_path,
            "prometheus",
        )
        try:

            def found() -> set[str] | None:
                status, body = http_get(f"http://127.0.0.1:{web_port}/api/v1/targets")
                if status != 200:
                    return None
                jobs_seen = set()
                for target in json.loads(body)["data"]["activeTargets"]:
                    labels = target["discoveredLabels"]
                    if labels.get("__meta_dockerswarm_service_name") == SERVICE:
                        jobs_seen.add(labels["job"])
                    if (
                        labels.get("__meta_dockerswarm_node_role") == "manager"
                        and labels["job"] == "nodes"
                    ):
                        jobs_seen.add("nodes")
                return jobs_seen if jobs_seen == {"services", "tasks", "nodes"} else None

            try:
                wait_for(found, timeout=40, interval=0.3, what="the service, task and node")
            except AssertionError:
                raise AssertionError(log.read_text()[-4000:]) from None
        finally:
            stop_process(proc)
        records = audit_records(audit)
        denied = [r for r in records if r["decision"] != "allow"]
        assert not denied, json.dumps(denied, indent=1)
        _assert_service_create_denied(node, gateway, "prometheus")


def _assert_service_create_denied(node: NamespacedDaemon, gateway: Gateway, policy: str) -> None:
    """A service create through the gateway, by the client's caller, is refused by the preset,
    and the swarm has no such service."""
    name = f"{SERVICE}-x"
    spec = {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}
    status, answer = api_post(gateway, "/v1.41/services/create", spec)
    assert status == 403, answer
    assert f"ServiceCreate denied by policy {policy}" in answer, answer
    assert node.docker("service", "inspect", name, check=False).returncode != 0
