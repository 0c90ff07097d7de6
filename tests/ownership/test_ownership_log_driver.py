"""Ownership mode and the build steps' log driver, against the real daemon (issue 12 follow-up).

Every container the classic builder creates has the log driver `none` (moby v20.10.24
builder/dockerfile/internals.go defaultLogConfig), so ownership trusts no container with it
(ownership.trusted_owner) and refuses to create one (ownership.silent_log_problem); and
ContainerPrune, which the daemon narrows by label only, is not available.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Iterator

import pytest

from support.attack import (
    ATTACK_MARKS,
    Api,
    direct,
    tenants_fixture,
    tenants_policy,
)
from support.daemon import PrivateDaemon

pytestmark = ATTACK_MARKS

RUN = os.urandom(3).hex()
OWNER_LABEL = "io.dockgate.owner"
POLICY = tenants_policy("ping, version, info, events, containers, exec, images, services, tasks")


tenants = tenants_fixture(POLICY, "own-logdriver")


@pytest.fixture
def made(daemon: PrivateDaemon) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    if names:
        daemon.docker("rm", "-f", *names, check=False)


def _named(daemon: PrivateDaemon, name: str) -> list[object]:
    filters = urllib.parse.quote(json.dumps({"name": [f"^/{name}$"]}))
    status, listed = direct(daemon, "GET", f"/containers/json?all=1&filters={filters}")
    assert status == 200
    return list(listed)


@pytest.mark.parametrize(
    "host_config",
    [
        {"LogConfig": {"Type": "none"}},
        {"logconfig": {"Type": "local"}, "LogConfig": {"type": "none"}},  # Go: the last wins
    ],
)
def test_a_create_with_the_build_steps_log_driver_is_refused(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    made: list[str],
    host_config: dict[str, object],
) -> None:
    """`docker run --log-driver none` in ownership mode: refused (403) with the reason, and no
    container is made; the same body straight on the daemon makes a container whose stored
    log driver is `none`. Fails on the old code (created: 201)."""
    alice = tenants["alice"]
    body = {"Image": busybox_image, "Cmd": ["true"], "HostConfig": host_config}
    name = f"dgo-logdrv-{RUN}-{os.urandom(2).hex()}"
    made.append(name)
    status, answer = alice.call("POST", f"/v1.41/containers/create?name={name}", body)
    assert status == 403, (status, answer)
    assert "log driver 'none'" in answer["message"], answer
    assert _named(daemon, name) == []
    # Not vacuous: the daemon takes the body and stores the driver.
    status, created = direct(daemon, "POST", f"/containers/create?name={name}", body)
    assert status == 201, (status, created)
    status, inspected = direct(daemon, "GET", f"/containers/{name}/json")
    assert inspected["HostConfig"]["LogConfig"]["Type"] == "none"


def test_a_service_with_the_build_steps_log_driver_is_refused(
    tenants: dict[str, Api], busybox_image: str
) -> None:
    """Refused before the daemon is asked (no swarm needed). Fails on the old code (the
    request went on to the daemon: 503, not a swarm manager)."""
    spec = {
        "Name": f"dgo-logdrv-{RUN}",
        "TaskTemplate": {
            "ContainerSpec": {"Image": busybox_image, "Command": ["sleep", "30"]},
            "LogDriver": {"Name": "none"},
        },
    }
    status, answer = tenants["alice"].call("POST", "/v1.41/services/create", spec)
    assert status == 403, (status, answer)
    assert "TaskTemplate.LogDriver.Name" in answer["message"], answer


def test_a_container_with_the_build_steps_log_driver_is_nobodys(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, made: list[str]
) -> None:
    """A container carrying alice's label with the log driver `none`, over an image that
    does not carry it: what a Dockerfile `LABEL io.dockgate.owner=user:alice` step creates
    (made here straight on the daemon, as the builder does). Not alice's: not listed, and
    404 to her inspect and remove. Fails on the old code (the image rule alone trusted it)."""
    alice = tenants["alice"]
    name = f"dgo-logdrv-step-{RUN}"
    made.append(name)
    body = {
        "Image": busybox_image,
        "Cmd": ["true"],
        "Labels": {OWNER_LABEL: "user:alice"},
        "HostConfig": {"LogConfig": {"Type": "none"}},
    }
    status, created = direct(daemon, "POST", f"/containers/create?name={name}", body)
    assert status == 201, (status, created)
    status, listed = alice.call("GET", "/v1.41/containers/json?all=1")
    assert status == 200, (status, listed)
    assert created["Id"] not in [entry["Id"] for entry in listed]
    status, _ = alice.call("GET", f"/v1.41/containers/{created['Id']}/json")
    assert status == 404
    status, _ = alice.call("DELETE", f"/v1.41/containers/{name}?force=1")
    assert status == 404
    assert len(_named(daemon, name)) == 1


@pytest.mark.parametrize("log_driver", [None, "local"])
def test_alices_own_containers_are_hers_with_any_other_log_driver(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    made: list[str],
    log_driver: str | None,
) -> None:
    """The daemon fills an absent driver with its default at create (daemon/logs.go
    mergeAndVerifyLogConfig): inspect shows it, not "" (the rule reads the stored value).
    alice's container is listed (twice: the second from the verdict cache), inspected, exec'd
    into and removed; bob's list does not have it."""
    alice, bob = tenants["alice"], tenants["bob"]
    host = {"LogConfig": {"Type": log_driver}} if log_driver else {}
    cid = alice.create({"Image": busybox_image, "Cmd": ["sleep", "30"], "HostConfig": host})
    made.append(cid)
    status, inspected = direct(daemon, "GET", f"/containers/{cid}/json")
    status, info = direct(daemon, "GET", "/info")
    stored = inspected["HostConfig"]["LogConfig"]["Type"]
    assert stored == (log_driver or info["LoggingDriver"]) and stored not in ("", "none")
    alice.start(cid)
    for _ in range(2):
        status, listed = alice.call("GET", "/v1.41/containers/json")
        assert status == 200, (status, listed)
        assert cid in [entry["Id"] for entry in listed]
    status, answer = alice.call("GET", f"/v1.41/containers/{cid}/json")
    assert status == 200, (status, answer)
    status, execed = alice.call("POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["true"]})
    assert status == 201, (status, execed)
    status, listed = bob.call("GET", "/v1.41/containers/json")
    assert cid not in [entry["Id"] for entry in listed]
    status, _ = alice.call("DELETE", f"/v1.41/containers/{cid}?force=1")
    assert status == 204
    status, _ = direct(daemon, "GET", f"/containers/{cid}/json")
    assert status == 404


def test_container_prune_is_refused_with_the_way_to_remove(
    tenants: dict[str, Api], busybox_image: str, daemon: PrivateDaemon, made: list[str]
) -> None:
    """`docker container prune`: 403 with the reason, nothing removed (alice's stopped
    container stays). Fails on the old code (the prune was narrowed by her label, build steps
    carrying it included: tests/ownership/test_attacks_builds_and_prefixes.py)."""
    alice = tenants["alice"]
    cid = alice.create({"Image": busybox_image, "Cmd": ["true"]})
    made.append(cid)
    status, answer = alice.call("POST", "/v1.41/containers/prune")
    assert status == 403, (status, answer)
    assert "not available in ownership mode" in answer["message"]
    assert "docker rm" in answer["message"]
    status, _ = direct(daemon, "GET", f"/containers/{cid}/json")
    assert status == 200
