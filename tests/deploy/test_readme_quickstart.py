"""The README's quick start, followed literally, and the README's links.

The commands are not copied here: they are read from the fenced blocks that follow the
``<!-- quickstart:NAME -->`` markers in README.md, and run as they are written, with ``/bin/sh``,
in a clean copy of the repository (its tracked files), with a fresh HOME and PATH starting with
/usr/bin, so ``python3`` is Debian's own /usr/bin/python3 (externally managed, PEP 668; no pip),
as on a stock Debian 12 machine; not the Python that runs these tests. pip in the new venv uses
the machine's pip configuration and index, as a user's would.

The gateway the first command starts forwards to the session's private daemon (the upstream comes
from DOCKER_HOST, as the README says), made a single-node Swarm manager with a ``busybox`` image,
so every "try it" command has something to show. The quick start listens on 127.0.0.1:2375, the
README's address, so that port must be free on this machine (checked first).

Before this test, the README's quick start failed as written (issue 13): its first command was
``python3 -m pip install .`` (refused by Debian's Python) and its try-it block started the gateway
with ``SERVICES=1 TASKS=1 NODES=1``, under which ``docker ps`` and ``docker run`` get 403.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from support.daemon import PrivateDaemon
from support.paths import REPO
from support.swarm import single_node_swarm

README = REPO / "README.md"
LISTEN = ("127.0.0.1", 2375)  # what the README's "try it" commands call
RUN = uuid.uuid4().hex[:8]
INSTALL_TIMEOUT = 600  # venv + pip install from the index, on a loaded 2-core machine
# pytest-timeout counts the module fixture (the install) into the first test that uses it.
SLOW = pytest.mark.timeout(INSTALL_TIMEOUT + 300)

# The README says "any recent version" of the docker CLI: Debian 12's (20.10) and, where this
# machine has one, the current one in /usr/local/bin.
CLIS = [d for d in ("/usr/bin", "/usr/local/bin") if os.access(f"{d}/docker", os.X_OK)]

GATEWAY_ONLY = pytest.mark.skipif(
    os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
    reason="DOCKGATE_TEST_DIRECT=1: the quick start is about the gateway",
)


# ----- the README's blocks ----------------------------------------------------------------------


def readme_block(name: str, text: str | None = None) -> str:
    """The body of the first fenced block after ``<!-- quickstart:NAME -->``."""
    text = README.read_text() if text is None else text
    marker = f"<!-- quickstart:{name} -->"
    assert text.count(marker) == 1, f"README.md has {text.count(marker)} {marker!r} markers"
    after = text.split(marker, 1)[1].lstrip("\n")
    assert after.startswith("```"), f"{marker} is not followed by a fenced block"
    return after.split("\n", 1)[1].split("```", 1)[0]


def readme_commands(name: str) -> list[str]:
    """The non-empty lines of a quick-start block: one shell command each."""
    return [line for line in readme_block(name).splitlines() if line.strip()]


@dataclass(frozen=True)
class Refusal:
    command: str
    # What the docker CLI prints, from "dockgate:" on: the gateway's message as it sent it
    # (the 20.10 CLI adds a full stop, the current one does not).
    message: str


def readme_refusal() -> Refusal:
    """The ``$ COMMAND`` line of the refused block, and the message shown under it."""
    lines = [line for line in readme_block("refused").splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0].startswith("$ "), lines
    assert "dockgate: " in lines[1], lines[1]
    return Refusal(lines[0][2:], "dockgate: " + lines[1].split("dockgate: ", 1)[1])


def test_the_quick_start_is_two_commands_the_first_one_line() -> None:
    """Issue 13: two commands, the first one line, and Debian's Python can run it (a venv, not
    ``pip install`` into the system Python, which PEP 668 refuses)."""
    serve = readme_commands("serve")
    assert len(serve) == 1, serve
    assert "python3 -m pip install" not in serve[0]
    assert serve[0].startswith("python3 -m venv "), serve[0]
    assert "--policy examples/policies/quickstart.yaml" in serve[0]
    assert readme_commands("test") == ["sudo scripts/test.sh"]


def test_the_readme_test_command_is_what_ci_runs() -> None:
    """`.ci/run` runs scripts/test.sh, and scripts/test.sh installs the venv module the quick
    start needs on Debian (python3-venv) before the tests use it."""
    words = readme_commands("test")[0].split()
    assert words[0] == "sudo" and words[1:] == ["scripts/test.sh"], words
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r'^exec bash scripts/test\.sh "\$@"$', ci, re.M), ci
    script = (REPO / "scripts" / "test.sh").read_text()
    packages = script.split("APT_PACKAGES=(", 1)[1].split("\n)\n", 1)[0]
    assert re.search(r"^\s*python3-venv\b", packages, re.M), packages


def test_the_readme_is_a_front_page() -> None:
    """About 150 lines, with the sections issue 13 asks for, each pointing into docs/."""
    text = README.read_text()
    assert len(text.splitlines()) <= 200, len(text.splitlines())
    headings = re.findall(r"^## (.+)$", text, re.M)
    for wanted in (
        "Quick start",
        "Try it",
        "Migrating from docker-socket-proxy",
        "Migrating from nginx",
        "The image",
        "A policy",
        "Documentation",
        "Status",
    ):
        assert wanted in headings, (wanted, headings)
    for doc in ("policy", "security", "deploy", "clients", "operations", "testing", "benchmark"):
        assert f"](docs/{doc}.md)" in text, doc


# ----- links ------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(path: pathlib.Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped except
    ``-`` and ``_``, spaces as ``-`` (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def _markdown_files() -> list[pathlib.Path]:
    return [README, REPO / "THREAT_MODEL.md", *sorted((REPO / "docs").glob("*.md"))]


# Pages other issue-13 changes write (the image and the systemd unit); a link to them is
# checked once they exist.
WRITTEN_ELSEWHERE = {REPO / "docs" / "image.md", REPO / "docs" / "systemd.md"}


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(path: pathlib.Path) -> None:
    """Moving the README's sections into docs/ broke no link: each relative link names a file
    that exists, and each ``#anchor`` a heading of that file."""
    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            if linked not in WRITTEN_ELSEWHERE:
                broken.append(target)
            continue
        if anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(target)
    assert not broken, f"{path.relative_to(REPO)}: {broken}"


def test_no_page_points_into_the_old_readme() -> None:
    """Anchors of sections that left the README (``README.md#securing-dockgate``) would land on
    the front page's top."""
    old = ("securing-dockgate", "deploying", "running-it", "tests", "benchmark", "how-it-works")
    for path in [*_markdown_files(), *REPO.glob("examples/**/*"), *REPO.glob("deploy/*")]:
        if path.is_file():
            text = path.read_text(errors="replace")
            for anchor in old:
                assert f"README.md#{anchor}" not in text, (path, anchor)
            if path != README:
                assert f"(#{anchor})" not in text or anchor in _anchors(path), (path, anchor)


# ----- the quick start, run -----------------------------------------------------------------------


def _port_free(address: tuple[str, int]) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(address)
        except OSError:
            return False
    return True


def _listening(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def _clean_copy(work: pathlib.Path) -> pathlib.Path:
    """The repository's tracked files (as they are in the working tree), nothing else: no venv,
    no egg-info, no caches."""
    names = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    copy = work / "dockgate"
    for raw in names:
        if not raw:
            continue
        source = REPO / os.fsdecode(raw)
        if not source.is_file():
            continue  # a tracked file deleted in the working tree
        target = copy / os.fsdecode(raw)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return copy


def _user_env(home: pathlib.Path, docker_host: str) -> dict[str, str]:
    """A login shell's environment on Debian 12: /usr/bin first (Debian's python3), a HOME of
    its own (no ~/.docker, no pip cache), the machine's pip settings, no Python of the test run
    leaking in (PYTHONPATH, a virtualenv, pyenv)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.startswith("PIP_") or key in ("LANG", "LC_ALL", "TERM", "TMPDIR")
    }
    env["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/bin"
    env["HOME"] = str(home)
    env["DOCKER_HOST"] = docker_host
    env["DOCKER_CLI_HINTS"] = "false"
    return env


@dataclass
class QuickStart:
    copy: pathlib.Path
    env: dict[str, str]
    daemon: PrivateDaemon
    running: str  # a container started straight on the daemon, which `docker ps` must not show
    service: str  # a swarm service made straight on the daemon, which /services must not list

    def sh(
        self, command: str, cli: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """One README line, run as written by /bin/sh in the copy (with the directory ``cli``
        first on PATH: which docker CLI answers)."""
        env = self.env if cli is None else self.env | {"PATH": f"{cli}:{self.env['PATH']}"}
        return subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def container_ids(self) -> set[str]:
        out = self.daemon.docker("ps", "-aq", "--no-trunc").stdout.decode()
        return set(out.split())


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the shell's process group (the gateway is its child), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def quickstart(daemon: PrivateDaemon, busybox_image: str) -> Iterator[QuickStart]:
    """The README's first command running in a clean copy, in front of the session's daemon
    made a Swarm manager, with ``busybox`` tagged there."""
    if not _port_free(LISTEN):
        pytest.fail(
            "127.0.0.1:2375, where the README's quick start listens, is taken on this machine"
        )
    work = pathlib.Path(tempfile.mkdtemp(prefix="dg-readme-", dir="/tmp"))
    tagged = daemon.docker("image", "inspect", "busybox:latest", check=False).returncode != 0
    if tagged:
        daemon.docker("tag", busybox_image, "busybox:latest")
    running = f"dgt-qs-ps-{RUN}"
    service = f"dgt-qs-svc-{RUN}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with single_node_swarm(daemon, joined_ok=True):
            daemon.docker("run", "-d", "--name", running, busybox_image, "sleep", "600")
            daemon.docker(
                *("service", "create", "--detach", "--no-resolve-image", "--name", service),
                *(busybox_image, "sleep", "600"),
            )
            copy = _clean_copy(work)
            home = work / "home"
            home.mkdir()
            env = _user_env(home, daemon.host)
            log = work / "serve.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", readme_commands("serve")[0]],
                    cwd=copy,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as one
                )
            deadline = time.monotonic() + INSTALL_TIMEOUT
            # Its own "listening on" line, not just someone answering on the port (another
            # process may have taken it since the check above).
            mine = f"dockgate: listening on tcp://{LISTEN[0]}:{LISTEN[1]}"
            while not (_listening(LISTEN) and mine in log.read_text(errors="replace")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                    pytest.fail(f"the README's first command did not start a gateway:\n{tail}")
                time.sleep(0.5)
            yield QuickStart(copy, env, daemon, running, service)
    finally:
        if proc is not None:
            _stop_group(proc)
        daemon.docker("service", "rm", service, check=False)
        daemon.docker("rm", "-f", running, check=False)
        if tagged:
            daemon.docker("rmi", "busybox:latest", check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.daemon
@GATEWAY_ONLY
@SLOW
def test_the_gateway_runs_on_debians_python_from_the_venv(quickstart: QuickStart) -> None:
    """The venv the first command made is Debian's /usr/bin/python3 (not this test run's), and
    the process listening on 127.0.0.1:2375 is its dockgate."""
    venv_python = quickstart.copy / ".venv" / "bin" / "python3"
    assert os.path.realpath(venv_python).startswith("/usr/bin/python3"), venv_python
    cfg = (quickstart.copy / ".venv" / "pyvenv.cfg").read_text()
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg
    listening = subprocess.run(
        ["ss", "-Hltnp", f"src {LISTEN[0]}:{LISTEN[1]}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    pids = {int(pid) for pid in re.findall(r"pid=(\d+)", listening)}
    assert pids, listening
    for pid in pids:
        proc = pathlib.Path(f"/proc/{pid}")
        argv = [os.fsdecode(a) for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        assert os.path.realpath(proc / "exe").startswith("/usr/bin/python3"), argv
        assert (proc / "cwd").resolve() == quickstart.copy.resolve(), argv
        assert argv[1:3] == [".venv/bin/dockgate", "serve"], argv
    ping = quickstart.sh("curl -s http://127.0.0.1:2375/_ping")
    assert ping.stdout == "OK", ping


@pytest.mark.daemon
@GATEWAY_ONLY
@SLOW
@pytest.mark.parametrize("cli", CLIS)
def test_every_try_it_command_works_as_the_readme_says(quickstart: QuickStart, cli: str) -> None:
    """Each line of the README's "try it" and swarm blocks, run as written: `docker run --rm
    busybox echo hello` prints hello and leaves nothing behind, `docker run -d --name web`
    makes a container labelled for the gateway's anonymous owner, `docker ps` lists it and not
    the host's own container (ownership), `docker service create --name api` makes a service
    and `curl .../services` lists it and not the host's own service. Each line must be one of
    these (a new line in the README needs its check here)."""
    commands = readme_commands("try") + readme_commands("swarm")
    checked = set()
    try:
        for command in commands:
            words = shlex.split(command)
            before = quickstart.container_ids()
            proc = quickstart.sh(command, cli)
            what = f"{command!r} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            assert proc.returncode == 0, what
            if words[-2:] == ["docker", "ps"]:
                lines = proc.stdout.splitlines()
                assert lines[0].startswith("CONTAINER ID"), what
                assert any(line.endswith(" web") for line in lines[1:]), what
                assert not any(line.endswith(quickstart.running) for line in lines[1:]), what
                checked.add("ps")
            elif words[1:3] == ["docker", "run"] and words[-2:] == ["echo", "hello"]:
                assert proc.stdout == "hello\n", what
                assert quickstart.container_ids() == before, "docker run --rm left a container"
                checked.add("run --rm")
            elif words[1:3] == ["docker", "run"] and "-d" in words:
                name = words[words.index("--name") + 1]
                labels = quickstart.daemon.docker(
                    "inspect", "-f", "{{json .Config.Labels}}", name
                ).stdout
                assert json.loads(labels).get("io.dockgate.owner") == "local", labels
                checked.add("run -d")
            elif words[1:4] == ["docker", "service", "create"]:
                name = words[words.index("--name") + 1]
                quickstart.daemon.docker("service", "inspect", name)
                checked.add("service create")
            elif words[0] == "curl" and words[-1].endswith("/services"):
                names = [s["Spec"]["Name"] for s in json.loads(proc.stdout)]
                assert "api" in names and quickstart.service not in names, what
                checked.add("services")
            else:
                pytest.fail(f"a try-it command this test does not check: {command!r}")
        # What ownership keeps out: the host's own container, made straight on the daemon.
        denied = quickstart.sh(
            f"DOCKER_HOST=tcp://127.0.0.1:2375 docker exec {quickstart.running} true", cli
        )
        assert denied.returncode != 0 and "No such container" in denied.stderr, denied
    finally:
        quickstart.daemon.docker("rm", "-f", "web", check=False)
        quickstart.daemon.docker("service", "rm", "api", check=False)
    assert checked == {"run --rm", "run -d", "ps", "service create", "services"}, commands


@pytest.mark.daemon
@GATEWAY_ONLY
@SLOW
@pytest.mark.parametrize("cli", CLIS)
def test_what_the_quick_start_refuses_is_refused_with_the_readmes_message(
    quickstart: QuickStart, cli: str
) -> None:
    """The README's refused command gets the message it shows, and the daemon gets no
    container. Straight to the daemon the same request is accepted: `docker create` with the
    README's arguments makes a privileged container there (created, not started: this machine's
    sandbox cannot start one), so the refusal is the gateway's, not the daemon's."""
    refusal = readme_refusal()
    words = shlex.split(refusal.command)
    assert words[0] == "DOCKER_HOST=tcp://127.0.0.1:2375", words
    assert words[1:4] == ["docker", "run", "--rm"] and "--privileged" in words, words
    direct = quickstart.daemon.env() | {"PATH": quickstart.env["PATH"]}
    straight = subprocess.run(
        ["docker", "create", *words[4:]],
        env=direct,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert straight.returncode == 0, straight.stderr
    cid = straight.stdout.strip()
    try:
        inspected = json.loads(quickstart.daemon.docker("inspect", cid).stdout)[0]
        assert inspected["HostConfig"]["Privileged"] is True
    finally:
        quickstart.daemon.docker("rm", "-f", cid, check=False)
    before = quickstart.container_ids()
    proc = quickstart.sh(refusal.command, cli)
    assert proc.returncode != 0, proc.stdout
    assert refusal.message in proc.stderr, (refusal.message, proc.stderr)
    assert quickstart.container_ids() == before, "a refused create left a container"
