"""dockgate's container image, built for real from the repository's Dockerfile.

The build is the Dockerfile's documented one (`docker build -t dockgate .` on the repository
root, with the real .dockerignore) plus two build arguments and nothing else:

- BASE: no registry is reachable, so there is no python:3.12-slim-bookworm; the base is made
  here, a Debian bookworm root file system from debootstrap with python3 and python3-venv (the
  Dockerfile's build stage makes a venv and installs into it with the venv's own pip), imported
  as `BASE_TAG`.
- WHEELS (the Dockerfile's offline case): a container on the private daemon reaches no PyPI (no
  bridge network, and this sandbox's PyPI goes through a TLS-intercepting proxy whose CA a
  container lacks), so dockgate and its dependencies are built as wheels on the host
  (`pip wheel`), into a git-ignored directory of the repository (`.wheels-test-<random>`, so a
  developer's own `.wheels` is never touched), which is the context the build sees; the
  directory is removed after the build, whatever happens.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import uuid

from support.daemon import PrivateDaemon

REPO = pathlib.Path(__file__).resolve().parents[2]
BASE_TAG = "dockgate-test/debian-python-venv:bookworm"
IMAGE_TAG = "dockgate-test/dockgate:test"
# What the base needs: python3, and python3-venv for `python3 -m venv` with pip in it.
BASE_PACKAGES = ("python3", "python3-venv")


def build_command(tag: str, base: str, wheels: str) -> list[str]:
    """The `docker build` arguments the tests run (without the leading `docker`): the
    Dockerfile's documented command with ``tag``, plus BASE and the offline WHEELS argument."""
    return [
        "build",
        "--build-arg", f"BASE={base}",
        "--build-arg", f"WHEELS={wheels}",
        "-t", tag, str(REPO),
    ]  # fmt: skip


def make_base(daemon: PrivateDaemon, work: pathlib.Path) -> str:
    """Import the debootstrap base on ``daemon`` unless it has it already; returns its tag."""
    if daemon.docker("image", "inspect", BASE_TAG, check=False).returncode == 0:
        return BASE_TAG
    if shutil.which("debootstrap") is None:
        raise FileNotFoundError("debootstrap not found: scripts/test.sh installs it")
    rootfs = work / "rootfs"
    subprocess.run(
        [
            "debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
            "bookworm", str(rootfs), "http://deb.debian.org/debian",
        ],
        check=True, capture_output=True, timeout=900,
    )  # fmt: skip
    tar = subprocess.run(
        ["tar", "-C", str(rootfs), "-c", "."], check=True, capture_output=True, timeout=300
    ).stdout
    daemon.docker("import", "-", BASE_TAG, input=tar, timeout=300)
    shutil.rmtree(rootfs, ignore_errors=True)
    return BASE_TAG


def build_dockgate_image(daemon: PrivateDaemon, work: pathlib.Path) -> str:
    """Build the image on ``daemon`` (making the base first if it has none); returns its tag."""
    base = make_base(daemon, work)
    wheels = f".wheels-test-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-w", str(REPO / wheels)],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        daemon.docker(*build_command(IMAGE_TAG, base, wheels), timeout=900)
    finally:
        shutil.rmtree(REPO / wheels, ignore_errors=True)
    return IMAGE_TAG


def copy_image(source: PrivateDaemon, target: PrivateDaemon, tag: str) -> str:
    """``docker save`` from one daemon, ``docker load`` into the other; returns the image ID."""
    saved = source.docker("save", tag, timeout=300).stdout
    target.docker("load", input=saved, timeout=300)
    return image_id(target, tag)


def image_id(daemon: PrivateDaemon, tag: str) -> str:
    """The image's ID (``sha256:...``): the same on every daemon that holds the image, and a
    reference Swarm never tries to pull."""
    return daemon.docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.decode().strip()
