"""Ownership look-ups that fail in ways the gateway did not foresee still answer.

A look-up task runs while the client's reading is paused: an exception nobody retrieves left
the request without any answer (found by the attack review: a RecursionError while pinning).
A scriptable fake daemon gives the answers a real one rarely does: an ID that cannot be
written into a path, an ambiguous reference (400), a redirect (301).
"""

from __future__ import annotations

import base64
import http.client
import json
import pathlib
from collections.abc import Iterator

import pytest

from support.fake_upstream import Exchange, FakeUpstream, default_handler
from support.gateway import Gateway, running
from support.remote import write_htpasswd

pytestmark = pytest.mark.timeout(60)

POLICY = """
policies:
  tenants:
    ownership: true
    rules:
      - allow: {sections: [ping, containers, networks]}
bindings:
  - {policy: tenants, authenticated: true}
"""
ALICE = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
# What the fake daemon answers to each look-up path (status, JSON document).
IMAGE = "sha256:" + "0" * 64
ANSWERS: dict[str, tuple[int, object]] = {
    # An ID Python cannot put back into a path (a lone surrogate): quoting it raises. (With
    # an image, which carries no owner label, and a log driver, as the daemon always stores
    # one: a container without either is nobody's.)
    "/containers/odd/json": (
        200,
        {
            "Id": "\udfff",
            "Image": IMAGE,
            "Config": {"Labels": {"io.dockgate.owner": "user:alice"}},
            "HostConfig": {"LogConfig": {"Type": "json-file", "Config": {}}},
        },
    ),
    f"/images/{IMAGE}/json": (200, {"Id": IMAGE, "Config": {"Labels": None}}),
    "/networks/twin": (400, {"message": "network twin is ambiguous (2 matches found on name)"}),
    "/containers/web/json": (301, {}),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, FakeUpstream]]:
    base: pathlib.Path = tmp_path_factory.mktemp("lookup-failures")
    write_htpasswd(base / "htpasswd", {"alice": "alice-pw"})
    (base / "policy.yaml").write_text(POLICY)

    def handler(ex: Exchange) -> None:
        answer = ANSWERS.get(ex.path)
        if answer is None:
            default_handler(ex)
            return
        status, document = answer
        ex.respond(status, json.dumps(document).encode(), close=True)

    with FakeUpstream() as fake:
        fake.handler = handler
        started = Gateway(
            fake.url,
            *("--htpasswd", str(base / "htpasswd"), "--auth-failures", "0"),
            policy=str(base / "policy.yaml"),
        )
        with running(started) as gw:
            yield gw, fake


def _get(gw: Gateway, path: str) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": ALICE})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_an_unforeseen_failure_in_a_look_up_task_is_answered(
    gateway: tuple[Gateway, FakeUpstream],
) -> None:
    """Failed before: the UnicodeEncodeError raised after the look-up ended the task, and the
    client waited for ever (a timeout here). Now a 502, and nothing left unretrieved."""
    gw, _ = gateway
    status, answer = _get(gw, "/v1.41/containers/odd/json")
    assert status == 502, (status, answer)
    assert "ownership look-up failed" in str(answer["message"]), answer
    assert "Task exception was never retrieved" not in gw.stderr_text()


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/v1.41/networks/twin", "cannot tell which network 'twin' names"),
        ("/v1.41/containers/web/json", "cannot be looked up as written"),
    ],
)
def test_a_reference_the_daemon_cannot_resolve_is_a_400(
    gateway: tuple[Gateway, FakeUpstream], path: str, said: str
) -> None:
    """Failed before: the daemon's 400 (ambiguous) or 301 to the look-up was a 502, as if the
    gateway had failed; it is the reference that cannot be resolved."""
    gw, _ = gateway
    status, answer = _get(gw, path)
    assert status == 400, (status, answer)
    assert said in str(answer["message"]) and "full ID" in str(answer["message"]), answer
