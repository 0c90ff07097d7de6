"""The credential tools against a running gateway and the real daemon.

A gateway runs with `--htpasswd F --tokens T`, files that `dockgate htpasswd` and `dockgate
token` then edit while it runs: a user added can use the docker CLI within a reload period, a
changed password replaces the old one, a removed user gets 401; a token created works and a
revoked one (by name, or every token of an identity) is refused, with nothing done on the
daemon. The files start in directories that do not exist yet (the tools make them).

These commands did not exist before issue 13 (only `token create`, which failed with a
traceback in a missing directory).
"""

from __future__ import annotations

import pathlib
import subprocess
import time
import uuid

import pytest
import requests

from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, run_dockgate, running
from support.remote import basic_header, remote_docker

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(180)]

NO_THROTTLE = ("--auth-failures", "0", "--auth-failures-per-user", "0")
# The files are checked for changes once a second (watched.py); allow for a loaded machine.
RELOAD_LIMIT_SECONDS = 5.0
RUN = uuid.uuid4().hex[:10]


def dockgate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_dockgate(*args, stdin=stdin)


def done(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def ping_status(gw: Gateway, authorization: str) -> int:
    return requests.get(
        f"{gw.http_base}/_ping", headers={"Authorization": authorization}, timeout=10
    ).status_code


def wait_status(gw: Gateway, authorization: str, status: int) -> float:
    """Seconds until `/_ping` with these credentials answers `status`."""
    started = time.monotonic()
    while ping_status(gw, authorization) != status:
        assert time.monotonic() - started < RELOAD_LIMIT_SECONDS, gw.output()
        time.sleep(0.1)
    return time.monotonic() - started


def exists(daemon: PrivateDaemon, name: str) -> bool:
    return daemon.docker("container", "inspect", name, check=False).returncode == 0


def test_htpasswd_add_and_remove_take_effect_on_a_running_gateway(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """add USER -> that user's docker CLI works; add again -> only the new password works;
    remove -> `dockgate: invalid credentials` (401), for the CLI and on a keep-alive client."""
    htpasswd = tmp_path / "etc" / "dockgate" / "htpasswd"
    keeper_pw, alice_pw, alice_new = f"keep-{RUN}", f"alice-{RUN}", f"alice2-{RUN}"
    done(dockgate("htpasswd", "add", "keeper", "--file", str(htpasswd), "--cost", "4",
                  "--password-stdin", stdin=keeper_pw + "\n"))  # fmt: skip
    gw = Gateway(daemon.host, "--htpasswd", str(htpasswd), *NO_THROTTLE)
    with running(gw, "the gateway with an htpasswd file"):
        alice = basic_header("alice", alice_pw)
        refused = remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": alice})
        assert refused.returncode != 0 and "dockgate: invalid credentials" in refused.stderr

        done(dockgate("htpasswd", "add", "alice", "--file", str(htpasswd), "--cost", "4",
                      "--password-stdin", stdin=alice_pw + "\n"))  # fmt: skip
        wait_status(gw, alice, 200)
        done(remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": alice}))

        done(dockgate("htpasswd", "add", "alice", "--file", str(htpasswd), "--cost", "4",
                      "--password-stdin", stdin=alice_new + "\n"))  # fmt: skip
        wait_status(gw, alice, 401)  # the old password, remembered as a success, no longer is
        renewed = basic_header("alice", alice_new)
        done(remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": renewed}))

        with requests.Session() as session:  # one keep-alive connection that logged in
            url, headers = f"{gw.http_base}/_ping", {"Authorization": renewed}
            assert session.get(url, headers=headers, timeout=10).status_code == 200
            done(dockgate("htpasswd", "remove", "alice", "--file", str(htpasswd)))
            wait_status(gw, renewed, 401)
            assert session.get(url, headers=headers, timeout=10).status_code == 401
        gone = remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": renewed})
        assert gone.returncode != 0 and "dockgate: invalid credentials" in gone.stderr
        assert ping_status(gw, basic_header("keeper", keeper_pw)) == 200
        assert "reload of" not in gw.stderr_text(), gw.output()  # every edit loaded


def test_token_revoke_takes_effect_on_a_running_gateway(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, busybox_image: str, cleanup: Cleanup
) -> None:
    """A token made by `token create` while the gateway runs creates a container; after
    `token revoke NAME` the same call is 401 and the daemon has no new container; `revoke
    --identity` ends every token of that identity and leaves the others working."""
    tokens = tmp_path / "etc" / "dockgate" / "tokens"

    def create(name: str, identity: str) -> str:
        proc = done(dockgate("token", "create", "--file", str(tokens), "--name", name,
                             "--identity", identity))  # fmt: skip
        return "Bearer " + proc.stdout.strip()

    keeper = create("keeper", "ops")
    gw = Gateway(daemon.host, "--tokens", str(tokens), *NO_THROTTLE)
    with running(gw, "the gateway with a tokens file"):
        ci = create("ci", "runner")
        ci2 = create("ci2", "runner")
        deploy = create("deploy", "deployer")
        wait_status(gw, deploy, 200)
        first, second = f"cred-{RUN}-a", f"cred-{RUN}-b"
        cleanup.container(first)
        cleanup.container(second)
        done(remote_docker(gw.url, tmp_path, "create", "--name", first, busybox_image, "true",
                           headers={"Authorization": deploy}))  # fmt: skip
        assert exists(daemon, first)

        done(dockgate("token", "revoke", "deploy", "--file", str(tokens)))
        wait_status(gw, deploy, 401)
        refused = remote_docker(gw.url, tmp_path, "create", "--name", second, busybox_image,
                                "true", headers={"Authorization": deploy})  # fmt: skip
        assert refused.returncode != 0 and "dockgate: invalid credentials" in refused.stderr
        assert not exists(daemon, second)

        assert ping_status(gw, ci) == ping_status(gw, ci2) == 200
        done(dockgate("token", "revoke", "--identity", "runner", "--file", str(tokens)))
        wait_status(gw, ci, 401)
        assert ping_status(gw, ci2) == 401
        assert ping_status(gw, keeper) == 200
        listed = done(dockgate("token", "list", "--file", str(tokens))).stdout
        assert [line.split()[0] for line in listed.splitlines()] == ["NAME", "keeper"]
