"""A policy's defaults written into create bodies (body/defaults.py), read back the way the daemon
reads them (gojson: keys folded, the last duplicate winning, maps merging; the guardrails'
readers for the limits): the edge cases of what counts as "set", pure. The end-to-end proof is
tests/policy/test_defaults_e2e.py.
"""

from __future__ import annotations

import json

import pytest

from dockgate.body import gojson
from dockgate.body.defaults import Defaults, inject, rejudged
from dockgate.body.guardrails import Guardrails, find_problem
from dockgate.body.workload import BodyError, container_create, service_spec

MIB = 1024 * 1024
ALL = Defaults(
    labels={"team": "web", "tier": "default"},
    force_labels={"managed": "dockgate"},
    memory=64 * MIB,
    nano_cpus=500_000_000,
    pids=64,
    no_new_privileges=True,
    cgroup_parent="/dockgate",
    log_driver="json-file",
    log_options={"max-size": "1m"},
)


def body(value: object) -> bytes:
    return json.dumps(value).encode()


def top(raw: bytes) -> tuple[gojson.GoObject]:
    parsed = gojson.parse(raw, strict_end=True)
    assert isinstance(parsed, gojson.GoObject)
    return (parsed,)


def host_of(raw: bytes) -> gojson.Struct:
    one = top(raw)
    inner = gojson.struct(one, "HostConfig", pointer=True)
    return inner if inner else one


def test_a_bare_create_gets_everything_written_last() -> None:
    """Each default, read back as the daemon reads the body."""
    written, injected = inject(ALL, "ContainerCreate", body({"Image": "x", "HostConfig": {}}))
    one, host = top(written), host_of(written)
    assert gojson.mapping(one, "Labels") == {
        "team": "web",
        "tier": "default",
        "managed": "dockgate",
    }
    workload = container_create(one[0])
    assert (workload.memory, workload.nano_cpus) == (64 * MIB, 500_000_000)
    assert gojson.scalar(host, "PidsLimit") == 64
    assert gojson.slice_(host, "SecurityOpt") == ["no-new-privileges"]
    assert gojson.scalar(host, "CgroupParent") == "/dockgate"
    log = gojson.struct(host, "LogConfig", pointer=False)
    assert gojson.scalar(log, "Type") == "json-file"
    assert gojson.mapping(log, "Config") == {"max-size": "1m"}
    assert set(injected) == {
        "labels",
        "memory",
        "nano_cpus",
        "pids",
        "no_new_privileges",
        "cgroup_parent",
        "log_driver",
        "log_options",
    }


def test_keys_in_any_case_count_as_set_as_go_reads_them() -> None:
    """`labels`, `hostconfig`, `memory`, `pidslimit` set the fields Go folds them to."""
    raw = body(
        {
            "Image": "x",
            "labels": {"team": "mine", "managed": "me"},
            "hostconfig": {"memory": 32 * MIB, "nanocpus": 10**9, "pidslimit": 5},
        }
    )
    written, injected = inject(ALL, "ContainerCreate", raw)
    labels = gojson.mapping(top(written), "Labels")
    assert labels is not None
    assert (labels["team"], labels["managed"], labels["tier"]) == ("mine", "dockgate", "default")
    assert container_create(top(written)[0]).memory == 32 * MIB
    assert gojson.scalar(host_of(written), "PidsLimit") == 5
    assert "memory" not in injected and "nano_cpus" not in injected and "pids" not in injected


def test_a_body_without_an_inner_host_config_gets_top_level_fields() -> None:
    """The deprecated top-level HostConfig form stays that form: an inner HostConfig written
    into it would make the daemon drop the client's top-level fields (its Binds, its Memory)."""
    raw = body({"Image": "x", "Memory": 32 * MIB, "Binds": ["v:/v"]})
    written, _ = inject(ALL, "ContainerCreate", raw)
    one = top(written)
    assert gojson.struct(one, "HostConfig", pointer=True) == []
    assert gojson.slice_(one, "Binds") == ["v:/v"]
    assert container_create(one[0]).memory == 32 * MIB
    assert gojson.scalar(one, "PidsLimit") == 64


def test_a_limit_cleared_later_in_the_body_is_not_set() -> None:
    """`PidsLimit` is a pointer: a later null clears it; `Labels: null` clears the map; a
    duplicate `Memory: 0` after a value leaves 0: all get the default."""
    raw = (
        b'{"Image":"x","Labels":{"team":"mine"},"Labels":null,'
        b'"HostConfig":{"PidsLimit":5,"PidsLimit":null,"Memory":100000000,"Memory":0}}'
    )
    written, injected = inject(ALL, "ContainerCreate", raw)
    assert gojson.mapping(top(written), "Labels") == {
        "team": "web",
        "tier": "default",
        "managed": "dockgate",
    }
    assert gojson.values(host_of(written), "PidsLimit")[-1] == 64
    assert container_create(top(written)[0]).memory == 64 * MIB
    assert {"pids", "memory"} <= set(injected)


@pytest.mark.parametrize(
    ("resources", "injected"),
    [
        ({"CpuQuota": -1}, True),  # "unlimited" would override NanoCpus: written 0 with it
        ({"CpuPeriod": 50000}, True),  # a period alone limits nothing, and conflicts
        ({"CpuShares": 512}, True),  # a weight, not a limit
        ({"CpuQuota": 50000, "CpuPeriod": 100000}, False),
        ({"NanoCpus": 250_000_000}, False),
    ],
)
def test_what_counts_as_a_cpu_limit(resources: dict[str, int], injected: bool) -> None:
    raw = body({"Image": "x", "HostConfig": resources})
    written, found = inject(Defaults(nano_cpus=500_000_000), "ContainerCreate", raw)
    assert ("nano_cpus" in found) == injected
    if injected:
        host = host_of(written)
        assert gojson.scalar(host, "NanoCpus") == 500_000_000
        assert gojson.scalar(host, "CpuQuota") == 0 and gojson.scalar(host, "CpuPeriod") == 0
    else:
        assert written == raw


@pytest.mark.parametrize(
    ("options", "written"),
    [
        (["no-new-privileges"], None),
        (["no-new-privileges:false", "no-new-privileges=1"], None),  # the last one wins: on
        (["no-new-privileges=true", "no-new-privileges=false"], ["no-new-privileges"]),
        (
            ["seccomp=x", "no-new-privileges:0", "label=y"],
            ["seccomp=x", "label=y", "no-new-privileges"],
        ),
        (["no-new-privileges=T"], None),
        # Not the daemon's key (it refuses these with "invalid --security-opt"): left as they are.
        (["NO-NEW-PRIVILEGES=false"], ["NO-NEW-PRIVILEGES=false", "no-new-privileges"]),
        ([], ["no-new-privileges"]),
    ],
)
def test_no_new_privileges_as_the_daemon_reads_security_opt(
    options: list[str], written: list[str] | None
) -> None:
    raw = body({"Image": "x", "HostConfig": {"SecurityOpt": options}})
    result, injected = inject(Defaults(no_new_privileges=True), "ContainerCreate", raw)
    if written is None:
        assert result == raw and not injected
    else:
        assert gojson.slice_(host_of(result), "SecurityOpt") == written


def test_a_named_log_driver_is_kept_unless_forced() -> None:
    raw = body({"Image": "x", "HostConfig": {"LogConfig": {"Type": "local", "Config": {"a": "b"}}}})
    kept, injected = inject(Defaults(log_driver="journald"), "ContainerCreate", raw)
    assert kept == raw and not injected
    forced, _ = inject(
        Defaults(log_driver="journald", force_log_driver=True), "ContainerCreate", raw
    )
    log = gojson.struct(host_of(forced), "LogConfig", pointer=False)
    assert gojson.scalar(log, "Type") == "journald"
    assert gojson.mapping(log, "Config") is None  # the local driver's options are dropped


def test_options_for_the_daemons_default_driver_are_replaced_with_the_policys() -> None:
    raw = body(
        {
            "Image": "x",
            "HostConfig": {"LogConfig": {"Type": "", "Config": {"max-size": "9g", "x": "y"}}},
        }
    )
    written, _ = inject(ALL, "ContainerCreate", raw)
    log = gojson.struct(host_of(written), "LogConfig", pointer=False)
    assert gojson.mapping(log, "Config") == {"max-size": "1m"}


def test_a_service_gets_its_labels_limits_and_log_driver() -> None:
    raw = body(
        {
            "Name": "s",
            "Labels": {"team": "mine"},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "x", "Labels": {"tier": "own"}},
                "Resources": {"Limits": {"MemoryBytes": 32 * MIB, "Pids": 9}},
                "LogDriver": {"Options": {"stale": "1"}},
            },
        }
    )
    written, injected = inject(ALL, "ServiceCreate", raw)
    one = top(written)
    assert gojson.mapping(one, "Labels") == {
        "team": "mine",
        "tier": "default",
        "managed": "dockgate",
    }
    task = gojson.struct(one, "TaskTemplate", pointer=False)
    spec = gojson.struct(task, "ContainerSpec", pointer=True)
    assert gojson.mapping(spec, "Labels") == {"tier": "own", "team": "web", "managed": "dockgate"}
    assert gojson.scalar(gojson.struct(spec, "Privileges", pointer=True), "NoNewPrivileges") is True
    workload = service_spec(one[0])
    assert (workload.memory, workload.nano_cpus) == (32 * MIB, 500_000_000)
    limits = gojson.struct(gojson.struct(task, "Resources", pointer=True), "Limits", pointer=True)
    assert gojson.scalar(limits, "Pids") == 9
    log = gojson.struct(task, "LogDriver", pointer=True)
    assert gojson.scalar(log, "Name") == "json-file"
    assert gojson.mapping(log, "Options") == {"max-size": "1m"}
    assert "cgroup_parent" not in injected  # swarm's container spec has none
    assert "memory" not in injected and "pids" not in injected


def test_nothing_to_add_leaves_the_body_as_it_came() -> None:
    raw = body({"Image": "x", "Labels": {"team": "a", "tier": "b"}})
    assert inject(Defaults(labels={"team": "web"}), "ContainerCreate", raw) == (raw, {})
    assert inject(ALL, "ContainerExec", raw) == (raw, {})


@pytest.mark.parametrize(
    "raw", [b"[]", b'{"Image":"x"} {}', b"{", b'{"HostConfig":{"Memory":"1"}}']
)
def test_a_body_that_cannot_be_read_here_is_an_error(raw: bytes) -> None:
    with pytest.raises(BodyError):
        inject(ALL, "ContainerCreate", raw)


# ----- the guardrails, judged again -------------------------------------------------------------

PLAIN = Guardrails()
NO_NEW_PRIVILEGES = Guardrails(require_no_new_privileges=True)
BOUNDED = Guardrails(required_labels={"team": "*"}, max_memory=128 * MIB, max_nano_cpus=10**9)
SERVICE = {"Name": "s", "TaskTemplate": {"ContainerSpec": {"Image": "x"}}}
# Bodies each set of guardrails lets through (asserted below), as clients write them.
CORPUS: list[tuple[Guardrails, dict[str, object]]] = [
    (PLAIN, {"Image": "x"}),
    (PLAIN, {"Image": "x", "HostConfig": {"SecurityOpt": ["no-new-privileges=false"]}}),
    (
        PLAIN,
        {"Image": "x", "Memory": 1, "HostConfig": {"CpuQuota": -1, "LogConfig": {"Type": "local"}}},
    ),
    (PLAIN, SERVICE),
    (NO_NEW_PRIVILEGES, {"Image": "x", "HostConfig": {"SecurityOpt": ["no-new-privileges"]}}),
    (NO_NEW_PRIVILEGES, {"Image": "x", "SecurityOpt": ["no-new-privileges:true"]}),
    (
        NO_NEW_PRIVILEGES,
        {
            "Name": "s",
            "TaskTemplate": {
                "ContainerSpec": {"Image": "x", "Privileges": {"NoNewPrivileges": True}}
            },
        },
    ),
    (
        BOUNDED,
        {
            "Image": "x",
            "Labels": {"team": "a"},
            "HostConfig": {"Memory": 100 * MIB, "NanoCpus": 10**9},
        },
    ),
    (BOUNDED, {"Image": "x", "Labels": {"team": "a"}, "Memory": 100 * MIB, "NanoCpus": 10**8}),
    (
        BOUNDED,
        {
            "Name": "s",
            "Labels": {"team": "a"},
            "TaskTemplate": {
                "ContainerSpec": {"Image": "x"},
                "Resources": {"Limits": {"MemoryBytes": MIB * 100, "NanoCPUs": 10**9}},
            },
        },
    ),
]


@pytest.mark.parametrize(("guardrails", "value"), CORPUS)
def test_a_body_that_passed_the_guardrails_still_passes_with_its_defaults(
    guardrails: Guardrails, value: dict[str, object]
) -> None:
    """By construction (labels and limits added, no-new-privileges only turned on, values the
    loader checked against the guardrails): each body of the corpus passes the guardrails, and
    passes them again with the defaults written in."""
    operation = "ServiceCreate" if "Name" in value else "ContainerCreate"
    raw = body(value)
    reader = service_spec if operation == "ServiceCreate" else container_create
    assert find_problem(guardrails, reader(top(raw)[0])) is None
    written, injected = inject(ALL, operation, raw)
    assert injected
    assert rejudged(guardrails, operation, written) is None


def test_rejudged_finds_what_the_guardrails_would_refuse() -> None:
    """The check judge_body makes after writing the defaults can refuse (a policy file whose
    defaults the loader would not have let through)."""
    written, _ = inject(Defaults(memory=256 * MIB), "ContainerCreate", body({"Image": "x"}))
    problem = rejudged(Guardrails(max_memory=128 * MIB), "ContainerCreate", written)
    assert problem == "a memory limit of at most 134217728 bytes is required"
