"""The redaction table (dockgate/body/exposure.py) against both Engine API specs: every read
whose answer can hold an environment, mounts or labels is classified, and every answer the table
says is rewritten loses those fields, on an answer built from the spec's own schema."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dockgate.api.routes import OPERATIONS
from dockgate.body.exposure import EXPOSURES, SHOWS_NONE, Treatment
from dockgate.body.redact import (
    REDACTED,
    REDACTED_OPERATIONS,
    REDACTED_STREAMS,
    Redaction,
    query_problem,
    redact_response,
)

SPEC_DIR = pathlib.Path("/work/shared/docker-api")
SPEC_FILES = ("v1.41.yaml", "v1.56.yaml")
# Field names whose values are an environment, mounts, or labels, or that show them.
SHOWING = frozenset(
    {"Env", "Mounts", "Binds", "Labels", "Volumes", "VolumesRW", "Mountpoint", "CreatedBy"}
    | {"ProcessConfig"}
)
CANARY = "canary-7f3e"


def _specs() -> dict[str, dict[str, Any]]:
    out = {}
    for name in SPEC_FILES:
        with open(SPEC_DIR / name, encoding="utf-8") as f:
            out[name] = yaml.safe_load(f)
    return out


SPECS = _specs()


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = spec["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _fields(spec: dict[str, Any], node: Any, seen: frozenset[str] = frozenset()) -> set[str]:
    """Every property name reachable in a schema."""
    if isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen:
            return set()
        return _fields(spec, _resolve(spec, node), seen | {ref})
    found: set[str] = set()
    if not isinstance(node, dict):
        return found
    for key, value in (node.get("properties") or {}).items():
        found.add(key)
        found |= _fields(spec, value, seen)
    for key in ("items", "additionalProperties", "schema"):
        if isinstance(node.get(key), dict):
            found |= _fields(spec, node[key], seen)
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in node.get(key, []):
            found |= _fields(spec, sub, seen)
    return found


def _answers() -> Iterator[tuple[str, str, dict[str, Any], Any]]:
    """(spec file, operationId, spec, 2xx response schema) of every operation."""
    for name, spec in SPECS.items():
        for item in spec["paths"].values():
            for method, op in item.items():
                if method not in ("get", "post", "put", "delete", "head"):
                    continue
                for code, response in (op.get("responses") or {}).items():
                    if str(code).startswith("2") and "schema" in response:
                        yield name, op["operationId"], spec, response["schema"]


ANSWERS = list(_answers())


def test_every_read_that_shows_env_mounts_or_labels_is_in_the_table() -> None:
    """An operation of either spec whose answer has one of the fields, and that is not in the
    table, fails here (a newer API's read cannot pass unconsidered)."""
    missing = sorted(
        {
            f"{name} {operation}: {sorted(_fields(spec, schema) & SHOWING)}"
            for name, operation, spec, schema in ANSWERS
            if _fields(spec, schema) & SHOWING
            and operation not in EXPOSURES
            and operation not in SHOWS_NONE
        }
    )
    assert not missing, "\n".join(missing)
    # The walk does find them (not vacuous): the reads of issue 11's finding 5 among them.
    found = {op for _, op, spec, schema in ANSWERS if _fields(spec, schema) & SHOWING}
    assert {"ContainerInspect", "ContainerList", "ImageInspect", "TaskList"} <= found


def test_the_table_names_operations_the_gateway_knows() -> None:
    assert set(EXPOSURES) | set(SHOWS_NONE) <= set(OPERATIONS)


def test_what_the_table_says_is_rewritten_is_what_the_walkers_rewrite() -> None:
    rewritten = {
        op
        for op, exposures in EXPOSURES.items()
        if any(e.treatment is Treatment.REWRITTEN for e in exposures)
    }
    assert rewritten == REDACTED_OPERATIONS | REDACTED_STREAMS
    for op in rewritten:
        for exposure in EXPOSURES[op]:
            if exposure.treatment is Treatment.REWRITTEN:
                only = Redaction(**{exposure.area: True})
                assert only.rewrites(op), (op, exposure.area)
    assert not Redaction(env=True).rewrites("ImageList")  # no env there: not held


# v1.56's SystemDataUsage lists its items by Go type (`x-go-type`) in the parent's Go package.
GO_TYPES = {
    ("container", "Summary"): "ContainerSummary",
    ("image", "Summary"): "ImageSummary",
    ("volume", "Volume"): "Volume",
}


def _instance(spec: dict[str, Any], node: Any, key: str, depth: int = 0, package: str = "") -> Any:
    """A value for a schema, every string a canary (`K=canary` in an Env list)."""
    node = _resolve(spec, node)
    if depth > 12 or not isinstance(node, dict):
        return CANARY
    go_type = node.get("x-go-type", {}).get("type")
    if (package, go_type) in GO_TYPES:
        node = spec["definitions"][GO_TYPES[package, go_type]]
    package = str(node.get("x-go-package", package)).rsplit("/", 1)[-1]
    merged: dict[str, Any] = {}
    for sub in node.get("allOf", []):
        part = _instance(spec, sub, key, depth + 1)
        if isinstance(part, dict):
            merged.update(part)
    kind = node.get("type")
    if "properties" in node or kind == "object" or merged:
        out = dict(merged)
        for name, value in (node.get("properties") or {}).items():
            out[name] = _instance(spec, value, name, depth + 1, package)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["k"] = _instance(spec, extra, key, depth + 1)
        return out
    if kind == "array":
        item = _instance(spec, node.get("items", {}), key, depth + 1, package)
        return [f"K={CANARY}" if key == "Env" and item == CANARY else item]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    return CANARY


VOLUME_ANSWERS = frozenset({"VolumeList", "VolumeInspect", "VolumeCreate", "SystemDataUsage"})


def _leaks(node: Any, area: str, operation: str, inside: str = "", path: str = "") -> list[str]:
    """Canaries left where `area` keeps them (an Env string's value or an Env entry's `Value`,
    anything under Mounts, Binds, VolumesRW, a volume's Options, Labels), with their paths."""
    keys = {"env": {"Env"}, "mounts": {"Mounts", "Binds", "VolumesRW"}, "labels": {"Labels"}}
    if operation in VOLUME_ANSWERS:
        keys["mounts"] = keys["mounts"] | {"Options"}
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if inside == "Env" and key != "Value":
                continue  # a plugin's Env entry: Name, Description, Settable are not values
            nested = key if key in keys[area] else inside
            out += _leaks(value, area, operation, nested, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            out += _leaks(item, area, operation, inside, path + "[]")
    elif (
        inside
        and isinstance(node, str)
        and CANARY in node
        and not (inside == "Env" and node.endswith("=" + REDACTED))
    ):
        out.append(path)
    return out


@pytest.mark.parametrize(
    ("name", "operation"),
    sorted({(n, op) for n, op, _, _ in ANSWERS if op in REDACTED_OPERATIONS}),
)
def test_a_spec_shaped_answer_loses_what_the_table_says(name: str, operation: str) -> None:
    """An answer built from the spec's schema, with every string a canary: redacted by each
    area the table rewrites, none stays under that area's fields."""
    spec, schema = next((s, sc) for n, op, s, sc in ANSWERS if n == name and op == operation)
    answer = _instance(spec, schema, "")
    for exposure in EXPOSURES[operation]:
        if exposure.treatment is not Treatment.REWRITTEN:
            continue
        before = _leaks(answer, exposure.area, operation)
        out = json.loads(
            redact_response(
                operation, json.dumps(answer).encode(), Redaction(**{exposure.area: True})
            )
        )
        assert before  # the canaries were there
        assert not _leaks(out, exposure.area, operation), exposure.area


def test_legacy_inspect_volumes_are_redacted() -> None:
    """API < 1.20 answers carry Volumes/VolumesRW (host paths) at the top level (moby
    api/types/versions/v1p19); they passed mount redaction before (issue 11, finding 5)."""
    answer = {"Id": "x", "Volumes": {"/data": "/srv/secret"}, "VolumesRW": {"/data": True}}
    out = json.loads(redact_response("ContainerInspect", json.dumps(answer).encode(),
                                     Redaction(mounts=True)))  # fmt: skip
    assert out["Volumes"] == {} and out["VolumesRW"] == {}
    assert "/srv/secret" not in json.dumps(out)


@pytest.mark.parametrize(
    ("operation", "query", "redaction", "refused"),
    [
        ("ContainerTop", "ps_args=auxe", Redaction(env=True), True),
        ("ContainerTop", "ps_args=aux", Redaction(env=True), False),
        ("ContainerTop", "", Redaction(env=True), False),
        ("ContainerTop", "ps_args=auxe", Redaction(labels=True), False),  # env not hidden
        ("ContainerTop", "ps_args=aux&ps_args=auxe", Redaction(env=True), True),
        ("ContainerTop", "ps_args=a%75xe", Redaction(env=True), True),
        ("ContainerTop", "ps_args=aux%", Redaction(env=True), True),
        ("ContainerTop", "ps_args=-eo+pid,comm", Redaction(env=True), False),
        ("ContainerList", 'filters={"volume":["/etc"]}', Redaction(mounts=True), True),
        ("ContainerList", 'filters={"volume":["/etc"]}', Redaction(labels=True), False),
        ("ContainerList", 'filters={"label":["a=b"]}', Redaction(labels=True), True),
        ("TaskList", 'filters={"node.label":["a=b"]}', Redaction(labels=True), True),
        ("ImageList", 'filters={"label":["a"]}', Redaction(labels=True), True),
        ("VolumeList", 'filters={"label":["a"]}', Redaction(labels=True), True),
        ("NetworkList", 'filters={"label":["a"]}', Redaction(labels=True), True),
        ("SecretList", 'filters={"name":["a"]}', Redaction(labels=True), False),
        ("ImageList", 'filters={"label":["a"]}', Redaction(env=True), False),
    ],
)
def test_requests_that_would_show_hidden_values(
    operation: str, query: str, redaction: Redaction, refused: bool
) -> None:
    """Filters that match hidden values, and top arguments that print environments."""
    assert (query_problem(operation, query, redaction) is not None) is refused


@pytest.mark.parametrize("operation", ["ContainerLogs", "ServiceLogs", "TaskLogs"])
@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("stdout=1&details=1", True),
        ("details=true", True),
        ("details=yes", True),
        ("details=on", True),
        ("details=anything", True),
        ("details=+1+", True),  # "1" once trimmed
        ("details=%00", True),  # not a false word: BoolValue reads it as true
        ("details=%C2%A0", True),  # Go's TrimSpace trims U+00A0 too; not judged, refused
        ("details=0&details=1", True),  # every value is judged
        ("details=1%", True),
        ("stdout=1", False),
        ("details=", False),
        ("details=0", False),
        ("details=FALSE", False),
        ("details=+no+", False),
        ("details=None", False),
        ("Details=1", False),  # the key is exact (r.FormValue)
    ],
)
@pytest.mark.parametrize("redaction", [Redaction(env=True), Redaction(labels=True)])
def test_log_details_are_refused_where_env_or_labels_are_redacted(
    operation: str, query: str, refused: bool, redaction: Redaction
) -> None:
    """Found by the second attack review: `details=1` printed the values of the variables and
    labels the log options name (`--log-opt env=,labels=`), which redaction hides elsewhere
    (the old query_problem passed every logs query). Closed: a `details` the daemon reads as
    true (moby httputils.BoolValue) is refused where env or labels are redacted."""
    assert (query_problem(operation, query, redaction) is not None) is refused
    assert query_problem(operation, query, Redaction(mounts=True)) is None
    assert query_problem(operation, query, Redaction()) is None


def test_log_driver_options_are_redacted_with_the_environment() -> None:
    """Found by the second attack review (decided with the log details finding): a log
    driver's options hold remote drivers' credentials (splunk-token, a loki-url with a
    password) and inspect showed them where `env` is redacted (the old walkers left them).
    Closed: their values are redacted with the environment, the keys kept."""
    secret = "splunk-token-4c1d"
    container = {
        "Id": "x",
        "HostConfig": {"LogConfig": {"Type": "splunk", "Config": {"splunk-token": secret}}},
    }
    out = json.loads(
        redact_response("ContainerInspect", json.dumps(container).encode(), Redaction(env=True))
    )
    assert out["HostConfig"]["LogConfig"] == {
        "Type": "splunk",
        "Config": {"splunk-token": REDACTED},
    }
    kept = redact_response(
        "ContainerInspect", json.dumps(container).encode(), Redaction(labels=True, mounts=True)
    )
    assert secret in kept.decode()
    log_driver = {"Name": "splunk", "Options": {"splunk-token": secret}}
    service = {"Spec": {"TaskTemplate": {"LogDriver": log_driver}}}
    service["PreviousSpec"] = json.loads(json.dumps(service["Spec"]))
    task = {"Spec": {"LogDriver": log_driver}}
    for operation, answer in (
        ("ServiceInspect", service),
        ("ServiceList", [service]),
        ("TaskInspect", task),
        ("TaskList", [task]),
    ):
        out_text = redact_response(
            operation, json.dumps(answer).encode(), Redaction(env=True)
        ).decode()
        assert secret not in out_text, operation
        assert '"splunk-token":"<redacted>"' in out_text, operation
