"""A static HTTP client for the unix socket, to run inside busybox containers.

The containers of tests/auth/test_peer_e2e.py call dockgate through its socket mounted into
them. busybox has no client that speaks HTTP over a unix socket, the debootstrap python image
(support/image.py) takes minutes to make on a clean machine, and the host's python cannot be
mounted into a container without its libraries; a 60-line C program built with `cc -static`
(gcc and libc6-dev, installed by scripts/test.sh) runs in any container and is built in a
second.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

SOURCE = pathlib.Path(__file__).with_name("unixget.c")


def build_unixget(directory: pathlib.Path) -> pathlib.Path:
    """Compile unixget.c statically into `directory`; returns the binary's path."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler: scripts/test.sh installs gcc and libc6-dev")
    binary = directory / "unixget"
    subprocess.run(
        [compiler, "-static", "-O2", "-o", str(binary), str(SOURCE)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return binary
