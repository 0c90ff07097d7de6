"""Admission of requests (dockgate.policy.admission.Admissions.admit) with real credential files.

Claims under test, in the documented order: a trusted peer's X-Forwarded-For names the source
(read right to left; a malformed chain is 400; untrusted peers' headers are ignored); the global
source lists refuse (403) before any credential is checked; credentials: throttled sources and
user names get 429 with Retry-After, bad credentials 401 (the same for every kind of mistake),
a good Authorization is remembered per connection until the credential files change; a
verified certificate names the caller when there is no Authorization; callers without either
are anonymous, asked for credentials (401) when authentication is configured and no binding
takes anonymous callers; the first matching binding names the policy (403 when none does); the
policy decides.
"""

from __future__ import annotations

import base64
import pathlib
import time

import pytest

from dockgate.auth.authenticator import Authenticator, WatchedFile
from dockgate.auth.htpasswd import Htpasswd, HtpasswdError, load_htpasswd, parse_htpasswd
from dockgate.auth.identity import (
    ANONYMOUS_IDENTITY,
    BASIC,
    CERTIFICATE,
    NO_AUTH_IDENTITY,
    TOKEN,
    Identity,
)
from dockgate.auth.sourceaddr import UNIX_SOURCE, AddressList, parse_address_list
from dockgate.auth.tokens import TokenFileError, Tokens, load_tokens, parse_tokens
from dockgate.auth.tokens import create_token_line as new_token_line
from dockgate.http.request import parse_head
from dockgate.policy.admission import Admissions, ConnectionFacts
from support.admission import (
    CLIENT,
    LIST,
    POLICY,
    admissions,
    admit,
    assert_refused,
    assert_throttled,
    facts,
    head,
    throttled_gate,
)
from support.remote import htpasswd_text as hashed_lines

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "mallory": "mallory-pw"}


WITH_ANONYMOUS = POLICY.replace(
    "policies:\n",
    "  - policy: readonly\n    anonymous: true\n    sources: {allow: [unix]}\npolicies:\n",
    1,
)


CREATE = "/v1.41/containers/create"


IMAGES = "/v1.41/images/json"


LB = "10.0.0.1"  # the trusted load balancer


@pytest.fixture(scope="module")
def htpasswd_text() -> str:
    return hashed_lines(PASSWORDS)


@pytest.fixture(scope="module")
def token_lines() -> dict[str, tuple[str, str]]:
    """name -> (token, line): ci-runner acts as "ci", bobs-laptop as "bob"."""
    return {
        "ci-runner": new_token_line("ci-runner", "ci"),
        "bobs-laptop": new_token_line("bobs-laptop", "bob"),
    }


@pytest.fixture
def htpasswd(htpasswd_text: str) -> Htpasswd:
    return parse_htpasswd(htpasswd_text, "test.htpasswd")


@pytest.fixture
def tokens(token_lines: dict[str, tuple[str, str]]) -> Tokens:
    return parse_tokens("".join(line + "\n" for _, line in token_lines.values()), "test.tokens")


def basic(user: str, password: str | None = None) -> str:
    pw = PASSWORDS[user] if password is None else password
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


@pytest.fixture
def gate(htpasswd: Htpasswd, tokens: Tokens) -> Admissions:
    return admissions(Authenticator(htpasswd, tokens))


def test_two_users_get_their_own_policies_on_the_same_request(gate: Admissions) -> None:
    alice = admit(gate, head("POST", CREATE, basic("alice")))
    assert alice.identity == Identity("alice", BASIC)
    assert alice.source == CLIENT
    assert alice.retry_after is None
    assert alice.verdict.allowed
    assert (alice.verdict.policy, alice.verdict.label) == ("admin", "allow:admin:rule-1")
    assert alice.verdict.operation == "ContainerCreate"

    bob = admit(gate, head("POST", CREATE, basic("bob")))
    assert bob.identity == Identity("bob", BASIC)
    assert not bob.verdict.allowed
    assert bob.verdict.status == 403
    assert bob.verdict.policy == "readonly"
    assert bob.verdict.label == "deny:readonly:read-only"
    assert bob.verdict.message == "dockgate: ContainerCreate denied by policy readonly (read-only)"
    assert admit(gate, head("GET", LIST, basic("bob"))).verdict.allowed


def test_token_matches_by_its_name(
    gate: Admissions, token_lines: dict[str, tuple[str, str]]
) -> None:
    token = token_lines["ci-runner"][0]
    images = admit(gate, head("GET", IMAGES, f"Bearer {token}"))
    assert images.identity == Identity("ci", TOKEN, "ci-runner")
    assert images.verdict.allowed
    assert images.verdict.label == "allow:ci:rule-1"
    create = admit(gate, head("POST", CREATE, f"Bearer {token}"))
    assert create.verdict.status == 403
    assert create.verdict.label == "deny:ci:no-rule-allows-it"


def test_token_matches_by_its_identity(
    gate: Admissions, token_lines: dict[str, tuple[str, str]]
) -> None:
    token = token_lines["bobs-laptop"][0]
    admission = admit(gate, head("POST", CREATE, f"Bearer {token}"))
    assert admission.identity == Identity("bob", TOKEN, "bobs-laptop")
    assert admission.verdict.policy == "readonly"
    assert admission.verdict.label == "deny:readonly:read-only"


def test_group_member_bound_only_from_its_network(gate: Admissions) -> None:
    inside = admit(gate, head("POST", CREATE, basic("carol")), facts("10.50.3.4"))
    assert inside.identity == Identity("carol", BASIC)
    assert inside.verdict.allowed
    outside = admit(gate, head("POST", CREATE, basic("carol")), facts(CLIENT))
    assert outside.identity == Identity("carol", BASIC)
    assert_refused(
        outside,
        403,
        f"dockgate: no policy is bound to user carol from {CLIENT}",
        "deny:-:no-binding",
        "no binding",
    )


def test_authenticated_user_without_binding_is_403(gate: Admissions) -> None:
    admission = admit(gate, head("GET", LIST, basic("mallory")))
    assert admission.identity == Identity("mallory", BASIC)
    assert_refused(
        admission,
        403,
        f"dockgate: no policy is bound to user mallory from {CLIENT}",
        "deny:-:no-binding",
        "no binding",
    )


def test_no_binding_message_names_no_source_when_bindings_have_no_sources(
    htpasswd: Htpasswd,
) -> None:
    policy = """\
bindings:
  - policy: p
    users: [alice]
policies:
  p:
    rules:
      - allow: {sections: ["*"]}
"""
    gate = admissions(Authenticator(htpasswd), policy)
    assert_refused(
        admit(gate, head("GET", LIST, basic("bob"))),
        403,
        "dockgate: no policy is bound to user bob",
        "deny:-:no-binding",
        "no binding",
    )


def test_certificate_names_the_caller_without_authorization(gate: Admissions) -> None:
    deploy = Identity("deploy", CERTIFICATE, "CN=deploy")
    inside = admit(gate, head("POST", CREATE), facts("10.50.0.9", deploy))
    assert inside.identity == deploy
    assert inside.verdict.allowed
    outside = admit(gate, head("POST", CREATE), facts(CLIENT, deploy))
    assert_refused(
        outside,
        403,
        f"dockgate: no policy is bound to certificate deploy from {CLIENT}",
        "deny:-:no-binding",
        "no binding",
    )


def test_authorization_wins_over_the_certificate(gate: Admissions) -> None:
    deploy = Identity("deploy", CERTIFICATE, "CN=deploy")
    conn = facts("10.50.0.9", deploy)
    as_bob = admit(gate, head("POST", CREATE, basic("bob")), conn)
    assert as_bob.identity == Identity("bob", BASIC)
    assert as_bob.verdict.label == "deny:readonly:read-only"
    # A bad Authorization is not rescued by a good certificate.
    bad = admit(gate, head("POST", CREATE, basic("bob", "wrong")), conn)
    assert bad.verdict.status == 401
    assert bad.identity == ANONYMOUS_IDENTITY


def test_no_credentials_where_no_binding_takes_anonymous_is_401(gate: Admissions) -> None:
    for source in (CLIENT, "unix"):
        admission = admit(gate, head("GET", LIST), facts(source))
        assert admission.identity == ANONYMOUS_IDENTITY
        assert_refused(
            admission,
            401,
            "dockgate: authentication required",
            "deny:-:unauthenticated",
            "no credentials",
        )


def test_anonymous_binding_takes_callers_without_credentials(
    htpasswd: Htpasswd, tokens: Tokens
) -> None:
    gate = admissions(Authenticator(htpasswd, tokens), WITH_ANONYMOUS)
    listing = admit(gate, head("GET", LIST), facts("unix"))
    assert listing.identity == ANONYMOUS_IDENTITY
    assert listing.source == "unix"
    assert listing.verdict.allowed
    assert listing.verdict.label == "allow:readonly:rule-1"
    create = admit(gate, head("POST", CREATE), facts("unix"))
    assert create.verdict.label == "deny:readonly:read-only"
    # Callers with credentials are judged as themselves, never as anonymous.
    assert admit(gate, head("GET", LIST, basic("mallory")), facts("unix")).verdict.status == 403
    assert admit(gate, head("GET", LIST, basic("alice", "x")), facts("unix")).verdict.status == 401


def test_anonymous_caller_outside_the_anonymous_bindings_sources_is_asked_to_log_in(
    htpasswd: Htpasswd, tokens: Tokens
) -> None:
    gate = admissions(Authenticator(htpasswd, tokens), WITH_ANONYMOUS)
    admission = admit(gate, head("GET", LIST), facts(CLIENT))
    assert admission.verdict.status == 401
    assert admission.verdict.message == "dockgate: authentication required"


ANONYMOUS_EVERYWHERE = """\
bindings:
  - policy: readonly
    users: [alice]
  - policy: readonly
    anonymous: true
policies:
  readonly:
    read_only: true
    rules:
      - allow: {sections: ["*"]}
"""


def test_anonymous_callers_keep_the_dns_rebinding_host_check(
    htpasswd: Htpasswd, tokens: Tokens
) -> None:
    # Built as server.py builds it: the listener "authenticates" because a file is configured.
    gate = admissions(Authenticator(htpasswd, tokens), ANONYMOUS_EVERYWHERE)
    rebound = parse_head(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    admission = admit(gate, rebound)
    assert admission.identity == ANONYMOUS_IDENTITY
    assert admission.verdict.status == 403
    assert admission.verdict.label == "deny:-:browser"


def test_authenticated_callers_skip_the_host_check(htpasswd: Htpasswd, tokens: Tokens) -> None:
    gate = admissions(Authenticator(htpasswd, tokens), ANONYMOUS_EVERYWHERE)
    authorization = basic("alice").encode()
    raw = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: gateway.example\r\nAuthorization: "
    admission = admit(gate, parse_head(raw + authorization + b"\r\n\r\n"))
    assert admission.identity == Identity("alice", BASIC)
    assert admission.verdict.allowed


def test_without_authentication_everyone_is_anonymous(htpasswd: Htpasswd) -> None:
    gate = admissions(Authenticator(), WITH_ANONYMOUS)
    # No credentials are checked; an Authorization header is ignored, not refused.
    for authorization in (None, basic("alice"), "Basic garbage"):
        admission = admit(gate, head("GET", LIST, authorization), facts("unix"))
        assert admission.identity == NO_AUTH_IDENTITY
        assert admission.verdict.label == "allow:readonly:rule-1"
    assert_refused(
        admit(gate, head("GET", LIST, basic("alice")), facts(CLIENT)),
        403,
        "dockgate: no policy is bound to anonymous callers",
        "deny:-:no-binding",
        "no binding",
    )


def test_without_bindings_the_default_policy_applies_to_everyone(htpasswd: Htpasswd) -> None:
    policy = """\
policies:
  ro:
    read_only: true
    rules:
      - allow: {sections: ["*"]}
"""
    open_gate = admissions(Authenticator(), policy)
    admission = admit(open_gate, head("GET", LIST), facts(CLIENT))
    assert admission.identity == NO_AUTH_IDENTITY
    assert admission.verdict.label == "allow:ro:rule-1"
    auth_gate = admissions(Authenticator(htpasswd), policy)
    assert admit(auth_gate, head("GET", LIST, basic("mallory"))).verdict.label == "allow:ro:rule-1"
    # With authentication configured and no bindings, anonymous callers must log in.
    assert admit(auth_gate, head("GET", LIST)).verdict.status == 401


@pytest.mark.parametrize(
    "authorization",
    [
        basic("alice", "wrong"),
        basic("nobody", "alice-pw"),
        "Bearer dg_not-a-real-token",
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Digest username=alice",
        "",
    ],
)
def test_bad_credentials_all_get_the_same_401(gate: Admissions, authorization: str) -> None:
    admission = admit(gate, head("GET", LIST, authorization))
    assert admission.identity == ANONYMOUS_IDENTITY
    assert admission.retry_after is None
    assert_refused(
        admission, 401, "dockgate: invalid credentials", "deny:-:unauthenticated", "bad credentials"
    )


def test_global_deny_refuses_before_credentials_are_checked(gate: Admissions) -> None:
    for authorization in (basic("alice"), basic("alice", "wrong"), None):
        admission = admit(gate, head("GET", LIST, authorization), facts("192.0.2.5"))
        assert admission.identity == NO_AUTH_IDENTITY
        assert admission.source == "192.0.2.5"
        assert_refused(
            admission,
            403,
            "dockgate: requests from 192.0.2.5 are not allowed",
            "deny:-:source",
            "source denied",
        )
    # The wrong password was never tried, so nothing was counted against the source.
    assert gate.throttle.retry_after("192.0.2.5", "alice") is None
    assert not gate.throttle._sources


def test_global_deny_wins_over_allow(htpasswd: Htpasswd) -> None:
    policy = """\
sources:
  allow: [10.0.0.0/8, unix]
  deny: [10.66.0.0/16]
policies:
  p:
    rules:
      - allow: {sections: ["*"]}
"""
    gate = admissions(Authenticator(htpasswd), policy)
    assert admit(gate, head("GET", LIST, basic("bob")), facts("10.1.1.1")).verdict.allowed
    assert admit(gate, head("GET", LIST, basic("bob")), facts("unix")).verdict.allowed
    for source in ("10.66.0.1", "::ffff:10.66.0.1", "192.0.2.1"):
        assert_refused(
            admit(gate, head("GET", LIST, basic("bob")), facts(source)),
            403,
            f"dockgate: requests from {source} are not allowed",
            "deny:-:source",
            "source denied",
        )


def test_trusted_proxy_names_the_source(gate: Admissions) -> None:
    admission = admit(gate, head("POST", CREATE, basic("carol"), ["10.50.1.1"]), facts(LB))
    assert admission.source == "10.50.1.1"
    assert admission.verdict.allowed  # carol's binding is for 10.50/16


def test_several_trusted_hops_and_spoofed_left_entries(gate: Admissions) -> None:
    # The client claims 10.50.1.1 itself; the balancers appended 198.51.100.7, then 10.0.0.7.
    chain = ["10.50.1.1, 198.51.100.7, 10.0.0.7"]
    admission = admit(gate, head("POST", CREATE, basic("carol"), chain), facts(LB))
    assert admission.source == CLIENT
    assert admission.verdict.status == 403
    assert admission.verdict.message == (
        f"dockgate: no policy is bound to user carol from {CLIENT}"
    )
    # The same chain over two header fields.
    split = ["10.50.1.1", "198.51.100.7, 10.0.0.7"]
    assert admit(gate, head("GET", LIST, basic("carol"), split), facts(LB)).source == CLIENT


def test_untrusted_peer_forwarded_for_is_ignored(gate: Admissions) -> None:
    for chain in (["10.50.1.1"], ["garbage"]):
        admission = admit(gate, head("POST", CREATE, basic("carol"), chain), facts(CLIENT))
        assert admission.source == CLIENT
        assert admission.verdict.status == 403
    unix = admit(gate, head("GET", LIST, basic("alice"), ["192.0.2.5"]), facts("unix"))
    assert unix.source == "unix"
    assert unix.verdict.allowed


def test_ipv4_mapped_peer_is_a_trusted_proxy(gate: Admissions) -> None:
    admission = admit(
        gate, head("POST", CREATE, basic("carol"), ["10.50.1.1"]), facts("::ffff:10.0.0.1")
    )
    assert admission.source == "10.50.1.1"
    assert admission.verdict.allowed


def test_forwarded_source_meets_the_global_deny_list(gate: Admissions) -> None:
    admission = admit(gate, head("GET", LIST, basic("alice"), ["192.0.2.44"]), facts(LB))
    assert admission.source == "192.0.2.44"
    assert_refused(
        admission,
        403,
        "dockgate: requests from 192.0.2.44 are not allowed",
        "deny:-:source",
        "source denied",
    )


@pytest.mark.parametrize("chain", [["garbage"], ["198.51.100.7, "], ["10.50.1.1, nope, 10.0.0.7"]])
def test_malformed_forwarded_for_from_a_trusted_proxy_is_400(
    gate: Admissions, chain: list[str]
) -> None:
    admission = admit(gate, head("GET", LIST, basic("alice"), chain), facts(LB))
    assert admission.source == LB
    assert admission.identity == NO_AUTH_IDENTITY
    assert_refused(admission, 400, "dockgate: malformed X-Forwarded-For", "deny:-:bad-xff", "bad")


def test_trusted_unix_socket_proxy(htpasswd: Htpasswd, tokens: Tokens) -> None:
    gate = admissions(Authenticator(htpasswd, tokens), trusted=parse_address_list(["unix"]))
    admission = admit(gate, head("POST", CREATE, basic("carol"), ["10.50.9.9"]), facts("unix"))
    assert admission.source == "10.50.9.9"
    assert admission.verdict.allowed


def test_no_trusted_proxies_means_no_forwarded_for(htpasswd: Htpasswd, tokens: Tokens) -> None:
    gate = admissions(Authenticator(htpasswd, tokens), trusted=AddressList())
    admission = admit(gate, head("GET", LIST, basic("alice"), ["192.0.2.44"]), facts(LB))
    assert admission.source == LB
    assert admission.verdict.allowed


@pytest.mark.parametrize("source", [LB, "10.0.0.9", "unix"])
def test_proxy_protocol_means_no_forwarded_for(
    htpasswd: Htpasswd, tokens: Tokens, source: str
) -> None:
    """Issue 12, item 6 (failed before: a source that is a trusted proxy, which is what a
    PROXY header without a client leaves, had the client's own header read). Behind
    --proxy-protocol the balancer is layer 4: X-Forwarded-For is the client's, never read,
    not even a malformed one (no 400)."""
    trusted = parse_address_list(["10.0.0.0/24", "unix"])
    gate = admissions(Authenticator(htpasswd, tokens), trusted=trusted, proxy_protocol=True)
    for chain in (["192.0.2.44"], ["garbage"]):
        admission = admit(gate, head("GET", LIST, basic("alice"), chain), facts(source))
        assert admission.source == source
        assert admission.verdict.allowed


def test_429_after_n_failures_from_one_source(htpasswd: Htpasswd, tokens: Tokens) -> None:
    gate, clock = throttled_gate(htpasswd, tokens, per_source=3, per_user=100)
    for user in ("alice", "bob", "nobody"):
        assert admit(gate, head("GET", LIST, basic(user, "wrong"))).verdict.status == 401
    # Even the right password is not checked now, for any user, from that source.
    conn = facts()
    assert_throttled(admit(gate, head("GET", LIST, basic("alice")), conn), 60)
    assert conn.remembered is None
    assert_throttled(admit(gate, head("GET", LIST, "Bearer dg_x")), 60)
    # Another source is not affected.
    assert admit(gate, head("GET", LIST, basic("alice")), facts("198.51.100.8")).verdict.allowed
    # Retry-After is whole seconds, rounded up, at least 1.
    start = clock.now  # the three failures happened now
    for elapsed, retry_after in ((0.5, 60), (29.8, 31), (59.2, 1), (59.99, 1)):
        clock.now = start + elapsed
        assert_throttled(admit(gate, head("GET", LIST, basic("alice"))), retry_after)
    # The window has passed: credentials are checked again.
    clock.now = start + 60.0
    assert admit(gate, head("GET", LIST, basic("alice"))).verdict.allowed


def test_behind_a_trusted_proxy_failures_count_against_the_forwarded_client(
    htpasswd: Htpasswd, tokens: Tokens
) -> None:
    gate, _ = throttled_gate(htpasswd, tokens, per_source=2, per_user=100)
    balancer = facts(LB)
    for _ in range(2):
        wrong = admit(gate, head("GET", LIST, basic("bob", "x"), ["203.0.113.1"]), balancer)
        assert wrong.verdict.status == 401
    assert_throttled(admit(gate, head("GET", LIST, basic("bob"), ["203.0.113.1"]), balancer), 60)
    # Another client behind the same balancer is not throttled, nor is the balancer itself.
    other = admit(gate, head("GET", LIST, basic("bob"), ["203.0.113.2"]), balancer)
    assert other.source == "203.0.113.2"
    assert other.verdict.allowed
    assert gate.throttle.retry_after(LB, None) is None


def test_bad_tokens_count_against_the_source(htpasswd: Htpasswd, tokens: Tokens) -> None:
    gate, _ = throttled_gate(htpasswd, tokens, per_source=2, per_user=100)
    for _ in range(2):
        assert admit(gate, head("GET", LIST, "Bearer dg_wrong")).verdict.status == 401
    assert_throttled(admit(gate, head("GET", LIST, basic("alice"))), 60)


def test_429_per_user_across_sources(htpasswd: Htpasswd, tokens: Tokens) -> None:
    gate, clock = throttled_gate(htpasswd, tokens, per_source=100, per_user=3)
    for i in range(3):
        clock.now += 1
        wrong = admit(gate, head("GET", LIST, basic("alice", "wrong")), facts(f"198.51.100.{i}"))
        assert wrong.verdict.status == 401
    # From a fresh source, alice is throttled even with her password; bob is not.
    fresh = facts("203.0.113.50")
    assert_throttled(admit(gate, head("GET", LIST, basic("alice")), fresh), 58)
    assert admit(gate, head("GET", LIST, basic("bob")), fresh).verdict.label == (
        "allow:readonly:rule-1"
    )
    clock.now += 58
    assert admit(gate, head("GET", LIST, basic("alice")), fresh).verdict.allowed


def test_a_success_makes_its_source_known_and_clears_nothing(
    htpasswd: Htpasswd, tokens: Tokens
) -> None:
    """Issue 12, item 3: guesses at alice from other sources lock alice out of new sources
    only; where she authenticated, she keeps working (failed on the old code: 429 for alice
    everywhere). Her success no longer clears her failures (before, it gave the guessers a
    fresh budget at each of her logins)."""
    gate, _ = throttled_gate(htpasswd, tokens, per_source=3, per_user=3)
    assert admit(gate, head("GET", LIST, basic("alice"))).verdict.allowed  # from CLIENT
    for i in range(3):
        guess = admit(gate, head("GET", LIST, basic("alice", "w")), facts(f"198.51.100.{i}"))
        assert guess.verdict.status == 401
    assert admit(gate, head("GET", LIST, basic("alice"))).verdict.allowed
    # Another success from CLIENT cleared nothing: a new source is still locked for alice.
    assert_throttled(admit(gate, head("GET", LIST, basic("alice")), facts("203.0.113.1")), 60)
    # Bob's failures lock CLIENT for bob and for any name not known there, not for alice: she
    # is judged by her own failures from CLIENT (the attack review of issue 12: one user of a
    # shared source locked the others out; failed on the old code, 429 for alice) ...
    for _ in range(3):
        assert admit(gate, head("GET", LIST, basic("bob", "wrong"))).verdict.status == 401
    assert_throttled(admit(gate, head("GET", LIST, basic("bob"))), 60)
    assert_throttled(admit(gate, head("GET", LIST, "Bearer dg_x")), 60)
    assert admit(gate, head("GET", LIST, basic("alice"))).verdict.allowed
    # ... which keep their bound: 3 wrong passwords for alice from CLIENT lock her there.
    for _ in range(3):
        assert admit(gate, head("GET", LIST, basic("alice", "wrong"))).verdict.status == 401
    assert_throttled(admit(gate, head("GET", LIST, basic("alice"))), 60)


def test_a_known_source_gets_its_password_hashed_while_the_name_is_locked(
    htpasswd: Htpasswd, tokens: Tokens
) -> None:
    """The exemption holds on the hash path too (a password not remembered, e.g. after the
    htpasswd file was reloaded): the check is charged, runs, succeeds, and is refunded."""
    gate, _ = throttled_gate(htpasswd, tokens, per_source=100, per_user=2)
    gate.throttle.succeeded(CLIENT, "alice")
    for i in range(2):
        admit(gate, head("GET", LIST, basic("alice", "w")), facts(f"198.51.100.{i}"))
    assert not htpasswd.remembered("alice", PASSWORDS["alice"])
    assert admit(gate, head("GET", LIST, basic("alice"))).verdict.allowed
    assert htpasswd.remembered("alice", PASSWORDS["alice"])
    assert CLIENT not in gate.throttle._sources  # the charge was taken back
    assert list(gate.throttle._users["alice"]) == [5000.0, 5000.0]
    assert_throttled(admit(gate, head("GET", LIST, basic("alice")), facts("203.0.113.1")), 60)


def test_a_token_success_makes_no_source_known(
    htpasswd: Htpasswd, tokens: Tokens, token_lines: dict[str, tuple[str, str]]
) -> None:
    """Tokens have no claimed user name: a token holder's source is not exempt from the
    per-user lock of the Basic name it acts as."""
    gate, _ = throttled_gate(htpasswd, tokens, per_source=100, per_user=2)
    bob_token = "Bearer " + token_lines["bobs-laptop"][0]
    assert admit(gate, head("GET", LIST, bob_token)).verdict.allowed
    for i in range(2):
        admit(gate, head("GET", LIST, basic("bob", "w")), facts(f"198.51.100.{i}"))
    assert_throttled(admit(gate, head("GET", LIST, basic("bob"))), 60)


def test_unix_socket_clients_count_by_uid(htpasswd: Htpasswd, tokens: Tokens) -> None:
    """Issue 12, item 3: all unix-socket clients shared the key "unix", so one local user's
    guesses throttled every local client (failed on the old code)."""
    gate, _ = throttled_gate(htpasswd, tokens, per_source=2, per_user=100)
    guesser = ConnectionFacts(UNIX_SOURCE, UNIX_SOURCE, uid=1000)
    other = ConnectionFacts(UNIX_SOURCE, UNIX_SOURCE, uid=0)
    for _ in range(2):
        assert admit(gate, head("GET", LIST, basic("bob", "w")), guesser).verdict.status == 401
    assert_throttled(admit(gate, head("GET", LIST, basic("bob")), guesser), 60)
    allowed = admit(gate, head("GET", LIST, basic("bob")), other)
    assert allowed.verdict.allowed
    assert allowed.source == UNIX_SOURCE  # address lists still see "unix"
    # Without a uid (a platform without SO_PEERCRED), the shared key, as before.
    shared = ConnectionFacts(UNIX_SOURCE, UNIX_SOURCE)
    for _ in range(2):
        assert admit(gate, head("GET", LIST, basic("bob", "w")), shared).verdict.status == 401
    assert_throttled(admit(gate, head("GET", LIST, basic("bob")), shared), 60)
    assert admit(gate, head("GET", LIST, basic("bob")), other).verdict.allowed


def test_an_over_long_user_name_is_refused_before_any_bookkeeping(
    htpasswd: Htpasswd, tokens: Tokens
) -> None:
    """Issue 12, item 4: a name over 256 bytes is wrong credentials (401) and takes no entry
    in the user table (failed on the old code: each such name was kept, 47 KiB for the
    longest a request head admits). The attempt counts against its source, like any
    malformed credentials."""
    gate, _ = throttled_gate(htpasswd, tokens, per_source=100, per_user=1)
    for size in (257, 1000, 40_000):
        name = "a" * size
        refused = admit(gate, head("GET", LIST, basic(name, "x")))
        assert refused.verdict.status == 401
        assert refused.verdict.message == "dockgate: invalid credentials"
    assert not gate.throttle._users
    assert len(gate.throttle._sources[CLIENT]) == 3
    # 256 bytes is still a name (counted: one failure locks it with per_user=1).
    assert admit(gate, head("GET", LIST, basic("é" * 128, "x"))).verdict.status == 401
    assert list(gate.throttle._users) == ["é" * 128]


def test_success_is_remembered_on_the_connection(gate: Admissions) -> None:
    conn = facts()
    authorization = basic("alice")
    admit(gate, head("GET", LIST, authorization), conn)
    assert conn.remembered == (authorization.encode(), 0, Identity("alice", BASIC))
    # A failure does not replace it.
    admit(gate, head("GET", LIST, basic("alice", "wrong")), conn)
    assert conn.remembered == (authorization.encode(), 0, Identity("alice", BASIC))


def test_remembered_identity_is_used_without_a_check(gate: Admissions) -> None:
    authorization = basic("bob", "not bob's password").encode()
    conn = facts()
    conn.remembered = (authorization, 0, Identity("alice", BASIC))
    admission = admit(gate, head("POST", CREATE, authorization.decode()), conn)
    assert admission.identity == Identity("alice", BASIC)
    assert admission.verdict.allowed
    # Another header on the same connection is checked as usual.
    other = admit(gate, head("POST", CREATE, basic("bob")), conn)
    assert other.identity == Identity("bob", BASIC)
    assert conn.remembered == (basic("bob").encode(), 0, Identity("bob", BASIC))


def test_remembered_identity_of_another_generation_is_ignored(gate: Admissions) -> None:
    authorization = basic("bob", "wrong").encode()
    conn = facts()
    conn.remembered = (authorization, 7, Identity("alice", BASIC))
    admission = admit(gate, head("GET", LIST, authorization.decode()), conn)
    assert admission.verdict.status == 401


def test_remembered_authorization_is_not_throttled(htpasswd: Htpasswd, tokens: Tokens) -> None:
    gate, _ = throttled_gate(htpasswd, tokens, per_source=2, per_user=100)
    conn = facts()
    assert admit(gate, head("GET", LIST, basic("alice")), conn).verdict.allowed
    for _ in range(2):
        assert admit(gate, head("GET", LIST, basic("bob", "x"))).verdict.status == 401
    assert_throttled(admit(gate, head("GET", LIST, basic("bob"))), 60)
    # The keep-alive connection that already proved alice goes on working.
    assert admit(gate, head("GET", LIST, basic("alice")), conn).verdict.allowed


def test_memo_is_dropped_when_the_htpasswd_file_changes(
    tmp_path: pathlib.Path, htpasswd_text: str
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_text, encoding="utf-8")
    authenticator = Authenticator(WatchedFile(str(path), load_htpasswd, (HtpasswdError,)))
    gate = admissions(authenticator)
    conn = facts()
    authorization = basic("alice")
    start = time.monotonic()
    assert admit(gate, head("GET", LIST, authorization), conn, start).verdict.allowed
    assert conn.remembered is not None
    assert conn.remembered[1] == 0

    # alice is removed from the file: the next request on the same connection is refused.
    without_alice = "".join(
        line + "\n" for line in htpasswd_text.splitlines() if not line.startswith("alice:")
    )
    path.write_text(without_alice, encoding="utf-8")
    refused = admit(gate, head("GET", LIST, authorization), conn, start + 2)
    assert authenticator.generation == 1
    assert refused.verdict.status == 401
    assert refused.verdict.message == "dockgate: invalid credentials"


def test_memo_is_renewed_when_the_file_changes_but_the_user_stays(
    tmp_path: pathlib.Path, htpasswd_text: str
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(htpasswd_text, encoding="utf-8")
    authenticator = Authenticator(WatchedFile(str(path), load_htpasswd, (HtpasswdError,)))
    gate = admissions(authenticator)
    conn = facts()
    authorization = basic("alice")
    start = time.monotonic()
    assert admit(gate, head("GET", LIST, authorization), conn, start).verdict.allowed
    without_bob = "".join(
        line + "\n" for line in htpasswd_text.splitlines() if not line.startswith("bob:")
    )
    path.write_text(without_bob, encoding="utf-8")
    again = admit(gate, head("GET", LIST, authorization), conn, start + 2)
    assert again.verdict.allowed
    assert conn.remembered == (authorization.encode(), 1, Identity("alice", BASIC))


def test_memo_is_dropped_when_a_token_is_revoked(
    tmp_path: pathlib.Path, token_lines: dict[str, tuple[str, str]]
) -> None:
    path = tmp_path / "tokens"
    path.write_text("".join(line + "\n" for _, line in token_lines.values()), encoding="utf-8")
    authenticator = Authenticator(None, WatchedFile(str(path), load_tokens, (TokenFileError,)))
    gate = admissions(authenticator)
    conn = facts()
    authorization = "Bearer " + token_lines["ci-runner"][0]
    start = time.monotonic()
    first = admit(gate, head("GET", IMAGES, authorization), conn, start)
    assert first.identity == Identity("ci", TOKEN, "ci-runner")
    assert first.verdict.allowed
    path.write_text(token_lines["bobs-laptop"][1] + "\n", encoding="utf-8")  # ci-runner revoked
    # Within a second of the last check the file is not looked at again.
    assert admit(gate, head("GET", IMAGES, authorization), conn, start + 0.5).verdict.allowed
    revoked = admit(gate, head("GET", IMAGES, authorization), conn, start + 2)
    assert authenticator.generation == 1
    assert revoked.verdict.status == 401


# ----- decisions remembered ---------------------------------------------------------------------


def test_one_head_object_is_decided_for_each_caller_and_source_as_its_own(gate: Admissions) -> None:
    """The same head object (the reader keeps parsed heads) sent by different callers and from
    different sources, over and over: each gets its own binding's decision every time."""
    request = head("POST", "/images/create")
    deploy = Identity("deploy", CERTIFICATE)
    for _ in range(3):
        carol_in = admit(gate, request, facts("10.50.0.7", Identity("carol", CERTIFICATE)))
        carol_out = admit(gate, request, facts(CLIENT, Identity("carol", CERTIFICATE)))
        deploy_in = admit(gate, request, facts("10.50.0.7", deploy))
        bob = admit(gate, head("POST", "/images/create", basic("bob")))
        assert carol_in.verdict.allowed and carol_in.policy is not None
        assert carol_in.policy.name == "admin" and carol_in.identity.name == "carol"
        assert carol_out.verdict.label == "deny:-:no-binding"
        assert deploy_in.verdict.allowed and deploy_in.identity is deploy
        assert not bob.verdict.allowed and bob.verdict.policy == "readonly"
