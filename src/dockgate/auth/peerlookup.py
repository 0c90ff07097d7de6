"""The caller on a unix socket, named by its peer: a container (asked of the daemon) or a host
process (`uid:N`).

`identify_peer` turns what auth/peerproc.py read of the peer into the caller's `Identity`, or
the `Refusal` its requests get:

- a process in no container: `Identity("uid:N", PROCESS, "gid:N")`;
- a process in a container: the first of its cgroup's container IDs (outermost first,
  auth/cgroup.py) that the daemon knows, inspected (`GET /containers/ID/json`):
  `Identity(NAME, CONTAINER, ID, container=ContainerFacts)`. IDs the daemon does not know
  (404: another daemon's containers, a container removed since) are passed over; none known:
  the process is in no container of this daemon, a host process for dockgate;
- a peer that could not be read as the process that connected (peerproc.Unidentified): 403
  with the reason; a daemon that cannot be asked: 502 (the look-up's own timeouts bound the
  wait, ownership/lookup.py).

Facts are kept by full container ID (`ContainerDirectory`): a container's labels, image and
Swarm service are fixed at its create (moby container/container.go Config; an ID is never
reused; a restart keeps them), so a binding by them decided once stays right. Only its name
can change (`docker rename`): an entry is asked again after FACTS_SECONDS, so a rename reaches
name bindings within that time for connections made after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dockgate.addresses import Address
from dockgate.auth.identity import CONTAINER, PROCESS, ContainerFacts, Identity
from dockgate.auth.peerproc import PeerProcess, PeerProcesses, Unidentified
from dockgate.caching import Recent
from dockgate.ownership.lookup import LookupError_, TooLarge, get_json
from dockgate.refusal import Refusal

SERVICE_LABEL = "com.docker.swarm.service.name"  # set by swarmkit on every task container
FACTS_SECONDS = 30.0  # how long a container's facts are kept (its name may change)
CONTAINERS_CACHED = 4096
PEER_STAGE = "peer"


def container_facts(answer: object) -> ContainerFacts | None:
    """The facts of an inspect answer; None when it is not the daemon's container JSON."""
    if not isinstance(answer, dict):
        return None
    full_id = answer.get("Id")
    name = answer.get("Name")
    config = answer.get("Config")
    if not isinstance(full_id, str) or not isinstance(name, str) or not isinstance(config, dict):
        return None
    raw_labels = config.get("Labels")
    labels: Mapping[str, object] = raw_labels if isinstance(raw_labels, dict) else {}
    pairs = tuple(sorted((k, v) for k, v in labels.items() if isinstance(v, str)))
    image = config.get("Image")
    state = answer.get("State")
    started = state.get("StartedAt") if isinstance(state, dict) else None
    service = labels.get(SERVICE_LABEL)
    return ContainerFacts(
        id=full_id,
        name=name.removeprefix("/"),
        labels=pairs,
        image=image if isinstance(image, str) else "",
        service=service if isinstance(service, str) else "",
        started_at=started if isinstance(started, str) else "",
    )


@dataclass(frozen=True, slots=True)
class _Kept:
    identity: Identity | None  # None: the daemon knows no container of that ID
    at: float


class ContainerDirectory:
    """Full container ID -> the caller's identity as that container, asked of the daemon and
    kept FACTS_SECONDS (least recently used forgotten first when full). The same `Identity`
    object is handed to every connection of a container while it is kept: admission remembers
    decisions by identity object (policy/admission.py)."""

    def __init__(self, clock: Callable[[], float], size: int = CONTAINERS_CACHED) -> None:
        self._clock = clock
        self._kept: Recent[str, _Kept] = Recent(size)
        self._processes: dict[tuple[int, int], Identity] = {}

    def process(self, uid: int, gid: int) -> Identity:
        key = (uid, gid)
        found = self._processes.get(key)
        if found is None:
            found = Identity(f"uid:{uid}", PROCESS, f"gid:{gid}")
            if len(self._processes) < CONTAINERS_CACHED:
                self._processes[key] = found
        return found

    def known(self, container_id: str) -> tuple[bool, Identity | None]:
        """Whether `container_id` is kept (and fresh), and what is kept of it."""
        kept = self._kept.get(container_id)
        if kept is not None and self._clock() - kept.at < FACTS_SECONDS:
            return True, kept.identity
        return False, None

    async def container(self, address: Address, container_id: str) -> Identity | None:
        """The container `container_id` as a caller; None when the daemon knows none.
        LookupError_ when it cannot be asked."""
        now = self._clock()
        kept = self._kept.get(container_id)
        if kept is not None and now - kept.at < FACTS_SECONDS:
            return kept.identity
        try:
            status, answer = await get_json(address, f"/containers/{container_id}/json")
        except TooLarge:
            raise LookupError_(f"the answer about container {container_id} is too large") from None
        identity = None
        if status == 200:
            facts = container_facts(answer)
            if facts is None or facts.id != container_id:
                raise LookupError_(f"the daemon's answer about container {container_id} is not one")
            identity = Identity(facts.name, CONTAINER, facts.id, container=facts)
        elif status != 404:
            raise LookupError_(
                f"the daemon answered {status} to a look-up of container {container_id}"
            )
        self._kept.put(container_id, _Kept(identity, now))
        return identity


def settled(
    read: PeerProcess | Unidentified, directory: ContainerDirectory
) -> Identity | Refusal | None:
    """`identify_peer`'s answer when the daemon need not be asked (no container, or the ones
    kept); None when it must be."""
    if isinstance(read, Unidentified):
        return Refusal(403, f"dockgate: {read.reason}", PEER_STAGE, "peer unidentified")
    for container_id in read.containers:
        known, identity = directory.known(container_id)
        if not known:
            return None
        if identity is not None:
            return identity
    return directory.process(read.cred.uid, read.cred.gid)


async def identify_peer(
    address: Address, read: PeerProcess | Unidentified, directory: ContainerDirectory
) -> Identity | Refusal:
    """The caller the peer names, or the refusal for its requests (see the module's doc)."""
    if isinstance(read, Unidentified):
        return Refusal(403, f"dockgate: {read.reason}", PEER_STAGE, "peer unidentified")
    for container_id in read.containers:
        try:
            found = await directory.container(address, container_id)
        except LookupError_ as exc:
            message = f"dockgate: cannot identify the calling container: {exc}"
            return Refusal(502, message, PEER_STAGE, "peer look-up failed")
        if found is not None:
            return found
    return directory.process(read.cred.uid, read.cred.gid)


# The process's memos: peers read from /proc, containers asked of the daemon.
PEER_PROCESSES = PeerProcesses()
CONTAINERS = ContainerDirectory(time.monotonic)
