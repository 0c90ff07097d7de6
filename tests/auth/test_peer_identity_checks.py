"""The fixes to issue 16's attacks on the calling container as the identity, pure: a peer is
container ID only inside that container's main process's cgroup, an ID the daemon does not
know is refused, and a container's Swarm service is the swarm's word (auth/cgroup.py,
auth/peerproc.py, auth/peerlookup.py). Against a fake /proc and a fake daemon; the attacks
themselves run against the real daemon in test_attacks_peer.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dockgate.addresses import parse_address
from dockgate.auth.cgroup import cgroup_paths, container_ids, within
from dockgate.auth.identity import CONTAINER, PROCESS, Identity
from dockgate.auth.peerlookup import ContainerDirectory, identify_peer, settled
from dockgate.auth.peerproc import (
    PeerCred,
    PeerProcess,
    PeerProcesses,
)
from dockgate.refusal import Refusal
from support.fake_upstream import Exchange, FakeUpstream, default_handler

ID = "9f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
OTHER = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
MAIN_PID = 3000
TASK = "t5k1d0000000000000000000a"
SERVICE_ID = "svc0000000000000000000001"

HYBRID_MAIN = f"12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"


# ----- within: the container's cgroup or below, in every hierarchy ----------------------------


@pytest.mark.parametrize(
    ("peer", "inside"),
    [
        (HYBRID_MAIN, True),  # exec'd into it: its main process's cgroups
        (  # a cgroup made below it (systemd in the container, a cgroup namespace)
            f"12:pids:/docker/{ID}/init.scope\n11:memory:/docker/{ID}/x\n"
            f"1:name=systemd:/docker/{ID}/init.scope\n0::/\n",
            True,
        ),
        (  # a host user's delegated cgroup named after it (the attack): v1 paths differ
            f"12:pids:/user.slice\n11:memory:/user.slice\n1:name=systemd:/user.slice/"
            f"user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope\n0::/\n",
            False,
        ),
        (  # one hierarchy out of it is enough to be out
            f"12:pids:/docker/{ID}\n11:memory:/\n1:name=systemd:/docker/{ID}\n0::/\n",
            False,
        ),
        (  # a sibling whose name starts the same is not below
            f"12:pids:/docker/{ID}x\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n",
            False,
        ),
        (f"12:pids:/docker/{ID}\n0::/\n", False),  # other hierarchies than the kernel lists
    ],
)
def test_a_peer_is_in_a_container_only_inside_its_main_process_cgroups(
    peer: str, inside: bool
) -> None:
    assert within(cgroup_paths(peer), cgroup_paths(HYBRID_MAIN)) is inside


def test_the_cgroup_v2_impostor_path_is_not_inside_the_container() -> None:
    main = cgroup_paths(f"0::/system.slice/docker-{ID}.scope\n")
    assert within(cgroup_paths(f"0::/system.slice/docker-{ID}.scope/sub\n"), main)
    assert not within(cgroup_paths(f"0::/dgt-user-x/docker-{ID}.scope\n"), main)
    assert not within(main, ())  # a container with no main process read holds nobody


def test_paths_with_colons_are_kept_whole() -> None:
    text = f"0::/system.slice/containerd.service/kubepods-x.slice:cri-containerd:{ID}\n"
    assert cgroup_paths(text) == (
        ("0:", f"/system.slice/containerd.service/kubepods-x.slice:cri-containerd:{ID}"),
    )


# ----- the container's main process, checked to be it -------------------------------------------


def _stat(pid: int, started: int) -> str:
    fields = ["S", *(["0"] * 18), str(started), "0"]
    return f"{pid} (sleep) {' '.join(fields)}\n"


STARTED_AT = "2026-12-07T15:00:00.123456789Z"


def _fake_proc(files: dict[str, str]) -> Callable[[Path], str]:
    def read(path: Path) -> str:
        found = files.get(str(path))
        if found is None:
            raise FileNotFoundError(str(path))
        return found

    return read


MAIN_START = 99_000  # the main process's start, in boot ticks


def _main(cgroup: str, started: int = MAIN_START) -> dict[str, str]:
    return {f"/proc/{MAIN_PID}/stat": _stat(MAIN_PID, started), f"/proc/{MAIN_PID}/cgroup": cgroup}


def test_the_main_process_is_read_when_its_cgroup_names_the_container() -> None:
    processes = PeerProcesses(read_text=_fake_proc(_main(HYBRID_MAIN)))
    assert processes.main_process(MAIN_PID, ID) == (MAIN_START, cgroup_paths(HYBRID_MAIN))
    assert processes.same_process(MAIN_PID, MAIN_START)
    assert not processes.same_process(MAIN_PID, MAIN_START + 1)


def test_a_main_pid_whose_cgroup_does_not_name_the_container_is_not_it() -> None:
    processes = PeerProcesses(read_text=_fake_proc(_main(f"0::/docker/{OTHER}\n")))
    assert processes.main_process(MAIN_PID, ID) is None


def test_a_main_pid_that_is_gone_is_not_it() -> None:
    processes = PeerProcesses(read_text=_fake_proc({}))
    assert processes.main_process(MAIN_PID, ID) is None
    assert processes.main_process(0, ID) is None
    assert not processes.same_process(MAIN_PID, MAIN_START)


# ----- naming the caller, against a fake daemon ------------------------------------------------


def _inspect(container_id: str, labels: dict[str, str], running: bool = True) -> object:
    return {
        "Id": container_id,
        "Name": "/web",
        "Config": {"Image": "busybox", "Labels": labels},
        "State": {
            "Running": running,
            "Pid": MAIN_PID if running else 0,
            "StartedAt": STARTED_AT,
        },
    }


class Daemon:
    """A fake daemon: containers by ID (404 for others), tasks, services; counts asks."""

    def __init__(self) -> None:
        self.containers: dict[str, object] = {}
        self.tasks: dict[str, object] = {}
        self.task_status = 200
        self.asked: list[str] = []
        # Called at each container inspect with how many were asked: the main process
        # changing under dockgate's reads.
        self.on_inspect: Callable[[int], None] = lambda _: None

    def __call__(self, exchange: Exchange) -> None:
        path = exchange.path.partition("?")[0]
        self.asked.append(path)
        parts = path.strip("/").split("/")
        if parts[0] == "containers" and parts[1] in self.containers:
            self.on_inspect(sum(1 for asked in self.asked if asked.startswith("/containers/")))
            exchange.respond_json(self.containers[parts[1]])
        elif parts[0] == "tasks" and self.task_status != 200:
            exchange.respond_json({"message": "This node is not a swarm manager."}, 503)
        elif parts[0] == "tasks" and parts[1] in self.tasks:
            exchange.respond_json(self.tasks[parts[1]])
        elif parts[0] == "services" and parts[1] == SERVICE_ID:
            exchange.respond_json({"ID": SERVICE_ID, "Spec": {"Name": "edge_traefik"}})
        elif parts[0] in ("containers", "tasks", "services"):
            exchange.respond_json({"message": "no such object"}, 404)
        else:
            default_handler(exchange)


@pytest.fixture
def fake_daemon() -> Iterator[tuple[Daemon, str]]:
    daemon = Daemon()
    with FakeUpstream() as fake:
        fake.handler = daemon
        yield daemon, fake.url


def _identify(
    url: str, peer_cgroup: str, directory: ContainerDirectory | None = None, uid: int = 0
) -> Identity | Refusal:
    if directory is None:
        directory = _directory()
    read = PeerProcess(
        PeerCred(4242, uid, uid), 5, container_ids(peer_cgroup), cgroup_paths(peer_cgroup)
    )
    return asyncio.run(identify_peer(parse_address(url), read, directory))


def _directory(files: dict[str, str] | None = None) -> ContainerDirectory:
    if files is None:
        files = _main(f"0::/system.slice/docker-{ID}.scope\n")
    return ContainerDirectory(time.monotonic, processes=PeerProcesses(read_text=_fake_proc(files)))


def test_a_process_inside_the_container_is_that_container(
    fake_daemon: tuple[Daemon, str],
) -> None:
    daemon, url = fake_daemon
    daemon.containers[ID] = _inspect(ID, {"dockgate.role": "lister"})
    caller = _identify(url, f"0::/system.slice/docker-{ID}.scope\n")
    assert isinstance(caller, Identity) and caller.method == CONTAINER and caller.detail == ID


def test_a_host_process_in_a_cgroup_named_after_a_container_is_the_host_process(
    fake_daemon: tuple[Daemon, str],
) -> None:
    daemon, url = fake_daemon
    daemon.containers[ID] = _inspect(ID, {"dockgate.role": "lister"})
    directory = _directory()
    impostor = f"0::/user.slice/user-1000.slice/user@1000.service/docker-{ID}.scope\n"
    caller = _identify(url, impostor, directory, uid=1000)
    assert caller == Identity("uid:1000", PROCESS, "gid:1000")
    # and the same from what is kept, without the daemon
    read = PeerProcess(PeerCred(4243, 1000, 1000), 5, (ID,), cgroup_paths(impostor))
    assert settled(read, directory) == Identity("uid:1000", PROCESS, "gid:1000")


def test_a_process_in_a_container_the_daemon_does_not_know_is_refused(
    fake_daemon: tuple[Daemon, str],
) -> None:
    _, url = fake_daemon
    caller = _identify(url, f"0::/system.slice/docker-{OTHER}.scope\n")
    assert isinstance(caller, Refusal) and caller.status == 403
    assert "which the daemon behind dockgate does not know" in caller.message
    assert caller.reason == "peer in an unknown container"


def test_a_known_container_inside_an_unknown_one_is_the_known_one(
    fake_daemon: tuple[Daemon, str],
) -> None:
    """dockgate fronting a daemon that runs in a container (docker in docker) with the host's
    PID namespace: the outer ID is not the daemon's, the inner one is, and the peer is in it."""
    daemon, url = fake_daemon
    daemon.containers[ID] = _inspect(ID, {})
    main = f"0::/system.slice/docker-{OTHER}.scope/docker/{ID}\n"
    caller = _identify(url, main, _directory(_main(main)))
    assert isinstance(caller, Identity) and caller.detail == ID


def test_a_stopped_container_holds_no_caller_and_is_asked_again(
    fake_daemon: tuple[Daemon, str],
) -> None:
    daemon, url = fake_daemon
    daemon.containers[ID] = _inspect(ID, {}, running=False)
    directory = _directory()
    peer = f"0::/system.slice/docker-{ID}.scope\n"
    assert _identify(url, peer, directory) == Identity("uid:0", PROCESS, "gid:0")
    daemon.containers[ID] = _inspect(ID, {})
    caller = _identify(url, peer, directory)
    assert isinstance(caller, Identity) and caller.method == CONTAINER


@pytest.mark.parametrize("change", ["another process took the pid", "the daemon names another"])
def test_a_main_pid_that_changes_while_it_is_read_is_not_taken(
    fake_daemon: tuple[Daemon, str], change: str
) -> None:
    """The main process exits and its PID goes to another process (one in a cgroup named
    after the container) while dockgate reads it: the second inspect, or the PID's start
    time after it, tells; the caller is asked to connect again (502), never identified by
    the other process's cgroup."""
    daemon, url = fake_daemon
    daemon.containers[ID] = _inspect(ID, {"dockgate.role": "lister"})
    impostor = f"0::/dgt-user-x/docker-{ID}.scope\n"
    files = _main(impostor)
    directory = _directory(files)

    def on_inspect(count: int) -> None:
        if count != 2:
            return
        if change == "another process took the pid":
            files[f"/proc/{MAIN_PID}/stat"] = _stat(MAIN_PID, MAIN_START + 500)
        else:
            daemon.containers[ID] = {**_inspect(ID, {}), "State": {"Running": False, "Pid": 0}}

    daemon.on_inspect = on_inspect
    caller = _identify(url, impostor, directory, uid=65534)
    assert isinstance(caller, Refusal) and caller.status == 502, caller
    assert f"the main process of container {ID} cannot be read" in caller.message


def _task(container_id: str, state: str = "running") -> object:
    return {
        "ID": TASK,
        "ServiceID": SERVICE_ID,
        "Status": {"State": state, "ContainerStatus": {"ContainerID": container_id}},
    }


@pytest.mark.parametrize(
    ("labels", "task", "service"),
    [
        # a plain container with swarmkit's label: no task, no service
        ({"com.docker.swarm.service.name": "edge_traefik"}, None, ""),
        # ... naming a real task of the service, which is another container's
        (
            {"com.docker.swarm.service.name": "edge_traefik", "com.docker.swarm.task.id": TASK},
            _task(OTHER),
            "",
        ),
        # the task's own container: the service is the task's (whatever the labels say)
        ({"com.docker.swarm.task.id": TASK}, _task(ID), "edge_traefik"),
        # a task that ended without a container of its own
        ({"com.docker.swarm.task.id": TASK}, _task("", "rejected"), ""),
    ],
)
def test_a_containers_service_is_the_swarms_word(
    fake_daemon: tuple[Daemon, str],
    labels: dict[str, str],
    task: object,
    service: str,
) -> None:
    daemon, url = fake_daemon
    daemon.containers[ID] = _inspect(ID, labels)
    if task is not None:
        daemon.tasks[TASK] = task
    caller = _identify(url, f"0::/system.slice/docker-{ID}.scope\n")
    assert isinstance(caller, Identity) and caller.container is not None
    assert caller.container.service == service


def test_no_swarm_manager_means_no_service(fake_daemon: tuple[Daemon, str]) -> None:
    daemon, url = fake_daemon
    daemon.containers[ID] = _inspect(ID, {"com.docker.swarm.task.id": TASK})
    daemon.tasks[TASK] = _task(ID)
    daemon.task_status = 503
    caller = _identify(url, f"0::/system.slice/docker-{ID}.scope\n")
    assert isinstance(caller, Identity) and caller.container is not None
    assert caller.container.service == ""
