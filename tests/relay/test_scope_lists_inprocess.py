"""Scoped lists in the relay, in-process (relay/steps.py with policy/scopelists.py): a held
list answer goes out filtered, or not at all. An answer that cannot be filtered (not the JSON
the daemon sends, a service list that cannot be had) fails with 502 and none of its bytes
reach the client; a task list naming an uncovered service is answered 404 as for one that
does not exist. The daemon and the gateway's look-ups are played by the test."""

from __future__ import annotations

import json
from urllib.parse import quote

from support.inprocess import (
    ClockLoop,
    LookUps,
    Relay,
    answer,
    open_connection,
    request,
)

POLICY = """
policies:
  web:
    rules:
      - allow: {operations: [ContainerList, TaskList], objects: {labels: {team: web}}}
"""
WEB = {"ID": "aaa", "Spec": {"Name": "web", "Labels": {"team": "web"}}}
DB = {"ID": "bbb", "Spec": {"Name": "db", "Labels": {"team": "db"}}}
TASKS = [{"ID": "t1", "ServiceID": "aaa"}, {"ID": "t2", "ServiceID": "bbb"}]


def _body(relay: Relay) -> tuple[int, bytes]:
    data = relay.client.take()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_a_list_that_cannot_be_read_fails_and_passes_nothing(loop: ClockLoop) -> None:
    """A container list answer that is not a JSON array: 502, the daemon's bytes withheld."""
    relay = open_connection(loop, POLICY)
    relay.send(request("GET", "/v1.41/containers/json"))
    relay.daemon().send(answer(200, b'{"Names": ["/secret-db"]}'))
    status, body = _body(relay)
    assert status == 502 and b"secret-db" not in body


def test_a_list_goes_out_filtered_with_its_new_length(loop: ClockLoop) -> None:
    """The covered container only, whatever the daemon listed."""
    relay = open_connection(loop, POLICY)
    relay.send(request("GET", "/v1.41/containers/json"))
    entries = [
        {"Id": "1", "Names": ["/web"], "Labels": {"team": "web"}},
        {"Id": "2", "Names": ["/secret-db"], "Labels": {"team": "db"}},
    ]
    relay.daemon().send(answer(200, json.dumps(entries).encode()))
    status, body = _body(relay)
    assert status == 200 and [e["Id"] for e in json.loads(body)] == ["1"]


def test_tasks_follow_their_service_from_one_look_up(loop: ClockLoop, lookups: LookUps) -> None:
    """The answer waits for one look-up of the service list; the db service's task is out."""
    relay = open_connection(loop, POLICY)
    relay.send(request("GET", "/v1.41/tasks"))
    relay.daemon().send(answer(200, json.dumps(TASKS).encode()))
    assert lookups.asked == [("GET", "/services", None)]
    assert relay.client.data == b""  # held until the services are known
    lookups.answer(200, [WEB, DB])
    status, body = _body(relay)
    assert status == 200 and [t["ID"] for t in json.loads(body)] == ["t1"]


def test_a_task_list_of_an_uncovered_service_is_as_for_a_missing_one(
    loop: ClockLoop, lookups: LookUps
) -> None:
    relay = open_connection(loop, POLICY)
    filters = quote(json.dumps({"service": {"db": True}}))
    relay.send(request("GET", f"/v1.41/tasks?filters={filters}"))
    relay.daemon().send(answer(200, json.dumps(TASKS[1:]).encode()))
    lookups.answer(200, [WEB, DB])
    status, body = _body(relay)
    assert status == 404 and json.loads(body) == {"message": "service db not found"}


def test_tasks_fail_when_the_services_cannot_be_had(loop: ClockLoop, lookups: LookUps) -> None:
    """The service list answered 500: the task list fails (502), no task goes out."""
    relay = open_connection(loop, POLICY)
    relay.send(request("GET", "/v1.41/tasks"))
    relay.daemon().send(answer(200, json.dumps(TASKS).encode()))
    lookups.answer(500, {"message": "swarm is busy"})
    status, body = _body(relay)
    assert status == 502 and b"t2" not in body and b"t1" not in body
