"""The image's entrypoint: run dockgate as an unprivileged user that can use the socket.

Started as root (the default), it looks at the group owning the mounted Docker socket, takes
that group as a supplementary one, drops to uid/gid 65532, and runs dockgate: no root process
stays. Started as another user (`--user`), it checks that the socket is usable and, when not,
says in one line which `--group-add` the container needs. Arguments go to dockgate (`serve` by
default). Run by the virtual environment's python3 (/opt/dockgate/bin, first on the image's
PATH), which is the one that has dockgate installed.
"""

from __future__ import annotations

import os
import stat
import sys

UNPRIVILEGED = 65532


def _upstream_argument(argv: list[str]) -> str | None:
    """`--upstream X` or `--upstream=X` on the command line (which wins over variables)."""
    for index, arg in enumerate(argv):
        if arg == "--upstream" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--upstream="):
            return arg.partition("=")[2]
    return None


def _socket_path(argv: list[str]) -> str | None:
    upstream = (
        _upstream_argument(argv)
        or os.environ.get("DOCKGATE_UPSTREAM")
        or os.environ.get("DOCKER_HOST")
        or ""
    )
    if upstream.startswith("unix://"):
        return upstream[len("unix://") :]
    return "/var/run/docker.sock" if not upstream else None


def main() -> int:
    path = _socket_path(sys.argv[1:])
    group = None
    if path is not None:
        try:
            info = os.stat(path)
        except OSError as exc:
            print(
                f"dockgate: error: {path}: {exc.strerror}; mount the Docker socket", file=sys.stderr
            )
            return 2
        if not stat.S_ISSOCK(info.st_mode):
            print(f"dockgate: error: {path} is not a socket", file=sys.stderr)
            return 2
        group = info.st_gid
    if os.getuid() == 0:
        os.setgroups([group] if group is not None else [])
        os.setgid(UNPRIVILEGED)
        os.setuid(UNPRIVILEGED)
    if path is not None and not os.access(path, os.R_OK | os.W_OK):
        print(
            f"dockgate: error: cannot use {path} as uid {os.getuid()}: run the container with "
            f"--group-add {group}",
            file=sys.stderr,
        )
        return 2
    from dockgate.cli import main as dockgate  # noqa: PLC0415 - after dropping privileges

    return dockgate(sys.argv[1:] or ["serve"])


if __name__ == "__main__":
    sys.exit(main())
