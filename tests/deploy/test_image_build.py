"""How the image is built and published, checked without building it (tests/deploy/test_image.py
builds and runs it): the command the tests run is the Dockerfile's documented one plus only BASE
and the offline WHEELS argument; the build context is what .dockerignore leaves (seen by a real
build on the private daemon); the release workflow publishes ghcr.io/dockgate/dockgate for amd64 and
arm64 from the repository's Dockerfile (GitHub Actions cannot run here: only its shape is
checked); the deploy files name that image.

Would fail on the old code: the Dockerfile documented `pip wheel . -w wheels/` on the host and
`--build-arg BASE=...` as part of the command, its .dockerignore let only Dockerfile, deploy/ and
wheels/ through (no source: nothing to build from), there was no release workflow, and the deploy
files defaulted to a local `dockgate:latest`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.daemon import PrivateDaemon
from support.image import REPO, build_command

PUBLISHED = "ghcr.io/dockgate/dockgate"
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
DEPLOY_FILES = ("stack.yml", "stack-private.yml", "compose.sidecar.yml")


def _documented_build() -> list[str]:
    """The first `docker build ...` in the Dockerfile's header comment, without `docker`."""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("docker build "):
            return shlex.split(text)[1:]
    raise AssertionError("the Dockerfile's header shows no `docker build` command")


def _build_args(command: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split a `docker build` argument list into its --build-arg NAME=VALUE and the rest."""
    args: dict[str, str] = {}
    rest: list[str] = []
    words = iter(command)
    for word in words:
        if word == "--build-arg":
            name, _, value = next(words).partition("=")
            args[name] = value
        else:
            rest.append(word)
    return args, rest


def test_the_one_command_needs_no_argument() -> None:
    documented = _documented_build()
    assert documented == ["build", "-t", "dockgate", "."], documented
    text = (REPO / "Dockerfile").read_text()
    # Every build argument has a default that builds on a stock machine: the official slim
    # Python base, and no wheels directory (then pip builds from the source, with PyPI).
    assert re.search(r"^ARG BASE=python:3\.\d+-slim", text, re.MULTILINE), "BASE default"
    assert re.search(r"^ARG WHEELS=$", text, re.MULTILINE), "WHEELS is empty by default"
    assert "wheels/" not in text.replace(".wheels", ""), "no host-side wheels step any more"


def test_the_tests_build_the_documented_way_plus_base_and_wheels_only() -> None:
    ran = build_command("dockgate-test/x:y", "some-base", ".wheels-test-abc")
    args, rest = _build_args(ran)
    assert sorted(args) == ["BASE", "WHEELS"]
    documented = _documented_build()
    tag = documented[documented.index("-t") + 1]
    expected = [
        "dockgate-test/x:y" if word == tag else str(REPO) if word == "." else word
        for word in documented
    ]
    assert rest == expected
    # The wheels directory the tests write into the repository is git-ignored.
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", f"{args['WHEELS']}/x.whl"], check=False
    )
    assert ignored.returncode == 0


@pytest.mark.daemon
@pytest.mark.timeout(300)
def test_the_build_context_is_the_source_without_git_tests_or_caches(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: Path
) -> None:
    """A real `docker build` of the repository root with its .dockerignore, copying the context
    into an image to list it: the source and the offline wheels directory are in, the rest out."""
    wheels = REPO / f".wheels-test-{uuid.uuid4().hex[:8]}"
    wheels.mkdir()
    (wheels / "marker.whl").write_bytes(b"")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {busybox_image}\nCOPY . /ctx\n")
    tag = f"dockgate-test/context:{uuid.uuid4().hex[:8]}"
    try:
        daemon.docker("build", "-q", "-f", str(dockerfile), "-t", tag, str(REPO), timeout=240)
        listing = daemon.docker("run", "--rm", tag, "find", "/ctx").stdout.decode().split()
    finally:
        daemon.docker("rmi", "-f", tag, check=False)
        for child in wheels.iterdir():
            child.unlink()
        wheels.rmdir()
    found = {Path(entry).relative_to("/ctx").as_posix() for entry in listing if entry != "/ctx"}
    for needed in (
        "Dockerfile", "pyproject.toml", "README.md", "src/dockgate/__init__.py",
        "src/dockgate/cli.py", "deploy/entrypoint.py", f"{wheels.name}/marker.whl",
    ):  # fmt: skip
        assert needed in found, needed
    left_out = [".git", "tests", "bench", ".venv", "build", ".mypy_cache", ".ruff_cache"]
    present = [name for name in left_out if (REPO / name).exists()]
    assert {".git", "tests", "bench"} <= set(present)  # not vacuous: these always exist
    for name in present:
        assert not any(entry == name or entry.startswith(name + "/") for entry in found), name
    assert not [entry for entry in found if "__pycache__" in entry or ".egg-info" in entry]


def _workflow() -> dict[Any, Any]:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _step(steps: list[dict[str, Any]], action: str) -> dict[str, Any]:
    matches = [step for step in steps if str(step.get("uses", "")).startswith(action + "@")]
    assert len(matches) == 1, f"{action}: {len(matches)} steps"
    return matches[0]


def test_the_release_workflow_publishes_both_platforms_from_the_dockerfile_on_tags() -> None:
    workflow = _workflow()
    # YAML 1.1 (PyYAML) reads the key `on` as True; GitHub reads it as "on".
    trigger = workflow.get("on", workflow.get(True))
    assert trigger == {"push": {"tags": ["v*"]}}
    assert workflow["permissions"]["packages"] == "write"
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    order = [str(step.get("uses", "")).split("@")[0] for step in steps]
    assert order == [
        "actions/checkout", "docker/setup-qemu-action", "docker/setup-buildx-action",
        "docker/login-action", "docker/metadata-action", "docker/build-push-action",
    ]  # fmt: skip
    login = _step(steps, "docker/login-action")["with"]
    assert login["registry"] == "ghcr.io"
    assert login["password"] == "${{ secrets.GITHUB_TOKEN }}"
    meta = _step(steps, "docker/metadata-action")
    assert meta["with"]["images"] in (PUBLISHED, "${{ env.IMAGE }}")
    assert workflow["env"]["IMAGE"] == PUBLISHED
    tags = meta["with"]["tags"].split()
    assert "type=semver,pattern={{version}}" in tags
    assert "latest=auto" in meta["with"]["flavor"].split()
    build = _step(steps, "docker/build-push-action")["with"]
    assert build["context"] == "."
    assert (REPO / build["file"]).resolve() == (REPO / "Dockerfile").resolve()
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["tags"] == "${{ steps." + meta["id"] + ".outputs.tags }}"
    # The published build is the stock one: no offline wheels, no other base.
    assert "build-args" not in build


@pytest.mark.parametrize("name", DEPLOY_FILES)
def test_the_deploy_files_use_the_published_image(name: str) -> None:
    services = yaml.safe_load((REPO / "deploy" / name).read_text())["services"]
    images = [svc["image"] for svc in services.values() if "dockgate" in svc["image"].lower()]
    # The variable stays: the tests (and a private registry) put their own image in.
    assert images == [f"${{DOCKGATE_IMAGE:-{PUBLISHED}:latest}}"]
