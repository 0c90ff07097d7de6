"""Unit edges of the issue-11 fixes of the second attack review
(tests/body/test_attacks_ci_runner_2.py holds the effect tests on the real daemon): image names on
a loopback registry, wherever a caller gives one, and BuildKit builds in ownership mode. Each fails
on the old code, which judged `fromImage` only and let every build through to BuildKit."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from dockgate.api.routes import identify
from dockgate.body.guardrails import BodyRefused, Guardrails, check_request
from dockgate.ownership.operations import plan
from dockgate.refusal import Refusal

LOOPBACK_NAMES = [
    "127.0.0.1:5000/x",
    "localhost:5000/x:1",
    "LOCALHOST/x",
    "registry.localhost/x",
    "[::1]:5000/x",
    "127.1:80/x",
    "0.0.0.0:5000/x@sha256:" + "a" * 64,
    "169.254.169.254/x",
]


@pytest.mark.parametrize("name", LOOPBACK_NAMES)
@pytest.mark.parametrize(
    ("operation", "query"),
    [
        ("ImageTag", "repo={}&tag=1"),
        ("ImageCommit", "container=c&repo={}"),
        ("ImageBuild", "t=fine:1&t={}"),  # every `t` is a tag the build writes
    ],
)
def test_loopback_names_in_the_query_are_refused(name: str, operation: str, query: str) -> None:
    with pytest.raises(BodyRefused) as refused:
        check_request(Guardrails(), operation, query.format(name), b"")
    assert refused.value.status == 403 and "loopback" in refused.value.reason


@pytest.mark.parametrize(
    "value",
    [
        '["127.0.0.1:5000/cache"]',
        '["busybox","localhost:5000/c"]',
        '["busybox,localhost:5000/c"]',  # BuildKit splits the joined list on ","
        '["type=registry,ref=127.0.0.1:5000/c"]',
    ],
)
def test_a_build_s_cache_from_on_a_loopback_registry_is_refused(value: str) -> None:
    with pytest.raises(BodyRefused, match="cachefrom"):
        check_request(Guardrails(), "ImageBuild", f"cachefrom={quote(value)}", b"")


@pytest.mark.parametrize("value", ["", "null", "[]", '["busybox","registry.example.com/c"]'])
def test_other_cache_from_values_go_on(value: str) -> None:
    check_request(Guardrails(), "ImageBuild", f"cachefrom={quote(value)}", b"")


@pytest.mark.parametrize("value", ["[", '"x"', "[1]", '{"a":"b"}'])
def test_unreadable_cache_from_is_400(value: str) -> None:
    with pytest.raises(BodyRefused) as refused:
        check_request(Guardrails(), "ImageBuild", f"cachefrom={quote(value)}", b"")
    assert refused.value.status == 400


@pytest.mark.parametrize("name", LOOPBACK_NAMES)
def test_a_push_is_judged_on_its_path_name(name: str) -> None:
    match = identify("POST", f"/v1.41/images/{name}/push")
    assert match is not None and match.operation.name == "ImagePush"
    with pytest.raises(BodyRefused, match="pushing"):
        check_request(Guardrails(), "ImagePush", "tag=latest", b"", match.params)


@pytest.mark.parametrize(
    "name", ["busybox", "registry.example.com/app", "me/app:1", "10.0.0.5:5000/x", "sha256:ab"]
)
def test_other_names_are_not_judged(name: str) -> None:
    match = identify("POST", f"/v1.41/images/{name}/push")
    assert match is not None
    check_request(Guardrails(), "ImagePush", "", b"", match.params)
    check_request(Guardrails(), "ImageTag", f"repo={name}", b"")


def test_images_listing_a_loopback_registry_allows_it() -> None:
    allowed = Guardrails(images=("127.0.0.1:5000/*",))
    check_request(allowed, "ImageTag", "repo=127.0.0.1:5000/app", b"")
    check_request(allowed, "ImagePush", "", b"", {"name": "127.0.0.1:5000/app"})
    with pytest.raises(BodyRefused):
        check_request(allowed, "ImagePush", "", b"", {"name": "127.0.0.1:5001/app"})


@pytest.mark.parametrize(
    "query", ["version=2", "version=1&version=2", "version=&version=2", "version=3"]
)
def test_buildkit_builds_are_refused_in_ownership_mode(query: str) -> None:
    decided = plan("ImageBuild", "/build", f"/v1.41/build?{query}", "/v1.41/build", "user:a")
    assert isinstance(decided, Refusal) and decided.status == 403
    assert "classic builder" in decided.message


@pytest.mark.parametrize("query", ["", "version=1", "version="])
def test_classic_builds_go_on_in_ownership_mode(query: str) -> None:
    decided = plan("ImageBuild", "/build", f"/v1.41/build?{query}", "/v1.41/build", "user:a")
    assert not isinstance(decided, Refusal)


def test_build_prune_is_not_available_in_ownership_mode() -> None:
    decided = plan("BuildPrune", "/build/prune", "/v1.41/build/prune", "/v1.41/build/prune", "o")
    assert isinstance(decided, Refusal) and decided.status == 403
