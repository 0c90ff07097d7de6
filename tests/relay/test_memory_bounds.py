"""Memory stays bounded whatever clients send (issue 11, finding 7).

Pure tests: every table that clients can add keys to is bounded, found by walking what the
admission path keeps (not by a list of known caches, which a new cache would escape). The
gateway-process tests (RSS, held bodies, timeouts) are in test_held_bodies.py.
"""

from __future__ import annotations

import gc
import sys
from collections import deque
from collections.abc import Iterator

from dockgate.api.routes import identify
from dockgate.auth.authenticator import Authenticator
from dockgate.auth.sourceaddr import parse_address_list
from dockgate.auth.throttle import FailureThrottle, ThrottleSettings
from dockgate.auth.tokens import create_token_line, parse_tokens
from dockgate.http.request import parse_head_cached
from dockgate.policy.admission import Admissions, ConnectionFacts
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.rules import STATIC_DECISION_ENTRIES, Policy, PolicySet
from dockgate.policy.tecnativa import policy_from_environment

POLICY = """
bindings:
  - policy: ci
    users: [ci]
    sources: {allow: [10.0.0.0/8, 198.51.100.0/24]}
  - policy: paths
    anonymous: true
policies:
  ci:
    rules:
      - allow: {sections: [containers, images]}
      - deny: {paths: ["/containers/{id}/json"]}
  paths:
    rules:
      - allow: {unknown: true, paths: ["/x/{a*}"]}
      - allow: {sections: ["*"], paths: ["/containers/{id}/json"]}
"""
TOKEN, TOKEN_LINE = create_token_line("runner", "ci")


def _gate() -> Admissions:
    policies: PolicySet = parse_policy_text(POLICY, "bounds.yaml")
    authenticator = Authenticator(None, parse_tokens(TOKEN_LINE + "\n", "bounds.tokens"))
    return Admissions(
        policies,
        Gatekeeper(policies, authenticated=True),
        authenticator,
        FailureThrottle(ThrottleSettings(20, 50, 60.0, max_keys=1000)),
        parse_address_list(["10.9.0.0/16"]),
    )


def _method(i: int) -> str:
    """A distinct method for each i: `[A-Z]{1,20}` as the request reader allows."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out += chr(65 + r)
    return out


def _requests(start: int, count: int) -> Iterator[tuple[bytes, str]]:
    """Distinct heads (method, path, query, Host, Origin, credentials) and source addresses."""
    for i in range(start, start + count):
        kind = i % 6
        method = _method(i) if kind == 0 else "GET"
        target = {
            0: "/_ping",
            1: f"/containers/c{i}/json",
            2: f"/x/{i}",
            3: f"/containers/json?filters=%7B%22name%22%3A%5B%22n{i}%22%5D%7D",
            4: f"/v1.{i % 100}/images/i{i}/json",
            5: "/info",
        }[kind]
        # Callers without credentials may only name the gateway by address (DNS rebinding).
        host = f"h{i % 3000}.example" if kind in (1, 4) else f"127.0.0.{i % 200}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        if kind == 3:
            lines.append(f"Origin: http://o{i}.example")
        if kind in (1, 4):
            lines.append(f"Authorization: Bearer {TOKEN if i % 2 else f'wrong-{i}'}")
        if kind == 5:
            lines.append(f"X-Forwarded-For: 198.51.100.{i % 250}, 203.0.{i // 250 % 250}.{i % 7}")
        source = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" if kind != 5 else "10.9.0.1"
        yield ("\r\n".join(lines) + "\r\n\r\n").encode(), source


def _admit_all(gate: Admissions, start: int, count: int) -> None:
    for raw, source in _requests(start, count):
        gate.admit(parse_head_cached(raw), ConnectionFacts(source, source), 0.0)


def _is_ours(obj: object) -> bool:
    return type(obj).__module__.startswith("dockgate")


def _retained_entries(roots: list[object]) -> int:
    """Entries of every dict, list, set and deque reachable from `roots` through containers
    and dockgate's own objects (not through modules, classes or functions)."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict | list | set | frozenset | tuple | deque):
            total += len(obj)
        elif not _is_ours(obj):
            continue
        stack.extend(
            ref
            for ref in gc.get_referents(obj)
            if isinstance(ref, dict | list | set | frozenset | tuple | deque) or _is_ours(ref)
        )
    return total


def _module_state() -> list[object]:
    """The mutable module-level tables of every dockgate module (caches live there too)."""
    roots: list[object] = []
    for name, module in list(sys.modules.items()):
        if name.startswith("dockgate") and module is not None:
            roots.extend(
                value
                for value in vars(module).values()
                if isinstance(value, dict | list | set | deque) or _is_ours(value)
            )
    return roots


def test_nothing_grows_with_distinct_requests() -> None:
    """Finding 7: 200k distinct requests (unknown methods, targets, hosts, origins, sources,
    wrong tokens) leave no more retained entries than the caches' bounds allow. Before the
    fix, each unknown method added an entry to its policy's decision table, for ever."""
    gate = _gate()
    _admit_all(gate, 0, 20_000)
    warm = _retained_entries([gate, *_module_state()])
    _admit_all(gate, 20_000, 200_000)
    after = _retained_entries([gate, *_module_state()])
    # Every bounded table may go from empty to full between the two walks: a few 4096-entry
    # caches (heads, verdicts, bindings, sources, route matches, policy decisions) and the
    # keys they hold. Unbounded, 200k distinct inputs would add at least 200k.
    assert after - warm < 60_000, (warm, after)


def test_unknown_methods_do_not_grow_a_policy() -> None:
    """The decision table of one policy stays under its bound, whatever methods arrive."""
    policy: Policy = policy_from_environment({"CONTAINERS": "1", "POST": "1"}).active
    for i in range(3 * STATIC_DECISION_ENTRIES):
        method = _method(i)
        policy.decide(method, identify(method, "/_ping"), "/_ping")
        assert len(policy._static) <= STATIC_DECISION_ENTRIES
