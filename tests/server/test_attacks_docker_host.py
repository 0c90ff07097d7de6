"""Issue 13, attack review, second pass: a password given in a mistyped DOCKER_HOST is never
quoted back, by `serve` or by `doctor` (whose report is meant to be pasted into an issue).

Finding (pinned as a strict xfail; fixed since, so the test passes, and would fail on the old
code): shown_address kept text starting with `/` or `.` whole, as a unix path, so a DOCKER_HOST
without its scheme (`//USER:PASSWORD@HOST`) was quoted with its password. The edges are pinned
in tests/server/test_addresses_userinfo.py.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from support.attack import ATTACK_MARKS
from support.paths import REPO

pytestmark = ATTACK_MARKS


# ----- messages: a password given in an address -------------------------------------------------

_PASSWORD = "hunter2-a13c"


@pytest.mark.parametrize("command", [["serve"], ["doctor"], ["doctor", "--format", "json"]])
@pytest.mark.parametrize(
    "value",
    [f"//admin:{_PASSWORD}@10.0.0.5:2375", f"/tcp://admin:{_PASSWORD}@10.0.0.5:2375"],
)
def test_a_password_in_a_mistyped_docker_host_is_printed(command: list[str], value: str) -> None:
    """shown_address treats any text starting with `/` or `.` as a unix path (a file name, shown
    as it is). A DOCKER_HOST with the scheme left out (`//USER:PASSWORD@HOST`, a
    scheme-relative URL Go's url.Parse reads with its user info) or a stray leading `/` is
    refused by parse_address, and the refusal quotes the whole value, password included, on
    stderr (serve) and in doctor's report (text and JSON: "paste it into an issue"). The same
    value with the scheme (`tcp://admin:PASSWORD@HOST`) is shown as `tcp://***@HOST`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER", "DOCKGATE"))}
    env |= {"PYTHONPATH": str(REPO / "src"), "DOCKER_HOST": value}
    done = subprocess.run(
        ["python3", "-m", "dockgate", *command],
        env=env, capture_output=True, text=True, timeout=30, check=False, cwd=REPO,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "DOCKER_HOST" in output, output  # the refusal itself, not a start
    assert _PASSWORD not in output, output
