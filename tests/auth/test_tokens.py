"""Bearer-token files and `dockgate token create` (the identity issue builds on them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dockgate.auth.tokens import TokenFileError, load_tokens, parse_tokens, token_digest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockgate", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_created_token_is_shown_once_and_stored_as_a_hash(tmp_path: Path) -> None:
    """`token create` prints a token that identifies its entry; the file holds only its hash."""
    path = tmp_path / "tokens"
    first = run("token", "create", "--file", str(path), "--name", "ci", "--identity", "runner")
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert token.startswith("dg_") and len(token) > 40
    assert token not in path.read_text()
    assert token_digest(token) in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    entry = load_tokens(path).identify(token)
    assert entry is not None and (entry.name, entry.identity) == ("ci", "runner")
    assert load_tokens(path).identify(token + "x") is None
    again = run("token", "create", "--file", str(path), "--name", "ci", "--identity", "other")
    assert again.returncode == 2 and "exists" in again.stderr


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ci runner\n", "tokens:1: expected: NAME IDENTITY SHA256"),
        ("ci runner dg_plaintexttoken\n", "tokens:1: the third field must be a SHA-256"),
        (f"ci r {'a' * 64}\nci s {'b' * 64}\n", "tokens:2: token name 'ci' appears twice"),
        (f"ci r {'a' * 64}\ncd s {'a' * 64}\n", "tokens:2: the same token appears twice"),
        (f"c/i r {'a' * 64}\n", "tokens:1: names use"),
    ],
)
def test_bad_token_files_are_refused_with_the_line(text: str, problem: str) -> None:
    """Malformed lines, plaintext tokens, duplicates and odd names name their line."""
    with pytest.raises(TokenFileError, match=problem):
        parse_tokens(text, "tokens")
