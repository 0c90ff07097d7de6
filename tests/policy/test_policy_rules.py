"""Compiled policies (dockgate.policy.rules): precedence, matching and caching, in-process.

Every test builds its policy from YAML text through the loader (the way operators write them) or
from `Matcher`/`Rule` values directly, and asks `Policy.decide` with the operation that
`dockgate.api.routes.identify` finds for the request, exactly as the gatekeeper does.

Precedence under test (docstring of dockgate.policy.rules):
1. `read_only: true` denies every `writes=True` operation and every unidentified request;
2. otherwise the first matching `deny` rule denies, wherever it stands;
3. otherwise the first matching `allow` rule allows (and is the reported rule);
4. otherwise default deny, reason "no rule allows it".
"""

from __future__ import annotations

import random
import re
import textwrap
from typing import Any

import pytest
import yaml

from dockgate.api.routes import OPERATIONS, SECTIONS, Operation, RouteMatch, identify
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.rules import (
    Decision,
    Matcher,
    PatternError,
    Policy,
    compile_path_pattern,
    strip_version,
)


def load(text: str) -> Policy:
    """The default policy of a YAML policy file given as (indented) text."""
    return parse_policy_text(textwrap.dedent(text), "test.yaml").active


def decide(policy: Policy, request: str) -> Decision:
    """`policy.decide` for 'METHOD /path', with the operation the route table identifies."""
    method, _, path = request.partition(" ")
    return policy.decide(method, identify(method, path), path)


def sample_path(op: Operation) -> str:
    """A concrete path for an operation: every `{variable}` of its template becomes `x`."""
    return re.sub(r"\{[^}]+\}", "x", op.path)


# ----- precedence ---------------------------------------------------------------------------

PRECEDENCE = """
    policies:
      p:
        rules:
          - allow: {sections: [containers]}                  # 1
          - deny: {operations: [ContainerLogs]}              # 2
          - allow: {operations: [ContainerLogs, SystemInfo]} # 3
          - allow: {methods: [GET]}                          # 4
          - deny: {operations: [ContainerLogs, ImageList]}   # 5
"""

# (request, allowed, deciding rule, reason)
PRECEDENCE_TABLE = [
    # rules 1 and 4 both allow: the first matching allow is the one reported.
    ("GET /containers/json", True, 1, "rule 1"),
    # allow 1 and 3 come first and match, deny 2 matches too: an explicit deny wins.
    ("GET /containers/abc/logs", False, 2, "rule 2"),
    # rules 3 and 4 allow: rule 3 is reported.
    ("GET /info", True, 3, "rule 3"),
    # allow 4 comes before deny 5: the deny still wins, whatever the order.
    ("GET /images/json", False, 5, "rule 5"),
    # only rule 4 matches.
    ("GET /volumes", True, 4, "rule 4"),
    # nothing matches a POST of another section: default deny.
    ("POST /images/create", False, None, "no rule allows it"),
]


@pytest.mark.parametrize(("request_line", "allowed", "rule", "reason"), PRECEDENCE_TABLE)
def test_precedence_table(request_line: str, allowed: bool, rule: int | None, reason: str) -> None:
    """Deny beats allow in any order; the first matching allow is reported; else default deny."""
    decision = decide(load(PRECEDENCE), request_line)
    assert decision == Decision(allowed, "p", rule, reason)


def test_first_matching_deny_is_reported() -> None:
    """Of several matching deny rules, the first one in file order is the deciding rule."""
    policy = load(
        """
        policies:
          p:
            rules:
              - allow: {sections: ["*"]}
              - deny: {methods: [POST]}
              - deny: {operations: [ContainerCreate]}
        """
    )
    assert decide(policy, "POST /containers/create") == Decision(False, "p", 2, "rule 2")


def test_read_only_beats_allow() -> None:
    """`read_only: true` denies a write that an allow rule matches, with reason 'read-only'."""
    policy = load(
        """
        policies:
          ro:
            read_only: true
            rules:
              - allow: {sections: ["*"]}
        """
    )
    assert decide(policy, "POST /containers/create") == Decision(False, "ro", None, "read-only")
    assert decide(policy, "GET /containers/json") == Decision(True, "ro", 1, "rule 1")


def test_read_only_is_checked_before_deny_rules() -> None:
    """A write that a deny rule also matches is reported as 'read-only' (step 1 comes first)."""
    policy = load(
        """
        policies:
          ro:
            read_only: true
            rules:
              - deny: {operations: [ContainerCreate, ContainerLogs]}
              - allow: {sections: ["*"]}
        """
    )
    assert decide(policy, "POST /containers/create").reason == "read-only"
    # A read that a deny rule matches is denied by that rule.
    assert decide(policy, "GET /containers/x/logs") == Decision(False, "ro", 1, "rule 1")


def test_default_deny_of_an_empty_policy() -> None:
    """A policy without rules denies everything with the reason 'no rule allows it'."""
    policy = load("policies: {empty: {}}")
    for request_line in ("GET /_ping", "GET /containers/json", "GET /nonexistent"):
        assert decide(policy, request_line) == Decision(False, "empty", None, "no rule allows it")


def test_decision_messages_and_labels() -> None:
    """denial_message and label have the documented shapes for each kind of decision."""
    assert Decision(True, "p", 3, "rule 3").label == "allow:p:rule-3"
    assert Decision(False, "p", 2, "rule 2").label == "deny:p:rule-2"
    assert Decision(False, "ci", None, "read-only").label == "deny:ci:read-only"
    assert Decision(False, "p", None, "no rule allows it").label == "deny:p:no-rule-allows-it"
    assert (
        Decision(False, "ci", None, "read-only").denial_message("ContainerCreate")
        == "dockgate: ContainerCreate denied by policy ci (read-only)"
    )


# ----- read-only ----------------------------------------------------------------------------

READ_ONLY_ALLOW_ALL = """
    policies:
      ro:
        read_only: true
        rules:
          - allow: {sections: ["*"]}
          - allow: {unknown: true}
"""


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_read_only_denies_exactly_the_writes(name: str) -> None:
    """Under read-only with everything allowed, an operation is allowed iff writes=False."""
    op = OPERATIONS[name]
    policy = load(READ_ONLY_ALLOW_ALL)
    decision = policy.decide(op.method, RouteMatch(op, None, {}), sample_path(op))
    if op.writes:
        assert decision == Decision(False, "ro", None, "read-only")
    else:
        assert decision.allowed, decision


def test_read_only_denies_get_attach_websocket() -> None:
    """GET .../attach/ws is a write (a WebSocket carrying stdin): read-only denies it."""
    policy = load(READ_ONLY_ALLOW_ALL)
    decision = decide(policy, "GET /v1.41/containers/abc/attach/ws")
    assert identify("GET", "/v1.41/containers/abc/attach/ws") is not None
    assert decision == Decision(False, "ro", None, "read-only")


def test_read_only_denies_unknown_requests_even_with_unknown_allow() -> None:
    """Unidentified requests are denied under read-only although `unknown: true` allows them."""
    policy = load(READ_ONLY_ALLOW_ALL)
    for request_line in ("GET /nonexistent", "HEAD /containers/x/json", "PATCH /containers/x"):
        method, _, path = request_line.partition(" ")
        assert identify(method, path) is None
        assert decide(policy, request_line) == Decision(False, "ro", None, "read-only")
    # Control: the same rules without read-only allow them by rule 2.
    open_policy = load(READ_ONLY_ALLOW_ALL.replace("read_only: true", "read_only: false"))
    assert decide(open_policy, "GET /nonexistent") == Decision(True, "ro", 2, "rule 2")


# ----- methods --------------------------------------------------------------------------------


def test_head_is_not_get() -> None:
    """`methods: [GET]` does not match HEAD: HEAD /_ping and HEAD .../archive stay denied."""
    policy = load(
        """
        policies:
          p:
            rules:
              - allow: {methods: [GET]}
        """
    )
    assert decide(policy, "GET /_ping").allowed
    assert decide(policy, "GET /containers/x/archive").allowed
    assert decide(policy, "HEAD /_ping") == Decision(False, "p", None, "no rule allows it")
    assert not decide(policy, "HEAD /containers/x/archive").allowed


def test_head_can_be_allowed_on_its_own() -> None:
    """`methods: [HEAD]` allows the HEAD operations and no GET."""
    policy = load(
        """
        policies:
          p:
            rules:
              - allow: {methods: [HEAD]}
        """
    )
    assert decide(policy, "HEAD /_ping").allowed
    assert decide(policy, "HEAD /containers/x/archive").allowed
    assert not decide(policy, "GET /_ping").allowed


# ----- unidentified requests --------------------------------------------------------------------

PING = OPERATIONS["SystemPing"]


@pytest.mark.parametrize(
    ("matcher", "operation", "method", "expected"),
    [
        # Without `unknown: true`, no condition set matches an unidentified request.
        (Matcher(methods=frozenset({"GET"})), None, "GET", False),
        (Matcher(sections=frozenset({"*"})), None, "GET", False),
        (Matcher(paths=(compile_path_pattern("/{x*}"),)), None, "GET", False),
        # ...while the same conditions do match identified ones.
        (Matcher(methods=frozenset({"GET"})), PING, "GET", True),
        (Matcher(sections=frozenset({"*"})), PING, "GET", True),
        (Matcher(paths=(compile_path_pattern("/{x*}"),)), PING, "GET", True),
        # `unknown: true` matches unidentified requests only, and still honours `methods`.
        (Matcher(unknown=True), None, "GET", True),
        (Matcher(unknown=True), PING, "GET", False),
        (Matcher(unknown=True, methods=frozenset({"GET"})), None, "GET", True),
        (Matcher(unknown=True, methods=frozenset({"GET"})), None, "POST", False),
        # The method condition is checked on identified requests too.
        (Matcher(methods=frozenset({"POST"})), PING, "GET", False),
        (Matcher(sections=frozenset({"containers"})), PING, "GET", False),
        (Matcher(operations=frozenset({"SystemPing"})), PING, "GET", True),
    ],
)
def test_static_match(
    matcher: Matcher, operation: Operation | None, method: str, expected: bool
) -> None:
    """Matcher.static_match: unidentified requests are matched only by `unknown: true` rules."""
    assert matcher.static_match(operation, method) is expected


def test_methods_only_rule_does_not_allow_unidentified_requests() -> None:
    """`allow: {methods: [GET]}` allows identified GETs; an unidentified GET is default-denied."""
    policy = load(
        """
        policies:
          p:
            rules:
              - allow: {methods: [GET]}
              - allow: {unknown: true, methods: [PUT]}
        """
    )
    assert decide(policy, "GET /containers/json") == Decision(True, "p", 1, "rule 1")
    assert decide(policy, "GET /nonexistent") == Decision(False, "p", None, "no rule allows it")
    assert decide(policy, "PUT /nonexistent") == Decision(True, "p", 2, "rule 2")
    assert decide(policy, "POST /nonexistent") == Decision(False, "p", None, "no rule allows it")


# ----- path patterns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/containers/{id}", "/containers/abc", True),
        # Anchored at the end: no prefix matching.
        ("/containers/{id}", "/containers/abc/logs", False),
        # `{x}` is one non-empty segment.
        ("/containers/{id}", "/containers/", False),
        ("/containers/{id}/logs", "/containers/abc/logs", True),
        ("/containers/{id}/logs", "/containers/a/b/logs", False),
        ("/containers/{id}/logs", "/containers/abc/logsX", False),
        # `{x*}` is any non-empty remainder, slashes included.
        ("/containers/{id*}", "/containers/a/b/logs", True),
        ("/containers/{id*}", "/containers/", False),
        ("/images/{name*}/json", "/images/reg.example.com:5000/app:1/json", True),
        ("/images/{name*}/json", "/images/app/history", False),
        # Literal text is literal, and anchored at both ends.
        ("/containers/web", "/containers/web", True),
        ("/containers/web", "/containers/web2", False),
        ("/containers/web", "/x/containers/web", False),
        ("/images/a.b/json", "/images/aXb/json", False),
        ("/images/a+b/json", "/images/aab/json", False),
    ],
)
def test_path_patterns(pattern: str, path: str, expected: bool) -> None:
    """`{x}` is one segment, `{x*}` any remainder, the rest literal; matching is anchored."""
    assert bool(compile_path_pattern(pattern).fullmatch(path)) is expected
    assert Matcher(paths=(compile_path_pattern(pattern),)).path_match(path) is expected


@pytest.mark.parametrize("pattern", ["containers/x", "", "/x/{unclosed", "/x/unopened}", "/{1x}"])
def test_bad_path_patterns(pattern: str) -> None:
    """A pattern not starting with '/' or with a malformed placeholder is a PatternError."""
    with pytest.raises(PatternError):
        compile_path_pattern(pattern)


@pytest.mark.parametrize(
    ("path", "bare"),
    [
        ("/v1.41/containers/abc/logs", "/containers/abc/logs"),
        ("/v1/containers/json", "/containers/json"),
        ("/containers/abc/logs", "/containers/abc/logs"),
        ("/version", "/version"),
        ("/v1.41", "/v1.41"),
    ],
)
def test_strip_version(path: str, bare: str) -> None:
    """Only a `/v<digits and dots>` first segment followed by more path is removed."""
    assert strip_version(path) == bare


def test_paths_match_after_the_version_prefix() -> None:
    """A path rule written without version matches versioned and unversioned requests alike."""
    policy = load(
        """
        policies:
          p:
            rules:
              - allow: {operations: [ContainerLogs], paths: ["/containers/{id}/logs"]}
              - allow: {paths: ["/containers/web/{rest*}"]}
        """
    )
    assert decide(policy, "GET /v1.41/containers/abc/logs") == Decision(True, "p", 1, "rule 1")
    assert decide(policy, "GET /containers/abc/logs") == Decision(True, "p", 1, "rule 1")
    assert decide(policy, "GET /v1.41/containers/web/json") == Decision(True, "p", 2, "rule 2")
    assert not decide(policy, "GET /v1.41/containers/db/json").allowed
    # A name with a slash is not one segment (ContainerLogs routes it, `{id}` does not match).
    assert not decide(policy, "GET /v1.41/containers/a/b/logs").allowed


# ----- caching ----------------------------------------------------------------------------------


def test_same_decision_twice_is_cached() -> None:
    """A path-independent decision is computed once per (operation, method) and reused."""
    policy = load(PRECEDENCE)
    first = decide(policy, "GET /containers/json")
    second = decide(policy, "GET /v1.41/containers/json")
    assert first == second == Decision(True, "p", 1, "rule 1")
    assert first is second
    # Other operations get their own answers, before and after.
    assert decide(policy, "GET /containers/abc/logs") == Decision(False, "p", 2, "rule 2")
    assert decide(policy, "GET /containers/json") is first


def test_path_dependent_rules_are_evaluated_per_path() -> None:
    """With a path rule among the candidates, every request is decided on its own path."""
    policy = load(
        """
        policies:
          p:
            rules:
              - deny: {paths: ["/containers/db/{rest*}"]}
              - allow: {sections: [containers]}
              - allow: {operations: [ImageInspect], paths: ["/images/busybox/json"]}
        """
    )
    sequence = [
        ("GET /containers/web/json", Decision(True, "p", 2, "rule 2")),
        ("GET /containers/db/json", Decision(False, "p", 1, "rule 1")),
        ("GET /v1.41/containers/web/json", Decision(True, "p", 2, "rule 2")),
        ("GET /v1.41/containers/db/json", Decision(False, "p", 1, "rule 1")),
        ("GET /images/busybox/json", Decision(True, "p", 3, "rule 3")),
        ("GET /images/alpine/json", Decision(False, "p", None, "no rule allows it")),
        ("GET /images/busybox/json", Decision(True, "p", 3, "rule 3")),
        ("GET /containers/db/json", Decision(False, "p", 1, "rule 1")),
    ]
    for request_line, expected in sequence:
        assert decide(policy, request_line) == expected, request_line


# ----- a large generated policy -----------------------------------------------------------------


def _reference_path_match(pattern: str, path: str) -> bool:
    """Independent matcher: `{x}` one non-empty segment, `{x*}` a non-empty remainder."""
    tokens = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\*?\})", pattern)

    def match(i: int, pos: int) -> bool:
        if i == len(tokens):
            return pos == len(path)
        token = tokens[i]
        if token.startswith("{") and token.endswith("*}"):
            return any(match(i + 1, end) for end in range(pos + 1, len(path) + 1))
        if token.startswith("{"):
            end = pos
            while end < len(path) and path[end] != "/":
                end += 1
                if match(i + 1, end):
                    return True
            return False
        return path.startswith(token, pos) and match(i + 1, pos + len(token))

    return match(0, 0)


def _reference_decide(spec: dict[str, Any], method: str, path: str) -> tuple[bool, int | None]:
    """The documented precedence, written out plainly over the raw rule dictionaries."""
    found = identify(method, path)
    op = found.operation if found is not None else None
    bare = re.sub(r"^/v[0-9.]+(?=/)", "", path)
    if spec.get("read_only") and (op is None or op.writes):
        return False, None
    first_allow: int | None = None
    for number, rule in enumerate(spec["rules"], start=1):
        effect, cond = next(iter(rule.items()))
        if cond.get("unknown", False) != (op is None):
            continue
        if "methods" in cond and method not in cond["methods"]:
            continue
        sections = cond.get("sections", ["*"])
        if op is not None and "*" not in sections and op.section not in sections:
            continue
        if op is not None and "operations" in cond and op.name not in cond["operations"]:
            continue
        if "paths" in cond and not any(_reference_path_match(p, bare) for p in cond["paths"]):
            continue
        if effect == "deny":
            return False, number
        if first_allow is None:
            first_allow = number
    return first_allow is not None, first_allow


def _generate_policy(seed: int, read_only: bool) -> dict[str, Any]:
    rng = random.Random(seed)
    names = sorted(OPERATIONS)
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]
    rules: list[dict[str, Any]] = []
    for _ in range(100):
        kind = rng.choice(["sections", "operations", "methods", "paths", "unknown", "mixed"])
        cond: dict[str, Any] = {}
        if kind in ("sections", "mixed"):
            cond["sections"] = rng.sample([*SECTIONS, "*"], rng.randint(1, 3))
        if kind in ("operations", "mixed", "paths"):
            cond["operations"] = rng.sample(names, rng.randint(1, 4))
        if kind == "methods" or (kind in ("mixed", "unknown") and rng.random() < 0.7):
            cond["methods"] = rng.sample(methods, rng.randint(1, 2))
        if kind == "paths":
            op = OPERATIONS[cond["operations"][0]]
            variable = rng.choice(["web", "{id}", "{id*}"])
            cond["paths"] = [re.sub(r"\{[^}]+\}", variable, op.path)]
            if rng.random() < 0.5:
                cond["paths"].append("/containers/db/{rest*}")
        if kind == "unknown":
            cond["unknown"] = True
        # Denies stay narrow (named operations), so that allows still decide some requests.
        narrow = kind in ("operations", "paths")
        rules.append({"deny" if narrow and rng.random() < 0.5 else "allow": cond})
    return {"read_only": read_only, "rules": rules}


def _generated_requests() -> list[tuple[str, str]]:
    requests: list[tuple[str, str]] = []
    for op in OPERATIONS.values():
        for name in ("x", "web", "db", "a/b"):
            path = re.sub(r"\{[^}]+\}", name, op.path)
            requests += [(op.method, path), (op.method, "/v1.41" + path)]
    requests += [
        ("GET", "/nonexistent"),
        ("POST", "/foo/bar"),
        ("HEAD", "/containers/x/json"),
        ("PATCH", "/containers/x"),
        ("DELETE", "/v1.41/info"),
    ]
    return requests


@pytest.mark.parametrize("seed", range(6))
def test_hundred_rule_policy_decides_like_the_reference(seed: int) -> None:
    """A generated 100-rule policy decides every request as the plain reference does, twice."""
    spec = _generate_policy(seed, read_only=seed % 2 == 1)
    policy = parse_policy_text(yaml.safe_dump({"policies": {"big": spec}}), "big.yaml").active
    assert len(policy.rules) == 100
    outcomes: set[tuple[bool, bool]] = set()
    for _round in range(2):  # the second round answers from the cache
        for method, path in _generated_requests():
            decision = policy.decide(method, identify(method, path), path)
            expected = _reference_decide(spec, method, path)
            assert (decision.allowed, decision.rule) == expected, (method, path)
            outcomes.add((decision.allowed, decision.rule is not None))
    # Both kinds of deciding rule occur (and, under read-only, denials without a rule).
    expected_outcomes = {(True, True), (False, True)} | (
        {(False, False)} if spec["read_only"] else set()
    )
    assert expected_outcomes <= outcomes
