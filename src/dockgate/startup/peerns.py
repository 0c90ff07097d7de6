"""What bindings by the unix-socket peer need, checked once at start (server.py prints it).

A binding by container or Swarm service names callers by their process's cgroup
(auth/peerproc.py), which dockgate reads in /proc with the PID the kernel gives (SO_PEERCRED).
The kernel gives PIDs as seen from dockgate's own PID namespace: dockgate in a container of its
own PID namespace sees other containers' callers as PID 0 and can name none of them (they are
refused, each with the reason). It needs the host's PID namespace (`docker run --pid host`,
compose `pid: host`). Told apart here: when dockgate is in a container (its network files name
it, startup/containerself.py), PID 1 being in the same container means its PID namespace is the
container's own.
"""

from __future__ import annotations

from pathlib import Path

from dockgate.addresses import Address
from dockgate.policy.rules import PolicySet
from dockgate.startup.containerself import container_id_from_mountinfo


def peer_warnings(
    policies: PolicySet, listen: list[Address], proc: Path = Path("/proc")
) -> list[str]:
    """Start-up warnings for bindings by the unix-socket peer; none without such bindings."""
    peers = [b for b in policies.bindings or () if b.names_peers]
    if not peers:
        return []
    warnings = []
    where = ", ".join(str(b.number) for b in peers)
    if not any(address.scheme == "unix" for address in listen):
        warnings.append(
            f"bindings {where} name callers by their unix-socket peer (container, service, "
            "uids, gids), and no listener is a unix socket: they bind nobody"
        )
    by_container = [b for b in peers if b.container is not None or b.services]
    if by_container and own_pid_namespace(proc):
        warnings.append(
            "container and service bindings need the host's PID namespace, and dockgate runs "
            "in its container's own (PID 1 is in it): callers in other containers cannot be "
            "identified and are refused; run dockgate with --pid host (compose: pid: host)"
        )
    return warnings


def own_pid_namespace(proc: Path = Path("/proc")) -> bool:
    """Whether dockgate runs in a container whose PID namespace is its own: PID 1 is in the
    same container. False on the host, and when it cannot be told."""
    try:
        own = container_id_from_mountinfo((proc / "self" / "mountinfo").read_text())
        if own is None:
            return False
        return container_id_from_mountinfo((proc / "1" / "mountinfo").read_text()) == own
    except OSError:
        return False
