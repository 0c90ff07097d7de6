"""The `testcontainers` preset, proven with the real testcontainers-python (PyPI
`testcontainers`): a test's container, started through a dockgate whose only policy is
`{preset: testcontainers}`, runs (its log line is waited for, a command is executed in it) and
is stopped and removed; every request the library makes is allowed; what the preset does not
allow (a privileged container, a volume) is refused to the same caller and leaves nothing.

Ryuk, the library's reaper, is off (TESTCONTAINERS_RYUK_DISABLED): it mounts the Docker socket,
which the preset's default guardrails refuse, and with it would hold the whole daemon.
"""

from __future__ import annotations

import json
import pathlib
import uuid

import pytest

from support.daemon import PrivateDaemon
from support.presetclients import api_post, audit_records, preset_gateway
from support.streams import wait_for

pytestmark = pytest.mark.daemon

POLICY = "policies:\n  tests: {preset: testcontainers}\n"


def test_testcontainers_starts_and_removes_a_container_with_only_its_preset(
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The container runs through dockgate (the daemon has it while the test holds it, its
    log line came and an exec answered), is gone afterwards, and no request was denied."""
    try:
        from testcontainers.core.config import testcontainers_config  # noqa: PLC0415
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415
        from testcontainers.core.waiting_utils import wait_for_logs  # noqa: PLC0415
    except ImportError:
        pytest.fail("testcontainers not found: scripts/test.sh installs the test extra")

    token = uuid.uuid4().hex
    with preset_gateway(daemon, tmp_path, POLICY) as (gateway, audit):
        monkeypatch.setenv("DOCKER_HOST", gateway.url)
        monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
        container = DockerContainer(busybox_image).with_command(
            f"sh -c 'echo ready-{token}; exec sleep 120'"
        )
        with container:
            wait_for_logs(container, f"ready-{token}", timeout=30)
            cid = container.get_wrapped_container().id
            assert daemon.docker("inspect", cid, check=False).returncode == 0
            code, output = container.exec(["echo", f"exec-{token}"])
            assert code == 0 and output.decode().strip() == f"exec-{token}"
        assert daemon.docker("inspect", cid, check=False).returncode != 0  # removed

        # Outside the preset: a privileged container (the default guardrails) and a volume.
        name = f"dgt-tc-x-{token[:8]}"
        body = {"Image": busybox_image, "HostConfig": {"Privileged": True}}
        status, answer = api_post(gateway, f"/v1.41/containers/create?name={name}", body)
        assert status == 403, answer
        assert daemon.docker("inspect", name, check=False).returncode != 0
        status, answer = api_post(gateway, "/v1.41/volumes/create", {"Name": name})
        assert status == 403 and "allows VolumeCreate" in answer, answer
        assert daemon.docker("volume", "inspect", name, check=False).returncode != 0

        def recorded() -> list[dict[str, object]] | None:
            records = audit_records(audit)
            return records if len([r for r in records if r["decision"] == "deny"]) >= 2 else None

        records = wait_for(recorded, timeout=10, what="the two refusals in the audit log")
    denied = [r for r in records if r["decision"] != "allow"]
    assert [r["operation"] for r in denied] == ["ContainerCreate", "VolumeCreate"], json.dumps(
        denied, indent=1
    )
