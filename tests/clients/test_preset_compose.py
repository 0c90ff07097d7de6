"""The `docker-compose` preset, proven with the real docker-compose (Debian's, 1.29): a project
with a service, a named volume and a network of its own comes up through a dockgate whose only
policy is `{preset: docker-compose}` (the service runs and wrote into its volume), its logs and
`ps` answer, and `down --volumes` removes all of it; every request compose makes is allowed;
what the preset does not allow (a privileged service, a volume prune) is refused to the same
caller and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

from support.daemon import PrivateDaemon
from support.presetclients import api_post, audit_records, preset_gateway
from support.streams import wait_for

pytestmark = pytest.mark.daemon

POLICY = "policies:\n  compose: {preset: docker-compose}\n"

PROJECT_FILE = """\
version: "3.7"
services:
  app:
    image: {image}
    command: ["sh", "-c", "echo app-{token} > /data/mark && echo up-{token} && exec sleep 120"]
    volumes: [data:/data]
    networks: [inner]
volumes:
  data: {{}}
networks:
  inner: {{}}
"""


def test_compose_up_and_down_with_only_its_preset(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """`up -d`, `logs`, `ps`, `down --volumes` through dockgate: the container ran and wrote
    into the project's volume, and afterwards the daemon has no container, volume or network of
    the project; no request of compose's was denied."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose not found: scripts/test.sh installs it")
    token = uuid.uuid4().hex
    project = f"dgtc{token[:8]}"
    (tmp_path / "docker-compose.yml").write_text(
        PROJECT_FILE.format(image=busybox_image, token=token)
    )
    with preset_gateway(daemon, tmp_path, POLICY) as (gateway, audit):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env |= {"DOCKER_HOST": gateway.url, "DOCKER_CONFIG": str(tmp_path)}

        def run(*args: str) -> str:
            proc = subprocess.run(
                [compose, "-p", project, *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
            return proc.stdout + proc.stderr

        run("up", "-d")
        try:
            label = f"label=com.docker.compose.project={project}"
            cid = daemon.docker("ps", "-q", "--filter", label).stdout.decode().strip()
            assert cid, "the service's container is not running"
            mark = daemon.docker("exec", cid, "cat", "/data/mark").stdout.decode().strip()
            assert mark == f"app-{token}"
            wait_for(lambda: f"up-{token}" in run("logs", "app"), timeout=20, what="the log")
            assert f"{project}_app_1" in run("ps")
        finally:
            run("down", "--volumes", "--timeout", "1")
        for kind in ("ps", "volume", "network"):
            listed = daemon.docker(
                kind, *(["-a"] if kind == "ps" else ["ls"]), "-q", "--filter", label
            )
            assert not listed.stdout.strip(), (kind, listed.stdout)

        # Outside the preset: a privileged container (the default guardrails), a volume prune.
        name = f"dgt-compose-x-{token[:8]}"
        body = {"Image": busybox_image, "HostConfig": {"Privileged": True}}
        status, answer = api_post(gateway, f"/v1.41/containers/create?name={name}", body)
        assert status == 403, answer
        assert daemon.docker("inspect", name, check=False).returncode != 0
        status, answer = api_post(gateway, "/v1.41/volumes/prune", {})
        assert status == 403, answer

        def recorded() -> list[dict[str, object]] | None:
            records = audit_records(audit)
            return records if sum(r["decision"] == "deny" for r in records) >= 2 else None

        records = wait_for(recorded, timeout=10, what="the two refusals in the audit log")
    denied = [r["operation"] for r in records if r["decision"] != "allow"]
    assert denied == ["ContainerCreate", "VolumePrune"], json.dumps(denied, indent=1)
