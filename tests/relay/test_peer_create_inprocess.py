"""The peer_labels guardrail after a ContainerCreate, in-process (auth/peercreate.py,
relay/steps.py MountCheck): the create's answer is held while the new container is inspected;
a container whose labels as the daemon stored them meet a container binding's conditions (its
image's, the tag moved after the image's look-up) is removed and the client answered 403; a
failed inspect removes it too, 502; an unbound one's answer goes out as it came. The daemon's
look-ups are answered by the test (support.inprocess.LookUps)."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from dockgate.auth import peercreate
from dockgate.auth.authenticator import Authenticator
from dockgate.auth.tokens import parse_tokens, token_digest
from support.inprocess import (
    ClockLoop,
    LookUps,
    Relay,
    answer,
    open_connection,
    request,
)

POLICY = """
bindings:
  - {policy: lister, container: {labels: {dockgate.role: lister}}}
  - {policy: creator, users: [ci]}
policies:
  lister:
    rules:
      - allow: {operations: [ContainerList]}
  creator:
    rules:
      - allow: {operations: [ContainerCreate]}
"""
TOKEN = "dg_inprocess-peer-create-token"
AUTH = f"Authorization: Bearer {TOKEN}"
ID = "9f1c2b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8"
CREATED = json.dumps({"Id": ID, "Warnings": []}).encode()


@pytest.fixture
def relay(loop: ClockLoop, lookups: LookUps, monkeypatch: pytest.MonkeyPatch) -> Relay:
    monkeypatch.setattr(peercreate, "ask_json", lookups.ask_json)  # (its removal)
    tokens = Authenticator(tokens=parse_tokens(f"ci ci {token_digest(TOKEN)}\n", "tokens"))
    return open_connection(loop, POLICY, authenticator=tokens)


def _created(relay: Relay, lookups: LookUps) -> None:
    """The create goes out once its image (unlabelled then) is looked up, and is answered."""
    body = json.dumps({"Image": "flip:t"}).encode()
    relay.send(request("POST", "/v1.41/containers/create?name=c", AUTH, body=body))
    assert lookups.asked[0][1] == "/images/flip:t/json"
    lookups.answer(200, {"Id": "sha256:" + "a" * 64, "Config": {"Labels": None}})
    daemon = relay.daemon()
    daemon.send(answer(201, CREATED))
    assert lookups.asked[-1] == ("GET", f"/containers/{ID}/json", None)
    assert relay.client.data == b""  # held while the new container is inspected


def test_a_container_made_with_a_bound_label_is_removed_and_refused(
    relay: Relay, lookups: LookUps
) -> None:
    _created(relay, lookups)
    lookups.answer(200, {"Id": ID, "Config": {"Labels": {"dockgate.role": "lister"}}})
    assert lookups.asked[-1] == ("DELETE", f"/containers/{ID}?force=1&v=1", None)
    assert relay.client.data == b""
    lookups.answer(204, None)
    head, _, text = relay.client.take().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 "), head
    message = json.loads(text)["message"]
    assert "the new container got its labels from its image" in message, message
    assert "dockgate.role=lister" in message, message


def test_a_failed_inspect_removes_the_container_and_answers_502(
    relay: Relay, lookups: LookUps
) -> None:
    _created(relay, lookups)
    lookups.answer(500, {"message": "boom"})
    assert lookups.asked[-1] == ("DELETE", f"/containers/{ID}?force=1&v=1", None)
    lookups.answer(204, None)
    head = relay.client.take().partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 502 "), head


def test_an_unbound_container_s_answer_goes_out_as_it_came(relay: Relay, lookups: LookUps) -> None:
    _created(relay, lookups)
    lookups.answer(200, {"Id": ID, "Config": {"Labels": {"dockgate.role": "web"}}})
    head, _, body = relay.client.take().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 "), head
    assert body == CREATED
    assert not any(method == "DELETE" for method, _, _ in lookups.asked)


def test_a_client_leaving_before_the_answer_has_its_create_swept(
    loop: ClockLoop, relay: Relay, lookups: LookUps
) -> None:
    """The client gone after its create was forwarded, before the answer: the gateway never
    learns the ID, so it looks for the container (a bound label key, its name) and removes it
    when bound."""
    body = json.dumps({"Image": "flip:t"}).encode()
    relay.send(request("POST", "/v1.41/containers/create?name=c", AUTH, body=body))
    lookups.answer(200, {"Id": "sha256:" + "a" * 64, "Config": {"Labels": None}})
    assert relay.daemon().received  # forwarded
    relay.client.lose(ConnectionResetError())
    loop.advance(1.0)  # (the watch looks every MOUNT_WATCH_SECONDS)
    method, path, _ = lookups.asked[-1]
    assert (method, path.partition("?")[0]) == ("GET", "/containers/json"), lookups.asked
    assert "dockgate.role" in urllib.parse.unquote(path)
    created = int(time.time())
    lookups.answer(200, [{"Id": ID, "Names": ["/c"], "Created": created}])
    assert lookups.asked[-1] == ("GET", f"/containers/{ID}/json", None)
    labels = {"dockgate.role": "lister"}
    lookups.answer(200, {"Id": ID, "Config": {"Image": "flip:t", "Labels": labels}})
    assert lookups.asked[-1] == ("DELETE", f"/containers/{ID}?force=1&v=1", None)
    lookups.answer(204, None)
