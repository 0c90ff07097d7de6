"""Pure parts of issue 11's ownership fixes: lists given twice (body/repeated.py), names judged
as the daemon stores them, pinned bodies read back as Go reads them, owners by method."""

from __future__ import annotations

import json

import pytest

from dockgate.api.routes import OPERATIONS
from dockgate.auth.identity import (
    ANONYMOUS_IDENTITY,
    BASIC,
    CERTIFICATE,
    NO_AUTH_IDENTITY,
    TOKEN,
    Identity,
)
from dockgate.body import gojson
from dockgate.body.repeated import repeated_list
from dockgate.ownership.operations import OWNED_CREATES, concerns_objects, hex_name_problem
from dockgate.ownership.owners import identity_key, owner_for
from dockgate.ownership.pinning import parse_link, pinned_body
from dockgate.policy.loader import PolicyError, parse_policy_text


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"A":[1],"b":[2]}', None),
        (b'{"Mounts":[1],"Mounts":[2]}', "Mounts"),
        # Go folds keys (case, the long s, the Kelvin sign): one field for the daemon.
        (b'{"Mounts":[1],"mounts":[2]}', "mounts"),
        (b'{"Secrets":[1],"\\u017fecrets":[2]}', "\u017fecrets"),
        # Two objects for one struct field merge: their lists are one field's.
        (
            b'{"TaskTemplate":{"ContainerSpec":{"Secrets":[{}]}},'
            b'"TaskTemplate":{"ContainerSpec":{"Secrets":[{}]}}}',
            "TaskTemplate.ContainerSpec.Secrets",
        ),
        (
            b'{"HostConfig":{"Links":["a"]},"hostconfig":{"links":["b"]}}',
            "hostconfig.links",
        ),
        # Inside a list's elements too.
        (b'{"Mounts":[{"X":[1],"X":[2]}]}', "Mounts[0].X"),
        (b'{"A":[[{"B":[1],"b":[]}]]}', "A[0][0].b"),
        # A list and something else (null, a string) is not two lists.
        (b'{"Mounts":[1],"Mounts":null}', None),
        (b'{"Env":"a","Env":["b"]}', None),
        # Keys that can name no field are grouped together: refused, to be safe.
        (b'{"\\u00e9":[1],"\\u00c9":[2]}', "\u00c9"),
    ],
)
def test_repeated_lists(body: bytes, found: str | None) -> None:
    assert repeated_list(body) == found


def test_repeated_list_needs_json() -> None:
    with pytest.raises(ValueError):
        repeated_list(b"{")


@pytest.mark.parametrize(
    ("operation", "query", "body", "refused"),
    [
        ("ContainerCreate", "name=abc123", b"", True),
        ("ContainerCreate", "name=%2Fabc123", b"", True),  # the daemon strips one `/`
        ("ContainerCreate", "name=/ABC123", b"", True),
        ("ContainerCreate", "name=//abc123", b"", False),  # an invalid name: the daemon's 400
        ("ContainerCreate", "name=/web", b"", False),
        ("ContainerRename", "name=/deadbeef", b"", True),
        ("NetworkCreate", "", b'{"Name":"/abc"}', False),  # networks keep the name as given
        ("NetworkCreate", "", b'{"Name":"abc"}', True),
        ("ServiceCreate", "", b'{"name":"cafe"}', True),
    ],
)
def test_hex_names_as_the_daemon_stores_them(
    operation: str, query: str, body: bytes, refused: bool
) -> None:
    assert (hex_name_problem(operation, query, body) is not None) is refused


IDENTITIES = {
    "user:alice": Identity("alice", BASIC),
    "token:alice": Identity("alice", TOKEN, "alice-laptop"),
    "cert:alice": Identity("alice", CERTIFICATE, "CN=alice"),
}


def test_owners_are_named_by_method() -> None:
    for key, identity in IDENTITIES.items():
        assert identity_key(identity) == key
        assert owner_for(identity, {}) == key
    assert owner_for(ANONYMOUS_IDENTITY, {}) is None
    assert owner_for(NO_AUTH_IDENTITY, {}) is None
    mapped = {"user:alice": "alice", "anonymous": "pool"}
    assert owner_for(IDENTITIES["user:alice"], mapped) == "alice"
    assert owner_for(IDENTITIES["cert:alice"], mapped) == "cert:alice"
    assert owner_for(ANONYMOUS_IDENTITY, mapped) == "pool"
    assert owner_for(NO_AUTH_IDENTITY, mapped) == "pool"


POLICY = """\
owners:
{owners}
policies:
  p:
    ownership: {ownership}
    rules: [{{allow: {{sections: [containers]}}}}]
"""


def test_owners_mapping_loads() -> None:
    text = "  alice: [user:alice, certificate:alice, token:alice]\n  pool: [anonymous]"
    policies = parse_policy_text(POLICY.format(owners=text, ownership="true"), "p.yaml")
    assert policies.owners == {
        "user:alice": "alice",
        "cert:alice": "alice",
        "token:alice": "alice",
        "anonymous": "pool",
    }


@pytest.mark.parametrize(
    ("owners", "ownership", "line", "problem"),
    [
        ("  user:bob: [user:alice]", "true", 2, "no ':'"),
        ("  alice: [alice]", "true", 2, "write user:NAME"),
        ("  alice: [group:x]", "true", 2, "write user:NAME"),
        ("  alice: ['user:']", "true", 2, "write user:NAME"),
        ("  alice: []", "true", 2, "lists no identity"),
        ("  a: [user:x]\n  b: [user:x]", "true", 3, "already owner 'a'"),
        ("  a: [user:x]", "false", 1, "no policy has it"),
    ],
)
def test_owners_mapping_errors_name_the_line(
    owners: str, ownership: str, line: int, problem: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(POLICY.format(owners=owners, ownership=ownership), "p.yaml")
    assert problem in str(caught.value)
    assert f"p.yaml:{line}" in str(caught.value), str(caught.value)


# ----- pinned bodies, read back as Go reads them -------------------------------------------

ID = {name: name[0].upper() * 64 for name in ("web", "db", "cache", "net", "other")}
PINS = {
    ("container", "web"): ID["web"],
    ("container", "db"): ID["db"],
    ("container", "cache"): ID["cache"],
    ("network", "net"): ID["net"],
    ("network", "other"): ID["other"],
}


def _read(body: bytes) -> gojson.GoObject:
    top = gojson.parse(body, strict_end=True)
    assert isinstance(top, gojson.GoObject)
    return top


@pytest.mark.parametrize("legacy", [False, True])
def test_container_references_are_pinned_where_the_daemon_reads_them(legacy: bool) -> None:
    host = {
        "NetworkMode": "container:web",
        "PidMode": "container:web",
        "IpcMode": "shareable",
        "VolumesFrom": ["db:ro", "web"],
        "Links": ["/cache:/me/c", "db", "web:w"],
        "Memory": 1.5e9,
    }
    body = {"Image": "x", **host} if legacy else {"Image": "x", "HostConfig": host}
    pinned = _read(pinned_body("ContainerCreate", json.dumps(body).encode(), PINS))
    one = (pinned,)
    inner = gojson.struct(one, "HostConfig", pointer=True)
    assert bool(inner) is not legacy  # the top-level form stays the top-level form
    read = inner or one
    assert gojson.scalar(read, "NetworkMode") == f"container:{ID['web']}"
    assert gojson.scalar(read, "PidMode") == f"container:{ID['web']}"
    assert gojson.scalar(read, "IpcMode") == "shareable"
    assert gojson.slice_(read, "VolumesFrom") == [f"{ID['db']}:ro", ID["web"]]
    assert gojson.slice_(read, "Links") == [f"{ID['cache']}:c", f"{ID['db']}:db", f"{ID['web']}:w"]
    assert gojson.scalar(read, "Memory") == 1.5e9
    assert gojson.scalar(one, "Image") == "x"


def test_networks_are_pinned_by_network_id() -> None:
    body = {
        "Image": "x",
        "HostConfig": {"NetworkMode": "net"},
        "NetworkingConfig": {"EndpointsConfig": {"net": {"Aliases": ["a"], "NetworkID": ""}}},
    }
    pinned = _read(pinned_body("ContainerCreate", json.dumps(body).encode(), PINS))
    host = gojson.struct((pinned,), "HostConfig", pointer=True)
    assert gojson.scalar(host, "NetworkMode") == ID["net"]
    networking = gojson.struct((pinned,), "NetworkingConfig", pointer=True)
    endpoints = gojson.mapping(networking, "EndpointsConfig")
    assert endpoints is not None and list(endpoints) == ["net"]
    settings = endpoints["net"]
    assert isinstance(settings, gojson.GoObject)
    assert gojson.scalar((settings,), "NetworkID") == ID["net"]
    assert gojson.slice_((settings,), "Aliases") == ["a"]
    # A network mode without an endpoint of its own gets one, keyed by the ID.
    body = {"Image": "x", "NetworkMode": "net"}
    pinned = _read(pinned_body("ContainerCreate", json.dumps(body).encode(), PINS))
    assert gojson.scalar((pinned,), "NetworkMode") == ID["net"]
    endpoints = gojson.mapping(
        gojson.struct((pinned,), "NetworkingConfig", pointer=True), "EndpointsConfig"
    )
    assert endpoints is not None and list(endpoints) == [ID["net"]]
    # An endpoint's NetworkID is what the daemon uses: that is what is pinned.
    body = {"Image": "x", "NetworkingConfig": {"EndpointsConfig": {"net": {"NetworkID": "other"}}}}
    pinned = _read(pinned_body("ContainerCreate", json.dumps(body).encode(), PINS))
    endpoints = gojson.mapping(
        gojson.struct((pinned,), "NetworkingConfig", pointer=True), "EndpointsConfig"
    )
    assert endpoints is not None
    assert gojson.scalar((endpoints["net"],), "NetworkID") == ID["other"]  # type: ignore[arg-type]


def test_network_connect_and_service_networks_are_pinned() -> None:
    body = b'{"container":"web","EndpointConfig":{"NetworkID":"net","Aliases":["a"]}}'
    pinned = _read(pinned_body("NetworkConnect", body, PINS))
    assert gojson.scalar((pinned,), "Container") == ID["web"]
    endpoint = gojson.struct((pinned,), "EndpointConfig", pointer=True)
    assert gojson.scalar(endpoint, "NetworkID") == ID["net"]
    assert gojson.slice_(endpoint, "Aliases") == ["a"]
    body = json.dumps(
        {
            "Name": "s",
            "TaskTemplate": {
                "ContainerSpec": {"Image": "x"},
                "Networks": [{"Target": "net", "Aliases": ["n"]}, {"Target": "ingress"}],
            },
        }
    ).encode()
    pinned = _read(pinned_body("ServiceCreate", body, PINS))
    task = gojson.struct((pinned,), "TaskTemplate", pointer=False)
    # Go decodes the appended list into the client's: element by element, the last Target.
    elements = [v for v in gojson.values(task, "Networks") if isinstance(v, list)]
    merged = [
        [e for e in column if isinstance(e, gojson.GoObject)]
        for column in zip(*elements, strict=True)
    ]
    assert [gojson.scalar(m, "Target") for m in merged] == [ID["net"], "ingress"]
    assert gojson.slice_(merged[0], "Aliases") == ["n"]


def test_nothing_to_pin_leaves_the_body() -> None:
    body = b'{"Image":"x","HostConfig":{"Binds":["v:/v"]}}'
    assert pinned_body("ContainerCreate", body, {}) == body
    assert pinned_body("ContainerCreate", body, PINS) == body


@pytest.mark.parametrize(
    ("link", "parsed"),
    [
        ("db", ("db", "db")),
        ("db:alias", ("db", "alias")),
        ("/db:/app/alias", ("db", "alias")),
        ("/db", ("/db", "/db")),
        ("a:b:c", None),
        ("", None),
    ],
)
def test_links_parse_as_moby_does(link: str, parsed: tuple[str, str] | None) -> None:
    assert parse_link(link) == parsed


def test_what_an_anonymous_caller_may_not_do() -> None:
    """Every operation ownership labels, narrows or looks up concerns objects (an anonymous
    caller is refused it); requests about no object do not."""
    concerned = {name for name, op in OPERATIONS.items() if concerns_objects(name, op.path)}
    assert concerned >= OWNED_CREATES
    assert {"ContainerList", "ContainerInspect", "ContainerDelete", "NetworkConnect"} <= concerned
    assert {"ImageBuild", "ImageCommit", "SystemDataUsage", "SystemEvents"} <= concerned
    assert not {"SystemPing", "SystemVersion", "SystemInfo", "ImageList"} & concerned
