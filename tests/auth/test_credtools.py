"""`dockgate htpasswd add/remove/list` and `dockgate token create/list/revoke`, on files.

Each command runs as the operator runs it (`python -m dockgate ...` in a subprocess, or
`cli.main` in a forked child that dropped to an unprivileged uid), and the result is judged by
what the gateway's own loaders make of the file (auth/htpasswd.py, auth/tokens.py) and by the
file system: modes, owners, inodes, bytes. The running-gateway side (a user added or a token
revoked takes effect) is tests/auth/test_credtools_e2e.py.

Before issue 13 there was only `token create`, which ended in a traceback when the file's
directory did not exist (`--file /etc/dockgate/tokens` on a fresh host); every other command
here did not exist.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import pty
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import argon2
import bcrypt
import pytest

from dockgate import cli
from dockgate.auth.authenticator import MAX_USER_NAME_BYTES
from dockgate.auth.htpasswd import load_htpasswd
from dockgate.auth.htpasswd_edit import HtpasswdEditError, check_user_name
from dockgate.auth.tokens import TokenFileError, load_tokens, parse_tokens, token_digest
from support.gateway import gateway_env

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534
# Cost 4 keeps the tests fast; the default (10) is checked once, on a single user.
FAST = ("--cost", "4")
PASSWORD = "correct horse battery"


def dockgate(
    *args: str, stdin: str | bytes = b"", env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.run(
        [sys.executable, "-m", "dockgate", *args],
        input=data,
        capture_output=True,
        env=gateway_env(env),
        check=False,
        timeout=60,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with `code` and exactly one line on stderr containing `words`."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockgate: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def add(path: pathlib.Path, user: str, password: str = PASSWORD, *extra: str) -> None:
    proc = dockgate("htpasswd", "add", user, "--file", str(path), "--password-stdin", *extra,
                    stdin=password + "\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr


# ----- htpasswd ---------------------------------------------------------------------------------


def test_add_creates_missing_directories_and_a_file_the_loader_takes(
    tmp_path: pathlib.Path,
) -> None:
    """A fresh root with nested missing directories: each is made 0700, the file 0600, with a
    `$2y$` bcrypt entry of the default cost (10) that verifies the password, as `htpasswd -B`
    would write it."""
    path = tmp_path / "etc" / "dockgate" / "auth" / "htpasswd"
    proc = dockgate("htpasswd", "add", "alice", "--file", str(path), "--password-stdin",
                    stdin=PASSWORD + "\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for directory in (tmp_path / "etc", tmp_path / "etc/dockgate", path.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        assert f"created the directory {directory} (mode 700)" in proc.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert text.startswith("alice:$2y$10$") and text.endswith("\n") and text.count("\n") == 1
    loaded = load_htpasswd(path)
    assert loaded.verify("alice", PASSWORD)
    assert not loaded.verify("alice", PASSWORD + "\n")  # the line end is not the password
    assert not loaded.verify("alice", PASSWORD[:-1])
    assert PASSWORD not in proc.stderr + proc.stdout


def test_add_replaces_a_users_line_and_keeps_every_other_byte(tmp_path: pathlib.Path) -> None:
    """Comments, blank lines, CRLF ends, other users (argon2, legacy apr1) and a last line
    without its newline stay byte for byte; the user's own line is replaced in place; the file
    is a new inode (renamed over: a watcher never sees half of it) with the old mode."""
    path = tmp_path / "htpasswd"
    argon = argon2.PasswordHasher().hash("dave's")
    old_bob = bcrypt.hashpw(b"old", bcrypt.gensalt(4)).decode()
    before = (
        "# team users\r\n"
        "\n"
        f"  bob:{old_bob}\r\n"
        "alice:$apr1$nM3z1duM$zFyF/rIzFvqV/YerJOiEI.\n"
        "   # indented comment: bob:not-a-line\n"
        f"dave:{argon}"
    )
    path.write_bytes(before.encode())
    path.chmod(0o640)
    inode = path.stat().st_ino
    add(path, "bob", "new pw", *FAST)
    after = path.read_bytes().decode()
    lines = after.splitlines(keepends=True)
    assert lines[0:2] == ["# team users\r\n", "\n"]
    assert lines[2].startswith("bob:$2y$04$") and lines[2].endswith("\r\n")
    assert "".join(lines[3:]) == before.split(f"  bob:{old_bob}\r\n")[1]  # no newline added
    assert path.stat().st_ino != inode
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    loaded = load_htpasswd(path)
    assert loaded.verify("bob", "new pw") and not loaded.verify("bob", "old")
    assert loaded.verify("dave", "dave's") and loaded.verify("alice", "s3cret")
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_add_keeps_the_files_owner(tmp_path: pathlib.Path) -> None:
    """root editing a file the gateway's user owns leaves it that user's: a gateway running as
    its own user must still read it after the edit (a rename would otherwise make it root's)."""
    path = tmp_path / "htpasswd"
    path.write_text("")
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o400)
    add(path, "alice", PASSWORD, *FAST)
    assert (path.stat().st_uid, path.stat().st_gid) == (NOBODY, NOBODY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


def test_remove_keeps_the_rest_and_unknown_users_are_exit_1(tmp_path: pathlib.Path) -> None:
    """`remove` drops the user's line only; an unknown user, or a missing file, is exit 1 with
    one line and nothing written or created."""
    path = tmp_path / "htpasswd"
    add(path, "alice", PASSWORD, *FAST)
    add(path, "bob", "bobs", *FAST)
    alice_line = path.read_text().splitlines()[0]
    assert dockgate("htpasswd", "remove", "bob", "--file", str(path)).returncode == 0
    assert path.read_text() == alice_line + "\n"
    assert set(load_htpasswd(path).credentials) == {"alice"}
    mtime = path.stat().st_mtime_ns
    one_line_error(dockgate("htpasswd", "remove", "bob", "--file", str(path)), 1, "no user 'bob'")
    assert path.stat().st_mtime_ns == mtime
    missing = tmp_path / "nowhere" / "htpasswd"
    one_line_error(dockgate("htpasswd", "remove", "bob", "--file", str(missing)), 1, str(missing))
    assert not missing.parent.exists()


def test_list_shows_users_and_hash_kinds_never_hashes(tmp_path: pathlib.Path) -> None:
    """`list` names each user with the hash's kind and cost, and warns when the costs differ
    (an unknown user is timed against the most used one)."""
    path = tmp_path / "htpasswd"
    add(path, "alice", PASSWORD, "--cost", "5")
    proc = dockgate("htpasswd", "add", "bob", "--file", str(path), "--password-stdin",
                    "--cost", "4", stdin="x\n")  # fmt: skip
    assert proc.returncode == 0 and "hashes differ" in proc.stderr, proc.stderr
    listed = dockgate("htpasswd", "list", "--file", str(path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split("\n") == ["alice  bcrypt cost 5", "bob    bcrypt cost 4", ""]
    for line in path.read_text().splitlines():
        assert line.partition(":")[2] not in listed.stdout


@pytest.mark.parametrize(
    ("user", "problem"),
    [
        ("a:b", "no ':'"),
        ("a b", "no spaces"),
        ("a\tb", "no spaces"),
        ("a\x7fb", "control"),
        ("a\u2028b", "no spaces"),
        ("#admin", "'#'"),
        ("é" * (MAX_USER_NAME_BYTES // 2 + 1), "at most 256"),
        ("", "empty"),
    ],
)
def test_user_names_the_loader_or_basic_could_not_read_back_are_refused(
    user: str, problem: str
) -> None:
    """Names the loader would split, skip as a comment, or that a Basic header cannot carry (a
    `:`), or that the authenticator refuses (over 256 bytes), are refused before any prompt."""
    with pytest.raises(HtpasswdEditError, match=problem):
        check_user_name(user)


def test_user_name_limits_through_the_command(tmp_path: pathlib.Path) -> None:
    """256 bytes is accepted and logs in; 257 and a `:` are one-line errors, nothing written."""
    path = tmp_path / "htpasswd"
    longest = "u" * MAX_USER_NAME_BYTES
    add(path, longest, PASSWORD, *FAST)
    assert load_htpasswd(path).verify(longest, PASSWORD)
    before = path.read_bytes()
    for user in ("u" * (MAX_USER_NAME_BYTES + 1), "ali:ce"):
        proc = dockgate("htpasswd", "add", user, "--file", str(path), "--password-stdin",
                        stdin="pw\n")  # fmt: skip
        one_line_error(proc, 2, "user name")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("stdin", "problem"),
    [
        (b"", "the password is empty"),
        (b"\n", "the password is empty"),
        (b"a" * 73 + b"\n", "bcrypt reads only the first 72"),
        (b"one\ntwo\n", "one line"),
        (b"a\x00b\n", "NUL"),
        (b"\xff\xfe\n", "not UTF-8"),
    ],
)
def test_passwords_bcrypt_or_basic_would_misread_are_refused(
    tmp_path: pathlib.Path, stdin: bytes, problem: str
) -> None:
    """Empty, over 72 bytes (bcrypt would check a prefix), several lines, a NUL (crypt_blowfish
    stops there) or not UTF-8 (a Basic header is decoded as UTF-8): refused, nothing created."""
    path = tmp_path / "d" / "htpasswd"
    proc = dockgate("htpasswd", "add", "alice", "--file", str(path), "--password-stdin",
                    stdin=stdin)  # fmt: skip
    one_line_error(proc, 2, problem)
    assert not path.parent.exists()


def test_a_72_byte_password_and_crlf_stdin_work(tmp_path: pathlib.Path) -> None:
    """The longest password bcrypt reads whole, given with a CRLF end, logs in whole."""
    path = tmp_path / "htpasswd"
    password = "p" * 70 + "é"  # 72 bytes in UTF-8
    proc = dockgate("htpasswd", "add", "alice", "--file", str(path), "--password-stdin",
                    *FAST, stdin=password + "\r\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert load_htpasswd(path).verify("alice", password)
    assert not load_htpasswd(path).verify("alice", password[:-1])


def test_a_file_the_gateway_would_refuse_is_not_written(tmp_path: pathlib.Path) -> None:
    """Another user's plaintext line makes the file unloadable: `add` says which line, writes
    nothing (the gateway would keep its old contents: the change would silently not apply).
    Replacing the bad line itself is allowed: the result loads."""
    path = tmp_path / "htpasswd"
    path.write_text("carol:plaintext\n")
    before = path.read_bytes()
    proc = dockgate("htpasswd", "add", "alice", "--file", str(path), "--password-stdin",
                    *FAST, stdin="pw\n")  # fmt: skip
    one_line_error(proc, 2, f"{path}:1:", "carol", "fix that line first")
    assert path.read_bytes() == before
    add(path, "carol", "pw", *FAST)
    assert load_htpasswd(path).verify("carol", "pw")


def test_cost_outside_apaches_range_is_refused(tmp_path: pathlib.Path) -> None:
    """`--cost` takes 4 to 17 as Apache's htpasswd -C does (31 would take hours per login)."""
    for cost in ("3", "18"):
        proc = dockgate("htpasswd", "add", "alice", "--file", str(tmp_path / "h"),
                        "--password-stdin", "--cost", cost, stdin="pw\n")  # fmt: skip
        one_line_error(proc, 2, "--cost")
    assert not (tmp_path / "h").exists()


def test_the_file_defaults_to_what_serve_reads(tmp_path: pathlib.Path) -> None:
    """Without --file, DOCKGATE_HTPASSWD / DOCKGATE_TOKENS name the file (as for `serve`);
    without either, one line says what to give."""
    path = tmp_path / "htpasswd"
    proc = dockgate("htpasswd", "add", "alice", "--password-stdin", *FAST, stdin="pw\n",
                    env={"DOCKGATE_HTPASSWD": str(path)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "alice" in load_htpasswd(path).credentials
    one_line_error(dockgate("token", "list"), 2, "--file", "DOCKGATE_TOKENS")


def test_concurrent_adds_lose_no_user(tmp_path: pathlib.Path) -> None:
    """Eight `add`s at once (a provisioning script): the directory lock serialises the
    read-modify-write, so every user is in the file."""
    path = tmp_path / "htpasswd"
    users = [f"user{n}" for n in range(8)]
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(lambda user: add(path, user, f"pw-{user}", *FAST), users))
    loaded = load_htpasswd(path)
    assert sorted(loaded.credentials) == users
    assert all(loaded.verify(user, f"pw-{user}") for user in users)


def _prompted(args: list[str], answers: list[bytes]) -> tuple[int, str]:
    """Run dockgate on a new pseudo-terminal (its controlling tty, where getpass asks),
    answering each prompt in turn; the exit status and what the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once, nothing of pytest's state is used
        env = gateway_env()
        os.execve(sys.executable, [sys.executable, "-m", "dockgate", *args], env)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        # A prompt ends with ": "; answering on anything else (the line end after an answer)
        # could come before getpass's TCSAFLUSH of the next prompt, which would drop it.
        if pending and shown.endswith(b": "):
            os.write(fd, pending.pop(0))
    exit_by = time.monotonic() + 15
    reaped, status = os.waitpid(pid, os.WNOHANG)
    while reaped == 0 and time.monotonic() < exit_by:
        time.sleep(0.05)
        reaped, status = os.waitpid(pid, os.WNOHANG)
    if reaped == 0:  # still waiting for input: a failure, not a hang
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_the_password_is_asked_twice_on_the_terminal(tmp_path: pathlib.Path) -> None:
    """Without --password-stdin the password is asked twice (not echoed); two different
    answers write nothing; on a pipe with no terminal, one line says to use --password-stdin."""
    path = tmp_path / "htpasswd"
    code, shown = _prompted(
        ["htpasswd", "add", "alice", "--file", str(path), *FAST], [b"typed pw\n", b"typed pw\n"]
    )
    assert code == 0, shown
    assert "New password for alice:" in shown and "Again:" in shown
    assert "typed pw" not in shown  # not echoed
    assert load_htpasswd(path).verify("alice", "typed pw")
    code, shown = _prompted(
        ["htpasswd", "add", "bob", "--file", str(path), *FAST], [b"one\n", b"two\n"]
    )
    assert code == 2 and "the two passwords differ; nothing written" in shown, shown
    assert "bob" not in load_htpasswd(path).credentials
    one_line_error(dockgate("htpasswd", "add", "bob", "--file", str(path)), 2, "--password-stdin")


# ----- tokens -----------------------------------------------------------------------------------


def test_token_create_on_a_fresh_host_makes_the_directories(tmp_path: pathlib.Path) -> None:
    """`token create --file /etc/dockgate/tokens` where /etc/dockgate does not exist made a
    traceback (FileNotFoundError from open()); now the directory is made 0700, the file 0600,
    and the line carries its creation time."""
    path = tmp_path / "etc" / "dockgate" / "tokens"
    started = time.time()
    proc = dockgate("token", "create", "--file", str(path), "--name", "ci", "--identity", "runner")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    token = proc.stdout.strip()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = load_tokens(path).identify(token)
    assert entry is not None and (entry.name, entry.identity) == ("ci", "runner")
    assert entry.created is not None
    created = time.mktime(time.strptime(entry.created, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert started - 2 <= created <= time.time() + 1


def test_token_list_shows_names_and_dates_never_secrets(tmp_path: pathlib.Path) -> None:
    """`token list`: name, identity and creation time (`-` for lines of the three-field format);
    neither the tokens nor their hashes."""
    path = tmp_path / "tokens"
    legacy = "a" * 64
    path.write_text(f"# old line, no date\nold-one legacy {legacy}\n")
    tokens = []
    for name, identity in (("ci", "runner"), ("deploy", "deployer")):
        made = dockgate("token", "create", "--file", str(path), "--name", name,
                        "--identity", identity)  # fmt: skip
        assert made.returncode == 0, made.stderr
        tokens.append(made.stdout.strip())
    listed = dockgate("token", "list", "--file", str(path))
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NAME", "IDENTITY", "CREATED"]
    assert [row[:2] for row in rows[1:]] == [["old-one", "legacy"], ["ci", "runner"],
                                             ["deploy", "deployer"]]  # fmt: skip
    assert rows[1][2] == "-" and rows[2][2].endswith("Z")
    for secret in [legacy, *tokens, *(token_digest(t) for t in tokens)]:
        assert secret not in listed.stdout + listed.stderr
    assert path.read_text().startswith("# old line, no date\nold-one legacy ")


def test_token_revoke_by_name_and_by_identity(tmp_path: pathlib.Path) -> None:
    """`revoke NAME` removes that token; `revoke --identity ID` every token of the identity;
    nothing to revoke is exit 1 and the file untouched; both or neither is exit 2."""
    path = tmp_path / "tokens"
    made = {}
    for name, identity in (("ci", "runner"), ("ci2", "runner"), ("deploy", "deployer")):
        proc = dockgate("token", "create", "--file", str(path), "--name", name,
                        "--identity", identity)  # fmt: skip
        made[name] = proc.stdout.strip()
    assert dockgate("token", "revoke", "deploy", "--file", str(path)).returncode == 0
    loaded = load_tokens(path)
    assert loaded.identify(made["deploy"]) is None and loaded.identify(made["ci"]) is not None
    proc = dockgate("token", "revoke", "--identity", "runner", "--file", str(path))
    assert proc.returncode == 0 and "'ci', 'ci2'" in proc.stderr, proc.stderr
    assert load_tokens(path).by_digest == {}
    before = path.read_bytes()
    one_line_error(dockgate("token", "revoke", "ci", "--file", str(path)), 1, "no token 'ci'")
    one_line_error(
        dockgate("token", "revoke", "--identity", "x", "--file", str(path)), 1, "identity 'x'"
    )
    one_line_error(dockgate("token", "revoke", "ci", "--identity", "runner", "--file", str(path)),
                   2, "one of the two")  # fmt: skip
    assert path.read_bytes() == before
    one_line_error(dockgate("token", "list", "--file", str(tmp_path / "none")), 1, "no such file")


def test_token_create_keeps_a_taken_name_and_a_broken_file(tmp_path: pathlib.Path) -> None:
    """A taken name is exit 2 and says how to free it; a file the loader refuses is not
    written to (the gateway would keep its old tokens: the new one would not work)."""
    path = tmp_path / "tokens"
    dockgate("token", "create", "--file", str(path), "--name", "ci", "--identity", "runner")
    before = path.read_bytes()
    again = dockgate("token", "create", "--file", str(path), "--name", "ci", "--identity", "x")
    one_line_error(again, 2, "exists", "dockgate token revoke ci")
    assert path.read_bytes() == before
    path.write_bytes(before + b"broken line\n")
    proc = dockgate("token", "create", "--file", str(path), "--name", "ok", "--identity", "x")
    one_line_error(proc, 2, f"{path}:2:", "fix that line first")
    assert proc.stdout == ""  # no token printed that would not work


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"ci r {'a' * 64} 2026-13-01T00:00:00Z", "creation time"),
        (f"ci r {'a' * 64} yesterday", "creation time"),
        (f"ci r {'a' * 64} 2026-12-01T00:00:00Z extra", "expected: NAME IDENTITY SHA256"),
    ],
)
def test_the_creation_time_field_is_read_strictly(line: str, problem: str) -> None:
    """The optional fourth field is a real UTC time in one format, or the line is refused."""
    with pytest.raises(TokenFileError, match=problem):
        parse_tokens(line + "\n", "tokens")


# ----- directories that cannot be made, as an unprivileged user ---------------------------------


@pytest.fixture
def shared_dir() -> Iterator[pathlib.Path]:
    """A directory root owns (0755) under /tmp, which an unprivileged uid can enter, not write
    (pytest's tmp_path is 0700: another uid could not even reach it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run a child as another uid")
    path = pathlib.Path(tempfile.mkdtemp(prefix="dockgate-cred-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _as_nobody(argv: list[str], stdin: bytes = b"") -> tuple[int, str]:
    """`cli.main(argv)` in a forked child running as uid/gid 65534; its status and stderr.
    (The modules are already imported: the interpreter under /root is not readable there.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sys.stderr = io.TextIOWrapper(os.fdopen(write_end, "wb"), write_through=True)
            sys.stdout = io.TextIOWrapper(open(os.devnull, "wb"))  # noqa: SIM115
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
            code = cli.main(argv)
            sys.stderr.flush()
        except BaseException as exc:  # a traceback is a finding: show it to the parent
            traceback.print_exception(exc, file=sys.stderr)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as handle:
        err = handle.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.mark.parametrize("command", ["htpasswd", "token"])
def test_an_unwritable_place_is_one_line_naming_the_path_and_the_fix(
    shared_dir: pathlib.Path, command: str
) -> None:
    """As a user who may not write there: a missing directory that cannot be made, and an
    existing directory that cannot be written, are each one line (exit 2) naming the path and
    what to do, not a traceback; nothing is created."""
    for target, where in (
        (shared_dir / "etc" / "dockgate" / "file", f"cannot create the directory {shared_dir}/etc"),
        (shared_dir / "file", f"cannot write in {shared_dir}"),
    ):
        if command == "htpasswd":
            argv = ["htpasswd", "add", "alice", "--file", str(target), "--password-stdin", *FAST]
        else:
            argv = ["token", "create", "--file", str(target), "--name", "ci", "--identity", "r"]
        code, err = _as_nobody(argv, b"pw\n")
        assert code == 2, err
        lines = err.splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"dockgate: error: {where}: Permission denied; "), err
        assert "sudo" in lines[0] and "--file" in lines[0]
    assert list(shared_dir.iterdir()) == []


@pytest.fixture
def read_only_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A read-only file system (a tmpfs mounted `ro`), where even root cannot write: a Docker
    secret's or a ConfigMap's mount is one."""
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_read_only_file_system_is_one_line_with_the_fix(read_only_dir: pathlib.Path) -> None:
    """Root on a read-only file system: one line naming the path, the cause and the fix."""
    for target, where in (
        (read_only_dir / "sub" / "tokens", f"cannot create the directory {read_only_dir}/sub"),
        (read_only_dir / "tokens", f"cannot write in {read_only_dir}"),
    ):
        proc = dockgate("token", "create", "--file", str(target), "--name", "a", "--identity", "b")
        line = one_line_error(proc, 2, where, "Read-only file system", "--file")
        assert "file system is read-only" in line
        assert proc.stdout == ""  # no token shown that was not stored


def test_a_symbolic_link_is_followed_and_kept(tmp_path: pathlib.Path) -> None:
    """`--file` naming a link edits the file it points to; the link stays a link."""
    real = tmp_path / "real" / "htpasswd"
    real.parent.mkdir()
    real.write_text("")
    link = tmp_path / "htpasswd"
    link.symlink_to(real)
    add(link, "alice", PASSWORD, *FAST)
    assert link.is_symlink() and link.resolve() == real
    assert load_htpasswd(real).verify("alice", PASSWORD)


def test_a_fifo_or_a_directory_as_file_is_refused_not_read(tmp_path: pathlib.Path) -> None:
    """A FIFO would block the read forever and a directory is no file: one line, exit 2."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        for args in (["htpasswd", "list"], ["token", "list"], ["token", "revoke", "x"]):
            proc = dockgate(*args, "--file", str(path))
            one_line_error(proc, 2, f"{path} is not a regular file")
        proc = dockgate("htpasswd", "add", "a", "--file", str(path), "--password-stdin", *FAST,
                        stdin="pw\n")  # fmt: skip
        one_line_error(proc, 2, f"{path} is not a regular file")
