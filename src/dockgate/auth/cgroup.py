"""Which container a process is in, from its `/proc/PID/cgroup`: a pure parser.

Each line is `HIERARCHY-ID:CONTROLLERS:PATH` (cgroups(7)); cgroup v1 has a line per hierarchy,
v2 one line `0::PATH`, a hybrid host both. Container runtimes name the container's cgroup by
its 64-hex ID, in a few shapes (what this machine's dockerd writes is pinned by
tests/auth/test_peer_e2e.py):

- `/docker/<ID>`: dockerd with the cgroupfs driver (moby daemon/oci_linux.go, cgroup parent
  `/docker`);
- `/system.slice/docker-<ID>.scope`: dockerd with the systemd driver;
- `/kubepods/besteffort/pod<UID>/<ID>`, `/kubepods.slice/.../cri-containerd-<ID>.scope`,
  `.../crio-<ID>.scope`, `/machine.slice/libpod-<ID>.scope`: containerd, CRI-O, podman;
- `/system.slice/containerd.service/kubepods-...:cri-containerd:<ID>` (containerd's systemd
  driver writes the unit and the ID after colons);
- nested (docker in docker): `/docker/<OUTER>/docker/<INNER>`.

A process is named by every ID its paths carry, the OUTERMOST first: the daemon dockgate
fronts knows the outer container (dind's inner containers are the inner daemon's), and a
process that could write cgroups (a privileged container) cannot pose as another container by
making a sub-cgroup named after it, since its own container comes first. A path that names a
container is only a candidate: the process is in it when its cgroups are the container's main
process's or below (`within`, with `cgroup_paths`; auth/peerlookup.py), since anyone with a
delegated cgroup (every systemd user session) can name a sub-cgroup after any container.
"""

from __future__ import annotations

import re

# One path component that names a container: the ID alone, or after a runtime's prefix
# (`docker-`, `cri-containerd-`, `crio-`, `libpod-`, `...:cri-containerd:`), optionally with
# systemd's `.scope`. A component of another length (a pod UID, a 32-hex machine ID) is not.
_COMPONENT = re.compile(r"(?:[A-Za-z0-9_.:-]*[-:])?([0-9a-f]{64})(?:\.scope)?")


def container_ids(cgroup_text: str) -> tuple[str, ...]:
    """The container IDs the process's cgroup paths name, outermost first, each once; empty
    when the process is in no container (a host process: `/`, `/user.slice/...`)."""
    found: list[str] = []
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue  # not a cgroup line: ignored, as the kernel never writes one
        for component in parts[2].split("/"):
            match = _COMPONENT.fullmatch(component)
            if match is not None and match.group(1) not in found:
                found.append(match.group(1))
    return tuple(found)


# ----- the cgroup a process is in, per hierarchy -------------------------------------------------

# (hierarchy `ID:CONTROLLERS`, path) for each line of /proc/PID/cgroup, in the file's order.
Cgroups = tuple[tuple[str, str], ...]


def cgroup_paths(cgroup_text: str) -> Cgroups:
    """Each hierarchy the process is in, with its path there (cgroups(7))."""
    found: list[tuple[str, str]] = []
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)  # (a path may hold colons: containerd's systemd units)
        if len(parts) == 3:
            found.append((f"{parts[0]}:{parts[1]}", parts[2]))
    return tuple(found)


def within(peer: Cgroups, main: Cgroups) -> bool:
    """Whether a process in `peer` is in the cgroup of a container whose main process is in
    `main`, or below it, in every hierarchy (v1 and v2): processes exec'd into a container
    join its main process's cgroups, and only a process inside the container (its root, with
    a cgroup namespace or systemd in it) can make cgroups below. A path NAMING a container is
    not enough: an unprivileged user can make `<its own delegated cgroup>/docker-<ID>.scope`
    (systemd delegates `user@UID.service` to every logged-in user; issue 16's attack)."""
    if not main or len(peer) != len(main):
        return False
    where = dict(main)
    if len(where) != len(main):
        return False  # the kernel never lists a hierarchy twice
    for hierarchy, path in peer:
        top = where.get(hierarchy)
        if top is None:
            return False
        if path != top and not path.startswith(top.rstrip("/") + "/"):
            return False
    return True


def _container_root(path: str, container_id: str) -> str | None:
    """The cgroup docker made for the container in one hierarchy: `path` (its main process's
    there) up to and including the first component naming `container_id` (`/docker/<ID>`,
    `/system.slice/docker-<ID>.scope`); None when no component names it."""
    components = path.split("/")
    for index, component in enumerate(components):
        match = _COMPONENT.fullmatch(component)
        if match is not None and match.group(1) == container_id:
            return "/".join(components[: index + 1])
    return None


def inside_container(peer: Cgroups, main: Cgroups, container_id: str) -> bool:
    """Whether a process in `peer` is, in any hierarchy, at or below the cgroup docker made
    for the container (`_container_root` of its main process's path there), though perhaps
    not within its main process's cgroup (`within`): systemd as a container's PID 1 moves
    itself to `<ctr>/init.scope`, and a process exec'd in lands in `<ctr>` (runc joins the
    container's cgroup). Only root on the host, or the container's own root, can put a
    process there (the runtime's cgroups belong to root; a delegated user tree is elsewhere),
    so such a process is the container's, never a host user's, whatever its uid. Any one
    hierarchy is enough: this only ever turns a peer away (auth/peerlookup.py)."""
    where = dict(main)
    for hierarchy, path in peer:
        top = where.get(hierarchy)
        root = _container_root(top, container_id) if top is not None else None
        if root is None or root == "":
            continue
        if path == root or path.startswith(root + "/"):
            return True
    return False
