"""Pure parts of issue 11's ownership fixes: lists given twice (body/repeated.py), names judged
as the daemon stores them, pinned bodies read back as Go reads them, owners by method."""

from __future__ import annotations

import pytest

from dockgate.body.repeated import repeated_list
from dockgate.ownership import hex_name_problem


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
