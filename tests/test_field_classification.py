"""The field table (src/dockgate/body/fields.py): every body field and query parameter of the
writing operations is classified, and what is not classified is refused when it has a value.

Three parts:

* the spec walk: both OpenAPI specs (``/work/shared/docker-api/v1.41.yaml`` and ``v1.56.yaml``,
  ``$ref`` and ``allOf`` resolved) list no body field (recursively) nor query parameter of a
  writing operation that the table does not classify; and the table holds nothing that neither
  spec knows unless it names the moby source that reads it; the build options moby's
  ``newImageBuildOptions`` reads (20.10.24 and HEAD) are all classified;
* the walk, unit by unit: unknown and refused fields with values, Go's key folding, zero
  values, lists of objects given twice, query parameters;
* real clients through a guarded policy against the session's private dockerd (the allowlist
  must not break ordinary use), and the guardrails for what was still open, by their effect on
  the daemon: networks with host-attached drivers, ``build?remote=URL`` (the URL is not
  fetched), ``commit`` bodies and changes, unknown fields in a create.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dockgate.body import fields
from dockgate.body.fields import BODIES, QUERIES, Leaf, ListOf, MapOf, Node, Obj
from dockgate.body.gojson import parse
from dockgate.body.guardrails import (
    BODY_CHECKED,
    QUERY_CHECKED,
    Guardrails,
    Refusal,
    change_problem,
    check_request,
)
from dockgate.routes import _TABLE

SPECS = pathlib.Path("/work/shared/docker-api")
VERSIONS = ("v1.41", "v1.56")
MOBY = pathlib.Path("/work/.mirror/moby+moby/repo")
WRITES = {row[2] for row in _TABLE if row[5]}


# ----- the specs ---------------------------------------------------------------------------------


@functools.cache
def load_spec(version: str) -> dict[str, Any]:
    with (SPECS / f"{version}.yaml").open() as f:
        spec: dict[str, Any] = yaml.safe_load(f)
    return spec


def resolve(
    spec: dict[str, Any], schema: dict[str, Any] | None, seen: tuple[str, ...]
) -> dict[str, Any]:
    """`schema` with `$ref` followed and `allOf` merged (properties united); `_seen` holds the
    definitions on the way, so that a recursive definition ends the walk."""
    if not schema:
        return {"_seen": seen}
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return {"_recursive": name, "_seen": seen}
        return resolve(spec, spec["definitions"][name], (*seen, name))
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema.get("allOf", []):
        for key, value in resolve(spec, part, seen).items():
            if key == "properties":
                merged.setdefault("properties", {}).update(value)
            else:
                merged.setdefault(key, value)
    merged["_seen"] = seen
    return merged


def spec_paths(spec: dict[str, Any], schema: dict[str, Any] | None, prefix: str = "") -> set[str]:
    """Every field path of a body schema: `A.B`, `A[].B` (list items), `A{}.B` (map values)."""
    found: set[str] = set()

    def walk(schema: dict[str, Any] | None, prefix: str, seen: tuple[str, ...]) -> None:
        r = resolve(spec, schema, seen)
        if "_recursive" in r:
            return
        seen = r["_seen"]
        if r.get("type") == "array" or "items" in r:
            walk(r.get("items"), prefix + "[]", seen)
            return
        for name, child in (r.get("properties") or {}).items():
            path = f"{prefix}.{name}" if prefix else name
            found.add(path)
            walk(child, path, seen)
        extra = r.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            walk(extra, prefix + "{}", seen)

    walk(schema, prefix, ())
    return found


def spec_operations(version: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in load_spec(version)["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and op.get("operationId") in WRITES:
                yield op["operationId"], op


def json_body_schema(op: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON body's schema (None for tar streams, strings, or no body)."""
    for param in op.get("parameters", []):
        if param.get("in") == "body":
            schema: dict[str, Any] = param.get("schema") or {}
            if schema.get("type") == "string":
                return None  # a tar stream, an image, ImageCreate's raw input
            return schema
    return None


_COMPONENT = re.compile(r"([^.\[\]{}]+)|(\[\])|(\{\})")


def covered(node: Node, path: str) -> bool:
    """Whether the table classifies `path`: a leaf on the way covers everything under it."""
    for name, items, _values in _COMPONENT.findall(path):
        if isinstance(node, Leaf):
            return True
        if isinstance(node, Obj):
            if not name or name.lower() not in node.index:
                return False
            node = node.index[name.lower()][1]
        elif isinstance(node, ListOf):
            if not items:
                return False
            node = node.item
        else:
            node = node.value  # a map: any key, or the spec's `{}`
    return True


def all_spec_paths(operation: str) -> set[str]:
    found: set[str] = set()
    for version in VERSIONS:
        for op_id, op in spec_operations(version):
            if op_id == operation:
                schema = json_body_schema(op)
                if schema is not None:
                    found |= spec_paths(load_spec(version), schema)
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_body_field_of_a_writing_operation_is_classified(version: str) -> None:
    """Walks the spec: each field of each JSON body of an operation that writes (recursively,
    `$ref` and `allOf` resolved) has a classification in the table."""
    spec = load_spec(version)
    missing = []
    for operation, op in spec_operations(version):
        schema = json_body_schema(op)
        if schema is None:
            continue
        if operation not in BODIES:
            missing.append(f"{operation} (the whole body)")
            continue
        for path in sorted(spec_paths(spec, schema)):
            if not covered(BODIES[operation], path):
                missing.append(f"{operation} {path}")
    assert not missing, "fields without a classification:\n" + "\n".join(missing)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_query_parameter_of_a_writing_operation_is_classified(version: str) -> None:
    missing = []
    for operation, op in spec_operations(version):
        table = QUERIES.get(operation)
        if table is None:
            missing.append(f"{operation} (no query table)")
            continue
        for param in op.get("parameters", []):
            if param.get("in") == "query" and param["name"] not in table:
                missing.append(f"{operation} ?{param['name']}")
    assert not missing, "query parameters without a classification:\n" + "\n".join(missing)


def test_every_writing_operation_has_a_query_table() -> None:
    """Routed operations that write (the daemon's router, both versions) are in the table,
    so an unknown parameter with a value is refused on each of them."""
    assert WRITES - set(QUERIES) <= {"GrpcSession", "ContainerCopy"} | {
        op for op in WRITES if op.startswith(("Checkpoint", "Debug"))
    }, sorted(WRITES - set(QUERIES))


def legacy_paths(
    node: Node, prefix: str = "", inherited: bool = False
) -> Iterator[tuple[str, bool]]:
    """Every named path of a body table with whether it (or an ancestor) names its moby
    source."""
    if isinstance(node, Obj):
        for name, child in node.fields.items():
            path = f"{prefix}.{name}" if prefix else name
            marked = inherited or bool(child.source)
            yield path, marked
            yield from legacy_paths(child, path, marked)
    elif isinstance(node, ListOf):
        yield from legacy_paths(node.item, prefix + "[]", inherited or bool(node.source))
    elif isinstance(node, MapOf):
        yield from legacy_paths(node.value, prefix + "{}", inherited or bool(node.source))


def test_no_table_entry_is_unknown_to_both_specs_unless_it_names_its_source() -> None:
    stale = []
    for operation, node in BODIES.items():
        known = {p.lower() for p in all_spec_paths(operation)}
        for path, marked in legacy_paths(node):
            if not marked and path.lower() not in known:
                stale.append(f"{operation} {path}")
    for operation, table in QUERIES.items():
        params: set[str] = set()
        for version in VERSIONS:
            for op_id, op in spec_operations(version):
                if op_id == operation:
                    params |= {
                        p["name"] for p in op.get("parameters", []) if p.get("in") == "query"
                    }
        stale += [
            f"{operation} ?{k}" for k, leaf in table.items() if k not in params and not leaf.source
        ]
    assert not stale, "table entries neither spec knows (add their moby source):\n" + "\n".join(
        stale
    )


_FORM_READ = re.compile(
    r'(?:FormValue|Form\.Get|BoolValue\(r, |Int64ValueOrZero\(r, )\(?"([^"]+)"|r\.Form\["([^"]+)"\]'
)


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        ("v20.10.24", "api/server/router/build/build_routes.go"),
        ("HEAD", "daemon/server/router/build/build_routes.go"),
    ],
)
def test_every_build_option_moby_reads_is_classified(ref: str, path: str) -> None:
    """newImageBuildOptions reads options the spec omits (cpusetmems, cgroupparent, isolation,
    securityopt, ulimits, session, buildid): all are in the table."""
    if not (MOBY / "HEAD").exists():
        pytest.skip("no moby mirror")
    source = subprocess.run(
        ["git", "-C", str(MOBY), "show", f"{ref}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    start = source.index("func newImageBuildOptions")
    end = source.index("\n}\n", start)
    read = {a or b for a, b in _FORM_READ.findall(source[start:end])}
    assert {"networkmode", "remote", "cgroupparent", "securityopt"} <= read  # the regexp works
    assert read - set(QUERIES["ImageBuild"]) == set()


# ----- the walk, unit by unit ---------------------------------------------------------------


def judge(operation: str, body: Any = b"", query: str = "", g: Guardrails | None = None) -> Any:
    """check_request's verdict: None (passes) or (status, reason)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        check_request(g or Guardrails(), operation, query, raw)
    except Refusal as refusal:
        return refusal.status, refusal.reason
    return None


def unknown(path: str) -> tuple[int, str]:
    return 403, f"field {path} is not known to dockgate"


def not_allowed(path: str) -> tuple[int, str]:
    return 403, f"field {path} is not allowed"


CREATE = {"Image": "busybox", "Cmd": ["true"], "HostConfig": {"NetworkMode": "default"}}


def test_a_made_up_field_with_a_value_is_refused_naming_it() -> None:
    """Failed on the old code (a denylist: fields it did not read passed whatever they held)."""
    assert judge("ContainerCreate", {**CREATE, "HostConfig": {"Foo": 1}}) == unknown(
        "HostConfig.Foo"
    )
    assert judge("ContainerCreate", {**CREATE, "Bar": "x"}) == unknown("Bar")
    assert judge(
        "ContainerCreate",
        {
            **CREATE,
            "NetworkingConfig": {
                "EndpointsConfig": {"bridge": {"IPAMConfig": {"IPv4Address": "", "Scope": "x"}}}
            },
        },
    ) == unknown("NetworkingConfig.EndpointsConfig[bridge].IPAMConfig.Scope")
    assert judge(
        "ServiceCreate",
        {"TaskTemplate": {"ContainerSpec": {"Image": "x", "Devices": ["/dev/sda"]}}},
    ) == unknown("TaskTemplate.ContainerSpec.Devices")


def test_an_unknown_field_with_a_zero_value_passes() -> None:
    """Clients send zero values of fields they know and the daemon may not: they change
    nothing (Go's zero value is what an absent field decodes to)."""
    for zero in (None, False, 0, 0.0, "", [], {}, {"A": None, "B": {"C": ""}}):
        assert judge("ContainerCreate", {**CREATE, "HostConfig": {"Foo": zero}}) is None, zero
    assert judge("ContainerCreate", {**CREATE, "HostConfig": {"Foo": [{}]}}) == unknown(
        "HostConfig.Foo"
    )


def test_a_newer_api_field_the_daemon_would_ignore_is_refused_when_refused() -> None:
    """HostConfig.Annotations (API 1.43) reaches the runtime on newer daemons: refused with a
    value; an empty map passes."""
    body = {**CREATE, "HostConfig": {"Annotations": {"io.kubernetes.cri.x": "y"}}}
    assert judge("ContainerCreate", body) == not_allowed(
        "HostConfig.Annotations[io.kubernetes.cri.x]"
    )
    assert judge("ContainerCreate", {**CREATE, "HostConfig": {"Annotations": {}}}) is None


def test_keys_fold_as_go_folds_them() -> None:
    """`hostconfig`, `HOSTCONFIG` and the Kelvin sign reach the same fields as Go's decoder."""
    assert judge("ContainerCreate", {**CREATE, "hostconfig": {"cgroupPARENT": "/x"}}) == (
        not_allowed("HostConfig.CgroupParent")
    )
    kelvin = b'{"Image": "busybox", "HostConfig": {"Cgroup\\u212aX": 1}}'
    assert judge("ContainerCreate", kelvin) == unknown("HostConfig.Cgroup\u212aX")
    assert judge("ContainerCreate", {**CREATE, "HostConfig": {"cgroupparent": ""}}) is None


def test_refused_fields_pass_only_their_zero_or_listed_values() -> None:
    for driver in ("", "json-file", "local", "journald", "none"):
        body = {**CREATE, "HostConfig": {"LogConfig": {"Type": driver, "Config": {}}}}
        assert judge("ContainerCreate", body) is None
    body = {**CREATE, "HostConfig": {"LogConfig": {"Type": "syslog"}}}
    assert judge("ContainerCreate", body) == not_allowed("HostConfig.LogConfig.Type")
    assert judge("ContainerCreate", {**CREATE, "HostConfig": {"Cgroup": "container:x"}}) == (
        not_allowed("HostConfig.Cgroup")
    )


def test_top_level_host_config_fields_are_classified_like_the_inner_ones() -> None:
    """runconfig ContainerConfigWrapper embeds a HostConfig at the top level (API < 1.20)."""
    assert judge("ContainerCreate", {"Image": "busybox", "CgroupParent": "/x"}) == not_allowed(
        "CgroupParent"
    )
    assert judge("ContainerCreate", {"Image": "busybox", "Cpuset": "0", "Memory": 1 << 20}) is None


def test_a_list_of_objects_given_twice_is_refused() -> None:
    """Go decodes the second list into the first list's elements: fields of the first survive
    (golang/go#21092). Failed on the old code for every list its readers did not read."""
    twice = (
        b'{"Image": "busybox", "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 1, '
        b'"Hard": 2}], "ulimits": [{"Soft": 3}]}}'
    )
    assert judge("ContainerCreate", twice) == (
        400,
        "field HostConfig.Ulimits is given more than once",
    )
    ports = (
        b'{"TaskTemplate": {"ContainerSpec": {"Image": "x"}}, "EndpointSpec": {"Ports": '
        b'[{"TargetPort": 80}], "Ports": [{"PublishedPort": 8080}]}}'
    )
    assert judge("ServiceCreate", ports) == (
        400,
        "field EndpointSpec.Ports is given more than once",
    )
    secrets = (
        b'{"TaskTemplate": {"ContainerSpec": {"Image": "x", "Secrets": [{"SecretID": "a"}], '
        b'"Secrets": [{"SecretName": "b"}]}}}'
    )
    assert judge("ServiceCreate", secrets)[0] == 400
    # A list of strings given twice is simply replaced: Go keeps the last.
    strings = b'{"Image": "busybox", "Env": ["A=1"], "Env": ["B=2"]}'
    assert judge("ContainerCreate", strings) is None


def test_a_struct_field_of_the_wrong_type_is_malformed() -> None:
    assert judge("ContainerCreate", {**CREATE, "Healthcheck": "x"}) == (
        400,
        "field Healthcheck must be an object",
    )
    assert judge("ContainerCreate", {**CREATE, "HostConfig": {"Ulimits": {"a": 1}}}) == (
        400,
        "field HostConfig.Ulimits must be a list",
    )


def test_unknown_and_refused_query_parameters() -> None:
    """Failed on the old code: parameters it did not read passed."""
    assert judge("ContainerCreate", CREATE, "name=x&platform=") is None
    assert judge("ContainerCreate", CREATE, "name=x&foo=1") == (
        403,
        "query parameter 'foo' is not known to dockgate",
    )
    assert judge("ContainerCreate", CREATE, "foo=") is None  # no value
    assert judge("ContainerCreate", CREATE, "foo;=1") is None  # Go's ParseQuery drops it
    assert judge("ContainerStart", b"", "checkpoint-dir=/var/lib") == (
        403,
        "query parameter 'checkpoint-dir' is not allowed",
    )
    assert judge("ImageBuild", b"", "cgroupparent=/") == (
        403,
        "query parameter 'cgroupparent' is not allowed",
    )
    assert judge("ImageBuild", b"", "cpusetmems=0&ulimits=[]&isolation=default&t=x") is None


def test_build_remote_is_judged_by_fetch_urls() -> None:
    """Failed on the old code: `remote=URL` passed (the daemon fetched any URL)."""
    for context in ("", "client-session", "upload-request"):
        assert judge("ImageBuild", b"", f"remote={context}") is None
    for url in ("http://127.0.0.1:1/x.tar", "https://github.com/a/b.git", "github.com/a/b"):
        assert judge("ImageBuild", b"", f"remote={url}") == (
            403,
            "building from a URL (remote=) is not allowed",
        )
        assert judge("ImageBuild", b"", f"remote={url}", Guardrails(fetch_urls=True)) is None


def test_service_rollback_is_refused() -> None:
    """Failed on the old code: `rollback=previous` deployed the unjudged PreviousSpec."""
    body = {"TaskTemplate": {"ContainerSpec": {"Image": "x"}}}
    assert judge("ServiceUpdate", body, "version=3&rollback=previous")[0] == 403
    assert judge("ServiceUpdate", body, "version=3&rollback=") is None


def test_commit_changes_and_body() -> None:
    assert change_problem("ENV A=1") is None
    assert change_problem('  cmd ["sh"]') is None
    assert change_problem("RUN rm -rf /") == "the RUN instruction is not allowed in changes"
    assert change_problem("ENV A=1 \\") is not None
    assert change_problem("ENV A=1\nRUN x") is not None
    assert judge("ImageCommit", b"", "container=x&changes=ENV+A%3D1&changes=USER+1") is None
    assert judge("ImageCommit", b"", "container=x&changes=COPY+a+b")[0] == 403
    assert judge("ImageCommit", {"Env": ["A=1"], "Cmd": ["sh"]}, "container=x") is None
    assert judge("ImageCommit", {"Env": ["A=1"], "Foo": 1}, "container=x") == unknown("Foo")


def test_network_create_drivers_and_options() -> None:
    """Failed on the old code: NetworkCreate bodies were not read at all."""
    assert (
        judge(
            "NetworkCreate",
            {
                "Name": "n",
                "Driver": "bridge",
                "Options": {"com.docker.network.driver.mtu": "1400"},
                "IPAM": {"Driver": "default"},
            },
        )
        is None
    )
    assert judge("NetworkCreate", {"Name": "n"}) is None
    assert judge("NetworkCreate", {"Name": "n", "Driver": "macvlan"}) == (
        403,
        "network driver 'macvlan' is not allowed",
    )
    assert judge("NetworkCreate", {"Name": "n", "driver": "bridge", "DRIVER": "ipvlan"})[0] == 403
    bridge_name = {"Name": "n", "Options": {"com.docker.network.bridge.name": "docker0"}}
    assert judge("NetworkCreate", bridge_name) == (
        403,
        "network option 'com.docker.network.bridge.name' is not allowed",
    )
    trusted = Guardrails(network_drivers=frozenset({"macvlan", "bridge"}))
    assert (
        judge(
            "NetworkCreate",
            {"Name": "n", "Driver": "macvlan", "Options": {"parent": "eth0"}},
            g=trusted,
        )
        is None
    )
    assert judge("NetworkCreate", bridge_name, g=trusted) is None
    assert judge("NetworkCreate", {"Name": "n", "ConfigFrom": {"Network": "cfg"}}) == not_allowed(
        "ConfigFrom.Network"
    )
    assert judge("NetworkCreate", {"Name": "n", "IPAM": {"Driver": "plugin"}}) == not_allowed(
        "IPAM.Driver"
    )
    assert judge(
        "NetworkConnect", {"Container": "x", "EndpointConfig": {"DriverOpts": {"a": "b"}}}
    ) == not_allowed("EndpointConfig.DriverOpts[a]")


def test_operation_sets_follow_the_table() -> None:
    assert BODY_CHECKED - {"ContainerStart"} <= set(BODIES)
    assert set(QUERIES) == BODY_CHECKED | QUERY_CHECKED


def test_the_walk_is_cheap() -> None:
    """A docker-run-sized create body is walked in well under the 100 us budget of the whole
    check (bench/body_cost.py measures the whole)."""
    body = json.dumps(
        {
            **CREATE,
            "Env": ["A=1"] * 20,
            "Labels": {f"l{i}": "v" for i in range(20)},
            "HostConfig": {
                **{k: None for k in ("Binds", "Dns", "Links", "CapAdd")},
                "Memory": 1,
                "LogConfig": {"Type": "", "Config": {}},
                "RestartPolicy": {"Name": "no"},
            },
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {}}},
        }
    ).encode()
    parsed = parse(body)
    fields.check_body("ContainerCreate", parsed)
    start = time.perf_counter()
    for _ in range(1000):
        fields.check_body("ContainerCreate", parsed)
    per_call = (time.perf_counter() - start) / 1000
    assert per_call < 50e-6, per_call
