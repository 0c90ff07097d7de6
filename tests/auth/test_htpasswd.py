"""htpasswd parsing and checking (the identity issue builds Basic auth on it)."""

from __future__ import annotations

import argon2
import pytest

from dockgate.auth.htpasswd import HtpasswdError, apr1_crypt, parse_htpasswd

# Written by Apache's own `htpasswd` (apache2-utils 2.4): -m (apr1), -s (SHA-1), -B (bcrypt).
APACHE_FILE = """\
# written by htpasswd
alice:$apr1$nM3z1duM$zFyF/rIzFvqV/YerJOiEI.
bob:{SHA}8Wyi36Noi/CMek4hVErxW9WYy3A=
carol:$2y$05$8NYPIU5dolHkW1T27NAav.48yu5mimwT1/TE5.CJMmbQdJ3f/gURK
"""


def test_apache_hashes_verify_and_legacy_ones_warn() -> None:
    """Each Apache format verifies its password and refuses others; apr1 and SHA-1 warn."""
    h = parse_htpasswd(APACHE_FILE, "users")
    assert h.verify("alice", "s3cret") and not h.verify("alice", "s3cret ")
    assert h.verify("bob", "pw2") and not h.verify("bob", "pw3")
    assert h.verify("carol", "pä ss") and not h.verify("carol", "pa ss")
    assert [w.split(":")[1] for w in h.warnings] == ["2", "3"]


def test_apr1_matches_apache() -> None:
    """Our MD5-crypt gives Apache's hash for the same salt."""
    assert apr1_crypt(b"s3cret", b"nM3z1duM") == "$apr1$nM3z1duM$zFyF/rIzFvqV/YerJOiEI."


def test_argon2_hashes_verify() -> None:
    """argon2id hashes (argon2-cffi's format) verify."""
    hashed = argon2.PasswordHasher().hash("correct horse")
    h = parse_htpasswd(f"dave:{hashed}\n", "users")
    assert h.verify("dave", "correct horse")
    assert not h.verify("dave", "correct horse battery")


def test_unknown_user_is_just_false() -> None:
    """An unknown user is refused like a wrong password (no exception, no difference)."""
    h = parse_htpasswd(APACHE_FILE, "users")
    assert h.verify("mallory", "s3cret") is False


def test_success_is_remembered_per_password() -> None:
    """A remembered success never lets another password through, nor outlives a reload."""
    h = parse_htpasswd(APACHE_FILE, "users")
    assert h.verify("carol", "pä ss")
    assert h.verify("carol", "pä ss")  # from the cache
    assert not h.verify("carol", "wrong")
    changed = APACHE_FILE.replace(
        "carol:$2y$05$8NYPIU5dolHkW1T27NAav.48yu5mimwT1/TE5.CJMmbQdJ3f/gURK",
        "carol:{SHA}8Wyi36Noi/CMek4hVErxW9WYy3A=",
    )
    reloaded = parse_htpasswd(changed, "users")
    assert not reloaded.verify("carol", "pä ss")
    assert reloaded.verify("carol", "pw2")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alice:plaintext\n", "users:1: user 'alice': unsupported or plaintext"),
        ("alice:abJnggxhB/yWI\n", "users:1: user 'alice': unsupported or plaintext"),  # DES
        ("# c\nalice\n", "users:2: expected user:hash"),
        (
            APACHE_FILE + "bob:{SHA}8Wyi36Noi/CMek4hVErxW9WYy3A=\n",
            "users:5: user 'bob' appears twice",
        ),
    ],
)
def test_bad_files_are_refused_with_the_line(text: str, problem: str) -> None:
    """Plaintext, DES crypt, malformed lines and duplicate users are errors naming the line."""
    with pytest.raises(HtpasswdError, match=problem):
        parse_htpasswd(text, "users")
