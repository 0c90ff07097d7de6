"""Bindings: who gets which policy (dockgate.policy.rules.Binding / PolicySet), the policy-file
keys that define them (`sources:`, `groups:`, `bindings:`), and `dockgate check --as/--source`.

Claims under test: the first binding that matches a caller names its policy, and a caller no
binding matches gets none; `users:` matches Basic users and tokens acting as those identities,
`tokens:` matches token names, `certificates:` certificate names, group members any
authenticated method, `anonymous: true` only callers without credentials, `authenticated: true`
any authenticated caller; a binding's `sources:` restricts it to addresses (unix-socket clients
are judged only when a list names "unix"); without bindings the default policy applies to
everyone. Mistakes in these keys are `PolicyError`s `FILE:LINE: problem` pointing at the
mistake (in the bad files below, the line carrying `# <- here`).
"""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from dockgate import cli
from dockgate.api.routes import identify
from dockgate.auth.identity import (
    ANONYMOUS,
    ANONYMOUS_IDENTITY,
    BASIC,
    CERTIFICATE,
    NO_AUTH_IDENTITY,
    NONE,
    TOKEN,
    Identity,
)
from dockgate.auth.sourceaddr import UNIX_SOURCE, parse_address_list
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.loader import PolicyError, parse_policy_text
from dockgate.policy.rules import NO_BINDING_POLICY, Binding, PolicySet

MARK = "# <- here"

BOUND = """\
sources:
  deny: [192.0.2.0/24]
groups:
  ops: [carol, ci-bot, deploy-cert]
  auditors: [dave]
bindings:
  - policy: admin
    users: [alice]
  - policy: readonly
    users: [bob]
  - policy: ci
    tokens: [ci-runner]
  - policy: ops
    groups: [ops, auditors]
  - policy: admin
    certificates: [root-cert]
  - policy: ops
    users: [alice, erin]
    sources: {allow: [10.0.0.0/8]}
  - policy: readonly
    users: [erin]
  - policy: readonly
    anonymous: true
    sources: {allow: [unix]}
policies:
  admin:
    rules:
      - allow: {sections: ["*"]}
  readonly:
    read_only: true
    rules:
      - allow: {sections: ["*"]}
  ci:
    rules:
      - allow: {sections: [images]}
  ops:
    rules:
      - allow: {sections: [containers]}
"""

ALICE = Identity("alice", BASIC)
BOB = Identity("bob", BASIC)


def load(text: str = BOUND, source: str = "test.yaml", *, toml: bool = False) -> PolicySet:
    return parse_policy_text(textwrap.dedent(text), source, toml=toml)


def bound(policies: PolicySet, identity: Identity, source: str = "198.51.100.1") -> int | None:
    """The number of the binding the caller gets, None for none."""
    binding = policies.binding_for(identity, source)
    return binding.number if binding is not None else None


# ----- Identity ---------------------------------------------------------------------------------


def test_identity_descriptions_and_authentication() -> None:
    assert ALICE.describe() == "user alice"
    assert Identity("ci", TOKEN, "ci-runner").describe() == "token ci-runner (ci)"
    assert Identity("ops", CERTIFICATE, "CN=ops").describe() == "certificate ops"
    assert ANONYMOUS_IDENTITY.describe() == "anonymous callers"
    assert NO_AUTH_IDENTITY.describe() == "anonymous callers"
    assert [i.authenticated for i in (ALICE, Identity("ci", TOKEN, "t"))] == [True, True]
    assert Identity("ops", CERTIFICATE).authenticated
    assert not ANONYMOUS_IDENTITY.authenticated
    assert not NO_AUTH_IDENTITY.authenticated
    assert (ANONYMOUS_IDENTITY.name, ANONYMOUS_IDENTITY.method) == ("anonymous", ANONYMOUS)
    assert (NO_AUTH_IDENTITY.name, NO_AUTH_IDENTITY.method) == ("-", NONE)


# ----- what the loader builds -------------------------------------------------------------------


def test_loaded_bindings() -> None:
    policies = load()
    assert policies.bindings is not None
    first, _, _, groups, _, networked, _, anonymous = policies.bindings
    assert first == Binding(number=1, policy="admin", users=frozenset({"alice"}), line=7)
    assert groups.groups == ("ops", "auditors")
    assert groups.members == frozenset({"carol", "ci-bot", "deploy-cert", "dave"})
    assert groups.line == 13
    assert networked.number == 6
    assert networked.sources is not None
    assert networked.sources.allow == parse_address_list(["10.0.0.0/8"])
    assert not networked.sources.deny
    assert anonymous.anonymous
    assert anonymous.line == 22
    assert anonymous.sources is not None
    assert anonymous.sources.allow.unix
    assert policies.sources.deny == parse_address_list(["192.0.2.0/24"])
    assert not policies.sources.allow
    # With bindings there is no `default:`: a caller nobody identified gets a deny-all policy.
    assert policies.default == ""
    assert policies.active is NO_BINDING_POLICY
    assert not NO_BINDING_POLICY.decide("GET", identify("GET", "/_ping"), "/_ping").allowed


def test_two_users_bound_to_different_policies_get_different_verdicts() -> None:
    policies = load()
    gatekeeper = Gatekeeper(policies, authenticated=True)
    target = "/v1.41/containers/create"
    verdicts = {}
    for identity in (ALICE, BOB):
        policy = policies.policy_for(identity, "198.51.100.1")
        assert policy is not None
        verdicts[identity.name] = gatekeeper.check_cached(
            "POST", target, b"localhost", None, False, policy=policy
        )
    assert verdicts["alice"].allowed
    assert verdicts["alice"].label == "allow:admin:rule-1"
    assert not verdicts["bob"].allowed
    assert verdicts["bob"].status == 403
    assert verdicts["bob"].label == "deny:readonly:read-only"
    assert verdicts["bob"].message == (
        "dockgate: ContainerCreate denied by policy readonly (read-only)"
    )
    # The same request, read-only: both may.
    for identity in (ALICE, BOB):
        policy = policies.policy_for(identity, "198.51.100.1")
        assert policy is not None
        assert gatekeeper.check("GET", "/v1.41/containers/json", policy=policy).allowed


def test_users_match_basic_users_and_token_identities() -> None:
    policies = load()
    assert bound(policies, BOB) == 2
    # A token whose identity is bob acts as bob, whatever the token is called.
    assert bound(policies, Identity("bob", TOKEN, "bobs-laptop")) == 2
    # A certificate named bob is not a Basic user: `users:` does not take it.
    assert bound(policies, Identity("bob", CERTIFICATE, "CN=bob")) is None
    assert bound(policies, Identity("mallory", BASIC)) is None


def test_tokens_match_by_token_name_only() -> None:
    policies = load()
    assert bound(policies, Identity("anything", TOKEN, "ci-runner")) == 3
    # A user, or a token identity, that happens to be called ci-runner is not that token.
    assert bound(policies, Identity("ci-runner", BASIC)) is None
    assert bound(policies, Identity("ci-runner", TOKEN, "other-token")) is None
    assert bound(policies, Identity("ci-runner", CERTIFICATE)) is None


def test_group_members_match_any_authenticated_method() -> None:
    policies = load()
    assert bound(policies, Identity("carol", BASIC)) == 4
    assert bound(policies, Identity("ci-bot", TOKEN, "some-token")) == 4
    assert bound(policies, Identity("deploy-cert", CERTIFICATE, "CN=deploy-cert")) == 4
    assert bound(policies, Identity("dave", BASIC)) == 4  # the second group of the binding
    # Members are identities; a token *named* carol acting as someone else is not carol.
    assert bound(policies, Identity("zed", TOKEN, "carol")) is None


def test_certificates_match_certificate_names_only() -> None:
    policies = load()
    assert bound(policies, Identity("root-cert", CERTIFICATE, "CN=root-cert")) == 5
    assert bound(policies, Identity("root-cert", BASIC)) is None
    assert bound(policies, Identity("root-cert", TOKEN, "root-cert")) is None
    # And a certificate named alice is not the Basic user alice.
    assert bound(policies, Identity("alice", CERTIFICATE, "CN=alice")) is None


def test_anonymous_binding_takes_only_callers_without_credentials() -> None:
    policies = load()
    assert bound(policies, ANONYMOUS_IDENTITY, UNIX_SOURCE) == 8
    assert bound(policies, NO_AUTH_IDENTITY, UNIX_SOURCE) == 8
    # Its sources name only "unix": anonymous callers over TCP get nothing.
    assert bound(policies, ANONYMOUS_IDENTITY, "127.0.0.1") is None
    assert bound(policies, ANONYMOUS_IDENTITY, "10.0.0.1") is None
    # Authenticated callers are never anonymous, even unbound ones from the unix socket.
    assert bound(policies, Identity("mallory", BASIC), UNIX_SOURCE) is None
    assert bound(policies, Identity("mallory", TOKEN, "t"), UNIX_SOURCE) is None
    # An identity that is literally called "anonymous" is not anonymous.
    assert bound(policies, Identity("anonymous", BASIC), UNIX_SOURCE) is None


def test_non_anonymous_bindings_never_take_anonymous_callers() -> None:
    policies = load(
        """\
        groups:
          everyone: ["anonymous", "-"]
        bindings:
          - policy: p
            users: ["anonymous", "-"]
          - policy: p
            groups: [everyone]
          - policy: p
            authenticated: true
        policies:
          p:
            rules:
              - allow: {sections: ["*"]}
        """
    )
    assert bound(policies, ANONYMOUS_IDENTITY) is None
    assert bound(policies, NO_AUTH_IDENTITY) is None
    assert policies.policy_for(ANONYMOUS_IDENTITY, "198.51.100.1") is None


AUTHENTICATED = """\
bindings:
  - policy: ro
    users: [bob]
  - policy: rw
    authenticated: true
  - policy: ro
    anonymous: true
policies:
  rw:
    rules:
      - allow: {sections: ["*"]}
  ro:
    read_only: true
    rules:
      - allow: {sections: ["*"]}
"""


def test_authenticated_true_takes_every_authenticated_method() -> None:
    policies = load(AUTHENTICATED)
    assert bound(policies, BOB) == 1  # an earlier binding still wins
    assert bound(policies, Identity("bob", TOKEN, "t")) == 1
    assert bound(policies, ALICE) == 2
    assert bound(policies, Identity("ci", TOKEN, "t")) == 2
    assert bound(policies, Identity("ops", CERTIFICATE, "CN=ops")) == 2
    assert bound(policies, ANONYMOUS_IDENTITY) == 3
    assert bound(policies, NO_AUTH_IDENTITY) == 3


def test_first_matching_binding_wins() -> None:
    policies = load()
    # alice is in binding 1 and in binding 6 (from 10/8): binding 1 always wins.
    assert bound(policies, ALICE, "10.1.2.3") == 1
    assert bound(policies, ALICE, "198.51.100.1") == 1
    # erin: binding 6 from 10/8 (ops), else binding 7 (readonly).
    assert bound(policies, Identity("erin", BASIC), "10.1.2.3") == 6
    assert bound(policies, Identity("erin", BASIC), "::ffff:10.1.2.3") == 6
    assert bound(policies, Identity("erin", BASIC), "198.51.100.1") == 7
    policy = policies.policy_for(Identity("erin", BASIC), "10.1.2.3")
    assert policy is not None
    assert policy.name == "ops"


def test_binding_sources_restrict_an_identity_to_a_network() -> None:
    policies = load(
        """\
        bindings:
          - policy: p
            users: [alice]
            sources:
              allow: [10.0.0.0/8, "2001:db8::/32"]
              deny: [10.66.0.0/16]
          - policy: p
            users: [bob]
            sources: {allow: [unix]}
          - policy: p
            users: [carol]
            sources: {deny: [unix]}
        policies:
          p:
            rules:
              - allow: {sections: ["*"]}
        """
    )
    alice = ALICE
    assert bound(policies, alice, "10.1.2.3") == 1
    assert bound(policies, alice, "2001:db8::5") == 1
    assert bound(policies, alice, "10.66.0.1") is None
    assert bound(policies, alice, "192.0.2.1") is None
    # In a binding, an allow list means "only from these": the unix socket too.
    assert bound(policies, alice, UNIX_SOURCE) is None
    # bob only from the unix socket.
    assert bound(policies, BOB, UNIX_SOURCE) == 2
    assert bound(policies, BOB, "127.0.0.1") is None
    assert bound(policies, BOB, "10.1.2.3") is None
    # carol from anywhere but the unix socket.
    assert bound(policies, Identity("carol", BASIC), UNIX_SOURCE) is None
    assert bound(policies, Identity("carol", BASIC), "192.0.2.1") == 3


def test_binding_answers_are_remembered_per_identity_and_source() -> None:
    policies = load()
    erin = Identity("erin", BASIC)
    assert bound(policies, erin, "10.1.2.3") == 6
    assert bound(policies, erin, "10.1.2.3") == 6
    assert bound(policies, erin, "198.51.100.1") == 7
    # The same name under another method is a different caller.
    assert bound(policies, Identity("erin", TOKEN, "t"), "10.1.2.3") == 6
    assert bound(policies, Identity("erin", CERTIFICATE), "10.1.2.3") is None


def test_without_bindings_the_default_policy_applies_to_everyone() -> None:
    policies = load(
        """\
        default: ro
        policies:
          rw:
            rules:
              - allow: {sections: ["*"]}
          ro:
            read_only: true
            rules:
              - allow: {sections: ["*"]}
        """
    )
    assert policies.bindings is None
    for identity in (ALICE, ANONYMOUS_IDENTITY, NO_AUTH_IDENTITY, Identity("x", TOKEN, "t")):
        assert policies.binding_for(identity, "192.0.2.1") is None
        policy = policies.policy_for(identity, "192.0.2.1")
        assert policy is not None
        assert policy.name == "ro"


def test_global_sources_deny_wins_over_allow() -> None:
    policies = load(
        """\
        sources:
          allow: [10.0.0.0/8, unix]
          deny: [10.66.0.0/16, "2001:db8::/32"]
        policies:
          p:
            rules:
              - allow: {sections: ["*"]}
        """
    )
    assert policies.sources.permits("10.1.1.1")
    assert policies.sources.permits(UNIX_SOURCE)
    assert not policies.sources.permits("10.66.1.1")
    assert not policies.sources.permits("::ffff:10.66.1.1")
    assert not policies.sources.permits("192.0.2.1")
    assert not policies.sources.permits("2001:db8::1")


def test_toml_bindings_mean_the_same_as_yaml() -> None:
    toml = """\
    [sources]
    deny = ["192.0.2.0/24"]

    [groups]
    ops = ["carol"]

    [[bindings]]
    policy = "rw"
    users = ["alice"]

    [[bindings]]
    policy = "ro"
    groups = ["ops"]
    sources = { allow = ["10.0.0.0/8", "unix"] }

    [policies.rw]
    rules = [{ allow = { sections = ["*"] } }]

    [policies.ro]
    read_only = true
    rules = [{ allow = { sections = ["*"] } }]
    """
    yaml_text = """\
    sources:
      deny: [192.0.2.0/24]
    groups:
      ops: [carol]
    bindings:
      - policy: rw
        users: [alice]
      - policy: ro
        groups: [ops]
        sources: {allow: [10.0.0.0/8, unix]}
    policies:
      rw:
        rules:
          - allow: {sections: ["*"]}
      ro:
        read_only: true
        rules:
          - allow: {sections: ["*"]}
    """
    from_toml = load(toml, "t.toml", toml=True)
    from_yaml = load(yaml_text)
    assert from_toml.bindings is not None
    assert from_yaml.bindings is not None
    assert [b.line for b in from_toml.bindings] == [7, 11]
    assert [b.line for b in from_yaml.bindings] == [6, 8]

    def meaning(b: Binding) -> object:
        return (b.number, b.policy, b.users, b.members, b.groups, b.sources)

    assert [meaning(b) for b in from_toml.bindings] == [meaning(b) for b in from_yaml.bindings]
    assert from_toml.sources == from_yaml.sources


# ----- mistakes ------------------------------------------------------------------------------


def marked_line(text: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if MARK in line]
    assert len(lines) == 1, "exactly one marked line expected"
    return lines[0]


def error_of(text: str, *, toml: bool = False) -> PolicyError:
    """The error of a file; YAML files get POLICIES appended (a valid `policies:` section)."""
    source = "bad.toml" if toml else "bad.yaml"
    full = textwrap.dedent(text) + ("" if toml else POLICIES)
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(full, source, toml=toml)
    error = caught.value
    assert error.source == source
    assert error.line == marked_line(full), str(error)
    assert str(error) == f"{source}:{error.line}: {error.problem}"
    return error


POLICIES = """\
policies:
  p:
    rules:
      - allow: {sections: ["*"]}
"""


def test_default_together_with_bindings_is_an_error() -> None:
    error = error_of(
        """\
        default: p  # <- here
        bindings:
          - policy: p
            users: [alice]
        """
    )
    assert error.problem == (
        "with 'bindings:', each caller gets the policy of its binding; 'default:' would bind "
        "everyone (write a binding with 'authenticated: true' instead)"
    )


def test_unknown_policy_in_a_binding_is_an_error() -> None:
    error = error_of(
        """\
        bindings:
          - policy: p
            users: [alice]
          - users: [bob]
            policy: nope  # <- here
        """
    )
    assert error.problem == "policy 'nope' is not defined"


def test_unknown_group_in_a_binding_is_an_error() -> None:
    error = error_of(
        """\
        groups:
          ops: [carol]
        bindings:
          - policy: p
            groups:
              - ops
              - devs  # <- here
        """
    )
    assert error.problem == "group 'devs' is not defined in 'groups:'"


@pytest.mark.parametrize(
    "nobody",
    [
        "policy: p",
        "{policy: p, users: [], groups: [], tokens: [], certificates: []}",
        "{policy: p, anonymous: false, authenticated: false}",
        "{policy: p, sources: {allow: [10.0.0.0/8]}}",
    ],
)
def test_a_binding_naming_nobody_is_an_error(nobody: str) -> None:
    error = error_of(
        f"""\
        bindings:
          - policy: p
            users: [alice]
          - {nobody}  # <- here
        """
    )
    assert error.problem == (
        "bindings.1: a binding names who it is for: users, groups, certificates, tokens, "
        "anonymous: true or authenticated: true (or, by the unix-socket peer: "
        "container, service, uids or gids)"
    )


def test_groups_without_bindings_is_an_error() -> None:
    error = error_of(
        """\
        version: 1
        groups:  # <- here
          ops: [carol]
        """
    )
    assert error.problem == "groups are used by 'bindings:', and there are none"


def test_an_empty_bindings_list_is_an_error() -> None:
    error = error_of(
        """\
        bindings: []  # <- here
        """
    )
    assert error.problem == "'bindings:' is empty: nobody would get a policy"


def test_an_empty_group_is_an_error() -> None:
    error = error_of(
        """\
        groups:
          ops: [carol]
          devs: []  # <- here
        bindings:
          - policy: p
            groups: [ops]
        """
    )
    assert error.problem == "group 'devs' has no members"


def test_a_badly_named_group_is_an_error() -> None:
    error = error_of(
        """\
        groups:
          "ops team": [carol]  # <- here
        bindings:
          - policy: p
            groups: ["ops team"]
        """
    )
    assert error.problem == "group name 'ops team': use letters, digits, . _ -"


def test_unknown_key_in_a_binding_is_an_error() -> None:
    error = error_of(
        """\
        bindings:
          - policy: p
            user: [alice]  # <- here
        """
    )
    assert error.problem == "bindings.0.user: unknown key 'user'"


def test_unknown_key_in_sources_is_an_error() -> None:
    error = error_of(
        """\
        sources:
          allow: [10.0.0.0/8]
          except: [10.1.0.0/16]  # <- here
        """
    )
    assert error.problem == "sources.except: unknown key 'except'"


def test_anonymous_must_be_a_boolean() -> None:
    error = error_of(
        """\
        bindings:
          - policy: p
            anonymous: "yes"  # <- here
        """
    )
    assert error.problem == "bindings.0.anonymous: Input should be a valid boolean"


@pytest.mark.parametrize(
    ("where", "entry", "detail"),
    [
        ("allow", "10.0.0.1/8", "10.0.0.1/8 has host bits set"),
        ("deny", "10.0.0.0/33", "'10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
        ("allow", "localhost", "'localhost' does not appear to be an IPv4 or IPv6 network"),
    ],
)
def test_bad_global_source_entries_are_errors_at_their_line(
    where: str, entry: str, detail: str
) -> None:
    error = error_of(
        f"""\
        sources:
          {where}:
            - 192.0.2.0/24
            - "{entry}"  # <- here
        """
    )
    assert error.problem == f"source address {entry!r}: {detail}"


def test_bad_binding_source_entry_is_an_error_at_its_line() -> None:
    error = error_of(
        """\
        bindings:
          - policy: p
            users: [alice]
          - policy: p
            users: [bob]
            sources:
              allow: [10.0.0.0/8]
              deny:
                - unix
                - 10.1.0.0/15  # <- here
        """
    )
    assert error.problem == "source address '10.1.0.0/15': 10.1.0.0/15 has host bits set"


def test_toml_unknown_policy_in_the_second_binding_points_at_it() -> None:
    error = error_of(
        """\
        [[bindings]]
        policy = "p"
        users = ["alice"]

        [[bindings]]
        policy = "nope"  # <- here
        users = ["bob"]

        [policies.p]
        rules = [{ allow = { sections = ["*"] } }]
        """,
        toml=True,
    )
    assert error.problem == "policy 'nope' is not defined"


def test_toml_bad_cidr_in_the_global_sources() -> None:
    error = error_of(
        """\
        [sources]
        allow = ["10.0.0.0/8"]
        deny = ["192.0.2.1/24"]  # <- here

        [policies.p]
        rules = [{ allow = { sections = ["*"] } }]
        """,
        toml=True,
    )
    assert error.problem == "source address '192.0.2.1/24': 192.0.2.1/24 has host bits set"


# ----- dockgate check --as --source ---------------------------------------------------------------


@pytest.fixture
def policy_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "bound.yaml"
    path.write_text(BOUND, encoding="utf-8")
    return path


def run_check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    status = cli.main(["check", *args])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_check_shows_the_binding_and_allows_the_head(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, err = run_check(
        capsys, "POST /v1.41/containers/create", "--policy", str(policy_file), "--as", "user:alice"
    )
    # 3: allowed on its head; the body, not given, decides the rest (the gateway judges it).
    assert status == 3, err
    assert lines == [
        "request:   POST /v1.41/containers/create",
        "caller:    user alice from 127.0.0.1",
        "binding:   1 (line 7) -> policy admin",
        "operation: ContainerCreate (section containers, can change state, "
        "POST /containers/create)",
        f"policy:    admin (from {policy_file})",
        "  rule   1 allow (line 28) sections=*  matches",
        "  body       read whole to be judged",
        "guardrails: ContainerCreate bodies are checked; give one with --body FILE",
        "decision:  allow (allow:admin:rule-1) if the body passes, else deny",
    ]


def test_check_denies_another_user_the_same_request(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run_check(
        capsys, "POST /v1.41/containers/create", "--policy", str(policy_file), "--as", "user:bob"
    )
    assert status == 1
    assert lines[2] == "binding:   2 (line 9) -> policy readonly"
    assert lines[-1] == (
        "decision:  deny, 403: dockgate: ContainerCreate denied by policy readonly (read-only)"
    )


def test_check_token_and_certificate_callers(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run_check(
        capsys,
        *("GET /v1.41/images/json", "--policy", str(policy_file)),
        *("--as", "token:ci-runner:builder", "--source", "10.1.2.3"),
    )
    assert status == 0
    assert lines[1] == "caller:    token ci-runner (builder) from 10.1.2.3"
    assert lines[2] == "binding:   3 (line 11) -> policy ci"
    assert lines[-1] == "decision:  allow (allow:ci:rule-1)"

    status, lines, _ = run_check(
        capsys,
        *("GET /v1.41/containers/json", "--policy", str(policy_file)),
        *("--as", "certificate:deploy-cert"),
    )
    assert status == 0
    assert lines[1] == "caller:    certificate deploy-cert from 127.0.0.1"
    assert lines[2] == "binding:   4 (line 13) -> policy ops"


def test_check_source_selects_the_binding(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("POST /v1.41/containers/create", "--policy", str(policy_file), "--as", "user:erin")
    status, lines, _ = run_check(capsys, *args, "--source", "10.9.9.9")
    assert status == 3  # allowed on its head; the body decides the rest
    assert lines[2] == "binding:   6 (line 17) -> policy ops"
    status, lines, _ = run_check(capsys, *args, "--source", "198.51.100.1")
    assert status == 1
    assert lines[2] == "binding:   7 (line 20) -> policy readonly"


def test_check_unbound_caller_is_denied(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run_check(
        capsys, "GET /v1.41/containers/json", "--policy", str(policy_file), "--as", "user:mallory"
    )
    assert status == 1
    assert lines == [
        "request:   GET /v1.41/containers/json",
        "caller:    user mallory from 127.0.0.1",
        "decision:  deny, 403: dockgate: no policy is bound to user mallory from 127.0.0.1",
    ]


def test_check_anonymous_only_from_the_unix_socket(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("GET /v1.41/containers/json", "--policy", str(policy_file))
    status, lines, _ = run_check(capsys, *args)  # default: anonymous from 127.0.0.1
    assert status == 1
    assert lines[-1] == "decision:  deny, 403: dockgate: no policy is bound to anonymous callers"
    status, lines, _ = run_check(capsys, *args, "--as", "anonymous", "--source", "unix")
    assert status == 0
    assert lines[1] == "caller:    anonymous callers from unix"
    assert lines[2] == "binding:   8 (line 22) -> policy readonly"


def test_check_global_source_deny(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run_check(
        capsys,
        *("GET /v1.41/containers/json", "--policy", str(policy_file)),
        *("--as", "user:alice", "--source", "192.0.2.9"),
    )
    assert status == 1
    assert lines[-1] == "decision:  deny, 403: dockgate: requests from 192.0.2.9 are not allowed"
    assert not any(line.startswith("binding:") for line in lines)


def test_check_command_line_source_lists_join_the_file(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("GET /v1.41/containers/json", "--policy", str(policy_file), "--as", "user:alice")
    status, lines, _ = run_check(
        capsys, *args, "--source", "10.1.1.1", "--deny-source", "10.0.0.0/8"
    )
    assert status == 1
    assert lines[-1] == "decision:  deny, 403: dockgate: requests from 10.1.1.1 are not allowed"
    status, lines, _ = run_check(
        capsys, *args, "--source", "10.1.1.1", "--allow-source", "198.51.100.0/24"
    )
    assert status == 1
    assert lines[-1] == "decision:  deny, 403: dockgate: requests from 10.1.1.1 are not allowed"
    status, _, _ = run_check(
        capsys, *args, "--source", "198.51.100.3", "--allow-source", "198.51.100.0/24"
    )
    assert status == 0


@pytest.mark.parametrize(
    "caller", ["bogus", "user:", "token:ci-runner", "token::ci", "certificate:", "group:ops"]
)
def test_check_bad_caller_is_a_usage_error(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str], caller: str
) -> None:
    status, lines, err = run_check(
        capsys, "GET /v1.41/_ping", "--policy", str(policy_file), "--as", caller
    )
    assert status == 2
    assert lines == []
    assert err == (
        f"dockgate: error: --as {caller!r}: use user:NAME, token:TOKEN-NAME:IDENTITY, "
        "certificate:NAME or anonymous\n"
    )


def test_check_bad_source_list_is_a_usage_error(
    policy_file: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, err = run_check(
        capsys,
        *("GET /v1.41/_ping", "--policy", str(policy_file)),
        *("--allow-source", "10.0.0.1/8"),
    )
    assert status == 2
    assert lines == []
    assert err == "dockgate: error: '10.0.0.1/8': 10.0.0.1/8 has host bits set\n"


def test_check_policy_error_is_a_usage_error(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "bindings:\n  - policy: nope\n    users: [alice]\n" + POLICIES, encoding="utf-8"
    )
    status, lines, err = run_check(capsys, "GET /v1.41/_ping", "--policy", str(path))
    assert status == 2
    assert lines == []
    assert err == f"dockgate: error: {path}:2: policy 'nope' is not defined\n"
