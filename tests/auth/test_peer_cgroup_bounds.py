"""The calling container's cgroup, second round (issue 16): a process inside the cgroup docker
made for a container but outside its main process's is refused, and the container IDs a
peer's path names are asked of the daemon at most MAX_CONTAINER_IDS times. Pure: what the
daemon said of each ID is given as `Known`."""

from __future__ import annotations

import time

from dockgate.auth.cgroup import cgroup_paths, inside_container
from dockgate.auth.identity import CONTAINER, PROCESS, Identity
from dockgate.auth.peerlookup import MAX_CONTAINER_IDS, ContainerDirectory, Known, settled
from dockgate.auth.peerproc import PeerCred, PeerProcess
from dockgate.refusal import Refusal

ID = "9f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
OTHER = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
SCOPE = f"/system.slice/docker-{ID}.scope"


def _peer(text: str, *ids: str, uid: int = 0) -> PeerProcess:
    return PeerProcess(PeerCred(4242, uid, uid), 5, ids, cgroup_paths(text))


def _directory(known: dict[str, Known]) -> ContainerDirectory:
    """A directory that has kept `known` (as if asked of the daemon just now)."""
    directory = ContainerDirectory(time.monotonic)
    directory.known = known.get  # type: ignore[method-assign]
    return directory


def _lister() -> Identity:
    return Identity("lister", CONTAINER, ID)


def test_inside_is_at_or_below_the_cgroup_docker_made_not_the_main_process_s() -> None:
    main = cgroup_paths(f"0::{SCOPE}/init.scope\n")
    assert inside_container(cgroup_paths(f"0::{SCOPE}\n"), main, ID)
    assert inside_container(cgroup_paths(f"0::{SCOPE}/system.slice/x.service\n"), main, ID)
    impostor = f"0::/user.slice/user-1000.slice/user@1000.service/docker-{ID}.scope\n"
    assert not inside_container(cgroup_paths(impostor), main, ID)
    assert not inside_container(cgroup_paths("0::/system.slice\n"), main, ID)
    # a sibling whose name only starts like the container's cgroup
    assert not inside_container(cgroup_paths(f"0::{SCOPE}x\n"), main, ID)
    # cgroupfs driver, v1: any one hierarchy is enough
    v1_main = cgroup_paths(f"4:memory:/docker/{ID}/init\n1:name=systemd:/docker/{ID}/init\n")
    v1_peer = cgroup_paths(f"4:memory:/docker/{ID}\n1:name=systemd:/user.slice\n")
    assert inside_container(v1_peer, v1_main, ID)


def test_a_process_of_the_container_outside_its_main_process_cgroup_is_refused() -> None:
    known = Known(_lister(), cgroup_paths(f"0::{SCOPE}/init.scope\n"))
    answer = settled(_peer(f"0::{SCOPE}\n", ID), _directory({ID: known}))
    assert isinstance(answer, Refusal) and answer.status == 403
    assert "not in its main process's cgroup" in answer.message
    # within the main process's cgroup it is the container
    inner = _peer(f"0::{SCOPE}/init.scope\n", ID)
    assert settled(inner, _directory({ID: known})) == _lister()


def test_a_host_user_naming_a_container_stays_the_host_process() -> None:
    known = Known(_lister(), cgroup_paths(f"0::{SCOPE}/init.scope\n"))
    impostor = _peer(f"0::/user.slice/user@1000.service/docker-{ID}.scope\n", ID, uid=1000)
    answer = settled(impostor, _directory({ID: known}))
    assert answer == Identity("uid:1000", PROCESS, "gid:1000")


def test_only_the_first_ids_are_asked_and_more_is_refused() -> None:
    ids = [f"{i:064x}" for i in range(1, 12)]
    path = "0::/user.slice/" + "/".join(ids) + "\n"
    asked: list[str] = []
    real = Known(_lister(), cgroup_paths(f"0::{SCOPE}\n"))  # containers the peer is not in

    def known(container_id: str) -> Known:
        asked.append(container_id)
        return real

    directory = ContainerDirectory(time.monotonic)
    directory.known = known  # type: ignore[assignment,method-assign]
    answer = settled(_peer(path, *ids, uid=1000), directory)
    assert asked == ids[:MAX_CONTAINER_IDS]
    assert isinstance(answer, Refusal) and answer.status == 403
    assert "more than the 4" in answer.message


def test_an_unknown_id_among_the_first_refuses_unless_a_later_one_is_the_peer_s() -> None:
    unknown = Known(None)
    lister = Known(_lister(), cgroup_paths(f"0::/docker-{OTHER}.scope/docker/{ID}\n"))
    nested = _peer(f"0::/docker-{OTHER}.scope/docker/{ID}\n", OTHER, ID)
    assert settled(nested, _directory({OTHER: unknown, ID: lister})) == _lister()
    alone = _peer(f"0::/docker-{OTHER}.scope\n", OTHER)
    answer = settled(alone, _directory({OTHER: unknown}))
    assert isinstance(answer, Refusal) and "does not know" in answer.message
