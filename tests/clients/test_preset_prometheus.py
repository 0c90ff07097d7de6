"""The `prometheus` preset, proven with the real Prometheus (Debian `prometheus`): its
`docker_sd_configs`, pointed at a dockgate whose only policy is `{preset: prometheus}`, lists a
labelled container as a target (Prometheus's own /api/v1/targets), every request it makes is
allowed, and what the preset does not allow (creating a container, exec) is denied to the same
caller.

`dockerswarm_sd_configs` (the `prometheus-swarm` preset) is proven in
test_preset_swarm_clients.py, on a swarm of its own: the session's daemon stays no swarm manager.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
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

POLICY = "policies:\n  prometheus: {preset: prometheus}\n"
LABEL = "dockgate.test.scrape"


@pytest.fixture
def prometheus_run(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup, tmp_path: pathlib.Path
) -> Iterator[ClientRun]:
    """A labelled site, a gateway with the preset, and Prometheus discovering through it."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found: scripts/test.sh installs the Debian package")
    token = uuid.uuid4().hex
    name = f"dgt-prom-site-{token[:8]}"
    site_port, web_port = free_tcp_port(), free_tcp_port()
    start_site(
        daemon,
        cleanup,
        busybox_image,
        name=name,
        port=site_port,
        token=token,
        labels={LABEL: token},
    )
    (tmp_path / "cli").mkdir()
    with preset_gateway(daemon, tmp_path, POLICY) as (gateway, audit):
        config = tmp_path / "prometheus.yml"
        # JSON is YAML: one scrape job discovering containers through the gateway, only ours
        # (the daemon filters by label), refreshed every second so the test need not wait.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1h", "evaluation_interval": "1h"},
                    "scrape_configs": [
                        {
                            "job_name": "docker",
                            "docker_sd_configs": [
                                {
                                    "host": gateway.url,
                                    "refresh_interval": "1s",
                                    "filters": [{"name": "label", "values": [f"{LABEL}={token}"]}],
                                }
                            ],
                        }
                    ],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        try:
            yield ClientRun(
                gateway,
                audit,
                name,
                token,
                web_port,
                tmp_path / "prometheus.log",
                tmp_path / "cli",
            )
        finally:
            stop_process(proc)
            log.close()


def test_prometheus_lists_the_container_with_only_its_preset(
    prometheus_run: ClientRun, daemon: PrivateDaemon
) -> None:
    """Prometheus's /api/v1/targets lists the labelled container, discovered through dockgate
    (its name and label in the target's discovered labels), having asked only what the preset
    allows; the same caller is denied a container create and an exec, and neither happened."""
    run = prometheus_run
    url = f"http://127.0.0.1:{run.web_port}/api/v1/targets"

    def discovered() -> dict[str, str] | None:
        status, body = http_get(url)
        if status != 200:
            return None
        for target in json.loads(body)["data"]["activeTargets"]:
            labels = target["discoveredLabels"]
            if labels.get("__meta_docker_container_name") == f"/{run.site}":
                return dict(labels)
        return None

    try:
        labels = wait_for(discovered, timeout=40, interval=0.3, what="the target")
    except AssertionError:
        raise AssertionError(run.log.read_text()[-4000:]) from None
    assert labels[f"__meta_docker_container_label_{LABEL.replace('.', '_')}"] == run.token

    records = audit_records(run.audit)
    assert "ContainerList" in {str(r["operation"]) for r in records}
    denied = [r for r in records if r["decision"] != "allow"]
    assert not denied, json.dumps(denied, indent=1)
    assert_outside_denied(run, daemon, "prometheus")
