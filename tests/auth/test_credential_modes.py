"""The mode warning for credential files (auth/filemode.py), shared by `htpasswd add/remove`,
`token create/revoke`, `serve` start-up and `dockgate doctor` (issue 13's attack review: a new
hash landed in a 0644 htpasswd file without a word).

dockgate warns and never changes the mode: the file of an nginx migration is 0644 as Apache's
tool makes it and nginx's workers read it; 0640 with the reading service's group is fine.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from dockgate.auth.filemode import credential_file_warnings, mode_warning
from support.fake_upstream import FakeUpstream
from support.gateway import Gateway, run_dockgate, running

APACHE_ENTRY = "alice:$2y$05$abcdefghijklmnopqrstuuJ5s8Ah6V4aYQvKQpd7wJlOPAPy2E9Ty\n"


def dockgate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_dockgate(*args, stdin=stdin)


def credential_file(tmp_path: pathlib.Path, mode: int, text: str = APACHE_ENTRY) -> pathlib.Path:
    path = tmp_path / "htpasswd"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o440, 0o700])
def test_owner_only_or_group_read_is_not_warned(tmp_path: pathlib.Path, mode: int) -> None:
    assert mode_warning(credential_file(tmp_path, mode), "htpasswd") is None


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        (0o644, "readable by every local user (its password hashes can be cracked offline)"),
        (0o604, "readable by every local user"),
        (0o666, "writable by its group and everyone"),
        (0o620, "writable by its group (a writer can add a user)"),
        (0o602, "writable by everyone"),
    ],
)
def test_others_reading_or_writing_is_warned(tmp_path: pathlib.Path, mode: int, said: str) -> None:
    path = credential_file(tmp_path, mode)
    warning = mode_warning(path, "htpasswd")
    assert warning is not None
    assert warning.startswith(f"{path} is mode {mode:04o}, ")
    assert said in warning
    assert f"chmod 600 {path}" in warning
    assert os.stat(path).st_mode & 0o777 == mode  # warned, not changed


def test_a_symlink_is_judged_by_its_target(tmp_path: pathlib.Path) -> None:
    """Kubernetes mounts secrets as symlinks to 0644 files unless defaultMode says otherwise."""
    target = credential_file(tmp_path, 0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert mode_warning(link, "tokens") is not None


def test_missing_files_and_directories_are_left_to_the_loader(tmp_path: pathlib.Path) -> None:
    assert mode_warning(tmp_path / "none", "htpasswd") is None
    tmp_path.chmod(0o755)
    assert mode_warning(tmp_path, "htpasswd") is None


def test_credential_file_warnings_names_each_file(tmp_path: pathlib.Path) -> None:
    htpasswd = credential_file(tmp_path, 0o644)
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    tokens.chmod(0o600)
    assert credential_file_warnings(None, None) == []
    assert credential_file_warnings(None, str(tokens)) == []
    (line,) = credential_file_warnings(str(htpasswd), str(tokens))
    assert str(htpasswd) in line
    tokens.chmod(0o644)
    lines = credential_file_warnings(str(htpasswd), str(tokens))
    assert len(lines) == 2
    assert "token names and identities" in lines[1]


def test_htpasswd_add_to_a_new_file_says_nothing_about_modes(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "new" / "htpasswd"
    added = dockgate(
        "htpasswd", "add", "bob", "--password-stdin", "--file", str(path), stdin="bob-pw\n"
    )
    assert added.returncode == 0, added.stderr
    assert "warning" not in added.stderr, added.stderr


def test_htpasswd_remove_and_token_commands_warn_too(tmp_path: pathlib.Path) -> None:
    """Would fail on the old code: no command said anything about the mode."""
    path = credential_file(tmp_path, 0o644, APACHE_ENTRY + APACHE_ENTRY.replace("alice", "carol"))
    removed = dockgate("htpasswd", "remove", "carol", "--file", str(path))
    assert removed.returncode == 0, removed.stderr
    assert f"warning: {path} is mode 0644, readable by every local user" in removed.stderr
    tokens = tmp_path / "tokens"
    tokens.write_text("")
    tokens.chmod(0o664)
    created = dockgate("token", "create", "--file", str(tokens), "--name", "ci", "--identity", "ci")
    assert created.returncode == 0, created.stderr
    assert f"warning: {tokens} is mode 0664," in created.stderr
    assert "writable by its group" in created.stderr
    assert stat_mode(tokens) == 0o664


def stat_mode(path: pathlib.Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_doctor_json_carries_the_warning(tmp_path: pathlib.Path) -> None:
    path = credential_file(tmp_path, 0o644)
    proc = dockgate(
        "doctor", "--htpasswd", str(path), "--upstream", f"unix://{tmp_path}/none", "--format",
        "json",
    )  # fmt: skip
    report = json.loads(proc.stdout)
    assert f"{path} is mode 0644" in json.dumps(report)


def test_serve_warns_at_start_and_starts(tmp_path: pathlib.Path) -> None:
    """Would fail on the old code: serve started without a word about the mode."""
    path = credential_file(tmp_path, 0o644)
    with FakeUpstream() as fake, running(Gateway(fake.url, "--htpasswd", str(path))) as gw:
        text = "".join(gw.stderr_lines)
        assert f"dockgate: warning: {path} is mode 0644, readable by every local user" in text
    assert stat_mode(path) == 0o644
