"""Volume options as the kernel mounts them: the edge cases, without a daemon.

`body/volumeopts.py` reads `local` driver options as moby's driver (volume/local/local_unix.go)
and moby/sys/mount's parseOptions do; `guardrails.local_volume_problem` judges the result, and
`named_volume_problem` judges a volume used by name on the daemon's inspect answer. The effects
on a real daemon are in tests/body/test_volume_options_e2e.py; here each rule is pinned by a table.
Cases marked "old code" were allowed by dockgate before (it judged `device` alone, and not at
all with `type=tmpfs`).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import tempfile
from typing import Any

import pytest

from dockgate.addresses import Address
from dockgate.body.guardrails import (
    BodyRefused,
    Guardrails,
    HostPathRule,
    check_request,
    local_volume_problem,
    named_volume_problem,
)
from dockgate.body.namedvolumes import named_volumes_problem, to_look_up
from dockgate.body.volumeopts import LocalMount, VolumeOptionRefused, local_mount
from dockgate.body.workload import LocalVolume, NamedVolume
from dockgate.policy.loader import PolicyError, parse_policy_text

SRV = Guardrails(host_paths=(HostPathRule("/srv", True),))
NFS = Guardrails(volume_types={"nfs": ("10.0.0.5", "*.files.example"), "cifs": ("fs1",)})


def problem(g: Guardrails, options: dict[str, str], read_only: bool = False) -> str | None:
    return local_volume_problem(g, LocalVolume(options, read_only, "DriverOpts"))


# ----- reading: flags, data, kinds --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, LocalMount("none")),
        ({"size": "10g"}, LocalMount("none")),  # a quota on the volume's own directory
        ({"type": "", "device": "", "o": "bind"}, LocalMount("none")),  # needsMount: false
        (
            {"type": "tmpfs", "device": "/", "o": "bind,ro"},  # finding 1 as reported
            LocalMount("bind", "/", "tmpfs", read_only=True),
        ),
        (
            {"type": "proc", "device": "/x", "o": "nosuid,rbind"},
            LocalMount("bind", "/x", "proc"),
        ),
        (
            # moby makes only the top of a bind read-only: under rbind, submounts stay writable.
            {"type": "none", "device": "/x", "o": "rbind,ro"},
            LocalMount("bind", "/x", "none", read_only=False),
        ),
        (
            {"type": "none", "device": "/x", "o": "bind,ro"},
            LocalMount("bind", "/x", "none", read_only=True),
        ),
        ({"type": "none", "device": "/x", "o": "bind,ro,rw"}, LocalMount("bind", "/x", "none")),
        (
            {"type": "none", "device": "/x", "o": "rw,bind,ro"},
            LocalMount("bind", "/x", "none", read_only=True),
        ),
        (
            # Flag names are exact (a Go map): BIND is file-system data, not MS_BIND.
            {"type": "tmpfs", "device": "/", "o": "BIND"},
            LocalMount("filesystem", "/", "tmpfs", data=("BIND",)),
        ),
        (
            # "defaults" has flag 0 in moby's table, so parseOptions passes it on as data.
            {"type": "tmpfs", "device": "t", "o": "defaults,,size=1m,ro"},
            LocalMount("filesystem", "t", "tmpfs", read_only=True, data=("defaults", "size=1m")),
        ),
    ],
)
def test_local_mount(options: dict[str, str], expected: LocalMount) -> None:
    assert local_mount(options) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"Device": "/"}, "volume option 'Device' is not one the local driver reads"),
        ({"type": "tmpfs", "mountopts": "x"}, "volume option 'mountopts' is not one the local"),
        ({"type": "tmpfs", "device": "t", "o": "remount"}, "mount option 'remount' (o=)"),
        ({"type": "none", "device": "/srv", "o": "bind,shared"}, "mount option 'shared' (o=)"),
        ({"type": "none", "device": "/srv", "o": "rshared,bind"}, "mount option 'rshared' (o=)"),
        ({"type": "tmpfs", "device": "t", "o": "mand"}, "mount option 'mand' (o=)"),
        ({"type": "none", "device": "/srv", "o": "bind,x=1"}, "mount option 'x=1' (o=) is not"),
    ],
)
def test_options_no_policy_allows(options: dict[str, str], message: str) -> None:
    with pytest.raises(VolumeOptionRefused, match=None) as caught:
        local_mount(options)
    assert str(caught.value).startswith(message)
    assert problem(Guardrails(host_paths=(HostPathRule("/", False),)), options) == (
        f"{caught.value} (DriverOpts)"
    )


# ----- judging ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # Binds, whatever the type: a host path (old code: tmpfs never judged).
        ({"type": "tmpfs", "device": "/", "o": "bind,ro"}, "host path / (bind device, DriverOpts)"),
        ({"type": "tmpfs", "device": "/etc", "o": "size=1,rbind"}, "mount option 'size=1' (o=)"),
        ({"type": "tmpfs", "device": "/etc", "o": "nosuid,rbind"}, "host path /etc (bind device"),
        ({"type": "none", "device": "etc", "o": "bind"}, "host path 'etc' (bind device"),
        ({"o": "bind", "type": "none", "device": "none"}, "host path 'none' (bind device"),
        # File systems other than tmpfs (old code: a device under host_paths passed them).
        ({"type": "proc", "device": "/srv"}, "file system type 'proc' (type=, DriverOpts)"),
        ({"type": "sysfs", "device": "sysfs"}, "file system type 'sysfs'"),
        ({"type": "overlay", "device": "o", "o": "lowerdir=/:/srv"}, "file system type 'overlay'"),
        ({"type": "devpts", "device": "devpts"}, "file system type 'devpts'"),
        ({"type": "cgroup2", "device": "cgroup"}, "file system type 'cgroup2'"),
        ({"type": "bpf", "device": "bpf"}, "file system type 'bpf'"),
        ({"type": "debugfs", "device": "debugfs"}, "file system type 'debugfs'"),
        ({"type": "ext4", "device": "/dev/sda1"}, "file system type 'ext4'"),
        ({"type": "none", "device": "/srv"}, "file system type 'none'"),
        ({"type": "", "device": "/srv"}, "file system type ''"),
        ({"type": "TMPFS", "device": "t"}, "file system type 'TMPFS'"),
        ({"type": "nfs", "device": "10.0.0.5:/x"}, "file system type 'nfs'"),  # not in policy
        # tmpfs: only known-safe data.
        ({"type": "tmpfs", "device": "t", "o": "BIND"}, "tmpfs option 'BIND' (o=) is not"),
        ({"type": "tmpfs", "device": "t", "o": "defaults"}, "tmpfs option 'defaults' (o=)"),
        ({"type": "tmpfs", "device": "t", "o": "size"}, "tmpfs option 'size' (o=)"),
        ({"type": "tmpfs", "device": "t", "o": "context=x"}, "tmpfs option 'context=x' (o=)"),
        ({"type": "tmpfs", "device": "t", "o": "huge=always"}, "tmpfs option 'huge=always'"),
    ],
)
def test_refused_under_a_host_path_rule(options: dict[str, str], expected: str) -> None:
    found = problem(SRV, options)
    assert found is not None and found.startswith(expected), found


@pytest.mark.parametrize(
    ("options", "read_only"),
    [
        ({}, False),
        ({"size": "1g"}, False),
        ({"type": "tmpfs", "device": "tmpfs"}, False),
        ({"type": "tmpfs", "device": "/", "o": "size=1m,mode=1777,uid=1,gid=2"}, False),
        ({"type": "tmpfs", "device": "t", "o": "nr_inodes=9,nr_blocks=9,mpol=default"}, False),
        ({"type": "tmpfs", "device": "t", "o": "ro,nosuid,nodev,noexec,noatime,private"}, False),
        ({"type": "none", "device": "/srv/a", "o": "bind,ro"}, False),
        ({"type": "none", "device": "/srv/../srv/a", "o": "bind,rslave,ro"}, False),
        ({"type": "none", "device": "/srv/a", "o": "bind,ro"}, True),
    ],
)
def test_allowed(options: dict[str, str], read_only: bool) -> None:
    assert problem(SRV, options, read_only) is None


def test_a_writable_bind_of_a_read_only_path() -> None:
    """`ro,rw` is read-write (the last word wins), and `rbind,ro` leaves submounts writable.
    Old code: "ro" anywhere counted.

    Found by the review (tests/body/test_attacks_ci_runner.py): a read-only mount *using* the volume
    made a bind without `ro` count as read-only, but the volume binds as its own `o` says and
    the daemon (copying image content into it) or a second mount writes through it. Closed:
    the mount's ReadOnly does not count (both `read_only` values below)."""
    for o in ("bind", "bind,ro,rw", "rbind,ro"):
        for read_only in (False, True):
            assert problem(SRV, {"type": "none", "device": "/srv", "o": o}, read_only) == (
                "host path /srv (bind device, DriverOpts) must be mounted read-only"
            )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"type": "nfs", "device": "10.0.0.5:/export", "o": "addr=10.0.0.5,vers=4"}, None),
        ({"type": "nfs", "device": "a.files.example:/e", "o": "addr=10.0.0.5"}, None),
        ({"type": "nfs", "device": "[::1]:/e"}, "nfs server '::1' (DriverOpts) is not allowed"),
        ({"type": "nfs", "device": "10.0.0.5:/", "o": "addr=127.0.0.1"}, "nfs server '127.0.0.1'"),
        ({"type": "nfs", "device": "10.0.0.5:/", "o": "mountaddr=10.9.9.9"}, "nfs server '10.9"),
        ({"type": "nfs", "device": "10.0.0.5:/", "o": "mounthost=x"}, "nfs server 'x'"),
        ({"type": "nfs", "device": "/export"}, "nfs device '/export' is not HOST:/PATH"),
        ({"type": "cifs", "device": "//fs1/share", "o": "username=u,password=p"}, None),
        ({"type": "cifs", "device": "//fs2/share"}, "cifs server 'fs2' (DriverOpts) is not"),
        ({"type": "cifs", "device": "//fs1/s", "o": "ip=127.0.0.1"}, "cifs server '127.0.0.1'"),
        ({"type": "cifs", "device": "//fs1/s", "o": "unc=//x/y"}, "cifs option 'unc' (o=)"),
        ({"type": "cifs", "device": "fs1/s"}, "cifs device 'fs1/s' is not //HOST/SHARE"),
        ({"type": "nfs4", "device": "10.0.0.5:/"}, "file system type 'nfs4'"),  # not named
        # A bind is a bind, whatever network type it names.
        ({"type": "nfs", "device": "/srv", "o": "bind"}, "host path /srv (bind device, "),
    ],
)
def test_network_file_systems_need_their_servers_allowed(
    options: dict[str, str], expected: str | None
) -> None:
    found = problem(NFS, options)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found.startswith(expected), found


def test_volume_types_in_a_policy_file() -> None:
    def load(guardrails: str) -> Guardrails | None:
        text = (
            "policies:\n  p:\n    rules: [{allow: {sections: ['*']}}]\n"
            f"    guardrails: {guardrails}\n"
        )
        return parse_policy_text(text, "p.yaml").policies["p"].guardrails

    loaded = load("{volume_types: {nfs: [10.0.0.5, '*.example'], cifs: [fs1]}}")
    assert loaded is not None
    assert loaded.volume_types == {"nfs": ("10.0.0.5", "*.example"), "cifs": ("fs1",)}
    assert Guardrails().volume_types == {}
    for bad, message in (
        ("{volume_types: {proc: [x]}}", "only network file systems may be allowed"),
        ("{volume_types: {tmpfs: [x]}}", "tmpfs needs no entry"),
        ("{volume_types: {nfs: []}}", "name the servers it may connect to"),
    ):
        with pytest.raises(PolicyError, match=message):
            load(bad)


# ----- where options and names are found --------------------------------------------------------


def judge(g: Guardrails, operation: str, body: dict[str, Any]) -> object:
    try:
        return check_request(g, operation, "", json.dumps(body).encode())
    except BodyRefused as refusal:
        return refusal.status, refusal.reason


def test_inline_options_of_containers_and_services() -> None:
    """Finding 1 inline: `--mount ...,volume-opt=type=tmpfs,volume-opt=device=/,
    volume-opt=o=bind` in a container and in a service's ContainerSpec.Mounts. Old code."""
    options = {"type": "tmpfs", "device": "/", "o": "bind"}
    mount = {
        "Type": "volume",
        "Target": "/h",
        "VolumeOptions": {"DriverConfig": {"Options": options}},
    }
    where = "VolumeOptions.DriverConfig.Options"
    assert judge(Guardrails(), "ContainerCreate", {"HostConfig": {"Mounts": [mount]}}) == (
        403,
        f"host path / (bind device, HostConfig.Mounts[0].{where}) is not allowed",
    )
    service = {"TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Mounts": [mount]}}}
    for operation in ("ServiceCreate", "ServiceUpdate"):
        assert judge(Guardrails(), operation, service) == (
            403,
            f"host path / (bind device, TaskTemplate.ContainerSpec.Mounts[0].{where}) is not "
            "allowed",
        )
    # Another driver's options are that driver's business (judged by volume_drivers).
    mount["VolumeOptions"] = {"DriverConfig": {"Name": "nfsx", "Options": options}}
    assert judge(Guardrails(volume_drivers=frozenset({"nfsx"})), "ContainerCreate", {
        "HostConfig": {"Mounts": [mount]}
    }) == ()  # fmt: skip


def test_the_volumes_a_body_uses_by_name_are_returned_to_be_looked_up() -> None:
    """Old code: a volume used by name was trusted."""
    body = {
        "HostConfig": {
            "Binds": ["data:/d", "/srv/x:/x", "logs:/l:ro", "/anon"],
            "Mounts": [
                {"Type": "volume", "Source": "cache", "Target": "/c", "ReadOnly": True},
                {"Type": "volume", "Target": "/anonymous"},
                {"Type": "tmpfs", "Target": "/t"},
            ],
        }
    }
    g = Guardrails(host_paths=(HostPathRule("/srv", False),))
    assert judge(g, "ContainerCreate", body) == (
        NamedVolume("data", False, "HostConfig.Binds"),
        NamedVolume("logs", True, "HostConfig.Binds"),
        NamedVolume("cache", True, "HostConfig.Mounts[0].Source"),
    )
    # The deprecated top-level HostConfig fields count when there is no inner HostConfig.
    assert judge(g, "ContainerCreate", {"Image": "x", "Binds": ["v:/v"]}) == (
        NamedVolume("v", False, "Binds"),
    )
    service = {
        "TaskTemplate": {
            "ContainerSpec": {"Mounts": [{"Type": "volume", "Source": "s", "Target": "/s"}]}
        }
    }
    assert judge(g, "ServiceCreate", service) == (
        NamedVolume("s", False, "TaskTemplate.ContainerSpec.Mounts[0].Source"),
    )
    assert judge(g, "VolumeCreate", {"Name": "v"}) == ()


def test_to_look_up_once_per_name_read_write_first() -> None:
    volumes = (
        NamedVolume("a", True, "HostConfig.Binds"),
        NamedVolume("b", True, "HostConfig.Binds"),
        NamedVolume("a", False, "HostConfig.Mounts[0].Source"),
        NamedVolume("a", True, "HostConfig.Mounts[1].Source"),
    )
    assert to_look_up(volumes) == [
        NamedVolume("a", False, "HostConfig.Mounts[0].Source"),
        NamedVolume("b", True, "HostConfig.Binds"),
    ]


# ----- a volume used by name, judged on the daemon's answer ---------------------------------------


USED = NamedVolume("v", False, "HostConfig.Binds")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (None, None),  # no such volume: the daemon creates a plain one
        ({"Name": "v", "Driver": "local", "Options": None}, None),
        ({"Name": "v", "Driver": "local", "Options": {}}, None),
        ({"Driver": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}, None),
        (
            {"Driver": "local", "Options": {"type": "tmpfs", "device": "/", "o": "bind,ro"}},
            "host path / (bind device, volume 'v' used by HostConfig.Binds) is not allowed",
        ),
        (
            {"Driver": "local", "Options": {"type": "proc", "device": "proc"}},
            "file system type 'proc' (type=, volume 'v' used by HostConfig.Binds) is not allowed",
        ),
        ({"Driver": "rexray", "Options": {}}, "volume 'v' of driver 'rexray' is not allowed"),
        ({"Driver": "nfsx", "Options": {"device": "/"}}, None),  # an allowed driver
        ({"Driver": 1}, "volume 'v': the daemon's answer cannot be read"),
        (
            {"Driver": "local", "Options": {"o": 1}},
            "volume 'v': the daemon's answer cannot be read",
        ),
        ([], "volume 'v': the daemon's answer cannot be read"),
    ],
)
def test_named_volume_problem(answer: object, expected: str | None) -> None:
    g = Guardrails(volume_drivers=frozenset({"nfsx"}))
    assert named_volume_problem(g, USED, answer) == expected


def test_a_named_bind_used_read_only_under_a_read_only_rule() -> None:
    """An existing bind volume is read-only by its own `o` only: used read-only or not, one
    binding read-write is refused under a read-only rule (the review's finding: any other use
    of the volume writes the host path), and one binding `ro` is allowed."""
    answer = {"Driver": "local", "Options": {"type": "none", "device": "/srv", "o": "bind"}}
    for used in (NamedVolume("v", True, "HostConfig.Binds"), USED):
        assert named_volume_problem(SRV, used, answer) == (
            "host path /srv (bind device, volume 'v' used by HostConfig.Binds) must be mounted "
            "read-only"
        )
    answer = {"Driver": "local", "Options": {"type": "none", "device": "/srv", "o": "bind,ro"}}
    assert named_volume_problem(SRV, USED, answer) is None


def test_named_volumes_problem_asks_the_daemon() -> None:
    """The look-up: one GET /volumes/NAME per volume (quoted), 404 is a volume to be created,
    another client error refuses, and a 5xx is the daemon failing (LookupError_)."""
    bind = {"type": "none", "device": "/", "o": "bind"}
    answers = {
        "/volumes/plain": (200, {"Name": "plain", "Driver": "local", "Options": None}),
        "/volumes/bound": (200, {"Driver": "local", "Options": bind}),
        "/volumes/odd%2Fname": (301, None),
        "/volumes/broken": (500, {"message": "boom"}),
    }  # fmt: skip
    asked: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0].decode()
        path = line.split(" ")[1]
        asked.append(path)
        status, body = answers.get(path, (404, {"message": "no such volume"}))
        payload = json.dumps(body).encode()
        writer.write(f"HTTP/1.0 {status} X\r\n\r\n".encode() + payload)
        await writer.drain()
        writer.close()

    async def scenario(directory: str) -> list[object]:
        socket_path = str(pathlib.Path(directory) / "d.sock")
        server = await asyncio.start_unix_server(serve, socket_path)
        address = Address("unix", path=socket_path)
        results: list[object] = []
        async with server:
            for names in (["plain", "missing"], ["plain", "bound"], ["odd/name"], ["broken"]):
                volumes = [NamedVolume(n, False, "HostConfig.Binds") for n in names]
                try:
                    results.append(await named_volumes_problem(address, Guardrails(), volumes))
                except Exception as exc:  # the test records which one
                    results.append(type(exc).__name__)
            # Ownership mode: someone else's volume (no owner label here) that the ownership
            # check looks up next is left to it; one it does not look up is judged here.
            bound = [NamedVolume("bound", False, "HostConfig.Binds")]
            for checked in (frozenset({"bound"}), frozenset()):
                results.append(
                    await named_volumes_problem(address, Guardrails(), bound, "alice", checked)
                )
        return results

    with tempfile.TemporaryDirectory(prefix="dgv-", dir="/tmp") as directory:
        results = asyncio.run(scenario(directory))
    assert results == [
        None,
        "host path / (bind device, volume 'bound' used by HostConfig.Binds) is not allowed",
        "volume 'odd/name' cannot be looked up (the daemon answered 301)",
        "LookupError_",
        None,
        "host path / (bind device, volume 'bound' used by HostConfig.Binds) is not allowed",
    ]
    assert asked == [
        "/volumes/plain",
        "/volumes/missing",
        "/volumes/plain",
        "/volumes/bound",
        "/volumes/odd%2Fname",
        "/volumes/broken",
        "/volumes/bound",
        "/volumes/bound",
    ]
