"""Issue 12, item 1, the pure part: which owner labels ownership mode trusts, and how builds,
commits and imports are rewritten so that an image never vouches for an owner."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qsl

import pytest

from dockgate.ownership.operations import (
    BUILT_BY_LABEL,
    MAX_OWNER_BYTES,
    OWNER_LABEL,
    LookUp,
    container_ids_of,
    continued_change,
    created_image,
    image_owner_of,
    log_driver_of,
    plan,
    silent_log_problem,
    trusted_owner,
    vouched_list,
    with_commit_label,
)
from dockgate.refusal import Refusal

IMAGE_A = "sha256:" + "a" * 64
IMAGE_B = "sha256:" + "b" * 64


def test_a_label_equal_to_the_images_is_not_trusted() -> None:
    """The rule: the daemon copies the image's labels under keys the body did not set, and
    dockgate always sets the owner label, so equal values mean the image put it there. Fails
    on the old code (there was no image to compare with: every label was trusted)."""
    log = "json-file"
    assert trusted_owner("user:alice", "user:alice", log) is None
    assert trusted_owner("user:alice", None, log) == "user:alice"
    assert trusted_owner("user:alice", "", log) == "user:alice"
    assert trusted_owner("user:alice", "user:bob", log) == "user:alice"
    assert trusted_owner(None, "user:alice", log) is None
    assert trusted_owner(None, None, log) is None


def test_a_build_steps_log_driver_makes_a_container_nobodys() -> None:
    """Every container the classic builder creates has the log driver `none` (moby
    builder/dockerfile/internals.go defaultLogConfig): a LABEL step's container carries a
    label its image does not, and is still nobody's; so is a leftover step whose image is
    gone. Fails on the old code (trusted_owner had no log driver: both were trusted)."""
    assert trusted_owner("user:alice", "user:bob", "none") is None
    assert trusted_owner("user:alice", None, "none") is None
    # Not the daemon's answer (it always names the driver): not judged.
    assert trusted_owner("user:alice", None, None) is None
    assert trusted_owner("user:alice", None, "") is None
    assert trusted_owner("user:alice", None, "local") == "user:alice"
    assert log_driver_of({"HostConfig": {"LogConfig": {"Type": "none", "Config": {}}}}) == "none"
    assert log_driver_of({"HostConfig": None}) is None


def test_an_owner_label_longer_than_any_identity_is_nobodys() -> None:
    """Fails on the old code (labels of any length were trusted and kept)."""
    long = "user:" + "x" * MAX_OWNER_BYTES
    assert trusted_owner(long, None, "local") is None
    assert trusted_owner("user:" + "é" * 510, None, "local") is None  # bytes, not characters
    assert trusted_owner("user:" + "x" * (MAX_OWNER_BYTES - 5), None, "local") is not None
    refused = plan("ContainerList", "/containers/json", "/containers/json", "/", long)
    assert isinstance(refused, Refusal)
    assert refused.status == 403


@pytest.mark.parametrize(
    ("operation", "body", "default", "refused"),
    [
        ("ContainerCreate", b'{"HostConfig":{"LogConfig":{"Type":"none"}}}', "json-file", True),
        # Go struct fields fold case; the last value wins; null leaves it as it was.
        ("ContainerCreate", b'{"hostconfig":{"logconfig":{"type":"none"}}}', "local", True),
        (
            "ContainerCreate",
            b'{"HostConfig":{"LogConfig":{"Type":"local","TYPE":"none"}}}',
            "",
            True,
        ),
        ("ContainerCreate", b'{"HostConfig":{"LogConfig":{"Type":"none","Type":null}}}', "x", True),
        # The deprecated top-level HostConfig fields count when `HostConfig` is absent ...
        ("ContainerCreate", b'{"LogConfig":{"Type":"none"}}', "local", True),
        # ... and not when it is given (runconfig ContainerConfigWrapper.getHostConfig).
        ("ContainerCreate", b'{"LogConfig":{"Type":"none"},"HostConfig":{}}', "local", False),
        # The value is exact: the daemon refuses a driver it does not know.
        ("ContainerCreate", b'{"HostConfig":{"LogConfig":{"Type":"None"}}}', "local", False),
        ("ContainerCreate", b'{"HostConfig":{"LogConfig":{"Type":"local"}}}', "none", False),
        # No driver: the daemon's default, refused when it is `none`.
        ("ContainerCreate", b'{"Image":"x"}', "json-file", False),
        ("ContainerCreate", b'{"Image":"x"}', "none", True),
        ("ContainerCreate", b'{"HostConfig":{"LogConfig":{"Type":""}}}', "none", True),
        ("ContainerCreate", b'{"Image":"x"}', None, False),
        ("ServiceCreate", b'{"TaskTemplate":{"LogDriver":{"Name":"none"}}}', "local", True),
        ("ServiceUpdate", b'{"taskTemplate":{"logDriver":{"name":"none"}}}', "local", True),
        (
            "ServiceCreate",
            b'{"TaskTemplate":{"LogDriver":{"Name":"none"},"LogDriver":null}}',
            "local",
            False,
        ),
        ("ServiceCreate", b'{"TaskTemplate":{"ContainerSpec":{}}}', "none", True),
        ("ServiceCreate", b'{"TaskTemplate":{"LogDriver":{"Name":"local"}}}', "none", False),
    ],
)
def test_the_build_steps_log_driver_is_refused_at_create(
    operation: str, body: bytes, default: str | None, refused: bool
) -> None:
    """Fails on the old code (no such check: a container created with `--log-driver none`
    through dockgate would be nobody's now)."""
    assert (silent_log_problem(operation, body, default) is not None) is refused


def test_container_prune_is_not_available() -> None:
    """Fails on the old code (the prune was narrowed by label, build steps included)."""
    step = plan("ContainerPrune", "/containers/prune", "/v1.41/containers/prune", "/", "u:a")
    assert isinstance(step, Refusal)
    assert step.status == 403
    assert "docker rm" in step.message


def test_image_owner_of_reads_the_config_labels_only() -> None:
    assert image_owner_of({"Config": {"Labels": {OWNER_LABEL: "user:a"}}}) == "user:a"
    assert image_owner_of({"Config": {"Labels": {OWNER_LABEL: ""}}}) == ""
    assert image_owner_of({"Config": {"Labels": None}}) is None
    # The config a container was made with (ContainerConfig) is not the image's.
    assert image_owner_of({"ContainerConfig": {"Labels": {OWNER_LABEL: "user:a"}}}) is None
    assert image_owner_of({"Config": {"Labels": {OWNER_LABEL: 1}}}) is None
    assert image_owner_of([]) is None


def test_a_list_keeps_only_the_callers_trusted_containers() -> None:
    """Fails on the old code (no such filter: the step container was listed)."""
    mine = {"Id": "1", "ImageID": IMAGE_A, "Labels": {OWNER_LABEL: "user:alice"}}
    step = {"Id": "2", "ImageID": IMAGE_B, "Labels": {OWNER_LABEL: "user:alice"}}
    failed = {"Id": "3", "ImageID": IMAGE_A, "Labels": {OWNER_LABEL: "user:alice"}}
    other = {"Id": "4", "ImageID": IMAGE_A, "Labels": {OWNER_LABEL: "user:bob"}}
    entries: list[object] = [mine, step, failed, other, "junk", {"Id": ""}, mine]
    verdicts = {"1": "user:alice", "2": None, "4": "user:bob"}  # "3": its look-up failed
    assert vouched_list(entries, "user:alice", verdicts) == [mine, mine]
    assert container_ids_of(entries) == ["1", "2", "3", "4"]


def test_a_commit_gets_a_last_change_that_empties_the_owner_label() -> None:
    """Every `changes` entry the client wrote is kept, in order; dockgate's comes last (the
    daemon applies them in order, the last LABEL wins). Fails on the old code (no change)."""
    target = with_commit_label(
        "/v1.41/commit?container=abc&changes=LABEL%20io.dockgate.owner%3Duser%3Aalice"
        "&changes=CMD%20sh",
        "user:alice",
    )
    changes = [v for k, v in parse_qsl(target.partition("?")[2]) if k == "changes"]
    assert changes[:2] == ["LABEL io.dockgate.owner=user:alice", "CMD sh"]
    assert changes[2] == f'LABEL {OWNER_LABEL}="" {BUILT_BY_LABEL}=user:alice'
    bare = with_commit_label("/v1.41/commit", "user:alice")
    assert bare.startswith("/v1.41/commit?changes=")
    # An owner that would need quoting in a Dockerfile word is not written as provenance.
    odd = with_commit_label("/commit?container=x", 'cert:CN=a b"c')
    assert [v for k, v in parse_qsl(odd.partition("?")[2]) if k == "changes"] == [
        f'LABEL {OWNER_LABEL}=""'
    ]


def test_commit_and_import_plans_empty_the_owner_label() -> None:
    step = plan("ImageCommit", "/commit", "/v1.41/commit?container=web", "/v1.41/commit", "u:a")
    assert isinstance(step, LookUp)
    pinned = step.pin("f" * 64)
    pairs = parse_qsl(pinned.partition("?")[2])
    assert ("container", "f" * 64) in pairs
    assert pairs[-1] == ("changes", f'LABEL {OWNER_LABEL}="" {BUILT_BY_LABEL}=u:a')
    imported = plan("ImageCreate", "/images/create", "/v1.41/images/create?fromSrc=-", "/", "u:a")
    assert isinstance(imported, str)
    assert ("changes", f'LABEL {OWNER_LABEL}="" {BUILT_BY_LABEL}=u:a') in parse_qsl(
        imported.partition("?")[2]
    )
    # A pull is not rewritten.
    assert plan("ImageCreate", "/images/create", "/images/create?fromImage=x", "/", "u") is None


def test_build_labels_are_written_as_one_json_object() -> None:
    step = plan("ImageBuild", "/build", '/v1.41/build?labels={"a":"1"}&rm=0', "/", "u:a")
    assert isinstance(step, str)
    query = dict(parse_qsl(step.partition("?")[2]))
    assert json.loads(query["labels"]) == {"a": "1", OWNER_LABEL: "", BUILT_BY_LABEL: "u:a"}
    assert query["rm"] == "1"
    assert query["forcerm"] == "1"


def test_the_image_a_create_names_is_read_as_go_reads_it() -> None:
    assert created_image("ContainerCreate", b'{"Image":"a","image":"b"}') == "b"
    assert created_image("ContainerCreate", b'{"Image":"a","IMAGE":null}') == "a"
    assert created_image("ContainerCreate", b'{"Cmd":["x"]}') is None
    assert created_image("ContainerCreate", b'{"Image":""}') is None
    with pytest.raises(ValueError):
        created_image("ContainerCreate", b"[]")
    service = (
        b'{"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"a"}},'
        b'"taskTemplate":{"containerSpec":{"image":"b"}}}'
    )
    assert created_image("ServiceCreate", service) == "b"  # objects given twice merge
    assert created_image("ServiceUpdate", b'{"Image":"a"}') is None


def test_image_owners_are_cached_by_id_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Image IDs are content digests: asked once each; names are asked each time."""
    from dockgate.addresses import Address  # noqa: PLC0415
    from dockgate.ownership import lookup  # noqa: PLC0415

    asked: list[str] = []

    async def fake_get_json(address: Address, path: str) -> tuple[int, object]:
        asked.append(path)
        if "dead" in path:
            return 404, None
        return 200, {"Config": {"Labels": {OWNER_LABEL: path[8:20]}}}

    monkeypatch.setattr(lookup, "get_json", fake_get_json)
    cache = lookup.ImageOwners(size=2)
    address = Address("unix", path="/nowhere")

    async def run() -> list[str | None]:
        ids = ["sha256:" + c * 64 for c in "abc"]
        return [
            await cache.owner(address, ids[0]),
            await cache.owner(address, ids[0]),
            await cache.owner(address, ids[1]),
            await cache.owner(address, ids[2]),  # the first is forgotten
            await cache.owner(address, ids[0]),
            await cache.owner(address, "busybox:latest"),
            await cache.owner(address, "sha256:" + "dead" * 16),
        ]

    answers = asyncio.run(run())
    assert answers[0] == answers[1] == answers[4] == "sha256:aaaaa"
    assert answers[5] == "busybox:late"
    assert answers[6] is None
    # a, b, c, a again, the name, the missing one; neither of the last two kept.
    assert len(asked) == 6
    assert len(cache) == 2


@pytest.mark.parametrize(
    "change",
    ["ENV x \\", "ENV x \\  ", "ENV x `", "CMD a\nENV y \\", "CMD a\rLABEL b=c", "ENV x \\\t"],
)
def test_a_change_that_continues_onto_dockgates_is_refused(change: str) -> None:
    """The daemon joins `changes` with newlines: a continued last line would swallow the
    `LABEL` dockgate appends (`ENV x \\` made it an environment value, and the image kept
    the container's owner label). Fails on the old code (no such check)."""
    from urllib.parse import quote  # noqa: PLC0415

    query = f"container=web&changes=CMD%20sh&changes={quote(change)}"
    assert continued_change(query) is not None
    step = plan("ImageCommit", "/commit", f"/v1.41/commit?{query}", "/v1.41/commit", "u:a")
    assert isinstance(step, Refusal)
    assert step.status == 400
    imported = plan(
        "ImageCreate", "/images/create", f"/images/create?fromSrc=-&{query}", "/", "u:a"
    )
    assert isinstance(imported, Refusal)


def test_single_line_changes_pass() -> None:
    assert continued_change("changes=CMD%20sh&changes=LABEL%20a%3Db%20%5C%20c") is None
    assert continued_change("container=x") is None


# ----- the look-ups: per-container verdicts, cached; a failed look-up hides one container --------


def _container(cid: str, owner: str | None, log: str = "json-file", image: str = IMAGE_A) -> dict:
    labels = {OWNER_LABEL: owner} if owner is not None else {}
    return {
        "Id": cid,
        "Image": image,
        "Config": {"Labels": labels},
        "HostConfig": {"LogConfig": {"Type": log, "Config": {}}},
    }


def test_a_list_judges_each_container_and_hides_only_those_it_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fails on the old code (one image look-up over the bound failed the whole list, and a
    LABEL step's container, `none` log driver, was listed)."""
    from dockgate.addresses import Address  # noqa: PLC0415
    from dockgate.ownership import lookup  # noqa: PLC0415

    ids = {name: name * 64 for name in "abcdef"}
    inspected = {
        ids["a"]: _container(ids["a"], "user:alice"),
        ids["b"]: _container(ids["b"], "user:alice", log="none"),  # a build step
        ids["c"]: _container(ids["c"], "user:alice", image=IMAGE_B),  # from an image of hers
        ids["f"]: _container(ids["f"], "user:alice", image="sha256:" + "f" * 64),
    }
    asked: list[str] = []
    running = [0, 0]  # now, most at once

    async def fake_get_json(address: Address, path: str) -> tuple[int, object]:
        asked.append(path)
        running[0] += 1
        running[1] = max(running)
        try:
            await asyncio.sleep(0.01)
            if path == f"/containers/{ids['d']}/json":
                raise lookup.TooLarge("the daemon's answer is too large")
            if path == f"/containers/{ids['e']}/json":
                raise lookup.LookupError_("cannot connect")
            if path.startswith("/containers/"):
                return 200, inspected[path.split("/")[2]]
            if path == f"/images/{IMAGE_B}/json":
                return 200, {"Config": {"Labels": {OWNER_LABEL: "user:alice"}}}
            if path == "/images/sha256:" + "f" * 64 + "/json":
                raise lookup.TooLarge("the daemon's answer is too large")
            return 200, {"Config": {"Labels": {}}}
        finally:
            running[0] -= 1

    monkeypatch.setattr(lookup, "get_json", fake_get_json)
    monkeypatch.setattr(lookup, "CONTAINER_VERDICTS", lookup.ContainerVerdicts())
    monkeypatch.setattr(lookup, "IMAGE_OWNERS", lookup.ImageOwners())
    address = Address("unix", path="/nowhere")
    entries = [{"Id": ids[n], "Labels": {OWNER_LABEL: "user:alice"}} for n in "abcdef"]
    raw = json.dumps(entries).encode()
    first = json.loads(asyncio.run(lookup.vouched_containers(address, raw, "user:alice")))
    assert [e["Id"] for e in first] == [ids["a"]]
    asked_first = len(asked)
    second = json.loads(asyncio.run(lookup.vouched_containers(address, raw, "user:alice")))
    assert second == first
    # Verdicts are kept (an inspect over the bound too); the failed look-up is asked again.
    assert asked[asked_first:] == [f"/containers/{ids['e']}/json"]
    # The build step was judged without its image.
    assert f"/images/{IMAGE_A}/json" in asked
    assert asked.count(f"/images/{IMAGE_A}/json") == 1


def test_list_look_ups_run_at_most_eight_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from dockgate.addresses import Address  # noqa: PLC0415
    from dockgate.ownership import lookup  # noqa: PLC0415

    running = [0, 0]

    async def fake_get_json(address: Address, path: str) -> tuple[int, object]:
        running[0] += 1
        running[1] = max(running)
        await asyncio.sleep(0.005)
        running[0] -= 1
        if path.startswith("/containers/"):
            return 200, _container(path.split("/")[2], "user:alice")
        return 200, {"Config": {"Labels": {}}}

    monkeypatch.setattr(lookup, "get_json", fake_get_json)
    monkeypatch.setattr(lookup, "CONTAINER_VERDICTS", lookup.ContainerVerdicts())
    entries = [{"Id": f"{i:064x}"} for i in range(40)]
    address = Address("unix", path="/nowhere")
    kept = json.loads(
        asyncio.run(lookup.vouched_containers(address, json.dumps(entries).encode(), "user:alice"))
    )
    assert len(kept) == 40
    assert running[1] == lookup.LIST_LOOKUPS_AT_ONCE


def test_the_caches_keep_small_values_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image's owner label over MAX_OWNER_BYTES is kept as no label (it cannot equal any
    trusted owner); the verdict cache is bounded. Fails on the old code (the value was kept
    whole)."""
    from dockgate.addresses import Address  # noqa: PLC0415
    from dockgate.ownership import lookup  # noqa: PLC0415

    huge = "x" * (4 * 1024 * 1024)

    async def fake_get_json(address: Address, path: str) -> tuple[int, object]:
        return 200, {"Config": {"Labels": {OWNER_LABEL: huge}}}

    monkeypatch.setattr(lookup, "get_json", fake_get_json)
    cache = lookup.ImageOwners()
    address = Address("unix", path="/nowhere")
    assert asyncio.run(cache.owner(address, IMAGE_A)) is None
    assert len(cache) == 1
    verdicts = lookup.ContainerVerdicts(size=2)
    for cid in "abc":
        verdicts.keep(cid, "user:alice")
    assert len(verdicts) == 2
    assert verdicts.known("a") == (False, None)
    assert verdicts.known("c") == (True, "user:alice")
