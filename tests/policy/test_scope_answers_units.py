"""Answers about one covered object that name objects out of the scope, the pure part
(policy/scopeanswers.py): a network's attached containers and services. The gateway's
rewriting of real answers is tested against the real daemon in test_attacks_scopes.py."""

from __future__ import annotations

import json

import pytest

from dockgate.api.routes import identify
from dockgate.policy.gatekeeper import Verdict
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.plan import Allowed, Answer, answer_handling, scoped_answer_rewritten
from dockgate.policy.scopeanswers import own_names, scoped_answer

SCOPED = "{operations: [NetworkInspect], objects: {names: ['web-*']}}"
UNSCOPED = "{operations: [NetworkInspect]}"


def _allowed(rule: str, mode: str = "enforce") -> Allowed:
    text = f"policies:\n  p:\n    mode: {mode}\n    rules:\n      - allow: {rule}\n"
    policy = parse_policy_text(text, "t.yaml").policies["p"]
    match = identify("GET", "/v1.41/networks/web-net")
    assert match is not None
    decision = policy.decide("GET", match, "/networks/web-net")
    verdict = Verdict(
        match.operation.name, "x", match, policy.name, decision.reason, scope=decision.scope
    )
    return Allowed(verdict, policy, None)


def test_a_scoped_network_inspect_is_held_in_enforce_mode_only() -> None:
    scoped = _allowed(SCOPED)
    assert scoped_answer_rewritten(scoped, 200)
    assert answer_handling(scoped, 200) is Answer.HOLD
    assert answer_handling(scoped, 404) is Answer.RELAY
    for other in (_allowed(SCOPED, "warn"), _allowed(UNSCOPED)):
        assert not scoped_answer_rewritten(other, 200)
        assert answer_handling(other, 200) is Answer.RELAY


def test_a_network_answer_names_no_container_or_service() -> None:
    answer = {
        "Name": "web-net",
        "Id": "n" * 64,
        "Containers": {"c" * 64: {"Name": "db", "IPv4Address": "10.0.0.2/24"}},
        "Services": {"db-svc": {"VIP": "10.0.0.5", "Tasks": [{"Name": "db-svc.1"}]}},
        "Peers": [{"Name": "node", "IP": "192.0.2.1"}],
    }
    rewritten = json.loads(scoped_answer("NetworkInspect", json.dumps(answer).encode()))
    assert rewritten == {**answer, "Containers": {}, "Services": {}}
    # What the daemon did not send stays unsent.
    bare = json.loads(scoped_answer("NetworkInspect", b'{"Name": "web-net"}'))
    assert bare == {"Name": "web-net"}


@pytest.mark.parametrize("body", [b"[]", b"not json", b'"x"'])
def test_an_unreadable_network_answer_fails_rather_than_passes(body: bytes) -> None:
    with pytest.raises((ValueError, TypeError)):
        scoped_answer("NetworkInspect", body)


def test_a_listed_container_keeps_its_own_name_only() -> None:
    entry: dict[str, object] = {"Names": ["/linker/alias", "/web", 3]}
    own_names(entry)
    assert entry == {"Names": ["/web"]}
    odd: dict[str, object] = {"Names": None}
    own_names(odd)
    assert odd == {"Names": None}
