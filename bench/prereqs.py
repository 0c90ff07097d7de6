"""Install what the bench needs when it is missing (Debian packages, the project's Python deps)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import tomllib

from targets import REPO_ROOT

# binary -> Debian package that provides it
APT_TOOLS = {
    "nginx": "nginx-light",
    "haproxy": "haproxy",
    "wrk": "wrk",
    "dockerd": "docker.io",
    "containerd": "docker.io",
    "curl": "curl",
}
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")
APT_ATTEMPTS = 6
APT_TIMEOUT_S = 900
NOFILE_WANTED = 65536


def _apt_env() -> dict[str, str]:
    return dict(os.environ, DEBIAN_FRONTEND="noninteractive")


def apt_install(packages: list[str]) -> None:
    """`apt-get install` with the repairs this machine image needs.

    dpkg stops with "unknown system group 'X' in statoverride file" when the image carries a
    statoverride entry for a group that does not exist; creating the group and retrying fixes it.
    """
    print(f"bench: installing {' '.join(packages)} with apt-get", flush=True)
    subprocess.run(
        ["apt-get", "update"],
        env=_apt_env(),
        timeout=APT_TIMEOUT_S,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    wanted = list(packages)
    for _attempt in range(APT_ATTEMPTS):
        proc = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *wanted],
            env=_apt_env(),
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
        if proc.returncode == 0:
            return
        out = proc.stdout + proc.stderr
        group = re.search(r"unknown system group '([^']+)' in statoverride file", out)
        user = re.search(r"unknown (?:system )?user '([^']+)' in statoverride file", out)
        if group:
            subprocess.run(["groupadd", "-r", group.group(1)], check=False)
        elif user:
            subprocess.run(
                ["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", user.group(1)], check=False
            )
        elif "nginx-light" in wanted and re.search(
            r"(Unable to locate package|has no installation candidate).*nginx-light", out
        ):
            wanted[wanted.index("nginx-light")] = "nginx"  # newer Debian dropped nginx-light
            continue
        else:
            raise RuntimeError(f"apt-get install {' '.join(wanted)} failed:\n{out[-2000:]}")
        subprocess.run(
            ["dpkg", "--configure", "-a"],
            env=_apt_env(),
            capture_output=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
    raise RuntimeError(f"apt-get install {' '.join(wanted)} kept failing")


def ensure_tools(need_dockgate: bool) -> None:
    missing = sorted({pkg for tool, pkg in APT_TOOLS.items() if shutil.which(tool) is None})
    if not any(os.path.isfile(p) for p in BUSYBOX_PATHS):
        missing.append("busybox-static")
    if shutil.which("docker") is None and "docker.io" not in missing:
        missing.append("docker.io")
    if missing:
        apt_install(missing)
    if need_dockgate:
        ensure_python_deps()


def ensure_python_deps() -> None:
    """pip-install the project's runtime dependencies that do not import (uvloop, httptools...)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    missing = []
    for spec in project.get("dependencies", []):
        name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(spec)
    if missing:
        print(f"bench: pip install {' '.join(missing)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", *missing], check=True, timeout=900)


def ensure_pip_module(module: str, package: str | None = None) -> None:
    """pip-install `package` (default: the module's name) if `module` does not import."""
    if importlib.util.find_spec(module) is not None:
        return
    print(f"bench: pip install {package or module}", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", package or module], check=True, timeout=900
    )
    importlib.invalidate_caches()


def ensure_cc() -> None:
    """A C compiler (and libc headers) for bench/templates/wrk_client_cert.c."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        apt_install(["gcc", "libc6-dev"])


def ensure_py_spy() -> str | None:
    """Path of py-spy, installing it with pip if needed; None if that fails."""
    found = shutil.which("py-spy")
    if found:
        return found
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "py-spy"],
        capture_output=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        return None
    candidate = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (candidate if os.path.exists(candidate) else None)


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE (children inherit it) so 2,000+ streams fit; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, NOFILE_WANTED)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
