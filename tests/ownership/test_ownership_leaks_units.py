"""The small cross-tenant leaks of ownership mode (issue 12, item 8), pinned without a daemon:
which SystemInfo counts are zeroed, which IDs leave the daemon's error messages, and how a
container list's `since`/`before` references are found and pinned. The effects on the real
daemon are in tests/ownership/test_ownership_leaks.py. Each of these fails on the code before the
fix (there was neither module: the answers went out as the daemon wrote them, the references as
the client wrote them)."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from dockgate.ownership.answers import INFO_COUNTS, SCRUBBED_ANSWERS, scrubbed_answer
from dockgate.ownership.lists import list_plan
from dockgate.ownership.lookup import Unresolved
from dockgate.ownership.operations import (
    CONTAINER,
    MAX_REFERENCES,
    NETWORK,
    SERVICE,
    with_owner_filter,
)
from dockgate.ownership.prefix import resolved

ALICE = "3f2c1234abcd" + "5" * 52  # a container's full ID (64 hex digits)
IMAGE = "sha256:" + "9" * 64


# ----- /info ------------------------------------------------------------------------------------


def _info() -> dict[str, object]:
    """A SystemInfo answer as a 20.10 daemon writes it (the fields that matter here)."""
    return {
        "ID": "ABCD:EFGH",
        "Containers": 7,
        "ContainersRunning": 3,
        "ContainersPaused": 1,
        "ContainersStopped": 3,
        "Images": 12,
        "Driver": "overlay2",
        "NFd": 41,
        "NGoroutines": 57,
        "NEventsListener": 2,
        "NCPU": 2,
        "MemTotal": 4096,
        "ServerVersion": "20.10.24",
        "OperatingSystem": "Debian GNU/Linux 12",
        "OSType": "linux",
        "Swarm": {"LocalNodeState": "active", "Nodes": 3, "Managers": 1},
        "Containerd": {"Namespaces": {"Containers": "moby"}},
    }


def test_info_counts_of_every_callers_objects_are_zero() -> None:
    """Containers (each state), images, event listeners, descriptors and goroutines: 0."""
    answer = json.loads(scrubbed_answer("SystemInfo", 200, json.dumps(_info()).encode()))
    assert {key: answer[key] for key in INFO_COUNTS} == dict.fromkeys(INFO_COUNTS, 0)


def test_info_keeps_what_clients_read() -> None:
    """Versions, OS, the host's CPUs and memory, the swarm's (cluster) facts and nested keys
    that share a count's name are kept as they were."""
    original = _info()
    answer = json.loads(scrubbed_answer("SystemInfo", 200, json.dumps(original).encode()))
    kept = {key: value for key, value in original.items() if key not in INFO_COUNTS}
    assert {key: answer[key] for key in kept} == kept


def test_info_adds_no_count_the_daemon_did_not_send() -> None:
    answer = json.loads(scrubbed_answer("SystemInfo", 200, b'{"ServerVersion":"29.0.0"}\n'))
    assert answer == {"ServerVersion": "29.0.0"}


@pytest.mark.parametrize("body", [b"[]", b'"x"', b"not json", b"[" * 100_000])
def test_an_info_answer_that_is_not_an_object_fails(body: bytes) -> None:
    """Rather than passing counts through unread (the request fails with a 502)."""
    with pytest.raises((ValueError, TypeError)):
        scrubbed_answer("SystemInfo", 200, body)


# ----- ImageDelete's 409 ----------------------------------------------------------------------

# moby v20.10.24 daemon/images/image_delete.go (and daemon/containerd/image_delete.go).
_REFERENCE = (
    'conflict: unable to remove repository reference "leaks:1" (must force) - container {c} '
    "is using its referenced image {i}"
)
_RUNNING = (
    "conflict: unable to delete {i} (cannot be forced) - "
    "image is being used by running container {c}"
)
_STOPPED = (
    "conflict: unable to delete {i} (must be forced) - image is being used by stopped container {c}"
)


@pytest.mark.parametrize("template", [_REFERENCE, _RUNNING, _STOPPED])
@pytest.mark.parametrize("shown", [ALICE[:12], ALICE])
def test_image_delete_conflicts_name_no_container(template: str, shown: str) -> None:
    """The 12-digit ID moby writes (stringid.TruncateID) and a full one; the image's kept."""
    message = template.format(c=shown, i=IMAGE[7:19])
    body = json.dumps({"message": message}).encode() + b"\n"
    scrubbed = json.loads(scrubbed_answer("ImageDelete", 409, body))["message"]
    assert ALICE[:12] not in scrubbed
    assert IMAGE[7:19] in scrubbed
    said = ("- a container is using", "(in use) - image is being used by a container: ")
    assert any(words in scrubbed for words in said)
    assert "running" not in scrubbed and "stopped" not in scrubbed and "forced" not in scrubbed


def test_image_delete_says_the_same_whether_the_container_runs() -> None:
    """Fails on the old code (attack review 12, finding 5): "(cannot be forced) ... running
    container" against "(must be forced) ... stopped container" told whether another
    caller's container runs. One answer now, which says what the caller can do."""
    said = {
        scrubbed_answer(
            "ImageDelete", 409, json.dumps({"message": t.format(c=c, i=IMAGE[7:19])}).encode()
        )
        for t in (_RUNNING, _STOPPED)
        for c in (ALICE[:12], ALICE)
    }
    assert len(said) == 1, said
    message = json.loads(said.pop())["message"]
    assert message == (
        f"conflict: unable to delete {IMAGE[7:19]} (in use) - image is being used by a "
        "container: remove the containers that use it first (`docker ps -a --filter "
        f"ancestor={IMAGE[7:19]}` lists yours)"
    )


def test_image_delete_conflict_in_plain_text() -> None:
    """API versions before 1.24 get errors as plain text (moby httputils.WriteError)."""
    text = _RUNNING.format(c=ALICE[:12], i=IMAGE[7:19]).encode()
    scrubbed = scrubbed_answer("ImageDelete", 409, text)
    assert ALICE[:12].encode() not in scrubbed
    assert scrubbed.endswith(f"ancestor={IMAGE[7:19]}` lists yours)".encode())
    assert b"running" not in scrubbed


def test_other_image_delete_conflicts_are_kept() -> None:
    body = json.dumps(
        {"message": "conflict: unable to delete 999999999999 (must be forced) - image is "
         "referenced in multiple repositories"}
    ).encode()  # fmt: skip
    assert json.loads(scrubbed_answer("ImageDelete", 409, body)) == json.loads(body)


# ----- a service's port conflict ----------------------------------------------------------------


@pytest.mark.parametrize("operation", ["ServiceCreate", "ServiceUpdate"])
def test_port_conflicts_name_no_service(operation: str) -> None:
    """swarmkit manager/controlapi/service.go checkPortConflicts names the holder and its ID."""
    message = (
        "rpc error: code = InvalidArgument desc = port '8080' is already in use by service "
        "'alice-web' (qw3e4r5t6y7u8i9o0p1a2s3d4) as an ingress port"
    )
    assert (400, operation) in SCRUBBED_ANSWERS
    body = json.dumps({"message": message}).encode()
    scrubbed = json.loads(scrubbed_answer(operation, 400, body))["message"]
    assert "alice-web" not in scrubbed and "qw3e4r5t6y7u8i9o0p1a2s3d4" not in scrubbed
    assert "port '8080' is already in use by another service as an ingress port" in scrubbed


# ----- ContainerList's since/before ---------------------------------------------------------


def _narrowed(target: str) -> str:
    return with_owner_filter(target, "user:bob")


def _query(target: str) -> dict[str, str]:
    return dict(parse_qsl(target.partition("?")[2], keep_blank_values=True))


def test_a_list_naming_no_container_needs_no_look_up() -> None:
    target = _narrowed('/v1.41/containers/json?all=1&filters={"status":["exited"]}')
    assert list_plan("ContainerList", target) is None
    assert list_plan("VolumeList", _narrowed('/volumes?filters={"since":["x"]}')) is None


@pytest.mark.parametrize(
    "filters",
    [
        '{"before":["web"],"since":["db"]}',  # the list form
        '{"before":{"web":true},"since":{"db":false}}',  # the map form (docker CLI)
    ],
)
def test_filter_references_are_looked_up_and_pinned(filters: str) -> None:
    """Both forms; a `false` value names a container too (WalkValues walks every key)."""
    plan = list_plan("ContainerList", _narrowed(f"/v1.41/containers/json?all=1&filters={filters}"))
    assert plan is not None and plan.kind.name == "container"
    assert sorted(plan.references) == ["db", "web"]
    query = _query(plan.pin({"web": "a" * 64, "db": "b" * 64}))
    written = json.loads(query["filters"])
    values = {key: list(written[key]) for key in ("before", "since")}
    assert values == {"before": ["a" * 64], "since": ["b" * 64]}
    assert "io.dockgate.owner=user:bob" in json.dumps(written["label"])  # still narrowed
    assert query["all"] == "1"


def test_legacy_parameters_are_looked_up_and_pinned() -> None:
    """docker-py sends `since=`/`before=` as parameters; the first value is the one read."""
    plan = list_plan("ContainerList", _narrowed("/containers/json?before=web&before=other"))
    assert plan is not None and plan.references == ("web",)
    query = parse_qsl(plan.pin({"web": "a" * 64}).partition("?")[2])
    assert [value for key, value in query if key == "before"] == ["a" * 64]


def test_an_empty_legacy_parameter_names_nothing() -> None:
    assert list_plan("ContainerList", _narrowed("/containers/json?since=&before=")) is None


@pytest.mark.parametrize(
    "filters",
    ['{"before":"web"}', '{"before":[1]}', '{"since":[""]}', '{"since":{"":true}}'],
)
def test_unreadable_references_are_refused(filters: str) -> None:
    with pytest.raises(ValueError, match="filters"):
        list_plan("ContainerList", _narrowed(f"/containers/json?filters={filters}"))


def test_too_many_references_are_refused() -> None:
    names = json.dumps({"before": [f"c{i}" for i in range(MAX_REFERENCES + 1)]})
    with pytest.raises(ValueError, match="at most"):
        list_plan("ContainerList", _narrowed(f"/containers/json?filters={names}"))


def test_a_task_lists_services_are_looked_up_and_pinned() -> None:
    """`docker service ps NAME`: the daemon resolves each `service` value (GetTasks)."""
    target = _narrowed('/v1.41/tasks?filters={"service":{"web":true},"node":["n1"]}')
    plan = list_plan("TaskList", target)
    assert plan is not None and plan.kind.name == "service" and plan.references == ("web",)
    written = json.loads(_query(plan.pin({"web": "q" * 25}))["filters"])
    assert written["service"] == {"q" * 25: True} and written["node"] == ["n1"]
    # A `service` parameter is not read by the daemon: nothing to look up.
    assert list_plan("TaskList", _narrowed("/v1.41/tasks?service=web")) is None


def test_a_volume_in_use_names_no_container() -> None:
    """moby volume/service/errors.go OpErr: the references, whole IDs, become a count."""
    other = "7" * 64
    body = json.dumps({"message": f"remove v1: volume is in use - [{ALICE}, {other}]"}).encode()
    scrubbed = json.loads(scrubbed_answer("VolumeDelete", 409, body))["message"]
    assert scrubbed == "remove v1: volume is in use - [2 containers]"
    one = scrubbed_answer("VolumeDelete", 409, f"remove v1: volume is in use - [{ALICE}]".encode())
    assert one == b"remove v1: volume is in use - [1 container]"


# ----- an ambiguous reference, resolved among the caller's own objects ------------------------

_MINE = [
    {"Id": "abc1" + "0" * 60, "Names": ["/web"]},
    {"Id": "abd2" + "0" * 60, "Names": ["/db"]},
]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("abc", "abc1"),  # a prefix of one of them
        ("abd2" + "0" * 60, "abd2"),  # a full ID
        ("web", "abc1"),  # a name (the list writes it with its `/`)
        ("/db", "abd2"),  # by name only
        ("ff", None),  # none of the caller's: missing
        ("/ab", None),  # `/` names, never IDs
    ],
)
def test_an_ambiguous_container_reference_among_ones_own(
    reference: str, expected: str | None
) -> None:
    """The daemon found it ambiguous (several containers, anyone's): among the caller's own,
    as the daemon resolves (full ID, name, prefix)."""
    found = resolved(CONTAINER, reference, list(_MINE))
    assert (found[:4] if found else None) == expected


def test_a_reference_ambiguous_among_ones_own_stays_ambiguous() -> None:
    with pytest.raises(Unresolved):
        resolved(CONTAINER, "ab", list(_MINE))
    twins = [{"Id": "n1" + "0" * 62, "Name": "twin"}, {"Id": "n2" + "0" * 62, "Name": "twin"}]
    with pytest.raises(Unresolved):
        resolved(NETWORK, "twin", list(twins))
    assert resolved(NETWORK, "n2", list(twins)) == "n2" + "0" * 62


def test_swarm_objects_are_named_in_their_spec() -> None:
    services: list[object] = [{"ID": "qw3e", "Spec": {"Name": "web"}}, "not an object", {}]
    assert resolved(SERVICE, "web", services) == "qw3e"
    assert resolved(SERVICE, "qw", services) == "qw3e"
    assert resolved(SERVICE, "zz", services) is None
