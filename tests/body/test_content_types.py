"""What a request body may be, per operation (body/content.py): pure tests of the table and
of how a Content-Type is read (as Go's mime.ParseMediaType reads it)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from dockgate.api.routes import OPERATIONS
from dockgate.body.content import (
    EXPECTED,
    IGNORED_BODY_LIMIT,
    BodyKind,
    ignored_body_refusal,
    is_empty_json,
    judge_head,
    media_type,
)
from dockgate.body.guardrails import BODY_CHECKED
from dockgate.refusal import Refusal

SPEC_DIR = pathlib.Path("/work/shared/docker-api")
SPEC_FILES = ("v1.41.yaml", "v1.56.yaml")

# Operations whose handler reads a body that the specs do not describe, with the moby source.
READ_BUT_NOT_IN_SPEC = {
    # 20.10 image_routes.go postImagesPush: without X-Registry-Auth the body is the AuthConfig.
    "ImagePush": BodyKind.JSON,
    # 20.10 container_routes.go postContainersStart: a HostConfig below API 1.24.
    "ContainerStart": BodyKind.EMPTY,
    # the daemon hijacks the connection: what follows the head is the container's stdin.
    "ContainerAttach": BodyKind.STREAM,
}


def _spec_bodies() -> dict[str, set[BodyKind]]:
    """Per operationId of both specs, the body kinds its `in: body` parameter says."""
    found: dict[str, set[BodyKind]] = {}
    for name in SPEC_FILES:
        with open(SPEC_DIR / name, encoding="utf-8") as f:
            spec: dict[str, Any] = yaml.safe_load(f)
        for methods in spec["paths"].values():
            for op in methods.values():
                if not isinstance(op, dict) or "operationId" not in op:
                    continue
                kinds = found.setdefault(op["operationId"], set())
                params = op.get("parameters", [])
                if any(isinstance(p, dict) and p.get("in") == "body" for p in params):
                    consumes = op.get("consumes") or spec["consumes"]
                    json_body = "application/json" in consumes
                    kinds.add(BodyKind.JSON if json_body else BodyKind.STREAM)
                else:
                    kinds.add(BodyKind.NONE)
    return found


def test_every_operation_of_the_route_table_has_an_expectation() -> None:
    """The table names every operation the gateway can identify, and nothing else."""
    assert set(EXPECTED) == set(OPERATIONS)


@pytest.mark.parametrize(("operation", "kinds"), sorted(_spec_bodies().items()))
def test_expectation_agrees_with_the_specs(operation: str, kinds: set[BodyKind]) -> None:
    """A body the spec describes is JSON or a stream as its `consumes` says; an operation
    without one takes none, unless moby's handler reads one the spec omits."""
    expected = EXPECTED[operation]
    if operation in READ_BUT_NOT_IN_SPEC:
        assert expected is READ_BUT_NOT_IN_SPEC[operation]
        return
    assert kinds == {expected}


def test_operations_judged_by_their_body_read_json() -> None:
    """The guardrails' body checks only exist where the handler decodes JSON (or, for the
    legacy start body, where some version does)."""
    assert {EXPECTED[op] for op in BODY_CHECKED} <= {BodyKind.JSON, BodyKind.EMPTY}


# ----- the media type, as Go reads it --------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([b""], None),
        ([b"application/json"], "application/json"),
        ([b"Application/JSON; charset=utf-8"], "application/json"),
        ([b"  multipart/form-data ;boundary=x"], "multipart/form-data"),
        ([b"MULTIPART/FORM-DATA"], "multipart/form-data"),
        ([b"application/x-www-form-urlencoded;"], "application/x-www-form-urlencoded"),
    ],
)
def test_media_type_as_go_reads_it(values: list[bytes], expected: str | None) -> None:
    """The text before `;`, trimmed and lower-cased (mime.ParseMediaType)."""
    assert media_type(values) == expected


def test_non_ascii_content_type_is_refused() -> None:
    """Go's ToLower maps U+0130 to `i`: `multİpart/form-data` is multipart to the daemon."""
    refusal = media_type(["multİpart/form-data".encode()])
    assert isinstance(refusal, Refusal) and refusal.status == 400


def test_two_content_types_are_refused() -> None:
    """Go's Header.Get reads the first; a reader of the last would judge another body."""
    refusal = media_type([b"application/json", b"multipart/form-data; boundary=x"])
    assert isinstance(refusal, Refusal) and refusal.status == 400


# ----- the head's judgement ------------------------------------------------------------------

FORMS = (b"multipart/form-data; boundary=xyz", b"application/x-www-form-urlencoded")


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("form", FORMS)
def test_form_bodies_are_refused_on_every_operation(operation: str, form: bytes) -> None:
    """Go's FormValue/ParseForm would read their fields as parameters before the query's."""
    refusal = judge_head(operation, [form], True, 20)
    assert refusal == Refusal(
        400, "dockgate: form-encoded bodies are not accepted", "content", "body shape"
    )
    chunked = judge_head(operation, [form], True, None)
    assert chunked is not None and chunked.status == 400


@pytest.mark.parametrize("form", FORMS)
def test_form_type_without_a_body_passes(form: bytes) -> None:
    """`curl -X POST -d ''` sends a url-encoded type with no body: there are no fields."""
    assert judge_head("ContainerKill", [form], False, 0) is None


@pytest.mark.parametrize(
    ("operation", "content_type", "status"),
    [
        ("ContainerCreate", b"application/json", None),
        ("ContainerCreate", b"application/json; charset=utf-8", None),
        ("ContainerCreate", None, None),  # CheckForJSON: the daemon decides
        ("ContainerCreate", b"text/plain", 415),
        ("ServiceUpdate", b"application/xml", 415),
        # Any type but the form types for streams (the Go client sends text/plain).
        ("ImageBuild", b"application/x-tar", None),
        ("ImageCreate", b"text/plain", None),
        ("PutContainerArchive", b"application/octet-stream", None),
        ("ImageLoad", None, None),
        # No body read: JSON (dockerode's repeated options) is read and dropped, others 415.
        ("ContainerKill", b"application/json", None),
        ("ContainerKill", None, None),
        ("ContainerKill", b"text/plain", 415),
        ("ContainerStart", b"application/json", None),  # judged when whole
    ],
)
def test_media_types_per_operation(
    operation: str, content_type: bytes | None, status: int | None
) -> None:
    """Each operation takes only the media type its handler reads."""
    refusal = judge_head(operation, [content_type] if content_type else [], True, 10)
    assert (refusal.status if refusal else None) == status


def test_large_body_on_an_operation_that_reads_none_is_refused_up_front() -> None:
    """Over IGNORED_BODY_LIMIT with a Content-Length: 413 before a byte is read."""
    assert judge_head("ContainerKill", [], True, IGNORED_BODY_LIMIT) is None
    refusal = judge_head("ContainerKill", [], True, IGNORED_BODY_LIMIT + 1)
    assert refusal is not None and refusal.status == 413
    assert judge_head("ImageLoad", [], True, 10 * IGNORED_BODY_LIMIT) is None


def test_unknown_operations_take_any_body_but_forms() -> None:
    """A request the route table cannot place (only ever relayed under `unknown: true`)."""
    assert judge_head("unknown", [b"text/plain"], True, 5) is None
    assert judge_head("unknown", [FORMS[0]], True, 5) is not None


# ----- bodies read whole on operations that read none ----------------------------------------


@pytest.mark.parametrize(
    ("body", "empty"),
    [
        (b"", True),
        (b"{}", True),
        (b" { \r\n\t} \n", True),
        (b"null", True),
        (b" null ", True),
        (b"{}{}", False),
        (b"[]", False),
        (b'{"Binds":["/:/host:ro"]}', False),
        (b"{ x }", False),
        (b"nul", False),
    ],
)
def test_empty_json(body: bytes, empty: bool) -> None:
    assert is_empty_json(body) is empty


def test_legacy_start_body_is_refused_and_others_dropped() -> None:
    """Finding 4: a start body below API 1.24 is a HostConfig: refused (403) unless empty;
    a body on an operation no version reads is dropped, whatever it says."""
    refusal = ignored_body_refusal("ContainerStart", b'{"Binds":["/:/host:ro"]}')
    assert refusal is not None and refusal.status == 403
    assert ignored_body_refusal("ContainerStart", b"{}") is None
    assert ignored_body_refusal("ContainerKill", b'{"signal":"SIGKILL"}') is None
