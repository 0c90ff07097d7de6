"""The bound on a checked body's cost (src/dockgate/body/bodycost.py), issue 11's second attack
review: a 1 MiB create of 33,000 small mounts cost ~0.2 s of event-loop CPU. These fail on the
old code, which parsed and judged any body up to 1 MiB."""

from __future__ import annotations

import json
import time

import pytest

from dockgate.body import gojson
from dockgate.body.bodycost import MAX_SEPARATORS, separators
from dockgate.body.guardrails import BodyRefused, Guardrails, check_request


def _create(host_config: str = "", top: str = "") -> bytes:
    return (
        '{"Image":"x"' + top + ',"HostConfig":{"SecurityOpt":["no-new-privileges"],'
        '"Memory":268435456,"NanoCpus":1000000000' + host_config + "}}"
    ).encode()


def _mounts(count: int) -> bytes:
    entries = ",".join(['{"Type":"tmpfs","Target":"/t"}'] * count)
    return _create(f',"Mounts":[{entries}]')


def _keys_and_entries(value: object) -> int:
    """What the bound stands for, counted on the parsed body."""
    if isinstance(value, gojson.GoObject):
        return sum(1 + _keys_and_entries(v) for _, v in value.pairs)
    if isinstance(value, list):
        return sum(1 + _keys_and_entries(v) for v in value)
    return 0


@pytest.mark.parametrize(
    "body",
    [
        _mounts(50),
        _create(',"Binds":[' + ",".join(f'"v{i}:/d:ro"' for i in range(200)) + "]"),
        _create(top=',"Labels":{' + ",".join(f'"l{i}":"a:b,c"' for i in range(100)) + "}"),
        _create(top=',"Cmd":[[],[[]],{"a":[1,2,{}]}]'),
        json.dumps(
            {"Env": [f"URL{i}=http://h:1/x" for i in range(30)], "A": {"B": [None]}}
        ).encode(),
    ],
)
def test_separators_bound_every_key_and_list_entry(body: bytes) -> None:
    # Depth 5 at most here: keys and entries <= 2 * separators + depth.
    assert 2 * separators(body) + 5 >= _keys_and_entries(gojson.parse(body))


def test_a_body_over_the_bound_is_refused_413_before_it_is_parsed() -> None:
    body = _mounts(33000)
    assert len(body) <= 1024 * 1024
    started = time.process_time()
    with pytest.raises(BodyRefused) as refused:
        check_request(Guardrails(), "ContainerCreate", "", body)
    assert refused.value.status == 413
    assert f"at most {MAX_SEPARATORS} are checked" in refused.value.reason
    # Counting is C-speed work: far under the ~0.2 s judging it cost (generous for load).
    assert time.process_time() - started < 0.05


def test_the_bound_is_exact_and_leaves_room_for_real_bodies() -> None:
    per_mount = separators(_mounts(2)) - separators(_mounts(1))
    fits = (MAX_SEPARATORS - separators(_mounts(0))) // per_mount
    check_request(Guardrails(), "ContainerCreate", "", _mounts(fits))  # judged, allowed
    with pytest.raises(BodyRefused) as refused:
        check_request(Guardrails(), "ContainerCreate", "", _mounts(fits + 1))
    assert refused.value.status == 413
    # A docker CLI `docker run` body has under 200; compose's a few hundred.
    assert MAX_SEPARATORS >= 10 * 1000
