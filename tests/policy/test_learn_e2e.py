"""`dockgate learn`, round trip: a session recorded through a gateway in audit mode (docker CLI
run with a read-only bind, a named volume and a network, exec as a numeric user, logs, cp,
build, and docker-compose up/down with a volume and a network) is learned into a policy; a
gateway enforcing that policy lets the same session through untouched, and refuses a held-back
set (privileged create, another host path, swarm init, exec as root, an image of another
repository), none of which the daemon shows happened.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.presetclients import audit_records

pytestmark = pytest.mark.daemon

AUDIT_POLICY = """\
policies:
  watch:
    mode: audit
    rules: [{allow: {sections: ["*"]}}]
"""

PROJECT_FILE = """\
version: "3.7"
services:
  app:
    image: {image}
    command: ["sh", "-c", "echo up > /data/mark && exec sleep 120"]
    volumes: [data:/data]
    networks: [inner]
volumes:
  data: {{}}
networks:
  inner: {{}}
"""


class Session:
    """The docker CLI and docker-compose through one gateway, in `work`."""

    def __init__(self, gateway: Gateway, work: pathlib.Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env |= {
            "DOCKER_HOST": gateway.url,
            "DOCKER_CONFIG": str(work),
            "DOCKER_BUILDKIT": "0",  # the classic builder: what the session's daemon builds with
        }
        self.work = work

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args),
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if ok:
            assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        return proc

    def docker(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("docker", *args, ok=ok)


def session(s: Session, image: str, shared: pathlib.Path, tag: str) -> str:
    """The recorded session; returns the name of its container, left running."""
    compose = shutil.which("docker-compose")
    assert compose is not None, "docker-compose not found: scripts/test.sh installs it"
    s.docker("volume", "create", f"vol-{tag}")
    s.docker("network", "create", f"net-{tag}")
    name = f"learn-{tag}"
    s.docker(
        *("run", "-d", "--name", name, "-v", f"{shared}:/in:ro", "-v", f"vol-{tag}:/data"),
        *("--network", f"net-{tag}", image, "sh", "-c", "cp /in/f /data/f && exec sleep 120"),
    )
    assert s.docker("exec", "-u", "1000", name, "cat", "/in/f").stdout.strip() == "shared"
    s.docker("logs", name)
    s.docker("cp", f"{name}:/in/f", str(s.work / f"copied-{tag}"))
    assert (s.work / f"copied-{tag}").read_text().strip() == "shared"
    (s.work / "ctx").mkdir(exist_ok=True)
    (s.work / "ctx" / "Dockerfile").write_text(f"FROM {image}\nRUN echo built > /built\n")
    s.docker("build", "-q", "-t", f"learned-build:{tag}", str(s.work / "ctx"))
    (s.work / "docker-compose.yml").write_text(PROJECT_FILE.format(image=image))
    s.run(compose, "-p", f"learn{tag}", "up", "-d")
    s.run(compose, "-p", f"learn{tag}", "down", "--volumes")
    return name


def teardown(s: Session, name: str, tag: str) -> None:
    s.docker("rm", "-f", name)
    s.docker("network", "rm", f"net-{tag}")
    s.docker("volume", "rm", f"vol-{tag}")


def remove(daemon: PrivateDaemon, tag: str) -> None:
    """Whatever a session left behind, straight through the daemon (after a failure)."""
    daemon.docker("rm", "-f", f"learn-{tag}", check=False)
    daemon.docker("network", "rm", f"net-{tag}", check=False)
    daemon.docker("volume", "rm", f"vol-{tag}", check=False)
    daemon.docker("image", "rm", f"learned-build:{tag}", check=False)


def test_learned_policy_lets_the_session_through_and_refuses_the_rest(
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    unique: Callable[[str], str],
) -> None:
    """Learn from an audit-mode session, enforce the result: the session passes again (no
    request refused), the held-back requests are refused and changed nothing on the daemon."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("shared\n")
    other_image = "dockgate-other/busybox:latest"
    daemon.docker("tag", busybox_image, other_image)
    tag = unique("l").rpartition("-")[2]
    recorded = tmp_path / "recorded.jsonl"
    watch = tmp_path / "watch.yaml"
    watch.write_text(AUDIT_POLICY)
    first = tmp_path / "first"
    first.mkdir()
    with running(Gateway(daemon.host, "--audit-log", str(recorded), policy=watch), "audit") as gw:
        s = Session(gw, first)
        try:
            session(s, busybox_image, shared, f"a{tag}")
            teardown(s, f"learn-a{tag}", f"a{tag}")  # the removals are part of the session
        finally:
            remove(daemon, f"a{tag}")

    learned = tmp_path / "learned.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "dockgate", "learn", "--from", str(recorded), "--out", str(learned)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = learned.read_text()
    assert "sections" not in text  # exact operations only
    assert f"{{path: {shared}, read_only: true}}" in text
    assert "docker.io/dockgate-test/busybox" in text
    assert "exec: {root: false, privileged: false}" in text
    assert "privileged: false" in text
    validate = subprocess.run(
        [sys.executable, "-m", "dockgate", "policy", "validate", str(learned)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert validate.returncode == 0, validate.stderr

    enforced = tmp_path / "enforced.jsonl"
    second = tmp_path / "second"
    second.mkdir()
    with running(
        Gateway(daemon.host, "--audit-log", str(enforced), policy=learned), "learned"
    ) as gw:
        s = Session(gw, second)
        try:
            name = session(s, busybox_image, shared, f"b{tag}")
            refused = [r for r in audit_records(enforced) if r["decision"] != "allow"]
            assert refused == [], refused
            execs_before = daemon.docker("inspect", "-f", "{{json .ExecIDs}}", name).stdout
            held_back = [
                ("run", "--name", f"priv-{tag}", "--privileged", busybox_image, "true"),
                ("run", "--name", f"etc-{tag}", "-v", "/etc:/x:ro", busybox_image, "true"),
                ("run", "--name", f"other-{tag}", other_image, "true"),
                ("swarm", "init", "--advertise-addr", "127.0.0.1"),
                ("exec", name, "id"),
                ("exec", "-u", "0", name, "id"),
            ]
            for args in held_back:
                proc2 = s.docker(*args, ok=False)
                assert proc2.returncode != 0, args
                assert "dockgate" in proc2.stderr, (args, proc2.stderr)
            # The daemon shows none of them happened.
            for prefix in ("priv", "etc", "other"):
                found = daemon.docker("ps", "-aq", "--filter", f"name={prefix}-{tag}").stdout
                assert found.strip() == b"", prefix
            state = daemon.docker("info", "-f", "{{.Swarm.LocalNodeState}}").stdout
            assert state.strip() == b"inactive"
            execs_after = daemon.docker("inspect", "-f", "{{json .ExecIDs}}", name).stdout
            assert json.loads(execs_after) == json.loads(execs_before)
            denied = {
                (r["operation"], r["status"])
                for r in audit_records(enforced)
                if r["decision"] == "deny"
            }
            assert {("ContainerCreate", 403), ("SwarmInit", 403), ("ContainerExec", 403)} <= denied
            teardown(s, name, f"b{tag}")
        finally:
            remove(daemon, f"b{tag}")
            daemon.docker("image", "rm", other_image, check=False)
