"""Which `top` ps_args may run where environments are redacted (dockgate/body/psargs.py), tested
by effect: the host's own `ps` (the daemon runs it) is run on a process whose environment holds a
secret, with the daemon's retry without `-q` (moby v20.10.24 daemon/top_unix.go)."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from dockgate.body.psargs import top_args_problem

SECRET = "psargs-env-canary-4711"
pytestmark = pytest.mark.skipif(shutil.which("ps") is None, reason="no ps")


@pytest.fixture(scope="module")
def victim() -> Iterator[int]:
    env = {"DGT_PS_SECRET": SECRET, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.Popen(["sleep", "300"], env=env)
    for _ in range(100):  # until the child has exec'd: before, it has this process's environment
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            if f.read().startswith(b"sleep"):
                break
        time.sleep(0.01)
    yield proc.pid
    proc.kill()
    proc.wait()


def _ps_output(ps_args: str, pid: int) -> bytes:
    """What the daemon would answer from: `ps ARGS -qPID`, else `ps ARGS`."""
    args = ps_args.split(" ") if ps_args else ["-ef"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # no COLUMNS: dockerd sets none
    for argv in (["ps", *args, f"-q{pid}"], ["ps", *args]):
        try:
            done = subprocess.run(argv, check=False, capture_output=True, timeout=10, env=env)
        except subprocess.TimeoutExpired as exc:  # a busy host: judge what was printed
            return exc.stdout or b""
        if done.returncode == 0:
            break
    return done.stdout


# Each of these prints the environment (shown below, so the refusal is not vacuous).
LEAKING = ["auxe", "e", "aeux", "-auxe", "-ex", "-xe", "-eHT", "-eHm", "-eco pid,args", "axe"]


@pytest.mark.parametrize("ps_args", LEAKING)
def test_args_that_print_environments_are_refused(ps_args: str, victim: int) -> None:
    """Each of these argument lists prints the secret through the real ps, and is refused
    (auxe passed before: finding 5 of issue 11)."""
    assert SECRET.encode() in _ps_output(ps_args, victim)
    assert top_args_problem(ps_args) is not None


SAFE = ["", "-ef", "aux", "-eo pid,comm", "-e -o pid,args", "-A", "-o pid,user,etime", "-efww",
        "-eF", "-ely", "xa", "-AH", "o pid=PID,args", "axo pid,comm", "-eLf", "ux"]  # fmt: skip


@pytest.mark.parametrize("ps_args", SAFE)
def test_common_args_are_accepted_and_print_no_environment(ps_args: str, victim: int) -> None:
    """docker top's usual arguments are accepted, and the real ps prints no environment."""
    assert top_args_problem(ps_args) is None
    out = _ps_output(ps_args, victim)
    assert b"PID" in out and SECRET.encode() not in out


def _random_args(rng: random.Random) -> str:
    """An argument list drawn from the shapes the grammar knows, and some it does not."""
    unix, bsd = "AadefFlyjLmTHcwxuN", "axrTujlsvXfcnwmHSe"
    formats = ["pid,comm", "pid,args", "user,pid,etime", "pid=PID,cmd", "pid,environ"]
    tokens: list[str] = []
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.45:
            tokens.append("-" + "".join(rng.choice(unix) for _ in range(rng.randint(1, 4))))
        elif roll < 0.75:
            tokens.append("".join(rng.choice(bsd) for _ in range(rng.randint(1, 4))))
        elif roll < 0.9:
            tokens += [rng.choice(["-o", "o", "-O", "O"]), rng.choice(formats)]
        else:
            group = "-" + "".join(rng.choice(unix) for _ in range(rng.randint(1, 3)))
            tokens += [group + rng.choice("oO"), rng.choice(formats)]
    return " ".join(tokens)


def test_no_accepted_argument_list_prints_an_environment(victim: int) -> None:
    """Thousands of random argument lists: every one accepted is run through the real ps, and
    none prints the secret (while some of those refused do, so the draw reaches the danger)."""
    rng = random.Random(11)
    accepted = leaking_refused = 0
    for _ in range(2500):
        ps_args = _random_args(rng)
        if top_args_problem(ps_args) is not None:
            if "e" in ps_args and leaking_refused < 20:
                leaking_refused += SECRET.encode() in _ps_output(ps_args, victim)
            continue
        accepted += 1
        assert SECRET.encode() not in _ps_output(ps_args, victim), ps_args
    assert accepted > 200
    assert leaking_refused > 0


def test_every_accepted_e_group_prints_no_environment(victim: int) -> None:
    """`-e` is accepted only with letters whose UNIX parse cannot fail: every such group of up
    to three letters (repeats included), alone, as `-eXo FORMAT` and with `-o FORMAT`, is run
    through the real ps, and none prints the secret."""
    accepted = 0
    for count in range(4):
        for letters in itertools.product("fFlyjLwAa", repeat=count):
            group = "-e" + "".join(letters)
            for ps_args in (group, f"{group}o pid,args", f"{group} -o pid,user"):
                if top_args_problem(ps_args) is not None:
                    continue
                accepted += 1
                assert SECRET.encode() not in _ps_output(ps_args, victim), ps_args
    assert accepted > 1000
