"""Issue 13, "attack your own change": credential tooling (auth/credtools.py, auth/credfile.py) and
the modes of the files it writes.

First pinned as `xfail(strict=True)` (asserting what should hold; it failed on the code of the
review), now closed: a plain test that fails if the hole reopens.

What held (tried, no test needed): a new file is 0600 and new directories 0700 whatever the
umask; the temporary file is made by mkstemp (0600, O_EXCL) in the target's directory; `list`
prints names and hash kinds only; `token create` prints the token once, on stdout.
"""

from __future__ import annotations

import pathlib
import stat
import subprocess

from support.gateway import run_dockgate

# An entry as Apache's `htpasswd -B -c` writes it: that tool creates the file 0666 & ~umask,
# 0644 under the usual umask (an nginx setup's file, which the README's migration keeps).
APACHE_ENTRY = "alice:$2y$05$abcdefghijklmnopqrstuuJ5s8Ah6V4aYQvKQpd7wJlOPAPy2E9Ty\n"


def dockgate(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_dockgate(*args, stdin=stdin)


def test_a_new_hash_does_not_land_in_a_world_readable_file_silently(
    tmp_path: pathlib.Path,
) -> None:
    """The nginx migration's htpasswd, 0644 as Apache's tool makes it: `dockgate htpasswd add
    bob` keeps the mode (credfile: "keeps the old one's mode"), so every local user can read
    bob's new hash and crack it offline, and nothing says so (the only warning is about mixed
    bcrypt costs). What should hold: the file is not readable by others afterwards, or the
    command (or `dockgate doctor --htpasswd`) warns that it is."""
    path = tmp_path / "htpasswd"
    path.write_text(APACHE_ENTRY)
    path.chmod(0o644)
    added = dockgate(
        "htpasswd", "add", "bob", "--password-stdin", "--file", str(path), stdin="bob-pw\n"
    )
    assert added.returncode == 0, added.stderr
    assert "bob:$2" in path.read_text()
    doctor = dockgate("doctor", "--htpasswd", str(path), "--upstream", f"unix://{tmp_path}/none")
    said = (added.stderr + doctor.stdout).lower()
    readable = bool(stat.S_IMODE(path.stat().st_mode) & stat.S_IROTH)
    assert not readable or "readable" in said or "0644" in said or "mode 644" in said
