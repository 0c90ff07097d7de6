"""A keep-alive connection repeating a request without credentials (issue 14, fourth pass):
`Admissions.admit` remembers its last admission on the connection's facts, keyed by the
`Admissions` generation (a reload makes a new one), the head object and the source. What it
must still see each time is pinned here; a certificate's expiry is checked before it
(tests/relay/test_attacks_shortcuts.py)."""

from __future__ import annotations

import base64

from dockgate.auth.authenticator import Authenticator
from dockgate.auth.htpasswd import parse_htpasswd
from dockgate.http.request import parse_head
from support.admission import LIST, POLICY, admissions, admit, facts, head
from support.remote import htpasswd_text as hashed_lines

ANONYMOUS_READS = POLICY.replace(
    "policies:\n",
    "  - policy: readonly\n    anonymous: true\npolicies:\n",
    1,
)


def _authenticator() -> Authenticator:
    return Authenticator(htpasswd=parse_htpasswd(hashed_lines({"alice": "alice-pw"}), "test"))


def test_a_repeated_head_gets_the_same_admission_on_its_connection() -> None:
    """The same head object on the same connection: the same admission object (no look-up
    again); another connection decides for itself, to the same effect."""
    gate = admissions(_authenticator(), ANONYMOUS_READS)
    request = head("GET", LIST)
    conn = facts()
    first = admit(gate, request, conn)
    assert first.verdict.allowed
    assert admit(gate, request, conn) is first
    other = admit(gate, request, facts())
    assert other.verdict == first.verdict


def test_a_reload_decides_again() -> None:
    """A new `Admissions` (a policy reload) does not take the connection's remembered one."""
    request = head("GET", LIST)
    conn = facts()
    first = admit(admissions(_authenticator(), ANONYMOUS_READS), request, conn)
    assert first.verdict.allowed
    again = admit(admissions(_authenticator(), POLICY), request, conn)
    assert again is not first
    assert again.verdict.refusal is not None and again.verdict.refusal.status == 401


def test_another_head_or_source_decides_again() -> None:
    """Only the same head object from the same source is taken from the memo."""
    gate = admissions(_authenticator(), ANONYMOUS_READS)
    conn = facts()
    first = admit(gate, head("GET", LIST), conn)
    create = admit(gate, head("POST", "/v1.41/containers/create"), conn)
    assert first.verdict.allowed and not create.verdict.allowed
    request = head("GET", LIST)
    admit(gate, request, conn)
    conn.source = "203.0.113.9"
    moved = admit(gate, request, conn)
    assert moved.source == "203.0.113.9"


def test_credentials_are_never_taken_from_the_memo() -> None:
    """A head with Authorization goes through the credential check each time (its failures
    counted, a changed password file seen): a bad password stays refused, never remembered."""
    gate = admissions(_authenticator(), ANONYMOUS_READS)
    token = base64.b64encode(b"alice:wrong").decode()
    request = parse_head(
        f"GET {LIST} HTTP/1.1\r\nHost: d\r\nAuthorization: Basic {token}\r\n\r\n".encode()
    )
    conn = facts()
    for _ in range(2):
        refused = admit(gate, request, conn)
        assert refused.verdict.refusal is not None
        assert refused.verdict.refusal.status == 401
    assert conn.admitted is None
