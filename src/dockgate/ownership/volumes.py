"""Ownership mode: a volume a new container names that does not exist yet is created by the
gateway, the caller's, before the container.

A container create that mounts a named volume (`Binds: ["NAME:/data"]`, a `Mounts` entry of
type volume) makes the daemon create that volume when it does not exist (moby v20.10.24
daemon/volumes.go registerMountPoints -> volume/service/store.go create), and use it as it is
when it does. dockgate looks the name up first (ownership refuses someone else's volume), but a
name cannot be pinned to anything: when another caller's `docker volume create NAME` lands
between that look-up (missing) and the daemon's handling of the container create, the new
container mounts her volume and reads her data (attack review 12, finding 4).

So in ownership mode dockgate creates a missing volume itself first (`POST /volumes/create`),
as the daemon would for that mount, with the caller's owner label written last, and reads the
answer: the volume is the caller's (just made, or it already was) and the create goes on; it
is someone else's (a race lost: the daemon answers a create of an existing name with that
volume, ignoring driver options and labels, store.go create's "there is an existing volume")
and the create is refused as for any volume of someone else's. Her own `volume create` of the
name afterwards gets ownership's "exists and is not yours" 409.

As the daemon would create it: a `Binds` volume with `HostConfig.VolumeDriver` (volumemounts
ParseMountRaw; the top-level `VolumeDriver` when the inner HostConfig leaves it empty, runconfig
getHostConfig), a `Mounts` volume with `VolumeOptions.DriverConfig.Name` and `.Options` and
`VolumeOptions.Labels` (registerMountPoints; the guardrails and ownership/labels.py judged them
already); `Binds` come first, so the first of several mounts of one name is the one that
creates it. Service mounts are not covered: the volume is made on each node by the task, out
of the gateway's reach (THREAT_MODEL.md).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.body import gojson
from dockgate.ownership.lookup import LookupError_, ask_json, get_json
from dockgate.ownership.operations import OWNER_LABEL, VOLUME, owner_of


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """How the daemon would create a volume a container mounts: `POST /volumes/create`'s
    Driver, DriverOpts and Labels."""

    driver: str = ""
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


class Unreadable(ValueError):
    """A part of the body the daemon refuses at decoding (a map value that is not a string):
    nothing is created, the daemon answers the create itself."""


def volume_specs(body: bytes) -> dict[str, VolumeSpec]:
    """The named volumes a ContainerCreate body mounts, each with what it would be created
    with (the first mount of a name). Unreadable for a body the daemon would not decode."""
    try:
        top = gojson.parse(body)
    except (ValueError, RecursionError):
        raise Unreadable("the body cannot be read") from None
    if not isinstance(top, gojson.GoObject):
        raise Unreadable("the body is not a JSON object")
    one = (top,)
    inner = gojson.struct(one, "HostConfig", pointer=True)
    host: gojson.Struct = inner if inner else one
    driver = _string(host, "VolumeDriver")
    if inner and not driver:
        driver = _string(one, "VolumeDriver")
    specs: dict[str, VolumeSpec] = {}
    binds = gojson.slice_(host, "Binds")
    for bind in binds if isinstance(binds, list) else []:
        if not isinstance(bind, str):
            continue
        parts = bind.split(":")
        # `NAME:/dst` or `NAME:/dst:mode` (linux_parser.go ParseMountRaw); a source that is
        # an absolute path is a bind mount, not a volume.
        if len(parts) in (2, 3) and parts[0] and not parts[0].startswith("/"):
            specs.setdefault(parts[0], VolumeSpec(driver))
    mounts = gojson.slice_(host, "Mounts")
    for mount in mounts if isinstance(mounts, list) else []:
        if not isinstance(mount, gojson.GoObject):
            continue
        kind = gojson.scalar((mount,), "Type")
        source = gojson.scalar((mount,), "Source")
        # Any case, as ownership.references reads it (an unknown case is the daemon's 400).
        if not (isinstance(kind, str) and kind.lower() == "volume"):
            continue
        if not (isinstance(source, str) and source):
            continue
        options = gojson.struct((mount,), "VolumeOptions", pointer=True)
        config = gojson.struct(options, "DriverConfig", pointer=True)
        specs.setdefault(
            source,
            VolumeSpec(
                _string(config, "Name"),
                _strings(gojson.mapping(config, "Options")),
                _strings(gojson.mapping(options, "Labels")),
            ),
        )
    return specs


def _string(struct: gojson.Struct, name: str) -> str:
    value = gojson.scalar(struct, name)
    return value if isinstance(value, str) else ""


def _strings(mapping: dict[str, object] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in (mapping or {}).items():
        if value is None:
            result[key] = ""  # null into a Go string leaves it empty
        elif isinstance(value, str):
            result[key] = value
        else:
            raise Unreadable(f"{key!r}: a string is expected")
    return result


@dataclass(frozen=True, slots=True)
class Created:
    """The daemon's answer to the gateway's volume create: the volume's owner label when it
    answered with the volume (201), else its status and message."""

    status: int
    owner: str | None = None
    message: str = ""


async def create_volume(address: Address, name: str, spec: VolumeSpec, owner: str) -> Created:
    """`POST /volumes/create` of `name` as `spec`, labelled `owner`'s (last). LookupError_
    when the daemon cannot be asked or fails (5xx)."""
    document = {
        "Name": name,
        "Driver": spec.driver,
        "DriverOpts": spec.options,
        "Labels": {**spec.labels, OWNER_LABEL: owner},
    }
    status, answer = await ask_json(
        address, "POST", "/volumes/create", json.dumps(document).encode()
    )
    if status >= 500:
        raise LookupError_(f"the daemon answered {status} to a create of volume {name}")
    if status in (200, 201):
        return Created(status, owner_of(answer, VOLUME))
    message = answer.get("message") if isinstance(answer, dict) else None
    return Created(status, None, message if isinstance(message, str) else "")


# ----- after the create: the container mounts what was checked ---------------------------------
#
# A volume name cannot be pinned (the daemon finds a volume by exact name only), so between
# the gateway's look-up (or its own create) and the daemon's handling of the container create,
# the caller can remove his volume and another caller create hers under the name: the daemon
# mounts hers (attack review 12, second pass). Once the container exists, though, a volume it
# mounts cannot be removed (volume/service/store.go Remove: "volume is in use"), so the name
# stays on the same volume: the created container's mounts are checked then, and a container
# that mounts someone else's volume is removed before the client hears of it.


@dataclass(frozen=True, slots=True)
class Settled:
    """How a held ContainerCreate answer ends: sent on (neither set), refused as someone
    else's volume (`foreign`: the container was removed), or a 502 (`failure`: the check
    could not be made; the container was removed)."""

    foreign: str | None = None
    failure: str | None = None


async def settle_create(
    address: Address,
    status: int,
    raw: bytes,
    *,
    names: frozenset[str],
    made: tuple[str, ...],
    owner: str,
) -> Settled:
    """The daemon answered `status` (`raw`) to a ContainerCreate that mounts the named
    volumes `names`, for which the gateway created `made`. A refused create: the volumes the
    gateway made are removed (the daemon alone would have made none: it resolves the image
    before it registers the mounts). A created container: every volume of `names` it mounts
    must be `owner`'s; if one is not, or the check fails, the container is removed too."""
    if status != 201:
        await remove_volumes(address, made, owner)
        return Settled()
    container_id = created_id(raw)
    if container_id is None:
        await remove_volumes(address, made, owner)
        return Settled(failure="the daemon's answer to the create names no container")
    try:
        foreign = await foreign_mount(address, container_id, names, owner)
    except Exception as exc:
        await _remove_container(address, container_id)
        await remove_volumes(address, made, owner)
        return Settled(failure=f"cannot check the new container's volumes: {exc}")
    if foreign is None:
        return Settled()
    await _remove_container(address, container_id)
    await remove_volumes(address, made, owner)
    return Settled(foreign=foreign)


def created_id(raw: bytes) -> str | None:
    """The full ID a ContainerCreate's 201 answer names, None for an answer that names none."""
    try:
        answer = json.loads(raw)
    except ValueError:
        return None
    found = answer.get("Id") if isinstance(answer, dict) else None
    # A full ID only: it goes into a path as it is.
    return found if isinstance(found, str) and FULL_CONTAINER_ID.fullmatch(found) else None


FULL_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


async def foreign_mount(
    address: Address, container_id: str, names: frozenset[str], owner: str
) -> str | None:
    """The first volume of `names` the container mounts that is not `owner`'s, or None.
    LookupError_ when the daemon cannot say. Anonymous volumes (a name the caller did not
    give: the image's VOLUMEs, `-v /data`) are the container's own and are not looked up."""
    status, answer = await get_json(address, f"/containers/{container_id}/json")
    mounts = answer.get("Mounts") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(mounts, list):
        raise LookupError_(f"the daemon answered {status} to an inspect of the new container")
    for mount in mounts:
        if not isinstance(mount, dict) or mount.get("Type") != "volume":
            continue
        name = mount.get("Name")
        if not isinstance(name, str) or name not in names:
            continue
        status, volume = await get_json(address, f"/volumes/{quote(name, safe='')}")
        if status == 404:
            return name  # in use, so it cannot be gone: whatever happened, not checked
        if status != 200:
            raise LookupError_(f"the daemon answered {status} to a look-up of volume {name}")
        if owner_of(volume, VOLUME) != owner:
            return name
    return None


async def _remove_container(address: Address, container_id: str) -> None:
    """`v=1` removes the container's anonymous volumes too, never a named one (moby
    daemon/mounts.go removeMountPoints skips a mount point with a Source): nothing of the
    container is left, and the other caller's volume stays. LookupError_ if it stays."""
    status, _ = await ask_json(address, "DELETE", f"/containers/{container_id}?force=1&v=1")
    if status not in (204, 404):
        raise LookupError_(f"the daemon answered {status} to a removal of the new container")


async def remove_volumes(address: Address, names: tuple[str, ...], owner: str) -> None:
    """Remove the volumes the gateway made for a request that failed, each only while it is
    still `owner`'s (its name could be another caller's volume by now: only a volume made in
    the instant between this look-up and the removal, and unused, would go). A failure is
    harmless (the daemon refuses to remove a volume in use) and ignored."""
    for name in names:
        path = f"/volumes/{quote(name, safe='')}"
        try:
            status, volume = await get_json(address, path)
            if status == 200 and owner_of(volume, VOLUME) == owner:
                await ask_json(address, "DELETE", path)
        except LookupError_:
            continue


SWEEP_DELAYS = (0.0, 1.0, 4.0)  # seconds before each sweep (a create lands in milliseconds)


async def sweep_mounts(
    address: Address, names: frozenset[str], made: tuple[str, ...], owner: str
) -> None:
    """The client left (or the upstream failed) before the answer to its create could be
    checked: the gateway does not know whether the container was made, nor its ID. Each of
    `owner`'s containers that mounts a volume of `names` is checked as settle_create checks
    one, and removed if it mounts a volume not `owner`'s (else he could start it later, found
    in his list); then the volumes made for the create go, unless something uses them. A few
    sweeps, the last seconds later, since the create may still be on its way. Best effort: a
    failed look-up is skipped."""
    for delay in SWEEP_DELAYS:
        await asyncio.sleep(delay)
        for name in sorted(names):
            filters = {"label": [f"{OWNER_LABEL}={owner}"], "volume": [name]}
            path = f"/containers/json?all=1&filters={quote(json.dumps(filters), safe='')}"
            try:
                status, listed = await get_json(address, path)
                if status != 200 or not isinstance(listed, list):
                    continue
                for entry in listed:
                    found = entry.get("Id") if isinstance(entry, dict) else None
                    if not (isinstance(found, str) and FULL_CONTAINER_ID.fullmatch(found)):
                        continue
                    if await foreign_mount(address, found, names, owner) is not None:
                        await _remove_container(address, found)
            except LookupError_:
                continue
    await remove_volumes(address, made, owner)
