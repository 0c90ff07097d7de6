"""Attack review of issue 12's ownership changes (items 1 and 8), against the real daemon.

Two tenants, alice and bob (Basic), one ownership policy. Each finding was pinned as an
xfail(strict=True) test asserting what should hold; all are fixed, and each test is an ordinary
one that failed before its fix.

- A Dockerfile `LABEL` step commits through a container created from the previous step's
  image with the new labels (moby dispatchers.go dispatchLabel -> internals.go commit): the
  container carries the owner label the LABEL sets, its image does not, so trusted_owner
  trusts it. Through ONBUILD (alice's base image), alice lists bob's build steps and reads
  his build context; any build plants containers in another caller's list.
- ContainerPrune is narrowed by label, not by trusted_owner: bob removes (and gets the IDs
  of) the step containers of alice's build FROM an image carrying his label; her build fails.
- ownedprefix: an ambiguous prefix still costs a list of the caller's own containers, and
  its time tells it apart from a missing one (the caller makes that list as slow as he likes).
- A missing volume named by a create is let through unpinned: created by its owner in
  between, another caller's container mounts it and reads her data.
- ImageDelete's 409 still says whether the container using the image runs.
- A loaded image carrying alice's label and 9 MB of labels, built FROM by bob: the step
  container is in alice's narrowed list, its image look-up is over 8 MiB, her `docker ps`
  is a 502 while his step runs.
- The image-owner cache keeps owner values of any length (gateway memory grows with what bob
  loads).
- An image removed (any caller may) vouches for nothing: alice force-removes the image of a
  leftover step container carrying her label and reads carol's build argument.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from support.attack import (
    ATTACK_MARKS,
    Api,
    build_context,
    direct,
    relabelled_image,
    relabelled_tar,
    tenants_fixture,
    tenants_policy,
)
from support.daemon import DEFAULT_PATH, PrivateDaemon, busybox_rootfs_tar

pytestmark = ATTACK_MARKS

RUN = os.urandom(3).hex()
OWNER_LABEL = "io.dockgate.owner"
POLICY = tenants_policy()


tenants = tenants_fixture(POLICY, "atk12-own")


@pytest.fixture
def images(daemon: PrivateDaemon) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in reversed(names):
        daemon.docker("rmi", "-f", name, check=False)


def _build(api: Api, files: dict[str, bytes], tag: str, query: str = "") -> tuple[int, Any]:
    return api.call(
        "POST",
        f"/v1.41/build?t={tag}{query}",
        build_context(files),
        headers={"Content-Type": "application/x-tar"},
    )


def _read_archive_file(raw: bytes, name: str) -> bytes | None:
    try:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            for member in tar.getmembers():
                if member.name.endswith(name) and member.isfile():
                    handle = tar.extractfile(member)
                    return handle.read() if handle else None
    except tarfile.TarError:
        return None
    return None


def _harvest(api: Api, path: str, name: str, stop: threading.Event) -> dict[str, Any]:
    """Poll `api`'s own container list; for each new container, ask for `path`'s archive.
    What was found: the containers listed and the contents of `name` if read."""
    found: dict[str, Any] = {"listed": {}, "content": None, "polls": 0}
    tried: set[str] = set()
    while not stop.is_set() and found["content"] is None:
        status, listed = api.call("GET", "/v1.41/containers/json?all=1")
        found["polls"] += 1
        if status != 200:
            continue
        for entry in listed:
            cid = entry["Id"]
            found["listed"].setdefault(cid, entry.get("Command"))
            if cid in tried:
                continue
            tried.add(cid)
            status, raw = api.call("GET", f"/v1.41/containers/{cid}/archive?path={path}")
            if status == 200 and isinstance(raw, bytes):
                content = _read_archive_file(raw, name)
                if content is not None:
                    found["content"] = content
                    break
    return found


def test_onbuild_label_step_hands_bobs_build_context_to_alice(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """alice builds a base image through dockgate whose ONBUILD triggers copy the build
    context and then set `LABEL io.dockgate.owner=user:alice` (alternating with another value,
    so that each such step starts from an image that does not carry it). The classic builder
    commits each LABEL by creating a container from the previous step's image with the new
    labels (moby builder/dockerfile/dispatchers.go dispatchLabel -> internals.go commit ->
    probeAndCreate): that container carries `user:alice` while its image (bob's context
    copied in, owner label empty from alice's dockgate build) does not, so trusted_owner
    makes it alice's. bob builds FROM it with a secret in his context: alice, polling her own
    `docker ps -a`, lists the step container and reads bob's file through
    `GET /containers/{id}/archive`.

    Fixed: a container's owner label is trusted only when its log driver is not `none`, the
    one the builder gives every step's container (ownership.trusted_owner); this test failed
    before (alice read bob's secret).
    """
    alice, bob = tenants["alice"], tenants["bob"]
    base = f"dgo-atk-{RUN}-onbuild-{os.urandom(2).hex()}"
    triggers = ["ONBUILD COPY . /ctx"]
    for i in range(30):
        triggers.append(f"ONBUILD LABEL {OWNER_LABEL}=user:alice")
        triggers.append(f"ONBUILD LABEL {OWNER_LABEL}=x{i}")
    status, answer = _build(
        alice, {"Dockerfile": "\n".join([f"FROM {busybox_image}", *triggers]).encode()}, base
    )
    assert status == 200 and b"errorDetail" not in answer, (status, answer)
    images.append(base)
    # Built through dockgate: the base image carries an empty owner label.
    status, inspected = direct(daemon, "GET", f"/images/{base}/json")
    assert inspected["Config"]["Labels"][OWNER_LABEL] == ""

    secret = f"bob-secret-{os.urandom(6).hex()}".encode()
    tag = f"dgo-atk-{RUN}-bob-{os.urandom(2).hex()}"
    images.append(tag)
    stop = threading.Event()
    harvest: dict[str, Any] = {}
    thief = threading.Thread(
        target=lambda: harvest.update(_harvest(alice, "/ctx", "secret.txt", stop))
    )
    thief.start()
    try:
        status, answer = _build(
            bob,
            {"Dockerfile": f"FROM {base}\nRUN true\n".encode(), "secret.txt": secret},
            tag,
            "&nocache=1",
        )
    finally:
        stop.set()
        thief.join(timeout=30)
    assert status == 200 and b"errorDetail" not in answer, (status, answer)
    assert harvest["polls"] > 0, harvest
    # Before: alice's list showed bob's LABEL step containers and she reads his secret.
    assert harvest["content"] != secret, harvest
    assert harvest["listed"] == {}, harvest


def test_a_label_step_plants_a_container_in_bobs_list(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """alice's own build with `LABEL io.dockgate.owner=user:bob` steps (alternating with
    another value): each LABEL step's container (created, not started) is listed to bob and
    answers his inspect, as if he had created it.

    Fixed: a LABEL step's container has the log driver `none` and is nobody's
    (ownership.trusted_owner); this test failed before (bob inspected alice's step).
    """
    alice, bob = tenants["alice"], tenants["bob"]
    lines = [f"FROM {busybox_image}"]
    for i in range(30):
        lines.append(f"LABEL {OWNER_LABEL}=user:bob")
        lines.append(f"LABEL {OWNER_LABEL}=y{i}")
    tag = f"dgo-atk-{RUN}-plant-{os.urandom(2).hex()}"
    images.append(tag)
    result: dict[str, Any] = {}
    builder = threading.Thread(
        target=lambda: result.setdefault(
            "build", _build(alice, {"Dockerfile": "\n".join(lines).encode()}, tag, "&nocache=1")
        )
    )
    builder.start()
    inspected: list[Any] = []
    try:
        while builder.is_alive() and not inspected:
            status, listed = bob.call("GET", "/v1.41/containers/json?all=1")
            assert status == 200, (status, listed)
            for entry in listed:
                status, answer = bob.call("GET", f"/v1.41/containers/{entry['Id']}/json")
                if status == 200:
                    inspected.append(answer)
                    break
    finally:
        builder.join(timeout=60)
    assert result["build"][0] == 200, result
    # Before: bob inspected a `#(nop) LABEL io.dockgate.owner=user:bob` step of alice's build.
    assert inspected == [], [" ".join(i["Args"]) for i in inspected]


def _import_labelled(daemon: PrivateDaemon, tag: str, owner: str) -> None:
    """An image carrying `owner`'s label, made straight on the daemon (as an image built
    through an older dockgate, loaded or pulled carries it)."""
    daemon.docker(
        "import",
        *("--change", f"ENV PATH={DEFAULT_PATH}", "--change", 'CMD ["sh"]'),
        *("--change", f"LABEL {OWNER_LABEL}={owner}"),
        "-",
        tag,
        input=busybox_rootfs_tar(),
    )


def test_bobs_prune_breaks_alices_build_from_an_image_carrying_his_label(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """An image carrying `io.dockgate.owner=user:bob` (built by bob through dockgate before
    the upgrade, or loaded by him) used as alice's base: her build's step containers are
    nobody's to every request and list (trusted_owner), but `POST /containers/prune` is
    narrowed by the label alone (ownership.FILTERED), and each build step's container sits
    in the `created` state between its create and its removal. bob, pruning in a loop while
    alice builds, gets the IDs of alice's step containers in `ContainersDeleted` and alice's
    build fails ("container is marked for removal and cannot be started" / "No such
    container").

    Fixed: ContainerPrune is not available in ownership mode (403, ownership.UNAVAILABLE):
    its filters cannot tell a caller's containers from build steps carrying his label; this
    test failed before (bob's prune removed alice's steps).
    """
    alice, bob = tenants["alice"], tenants["bob"]
    base = f"dgo-atk-{RUN}-bobbase-{os.urandom(2).hex()}"
    _import_labelled(daemon, base, "user:bob")
    images.append(base)
    tag = f"dgo-atk-{RUN}-alice-{os.urandom(2).hex()}"
    images.append(tag)
    lines = [f"FROM {base}", *(f"ENV V{i}={i}" for i in range(40)), "RUN true"]
    result: dict[str, Any] = {}
    builder = threading.Thread(
        target=lambda: result.setdefault(
            "build", _build(alice, {"Dockerfile": "\n".join(lines).encode()}, tag, "&nocache=1")
        )
    )
    builder.start()
    pruned: list[str] = []
    try:
        while builder.is_alive():
            status, answer = bob.call("POST", "/v1.41/containers/prune")
            # Now refused, with the reason (before: 200).
            assert status == 403, (status, answer)
            assert "docker rm" in answer["message"], answer
            pruned += answer.get("ContainersDeleted") or []
    finally:
        builder.join(timeout=60)
    status, answer = result["build"]
    assert status == 200, (status, answer)
    # Before: bob's prune removed alice's step containers (their IDs came back to him) and her
    # build ended with an error.
    assert pruned == [], pruned
    assert b"errorDetail" not in answer, answer[-300:]


def test_prefix_ambiguity_still_shows_in_the_answer_time(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """ownedprefix answers bob's `GET /containers/{prefix}/json` with the same 404 whether
    the prefix fits no container or several of alice's, so that probing prefixes no longer
    rebuilds other callers' IDs (issue 12, item 8). But only the ambiguous one (the daemon's
    500) makes the gateway list bob's own containers first, and bob decides how long that
    list takes: ten containers of his with 100 KiB of labels each make the ambiguous 404
    several milliseconds slower than the plain one, far above the noise (about 10 ms against
    2.5 ms here). Walking prefixes by answer time gives back the tree of IDs the 400/500
    used to show.

    Fixed: in ownership mode a hex-only reference shorter than a full ID is always resolved
    among the caller's own objects (one list, ownedprefix.find_owned), never by the daemon's
    prefix search: both prefixes cost the same list. This failed before (a strict xfail of
    the attack review)."""
    alice, bob = tenants["alice"], tenants["bob"]
    made: list[str] = []
    try:
        # alice's containers, until two of them (or of anyone's) share a first hex digit.
        ambiguous = ""
        while not ambiguous:
            made.append(alice.create({"Image": busybox_image, "Cmd": ["true"]}))
            status, listed = direct(daemon, "GET", "/containers/json?all=1")
            firsts = [entry["Id"][:1] for entry in listed]
            ambiguous = next((c for c in firsts if firsts.count(c) >= 2), "")
        every = [entry["Id"] for entry in listed]
        missing = next(p for p in ("0123", "fedc", "abcd", "9876") if not any(
            i.startswith(p) for i in every))  # fmt: skip
        # bob's own containers, none starting with the ambiguous digit, with large labels.
        labels = {f"pad{i}": "x" * 1000 for i in range(100)}
        mine = 0
        while mine < 10:
            status, created = bob.call(
                "POST",
                "/v1.41/containers/create",
                {"Image": busybox_image, "Cmd": ["true"], "Labels": labels},
            )
            assert status == 201, (status, created)
            made.append(created["Id"])
            if created["Id"].startswith(ambiguous):
                daemon.docker("rm", "-f", created["Id"])
                continue
            mine += 1
        times: dict[str, list[float]] = {"ambiguous": [], "missing": []}
        for _ in range(25):
            for name, prefix in (("ambiguous", ambiguous), ("missing", missing)):
                started = time.perf_counter()
                status, answer = bob.call("GET", f"/v1.41/containers/{prefix}/json")
                times[name].append(time.perf_counter() - started)
                # The same answer to both: the fix of item 8 holds on the surface.
                assert status == 404, (status, answer)
                assert answer == {"message": f"No such container: {prefix}"}, answer
        # The fastest of each (what the work costs, with the least of the machine's other load
        # in it: a median moved by 4 ms when CI ran beside other jobs). Before the fix about
        # 10 ms against 2.5: the ambiguous prefix was told by its time, four times the other.
        slow, fast = min(times["ambiguous"]), min(times["missing"])
        assert slow < 2 * fast + 0.002, (slow, fast)
    finally:
        if made:
            daemon.docker("rm", "-f", *made, check=False)


def test_a_missing_volume_checked_then_created_by_alice_is_mounted_by_bob(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """bob knows (or guesses) the name alice will give her volume, and loops
    `POST /containers/create` with `Binds: ["NAME:/data"]`. A volume that does not exist is
    let through (the daemon creates it, nobody's), and a volume name cannot be pinned to
    anything: when alice's `docker volume create NAME` lands between dockgate's look-up of
    bob's create (missing) and the daemon's handling of it, alice gets her labelled volume
    (201) and bob's container mounts it. About one round in three here (the others squat the
    name, which alice sees as a 409). alice then writes her data; bob starts his container and
    reads it.

    Fixed: in ownership mode dockgate creates a missing volume a new container mounts
    itself, the caller's, before the container (ownership/volumes.py), and refuses the create if
    the volume it gets back is someone else's. In every round one of them has the name: bob
    (his volume, alice's create a 409) or alice (her volume, bob's creates refused); never
    both. This failed before (a strict xfail of the attack review): a round let bob's
    container mount alice's volume, and he read her data."""
    alice, bob = tenants["alice"], tenants["bob"]
    made: list[str] = []
    volumes: list[str] = []
    secret = f"alice-data-{os.urandom(6).hex()}"
    winners: dict[str, int] = {"alice": 0, "bob": 0}
    try:
        for round_ in range(30):
            name = f"dgo-atk-{RUN}-vol-{round_}"
            volumes.append(name)
            stop = threading.Event()
            got: dict[str, str] = {}

            def squatter(name: str = name, stop: threading.Event = stop,
                         got: dict[str, str] = got) -> None:  # fmt: skip
                body = {
                    "Image": busybox_image,
                    "Cmd": ["cat", "/data/secret"],
                    "HostConfig": {"Binds": [f"{name}:/data"]},
                }
                while not stop.is_set():
                    status, created = bob.call("POST", "/v1.41/containers/create", body)
                    if status == 201:
                        got["cid"] = created["Id"]
                        made.append(created["Id"])
                        return
                    # Refused as someone else's volume (alice's, made first), nothing else.
                    assert status == 403, (status, created)
                    assert created == {"message": f"dockgate: get {name}: no such volume"}

            thread = threading.Thread(target=squatter)
            thread.start()
            time.sleep(0.002 * (round_ % 5))
            status, answer = alice.call("POST", "/v1.41/volumes/create", {"Name": name})
            stop.set()
            thread.join(timeout=30)
            status_, volume = direct(daemon, "GET", f"/volumes/{name}")
            assert status_ == 200, (status_, volume)
            owner = volume["Labels"][OWNER_LABEL]
            # Before the fix: alice 201 and bob's container mounted her volume.
            assert not (status == 201 and "cid" in got), (round_, owner)
            if status == 201:
                assert owner == "user:alice", volume
                winners["alice"] += 1
            else:
                assert status == 409, (status, answer)
                assert owner == "user:bob", volume
                assert "cid" in got
                winners["bob"] += 1
                # bob's container mounts his own volume, the one the daemon holds.
                status_, inspected = direct(daemon, "GET", f"/containers/{got['cid']}/json")
                mounted = [m["Name"] for m in inspected["Mounts"] if m["Type"] == "volume"]
                assert mounted == [name], inspected["Mounts"]
        # Both outcomes happen (the race is run, not avoided by timing).
        assert winners["bob"] > 0, winners
        # alice's data in a volume she won stays hers: bob's create of it is refused.
        name = next(
            v for v in volumes if direct(daemon, "GET", f"/volumes/{v}")[1]["Labels"][
                OWNER_LABEL] == "user:alice"
        ) if winners["alice"] else None  # fmt: skip
        if name is not None:
            writer = alice.create(
                {
                    "Image": busybox_image,
                    "Cmd": ["sh", "-c", f"echo {secret} > /data/secret"],
                    "HostConfig": {"Binds": [f"{name}:/data"]},
                }
            )
            made.append(writer)
            status, answer = bob.call(
                "POST",
                "/v1.41/containers/create",
                {"Image": busybox_image, "HostConfig": {"Binds": [f"{name}:/data"]}},
            )
            assert status == 403, (status, answer)
    finally:
        if made:
            daemon.docker("rm", "-f", *made, check=False)
        daemon.docker("volume", "rm", "-f", *volumes, check=False)


def test_image_delete_tells_whether_alices_container_runs(
    tenants: dict[str, Api], daemon: PrivateDaemon, images: list[str]
) -> None:
    """/info's counts were zeroed because bob saw `ContainersRunning` move with alice's
    `docker run` (issue 12, item 8). `DELETE /images/<id>` by bob (no force: nothing is
    removed) tells the same for any image he can list: "image is being used by a stopped
    container" while alice's container from it is created or exited, "... by a running
    container" while it runs (the ID is scrubbed, the state is not).

    Fixed: in ownership mode both are one answer, "(in use) - image is being used by a
    container: remove the containers that use it first ..." (ownership/answers.py). This failed
    before (a strict xfail of the attack review)."""
    alice, bob = tenants["alice"], tenants["bob"]
    tag = f"dgo-atk-{RUN}-img-{os.urandom(2).hex()}"
    _import_labelled(daemon, tag, "")
    images.append(tag)
    status, inspected = direct(daemon, "GET", f"/images/{tag}/json")
    image_id = inspected["Id"]
    cid = alice.create({"Image": tag, "Cmd": ["sleep", "30"]})
    try:
        status, stopped = bob.call("DELETE", f"/v1.41/images/{image_id}")
        assert status == 409, (status, stopped)
        alice.start(cid)
        status, running = bob.call("DELETE", f"/v1.41/images/{image_id}")
        assert status == 409, (status, running)
        assert cid[:12] not in str(stopped) + str(running)
        # Before the fix: "... - image is being used by a stopped container" against
        # "(cannot be forced) - image is being used by a running container".
        assert stopped == running, (stopped, running)
        # Straight from the daemon the two differ (the test is not vacuous).
        status, told = direct(daemon, "DELETE", f"/images/{image_id}")
        assert status == 409 and "running container" in told["message"], told
    finally:
        daemon.docker("rm", "-f", cid, check=False)


def test_bob_breaks_alices_container_list_with_a_big_image_carrying_her_label(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str, images: list[str]
) -> None:
    """bob loads (`POST /images/load`) an image whose config carries
    `io.dockgate.owner=user:alice` and 9 MB of other labels, and builds `FROM` it with a
    `RUN sleep`. The step container carries the image's labels: nobody's (trusted_owner),
    but the daemon's answer to alice's `docker ps`, narrowed by her label, holds it, and the
    gateway looks up each listed container's image before taking the vouched ones out
    (lookup.vouched_containers). That image's inspect is over LOOKUP_MAX_BYTES (8 MiB): the
    look-up fails and alice's whole list is a 502 for as long as bob's step runs (he picks
    how long). alice did nothing but list her own containers.

    Fixed: each listed container is judged on its own (lookup.vouched_containers); one whose
    look-up fails or is too large is hidden, the list is not failed; this test failed before
    (502).
    """
    alice, bob = tenants["alice"], tenants["bob"]
    mine = alice.create({"Image": busybox_image, "Cmd": ["true"]})
    tag = f"dgo-atk-{RUN}-big-{os.urandom(2).hex()}"
    labels = {OWNER_LABEL: "user:alice", **{f"k{i}": "x" * 60000 for i in range(150)}}
    status, answer = bob.call(
        "POST",
        "/v1.41/images/load?quiet=1",
        relabelled_image(daemon, busybox_image, labels, tag),
        headers={"Content-Type": "application/x-tar"},
    )
    assert status == 200, (status, answer)
    images.extend([tag, f"{tag}-b"])
    marker = f"dgo-big-{RUN}-{os.urandom(2).hex()}"
    result: dict[str, Any] = {}
    dockerfile = f"FROM {tag}\nRUN echo {marker} && sleep 6\n"
    builder = threading.Thread(
        target=lambda: result.setdefault(
            "build", _build(bob, {"Dockerfile": dockerfile.encode()}, f"{tag}-b", "&nocache=1")
        )
    )
    builder.start()
    try:
        running = False
        deadline = time.monotonic() + 20
        while not running and time.monotonic() < deadline:
            status, listed = direct(daemon, "GET", "/containers/json")
            running = any(marker in entry.get("Command", "") for entry in listed)
            time.sleep(0.1)
        assert running, "bob's step never ran"
        status, listed = alice.call("GET", "/v1.41/containers/json?all=1")
        # Before: 502 "cannot check the answer: the daemon's answer is too large".
        assert status == 200, (status, listed)
        assert [entry["Id"] for entry in listed] == [mine], listed
    finally:
        builder.join(timeout=60)
        daemon.docker("rm", "-f", mine, check=False)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_the_image_owner_cache_grows_with_the_owner_values_bob_chooses(
    tenants: dict[str, Api], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """lookup.ImageOwners keeps the owner label of each image it is asked about, "about 200
    bytes each" for 4,096 images. Nothing bounds the value: bob loads an image whose
    `io.dockgate.owner` is 4 MB long (not his, so his create from it is let through),
    creates one container from it, lists his containers (the gateway looks the image up and
    keeps its label), removes both, and goes on with the next image. Twelve rounds keep
    about 50 MB in the gateway for good (4,096 rounds: 16 GB; values up to the 8 MiB look-up
    bound). The same rounds with the 4 MB under another label key (a short owner) grow it by
    less than 20 MB: what stays is the cache's.

    Fixed: owner labels over ownership.MAX_OWNER_BYTES are nobody's and kept as no label by
    the caches (lookup.ImageOwners, ContainerVerdicts); this test failed before (about 50 MB
    kept).
    """
    bob = tenants["bob"]
    pid = bob.gateway.pid
    before = _rss_bytes(pid)
    template = daemon.docker("save", busybox_image).stdout
    for round_ in range(12):
        tag = f"dgo-atk-{RUN}-owner-{round_}-{os.urandom(2).hex()}"
        owner = f"{round_}-" + "x" * (4 * 1024 * 1024)
        tar = relabelled_tar(template, {OWNER_LABEL: owner}, tag)
        status, answer = bob.call(
            "POST", "/v1.41/images/load?quiet=1", tar, headers={"Content-Type": "application/x-tar"}
        )
        assert status == 200, (status, answer)
        try:
            cid = bob.create({"Image": tag, "Cmd": ["true"]})
            status, listed = bob.call("GET", "/v1.41/containers/json?all=1")
            assert status == 200, (status, str(listed)[:200])
            assert cid in [entry["Id"] for entry in listed]
            status, answer = bob.call("DELETE", f"/v1.41/containers/{cid}")
            assert status == 204, (status, answer)
        finally:
            daemon.docker("rmi", "-f", tag, check=False)
    grown = _rss_bytes(pid) - before
    # Before: about 50-70 MB more than before, kept (the cache holds every value).
    assert grown < 20 * 1024 * 1024, grown


def test_alice_claims_a_leftover_step_container_by_removing_its_image(
    tenants: dict[str, Api], daemon: PrivateDaemon, images: list[str]
) -> None:
    """docs/policy.md: leftover step containers of older builds (`rm=0`) carrying someone's
    label are nobody's now. One is made here straight on the daemon, as an older dockgate let
    carol build: `FROM` an image carrying alice's label, with carol's build argument, failing
    at its `RUN` (rm=0, forcerm=0), so the step container stays, with `user:alice` from the
    image and carol's secret in its environment. Nobody's: but "an image the daemon no longer
    knows vouches for nothing" (lookup.ImageOwners), and ImageDelete is not owned. alice lists
    the images carrying her label (`GET /images/json?filters=label=...`), force-removes them
    by ID (the step's image is a leaf: the build stopped there; a stopped container does not
    hold it), and the step container is hers: she reads carol's build argument.

    Fixed: a build step's container has the log driver `none` and is never trusted, whatever
    happens to its image (ownership.trusted_owner); this test failed before (alice read
    carol's argument).
    """
    alice = tenants["alice"]
    base = f"dgo-atk-{RUN}-alicebase-{os.urandom(2).hex()}"
    _import_labelled(daemon, base, "user:alice")
    images.append(base)
    secret = f"carol-secret-{os.urandom(6).hex()}"
    dockerfile = f"FROM {base}\nARG CAROL_SECRET\nRUN false\n"
    query = urllib.parse.urlencode(
        {"rm": "0", "forcerm": "0", "buildargs": json.dumps({"CAROL_SECRET": secret})}
    )
    status, answer = direct(
        daemon, "POST", f"/build?{query}", build_context({"Dockerfile": dockerfile.encode()})
    )
    assert status == 200, (status, answer)
    status, listed = direct(daemon, "GET", "/containers/json?all=1")
    step = next(
        entry
        for entry in listed
        if entry["Labels"].get(OWNER_LABEL) == "user:alice" and "false" in entry["Command"]
    )
    cid = step["Id"]
    try:
        # carol's argument is in the leftover step container's environment.
        status, inspected = direct(daemon, "GET", f"/containers/{cid}/json")
        assert f"CAROL_SECRET={secret}" in inspected["Config"]["Env"]
        # alice removes every image carrying her label that will go.
        filters = urllib.parse.quote(json.dumps({"label": [f"{OWNER_LABEL}=user:alice"]}))
        status, labelled = alice.call("GET", f"/v1.41/images/json?all=1&filters={filters}")
        assert status == 200, (status, labelled)
        assert step["ImageID"] in [image["Id"] for image in labelled]
        for image in labelled:
            alice.call("DELETE", f"/v1.41/images/{image['Id']}?force=1")
        status, answer = alice.call("GET", f"/v1.41/containers/{cid}/json")
        # Before: 200, with carol's secret in `Config.Env`.
        assert status == 404, (status, answer["Config"]["Env"])
    finally:
        daemon.docker("rm", "-f", cid, check=False)
