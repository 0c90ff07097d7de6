"""Issue 12, item 1: owner labels are trusted only where dockgate put them.

The classic builder creates each `RUN` step's container from the previous step's image config,
labels included (moby builder/dockerfile/internals.go, containerbackend.go). An image carrying
`io.dockgate.owner=user:alice` (built through an older dockgate, imported, pulled, or labelled by
the Dockerfile itself) made the step containers of bob's build alice's: she listed them, read
their environment (bob's build arguments), exec'd into them, read bob's build context and
planted files in bob's image. Each test here looks at what the daemon did, against the real
daemon of the session.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from support.attack import (
    ATTACK_MARKS,
    TENANT_USERS,
    Api,
    build_context,
    direct,
    logs,
    running_tenants,
    tenants_fixture,
    tenants_policy,
)
from support.daemon import DEFAULT_PATH, PrivateDaemon, busybox_rootfs_tar
from support.swarm import single_node_swarm

pytestmark = ATTACK_MARKS

RUN = uuid.uuid4().hex[:8]
OWNER_LABEL = "io.dockgate.owner"
BUILT_BY = "io.dockgate.built-by"
USERS = TENANT_USERS
POLICY = tenants_policy()


tenants = tenants_fixture(POLICY, "ownership-builds")


@pytest.fixture
def images(daemon: PrivateDaemon) -> Iterator[list[str]]:
    """Images (and containers, `container:ID`) to remove straight on the daemon after a test."""
    names: list[str] = []
    yield names
    containers = [n.removeprefix("container:") for n in names if n.startswith("container:")]
    if containers:
        daemon.docker("rm", "-f", *containers, check=False)
    for name in reversed([n for n in names if not n.startswith("container:")]):
        daemon.docker("rmi", "-f", name, check=False)


def _build(api: Api, dockerfile: str, tag: str, query: str = "") -> tuple[int, Any]:
    return api.call(
        "POST",
        f"/v1.41/build?t={tag}{query}",
        build_context({"Dockerfile": dockerfile.encode()}),
        headers={"Content-Type": "application/x-tar"},
    )


def _image_labels(daemon: PrivateDaemon, image: str) -> dict[str, str]:
    status, answer = direct(daemon, "GET", f"/images/{image}/json")
    assert status == 200, (status, answer)
    return dict(answer["Config"].get("Labels") or {})


def _import_labelled(daemon: PrivateDaemon, tag: str, owner: str) -> str:
    """An image carrying `owner`'s label, made straight on the daemon (as a pulled or loaded
    image, or one built through an older dockgate, would carry it)."""
    daemon.docker(
        "import",
        *("--change", f"ENV PATH={DEFAULT_PATH}", "--change", 'CMD ["sh"]'),
        *("--change", f"LABEL {OWNER_LABEL}={owner}"),
        "-",
        tag,
        input=busybox_rootfs_tar(),
    )
    return tag


def _step_container(daemon: PrivateDaemon, marker: str, timeout: float = 30) -> dict[str, Any]:
    """The running container of a build step whose command holds `marker` (asked straight of
    the daemon)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, listed = direct(daemon, "GET", "/containers/json")
        assert status == 200, (status, listed)
        for entry in listed:
            if marker in entry.get("Command", ""):
                return dict(entry)
        time.sleep(0.2)
    raise AssertionError(f"no running step container with {marker!r}")


@pytest.mark.parametrize("base", ["alice-built", "imported", "dockerfile-label"])
def test_another_callers_build_steps_are_not_alices(
    tenants: dict[str, Api],
    daemon: PrivateDaemon,
    busybox_image: str,
    images: list[str],
    base: str,
) -> None:
    """bob builds FROM an image that carries (or, built through dockgate, used to carry)
    alice's owner label, or whose Dockerfile labels it so: the step container running bob's
    `RUN` (with his build argument in its environment) is not alice's. She cannot list,
    inspect, exec into, read or write its files (404, as for a missing container), and bob's
    image gets no planted file. Fails on the old code: every one of alice's calls reached the
    step container (for "alice-built", the image carried `user:alice`)."""
    alice, bob = tenants["alice"], tenants["bob"]
    marker = f"dgo-step-{RUN}-{uuid.uuid4().hex[:6]}"
    secret = f"bob-secret-{uuid.uuid4().hex[:8]}"
    label_line = ""
    if base == "alice-built":
        base_tag = f"dgo-alice-base-{RUN}-{uuid.uuid4().hex[:4]}"
        status, answer = _build(alice, f"FROM {busybox_image}\nRUN echo alice > /alice\n", base_tag)
        assert status == 200, (status, answer)
        images.append(base_tag)
        # Built through dockgate: the image vouches for no one, its builder is provenance only.
        labels = _image_labels(daemon, base_tag)
        assert labels.get(OWNER_LABEL) == ""
        assert labels.get(BUILT_BY) == "user:alice"
    elif base == "imported":
        base_tag = f"dgo-imported-{RUN}-{uuid.uuid4().hex[:4]}"
        _import_labelled(daemon, base_tag, "user:alice")
        images.append(base_tag)
    else:
        base_tag = busybox_image
        label_line = f"LABEL {OWNER_LABEL}=user:alice\n"
    tag = f"dgo-bob-{RUN}-{uuid.uuid4().hex[:4]}"
    dockerfile = (
        f"FROM {base_tag}\nARG BOB_SECRET\n{label_line}"
        f"RUN echo {marker} && sleep 10 && echo built > /bob\n"
    )
    buildargs = urllib.parse.quote(f'{{"BOB_SECRET":"{secret}"}}')
    result: dict[str, tuple[int, Any]] = {}
    builder = threading.Thread(
        target=lambda: result.setdefault(
            "build", _build(bob, dockerfile, tag, f"&rm=0&buildargs={buildargs}")
        )
    )
    builder.start()
    images.append(tag)
    try:
        step = _step_container(daemon, marker)
        cid = step["Id"]
        images.append(f"container:{cid}")
        # What the daemon gave the step container: its image's labels, and bob's argument.
        status, inspected = direct(daemon, "GET", f"/containers/{cid}/json")
        assert status == 200
        assert f"BOB_SECRET={secret}" in inspected["Config"]["Env"]
        carried = (inspected["Config"]["Labels"] or {}).get(OWNER_LABEL)
        # The precondition of the attack: the image put alice's label on bob's step (with
        # dockgate's own builds, no longer: the label is emptied).
        assert carried == ("" if base == "alice-built" else "user:alice"), carried

        status, listed = alice.call("GET", "/v1.41/containers/json?all=1")
        assert status == 200, (status, listed)
        assert [c["Id"] for c in listed if c["Id"] == cid] == []
        status, answer = alice.call("GET", f"/v1.41/containers/{cid}/json")
        assert status == 404, (status, answer)
        status, answer = alice.call(
            "POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["env"], "AttachStdout": True}
        )
        assert status == 404, (status, answer)
        status, answer = alice.call("GET", f"/v1.41/containers/{cid}/archive?path=/")
        assert status == 404, (status, answer)
        status, answer = alice.call(
            "PUT",
            f"/v1.41/containers/{cid}/archive?path=/",
            build_context({"planted": b"alice was here\n"}),
            headers={"Content-Type": "application/x-tar"},
        )
        assert status == 404, (status, answer)
        # Nor is it bob's: a step container is the daemon's, whoever's build it serves.
        status, answer = bob.call("GET", f"/v1.41/containers/{cid}/json")
        assert status == 404, (status, answer)
    finally:
        builder.join(timeout=60)
    status, answer = result["build"]
    assert status == 200, (status, answer)
    assert b"errorDetail" not in (answer if isinstance(answer, bytes) else b""), answer
    # bob's image: no planted file, and an empty owner label whatever the Dockerfile said.
    labels = _image_labels(daemon, tag)
    assert labels.get(OWNER_LABEL) == ""
    assert labels.get(BUILT_BY) == "user:bob"
    run = daemon.docker("run", "--rm", tag, "sh", "-c", "cat /bob; ls /planted", check=False)
    assert run.stdout == b"built\n", run
    # `rm=0` was overridden: the step container is gone (a prune cannot reach it).
    status, _ = direct(daemon, "GET", f"/containers/{cid}/json")
    assert status == 404


def test_a_failed_build_leaves_no_step_container_for_a_prune(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """bob's build fails in a step labelled `user:alice` (`rm=0&forcerm=0` asked): the step
    container is removed all the same (forcerm is forced), so alice's list and prune, narrowed
    by her label, never reach it. Fails on the old code (the stopped step container stayed,
    labelled alice's: listed to her, and removed by her `docker container prune`)."""
    alice, bob = tenants["alice"], tenants["bob"]
    marker = f"dgo-failed-{RUN}"
    dockerfile = (
        f"FROM {busybox_image}\nLABEL {OWNER_LABEL}=user:alice\nRUN echo {marker} && false\n"
    )
    tag = f"dgo-failed-{RUN}"
    status, answer = _build(bob, dockerfile, tag, "&rm=0&forcerm=0")
    assert status == 200, (status, answer)
    assert b"errorDetail" in answer if isinstance(answer, bytes) else "errorDetail" in str(answer)
    status, listed = direct(daemon, "GET", "/containers/json?all=1")
    left = [c["Id"] for c in listed if marker in c.get("Command", "")]
    images.extend(f"container:{cid}" for cid in left)
    assert left == []
    status, listed = alice.call("GET", "/v1.41/containers/json?all=1")
    assert status == 200
    assert [c for c in listed if marker in c.get("Command", "")] == []


def test_a_commit_gives_an_image_with_an_empty_owner_label(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """alice commits her container, writing her label in the body and in `changes`: the
    image's owner label ends empty (the daemon would otherwise copy the container's own
    `user:alice` into it: shown first straight on the daemon). Fails on the old code (the
    committed image carried `user:alice`, and every step of a build FROM it was hers)."""
    alice = tenants["alice"]
    cid = alice.create({"Image": busybox_image, "Cmd": ["true"]})
    images.append(f"container:{cid}")
    plain = f"dgo-commit-direct-{RUN}"
    status, answer = direct(daemon, "POST", f"/commit?container={cid}&repo={plain}&tag=x")
    assert status == 201, (status, answer)
    images.append(f"{plain}:x")
    assert _image_labels(daemon, f"{plain}:x").get(OWNER_LABEL) == "user:alice"

    repo = f"dgo-commit-{RUN}"
    changes = urllib.parse.quote(f"LABEL {OWNER_LABEL}=user:alice")
    status, answer = alice.call(
        "POST",
        f"/v1.41/commit?container={cid}&repo={repo}&tag=x&changes={changes}",
        {"Labels": {OWNER_LABEL: "user:alice"}, "Cmd": ["true"]},
    )
    assert status == 201, (status, answer)
    images.append(f"{repo}:x")
    labels = _image_labels(daemon, f"{repo}:x")
    assert labels.get(OWNER_LABEL) == ""
    assert labels.get(BUILT_BY) == "user:alice"


def test_an_import_gives_an_image_with_an_empty_owner_label(
    tenants: dict[str, Api], daemon: PrivateDaemon, images: list[str]
) -> None:
    """`docker import --change 'LABEL io.dockgate.owner=user:alice'` through dockgate: the
    label ends empty. Fails on the old code (the image carried `user:alice`)."""
    alice = tenants["alice"]
    repo = f"dgo-import-{RUN}"
    changes = urllib.parse.quote(f"LABEL {OWNER_LABEL}=user:alice")
    status, answer = alice.call(
        "POST",
        f"/v1.41/images/create?fromSrc=-&repo={repo}&tag=x&changes={changes}",
        build_context({"hello": b"hi\n"}),
        headers={"Content-Type": "application/x-tar"},
    )
    assert status == 200, (status, answer)
    images.append(f"{repo}:x")
    labels = _image_labels(daemon, f"{repo}:x")
    assert labels.get(OWNER_LABEL) == ""


def test_alices_own_containers_still_work_end_to_end(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """A container alice creates through dockgate from the image she built through dockgate
    is hers: listed, started, exec'd into, its logs and files read and written, removed."""
    alice = tenants["alice"]
    tag = f"dgo-alice-app-{RUN}"
    status, answer = _build(alice, f"FROM {busybox_image}\nRUN echo app > /app\n", tag)
    assert status == 200, (status, answer)
    images.append(tag)
    cid = alice.create({"Image": tag, "Cmd": ["sh", "-c", "cat /app; sleep 30"]})
    images.append(f"container:{cid}")
    alice.start(cid)
    status, listed = alice.call("GET", "/v1.41/containers/json")
    assert status == 200
    assert cid in [c["Id"] for c in listed]
    status, created = alice.call(
        "POST", f"/v1.41/containers/{cid}/exec", {"Cmd": ["cat", "/app"], "AttachStdout": True}
    )
    assert status == 201, (status, created)
    status, output = alice.call(
        "POST", f"/v1.41/exec/{created['Id']}/start", {"Detach": False, "Tty": True}
    )
    assert status == 200, (status, output)
    assert b"app" in output
    status, _ = alice.call("GET", f"/v1.41/exec/{created['Id']}/json")
    assert status == 200
    assert "app" in logs(alice, cid)
    status, answer = alice.call(
        "PUT",
        f"/v1.41/containers/{cid}/archive?path=/tmp",
        build_context({"put": b"mine\n"}),
        headers={"Content-Type": "application/x-tar"},
    )
    assert status == 200, (status, answer)
    status, archive = alice.call("GET", f"/v1.41/containers/{cid}/archive?path=/tmp/put")
    assert status == 200, (status, archive)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("put")
        assert member is not None
        assert member.read() == b"mine\n"
    status, answer = alice.call("DELETE", f"/v1.41/containers/{cid}?force=1")
    assert status == 204, (status, answer)


def test_a_create_from_an_image_carrying_the_callers_own_label_is_refused(
    tenants: dict[str, Api], daemon: PrivateDaemon, images: list[str]
) -> None:
    """An image carrying `user:alice` (made before the upgrade, or planted) cannot vouch:
    a container alice created from it would be unreachable to her. Her create is refused up
    front with the reason; bob's create from the same image is his as usual."""
    alice, bob = tenants["alice"], tenants["bob"]
    tag = _import_labelled(daemon, f"dgo-vouching-{RUN}", "user:alice")
    images.append(tag)
    status, answer = alice.call("POST", "/v1.41/containers/create", {"Image": tag, "Cmd": ["true"]})
    assert status == 403, (status, answer)
    assert "carries your owner label" in answer["message"], answer
    status, listed = direct(daemon, "GET", "/containers/json?all=1")
    assert all(c["Image"] != tag for c in listed)
    cid = bob.create({"Image": tag, "Cmd": ["true"]})
    images.append(f"container:{cid}")
    status, answer = bob.call("GET", f"/v1.41/containers/{cid}/json")
    assert status == 200, (status, answer)
    status, listed = bob.call("GET", "/v1.41/containers/json?all=1")
    assert cid in [c["Id"] for c in listed]
    status, answer = alice.call("GET", f"/v1.41/containers/{cid}/json")
    assert status == 404, (status, answer)


# ----- service tasks: containers the swarm makes from a service spec ---------------------------


@pytest.fixture(scope="module")
def swarm(daemon: PrivateDaemon, tenants: dict[str, Api]) -> Iterator[PrivateDaemon]:
    with single_node_swarm(daemon, joined_ok=True) as manager:
        yield manager


def _task_container(daemon: PrivateDaemon, service_id: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    label = f"label=com.docker.swarm.service.id={service_id}"
    while time.monotonic() < deadline:
        ids = daemon.docker("ps", "-q", "--no-trunc", "--filter", label).stdout.decode().split()
        if ids:
            return ids[0]
        time.sleep(0.3)
    raise AssertionError(f"no task container for service {service_id}")


def test_service_task_containers_stay_their_owners(
    tenants: dict[str, Api], swarm: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """A service alice creates through dockgate: its task container (made by the swarm, with
    the label dockgate wrote into `ContainerSpec.Labels`) is hers end to end (listed,
    inspected, exec'd into, logs, files), and not bob's. A service from an image carrying her
    own label is refused up front: its tasks would be nobody's (fails on the old code: the
    service was created)."""
    alice, bob = tenants["alice"], tenants["bob"]
    services: list[str] = []
    name = f"dgo-svc-{RUN}"
    spec = {
        "Name": name,
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": busybox_image,
                "Command": ["sh", "-c", "echo task-up; sleep 120"],
            }
        },
    }
    status, created = alice.call("POST", "/v1.41/services/create", spec)
    assert status == 201, (status, created)
    services.append(created["ID"])
    try:
        cid = _task_container(swarm, created["ID"])
        status, listed = alice.call("GET", "/v1.41/containers/json")
        assert status == 200
        assert cid in [c["Id"] for c in listed]
        status, inspected = alice.call("GET", f"/v1.41/containers/{cid}/json")
        assert status == 200, (status, inspected)
        status, made = alice.call(
            "POST",
            f"/v1.41/containers/{cid}/exec",
            {"Cmd": ["echo", "in-task"], "AttachStdout": True},
        )
        assert status == 201, (status, made)
        status, output = alice.call(
            "POST", f"/v1.41/exec/{made['Id']}/start", {"Detach": False, "Tty": True}
        )
        assert status == 200 and b"in-task" in output, (status, output)
        deadline = time.monotonic() + 20
        while "task-up" not in logs(alice, cid) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "task-up" in logs(alice, cid)
        status, _ = alice.call("GET", f"/v1.41/containers/{cid}/archive?path=/bin/sh")
        assert status == 200
        status, answer = bob.call("GET", f"/v1.41/containers/{cid}/json")
        assert status == 404, (status, answer)
        status, listed = bob.call("GET", "/v1.41/containers/json")
        assert cid not in [c["Id"] for c in listed]

        vouching = f"dgo-svc-vouching-{RUN}"
        _import_labelled(swarm, vouching, "user:alice")
        images.append(vouching)
        spec["Name"] = f"{name}-vouching"
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = vouching  # type: ignore[index]
        status, answer = alice.call("POST", "/v1.41/services/create", spec)
        if status == 201:
            services.append(answer["ID"])
        assert status == 403, (status, answer)
        assert "carries your owner label" in answer["message"]
    finally:
        for service in services:
            swarm.docker("service", "rm", service, check=False)


@pytest.fixture(scope="module")
def unguarded(
    daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Api]]:
    """The same tenants under `guardrails: false`: only ownership reads the `changes`."""
    base = tmp_path_factory.mktemp("ownership-builds-unguarded")
    policy = POLICY.replace("    ownership: true\n", "    ownership: true\n    guardrails: false\n")
    assert "guardrails: false" in policy
    with running_tenants(daemon, base, policy, USERS) as apis:
        yield apis


def test_a_change_continued_onto_dockgates_label_is_refused(
    unguarded: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """The daemon joins `changes` with newlines: `ENV x \\` continues onto the `LABEL` line
    dockgate appends, which becomes part of the environment value, and the committed image
    keeps the container's `user:alice` (shown straight on the daemon, with dockgate's line
    written as it would be). Through dockgate such a change is refused (400) and no image is
    made. Fails on the code before this check (the commit went through with alice's label)."""
    alice = unguarded["alice"]
    cid = alice.create({"Image": busybox_image, "Cmd": ["true"]})
    images.append(f"container:{cid}")
    ours = f'LABEL {OWNER_LABEL}="" {BUILT_BY}=user:alice'
    swallowing = urllib.parse.quote("ENV x \\")
    repo = f"dgo-continued-{RUN}"
    status, answer = direct(
        daemon,
        "POST",
        f"/commit?container={cid}&repo={repo}&tag=direct"
        f"&changes={swallowing}&changes={urllib.parse.quote(ours)}",
    )
    assert status == 201, (status, answer)
    images.append(f"{repo}:direct")
    assert _image_labels(daemon, f"{repo}:direct").get(OWNER_LABEL) == "user:alice"

    status, answer = alice.call(
        "POST", f"/v1.41/commit?container={cid}&repo={repo}&tag=x&changes={swallowing}"
    )
    if status == 201:
        images.append(f"{repo}:x")
    assert status == 400, (status, answer)
    status, _ = direct(daemon, "GET", f"/images/{repo}:x/json")
    assert status == 404
