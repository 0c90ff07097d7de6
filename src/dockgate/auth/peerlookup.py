"""The caller on a unix socket, named by its peer: a container (asked of the daemon) or a host
process (`uid:N`).

`identify_peer` turns what auth/peerproc.py read of the peer into the caller's `Identity`, or
the `Refusal` its requests get:

- a process in no container: `Identity("uid:N", PROCESS, "gid:N")`;
- a process whose cgroup paths name containers: each ID (outermost first, auth/cgroup.py)
  inspected (`GET /containers/ID/json`); the first container the process is REALLY in is the
  caller, `Identity(NAME, CONTAINER, ID, container=ContainerFacts)`: its cgroup in every
  hierarchy is the cgroup of the container's main process (`State.Pid`, checked to be that
  process: its cgroup names the ID, and the daemon still names it once it was read) or below it
  (auth/cgroup.py `within`). A cgroup path that only NAMES a container proves nothing: an
  unprivileged user makes `<its delegated cgroup>/docker-<ID>.scope` (issue 16's attack);
  such a process, all of whose IDs are the daemon's containers it is not in, is the host
  process it is. An ID the daemon does not know (another daemon's container on the host)
  is refused, 403: a containerised process never takes a host uid's binding;
- a container's Swarm service is the swarm's word (`swarm_service`: the task its task-ID
  label names must be this container's), never its `com.docker.swarm.service.name` label,
  which any create can write;
- a peer that could not be read as the process that connected (peerproc.Unidentified): 403
  with the reason; a daemon that cannot be asked: 502 (the look-up's own timeouts bound the
  wait, ownership/lookup.py).

Facts are kept by full container ID while it runs (`ContainerDirectory`): a container's
labels, image and Swarm service are fixed at its create (moby container/container.go
Config; an ID is never reused; a restart keeps them), so a binding by them decided once
stays right. Only its name can change (`docker rename`): an entry is asked again after
FACTS_SECONDS, so a rename reaches name bindings within that time for connections made
after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.auth.cgroup import Cgroups, inside_container, within
from dockgate.auth.identity import CONTAINER, PROCESS, ContainerFacts, Identity
from dockgate.auth.peerproc import PeerProcess, PeerProcesses, Unidentified
from dockgate.caching import Recent
from dockgate.ownership.lookup import LookupError_, TooLarge, get_json
from dockgate.refusal import Refusal

SERVICE_LABEL = "com.docker.swarm.service.name"  # set by swarmkit on every task container
FACTS_SECONDS = 30.0  # how long a container's facts are kept (its name may change)
CONTAINERS_CACHED = 4096
PEER_STAGE = "peer"
# The container IDs of one peer's cgroup asked of the daemon, at most: docker (1), docker in
# docker (2), a dind inside a Kubernetes pod or a sysbox-style nested runtime (3), one to
# spare. A host user's delegated cgroup tree can name any number of made-up IDs, each a
# look-up (issue 16, second round): past this many the peer is refused (an unknown ID among
# the first ones names it as in another daemon's container; else too many IDs).
MAX_CONTAINER_IDS = 4


def container_facts(answer: object) -> ContainerFacts | None:
    """The facts of an inspect answer (its Swarm service left empty: `swarm_service` asks
    the swarm); None when it is not the daemon's container JSON."""
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
    return ContainerFacts(
        id=full_id,
        name=name.removeprefix("/"),
        labels=pairs,
        image=image if isinstance(image, str) else "",
        service="",  # the swarm's word alone (`swarm_service`), never the container's label
        started_at=started if isinstance(started, str) else "",
    )


@dataclass(frozen=True, slots=True)
class Known:
    """What the daemon says of one container ID a peer's cgroup names."""

    identity: Identity | None  # None: the daemon knows no container of that ID
    # Its main process's cgroups (auth/cgroup.py `within`); () when it has none running.
    cgroups: Cgroups = ()


@dataclass(frozen=True, slots=True)
class _Kept:
    known: Known
    at: float


class ContainerDirectory:
    """Full container ID -> the caller's identity as that container, asked of the daemon and
    kept FACTS_SECONDS (least recently used forgotten first when full). The same `Identity`
    object is handed to every connection of a container while it is kept: admission remembers
    decisions by identity object (policy/admission.py). A container that is not running is
    not kept: its main process's cgroups are read again once it runs."""

    def __init__(
        self,
        clock: Callable[[], float],
        size: int = CONTAINERS_CACHED,
        processes: PeerProcesses | None = None,
    ) -> None:
        self._clock = clock
        self._kept: Recent[str, _Kept] = Recent(size)
        self._processes: dict[tuple[int, int], Identity] = {}
        self._proc = processes if processes is not None else PeerProcesses()

    def process(self, uid: int, gid: int) -> Identity:
        key = (uid, gid)
        found = self._processes.get(key)
        if found is None:
            found = Identity(f"uid:{uid}", PROCESS, f"gid:{gid}")
            if len(self._processes) < CONTAINERS_CACHED:
                self._processes[key] = found
        return found

    def known(self, container_id: str) -> Known | None:
        """What is kept (and fresh) of `container_id`; None when the daemon must be asked."""
        kept = self._kept.get(container_id)
        if kept is not None and self._clock() - kept.at < FACTS_SECONDS:
            return kept.known
        return None

    async def container(self, address: Address, container_id: str) -> Known:
        """The container `container_id` as a caller, and its main process's cgroups.
        LookupError_ when the daemon cannot be asked."""
        kept = self.known(container_id)
        if kept is not None:
            return kept
        now = self._clock()
        try:
            status, answer = await get_json(address, f"/containers/{container_id}/json")
        except TooLarge:
            raise LookupError_(f"the answer about container {container_id} is too large") from None
        if status == 404:
            known = Known(None)
            self._kept.put(container_id, _Kept(known, now))
            return known
        if status != 200:
            raise LookupError_(
                f"the daemon answered {status} to a look-up of container {container_id}"
            )
        facts = container_facts(answer)
        if facts is None or facts.id != container_id:
            raise LookupError_(f"the daemon's answer about container {container_id} is not one")
        cgroups = await self._main_cgroups(address, container_id, answer)
        service = await swarm_service(address, container_id, facts.labels)
        if service != facts.service:
            facts = dataclasses.replace(facts, service=service)
        known = Known(Identity(facts.name, CONTAINER, facts.id, container=facts), cgroups)
        if cgroups:
            self._kept.put(container_id, _Kept(known, now))
        return known

    async def _main_cgroups(self, address: Address, container_id: str, answer: object) -> Cgroups:
        """The cgroups of the container's main process (`State.Pid`), () when it is not
        running. The PID is read in /proc, then the daemon asked again: the process read is
        the main process only if the daemon still names that PID (same start, still
        running) AFTER the read, and the PID still holds the process read after that. A PID
        the main process left and another process took (one that made a cgroup named after
        the container, issue 16's attack) fails the check, unless the daemon has not yet
        noticed the exit by its second answer (milliseconds: THREAT_MODEL.md). No wall
        clock is compared: a host clock stepped after boot (no RTC, a VM) must not break
        identification."""
        pid, started_at = _main_pid(answer)
        if pid is None:
            return ()
        read = self._proc.main_process(pid, container_id)
        unreadable = LookupError_(
            f"the main process of container {container_id} cannot be read (pid {pid}): it "
            "exited or restarts; connect again"
        )
        if read is None:
            raise unreadable
        try:
            status, again = await get_json(address, f"/containers/{container_id}/json")
        except TooLarge:
            raise unreadable from None
        if status != 200 or _main_pid(again) != (pid, started_at):
            raise unreadable
        if not self._proc.same_process(pid, read[0]):
            raise unreadable
        return read[1]


def _main_pid(answer: object) -> tuple[int | None, str]:
    """A running container's `State.Pid` and `State.StartedAt`; (None, "") when it is not
    running."""
    state = answer.get("State") if isinstance(answer, dict) else None
    if not isinstance(state, dict) or state.get("Running") is not True:
        return None, ""
    pid, started_at = state.get("Pid"), state.get("StartedAt")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None, ""
    return pid, started_at if isinstance(started_at, str) else ""


TASK_LABEL = "com.docker.swarm.task.id"  # set by swarmkit on every task container
# A task's container runs as soon as it starts; the agent reports its ContainerID to the
# manager around then (swarmkit agent/exec Do: the STARTING status carries it): asked again
# until it does, for at most TASK_POLLS * TASK_POLL_SECONDS.
TASK_POLLS = 30
TASK_POLL_SECONDS = 0.1
_LIVE_TASK_STATES = frozenset(
    ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running")
)


async def swarm_service(
    address: Address, container_id: str, labels: tuple[tuple[str, str], ...]
) -> str:
    """The Swarm service `container_id` is a task of, by the swarm's word, or "".

    A container's labels are whatever its create said: any caller allowed ContainerCreate
    can write `com.docker.swarm.service.name=X` (issue 16's attack). The task its
    `com.docker.swarm.task.id` label names must be this very container's (the manager's
    `Status.ContainerStatus.ContainerID`), and the service is that task's (`ServiceID`,
    named by `GET /services/ID`). No swarm, or a node that is not a manager (503), or an
    unknown task: no service."""
    task_id = dict(labels).get(TASK_LABEL)
    if not task_id:
        return ""
    task: dict[str, object] = {}
    for attempt in range(TASK_POLLS):
        status, answer = await get_json(address, f"/tasks/{quote(task_id, safe='')}")
        if status in (400, 404, 406, 503):
            return ""  # not a task this daemon's swarm knows (or no swarm, no manager)
        if status != 200 or not isinstance(answer, dict):
            raise LookupError_(f"the daemon answered {status} to a look-up of task {task_id}")
        task = answer
        task_status = task.get("Status")
        task_status = task_status if isinstance(task_status, dict) else {}
        container_status = task_status.get("ContainerStatus")
        reported = (
            container_status.get("ContainerID") if isinstance(container_status, dict) else None
        )
        if reported == container_id:
            break
        if reported or task_status.get("State") not in _LIVE_TASK_STATES:
            return ""  # another container's task, or one that never ran this container
        if attempt + 1 < TASK_POLLS:
            await asyncio.sleep(TASK_POLL_SECONDS)
    else:
        return ""
    service_id = task.get("ServiceID")
    if not isinstance(service_id, str) or not service_id:
        return ""
    status, answer = await get_json(address, f"/services/{quote(service_id, safe='')}")
    if status == 404:
        return ""
    if status != 200 or not isinstance(answer, dict):
        raise LookupError_(f"the daemon answered {status} to a look-up of service {service_id}")
    spec = answer.get("Spec")
    name = spec.get("Name") if isinstance(spec, dict) else None
    return name if isinstance(name, str) else ""


def _unknown(container_id: str) -> Refusal:
    message = (
        f"dockgate: the calling process is in container {container_id[:12]}, which the daemon "
        "behind dockgate does not know (another daemon's container?): a process in a "
        "container is never taken for a host process"
    )
    return Refusal(403, message, PEER_STAGE, "peer in an unknown container")


def _judged(read: PeerProcess, container_id: str, known: Known) -> Identity | Refusal | None:
    """What one container ID the peer's cgroup names says of the peer: the container, when
    the peer is within its main process's cgroup (auth/cgroup.py `within`); a refusal when
    the daemon knows no such container (another daemon's: a process in a container is never
    a host process), or when the peer is inside the cgroup docker made for it but not within
    its main process's (`inside_container`: a process of that container, which must not pass
    for a host process, nor for the container, whose main process's cgroup it left); None
    when the path only names the container (a host user's cgroup named after it)."""
    if known.identity is None:
        return None  # (refused once no later ID is the peer's: `_host`)
    if within(read.cgroups, known.cgroups):
        return known.identity
    if inside_container(read.cgroups, known.cgroups, container_id):
        message = (
            f"dockgate: the calling process is in container {container_id[:12]}'s cgroup but "
            "not in its main process's cgroup or below (systemd as the container's PID 1?): "
            "it cannot be identified as the container, nor as a host process"
        )
        return Refusal(403, message, PEER_STAGE, "peer outside its container's main cgroup")
    return None


def _too_many(read: PeerProcess) -> Refusal:
    message = (
        f"dockgate: the calling process's cgroup names {len(read.containers)} container IDs, "
        f"more than the {MAX_CONTAINER_IDS} dockgate asks about, and it is in none of the "
        "first ones"
    )
    return Refusal(403, message, PEER_STAGE, "peer cgroup names too many containers")


def _host(
    read: PeerProcess, unknown: str | None, directory: ContainerDirectory
) -> Identity | Refusal:
    """The peer once no ID it names has decided: refused if one was an ID the daemon does
    not know (a process in a container is never a host process) or its cgroup named more
    IDs than were asked about; else the host process it is."""
    if unknown is not None:
        return _unknown(unknown)
    if len(read.containers) > MAX_CONTAINER_IDS:
        return _too_many(read)
    return directory.process(read.cred.uid, read.cred.gid)


def settled(
    read: PeerProcess | Unidentified, directory: ContainerDirectory
) -> Identity | Refusal | None:
    """`identify_peer`'s answer when the daemon need not be asked (no container, or the ones
    kept); None when it must be. The same walk as `identify_peer`'s, over what is kept."""
    if isinstance(read, Unidentified):
        return Refusal(403, f"dockgate: {read.reason}", PEER_STAGE, "peer unidentified")
    unknown: str | None = None
    for container_id in read.containers[:MAX_CONTAINER_IDS]:
        known = directory.known(container_id)
        if known is None:
            return None
        judged = _judged(read, container_id, known)
        if judged is not None:
            return judged
        if known.identity is None and unknown is None:
            unknown = container_id
    return _host(read, unknown, directory)


async def identify_peer(
    address: Address, read: PeerProcess | Unidentified, directory: ContainerDirectory
) -> Identity | Refusal:
    """The caller the peer names, or the refusal for its requests (see the module's doc)."""
    if isinstance(read, Unidentified):
        return Refusal(403, f"dockgate: {read.reason}", PEER_STAGE, "peer unidentified")
    # Outermost first, at most MAX_CONTAINER_IDS look-ups however many made-up IDs a path
    # names, stopping at the first ID that decides. An unknown ID does not stop the walk: a
    # later one may be the daemon's own container (dockgate fronting a daemon in a container).
    unknown: str | None = None
    for container_id in read.containers[:MAX_CONTAINER_IDS]:
        try:
            known = await directory.container(address, container_id)
        except LookupError_ as exc:
            message = f"dockgate: cannot identify the calling container: {exc}"
            return Refusal(502, message, PEER_STAGE, "peer look-up failed")
        judged = _judged(read, container_id, known)
        if judged is not None:
            return judged
        if known.identity is None and unknown is None:
            unknown = container_id
    return _host(read, unknown, directory)


# The process's memos: peers read from /proc, containers asked of the daemon.
PEER_PROCESSES = PeerProcesses()
CONTAINERS = ContainerDirectory(time.monotonic, processes=PEER_PROCESSES)
