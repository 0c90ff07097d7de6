"""Issue 13, "attack your own change": `dockgate doctor` must never print a secret and must
change nothing (docs/cli.md "dockgate doctor"; its output is meant to be pasted into an issue).

Each test is one finding, first pinned as `xfail(strict=True)` (asserting what should hold; it
failed on the code of the review) and now closed: plain tests that fail if the hole reopens.

What held (tried, no test needed): an htpasswd file with a plaintext, a malformed and an apr1
entry, and a tokens file with a raw token where the digest goes (the errors name the file, the
line and the user, never the hash or the token); `--audit-log`, `--access-log`, unix
`--listen` and `--admin-listen` paths, in missing and in existing directories (nothing is
created: no file, directory or socket).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from support.gateway import run_dockgate

RUN_TIMEOUT = 30


def doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_dockgate("doctor", *args, env=env, timeout=RUN_TIMEOUT)


@pytest.fixture
def short_tmp() -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix="dgatk-", dir="/tmp") as path:
        yield pathlib.Path(path)


def test_a_lower_case_variable_named_like_a_tecnativa_switch_is_not_printed(
    short_tmp: pathlib.Path,
) -> None:
    """With the policy from the environment (the drop-in, CONTAINERS=1), envwarnings'
    case check quotes NAME=VALUE for any variable whose upper-case name is one of Tecnativa's,
    whatever the value: `auth`, `secrets`, `configs` and `build` are ordinary names for a
    container's own settings (an application's `auth=` password, a `secrets=` path or key).
    The look-alike check on other names keeps to switch values (0/1/true/...); this one does
    not. Both the text and the JSON report carried the value. Fixed: envwarnings names the
    variable only (`auth=... is ignored ...; did you mean AUTH?`) unless the value is a switch
    value (tests/startup/test_envwarnings_values.py pins the edges)."""
    secrets = {"auth": "db-password-hunter2", "Secrets": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"}
    env = {"CONTAINERS": "1", **secrets}
    upstream = f"unix://{short_tmp}/docker.sock"  # no daemon needed: the report still prints
    for fmt in ("text", "json"):
        proc = doctor("--upstream", upstream, "--format", fmt, env=env)
        output = proc.stdout + proc.stderr
        if fmt == "json":
            json.loads(proc.stdout)  # a report, not a crash
        else:
            assert "[warning] environment:" in output  # the check ran
        for value in secrets.values():
            assert value not in output, (fmt, value)


def test_a_password_in_docker_host_is_not_printed() -> None:
    """A client shell that tried `DOCKER_HOST=tcp://alice:PASSWORD@gw:2375` (the docker CLI
    takes it and drops the user part, which doctor's own client notes mention) runs
    `dockgate doctor` to see why: the upstream is read from DOCKER_HOST, does not parse, and
    the error quoted it, password included, in the text and in the JSON report (and said
    "write an IPv6 address in brackets"). Fixed: addresses.py refuses user info with its own
    message and shows it as `***@` (tests/server/test_addresses_userinfo.py pins the edges)."""
    password = "alice-pw-Zq8r5Wd2"
    env = {"DOCKER_HOST": f"tcp://alice:{password}@gateway.example:2375"}
    for fmt in ("text", "json"):
        proc = doctor("--format", fmt, env=env)
        assert proc.returncode == 1, proc.stderr  # the configuration error is reported
        assert password not in proc.stdout + proc.stderr, fmt
