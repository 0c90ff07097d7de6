"""Options of the `local` volume driver, read as moby's driver and the kernel read them.

A `local` volume with options is a mount(2) the daemon makes on the host when a container first
uses the volume (moby volume/local/local_unix.go, v20.10.24 and HEAD alike):
`mount.Mount(device, path, type, o)`. moby/sys/mount's `parseOptions` (flags_unix.go) splits
`o` at commas: a word that is *exactly* a name of its `flags` table (case matters: `BIND` is not
`bind`) becomes a mount(2) flag, every other word file-system data. The kernel then decides by
the flags first (fs/namespace.c `path_mount`): with MS_REMOUNT it remounts, with MS_BIND it binds
`device`, a path of the host, **whatever `type` says**; only without them is `type` a new file
system made from `device` and the data.

This module turns the options into one value, `LocalMount`: nothing mounted, a bind of a host
path (judged by `host_paths`), or a file system of some type (tmpfs allowed, network file
systems under `volume_types`, everything else refused). What it cannot allow whatever the
policy says (an option key the driver does not read, `remount`, shared propagation, ...) is a
`VolumeOptionRefused` naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The keys the driver reads (local_unix.go `validOpts`); the daemon refuses others with
# "invalid option", and so does dockgate, so that a key of a newer driver is never unjudged.
# `size` is a project quota on the volume's own directory (it mounts nothing).
LOCAL_KEYS = ("type", "o", "device", "size")

# moby/sys/mount flags_unix.go `flags`, the words parseOptions makes mount(2) flags. ("defaults"
# is in the table with flag 0, which parseOptions passes on as data: it is not listed.)
MOUNT_FLAGS = frozenset(
    {
        "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync", "async",
        "dirsync", "remount", "mand", "nomand", "atime", "noatime", "diratime", "nodiratime",
        "bind", "rbind", "unbindable", "runbindable", "private", "rprivate", "shared",
        "rshared", "slave", "rslave", "relatime", "norelatime", "strictatime", "nostrictatime",
    }
)  # fmt: skip
# MS_BIND (rbind adds MS_REC): the kernel binds `device` and ignores the type and the data.
BIND_FLAGS = frozenset({"bind", "rbind"})
# Flags that are refused whatever the policy says: `remount` changes the mount already at the
# volume's path instead of making one; `shared`/`rshared` would propagate mounts made later
# inside the volume to its peers; `mand` (mandatory locks) is gone from newer kernels.
REFUSED_FLAGS = frozenset({"remount", "shared", "rshared", "mand"})
# Data options of tmpfs that dockgate lets through: moby's own list for tmpfs mounts
# (flags_unix.go `validFlags`, used by MergeTmpfsOptions for `--tmpfs`). They size and own the
# file system in memory; none of them reaches anything of the host.
TMPFS_DATA = frozenset({"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol"})
# Network file systems a policy may allow (`volume_types`), and the data options that name a
# server the kernel connects to (each must be an allowed server, as must the device's host):
# nfs `addr=`, `mountaddr=` and `mounthost=` (fs/nfs/fs_context.c), cifs `ip=`/`addr=`
# (fs/smb/client/fs_context.c).
NETWORK_TYPES = {
    "nfs": frozenset({"addr", "mountaddr", "mounthost"}),
    "nfs4": frozenset({"addr", "mountaddr", "mounthost"}),
    "cifs": frozenset({"ip", "addr"}),
    "smb3": frozenset({"ip", "addr"}),
}
# cifs options that give the share (and its server) in place of the device: refused.
NETWORK_REFUSED_DATA = frozenset({"unc", "source"})


class VolumeOptionRefused(ValueError):
    """Options no policy lets through; the message names the option."""


@dataclass(frozen=True, slots=True)
class LocalMount:
    """What the driver would mount: kind "none" (a plain directory), "bind" (`device` is a host
    path) or "filesystem" (a new file system of `fs_type`)."""

    kind: str
    device: str = ""
    fs_type: str = ""
    read_only: bool = False  # MS_RDONLY after every ro/rw word, in order (the last one wins)
    data: tuple[str, ...] = ()  # the file-system data words, as parseOptions leaves them


def local_mount(options: Mapping[str, str]) -> LocalMount:
    """Read `local` driver options (a volume's DriverOpts, or inline DriverConfig.Options)."""
    for key in sorted(options):
        if key not in LOCAL_KEYS:
            # Map keys are exact in Go: "Device" is not "device", and the driver refuses it.
            raise VolumeOptionRefused(f"volume option {key!r} is not one the local driver reads")
    fs_type = options.get("type", "")
    device = options.get("device", "")
    if not fs_type and not device:
        # needsMount: nothing is mounted without a device or a type (a `size` quota alone).
        return LocalMount("none")
    bind = read_only = recursive = False
    data: list[str] = []
    for word in options.get("o", "").split(","):
        if word not in MOUNT_FLAGS:
            if word:  # an empty word is dropped by the kernel's option parser
                data.append(word)
            continue
        if word in REFUSED_FLAGS:
            raise VolumeOptionRefused(f"mount option {word!r} (o=) is not allowed")
        if word in BIND_FLAGS:
            bind = True
            recursive = recursive or word == "rbind"
        elif word in ("ro", "rw"):
            read_only = word == "ro"  # "rw" clears MS_RDONLY: "ro,rw" is read-write
    if bind:
        if data:
            # The kernel ignores data on a bind; nothing legitimate needs any.
            raise VolumeOptionRefused(f"mount option {data[0]!r} (o=) is not allowed with bind")
        # moby remounts only the top of a bind read-only (mounter_linux.go `broflags`): under
        # an rbind, the mounts inside `device` stay writable, so it is not read-only.
        return LocalMount("bind", device, fs_type, read_only and not recursive)
    return LocalMount("filesystem", device, fs_type, read_only, tuple(data))


def tmpfs_problem(mount: LocalMount) -> str | None:
    """A tmpfs's data words must be known-safe `KEY=VALUE` options; its device is a label."""
    for word in mount.data:
        key, equals, _ = word.partition("=")
        if not equals or key not in TMPFS_DATA:
            return f"tmpfs option {word!r} (o=) is not allowed"
    return None


def network_servers(mount: LocalMount) -> list[str]:
    """Every server a network file system would connect to: the device's host and the data
    options that name one. VolumeOptionRefused for a device whose host cannot be told."""
    device = mount.device
    if mount.fs_type.startswith("nfs"):
        host, colon, _ = device.rpartition(":")  # HOST:/export, [v6]:/export
        if not colon or not host:
            raise VolumeOptionRefused(f"nfs device {device!r} is not HOST:/PATH")
    else:
        rest = device.replace("\\", "/")
        if not rest.startswith("//"):
            raise VolumeOptionRefused(f"cifs device {device!r} is not //HOST/SHARE")
        host = rest[2:].partition("/")[0]
    servers = [host.removeprefix("[").removesuffix("]")]
    address_keys = NETWORK_TYPES[mount.fs_type]
    for word in mount.data:
        key, _, value = word.partition("=")
        if key.lower() in NETWORK_REFUSED_DATA:
            raise VolumeOptionRefused(f"{mount.fs_type} option {key!r} (o=) is not allowed")
        if key in address_keys:
            servers.append(value.removeprefix("[").removesuffix("]"))
    return servers
