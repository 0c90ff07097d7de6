"""Ownership: owner labels a client writes itself, anywhere in a body.

dockgate writes the caller's owner label last into the top-level `Labels` of what it creates
(ownership.with_owner_label), so Go's decoder keeps it there whatever the client wrote. But
one body can make the daemon create objects whose labels come from elsewhere in it:

- a container's `HostConfig.Mounts[].VolumeOptions.Labels` label the volume the daemon
  creates for a mount of a new volume name (daemon/volumes.go registerMountPoints,
  `volumeopts.WithCreateLabels(cfg.VolumeOptions.Labels)`);
- a service's `TaskTemplate.ContainerSpec.Mounts[].VolumeOptions.Labels` do the same on each
  node that runs a task (daemon/cluster/executor/container/container.go volumeCreateRequest);
- and the API grows: a label map in a field of a newer version is not known here.

A volume planted with `io.dockgate.owner=user:bob` is bob's to dockgate: listed to him,
returned by his `volume create` of that name, written by his jobs while the planter reads it.
So in ownership mode an owner label whose value is not the caller's own is refused (403)
wherever it appears in a body that ownership reads: under any key at any depth, not only in
maps called `Labels` (a map keyed `io.dockgate.owner` anywhere else has no use). Map keys are
exact in Go (encoding/json matches only struct fields case-insensitively), and so is the owner
label the daemon stores and dockgate reads back (ownership.owner_of): `IO.DOCKGATE.OWNER` is
another label, and passes. Every duplicate is judged, not only the last (the one Go keeps).
The caller's own label passes: `docker service update` sends the whole spec back, label
included.
"""

from __future__ import annotations

from dockgate.body import gojson
from dockgate.ownership.operations import OWNER_LABEL


def foreign_owner_label(body: bytes, owner: str) -> str | None:
    """Where `body` (read as Go reads it) carries an owner label other than `owner`, as a path
    (`HostConfig.Mounts[0].VolumeOptions.Labels`); None when it carries none. ValueError for a
    body that cannot be read (refused, 400)."""
    try:
        top = gojson.parse(body, strict_end=True)
    except RecursionError:
        raise ValueError("the body is nested too deeply") from None
    # A loop with its own stack, not recursion: a body nested as deep as the parser allows
    # must not raise here. Each entry keeps its parent, and the path is spelt only for the
    # label found (spelling every path would cost the body's depth for each of its values).
    stack: list[tuple[object, _Where | None]] = [(top, None)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, gojson.GoObject):
            for key, item in value.pairs:
                if key == OWNER_LABEL and item != owner:
                    return _spelt(where)
                if isinstance(item, (gojson.GoObject, list)):  # scalars hold no labels
                    stack.append((item, _Where(where, f".{key}")))
        elif isinstance(value, list):
            stack.extend(
                (item, _Where(where, f"[{i}]"))
                for i, item in enumerate(value)
                if isinstance(item, (gojson.GoObject, list))
            )
    return None


class _Where:
    """One step of a path into the body, linked to the step before it."""

    __slots__ = ("parent", "step")

    def __init__(self, parent: _Where | None, step: str) -> None:
        self.parent = parent
        self.step = step


def _spelt(where: _Where | None) -> str:
    steps: list[str] = []
    while where is not None:
        steps.append(where.step)
        where = where.parent
    return "".join(reversed(steps)).removeprefix(".") or "the top level"
