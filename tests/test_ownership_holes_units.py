"""Pure parts of issue 11's ownership fixes: lists given twice (body/repeated.py), names judged
as the daemon stores them, pinned bodies read back as Go reads them, owners by method."""

from __future__ import annotations

import pytest

from dockgate.body.repeated import repeated_list
from dockgate.identity import (
    ANONYMOUS_IDENTITY,
    BASIC,
    CERTIFICATE,
    NO_AUTH_IDENTITY,
    TOKEN,
    Identity,
)
from dockgate.owners import identity_key, owner_for
from dockgate.ownership import hex_name_problem
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
