"""The `host_ports` guardrail (body/hostports.py): published ports with a fixed host port.

Pure unit tests of the edge cases; the effect on the real daemon is in
tests/body/test_attacks_ci_runner_2.py (test_port_binding_squats_a_host_loopback_port). Each of
these fails on the code before the guardrail, where PortBindings and PublishedPort were inert and
`host_ports` was an unknown policy key.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockgate.body import hostports
from dockgate.body.guardrails import BodyRefused, Guardrails, check_request
from dockgate.policy.loader import PolicyError, parse_policy_text


def judge(operation: str, body: Any, g: Guardrails | None = None) -> tuple[int, str] | None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        check_request(g or Guardrails(), operation, "", raw)
    except BodyRefused as refusal:
        return refusal.status, refusal.reason
    return None


def create(host_port: object, host_ip: str = "127.0.0.1") -> dict[str, Any]:
    binding = {"HostIp": host_ip, "HostPort": host_port}
    return {"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [binding]}}}


def service(published: object, mode: str = "ingress") -> dict[str, Any]:
    port = {"TargetPort": 80, "PublishedPort": published, "PublishMode": mode}
    return {"TaskTemplate": {"ContainerSpec": {"Image": "x"}}, "EndpointSpec": {"Ports": [port]}}


def listing(*entries: int | str) -> Guardrails:
    return Guardrails(
        host_ports=hostports.merge([hostports.parse_policy_range(e) for e in entries])
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", (0, 0)),
        ("0", (0, 0)),
        ("0-0", (0, 0)),
        ("8080", (8080, 8080)),
        ("08080", (8080, 8080)),  # strconv.ParseUint takes leading zeros
        ("8000-8010", (8000, 8010)),
        ("80/udp", (80, 80)),  # the protocol is the container port's: ignored
        ("80/", (80, 80)),
        ("65535", (65535, 65535)),
    ],
)
def test_host_port_forms_the_daemon_reads(text: str, expected: tuple[int, int]) -> None:
    assert hostports.parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "/80",  # ephemeral to 20.10 (nat.SplitProtoPort gives ""), an error to newer daemons
        "1-2-3",  # 1-2 to 20.10, an error to newer ones
        "65536",
        "+80",
        " 80",
        "80 ",
        "8_0",
        "0x50",
        "90-80",
        "-80",
        "80-",
        "\u0668\u0660",  # Arabic-Indic digits: str.isdigit, not ParseUint
    ],
)
def test_host_port_forms_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        hostports.parse_host_port(text)
    status, _ = judge("ContainerCreate", create(text)) or (0, "")
    assert status == 400


@pytest.mark.parametrize("host_port", ["", "0", "0-0", None])
@pytest.mark.parametrize("host_ip", ["", "127.0.0.1", "0.0.0.0", "::1"])
def test_ephemeral_ports_pass_on_any_address(host_port: object, host_ip: str) -> None:
    assert judge("ContainerCreate", create(host_port, host_ip)) is None


@pytest.mark.parametrize("host_port", ["80", "8080", "8000-8010", "1-65535", "0-5", "80/udp"])
def test_fixed_ports_are_refused_by_default(host_port: str) -> None:
    verdict = judge("ContainerCreate", create(host_port))
    assert verdict is not None and verdict[0] == 403, verdict
    assert "HostConfig.PortBindings['80/tcp'][0].HostPort" in verdict[1]


def test_listed_ports_and_ranges() -> None:
    g = listing("8000-8999", 9090, "9091")
    assert judge("ContainerCreate", create("8080"), g) is None
    assert judge("ContainerCreate", create("8000-8999"), g) is None
    # 9090 and 9091 are merged into one range; a range crossing out of it is refused (the
    # allocator may take any port of the range asked for).
    assert judge("ContainerCreate", create("9090-9091"), g) is None
    assert judge("ContainerCreate", create("9090-9092"), g) is not None
    assert judge("ContainerCreate", create("7999-8000"), g) is not None
    assert judge("ContainerCreate", create("80"), g) is not None
    assert hostports.merge([(10, 20), (21, 30), (5, 12), (40, 40)]) == ((5, 30), (40, 40))


def test_every_binding_of_every_port_is_judged() -> None:
    body = {
        "Image": "busybox",
        "HostConfig": {
            "PortBindings": {
                "80/tcp": [{"HostPort": ""}, None, {"HostPort": "8080"}],
                "81/tcp": None,
            }
        },
    }
    verdict = judge("ContainerCreate", body, listing(8080))
    assert verdict is None
    body["HostConfig"]["PortBindings"]["81/udp"] = [{"HostPort": "53"}]  # type: ignore[index]
    verdict = judge("ContainerCreate", body, listing(8080))
    assert verdict is not None and "host port 53 " in verdict[1], verdict


def test_portbindings_read_as_go_decodes_them() -> None:
    # Keys of the binding fold (Go struct fields); the last non-null value wins.
    raw = (
        b'{"Image":"busybox","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"",'
        b'"hostport":"22","HOSTPORT":null}]}}}'
    )
    assert judge("ContainerCreate", raw) is not None
    # Map keys are exact and the last duplicate wins; objects given twice merge key by key.
    raw = (
        b'{"Image":"busybox","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"22"}],'
        b'"80/tcp":[{"HostPort":""}]},"portBindings":{"81/tcp":[{"HostPort":"23"}]}}}'
    )
    verdict = judge("ContainerCreate", raw)
    assert verdict is not None and "host port 23 " in verdict[1], verdict
    # A HostConfig given twice: the daemon merges both; a binding in the first still counts.
    raw = (
        b'{"Image":"busybox","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"22"}]}},'
        b'"HostConfig":{"Memory":1}}'
    )
    assert judge("ContainerCreate", raw) is not None
    # Types the daemon refuses are refused.
    assert judge("ContainerCreate", create(22))[0] == 400  # type: ignore[index]
    bad = {"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": "22"}}}
    assert judge("ContainerCreate", bad)[0] == 400  # type: ignore[index]
    bad = {"Image": "busybox", "HostConfig": {"PortBindings": ["22"]}}
    assert judge("ContainerCreate", bad)[0] == 400  # type: ignore[index]


def test_legacy_top_level_portbindings() -> None:
    """moby runconfig getHostConfig: the top-level form counts only without an inner
    HostConfig (of which only Memory, MemorySwap, CPUShares, CpusetCpus and VolumeDriver
    are taken from the top level)."""
    legacy = {"Image": "busybox", "PortBindings": {"80/tcp": [{"HostPort": "22"}]}}
    verdict = judge("ContainerCreate", legacy)
    assert verdict is not None and "(PortBindings['80/tcp'][0].HostPort)" in verdict[1]
    assert judge("ContainerCreate", {**legacy, "HostConfig": None}) is not None
    assert judge("ContainerCreate", {**legacy, "HostConfig": {}}) is None


@pytest.mark.parametrize("mode", ["ingress", "host", ""])
def test_service_published_ports(mode: str) -> None:
    assert judge("ServiceCreate", service(0, mode)) is None
    assert judge("ServiceUpdate", service(0, mode)) is None
    for operation in ("ServiceCreate", "ServiceUpdate"):
        verdict = judge(operation, service(8080, mode))
        assert verdict is not None and verdict[0] == 403, verdict
        assert "EndpointSpec.Ports[0].PublishedPort" in verdict[1]
        assert judge(operation, service(8080, mode), listing("8000-8999")) is None
    assert judge("ServiceCreate", service(70000, mode), listing("1-65535")) is not None
    assert judge("ServiceCreate", service(-1, mode))[0] == 400  # type: ignore[index]
    assert judge("ServiceCreate", service("8080", mode))[0] == 400  # type: ignore[index]
    assert judge("ServiceCreate", service(8080.5, mode))[0] == 400  # type: ignore[index]


def test_service_ports_given_twice_are_refused() -> None:
    raw = (
        b'{"TaskTemplate":{"ContainerSpec":{"Image":"x"}},"EndpointSpec":{"Ports":'
        b'[{"TargetPort":80}],"Ports":[{"PublishedPort":0}]}}'
    )
    assert judge("ServiceCreate", raw) == (400, "field EndpointSpec.Ports is given more than once")


def policy(host_ports: str) -> Guardrails | None:
    text = (
        "policies:\n  ci:\n    rules:\n      - allow: {sections: ['*']}\n    guardrails:\n"
        f"      host_ports: {host_ports}\n"
    )
    return parse_policy_text(text, "p.yaml").policies["ci"].guardrails


def test_the_loader_reads_host_ports() -> None:
    assert policy("[]") == Guardrails()
    assert policy("['8000-8999', 9090, '9091', ' 10 - 20 ']") == Guardrails(
        host_ports=((10, 20), (8000, 8999), (9090, 9091))
    )


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ("[0]", "port 0 is the ephemeral port"),
        ("['80-70']", "the range ends before it starts"),
        ("[70000]", "is not a port (1-65535)"),
        ("['x']", "is not a port (1-65535)"),
        ("[1.5]", "host_ports"),
        ("[true]", "host_ports"),
        ("8080", "host_ports"),
    ],
)
def test_the_loader_refuses_bad_host_ports(entries: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy(entries)
    assert problem in str(caught.value)
    assert "p.yaml:6" in str(caught.value)
