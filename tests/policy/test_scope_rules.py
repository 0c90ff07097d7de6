"""Object scopes in rules (policy/scopes.py): what a scope covers, how rules with `objects:`
combine into a decision, and what the loader refuses. The gateway's enforcement (look-ups,
lists, events, creates) is tested against the real daemon elsewhere."""

from __future__ import annotations

import pytest

from dockgate.api.routes import OPERATIONS, identify
from dockgate.policy.loader import PolicyError, parse_policy_text
from dockgate.policy.scopes import STACK_LABEL, ObjectScope, compile_pattern, scopable

POLICY = """
policies:
  web:
    rules:
      - allow: {operations: [ContainerRestart, ContainerList], objects: {labels: {team: web}}}
      - allow: {operations: [ContainerRestart], objects: {names: ["api-*"]}}
      - allow: {operations: [ContainerInspect]}
      - allow: {operations: [ContainerInspect], objects: {labels: {team: web}}}
      - allow: {sections: [containers, images], objects: {stacks: [shop]}}
"""


def _decide(method: str, path: str):  # type: ignore[no-untyped-def]
    policy = parse_policy_text(POLICY, "t.yaml").policies["web"]
    return policy.decide(method, identify(method, path), path)


def test_pattern_is_whole_and_star_is_any_run() -> None:
    pattern = compile_pattern("web-*")
    assert pattern.fullmatch("web-1") and pattern.fullmatch("web-")
    assert not pattern.fullmatch("xweb-1") and not pattern.fullmatch("web")
    assert compile_pattern("a.b").fullmatch("a.b") and not compile_pattern("a.b").fullmatch("axb")
    assert compile_pattern("*").fullmatch("") and compile_pattern("x*y").fullmatch("x\ny")


def test_object_scope_needs_every_condition() -> None:
    scope = ObjectScope(
        labels=(("team", compile_pattern("web")), ("tier", compile_pattern("*"))),
        names=(compile_pattern("web-*"),),
        stacks=frozenset({"shop"}),
    )
    labels = {"team": "web", "tier": "", STACK_LABEL: "shop"}
    assert scope.covers(labels, "web-1")
    assert not scope.covers(labels, "api-1")
    assert not scope.covers({**labels, "team": "Web"}, "web-1")  # values exact, case too
    assert not scope.covers({"team": "web", STACK_LABEL: "shop"}, "web-1")  # tier absent
    assert not scope.covers({"team": "web", "tier": "x"}, "web-1")  # no stack
    assert not scope.covers({"TEAM": "web", "tier": "", STACK_LABEL: "shop"}, "web-1")


def test_scoped_rules_are_alternatives() -> None:
    decision = _decide("POST", "/v1.41/containers/x/restart")
    assert decision.allowed and decision.rule == 1 and decision.scope is not None
    assert [number for number, _ in decision.scope.rules] == [1, 2, 5]
    assert decision.scope.covering_rule({"team": "web"}, "db") == 1
    assert decision.scope.covering_rule({}, "api-7") == 2
    assert decision.scope.covering_rule({STACK_LABEL: "shop"}, "x") == 5
    assert decision.scope.covering_rule({"team": "db"}, "db") is None


def test_a_rule_without_objects_covers_everything() -> None:
    decision = _decide("GET", "/v1.41/containers/x/json")
    assert decision.allowed and decision.rule == 3 and decision.scope is None


def test_a_scoped_rule_matches_only_operations_about_objects() -> None:
    assert not _decide("GET", "/v1.41/images/json").allowed  # images: not scopable
    assert not _decide("POST", "/v1.41/containers/prune").allowed  # prunes are not
    assert _decide("GET", "/v1.41/containers/json").scope is not None
    assert _decide("POST", "/v1.41/containers/create").scope is not None


def test_scopable_operations() -> None:
    yes = ["ContainerStart", "ContainerList", "ContainerCreate", "ExecStart", "TaskInspect"]
    yes += ["ServiceLogs", "VolumeInspect", "SystemEvents", "NetworkConnect", "SecretUpdate"]
    no = ["ImageList", "ContainerPrune", "VolumePrune", "SystemPing", "SystemInfo", "ImageBuild"]
    assert [o for o in yes if not scopable(OPERATIONS[o])] == []
    assert [o for o in no if scopable(OPERATIONS[o])] == []


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("{deny: {sections: [containers], objects: {names: [x]}}}", "for allow rules only"),
        ("{allow: {operations: [ImageList], objects: {names: [x]}}}", "ImageList is not about"),
        ("{allow: {methods: [GET], objects: {names: [x]}}}", "narrows a rule's sections"),
        ("{allow: {sections: [containers], objects: {}}}", "at least one of labels"),
        ("{allow: {sections: [containers], objects: {names: []}}}", "'names' is empty"),
        ("{allow: {sections: [containers], objects: {labels: {'': x}}}}", "label key is empty"),
        ("{allow: {sections: [containers], objects: {owner: x}}}", "owner"),
    ],
)
def test_loader_refuses(rule: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=problem):
        parse_policy_text(f"policies: {{a: {{rules: [{rule}]}}}}", "x.yaml")
