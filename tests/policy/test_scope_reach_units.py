"""A policy's reach (issue 16's attack findings on object scopes): in a policy with `objects:`
rules, the existing objects a request reaches indirectly (a commit's container, a build's
`networkmode`, what a create body names) must be covered by the union of its scopes, whichever
rule allowed the request; `system df`, hex-only names and rollbacks are refused; a scoped
service's task containers must be covered; and policies without `objects:` plan as before.
The daemon's side is tested end to end in test_scope_reach_e2e.py and test_attacks_scopes.py."""

from __future__ import annotations

import json

import pytest

from dockgate.auth.identity import BASIC, Identity
from dockgate.check import admissions_for, parse_head
from dockgate.http.request import RequestHead
from dockgate.ownership.operations import CONTAINER, NETWORK
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.plan import (
    Forward,
    HoldBody,
    JudgedBody,
    LookUp,
    Step,
    judge_body,
    plan_request,
)
from dockgate.policy.rules import PolicySet
from dockgate.policy.scopes import Scope
from dockgate.policy.scoping import indirect_lookup, rollback_problem, task_problem
from dockgate.refusal import Refusal

POLICY = """\
bindings:
  - {policy: web, users: [alice]}
  - {policy: plain, users: [paul]}
  - {policy: warned, users: [wanda]}
policies:
  web:
    guardrails: false
    rules:
      - allow: {operations: [ContainerRestart, ImageCommit, ContainerRename,
                             ServiceCreate, ServiceUpdate], objects: {labels: {team: web}}}
      - allow: {operations: [ServiceCreate], objects: {names: ["shop-*"]}}
      - allow: {operations: [ContainerCreate, ImageBuild, SystemDataUsage, NetworkCreate]}
      - allow: {operations: [ImageCommit], paths: ["/commit"]}
  plain:
    guardrails: false
    rules:
      - allow: {operations: [ContainerCreate, ImageBuild, SystemDataUsage, ImageCommit,
                             ServiceUpdate]}
  warned:
    mode: warn
    rules:
      - allow: {operations: [ContainerRestart], objects: {labels: {team: web}}}
      - allow: {operations: [SystemDataUsage, ContainerCreate]}
"""


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return parse_policy_text(POLICY, "policy.yaml")


def head(method: str, target: str, body: bytes | None = None) -> RequestHead:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return parse_head(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))


def plan(policies: PolicySet, request: RequestHead, user: str = "alice") -> Step:
    admission = admissions_for(policies, credentials_required=False).judge(
        request, Identity(user, BASIC), "127.0.0.1"
    )
    return plan_request(request, admission, policies.owners)


def judged(policies: PolicySet, target: str, body: object, user: str = "alice") -> object:
    raw = json.dumps(body).encode()
    step = plan(policies, head("POST", target, raw), user)
    assert isinstance(step, HoldBody), step
    return judge_body(step, raw)


def test_the_reach_is_per_kind_the_union_of_the_rules_about_it(policies: PolicySet) -> None:
    """Computed at load, numbered by rule, per kind: a kind's reach is the union of the
    scoped rules matching some operation about that kind (rule 2 creates services only, so
    it says nothing of containers); a kind no scoped rule is about has none; None in a policy
    without `objects:`."""
    reach = policies.policies["web"].reach
    assert reach is not None
    containers, services = reach.of("container"), reach.of("service")
    assert containers is not None and services is not None
    assert [number for number, _ in containers.rules] == [1]
    assert [number for number, _ in services.rules] == [1, 2]
    assert reach.of("exec") == containers and reach.of("task") == services
    assert services.covers({"team": "web"}, "x") and services.covers({}, "shop-1")
    assert not containers.covers({}, "shop-1")
    assert not services.covers({"team": "db"}, "db-1")
    assert reach.of("network") is None and reach.of("volume") is None
    assert policies.policies["plain"].reach is None


@pytest.mark.parametrize(
    ("target", "kind", "reference", "pinned"),
    [
        ("/commit?container=db&repo=r", CONTAINER, "db", "/commit?repo=r&container=ID"),
        # r.FormValue: the first value; every `container` is replaced by the one judged
        ("/commit?container=db&container=web", CONTAINER, "db", "/commit?container=ID"),
        # Go's ParseQuery decodes keys as values
        ("/commit?contain%65r=db", CONTAINER, "db", "/commit?container=ID"),
        ("/build?networkmode=container:db&t=x", CONTAINER, "db", None),
        ("/build?networkmode=dbnet", NETWORK, "dbnet", "/build?networkmode=ID"),
    ],
)
def test_what_a_query_reaches_is_looked_up_and_pinned(
    target: str, kind: object, reference: str, pinned: str | None
) -> None:
    operation = "ImageCommit" if target.startswith("/commit") else "ImageBuild"
    found = indirect_lookup(operation, target, Scope(()))
    assert found is not None
    objects, _ = found
    assert (objects.kind, objects.references) == (kind, (reference,))
    if pinned is not None:
        assert objects.pin({reference: "ID"}) == pinned
    else:
        assert objects.pin({reference: "ID"}) == "/build?t=x&networkmode=container%3AID"


@pytest.mark.parametrize(
    "target",
    [
        "/build?networkmode=host",
        "/build?networkmode=default",
        "/build?networkmode=",
        "/build?t=x",
        "/build?NetworkMode=container:db",  # Go's form keys are case-sensitive: not read
        "/commit?Container=db",
    ],
)
def test_what_the_daemon_does_not_read_as_an_object_is_not_looked_up(target: str) -> None:
    operation = "ImageCommit" if target.startswith("/commit") else "ImageBuild"
    assert indirect_lookup(operation, target, Scope(())) is None


def test_an_unscoped_commit_or_build_is_looked_up_in_the_reach(policies: PolicySet) -> None:
    """Allowed by a rule without `objects:`, the container (or network) it reaches must still
    be covered by the policy's reach."""
    for target in ("/v1.41/commit?container=db", "/v1.41/build?networkmode=container:db"):
        step = plan(policies, head("POST", target))
        assert isinstance(step, LookUp), (target, step)
        reach = policies.policies["web"].reach
        assert reach is not None
        assert step.scope is not None and step.scope.scope == reach.of("container")
    # (a scoped ImageCommit rule: the same look-up, by the rule's own scope)
    step = plan(policies, head("POST", "/v1.41/commit?container=web&repo=x"))
    assert isinstance(step, LookUp) and step.scope is not None


def test_policies_without_objects_plan_as_before(policies: PolicySet) -> None:
    for method, target in (
        ("POST", "/v1.41/commit?container=db"),
        ("POST", "/v1.41/build?networkmode=container:db"),
        ("GET", "/v1.41/system/df"),
        ("POST", "/v1.41/containers/create?name=abcdef012345"),
    ):
        step = plan(policies, head(method, target), "paul")
        assert isinstance(step, Forward | HoldBody), (target, step)
        assert step.allowed.verdict.scope is None


def test_system_df_is_refused_in_a_policy_with_objects(policies: PolicySet) -> None:
    step = plan(policies, head("GET", "/v1.41/system/df"))
    assert isinstance(step, Refusal) and step.status == 403, step
    assert "objects:" in step.message
    # warn mode: recorded, forwarded
    step = plan(policies, head("GET", "/v1.41/system/df"), "wanda")
    assert isinstance(step, Forward) and step.allowed.verdict.would_deny is not None


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", "/v1.41/containers/create?name=abcdef012345", {"Image": "x"}),
        ("POST", "/v1.41/containers/create?name=/0123&name=web", {"Image": "x"}),
        ("POST", "/v1.41/containers/web/rename?name=deadbeef", None),
        ("POST", "/v1.41/networks/create", {"Name": "c0ffee"}),
    ],
)
def test_hex_only_names_are_refused_in_a_policy_with_objects(
    policies: PolicySet, method: str, target: str, body: object
) -> None:
    raw = None if body is None else json.dumps(body).encode()
    step = plan(policies, head(method, target, raw))
    if isinstance(step, HoldBody):
        assert raw is not None
        step = judge_body(step, raw)  # type: ignore[assignment]
    assert isinstance(step, Refusal) and step.status == 400, step
    assert "hex" in step.message or "ID" in step.message, step.message


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("rollback=previous", True),
        ("version=3&rollback=previous", True),
        ("rollback=previous&rollback=none", True),  # the first value is read
        ("rollback=none&rollback=previous", False),
        ("rollback=none", False),
        ("rollback=", False),
        ("Rollback=previous", False),  # not read by the daemon
        ("rollback=Previous", True),  # an error on the daemon: refused all the same
        ("version=3", False),
    ],
)
def test_a_rollback_is_refused_whenever_the_daemon_would_roll_back(
    query: str, refused: bool
) -> None:
    assert (rollback_problem("ServiceUpdate", query) is not None) == refused


def test_a_scoped_rollback_is_refused_before_any_look_up(policies: PolicySet) -> None:
    step = plan(policies, head("POST", "/v1.41/services/s1/update?version=2&rollback=previous"))
    assert isinstance(step, Refusal) and step.status == 403, step


def _service(name: str, container_labels: object, key: str = "ContainerSpec") -> dict[str, object]:
    spec: dict[str, object] = {"Image": "busybox"}
    if container_labels is not None:
        spec["Labels"] = container_labels
    return {"Name": name, "Labels": {"team": "web"}, "TaskTemplate": {key: spec}}


def test_a_scoped_service_must_leave_its_task_containers_covered(policies: PolicySet) -> None:
    whole = policies.policies["web"].reach
    reach = whole.of("service") if whole is not None else None
    assert reach is not None
    ok = task_problem(reach, "ServiceCreate", json.dumps(_service("s", {"team": "web"})).encode())
    assert ok is None
    for labels in ({"team": "db"}, None, {}):
        body = json.dumps(_service("s", labels)).encode()
        assert task_problem(reach, "ServiceCreate", body) is not None, labels
    # names conditions are judged on the service's name (its containers' names begin with it)
    body = json.dumps(_service("shop-1", None)).encode()
    assert task_problem(reach, "ServiceCreate", body) is None
    # Go folds the key: `containerspec` is the ContainerSpec
    body = json.dumps(_service("s", {"team": "db"}, key="containerspec")).encode()
    assert task_problem(reach, "ServiceCreate", body) is not None
    # no ContainerSpec: no container
    assert task_problem(reach, "ServiceCreate", b'{"Name":"s","Labels":{"team":"web"}}') is None


def test_a_scoped_service_create_planting_db_containers_is_refused(policies: PolicySet) -> None:
    found = judged(policies, "/v1.41/services/create", _service("s", {"team": "db"}))
    assert isinstance(found, Refusal) and found.status == 403, found
    assert "task containers" in found.message
    found = judged(policies, "/v1.41/services/create", _service("s", {"team": "web"}))
    assert isinstance(found, JudgedBody), found


def test_an_unscoped_create_names_objects_to_be_covered(policies: PolicySet) -> None:
    """Allowed by a rule without `objects:`: what the body makes is not judged, but the
    objects it names are looked up in the policy's reach."""
    body = {"Image": "x", "HostConfig": {"NetworkMode": "container:db", "VolumesFrom": ["v"]}}
    found = judged(policies, "/v1.41/containers/create", body)
    assert isinstance(found, JudgedBody), found
    assert [(k.name, r) for k, r in found.scoped] == [("container", "db"), ("container", "v")]
    assert found.claims == []
    # without references: nothing to look up, the create goes on unjudged
    found = judged(policies, "/v1.41/containers/create", {"Image": "x"})
    assert isinstance(found, JudgedBody) and not found.needs_daemon


def test_an_object_of_a_kind_no_scoped_rule_is_about_is_not_judged(
    policies: PolicySet,
) -> None:
    """The reach is per kind: the web policy scopes containers and services, not networks or
    volumes, so an unscoped build's network and the networks and volumes an unscoped create
    names are not looked up (the containers it names still are)."""
    step = plan(policies, head("POST", "/v1.41/build?networkmode=dbnet"))
    assert isinstance(step, Forward), step
    body = {
        "Image": "x",
        "HostConfig": {"NetworkMode": "dbnet", "Mounts": [{"Type": "volume", "Source": "dbvol"}]},
        "NetworkingConfig": {"EndpointsConfig": {"other": {}}},
    }
    found = judged(policies, "/v1.41/containers/create", body)
    assert isinstance(found, JudgedBody), found
    assert found.scoped == []
    body["HostConfig"] = {"NetworkMode": "container:db"}
    found = judged(policies, "/v1.41/containers/create", body)
    assert isinstance(found, JudgedBody), found
    assert [(k.name, r) for k, r in found.scoped] == [("container", "db")]


PRUNES = """\
bindings:
  - {policy: containers, users: [carl]}
  - {policy: warned, users: [wanda]}
policies:
  containers:
    rules:
      - allow: {operations: [ContainerRestart], objects: {labels: {team: web}}}
      - allow: {operations: [ContainerPrune, VolumePrune, NetworkPrune, ImagePrune, BuildPrune]}
  warned:
    mode: warn
    rules:
      - allow: {operations: [ContainerRestart, VolumeInspect], objects: {labels: {team: web}}}
      - allow: {operations: [ContainerPrune, VolumePrune, NetworkPrune]}
"""


@pytest.mark.parametrize(
    ("user", "target", "refused"),
    [
        ("carl", "/v1.41/containers/prune", True),
        # the policy scopes no volume or network, nor images or the build cache
        ("carl", "/v1.41/volumes/prune", False),
        ("carl", "/v1.41/networks/prune", False),
        ("carl", "/v1.41/images/prune", False),
        ("carl", "/v1.41/build/prune", False),
        ("wanda", "/v1.41/containers/prune", True),
        ("wanda", "/v1.41/volumes/prune", True),
        ("wanda", "/v1.41/networks/prune", False),
    ],
)
def test_a_prune_of_a_kind_the_reach_scopes_is_refused(
    user: str, target: str, refused: bool
) -> None:
    """A prune deletes what the daemon's exact-label filters find, which a scope cannot
    narrow: refused (403) where the reach scopes its kind; in warn mode recorded instead."""
    policies = parse_policy_text(PRUNES, "policy.yaml")
    step = plan(policies, head("POST", target), user)
    if not refused:
        assert isinstance(step, Forward | HoldBody), step
        assert step.allowed.verdict.would_deny is None
    elif user == "wanda":
        assert isinstance(step, Forward | HoldBody), step
        assert step.allowed.verdict.would_deny is not None
    else:
        assert isinstance(step, Refusal) and step.status == 403, step
        assert "one by one" in step.message, step.message


def test_a_scoped_kinds_create_named_like_an_id_prefix_is_looked_up(policies: PolicySet) -> None:
    """The web policy scopes services: a ServiceCreate named `k3q9z` (base 36) is to be
    checked against the services' IDs; `shop-1` (a `-`) is not."""
    body = {"Name": "k3q9z", "Labels": {"team": "web"}}
    found = judged(policies, "/v1.41/services/create", body)
    assert isinstance(found, JudgedBody), found
    assert [(k.name, n) for k, n in found.id_names] == [("service", "k3q9z")]
    assert found.needs_daemon and found.scope_lookups
    found = judged(policies, "/v1.41/services/create", {"Name": "shop-1"})
    assert isinstance(found, JudgedBody) and found.id_names == [], found
