"""Ownership mode: a missing volume a new container mounts is created by the gateway, the
caller's, before the container (ownership/volumes.py; attack review 12, finding 4). The race
itself is tests/ownership/test_attacks_builds_and_prefixes.py
test_a_missing_volume_checked_then_created_by_alice_is_mounted_by_bob; here, that the volume
made is the one the daemon would have made (driver, options, labels, compared with the same
body sent straight to the daemon), that an existing volume is used as the daemon uses it, and
how the body is read (units). The first two end-to-end tests fail on the code before the
fix: the daemon created the volume, without the caller's owner label; the third pins that
the fix makes no volume for a create refused on other grounds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from dockgate.ownership.volumes import Unreadable, VolumeSpec, volume_specs
from support.attack import (
    ATTACK_MARKS,
    Api,
    direct,
    tenants_fixture,
    tenants_policy,
)
from support.daemon import PrivateDaemon

RUN = os.urandom(3).hex()
OWNER_LABEL = "io.dockgate.owner"
POLICY = tenants_policy("ping, version, containers, volumes")


# ----- reading the body (units) -----------------------------------------------------------------


def test_binds_take_the_volume_driver() -> None:
    body = b'{"HostConfig": {"VolumeDriver": "local", "Binds": ["a:/x", "b:/y:ro", "/h:/z"]}}'
    assert volume_specs(body) == {"a": VolumeSpec("local"), "b": VolumeSpec("local")}


def test_the_top_level_volume_driver_counts_when_the_inner_one_is_empty() -> None:
    """runconfig getHostConfig (v20.10.24) copies it in."""
    body = b'{"VolumeDriver": "local", "HostConfig": {"Binds": ["a:/x"]}}'
    assert volume_specs(body) == {"a": VolumeSpec("local")}
    # Without an inner HostConfig, the top level is the host config.
    assert volume_specs(b'{"VolumeDriver": "local", "Binds": ["a:/x"]}') == {
        "a": VolumeSpec("local")
    }


def test_mounts_take_their_volume_options() -> None:
    body = (
        b'{"HostConfig": {"Mounts": [{"type": "volume", "source": "v", "target": "/x",'
        b' "VolumeOptions": {"Labels": {"team": "web", "n": null},'
        b' "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}},'
        b' {"Type": "bind", "Source": "/h", "Target": "/y"}, {"Type": "volume", "Target": "/z"}]}}'
    )
    assert volume_specs(body) == {
        "v": VolumeSpec("local", {"type": "tmpfs"}, {"team": "web", "n": ""})
    }


def test_binds_come_first_and_the_first_mount_of_a_name_creates_it() -> None:
    """registerMountPoints reads Binds, then Mounts; the daemon then uses what exists."""
    body = (
        b'{"HostConfig": {"Binds": ["v:/x"], "Mounts": [{"Type": "volume", "Source": "v",'
        b' "Target": "/y", "VolumeOptions": {"Labels": {"a": "b"}}}]}}'
    )
    assert volume_specs(body) == {"v": VolumeSpec()}


def test_a_map_the_daemon_would_not_decode_creates_nothing() -> None:
    body = (
        b'{"HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/y",'
        b' "VolumeOptions": {"Labels": {"a": 1}}}]}}'
    )
    with pytest.raises(Unreadable):
        volume_specs(body)


# ----- against the daemon ---------------------------------------------------------------------


def _on_daemon(test: Any) -> Any:
    """The marks of the gateway's tests against the daemon (support/attack.py)."""
    for mark in reversed(ATTACK_MARKS):
        test = mark(test)
    return test


tenants = tenants_fixture(POLICY, "ownedvolumes")


@pytest.fixture
def leftovers(daemon: PrivateDaemon) -> Iterator[dict[str, list[str]]]:
    made: dict[str, list[str]] = {"containers": [], "volumes": []}
    yield made
    if made["containers"]:
        daemon.docker("rm", "-f", *made["containers"], check=False)
    if made["volumes"]:
        daemon.docker("volume", "rm", "-f", *made["volumes"], check=False)


def _volume(daemon: PrivateDaemon, name: str) -> dict[str, Any]:
    status, volume = direct(daemon, "GET", f"/volumes/{name}")
    assert status == 200, (status, volume)
    return volume  # type: ignore[no-any-return]


def _shape(volume: dict[str, Any]) -> tuple[Any, ...]:
    labels = {k: v for k, v in (volume.get("Labels") or {}).items() if k != OWNER_LABEL}
    return volume["Driver"], volume.get("Options") or {}, labels


def _host_config(name: str) -> dict[str, Any]:
    return {
        "VolumeDriver": "local",
        "Mounts": [
            {
                "Type": "volume",
                "Source": name,
                "Target": "/data",
                "VolumeOptions": {
                    "Labels": {"team": "web"},
                    "DriverConfig": {
                        "Name": "local",
                        "Options": {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
                    },
                },
            }
        ],
    }


@_on_daemon
@pytest.mark.parametrize("how", ["mounts", "binds"])
def test_the_volume_made_is_the_daemons_own_with_the_callers_label(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: dict[str, list[str]],
    how: str,
) -> None:
    """bob's create mounting a missing volume: the volume exists afterwards, bob's, with the
    driver, options and labels the daemon gives it for the same body sent straight (the
    oracle); his container mounts it and writes to it."""
    bob = tenants["bob"]
    mine, oracle = (f"dgo-ov-{RUN}-{how}-{who}-{os.urandom(2).hex()}" for who in "bo")
    leftovers["volumes"] += [mine, oracle]

    def body(name: str) -> dict[str, Any]:
        if how == "mounts":
            host = _host_config(name)
        else:
            host = {"VolumeDriver": "local", "Binds": [f"{name}:/data"]}
        return {
            "Image": busybox_image,
            "Cmd": ["sh", "-c", "echo hi > /data/f"],
            "HostConfig": host,
        }

    status, straight = direct(daemon, "POST", "/v1.41/containers/create", body(oracle))
    assert status == 201, (status, straight)
    leftovers["containers"].append(straight["Id"])
    cid = bob.create(body(mine))
    leftovers["containers"].append(cid)
    made = _volume(daemon, mine)
    assert made["Labels"][OWNER_LABEL] == "user:bob", made
    # Before the fix the daemon made it: no owner label (nobody's), as straight.
    assert OWNER_LABEL not in (_volume(daemon, oracle).get("Labels") or {})
    assert _shape(made) == _shape(_volume(daemon, oracle))
    bob.start(cid)
    status, answer = bob.call("POST", f"/v1.41/containers/{cid}/wait")
    assert status == 200 and answer["StatusCode"] == 0, (status, answer)
    status, inspected = bob.call("GET", f"/v1.41/containers/{cid}/json")
    assert [m.get("Name") for m in inspected["Mounts"]] == [mine], inspected["Mounts"]


@_on_daemon
def test_alices_volume_create_of_bobs_name_is_refused_and_hers_is_not_mounted(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: dict[str, list[str]],
) -> None:
    """After bob's create made the volume his, alice's `volume create` of the name is the 409
    ownership answers for someone else's name, and her container cannot mount it; her own
    volume, existing, is used by her create as the daemon uses it (its options kept, the
    create's ignored), and refused to bob with nothing made."""
    alice, bob = tenants["alice"], tenants["bob"]
    bobs, alices = (f"dgo-ov-{RUN}-{who}-{os.urandom(2).hex()}" for who in ("b", "a"))
    leftovers["volumes"] += [bobs, alices]
    cid = bob.create({"Image": busybox_image, "HostConfig": {"Binds": [f"{bobs}:/data"]}})
    leftovers["containers"].append(cid)
    status, answer = alice.call("POST", "/v1.41/volumes/create", {"Name": bobs})
    assert status == 409, (status, answer)
    assert _volume(daemon, bobs)["Labels"][OWNER_LABEL] == "user:bob"
    status, answer = alice.call(
        "POST",
        "/v1.41/containers/create",
        {"Image": busybox_image, "HostConfig": {"Binds": [f"{bobs}:/data"]}},
    )
    assert status == 403, (status, answer)

    status, answer = alice.call("POST", "/v1.41/volumes/create", {"Name": alices})
    assert status == 201, (status, answer)
    before = _volume(daemon, alices)
    cid = alice.create({"Image": busybox_image, "HostConfig": _host_config(alices)})
    leftovers["containers"].append(cid)
    # The daemon's own rule for an existing volume: used as it is.
    assert _volume(daemon, alices) == before
    containers = len(direct(daemon, "GET", "/containers/json?all=1")[1])
    status, answer = bob.call(
        "POST",
        "/v1.41/containers/create",
        {"Image": busybox_image, "HostConfig": _host_config(alices)},
    )
    assert status == 403, (status, answer)
    assert answer == {"message": f"dockgate: get {alices}: no such volume"}
    assert _volume(daemon, alices) == before
    assert len(direct(daemon, "GET", "/containers/json?all=1")[1]) == containers


@_on_daemon
def test_a_refused_create_makes_no_volume(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    leftovers: dict[str, list[str]],
) -> None:
    """Volumes are made last, once the other objects the body names are checked: a create
    refused for another caller's container (`VolumesFrom`) leaves no volume behind."""
    alice, bob = tenants["alice"], tenants["bob"]
    name = f"dgo-ov-{RUN}-none-{os.urandom(2).hex()}"
    leftovers["volumes"].append(name)
    other = alice.create({"Image": busybox_image})
    leftovers["containers"].append(other)
    status, answer = bob.call(
        "POST",
        "/v1.41/containers/create",
        {"Image": busybox_image, "HostConfig": {"Binds": [f"{name}:/d"], "VolumesFrom": [other]}},
    )
    assert status == 403, (status, answer)
    status, _ = direct(daemon, "GET", f"/volumes/{name}")
    assert status == 404
