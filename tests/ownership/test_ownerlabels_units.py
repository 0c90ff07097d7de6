"""Ownership's pure edges closed after the first attack review: owner labels a body carries
anywhere (ownership/labels.py), the duplicate check written into network creates, and the bound on
values pinning re-writes whole."""

from __future__ import annotations

import json

import pytest

from dockgate.body import gojson
from dockgate.ownership.labels import foreign_owner_label
from dockgate.ownership.operations import OWNER_LABEL, with_owner_label
from dockgate.ownership.pinning import MAX_REWRITTEN_DEPTH, pinned_body

ALICE = "user:alice"


def _mount(labels: dict[str, object]) -> dict[str, object]:
    return {"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {"Labels": labels}}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        # The finding: a container's mount makes a volume labelled as the mount says.
        (
            {"Image": "x", "HostConfig": {"Mounts": [_mount({OWNER_LABEL: "user:bob"})]}},
            "HostConfig.Mounts[0].VolumeOptions.Labels",
        ),
        # A service's mounts do the same on each node.
        (
            {
                "TaskTemplate": {
                    "ContainerSpec": {"Mounts": [_mount({}), _mount({OWNER_LABEL: "bob"})]}
                }
            },
            "TaskTemplate.ContainerSpec.Mounts[1].VolumeOptions.Labels",
        ),
        # The top-level labels (dockgate writes its own last; another's is refused too).
        ({"Name": "n", "Labels": {OWNER_LABEL: "user:bob"}}, "Labels"),
        # Any map, any depth, any key spelling Go decodes to the label (an escape).
        ({"Options": {"io.dockgate\\u002eowner": "user:bob"}}, "Options"),
        ({OWNER_LABEL: "user:bob"}, "the top level"),
        # Not a string: not the caller's own value either.
        ({"Labels": {OWNER_LABEL: None}}, "Labels"),
        ({"Labels": {OWNER_LABEL: 1}}, "Labels"),
        # Every duplicate is judged, whichever Go keeps.
        ('{"Labels":{"io.dockgate.owner":"user:bob","io.dockgate.owner":"user:alice"}}', "Labels"),
        ('{"Labels":{"io.dockgate.owner":"user:alice","io.dockgate.owner":"user:bob"}}', "Labels"),
    ],
)
def test_another_owners_label_is_found_wherever_it_is(body: object, where: str) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    raw = raw.replace("\\\\u002e", "\\u002e")  # json.dumps doubled the escape's backslash
    assert foreign_owner_label(raw.encode(), ALICE) == where


@pytest.mark.parametrize(
    "body",
    [
        {"Image": "x", "Labels": {"team": "a"}},
        # `docker service update` sends the whole spec back, the caller's own labels included.
        {
            "Name": "s",
            "Labels": {OWNER_LABEL: ALICE},
            "TaskTemplate": {
                "ContainerSpec": {
                    "Labels": {OWNER_LABEL: ALICE},
                    "Mounts": [_mount({OWNER_LABEL: ALICE})],
                }
            },
        },
        # Map keys are exact in Go: another case is another label (and dockgate reads the
        # exact one back).
        {"Labels": {OWNER_LABEL.upper(): "user:bob", "Io.dockgate.owner": "user:bob"}},
        # A value that merely mentions the label is a value.
        {"Env": [f"{OWNER_LABEL}=user:bob"], "Cmd": [OWNER_LABEL, "user:bob"]},
    ],
)
def test_the_callers_own_label_and_other_keys_pass(body: object) -> None:
    assert foreign_owner_label(json.dumps(body).encode(), ALICE) is None


def test_deep_bodies_are_walked_without_recursion() -> None:
    """As deep as the parser reads, the walk itself never raises (a loop, not recursion)."""
    depth = 900
    deep = b'{"a":' + b"[" * depth + b'{"%s":"bob"}' % OWNER_LABEL.encode() + b"]" * depth + b"}"
    assert foreign_owner_label(deep, ALICE) == "a" + "[0]" * depth
    with pytest.raises(ValueError, match="nested too deeply"):
        foreign_owner_label(b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", ALICE)
    with pytest.raises(ValueError):
        foreign_owner_label(b'{"a":1} {"b":2}', ALICE)


def test_network_creates_check_for_duplicate_names_whatever_the_body_says() -> None:
    """Failed before: `CheckDuplicate: false` reached the daemon, which then made a second
    network of a name another caller holds (and named its ID in the warning)."""
    for given in (b'{"Name":"n","CheckDuplicate":false}', b'{"Name":"n","checkduplicate":0}'):
        labelled = with_owner_label(given, "NetworkCreate", ALICE)
        top = gojson.parse(labelled, strict_end=True)
        assert isinstance(top, gojson.GoObject)
        assert gojson.scalar((top,), "CheckDuplicate") is True
    # Only networks: other creates' bodies are as before.
    assert b"CheckDuplicate" not in with_owner_label(b'{"Name":"v"}', "VolumeCreate", ALICE)


def test_pinning_refuses_values_too_deep_to_rewrite() -> None:
    """Failed before: a RecursionError (no answer at all); now a ValueError (a 400)."""
    net = "n1"
    pins = {("network", net): "f" * 64}

    def create(depth: int) -> bytes:
        junk = "[" * depth + "]" * depth
        return (
            f'{{"Image":"x","NetworkingConfig":{{"EndpointsConfig":{{"{net}":{{"Junk":{junk}}}}}}}}}'
        ).encode()

    shallow = pinned_body("ContainerCreate", create(MAX_REWRITTEN_DEPTH - 2), pins)
    assert b'"NetworkID":"' + b"f" * 64 in shallow
    for depth in (MAX_REWRITTEN_DEPTH + 1, 600):
        with pytest.raises(ValueError, match="nested deeper"):
            pinned_body("ContainerCreate", create(depth), pins)
