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

import dataclasses
import functools
import http.client
import http.server
import io
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import docker
import pytest
import yaml

from dockgate.api.routes import _TABLE
from dockgate.body import fields
from dockgate.body.fields import BODIES, QUERIES, Leaf, ListOf, MapOf, Node, Obj
from dockgate.body.guardrails import (
    BODY_CHECKED,
    QUERY_CHECKED,
    BodyRefused,
    Guardrails,
    HostPathRule,
    change_problem,
    check_request,
)
from dockgate.policy.loader import PolicyError, parse_policy_text
from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.paths import TEST_POLICIES

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


def spec_operations(
    version: str, *, writes_only: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    for item in load_spec(version)["paths"].values():
        for op in item.values():
            if isinstance(op, dict) and (not writes_only or op.get("operationId") in WRITES):
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
    assert set(QUERIES) >= WRITES, sorted(WRITES - set(QUERIES))


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
        for path, marked in legacy_paths(node, "", bool(node.source)):
            if not marked and path.lower() not in known:
                stale.append(f"{operation} {path}")
    for operation, table in QUERIES.items():
        params: set[str] = set()
        for version in VERSIONS:
            # A read whose query is judged (ImageSearch's term) is in the table too.
            for op_id, op in spec_operations(version, writes_only=False):
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


JUDGES = {
    # workload.py readers, by the guardrail (Guardrails field or check) that decides
    "privileged",
    "capabilities",
    "devices",
    "host_paths",
    "namespaces",
    "security_overrides",
    "sysctls",
    "runtimes",
    "images",
    "labels",
    "resources",
    "exec_user",
    "volume_drivers",
    # guardrails.py's own checks
    "network_drivers",
    "network_subnets",
    "host_ports",
    "fetch_urls",
    "image_changes",
    "swarm",
    "plugin_privileges",
}


def test_every_judged_entry_names_a_guardrail_that_judges_it() -> None:
    """A typo in a guardrail name would leave a field "judged" by nothing."""
    named = {leaf.guardrail for table in QUERIES.values() for leaf in table.values()}
    for node in BODIES.values():
        named |= {
            n.guardrail for _, n in [("", node), *fields.iter_table(node)] if isinstance(n, Leaf)
        }
    assert named - {""} <= JUDGES, named - JUDGES
    attributes = set(Guardrails.__dataclass_fields__)
    assert {
        "privileged",
        "capabilities",
        "devices",
        "host_paths",
        "namespaces",
        "security_overrides",
        "sysctls",
        "runtimes",
        "images",
        "volume_drivers",
        "network_drivers",
        "fetch_urls",
        "swarm",
        "plugin_privileges",
    } <= attributes


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
    except BodyRefused as refusal:
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


def test_bind_options_that_loosen_a_bind_are_refused() -> None:
    """Shared propagation and non-recursive read-only binds: not judged by `host_paths`, so
    refused (failed on the old code, which did not read BindOptions)."""
    mount = {"Type": "bind", "Source": "/srv", "Target": "/s", "ReadOnly": True}
    g = Guardrails(host_paths=(HostPathRule("/srv", True),))

    def create(options: dict[str, Any]) -> Any:
        body = {**CREATE, "HostConfig": {"Mounts": [{**mount, "BindOptions": options}]}}
        return judge("ContainerCreate", body, g=g)

    assert create({}) is None
    assert create({"Propagation": "rslave"}) is None
    assert create({"Propagation": "rshared"}) == not_allowed(
        "HostConfig.Mounts[0].BindOptions.Propagation"
    )
    assert create({"ReadOnlyNonRecursive": True}) == not_allowed(
        "HostConfig.Mounts[0].BindOptions.ReadOnlyNonRecursive"
    )


def test_a_list_of_objects_in_a_struct_given_twice_is_refused() -> None:
    """`"HostConfig"` given twice: Go decodes the second object into the first one's struct,
    so `Ulimits` in each is a list given twice (its elements merge)."""
    body = (
        b'{"Image": "busybox", "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 1}]}, '
        b'"hostConfig": {"Ulimits": [{"Hard": 2}]}}'
    )
    assert judge("ContainerCreate", body) == (
        400,
        "field HostConfig.Ulimits is given more than once",
    )
    ports = (
        b'{"TaskTemplate": {"ContainerSpec": {"Image": "x"}}, '
        b'"EndpointSpec": {"Ports": [{"TargetPort": 80}]}, '
        b'"EndpointSpec": {"Ports": [{"PublishedPort": 8080}]}}'
    )
    assert judge("ServiceCreate", ports) == (
        400,
        "field EndpointSpec.Ports is given more than once",
    )
    # The same struct twice, each with other fields, merges harmlessly.
    merged = b'{"Image": "busybox", "HostConfig": {"Memory": 1}, "HostConfig": {"ShmSize": 2}}'
    assert judge("ContainerCreate", merged) is None


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


def policy_guardrails(guardrails_yaml: str) -> Guardrails | None:
    text = "policies:\n  ci:\n    rules:\n      - allow: {sections: ['*']}\n    guardrails:\n"
    text += textwrap.indent(textwrap.dedent(guardrails_yaml).strip("\n"), "      ") + "\n"
    return parse_policy_text(text, "p.yaml").policies["ci"].guardrails


def test_the_loader_reads_the_new_guardrails() -> None:
    """`fetch_urls` (with `image_import_urls` as its older name) and `network_drivers`."""
    assert policy_guardrails("fetch_urls: true") == Guardrails(fetch_urls=True)
    assert policy_guardrails("image_import_urls: true") == Guardrails(fetch_urls=True)
    assert policy_guardrails("image_import_urls: true\nfetch_urls: true") == Guardrails(
        fetch_urls=True
    )
    assert policy_guardrails("privileged: false") == Guardrails()
    with pytest.raises(PolicyError, match="older name of fetch_urls"):
        policy_guardrails("image_import_urls: true\nfetch_urls: false")
    assert policy_guardrails("network_drivers: [macvlan, ipvlan]") == Guardrails(
        network_drivers=frozenset({"macvlan", "ipvlan"})
    )
    with pytest.raises(PolicyError, match="network driver name is required"):
        policy_guardrails("network_drivers: ['']")


# ----- real clients and the open guardrails, against the session's dockerd ---------------------

POLICIES = TEST_POLICIES
GUARDED_POLICY = POLICIES / "guardrails-defaults.yaml"  # policy `guarded`: the safe defaults
IMAGE = "dockgate-test/busybox:latest"
IO_TIMEOUT = 30.0


@dataclasses.dataclass
class Through:
    """The gateway with the default guardrails, and the daemon behind it."""

    gateway: Gateway
    daemon: PrivateDaemon
    env: dict[str, str]

    def docker(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """The docker CLI through the gateway; fails the test unless it exits 0."""
        proc = subprocess.run(
            [shutil.which("docker") or "docker", *args],
            env=self.env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.returncode}\n{out}\n{err}"
        return subprocess.CompletedProcess(proc.args, 0, out, err)

    def request(
        self, method: str, target: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """One request through the gateway: (status, JSON answer or raw bytes)."""
        port = int(self.gateway.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
        return _exchange(conn, method, target, body, headers)

    def direct(self, method: str, target: str, body: Any = None) -> tuple[int, Any]:
        """The same request straight to the daemon's socket (not through dockgate)."""
        conn = _UnixConnection(str(self.daemon.socket_path))
        return _exchange(conn, method, target, body, None)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("docker", timeout=IO_TIMEOUT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(self._path)
        self.sock = sock


def _exchange(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    body: Any,
    headers: dict[str, str] | None,
) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if raw is not None else {}
    try:
        conn.request(method, target, body=raw, headers=sent | (headers or {}))
        answer = conn.getresponse()
        data = answer.read()
    finally:
        conn.close()
    try:
        return answer.status, json.loads(data) if data else None
    except ValueError:
        return answer.status, data


def denied(reason: str, operation: str) -> dict[str, str]:
    return {"message": f"dockgate: {operation} denied by policy guarded: {reason}"}


def state(daemon: PrivateDaemon) -> dict[str, Any]:
    """What a refused request would have changed on the daemon."""
    lines = {}
    for kind, fmt in (
        ("ps", "{{.ID}} {{.Names}}"),
        ("images", "{{.ID}} {{.Repository}}:{{.Tag}}"),
        ("volume", "{{.Name}}"),
        ("network", "{{.ID}} {{.Name}} {{.Driver}}"),
    ):
        args = ("ps", "-a") if kind == "ps" else (kind, "ls") if kind != "images" else ("images",)
        out = daemon.docker(*args, "--format", fmt).stdout.decode()
        lines[kind] = sorted(out.splitlines())
    return lines


@pytest.fixture(scope="module")
def through(daemon: PrivateDaemon, busybox_image: str) -> Iterator[Through]:
    assert busybox_image == IMAGE
    with (
        running(Gateway(daemon.host, policy=GUARDED_POLICY), "the guarded gateway") as gw,
        tempfile.TemporaryDirectory(prefix="dgt-fields-") as config,
    ):
        pathlib.Path(config, "config.json").write_text("{}")
        base = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env = base | {
            "DOCKER_HOST": gw.url,
            "DOCKER_CONFIG": config,
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CLI_HINTS": "false",
        }
        yield Through(gw, daemon, env)


def name(prefix: str) -> str:
    return f"dgt-{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.daemon
@pytest.mark.timeout(240)
def test_the_docker_cli_and_docker_py_still_work_through_the_allowlist(
    through: Through, cleanup: Cleanup, tmp_path: pathlib.Path
) -> None:
    """`docker run` with common flags, docker-py's `containers.run`, `docker network create`,
    `connect` and `disconnect`, `docker volume create`, `docker build` (classic builder, with
    build args, labels and a memory limit), `docker commit --change` and `docker exec` all
    work through the default guardrails: the allowlist knows what ordinary clients send."""
    volume = cleanup.volume(name("vol"))
    through.docker("volume", "create", "--label", "team=ci", volume)
    network = cleanup.network(name("net"))
    through.docker(
        "network",
        "create",
        "--driver",
        "bridge",
        "--label",
        "a=b",
        # No --subnet: explicit subnets need network_subnets (the daemon's pools need nothing).
        "--opt",
        "com.docker.network.driver.mtu=1400",
        network,
    )
    ctr = cleanup.container(name("run"))
    run = through.docker(
        "run",
        "--name",
        ctr,
        "-e",
        "A=1",
        "--label",
        "x=y",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "-w",
        "/tmp",
        "--user",
        "1000:1000",
        "--hostname",
        "h",
        "--add-host",
        "a.example:10.0.0.1",
        "--dns",
        "10.0.0.53",
        "--tmpfs",
        "/scratch",
        "--cap-drop",
        "ALL",
        "--read-only",
        "--restart",
        "no",
        "--log-opt",
        "max-size=1m",
        "--ulimit",
        "nofile=100:200",
        "--pids-limit",
        "50",
        "--shm-size",
        "8m",
        "-p",
        "127.0.0.1::80",
        "--network",
        network,
        "--network-alias",
        "svc",
        "-v",
        f"{volume}:/data",
        "--mount",
        "type=tmpfs,destination=/t,tmpfs-size=1m",
        "--health-cmd",
        "true",
        "--stop-signal",
        "SIGTERM",
        "--stop-timeout",
        "5",
        IMAGE,
        "sh",
        "-c",
        "echo $A; id -u; hostname",
    )
    assert run.stdout.split() == ["1", "1000", "h"], run.stdout
    through.docker("network", "disconnect", network, ctr)
    through.docker("network", "connect", "--alias", "again", network, ctr)

    keeper = cleanup.container(name("keep"))
    through.docker("run", "-d", "--name", keeper, IMAGE, "sleep", "60")
    assert through.docker("exec", "-e", "B=2", keeper, "sh", "-c", "echo $B").stdout == "2\n"
    image = cleanup.image(name("commit").replace("-", "") + ":v1")
    through.docker(
        "commit",
        "--change",
        "ENV C=3",
        "--change",
        'CMD ["sh"]',
        "-m",
        "msg",
        "-a",
        "me",
        keeper,
        image,
    )
    out = through.docker("run", "--rm", image, "sh", "-c", "echo $C").stdout
    assert out == "3\n"

    (tmp_path / "Dockerfile").write_text(f"FROM {IMAGE}\nARG X\nRUN echo $X > /x\nLABEL l=1\n")
    built = cleanup.image(name("build").replace("-", "") + ":v1")
    through.docker(
        "build",
        "-q",
        "--build-arg",
        "X=built",
        "--label",
        "k=v",
        "--memory",
        "128m",
        "--network",
        "default",
        "--add-host",
        "b.example:10.0.0.2",
        "-t",
        built,
        str(tmp_path),
    )
    assert through.docker("run", "--rm", built, "cat", "/x").stdout == "built\n"

    port = int(through.gateway.url.rsplit(":", 1)[1])
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="auto")
    try:
        out_bytes = client.containers.run(
            IMAGE,
            ["sh", "-c", "echo $D"],
            environment={"D": "4"},
            labels={"l": "v"},
            mem_limit="64m",
            remove=True,
            network=network,
            volumes={volume: {"bind": "/v"}},
        )
        assert out_bytes == b"4\n"
        made = client.networks.create(name("pynet"), driver="bridge", labels={"a": "b"})
        cleanup.network(made.name)
        made.remove()
        vol = client.volumes.create(name("pyvol"), labels={"a": "b"})
        cleanup.volume(vol.name)
    finally:
        client.close()


@pytest.mark.daemon
def test_an_unknown_create_field_is_refused_and_nothing_is_created(through: Through) -> None:
    """A v1.56 field the 20.10 daemon does not know (HostConfig.Annotations, which newer
    daemons hand to the runtime), a made-up one, and a made-up query parameter, each with a
    value: 403 naming it, and the daemon has nothing new. Failed on the old code: all went
    through, and the containers were made."""
    before = state(through.daemon)
    for field_name, body in (
        ("HostConfig.Annotations[run.oci.x]", {"HostConfig": {"Annotations": {"run.oci.x": "1"}}}),
        ("HostConfig.Frobnicate", {"HostConfig": {"Frobnicate": True}}),
    ):
        wanted = "is not allowed" if "Annotations" in field_name else "is not known to dockgate"
        status, answer = through.request(
            "POST", f"/v1.41/containers/create?name={name('unknown')}", {"Image": IMAGE, **body}
        )
        assert (status, answer) == (403, denied(f"field {field_name} {wanted}", "ContainerCreate"))
    status, answer = through.request(
        "POST", f"/v1.41/containers/create?name={name('unknown')}&frob=1", {"Image": IMAGE}
    )
    assert (status, answer) == (
        403,
        denied("query parameter 'frob' is not known to dockgate", "ContainerCreate"),
    )
    assert state(through.daemon) == before


@pytest.fixture
def host_bridge() -> Iterator[str]:
    """A bridge of the host's own (the stand-in for one holding the host's uplink)."""
    bridge = f"dgtbr{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        yield bridge
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)


@pytest.mark.daemon
def test_host_attached_networks_are_refused(
    through: Through, cleanup: Cleanup, host_bridge: str
) -> None:
    """Straight to the daemon, a bridge network naming a bridge of the host
    (`com.docker.network.bridge.name`) puts its containers on that bridge (the daemon takes the
    existing bridge: not vacuous). Through dockgate's defaults that, `macvlan` and `ipvlan`
    (which attach to a host interface) and `ConfigFrom` are refused, and nothing is created.
    Failed on the old code: NetworkCreate bodies were not read."""
    direct = cleanup.network(name("hostbr-direct"))
    option = {"com.docker.network.bridge.name": host_bridge}
    status, answer = through.direct(
        "POST", "/networks/create", {"Name": direct, "Driver": "bridge", "Options": option}
    )
    assert status == 201, answer
    ctr = cleanup.container(name("on-host-bridge"))
    through.daemon.docker("run", "-d", "--name", ctr, "--network", direct, IMAGE, "sleep", "30")
    links = subprocess.run(
        ["ip", "-o", "link", "show", "master", host_bridge],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "veth" in links, links  # the container's interface is on the host's bridge
    through.daemon.docker("rm", "-f", ctr)
    through.daemon.docker("network", "rm", direct)

    before = state(through.daemon)
    for body, reason in (
        (
            {"Driver": "bridge", "Options": option},
            "network option 'com.docker.network.bridge.name' is not allowed",
        ),
        ({"Options": option}, "network option 'com.docker.network.bridge.name' is not allowed"),
        ({"Driver": "macvlan", "Internal": True}, "network driver 'macvlan' is not allowed"),
        (
            {"Driver": "ipvlan", "Options": {"parent": "lo"}},
            "network driver 'ipvlan' is not allowed",
        ),
        ({"ConfigFrom": {"Network": "x"}}, "field ConfigFrom.Network is not allowed"),
        ({"ConfigOnly": True}, "field ConfigOnly is not allowed"),
    ):
        refused = cleanup.network(name("refused"))
        status, answer = through.request("POST", "/networks/create", {"Name": refused, **body})
        assert (status, answer) == (403, denied(reason, "NetworkCreate"))
    assert state(through.daemon) == before
    assert (
        "veth"
        not in subprocess.run(
            ["ip", "-o", "link", "show", "master", host_bridge],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Recorder.seen.append(self.path)
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            data = f"FROM {IMAGE}\n".encode()
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        payload = context.getvalue()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-tar")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[str]:
    """An HTTP server on the host's loopback that records what it is asked for."""
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.daemon
def test_build_from_a_loopback_url_is_not_fetched(
    through: Through, loopback_server: str, cleanup: Cleanup
) -> None:
    """`POST /build?remote=URL`: straight to the daemon, the daemon fetches the URL from the
    host's loopback (the server sees the request); through dockgate's defaults: 403 and the
    server sees nothing. Failed on the old code (finding 8: any URL was fetched)."""
    tag = cleanup.image(name("remote").replace("-", "") + ":v1")
    status, _ = through.direct("POST", f"/build?remote={loopback_server}/direct.tar&t={tag}")
    assert status == 200
    assert _Recorder.seen == ["/direct.tar"]  # not vacuous: the daemon fetched it
    _Recorder.seen.clear()
    status, answer = through.request(
        "POST",
        f"/v1.41/build?remote={loopback_server}/gateway.tar",
        b"",
        {"Content-Type": "application/x-tar"},
    )
    assert (status, answer) == (
        403,
        denied("building from a URL (remote=) is not allowed", "ImageBuild"),
    )
    time.sleep(0.5)
    assert _Recorder.seen == []


@pytest.mark.daemon
def test_commit_bodies_are_judged(through: Through, cleanup: Cleanup) -> None:
    """`POST /commit` is body-checked: a config with a field dockgate does not know, or a
    change that is not a config instruction, is refused and no image is made; a plain config
    commits. Failed on the old code (the commit body and changes were not read)."""
    keeper = cleanup.container(name("commit-src"))
    through.daemon.docker("run", "-d", "--name", keeper, IMAGE, "sleep", "60")
    before = state(through.daemon)
    repo = name("commit").replace("-", "")
    status, answer = through.request(
        "POST", f"/v1.41/commit?container={keeper}&repo={repo}", {"Env": ["A=1"], "Bogus": 1}
    )
    assert (status, answer) == (403, denied("field Bogus is not known to dockgate", "ImageCommit"))
    status, answer = through.request(
        "POST", f"/v1.41/commit?container={keeper}&repo={repo}&changes=COPY+%2F+%2Fx", {}
    )
    assert (status, answer) == (
        403,
        denied("the COPY instruction is not allowed in changes", "ImageCommit"),
    )
    assert state(through.daemon) == before
    cleanup.image(f"{repo}:latest")
    status, answer = through.request(
        "POST", f"/v1.41/commit?container={keeper}&repo={repo}", {"Env": ["A=1"]}
    )
    assert status == 201, answer
    env = json.loads(through.daemon.docker("image", "inspect", repo).stdout)[0]["Config"]["Env"]
    assert "A=1" in env


@pytest.fixture(scope="module")
def swarm(through: Through) -> Iterator[None]:
    """The daemon as a single-node swarm (made directly, not through the gateway)."""
    through.daemon.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        through.daemon.docker("swarm", "leave", "--force", check=False, timeout=60)


@pytest.mark.daemon
@pytest.mark.timeout(180)
def test_service_create_works_and_rollback_is_refused(through: Through, swarm: None) -> None:
    """`docker service create` with common flags works through the defaults. `rollback=previous`
    would deploy the service's PreviousSpec, which the gateway never judged: refused, and the
    service keeps its spec; straight to the daemon the same request rolls it back (not
    vacuous). Failed on the old code (the query was not read)."""
    service = name("svc")
    try:
        through.docker(
            "service",
            "create",
            "--detach",
            "--name",
            service,
            "--env",
            "E=1",
            "--label",
            "a=b",
            "--limit-memory",
            "64m",
            "--replicas",
            "1",
            "--restart-condition",
            "none",
            "--mount",
            "type=tmpfs,destination=/t",
            "--update-parallelism",
            "1",
            IMAGE,
            "sleep",
            "30",
        )
        through.docker("service", "update", "--detach", "--env-add", "E=2", service)
        spec = json.loads(through.daemon.docker("service", "inspect", service).stdout)[0]
        env = spec["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
        assert env == ["E=2"]
        target = f"/v1.41/services/{spec['ID']}/update?version={spec['Version']['Index']}"
        status, answer = through.request("POST", target + "&rollback=previous", spec["Spec"])
        assert (status, answer) == (
            403,
            denied(
                "rollback= deploys the service's previous spec, which dockgate did not judge",
                "ServiceUpdate",
            ),
        )
        after = json.loads(through.daemon.docker("service", "inspect", service).stdout)[0]
        assert after["Version"] == spec["Version"]
        status, answer = through.direct("POST", target + "&rollback=previous", spec["Spec"])
        assert status == 200, answer
        rolled = json.loads(through.daemon.docker("service", "inspect", service).stdout)[0]
        assert rolled["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] == ["E=1"]
    finally:
        through.daemon.docker("service", "rm", service, check=False)
