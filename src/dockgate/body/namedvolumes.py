"""Volumes used by name, judged on what the daemon knows of them.

`-v NAME:/data`, `--mount type=volume,src=NAME` and a service's volume mounts use an existing
volume as it is: with the driver and options it was created with, perhaps outside dockgate (or
before the policy changed). The body shows only the name, so before it goes on the daemon is
asked (`GET /volumes/NAME`, one HTTP/1.0 exchange of ownership/lookup.py's) and the answer is
judged by the same function as options in a body (guardrails.named_volume_problem). A volume that
does not exist is created by the daemon as a plain one of the request's driver, which the body's own
checks already judged.
"""

from __future__ import annotations

from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.body.guardrails import Guardrails, named_volume_problem
from dockgate.body.workload import NamedVolume
from dockgate.ownership.lookup import LookupError_, get_json
from dockgate.ownership.operations import VOLUME, owner_of

# A create names a handful of volumes; more than this is refused rather than looked up one by one.
MAX_NAMED_VOLUMES = 64


def to_look_up(volumes: tuple[NamedVolume, ...]) -> list[NamedVolume]:
    """The look-ups to make, one per name and access (a volume mounted twice, read-only and
    read-write, is judged read-write)."""
    chosen: dict[str, NamedVolume] = {}
    for volume in volumes:
        seen = chosen.get(volume.name)
        if seen is None or (seen.read_only and not volume.read_only):
            chosen[volume.name] = volume
    return list(chosen.values())


async def named_volumes_problem(
    address: Address,
    guardrails: Guardrails,
    volumes: list[NamedVolume],
    owner: str | None = None,
    owner_checked: frozenset[str] = frozenset(),
) -> str | None:
    """The first volume the guardrails do not allow, as a sentence; None if all pass.
    LookupError_ when the daemon cannot be asked.

    In ownership mode (`owner`), a volume of `owner_checked` (the names ownership looks up
    next, and refuses unless they are the caller's) that is not the caller's is left to that
    check: judging it here would tell the caller about another's volume (its options, its
    host path) instead of "no such volume"."""
    if len(volumes) > MAX_NAMED_VOLUMES:
        return f"a body may use at most {MAX_NAMED_VOLUMES} volumes by name"
    for volume in volumes:
        # A lone surrogate (a JSON "\udfff") is U+FFFD to Go: the same here, so it can be quoted.
        name = volume.name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        status, answer = await get_json(address, f"/volumes/{quote(name, safe='')}")
        if status == 404:
            continue
        if status < 500 and status != 200:
            # A name the daemon cannot look up is one it would not use either.
            return f"volume {name!r} cannot be looked up (the daemon answered {status})"
        if status != 200:
            raise LookupError_(f"the daemon answered {status} to a look-up of volume {name}")
        if owner is not None and volume.name in owner_checked and owner_of(answer, VOLUME) != owner:
            continue
        problem = named_volume_problem(guardrails, volume, answer)
        if problem is not None:
            return problem
    return None
