"""The attack review's tmpfs, volume-driver and build-limit findings: the edge cases, without
a daemon. The effects on the real daemon are pinned in tests/body/test_attacks_ci_runner.py; here
each rule of the new judgement (body/tmpfs.py, body/buildlimits.py, workload.container_create's
top-level fields) is pinned by a table. Cases marked "old code" were allowed before.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockgate.body.buildlimits import build_limits_problem, go_int64_or_zero
from dockgate.body.guardrails import BodyRefused, Guardrails, check_request
from dockgate.body.tmpfs import TmpfsMount, tmpfs_data_words, tmpfs_problem, word_problem
from dockgate.http.query import query_pairs

GiB = 1024**3
LIMITS = Guardrails(max_memory=GiB, max_nano_cpus=2 * 10**9)


def judge(g: Guardrails, operation: str, body: object, query: str = "") -> object:
    """What check_request decides: the volumes to look up, or (status, reason)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        return check_request(g, operation, query, data)
    except BodyRefused as refusal:
        return refusal.status, refusal.reason


# ----- tmpfs option words ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "word",
    [
        "size=64m", "mode=1777", "uid=1000", "gid=1000", "nr_inodes=1k", "nr_blocks=10",
        "mpol=default", "ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev",
        "noatime", "relatime", "strictatime", "sync", "dirsync", "defaults", "nomand",
    ],
)  # fmt: skip
def test_allowed_words(word: str) -> None:
    assert word_problem(word) is None


@pytest.mark.parametrize(
    "word",
    [
        "remount",  # old code: remounts what is at the target (sysfs, a read-only bind) rw
        "bind", "rbind",  # makes the mount a bind of "tmpfs", or of what the kernel finds
        "shared", "rshared", "slave", "rslave", "private", "rprivate", "unbindable",
        "runbindable",  # propagation: moby sets rprivate itself
        "mand",
        "Remount", "REMOUNT",  # the flags table is exact: data to MergeTmpfsOptions, refused
        "tmpcopyup",  # a runc extension; MergeTmpfsOptions refuses it
        "size", "", "=1", "huge=always", "context=system_u:object_r:x", "Size=1m",
    ],
)  # fmt: skip
def test_refused_words(word: str) -> None:
    assert word_problem(word) == f"tmpfs option {word!r} is not allowed"


def test_data_words_as_the_daemon_splits_them() -> None:
    assert tmpfs_data_words("") == ()
    assert tmpfs_data_words("size=1m,,exec") == ("size=1m", "", "exec")
    found = tmpfs_problem(TmpfsMount("/t", ("size=1m", "remount"), "HostConfig.Tmpfs"))
    assert found == "tmpfs option 'remount' is not allowed (HostConfig.Tmpfs '/t')"


def create(host_config: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"Image": "busybox", "HostConfig": host_config, **top}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (create({"Tmpfs": {"/run": ""}}), ()),
        (create({"Tmpfs": {"/run": "size=64m,mode=1777,exec,nosuid"}}), ()),
        (  # old code: the review's finding
            create({"Tmpfs": {"/sys/": "remount"}}),
            (403, "tmpfs option 'remount' is not allowed (HostConfig.Tmpfs '/sys/')"),
        ),
        (
            create({"Tmpfs": {"/cache": "size=1m,rbind"}}),
            (403, "tmpfs option 'rbind' is not allowed (HostConfig.Tmpfs '/cache')"),
        ),
        (  # the deprecated top-level form, without an inner HostConfig
            {"Image": "busybox", "Tmpfs": {"/sys": "remount"}},
            (403, "tmpfs option 'remount' is not allowed (Tmpfs '/sys')"),
        ),
        (  # case-folded field name: Go's decoder takes it
            {"Image": "busybox", "hostconfig": {"tmpfs": {"/sys": "remount"}}},
            (403, "tmpfs option 'remount' is not allowed (HostConfig.Tmpfs '/sys')"),
        ),
        (
            create({"Tmpfs": {"/sys": 1}}),
            (400, "HostConfig.Tmpfs values must be strings"),
        ),
    ],
)
def test_host_config_tmpfs(body: dict[str, Any], expected: object) -> None:
    assert judge(Guardrails(), "ContainerCreate", body) == expected


def test_a_tmpfs_map_given_twice_merges() -> None:
    """Go decodes a second object into the same map: both entries count, and of one key
    given twice the last value is the one used."""
    merged = b'{"HostConfig":{"Tmpfs":{"/a":"size=1m"},"tmpfs":{"/sys":"remount"}}}'
    assert judge(Guardrails(), "ContainerCreate", merged) == (
        403,
        "tmpfs option 'remount' is not allowed (HostConfig.Tmpfs '/sys')",
    )
    last = b'{"HostConfig":{"Tmpfs":{"/sys":"size=1m","/sys":"remount"}}}'
    assert judge(Guardrails(), "ContainerCreate", last) == (
        403,
        "tmpfs option 'remount' is not allowed (HostConfig.Tmpfs '/sys')",
    )
    first = b'{"HostConfig":{"Tmpfs":{"/sys":"remount","/sys":"size=1m"}}}'
    assert judge(Guardrails(), "ContainerCreate", first) == ()  # replaced, as Go does


def tmpfs_mount(options: object = None, **extra: Any) -> dict[str, Any]:
    mount: dict[str, Any] = {"Type": "tmpfs", "Target": "/t", **extra}
    if options is not None:
        mount["TmpfsOptions"] = {"SizeBytes": 1 << 20, "Mode": 0o1777, "Options": options}
    return mount


@pytest.mark.parametrize(
    ("mount", "expected"),
    [
        (tmpfs_mount(), ()),
        (tmpfs_mount([]), ()),
        (tmpfs_mount([["exec"]], ReadOnly=True), ()),
        (tmpfs_mount([["noexec"], ["size", "1m"]]), ()),
        (  # old code: TmpfsOptions.Options (API 1.46+) was inert
            tmpfs_mount([["remount"]]),
            "tmpfs option 'remount' is not allowed "
            "(HostConfig.Mounts[0].TmpfsOptions.Options '/t')",
        ),
        (
            tmpfs_mount([["huge", "always"]]),
            "tmpfs option 'huge=always' is not allowed "
            "(HostConfig.Mounts[0].TmpfsOptions.Options '/t')",
        ),
        (
            tmpfs_mount([["a", "b", "c"]]),
            "HostConfig.Mounts[0].TmpfsOptions.Options must be a list of [option] or "
            "[option, value]",
        ),
        (
            tmpfs_mount([[]]),
            "HostConfig.Mounts[0].TmpfsOptions.Options must be a list of [option] or "
            "[option, value]",
        ),
        (
            tmpfs_mount(["exec"]),
            "HostConfig.Mounts[0].TmpfsOptions.Options must be a list of [option] or "
            "[option, value]",
        ),
    ],
)
def test_tmpfs_mount_options(mount: dict[str, Any], expected: object) -> None:
    found = judge(Guardrails(), "ContainerCreate", create({"Mounts": [mount]}))
    if isinstance(expected, str):
        status = 400 if "must be" in expected else 403
        assert found == (status, expected)
    else:
        assert found == expected


def test_tmpfs_mount_options_of_a_service() -> None:
    spec = {"Image": "busybox", "Mounts": [tmpfs_mount([["remount"]])]}
    body = {"TaskTemplate": {"ContainerSpec": spec}}
    for operation in ("ServiceCreate", "ServiceUpdate"):
        assert judge(Guardrails(), operation, body) == (
            403,
            "tmpfs option 'remount' is not allowed "
            "(TaskTemplate.ContainerSpec.Mounts[0].TmpfsOptions.Options '/t')",
        )


def test_tmpfs_options_given_twice_are_refused() -> None:
    """A TmpfsOptions object given twice merges in Go; an Options list in each is refused
    rather than read as Go's decoder merges lists (golang/go#21092)."""
    body = (
        b'{"HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t",'
        b'"TmpfsOptions":{"Options":[["exec"]]},"tmpfsoptions":{"Options":[["remount"]]}}]}}'
    )
    assert judge(Guardrails(), "ContainerCreate", body) == (
        400,
        "HostConfig.Mounts[0].TmpfsOptions.Options is given more than once",
    )
    # Given once, in the second object of a merged TmpfsOptions: judged.
    body = (
        b'{"HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t",'
        b'"TmpfsOptions":{"SizeBytes":1},"tmpfsoptions":{"Options":[["remount"]]}}]}}'
    )
    assert judge(Guardrails(), "ContainerCreate", body) == (
        403,
        "tmpfs option 'remount' is not allowed (HostConfig.Mounts[0].TmpfsOptions.Options '/t')",
    )


# ----- a bind volume is read-only by its own `o` ------------------------------------------------


def test_a_bind_volume_used_read_only_and_read_write_in_one_body() -> None:
    """Old code: the review's body (its first mount ReadOnly, its options without `ro`)."""
    from dockgate.body.guardrails import HostPathRule  # noqa: PLC0415

    g = Guardrails(host_paths=(HostPathRule("/srv/cache", True),))
    options = {"type": "none", "o": "bind", "device": "/srv/cache"}
    mounts = [
        {
            "Type": "volume",
            "Source": "v",
            "Target": "/ro",
            "ReadOnly": True,
            "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": options}},
        },
        {"Type": "volume", "Source": "v", "Target": "/rw"},
    ]
    found = judge(g, "ContainerCreate", create({"Mounts": mounts}))
    assert found == (
        403,
        "host path /srv/cache (bind device, HostConfig.Mounts[0].VolumeOptions.DriverConfig."
        "Options) must be mounted read-only",
    )
    options["o"] = "bind,ro"  # the volume itself binds read-only: any use is read-only
    assert judge(g, "ContainerCreate", create({"Mounts": mounts})) != found


# ----- the top-level fields getHostConfig copies beside an inner HostConfig ---------------------


EVIL = (403, "volume driver 'evil' is not allowed")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (create({}, VolumeDriver="evil"), EVIL),  # old code: the review's finding
        (create({"VolumeDriver": ""}, VolumeDriver="evil"), EVIL),
        (create({"VolumeDriver": None}, volumedriver="evil"), EVIL),
        # An inner driver is kept: the top-level one is ignored by the daemon.
        (create({"VolumeDriver": "local"}, VolumeDriver="evil"), ()),
        ({"Image": "busybox", "VolumeDriver": "evil"}, EVIL),
        (create({}, VolumeDriver="local"), ()),
        (create({}, VolumeDriver=1), (400, "VolumeDriver must be a string")),
    ],
)  # fmt: skip
def test_top_level_volume_driver(body: dict[str, Any], expected: object) -> None:
    assert judge(Guardrails(), "ContainerCreate", body) == expected


def test_top_level_memory_beside_an_inner_host_config() -> None:
    g = Guardrails(max_memory=GiB)
    assert judge(g, "ContainerCreate", create({}, Memory=GiB)) == ()
    assert judge(g, "ContainerCreate", create({"Memory": GiB}, Memory=4 * GiB)) == ()
    assert judge(g, "ContainerCreate", create({}, Memory=4 * GiB))[0] == 403  # type: ignore[index]


# ----- build limits ------------------------------------------------------------------------------

MEMORY = "a build needs a memory limit of at most 1073741824 bytes (--memory)"
CPU = "a build needs a CPU limit of at most 2 CPUs (--cpu-quota and --cpu-period)"
BUILDKIT = (
    "BuildKit builds (version=2) run their steps without the required memory and CPU limits: "
    "use the classic builder (DOCKER_BUILDKIT=0) with --memory and --cpu-quota/--cpu-period"
)
OK_CPU = "cpuquota=100000&cpuperiod=100000"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", MEMORY),  # old code: a build without limits
        ("t=x&rm=1", MEMORY),
        (f"memory=1073741824&{OK_CPU}", None),
        (f"memory=%2B1024&{OK_CPU}", None),  # ParseInt takes a sign
        (f"memory=1073741825&{OK_CPU}", MEMORY),
        (f"memory=0&{OK_CPU}", MEMORY),
        (f"memory=-1&{OK_CPU}", MEMORY),
        (f"memory=1g&{OK_CPU}", MEMORY),  # the daemon reads 0: no limit
        (f"memory=1_024&{OK_CPU}", MEMORY),
        (f"memory=99999999999999999999&{OK_CPU}", MEMORY),  # out of range: 0
        (f"memory=1024&memory=99999999999&{OK_CPU}", None),  # r.FormValue: the first
        (f"memory=99999999999&memory=1024&{OK_CPU}", MEMORY),
        (f"memory=1024;x&{OK_CPU}", MEMORY),  # a pair with ';' is dropped by Go
        ("memory=1024", CPU),
        ("memory=1024&cpuquota=200000", None),  # the default period: 2 CPUs
        ("memory=1024&cpuquota=200001", CPU),
        ("memory=1024&cpuquota=300000&cpuperiod=200000", None),
        ("memory=1024&cpuquota=-1", CPU),
        ("memory=1024&cpuperiod=100000", CPU),  # a period alone limits nothing
        ("memory=1024&cpuquota=100000&cpuperiod=-1", CPU),
        (f"memory=1024&{OK_CPU}&version=1", None),
        (f"memory=1024&{OK_CPU}&version=2", BUILDKIT),  # BuildKit ignores the limits
    ],
)
def test_build_limits(query: str, expected: str | None) -> None:
    assert build_limits_problem(LIMITS.max_memory, LIMITS.max_nano_cpus, query_pairs(query)) == (
        expected
    )
    found = judge(LIMITS, "ImageBuild", b"", query)
    assert found == (() if expected is None else (403, expected))


def test_build_limits_only_when_the_policy_sets_maxima() -> None:
    assert judge(Guardrails(), "ImageBuild", b"", "version=2") == ()
    assert judge(Guardrails(), "ImageBuild", b"", "") == ()
    memory_only = Guardrails(max_memory=GiB)
    assert judge(memory_only, "ImageBuild", b"", "memory=1024") == ()
    cpus_only = Guardrails(max_nano_cpus=10**9)
    assert judge(cpus_only, "ImageBuild", b"", "cpuquota=50000") == ()
    assert judge(cpus_only, "ImageBuild", b"", "memory=1024") == (
        403,
        "a build needs a CPU limit of at most 1 CPUs (--cpu-quota and --cpu-period)",
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("+12", 12), ("-12", -12), ("", 0), ("1e3", 0), (" 1", 0), ("0x10", 0),
     (str(2**63 - 1), 2**63 - 1), (str(2**63), 0), (str(-(2**63)), -(2**63))],
)  # fmt: skip
def test_go_int64_or_zero(text: str, value: int) -> None:
    assert go_int64_or_zero(text) == value
