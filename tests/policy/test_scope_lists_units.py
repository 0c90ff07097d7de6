"""Lists and events under an object scope, the pure part (policy/scopelists.py): which items and
events a scope lets through, how a list's request is narrowed or refused, and what the plan
says about the answer. The gateway's filtering of real answers is tested against the real
daemon in test_scope_lists.py."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote, unquote

import pytest

from dockgate.api.routes import identify
from dockgate.body.redact import EventStreamRedaction, Redaction
from dockgate.http.request import RequestReader
from dockgate.policy.gatekeeper import Verdict
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.plan import Allowed, Answer, answer_handling, plan_admitted
from dockgate.policy.scopelists import (
    GatewayQuery,
    common_labels,
    covered_services,
    event_filter,
    filtered_list,
    filtered_tasks,
    gateway_query,
    narrowed_target,
    primary_name,
    scoped_event,
    service_filter_ids,
)
from dockgate.policy.scopes import STACK_LABEL, Scope
from dockgate.refusal import Refusal

WEB = "{labels: {team: web}}"


def _scope(*objects: str) -> Scope:
    rules = "".join(
        f"      - allow: {{operations: [ContainerList, SystemEvents, NetworkList, TaskList], "
        f"objects: {o}}}\n"
        for o in objects
    )
    policy = parse_policy_text(f"policies:\n  p:\n    rules:\n{rules}", "t.yaml").policies["p"]
    decision = policy.decide("GET", identify("GET", "/v1.41/containers/json"), "/containers/json")
    assert decision.scope is not None
    return decision.scope


def _allowed(target: str, *, mode: str = "enforce", objects: str = WEB) -> tuple[object, Allowed]:
    text = (
        f"policies:\n  p:\n    mode: {mode}\n    rules:\n"
        "      - allow: {operations: [ContainerList, SystemEvents, TaskList, VolumeList], "
        f"objects: {objects}}}\n"
    )
    policy = parse_policy_text(text, "t.yaml").policies["p"]
    target = quote(target, safe="/?=&%")
    head = RequestReader().feed(f"GET {target} HTTP/1.1\r\nHost: d\r\n\r\n".encode())[0]
    path = target.partition("?")[0]
    match = identify("GET", path)
    decision = policy.decide("GET", match, path)
    assert match is not None
    verdict = Verdict(
        match.operation.name, "x", match, policy.name, decision.reason, scope=decision.scope
    )
    return head, Allowed(verdict, policy, None)


def test_a_container_is_covered_by_its_primary_name_only() -> None:
    assert primary_name(["/other/alias", "/web"]) == "web"
    assert primary_name(["/a/b"]) == "" and primary_name(None) == ""
    scope = _scope('{names: ["web*"]}')
    entries = [
        {"Id": "1", "Names": ["/web1"], "Labels": {}},
        {"Id": "2", "Names": ["/db", "/web1/db"], "Labels": {}},  # linked as web1's alias
    ]
    kept = json.loads(filtered_list("ContainerList", json.dumps(entries).encode(), scope))
    assert [e["Id"] for e in kept] == ["1"]


def test_lists_keep_only_covered_items_by_their_own_shapes() -> None:
    scope = _scope(WEB)
    networks = [{"Name": "a", "Labels": {"team": "web"}}, {"Name": "b", "Labels": None}]
    assert [
        n["Name"]
        for n in json.loads(filtered_list("NetworkList", json.dumps(networks).encode(), scope))
    ] == ["a"]
    volumes = {
        "Volumes": [{"Name": "v", "Labels": {"team": "web"}}, {"Name": "w"}],
        "Warnings": None,
    }
    got = json.loads(filtered_list("VolumeList", json.dumps(volumes).encode(), scope))
    assert [v["Name"] for v in got["Volumes"]] == ["v"] and got["Warnings"] is None
    assert json.loads(filtered_list("VolumeList", b'{"Volumes":null}', scope))["Volumes"] == []
    services = [
        {"ID": "s1", "Spec": {"Name": "x", "Labels": {"team": "web"}}},
        {"ID": "s2", "Spec": {"Name": "y", "Labels": {"team": "db"}}},
        {"ID": "s3", "Labels": {"team": "web"}},  # labels outside the spec: not the service's
    ]
    got = json.loads(filtered_list("ServiceList", json.dumps(services).encode(), scope))
    assert [s["ID"] for s in got] == ["s1"]


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("ContainerList", b"{}"),
        ("ContainerList", b"not json"),
        ("NetworkList", b"[" * 100000),
        ("VolumeList", b'{"Volumes": 3}'),
        ("VolumeList", b"[]"),
    ],
)
def test_an_unreadable_answer_fails_rather_than_passes(operation: str, body: bytes) -> None:
    with pytest.raises(ValueError):
        filtered_list(operation, body, _scope(WEB))


def test_tasks_follow_their_service_and_a_service_filter_out_of_scope_is_missing() -> None:
    scope = _scope(WEB)
    services = [
        {"ID": "aaa111", "Spec": {"Name": "web", "Labels": {"team": "web"}}},
        {"ID": "aab222", "Spec": {"Name": "web2", "Labels": {"team": "web"}}},
        {"ID": "bbb222", "Spec": {"Name": "db", "Labels": {}}},
    ]
    covered, every = covered_services(200, services, scope)
    assert covered == {"aaa111", "aab222"}
    tasks = [{"ID": "t1", "ServiceID": "aaa111"}, {"ID": "t2", "ServiceID": "bbb222"}, {"ID": "t3"}]
    body = json.dumps(tasks).encode()
    assert [t["ID"] for t in json.loads(filtered_tasks(body, covered, None))] == ["t1"]
    assert json.loads(filtered_tasks(body, covered, frozenset({"aab222"}))) == []
    assert service_filter_ids(("web",), covered, every) == {"aaa111"}
    assert service_filter_ids(("aab", "aaa111"), covered, every) == {"aab222", "aaa111"}
    # Out of scope by name, by ID, by a prefix only it has: the daemon's "not found".
    for reference in ("db", "bbb222", "b", "nothing"):
        missing = service_filter_ids((reference,), covered, every)
        assert isinstance(missing, Refusal), reference
        assert (missing.status, missing.message) == (404, f"service {reference} not found")
    # A prefix several covered services share: ambiguous, counting only those ("" is the
    # prefix of every ID, as for the daemon).
    for reference in ("aa", ""):
        ambiguous = service_filter_ids((reference,), covered, every)
        assert isinstance(ambiguous, Refusal)
        assert ambiguous.message == f"service {reference} is ambiguous (2 matches found)"
    with pytest.raises(ValueError):
        covered_services(500, None, scope)


@pytest.mark.parametrize(
    ("target", "forwarded", "limit"),
    [
        ("/v1.41/containers/json?limit=2", "/v1.41/containers/json?all=1", 2),
        ("/containers/json?all=0&limit=%2B3&size=1", "/containers/json?size=1&all=1", 3),
        ("/containers/json?limit=1&limit=9&all=1", "/containers/json?all=1", 1),
    ],
)
def test_a_list_limit_is_taken_out_and_applied_by_the_gateway(
    target: str, forwarded: str, limit: int
) -> None:
    """`limit` over 0 (the first value, as Atoi reads it) is applied after filtering; the
    daemon then lists every container, as its `limit` would (stopped ones too)."""
    assert gateway_query("ContainerList", target) == (forwarded, GatewayQuery(limit=limit))


@pytest.mark.parametrize(
    "target",
    [
        "/containers/json",
        "/containers/json?limit=",
        "/containers/json?limit=0",
        "/containers/json?limit=-4",
        "/containers/json?limit=x",  # the daemon fails on it, telling nothing of objects
        "/containers/json?limit=1_0",
        "/containers/json?limit=%201",
        "/containers/json?limit=&limit=3",  # the daemon reads the first value only
        "/containers/json?limit=99999999999999999999",
    ],
)
def test_a_limit_the_daemon_does_not_apply_is_left_to_it(target: str) -> None:
    assert gateway_query("ContainerList", target) is None


def test_a_task_service_filter_is_taken_out_in_either_json_form() -> None:
    listed = quote(json.dumps({"service": ["web", "aa"], "desired-state": ["running"]}))
    target, query = gateway_query("TaskList", f"/v1.41/tasks?filters={listed}&x=1") or ("", None)
    assert query == GatewayQuery(services=("web", "aa"))
    assert parse_qsl(target.partition("?")[2]) == [
        ("x", "1"),
        ("filters", '{"desired-state":["running"]}'),
    ]
    mapped = quote(json.dumps({"service": {"web": True}}))
    second = quote(json.dumps({"service": ["db"]}))
    target, query = gateway_query("TaskList", f"/tasks?filters={mapped}&filters={second}") or (
        "",
        None,
    )
    assert query == GatewayQuery(services=("web",))
    assert parse_qsl(target.partition("?")[2]) == [("filters", "{}")]
    for filters in ("", "x", json.dumps({"node": ["n"]}), json.dumps({"service": "web"})):
        assert gateway_query("TaskList", f"/tasks?filters={quote(filters)}") is None


def test_narrowing_uses_only_labels_every_rule_requires_exactly() -> None:
    assert common_labels(_scope(WEB)) == ["team=web"]
    assert common_labels(_scope("{labels: {team: web, tier: '*', x: 'a*'}}")) == [
        "team=web",
        "tier",
    ]
    assert common_labels(_scope(WEB, "{labels: {team: web, a: b}}")) == ["team=web"]
    assert common_labels(_scope(WEB, '{names: ["web"]}')) == []
    assert common_labels(_scope("{labels: {'a.b\\c': 'x.y (z)'}}")) == ["a.b\\c=x.y (z)"]
    assert common_labels(_scope("{stacks: [shop]}")) == [f"{STACK_LABEL}=shop"]
    assert common_labels(_scope("{stacks: [shop, mall]}")) == []


def test_narrowed_target_keeps_the_callers_filters_in_their_form() -> None:
    def filters(target: str) -> object:
        return json.loads(dict(parse_qsl(target.partition("?")[2]))["filters"])

    assert filters(narrowed_target("/containers/json?all=1", ["team=web"])) == {
        "label": ["team=web"]
    }
    given = '/containers/json?filters={"label":{"x=1":true},"status":{"running":true}}'
    assert filters(narrowed_target(given, ["team=web"])) == {
        "label": {"x=1": True, "team=web": True},
        "status": {"running": True},
    }
    assert filters(narrowed_target('/x?filters={"status":{"a":true}}', ["k"]))["label"] == {
        "k": True
    }
    with pytest.raises(ValueError):
        narrowed_target("/x?filters=[1]", ["k"])


def test_plan_narrows_and_the_answer_is_held_or_rewritten() -> None:
    head, allowed = _allowed("/v1.41/containers/json?all=1")
    trace: list[tuple[str, str]] = []
    step = plan_admitted(head, allowed, trace)  # type: ignore[arg-type]
    assert not isinstance(step, Refusal)
    assert "team%3Dweb" in step.head.target
    assert ("scope", "the answer filtered to rule 1 (labels=team=web)") in trace
    assert answer_handling(allowed, 200) is Answer.HOLD
    assert answer_handling(allowed, 404) is Answer.RELAY
    _, events = _allowed("/v1.41/events")
    assert answer_handling(events, 200) is Answer.REWRITE_STREAM
    _, warned = _allowed("/v1.41/containers/json", mode="warn")
    assert answer_handling(warned, 200) is Answer.RELAY
    assert warned.would_hide == ["objects out of the scope"]


def test_ordering_filters_are_refused_under_a_scope_and_recorded_in_warn_mode() -> None:
    head, allowed = _allowed('/v1.41/containers/json?filters={"before":["x"]}')
    step = plan_admitted(head, allowed)  # type: ignore[arg-type]
    assert isinstance(step, Refusal) and step.status == 403 and "since/before" in step.message
    head, allowed = _allowed("/v1.41/containers/json?since=x")
    assert isinstance(plan_admitted(head, allowed), Refusal)  # type: ignore[arg-type]
    head, allowed = _allowed('/v1.41/containers/json?filters={"before":["x"]}', mode="warn")
    step = plan_admitted(head, allowed)  # type: ignore[arg-type]
    assert not isinstance(step, Refusal) and step.allowed.verdict.would_deny is not None
    assert step.head.target == head.target  # warn mode: not narrowed


def _event(
    kind: str, action: str, attributes: dict[str, str], actor_id: str = "id1"
) -> dict[str, object]:
    return {"Type": kind, "Action": action, "Actor": {"ID": actor_id, "Attributes": attributes}}


def test_container_events_pass_by_their_labels_and_name() -> None:
    scope = _scope(WEB)
    web = _event("container", "start", {"team": "web", "name": "a", "image": "busybox"})
    assert scoped_event(web, scope) is web
    assert scoped_event(_event("container", "destroy", {"team": "db", "name": "b"}), scope) is None
    assert scoped_event(_event("container", "prune", {"reclaimed": "0"}, ""), scope) is None
    # A condition on an attribute the daemon writes itself cannot be proven from the event.
    by_exit = _scope("{labels: {exitCode: '0'}}")
    assert scoped_event(_event("container", "die", {"exitCode": "0", "name": "c"}), by_exit) is None
    assert scoped_event(_event("container", "start", {"exitCode": "0", "name": "c"}), by_exit)
    names = _scope('{names: ["a"]}')
    assert scoped_event(_event("container", "exec_start: sh", {"name": "a", "execID": "e"}), names)


def test_other_events_pass_by_name_alone_without_the_containers_they_name() -> None:
    names = _scope('{names: ["net*"]}')
    connect = _event("network", "connect", {"name": "net1", "type": "bridge", "container": "c1"})
    kept = scoped_event(connect, names)
    assert kept is not None and kept["Actor"]["Attributes"] == {"name": "net1", "type": "bridge"}  # type: ignore[index]
    mount = _event(
        "volume", "mount", {"container": "c1", "destination": "/d", "driver": "local"}, "net2"
    )
    kept = scoped_event(mount, names)
    assert kept is not None and kept["Actor"]["Attributes"] == {"driver": "local"}  # type: ignore[index]
    # By labels, or a stack: not proven by an event that carries none.
    assert scoped_event(_event("network", "create", {"name": "net1"}), _scope(WEB)) is None
    assert scoped_event(_event("service", "create", {"name": "x"}), _scope("{stacks: [x]}")) is None
    for kind in ("image", "daemon", "plugin", "node", "builder"):
        assert scoped_event(_event(kind, "x", {"name": "net1"}), names) is None


def test_the_stream_drops_events_whole_and_ends_as_the_daemons() -> None:
    scope = _scope(WEB)
    stream = EventStreamRedaction(Redaction(labels=True), event_filter(scope))
    events = [
        _event("container", "start", {"team": "web", "name": "a"}),
        _event("container", "start", {"team": "db", "name": "b"}),
        _event("image", "pull", {"name": "busybox"}),
    ]
    body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    raw = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    out = b"".join(stream.feed(raw[i : i + 1]) for i in range(len(raw)))
    lines = [line for line in out.split(b"\r\n") if line.startswith(b"{")]
    assert [json.loads(line)["Actor"]["Attributes"] for line in lines] == [{"name": "a"}]
    assert out.endswith(b"0\r\n\r\n")


def test_the_plan_carries_what_the_gateway_applies_and_warn_mode_leaves_it() -> None:
    """A scoped list's `limit` and a task list's `service` filter leave the forwarded request
    for `Allowed.scoped_query`; in warn mode (no filtering) the request goes on as it came."""
    head, allowed = _allowed("/v1.41/containers/json?limit=3")
    trace: list[tuple[str, str]] = []
    step = plan_admitted(head, allowed, trace)  # type: ignore[arg-type]
    assert not isinstance(step, Refusal)
    assert "limit" not in step.head.target and "all=1" in step.head.target
    assert step.allowed.scoped_query == GatewayQuery(limit=3)
    assert ("scope", "the limit applied by dockgate, among covered objects") in trace
    filters = quote(json.dumps({"service": ["web"]}))
    head, allowed = _allowed(f"/v1.41/tasks?filters={filters}")
    step = plan_admitted(head, allowed)  # type: ignore[arg-type]
    assert not isinstance(step, Refusal)
    assert "service" not in unquote(step.head.target)
    assert step.allowed.scoped_query == GatewayQuery(services=("web",))
    head, warned = _allowed("/v1.41/containers/json?limit=3", mode="warn")
    step = plan_admitted(head, warned)  # type: ignore[arg-type]
    assert not isinstance(step, Refusal)
    assert step.head.target == head.target and step.allowed.scoped_query is None


def test_a_limit_cuts_the_filtered_list_in_the_daemons_order() -> None:
    entries = [
        {"Names": [f"/{name}"], "Labels": {"team": team}}
        for name, team in (("db3", "db"), ("web2", "web"), ("db1", "db"), ("web1", "web"))
    ]
    body = json.dumps(entries).encode()
    kept = json.loads(filtered_list("ContainerList", body, _scope(WEB), 1))
    assert [c["Names"] for c in kept] == [["/web2"]]
    assert len(json.loads(filtered_list("ContainerList", body, _scope(WEB), 5))) == 2


def test_listed_covered_objects_name_no_linker_and_no_attached_container() -> None:
    containers = [{"Names": ["/db/w", "/web", "/x/y/z"], "Labels": {"team": "web"}}]
    kept = json.loads(filtered_list("ContainerList", json.dumps(containers).encode(), _scope(WEB)))
    assert kept == [{"Names": ["/web"], "Labels": {"team": "web"}}]
    networks = [
        {"Name": "n", "Labels": {"team": "web"}, "Containers": {"id": {}}, "Services": None}
    ]
    kept = json.loads(filtered_list("NetworkList", json.dumps(networks).encode(), _scope(WEB)))
    assert kept == [{"Name": "n", "Labels": {"team": "web"}, "Containers": {}, "Services": None}]
