"""dockgate's container image, built for real from the repository's Dockerfile.

No registry is reachable, so the base is made here: a Debian bookworm root file system with
python3 from debootstrap, imported as `BASE_TAG`. dockgate and its dependencies go in as wheels
built on the host, as the Dockerfile's own instructions say."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

from support.daemon import PrivateDaemon

REPO = pathlib.Path(__file__).resolve().parents[2]
BASE_TAG = "dockgate-test/debian-python:bookworm"
IMAGE_TAG = "dockgate-test/dockgate:test"


def build_dockgate_image(daemon: PrivateDaemon, work: pathlib.Path) -> str:
    """Build the image on ``daemon`` (making the base first if it has none); returns its tag."""
    if shutil.which("debootstrap") is None:
        raise FileNotFoundError("debootstrap not found: scripts/test.sh installs it")
    if daemon.docker("image", "inspect", BASE_TAG, check=False).returncode != 0:
        rootfs = work / "rootfs"
        subprocess.run(
            [
                "debootstrap", "--variant=minbase", "--include=python3",
                "bookworm", str(rootfs), "http://deb.debian.org/debian",
            ],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        tar = subprocess.run(
            ["tar", "-C", str(rootfs), "-c", "."], check=True, capture_output=True, timeout=300
        ).stdout
        daemon.docker("import", "-", BASE_TAG, input=tar, timeout=300)
    context = work / "context"
    context.mkdir()
    shutil.copy(REPO / "Dockerfile", context / "Dockerfile")
    shutil.copytree(REPO / "deploy", context / "deploy")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", str(REPO), "-w", str(context / "wheels")],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    daemon.docker(
        "build", "--build-arg", f"BASE={BASE_TAG}", "-t", IMAGE_TAG, str(context), timeout=600
    )
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
