"""Object scopes enforced (policy/scoping.py, the plan's scope steps, ownership/scopefind.py's
pure part): which requests are looked up and what they are pinned to, how a create body is read
as the daemon reads it, what is refused, and how scopes compose with ownership and warn mode.
The daemon's side (look-ups, pinning, absent answers) is tested end to end in
test_scopes_e2e.py, test_scopes_names_e2e.py and test_scopes_swarm_e2e.py."""

from __future__ import annotations

import json

import pytest

from dockgate.auth.identity import BASIC, Identity
from dockgate.check import admissions_for, parse_head
from dockgate.http.request import RequestHead
from dockgate.ownership.lookup import Unresolved
from dockgate.ownership.operations import CONTAINER, EXEC, NETWORK, SERVICE, TASK, VOLUME
from dockgate.ownership.prefix import resolve_among
from dockgate.ownership.scopefind import _lists, _own_names, _scope_name
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.plan import HoldBody, JudgedBody, LookUp, Step, judge_body, plan_request
from dockgate.policy.rules import PolicySet
from dockgate.policy.scoping import (
    claimed,
    create_problem,
    created,
    id_like_name,
    rename_problem,
)
from dockgate.refusal import Refusal

POLICY = """\
bindings:
  - {policy: web, users: [alice]}
  - {policy: owned, users: [olga]}
  - {policy: warned, users: [wanda]}
policies:
  web:
    rules:
      - allow:
          sections: [containers, exec, services, tasks, networks, volumes, secrets]
          objects: {labels: {team: web}}
      - allow: {operations: [ContainerRename, NetworkCreate], objects: {names: ["web-*"]}}
  owned:
    ownership: true
    rules:
      - allow: {sections: [containers, exec], objects: {labels: {team: web}}}
  warned:
    mode: warn
    rules:
      - allow: {sections: [containers], objects: {labels: {team: web}}}
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


@pytest.mark.parametrize(
    ("method", "target", "kind", "reference"),
    [
        ("POST", "/v1.41/containers/web/restart", CONTAINER, "web"),
        ("GET", "/v1.41/containers/3f2c/logs?stdout=1", CONTAINER, "3f2c"),
        ("POST", "/v1.41/exec/abc/start", EXEC, "abc"),
        ("GET", "/v1.41/services/shop_web/logs", SERVICE, "shop_web"),
        ("GET", "/v1.41/tasks/t1", TASK, "t1"),
        ("DELETE", "/v1.41/networks/n1", NETWORK, "n1"),
        ("GET", "/v1.41/volumes/vol1", VOLUME, "vol1"),
    ],
)
def test_a_request_about_one_object_is_looked_up_and_pinned(
    policies: PolicySet, method: str, target: str, kind: object, reference: str
) -> None:
    step = plan(policies, head(method, target))
    assert isinstance(step, LookUp) and step.scope is not None
    assert step.objects.kind is kind and step.objects.references == (reference,)
    pinned = step.objects.pin({reference: "F" * 64})
    assert pinned.startswith(target.replace(reference, "F" * 64, 1).partition("?")[0])
    assert pinned.partition("?")[2] == target.partition("?")[2]  # the query kept as it came


def test_lists_and_creates_are_not_looked_up_by_path(policies: PolicySet) -> None:
    assert not isinstance(plan(policies, head("GET", "/v1.41/containers/json")), LookUp)
    body = b'{"Image": "busybox", "Labels": {"team": "web"}}'
    step = plan(policies, head("POST", "/v1.41/containers/create", body))
    assert isinstance(step, HoldBody)


def test_ownership_and_scope_both_apply_to_one_look_up(policies: PolicySet) -> None:
    step = plan(policies, head("POST", "/v1.41/containers/web/restart"), "olga")
    assert isinstance(step, LookUp) and step.scope is not None
    assert step.objects.references == ("web",)


def test_a_rename_checks_its_new_name(policies: PolicySet) -> None:
    step = plan(policies, head("POST", "/v1.41/containers/web-1/rename?name=/db-1&name=web-2"))
    assert isinstance(step, LookUp) and step.scope is not None
    assert step.scope.renamed == "db-1"  # the daemon reads the first value, stores it bare
    problem = rename_problem(step.scope, {})
    assert problem is not None and "'db-1' would not be covered" in problem
    assert rename_problem(step.scope, {"team": "web"}) is None  # rule 1 covers it anyway


def _judge(
    policies: PolicySet, target: str, body: dict[str, object], user: str = "alice"
) -> object:
    raw = json.dumps(body).encode()
    step = plan(policies, head("POST", target, raw), user)
    assert isinstance(step, HoldBody), step
    return judge_body(step, raw)


def test_a_create_without_the_label_is_refused_with_the_rule(policies: PolicySet) -> None:
    refused = _judge(policies, "/v1.41/containers/create?name=x", {"Image": "busybox"})
    assert isinstance(refused, Refusal) and (refused.status, refused.stage) == (403, "scope")
    assert refused.message == (
        "dockgate: ContainerCreate denied by policy web: the container 'x' would not be "
        "covered by rule 1 (labels=team=web): add the labels (or choose the name) it needs"
    )
    judged = _judge(
        policies, "/v1.41/containers/create", {"Image": "busybox", "Labels": {"team": "web"}}
    )
    assert isinstance(judged, JudgedBody) and not judged.scoped and not judged.claims


def test_a_create_names_objects_to_look_up_and_claims_its_name(policies: PolicySet) -> None:
    body = {
        "Image": "busybox",
        "Labels": {"team": "web"},
        "HostConfig": {"NetworkMode": "backend", "Binds": ["data:/data"]},
    }
    judged = _judge(policies, "/v1.41/containers/create?name=/api", body)
    assert isinstance(judged, JudgedBody) and judged.needs_daemon
    assert judged.scoped == [(NETWORK, "backend"), (VOLUME, "data")]
    assert judged.claims == [(CONTAINER, "/api")]


def test_a_names_scope_needs_a_name(policies: PolicySet) -> None:
    refused = _judge(policies, "/v1.41/networks/create", {"Labels": {}})
    assert isinstance(refused, Refusal) and "has no name" in refused.message
    judged = _judge(policies, "/v1.41/networks/create", {"Name": "web-net"})
    assert isinstance(judged, JudgedBody)


def test_warn_mode_records_a_create_out_of_scope(policies: PolicySet) -> None:
    judged = _judge(policies, "/v1.41/containers/create", {"Image": "busybox"}, "wanda")
    assert isinstance(judged, JudgedBody)
    would = judged.allowed.verdict.would_deny
    assert would is not None and would.stage == "scope" and would.status == 403


@pytest.mark.parametrize(
    ("body", "labels", "name"),
    [
        (b'{"labels": {"team": "web"}, "Name": "n"}', {"team": "web"}, "n"),  # keys fold
        (b'{"Labels": {"team": "db"}, "LABELS": {"team": "web"}}', {"team": "web"}, None),
        (b'{"Labels": {"Team": "web"}}', {"Team": "web"}, None),  # map keys stay exact
        (b'{"Labels": {"team": null}, "name": "a", "Name": null}', {"team": ""}, "a"),
        (b'{"Labels": {"team": "web"}, "Labels": null}', {}, None),
    ],
)
def test_a_create_body_is_read_as_the_daemon_reads_it(
    body: bytes, labels: dict[str, str], name: str | None
) -> None:
    assert created("NetworkCreate", "", body) == (labels, name)


def test_a_container_is_named_by_its_first_name_parameter() -> None:
    assert created("ContainerCreate", "name=%2Fweb&name=db", b"{}") == ({}, "web")
    assert created("ContainerCreate", "", b"{}") == ({}, None)
    with pytest.raises(ValueError, match="not a string"):
        created("VolumeCreate", "", b'{"Labels": {"a": 1}}')
    assert claimed("VolumeCreate", "", b'{"Name": "v"}') == [(VOLUME, "v")]
    assert claimed("NetworkCreate", "", b'{"Name": "n"}') == []


def test_create_problem_with_patterns() -> None:
    policy = parse_policy_text(
        "policies: {p: {rules: [{allow: {sections: [volumes], "
        "objects: {labels: {team: 'web-*'}, names: ['data-*']}}}]}}",
        "p.yaml",
    ).policies["p"]
    request = head("POST", "/v1.41/volumes/create")
    from dockgate.api.routes import identify  # noqa: PLC0415

    scope = policy.decide("POST", identify("POST", request.target), request.target).scope
    assert scope is not None
    ok = b'{"Name": "data-1", "Labels": {"team": "web-blue"}}'
    assert create_problem(scope, "VolumeCreate", "", ok) is None
    assert create_problem(scope, "VolumeCreate", "", b'{"Name": "x", "Labels": {"team": "web-1"}}')
    assert create_problem(scope, "VolumeCreate", "", b'{"Name": "data-1"}')


# ----- resolving a reference among covered objects (ownership/scopefind.py) -------------------


def test_resolution_is_as_the_daemons_among_covered_objects_only() -> None:
    covered = {"ab12" + "0" * 60: ["/web"], "ab34" + "0" * 60: ["/ab3"], "cd" + "0" * 62: ["/x"]}
    objects = list(covered.items())
    assert resolve_among(CONTAINER, "web", objects) == "ab12" + "0" * 60
    assert resolve_among(CONTAINER, "ab3", objects) == "ab34" + "0" * 60  # a name before a prefix
    assert resolve_among(CONTAINER, "cd", objects) == "cd" + "0" * 62
    assert resolve_among(CONTAINER, "ef", objects) is None
    assert resolve_among(CONTAINER, "/ab12", objects) is None  # `/...` is a name only
    with pytest.raises(Unresolved):
        resolve_among(CONTAINER, "ab", objects)


def test_a_container_is_resolved_by_its_own_name_never_a_link_alias() -> None:
    """The daemon lists `/db/w` among web's `Names` when db was run `--link web:w`: that
    alias is db's, and resolving `db/w` to web would tell that db exists and links to it."""
    names = _own_names(CONTAINER, ["/db/w", "/web", "/other/x"])
    assert names == ["/web"]
    objects = [("ab12" + "0" * 60, names)]
    assert resolve_among(CONTAINER, "db/w", objects) is None
    assert resolve_among(CONTAINER, "/db/w", objects) is None
    assert resolve_among(CONTAINER, "web", objects) == "ab12" + "0" * 60
    assert _own_names(SERVICE, ["a/b"]) == ["a/b"]  # (other kinds have one name, as listed)


def test_a_containers_scope_name_is_its_own_not_a_link_alias() -> None:
    assert _scope_name(CONTAINER, ["/other/alias", "/web"]) == "web"
    assert _scope_name(NETWORK, ["n"]) == "n"


def test_one_list_per_set_of_label_keys(policies: PolicySet) -> None:
    policy = parse_policy_text(
        "policies: {p: {rules: ["
        "{allow: {sections: [containers], objects: {labels: {team: web}}}},"
        "{allow: {sections: [containers], objects: {labels: {team: api}}}},"
        "{allow: {sections: [containers], objects: {stacks: [shop]}}}]}}",
        "p.yaml",
    ).policies["p"]
    from dockgate.api.routes import identify  # noqa: PLC0415

    target = "/v1.41/containers/x/json"
    scope = policy.decide("GET", identify("GET", target), target).scope
    assert scope is not None
    lists = _lists(scope)
    assert [(sorted(keys), len(rules)) for keys, rules in lists] == [
        (["team"], 2),
        (["com.docker.stack.namespace"], 1),
    ]


# ----- dockgate check --------------------------------------------------------------------------


def _check(policies: PolicySet, method: str, target: str, body: bytes | None = None) -> list[str]:
    from dockgate.check import CheckRequest, run_check  # noqa: PLC0415

    out: list[str] = []
    request = CheckRequest(method, target, Identity("alice", BASIC), "127.0.0.1", body=body)
    out.append(str(run_check(request, policies, out)))
    return out


def test_check_shows_the_scope_and_names_the_look_up(policies: PolicySet) -> None:
    out = _check(policies, "POST", "/v1.41/containers/web/restart")
    assert out[-1] == "3"  # decided by a look-up in the daemon
    assert any("objects=(labels=team=web)  matches" in line for line in out), out
    assert "scope:     only on the objects covered by rule 1 (labels=team=web)" in out
    assert any(
        line.startswith("lookup:    the daemon is asked for container 'web' among the objects")
        for line in out
    ), out


def test_check_says_why_a_create_is_refused(policies: PolicySet) -> None:
    out = _check(policies, "POST", "/v1.41/containers/create?name=x", b'{"Image": "busybox"}')
    assert out[-1] == "1"
    assert out[-2].startswith("decision:  deny, 403: dockgate: ContainerCreate denied by policy")
    assert "would not be covered by rule 1 (labels=team=web)" in out[-2]


def test_a_scoped_network_create_always_checks_for_duplicates(policies: PolicySet) -> None:
    """(the 20.10 daemon's warning for a duplicate name names the holder's ID)"""
    from dockgate.body import gojson  # noqa: PLC0415

    for raw in (b'{"Name": "web-n", "checkDuplicate": false}', b'{"Name": "web-n"}\n'):
        step = plan(policies, head("POST", "/v1.41/networks/create", raw))
        assert isinstance(step, HoldBody)
        judged = judge_body(step, raw)
        assert isinstance(judged, JudgedBody)
        top = gojson.parse(judged.body, strict_end=True)
        assert isinstance(top, gojson.GoObject)
        assert gojson.scalar((top,), "CheckDuplicate") is True
        assert gojson.scalar((top,), "Name") == "web-n"


@pytest.mark.parametrize(
    ("operation", "name", "expected"),
    [
        ("ServiceCreate", "k3q9z", ("service", "k3q9z")),
        ("SecretCreate", "abc", ("secret", "abc")),
        ("ConfigCreate", "z" * 25, ("config", "z" * 25)),
        ("ConfigCreate", "z" * 26, None),  # longer than an ID
        ("ServiceCreate", "web-1", None),  # a character no ID has
        ("ServiceCreate", "Web", None),  # upper case: no ID has it
        ("NetworkCreate", "abc", None),  # (hex IDs: the hex-only check)
    ],
)
def test_a_swarm_name_that_could_start_an_id_is_to_be_looked_up(
    operation: str, name: str, expected: tuple[str, str] | None
) -> None:
    found = id_like_name(operation, json.dumps({"Name": name}).encode())
    assert (None if found is None else (found[0].name, found[1])) == expected
    assert id_like_name(operation, b"{") is None
