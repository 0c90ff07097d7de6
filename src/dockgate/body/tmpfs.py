"""Options of the tmpfs mounts a container asks for, judged word by word.

A container's tmpfs comes from `HostConfig.Tmpfs` (target -> "opt,opt,...", `docker run
--tmpfs`) or from a `Mounts[]` entry of Type tmpfs (`TmpfsOptions`: SizeBytes and Mode, which
the daemon formats itself, and from API 1.46 `Options`, a list of [flag] or [key, value]).
moby (daemon/oci_linux.go setMounts, v20.10.24 and HEAD alike) prepends its defaults
("noexec,nosuid,nodev,rprivate"), splits the caller's words at commas and merges them with
moby/sys/mount `MergeTmpfsOptions` (flags_unix.go): a word of the mount `flags` table is kept
as a flag, `KEY=VALUE` of its `validFlags` (size, mode, uid, gid, nr_inodes, nr_blocks, mpol)
as data, anything else refused. runc then mounts "tmpfs" at the target with those flags.

The flags table holds more than tmpfs needs: with `remount`, runc's mount(2) remounts the
mount already at the target instead of making a tmpfs, so `{"/sys": "remount"}` turns the
container's read-only sysfs read-write (the host kernel's parameters), and a tmpfs "over" a
read-only bind of a host path makes that bind writable. `bind`/`rbind` and the propagation
flags change what the mount is or where later mounts go. Only the words below pass.

The target is not judged: a tmpfs made at a path is new and empty, so it hides what was
there (nothing of the host becomes visible or writable through it); runc refuses tmpfs targets
under /proc itself (libcontainer/rootfs_linux.go checkProcMount), and Docker's masks
(MaskedPaths, ReadonlyPaths) are applied after the mounts, over whatever is at their paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dockgate.body.volumeopts import TMPFS_DATA

# Flags of moby/sys/mount's table that only set how the new tmpfs behaves (read-only,
# suid/dev/exec on its own files, timestamps, sync): nothing outside the tmpfs changes.
# Not here, so refused: remount, bind, rbind, [r]private, [r]shared, [r]slave, [r]unbindable
# (moby adds rprivate itself), mand (mandatory locks). "defaults" is skipped by
# MergeTmpfsOptions.
TMPFS_FLAGS = frozenset(
    {
        "defaults", "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "sync",
        "async", "dirsync", "nomand", "atime", "noatime", "diratime", "nodiratime", "relatime",
        "norelatime", "strictatime", "nostrictatime",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TmpfsMount:
    """A tmpfs the container asks for: its option words as the daemon splits them."""

    target: str
    words: tuple[str, ...]
    via: str  # "HostConfig.Tmpfs", "Mounts[0].TmpfsOptions.Options", ...


def tmpfs_data_words(data: str) -> tuple[str, ...]:
    """The words of a `HostConfig.Tmpfs` value: empty means none (oci_linux.go adds the
    caller's words only for a non-empty value); otherwise every comma-separated word, empty
    ones included (MergeTmpfsOptions refuses those)."""
    return tuple(data.split(",")) if data != "" else ()


def option_words(options: Iterable[list[str]]) -> tuple[str, ...]:
    """`TmpfsOptions.Options` ([flag] or [key, value]) as the words moby makes of them
    (daemon/volume/mounts/linux_parser.go validateTmpfsOptions joins a pair with "=")."""
    return tuple("=".join(option) for option in options)


def word_problem(word: str) -> str | None:
    """Why one option word is refused (None: allowed)."""
    if word in TMPFS_FLAGS:
        return None
    key, equals, _ = word.partition("=")
    if equals and key in TMPFS_DATA:
        return None
    return f"tmpfs option {word!r} is not allowed"


def tmpfs_problem(mount: TmpfsMount) -> str | None:
    for word in mount.words:
        problem = word_problem(word)
        if problem is not None:
            return f"{problem} ({mount.via} {mount.target!r})"
    return None
