"""Over-long Basic passwords are wrong credentials, refused before any hash (issue 12, attack
review): a $apr1$ check of a 44 KiB guess cost ~250 times a short one. The effect on a real
gateway is tests/auth/test_attacks_identity.py::test_long_passwords_starve_the_password_checks;
here the limit's edges and its bookkeeping.
"""

from __future__ import annotations

import base64

from dockgate.auth.authenticator import (
    MAX_PASSWORD_BYTES,
    Authenticator,
    PasswordCheck,
    claimed_user,
)
from dockgate.auth.htpasswd import Htpasswd, apr1_crypt, parse_htpasswd
from dockgate.auth.identity import BASIC, Identity
from dockgate.auth.tokens import parse_tokens
from support.admission import CLIENT, admit, assert_throttled, head, throttled_gate

LONGEST = "é" * (MAX_PASSWORD_BYTES // 2)  # 1024 bytes of UTF-8 in 512 characters
TOO_LONG = LONGEST + "p"


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def _htpasswd(**users: str) -> Htpasswd:
    lines = "".join(f"{u}:{apr1_crypt(p.encode(), b'saltsalt')}\n" for u, p in users.items())
    return parse_htpasswd(lines, "test.htpasswd")


def test_the_longest_password_is_checked_and_a_longer_one_is_not() -> None:
    """1024 bytes (counted in UTF-8, not characters) is a password: hashed, and right for a
    user who has it. One byte more is wrong credentials with no hash to compute, even for that
    user's password with a byte added. Failed before: the 1025-byte password was hashed."""
    htpasswd = _htpasswd(alice=LONGEST, bob=TOO_LONG)
    auth = Authenticator(htpasswd)
    found = auth.identify(_basic("alice", LONGEST))
    assert isinstance(found, PasswordCheck) and found.run()
    assert found.identity == Identity("alice", BASIC)
    assert len(TOO_LONG.encode()) == MAX_PASSWORD_BYTES + 1
    assert auth.identify(_basic("bob", TOO_LONG)) is None  # no PasswordCheck: no hash
    assert auth.identify(_basic("nobody", "p" * 44 * 1024)) is None
    # Not a claim on the user either: counted against the source only.
    assert claimed_user(_basic("bob", TOO_LONG)) is None
    assert claimed_user(_basic("alice", LONGEST)) == "alice"


def test_an_over_long_password_counts_against_its_source_only() -> None:
    """Like a malformed header: 401 with the usual message, a failure for the source (locked
    after per_source of them), none for the user it names."""
    htpasswd = _htpasswd(alice="alice-pw", bob="bob-pw")
    gate, _ = throttled_gate(htpasswd, parse_tokens("", "test.tokens"), per_source=3, per_user=1)
    authorization = "Basic " + base64.b64encode(f"bob:{TOO_LONG}".encode()).decode()
    for _ in range(3):
        refused = admit(gate, head("GET", authorization=authorization))
        assert refused.verdict.status == 401
        assert refused.verdict.message == "dockgate: invalid credentials"
    assert not gate.throttle._users  # bob is not locked (per_user=1)
    assert len(gate.throttle._sources[CLIENT]) == 3
    bob = "Basic " + base64.b64encode(b"bob:bob-pw").decode()
    assert_throttled(admit(gate, head("GET", authorization=bob)), 60)
