"""Ownership mode's pure parts: which object a request names, how the owner label is written
into bodies (read back the way the daemon reads them), how filters are merged, and which
objects a body refers to."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from dockgate.api.routes import OPERATIONS
from dockgate.body import gojson
from dockgate.ownership.operations import (
    CONTAINER,
    EXEC,
    NETWORK,
    OWNER_LABEL,
    SECRET,
    VOLUME,
    object_kind,
    owner_of,
    reference_of,
    references,
    with_owner_filter,
    with_owner_label,
    with_reference,
)


@pytest.mark.parametrize(
    ("operation", "kind"),
    [
        ("ContainerStart", CONTAINER),
        ("ContainerExec", CONTAINER),
        ("ContainerDelete", CONTAINER),
        ("ExecStart", EXEC),
        ("NetworkConnect", NETWORK),
        ("VolumeInspect", VOLUME),
        ("SecretUpdate", SECRET),
        ("ContainerCreate", None),
        ("ContainerList", None),
        ("SystemPing", None),
        ("ImageInspect", None),
    ],
)
def test_object_kind(operation: str, kind: object) -> None:
    assert object_kind(operation, OPERATIONS[operation].path) is kind


def test_reference_and_its_replacement() -> None:
    assert reference_of("/v1.41/containers/web/start", CONTAINER) == (3, "web")
    assert reference_of("/containers/web/json", CONTAINER) == (2, "web")
    assert reference_of("/v1.41/exec/abc/start", EXEC) == (3, "abc")
    assert with_reference("/v1.41/containers/web/logs?follow=1", 3, "f" * 64) == (
        "/v1.41/containers/" + "f" * 64 + "/logs?follow=1"
    )


def _labels_as_the_daemon_reads(body: bytes, *path: str) -> dict[str, object] | None:
    node: gojson.Struct = (gojson.parse(body),)  # type: ignore[assignment]
    for field in path:
        node = gojson.struct(node, field, pointer=True)
    return gojson.mapping(node, "Labels")


@pytest.mark.parametrize(
    "body",
    [
        b'{"Image": "x"}',
        b'{"Image": "x", "Labels": {"a": "b"}}',
        b'{"Image": "x", "labels": {"io.dockgate.owner": "mallory"}}',  # a forged owner
        b'{"Labels": {"io.dockgate.owner": "mallory"}, "Labels": null}',
        b"{}",
        b'{"Image": "x"}  \n',
    ],
)
def test_the_owner_label_wins_whatever_the_body_says(body: bytes) -> None:
    labelled = with_owner_label(body, "ContainerCreate", "alice")
    labels = _labels_as_the_daemon_reads(labelled)
    assert labels is not None and labels[OWNER_LABEL] == "alice"
    if b'"a"' in body:
        assert labels["a"] == "b"  # the client's own labels stay


def test_a_service_and_its_tasks_containers_are_labelled() -> None:
    body = (
        b'{"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "x", "Labels": {"k": "v"}}}}'
    )
    labelled = with_owner_label(body, "ServiceCreate", "alice")
    assert _labels_as_the_daemon_reads(labelled) == {OWNER_LABEL: "alice"}
    task = gojson.struct((gojson.parse(labelled),), "TaskTemplate", pointer=False)  # type: ignore[arg-type]
    spec = gojson.struct(task, "ContainerSpec", pointer=True)
    assert gojson.mapping(spec, "Labels") == {"k": "v", OWNER_LABEL: "alice"}
    assert gojson.scalar(spec, "Image") == "x"


def test_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError):
        with_owner_label(b"[]", "ContainerCreate", "alice")


def _filters(target: str) -> object:
    query = dict(parse_qsl(target.partition("?")[2]))
    return json.loads(query["filters"])


def test_owner_filter_merges_into_either_form() -> None:
    wanted = f"{OWNER_LABEL}=alice"
    assert _filters(with_owner_filter("/containers/json", "alice")) == {"label": [wanted]}
    target = '/containers/json?all=1&filters={"label":["a=b"]}'
    assert _filters(with_owner_filter(target, "alice")) == {"label": ["a=b", wanted]}
    # The docker CLI's form: maps of booleans, kept as such (the daemon reads one form).
    target = '/containers/json?filters={"name":{"web":true}}'
    assert _filters(with_owner_filter(target, "alice")) == {
        "name": {"web": True},
        "label": {wanted: True},
    }
    rewritten = with_owner_filter("/containers/json?all=1&limit=5", "alice")
    kept = dict(parse_qsl(rewritten.partition("?")[2]))
    assert (kept["all"], kept["limit"]) == ("1", "5")
    # Only one filters parameter reaches the daemon (which would read the first).
    doubled = with_owner_filter('/x?filters={"label":["a=b"]}&filters={}', "alice")
    assert doubled.count("filters=") == 1
    with pytest.raises(ValueError):
        with_owner_filter("/x?filters=[1]", "alice")


def test_owner_of_an_inspect_answer() -> None:
    assert owner_of({"Config": {"Labels": {OWNER_LABEL: "alice"}}}, CONTAINER) == "alice"
    assert owner_of({"Config": {"Labels": None}}, CONTAINER) is None
    assert owner_of({"Labels": {OWNER_LABEL: "bob"}}, VOLUME) == "bob"


def test_references_in_bodies() -> None:
    create = json.dumps(
        {
            "Image": "x",
            "HostConfig": {
                "Binds": ["data:/d", "/host:/h"],
                "NetworkMode": "appnet",
                "PidMode": "container:db",
                "VolumesFrom": ["cache:ro"],
                "Mounts": [{"Type": "volume", "Source": "logs", "Target": "/l"}],
            },
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {}, "backnet": {}}},
        }
    ).encode()
    assert sorted((k.name, r) for k, r in references("ContainerCreate", create)) == [
        ("container", "cache"),
        ("container", "db"),
        ("network", "appnet"),
        ("network", "backnet"),
        ("volume", "data"),
        ("volume", "logs"),
    ]
    service = json.dumps(
        {
            "TaskTemplate": {
                "ContainerSpec": {
                    "Secrets": [{"SecretID": "s1", "SecretName": "db"}, {"SecretName": "api"}],
                    "Configs": [{"ConfigID": "c1"}],
                },
                "Networks": [{"Target": "ingress"}, {"Target": "front"}],
            }
        }
    ).encode()
    assert sorted((k.name, r) for k, r in references("ServiceCreate", service)) == [
        ("config", "c1"),
        ("network", "front"),
        ("secret", "api"),
        ("secret", "s1"),
    ]
    assert [(k.name, r) for k, r in references("NetworkConnect", b'{"Container": "web"}')] == [
        ("container", "web")
    ]
    # A body that cannot be read here is refused, never taken to name nothing.
    for unreadable in (b"not json", b"[]", b'{"a": 1} {}', b"[" * 1500 + b"]" * 1500):
        with pytest.raises(ValueError):
            references("ContainerCreate", unreadable)


def test_a_build_gets_an_empty_owner_label_and_its_builder_as_provenance() -> None:
    """Issue 12: an image never vouches for an owner (its step containers would be the
    owner's); the old code wrote the builder's own label. Step containers are always removed."""
    from dockgate.ownership.operations import BUILT_BY_LABEL, with_build_label  # noqa: PLC0415

    target = with_build_label(
        '/v1.41/build?t=app&rm=0&forcerm=0&labels={"a":"b","io.dockgate.owner":"x"}', "al"
    )
    pairs = parse_qsl(target.partition("?")[2])
    query = dict(pairs)
    assert query["t"] == "app"
    assert json.loads(query["labels"]) == {"a": "b", OWNER_LABEL: "", BUILT_BY_LABEL: "al"}
    assert [v for k, v in pairs if k == "rm"] == ["1"]
    assert [v for k, v in pairs if k == "forcerm"] == ["1"]
    with pytest.raises(ValueError):
        with_build_label("/build?labels=[]", "al")


def test_checked_answers_hide_the_holder_and_other_callers_volumes() -> None:
    from dockgate.ownership.operations import OWNER_LABEL, checked_answer, refuse  # noqa: PLC0415
    from dockgate.refusal import Refusal  # noqa: PLC0415

    holder = "3f2c" + "a" * 60
    clash = json.dumps(
        {
            "message": f'Conflict. The container name "/web" is already in use by container '
            f'"{holder}". You have to remove (or rename) that container to be able to reuse '
            "that name."
        }
    ).encode()
    out = checked_answer("ContainerCreate", 409, clash, "alice")
    assert isinstance(out, bytes) and holder not in out.decode()
    assert "already in use by another container. You have to remove" in json.loads(out)["message"]

    bobs = json.dumps({"Name": "data", "Labels": {OWNER_LABEL: "bob"}}).encode()
    assert checked_answer("VolumeCreate", 201, bobs, "alice") == refuse(
        409, "dockgate: a volume named 'data' exists and is not yours"
    )
    assert checked_answer("VolumeCreate", 201, bobs, "bob") == bobs
    unlabelled = json.dumps({"Name": "data", "Labels": None}).encode()
    assert isinstance(checked_answer("VolumeCreate", 201, unlabelled, "bob"), Refusal)
    for bad in (b"not json", b"[1]"):
        with pytest.raises((ValueError, TypeError)):
            checked_answer("VolumeCreate", 201, bad, "bob")
