"""The peer_labels guardrail after a ContainerCreate: the new container, as the daemon made it.

Before the create, the guardrail judges the body's labels merged with those of the image its
name resolves to (relay/steps.py `_check_peer_image`). The daemon resolves the name again at
the create: a tag moved in between (a commit or a tag by a caller allowed them, a pull) gives
the new container the moved-to image's labels, perhaps a container binding's (issue 16,
second round). So where `peer_labels` guards, the create's answer (a 201) is held and the
new container inspected: if its `Config.Labels` (body and image merged, moby
daemon/commit.go `merge`) meet a container binding's conditions, it is removed before the
client hears of it, and the client answered as before the create (403, the peer_labels
reason); a check that cannot be made removes it too (502). The relay holds the answer as it
does for ownership's mount check (relay/steps.py `CreateCheck`).

When the client leaves before the answer, the gateway never learns the new container's ID
(the upstream connection goes with the client): `sweep_peer_create` then looks, a few times,
for the container the create made, by the name the create gave or else by its image name
and creation time, and removes it when its labels meet a binding's conditions.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.body.guardrails import Guardrails, stored_peer_label_problem
from dockgate.ownership.lookup import LookupError_, ask_json, get_json
from dockgate.ownership.volumes import FULL_CONTAINER_ID, created_id

SWEEP_DELAYS = (0.0, 1.0, 4.0)  # seconds before each sweep (a create lands in milliseconds)
# How far before the create was forwarded a swept container's `Created` may be: the daemon
# stamps it when it registers the container, after dockgate sent it (same host, same clock).
SWEEP_SLACK_SECONDS = 1


@dataclass(frozen=True, slots=True)
class PeerSettled:
    """How a held ContainerCreate answer ends: sent on (neither set), refused (`problem`: the
    container's stored labels meet a binding's; it was removed), or a 502 (`failure`: the
    check could not be made; the container was removed, or the failure says it stays)."""

    problem: str | None = None
    failure: str | None = None


async def settle_peer_create(
    address: Address, status: int, raw: bytes, guardrails: Guardrails
) -> PeerSettled:
    """The daemon answered `status` (`raw`) to a ContainerCreate under `peer_labels`: a made
    container (201) is inspected, and removed when its stored labels meet a binding's
    conditions or cannot be read."""
    if status != 201:
        return PeerSettled()
    container_id = created_id(raw)
    if container_id is None:
        return PeerSettled(failure="the daemon's answer to the create names no container")
    try:
        problem = await _stored_problem(address, container_id, guardrails)
    except LookupError_ as exc:
        return PeerSettled(failure=await _removed(address, container_id, f"{exc}"))
    if problem is None:
        return PeerSettled()
    failure = await _removed(address, container_id, "")
    return PeerSettled(problem=problem, failure=failure or None)


async def _stored_problem(
    address: Address, container_id: str, guardrails: Guardrails, image: str | None = None
) -> str | None:
    """Why the container's labels as stored would make it a bound caller, or None (also
    when `image` is given and the container was not created from that name: not the one
    looked for). LookupError_ when the daemon cannot say."""
    status, answer = await get_json(address, f"/containers/{container_id}/json")
    config = answer.get("Config") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(config, dict):
        raise LookupError_(f"the daemon answered {status} to an inspect of the new container")
    if image is not None and config.get("Image") != image:
        return None
    raw_labels = config.get("Labels")
    labels = raw_labels if isinstance(raw_labels, dict) else {}
    text = {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}
    return stored_peer_label_problem(guardrails, text)


async def _removed(address: Address, container_id: str, why: str) -> str:
    """Remove the container (`force=1&v=1`: its anonymous volumes too, never a named one);
    the failure to tell the client ("" when removed and there is nothing to tell)."""
    try:
        status, _ = await ask_json(address, "DELETE", f"/containers/{container_id}?force=1&v=1")
    except LookupError_ as exc:
        prefix = f"{why}; " if why else ""
        return f"{prefix}the new container {container_id[:12]} could not be removed: {exc}"
    if status not in (204, 404):
        prefix = f"{why}; " if why else ""
        return f"{prefix}the daemon answered {status} to a removal of the new container"
    if why:
        return f"cannot check the new container's labels: {why} (it was removed)"
    return ""


async def sweep_peer_create(
    address: Address, guardrails: Guardrails, name: str | None, image: str, since: int
) -> None:
    """The client left (or the upstream failed) before the create's answer could be
    checked: the container it made, if any, is looked for a few times (the create may still
    be on its way) and removed when its stored labels meet a binding's conditions. Looked
    for among the containers carrying a label a binding names, created from the name
    `image` (`Config.Image`; the list shows an image ID once the tag moved) since `since`
    (Unix seconds, when the create was forwarded), and named `name` when the create gave
    one. Best effort: a failed look-up is skipped. Another caller's container made from
    the same image name in those seconds and carrying a bound label is removed too: only a
    policy with `peer_labels: true`, or the daemon's own socket, makes one legitimately (said
    in THREAT_MODEL.md)."""
    keys = sorted({key for _, conditions in guardrails.peer_labels for key, _ in conditions})
    for delay in SWEEP_DELAYS:
        await asyncio.sleep(delay)
        for key in keys:
            filters = {"label": [key]}
            path = f"/containers/json?all=1&filters={quote(json.dumps(filters), safe='')}"
            try:
                status, listed = await get_json(address, path)
            except LookupError_:
                continue
            if status != 200 or not isinstance(listed, list):
                continue
            for entry in listed:
                found = _swept(entry, name, since)
                if found is None:
                    continue
                try:
                    if await _stored_problem(address, found, guardrails, image) is not None:
                        await _removed(address, found, "")
                except LookupError_:
                    continue


def _swept(entry: object, name: str | None, since: int) -> str | None:
    """The ID of a listed container the sweep inspects: created since `since` (less the
    slack) and named `name` when one was given."""
    if not isinstance(entry, dict):
        return None
    found, created, names = entry.get("Id"), entry.get("Created"), entry.get("Names")
    if not (isinstance(found, str) and FULL_CONTAINER_ID.fullmatch(found)):
        return None
    if not isinstance(created, int) or created < since - SWEEP_SLACK_SECONDS:
        return None
    if name and (not isinstance(names, list) or f"/{name.removeprefix('/')}" not in names):
        return None
    return found
