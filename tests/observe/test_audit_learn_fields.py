"""What `body_details` keeps for `dockgate learn` (observe/audit.py): capabilities, devices,
host namespaces and read-only mounts, read as the daemon reads them, and no secret."""

from __future__ import annotations

import json

from dockgate.observe.audit import AuditRecord, body_details, render


def details(body: object) -> dict[str, object]:
    found = body_details("ContainerCreate", json.dumps(body).encode(), False)
    assert found is not None
    return found


def test_capabilities_devices_and_namespaces_are_recorded() -> None:
    found = details(
        {
            "Image": "busybox",
            "HostConfig": {
                "CapAdd": "net_admin",  # a strslice: one name
                "Capabilities": ["SYS_TIME"],
                "Devices": [{"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse"}],
                "NetworkMode": "host",
                "pidmode": "container:web",
                "IpcMode": "shareable",
            },
        }
    )
    assert found["cap_add"] == ["net_admin", "SYS_TIME"]
    assert found["devices"] == ["/dev/fuse"]
    assert found["namespaces"] == ["network", "pid:container"]


def test_a_plain_create_records_none_of_them() -> None:
    found = details({"Image": "busybox", "HostConfig": {"NetworkMode": "my-net", "CapAdd": []}})
    assert set(found) == {"image"}


def test_mounts_say_read_only_and_never_their_options() -> None:
    mount = {
        "Type": "volume",
        "Source": "v",
        "Target": "/d",
        "ReadOnly": True,
        "VolumeOptions": {"DriverConfig": {"Options": {"password": "s3cret"}}},
    }
    found = details({"Image": "busybox", "HostConfig": {"Mounts": [mount]}})
    assert found["mounts"] == [{"type": "volume", "source": "v", "target": "/d", "read_only": True}]
    assert "s3cret" not in json.dumps(found)


def test_the_user_agent_is_recorded_last_when_there_is_one() -> None:
    record = AuditRecord(
        started=0.0,
        identity="-",
        auth="none",
        auth_detail="",
        source="unix",
        peer="unix",
        method="GET",
        target="/_ping",
        operation="SystemPing",
        object=None,
        allowed=True,
        policy="p",
        reason="rule 1",
        status=200,
        bytes_in=0,
        bytes_out=2,
        duration_s=0.001,
    )
    assert "user_agent" not in json.loads(render(record))
    record.user_agent = "Docker-Client/20.10.24 (linux)"
    assert list(json.loads(render(record)).items())[-1] == (
        "user_agent",
        "Docker-Client/20.10.24 (linux)",
    )
