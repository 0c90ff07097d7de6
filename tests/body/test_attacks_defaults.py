"""Attacks on `defaults:` put into creates (issue 16), against the real daemon.

A caller whose policy forces labels, limits and no-new-privileges tries to make a container
that runs without them: legacy API versions, the deprecated top-level HostConfig form, keys in
other cases, duplicates, nulls, "unlimited" spellings. What counts is what the daemon stored
(`docker inspect` on the daemon directly). Attacks that held are plain tests; findings are
`xfail(strict)` tests asserting what should happen.
"""

from __future__ import annotations

import http.client
import json
import os
import uuid
from collections.abc import Iterator

import pytest

from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway
from support.presetclients import preset_gateway

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's defaults",
    ),
]

MIB = 1024 * 1024
POLICY = """
policies:
  web:
    rules:
      - allow: {sections: ["*"]}
    defaults:
      labels: {com.example.team: web}
      force_labels: {com.example.managed: dockgate}
      memory: 64m
      cpus: 0.5
      pids: 64
      no_new_privileges: true
      log_driver: json-file
      log_options: {max-size: 1m}
"""


@pytest.fixture(scope="module")
def gated(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("attack-defaults")
    with preset_gateway(daemon, work, POLICY) as (gateway, _audit):
        yield gateway


def _post(gateway: Gateway, path: str, raw: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.request("POST", path, raw, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        conn.close()


def _stored(daemon: PrivateDaemon, name: str) -> tuple[dict[str, object], dict[str, object]]:
    """The container's Config and HostConfig as the daemon stored them."""
    found = json.loads(daemon.docker("container", "inspect", name).stdout)[0]
    return found["Config"], found["HostConfig"]


def _create(gateway: Gateway, cleanup: Cleanup, version: str, raw: str) -> tuple[int, str, str]:
    name = cleanup.container(f"dgt-atkdef-{uuid.uuid4().hex[:8]}")
    prefix = f"/v{version}" if version else ""
    status, text = _post(gateway, f"{prefix}/containers/create?name={name}", raw)
    return status, text, name


def _nnp_on(security_opt: object) -> bool:
    """Whether the daemon reads the stored SecurityOpt as no-new-privileges on (the last
    entry with that key wins; parseSecurityOpt)."""
    state = False
    for option in security_opt if isinstance(security_opt, list) else []:
        if option == "no-new-privileges":
            state = True
            continue
        for separator in ("=", ":"):
            if separator in option:
                key, _, value = option.partition(separator)
                if key == "no-new-privileges":
                    state = value in ("1", "t", "T", "TRUE", "true", "True")
                break
    return state


def _assert_defaulted(daemon: PrivateDaemon, name: str) -> None:
    config, host = _stored(daemon, name)
    labels = config.get("Labels") or {}
    assert isinstance(labels, dict)
    assert labels.get("com.example.managed") == "dockgate", labels
    assert host["Memory"] == 64 * MIB, host["Memory"]
    assert host["NanoCpus"] == 500_000_000 or (
        isinstance(host["CpuQuota"], int) and host["CpuQuota"] > 0
    ), (host["NanoCpus"], host["CpuQuota"], host["CpuPeriod"])
    assert host["CpuQuota"] in (0, None) or host["CpuQuota"] > 0, host["CpuQuota"]
    assert isinstance(host["PidsLimit"], int) and host["PidsLimit"] > 0, host["PidsLimit"]
    assert _nnp_on(host["SecurityOpt"]), host["SecurityOpt"]


# The daemon (20.10) serves API versions down to 1.12; older clients send the HostConfig
# fields at the top level of the create body.
VERSIONS = ["", "1.12", "1.18", "1.19", "1.23", "1.24", "1.25", "1.39", "1.40", "1.41"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "shape",
    [
        "plain",
        "top-level",
        "top-level-off",
        "inner-off",
        "both-off",
        "null-inner",
    ],
)
def test_every_api_version_and_body_shape_gets_the_defaults(  # noqa: PLR0917 - fixtures
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    gated: Gateway,
    version: str,
    shape: str,
) -> None:
    """Held: whatever the version prefix and wherever the caller puts its "no limit" values
    (the top-level form, an inner HostConfig, both, a null inner one), the daemon stores the
    forced label, the memory, CPU and PIDs limits and no-new-privileges."""
    off = (
        '"Memory": 0, "NanoCpus": 0, "CpuQuota": -1, "PidsLimit": -1, '
        '"SecurityOpt": ["no-new-privileges=false"]'
    )
    image = json.dumps(busybox_image)
    bodies = {
        "plain": f'{{"Image": {image}, "Cmd": ["true"]}}',
        "top-level": f'{{"Image": {image}, "Cmd": ["true"], "Binds": null}}',
        "top-level-off": f'{{"Image": {image}, "Cmd": ["true"], {off}}}',
        "inner-off": f'{{"Image": {image}, "Cmd": ["true"], "HostConfig": {{{off}}}}}',
        "both-off": f'{{"Image": {image}, {off}, "hostconfig": {{{off}}}, "Cmd": ["true"]}}',
        "null-inner": f'{{"Image": {image}, "HostConfig": {{{off}}}, "HostConfig": null, {off}}}',
    }
    status, text, name = _create(gated, cleanup, version, bodies[shape])
    if status == 400 and version in ("1.12", "1.18", "1.19", "1.23") and "version" in text:
        pytest.skip(f"the gateway refuses API {version}: {text}")
    assert status == 201, text
    _assert_defaulted(daemon, name)


def test_a_chunked_create_body_gets_the_defaults(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup, gated: Gateway
) -> None:
    """Held: a body sent in chunks (no Content-Length), the "no limit" values split across
    chunk boundaries, is read whole and defaulted like any other."""
    name = cleanup.container(f"dgt-atkdef-{uuid.uuid4().hex[:8]}")
    raw = json.dumps(
        {
            "Image": busybox_image,
            "Cmd": ["true"],
            "HostConfig": {"Memory": 0, "PidsLimit": 0, "SecurityOpt": ["no-new-privileges:0"]},
        }
    ).encode()
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    conn = http.client.HTTPConnection("127.0.0.1", gated.port, timeout=30)
    try:
        conn.request(
            "POST",
            f"/v1.41/containers/create?name={name}",
            iter(pieces),
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        answer = conn.getresponse()
        text = answer.read().decode(errors="replace")
    finally:
        conn.close()
    assert answer.status == 201, text
    _assert_defaulted(daemon, name)


@pytest.mark.parametrize(
    "labels",
    [
        '"labels": {"com.example.managed": "mine"}',
        '"LABELS": {"com.example.managed": "mine"}, "Labels": null',
        '"Labels": {"com.example.managed": "mine"}, "labels": {"com.example.managed": "mine2"}',
        '"Label\\u017f": {"com.example.managed": "mine"}',
        '"Labels": {"com.example.managed": null}',
        '"Labels": {"com.example.managed": "dockgate", "com.example.managed": "mine"}',
    ],
)
def test_a_forced_label_is_stored_whatever_the_callers_spelling(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup, gated: Gateway, labels: str
) -> None:
    """Held: `force_labels` is what the daemon stores, however the caller spelled its own
    value of that label (keys in other cases, maps given twice, null, duplicates)."""
    raw = f'{{"Image": {json.dumps(busybox_image)}, "Cmd": ["true"], {labels}}}'
    status, text, name = _create(gated, cleanup, "1.41", raw)
    assert status == 201, text
    config, _ = _stored(daemon, name)
    stored = config.get("Labels") or {}
    assert isinstance(stored, dict)
    assert stored.get("com.example.managed") == "dockgate", stored
