"""The peer_labels guardrail judges the labels a created container WILL have: the daemon
copies its image's labels onto it where the create sets none (moby daemon/commit.go merge), so an
image labelled as a bound caller would hand that binding to every container made from it
(issue 16's attack 2; body/guardrails.py image_peer_label_problem, relay/steps.py
_check_peer_image). Real gateway, real daemon; and the pure check on its own."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
from collections.abc import Iterator

import pytest

from dockgate.body.guardrails import Guardrails, image_peer_label_problem
from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, run_dockgate, running

POLICY = """\
bindings:
  - policy: lister
    container: {labels: {dockgate.role: lister}}
  - policy: creator
    anonymous: true
policies:
  lister:
    rules:
      - allow: {operations: [ContainerList]}
  creator:
    rules:
      - allow: {operations: [ContainerCreate, ServiceCreate]}
"""
CONDITIONS = (("binding 1 (policy lister)", (("dockgate.role", re.compile("lister")),)),)
GUARDED = Guardrails(peer_labels=CONDITIONS)


# ----- the pure check ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "body", "problem"),
    [
        ("ContainerCreate", {"Image": "x"}, True),  # the image's label is copied on
        ("ContainerCreate", {"Image": "x", "Labels": {"dockgate.role": "web"}}, False),
        ("ContainerCreate", {"Image": "x", "Labels": {"team": "a"}}, True),  # merged key by key
        (
            "ServiceCreate",
            {"TaskTemplate": {"ContainerSpec": {"Image": "x"}}},
            True,
        ),
        (
            "ServiceCreate",
            {"TaskTemplate": {"ContainerSpec": {"Image": "x", "Labels": {"dockgate.role": "a"}}}},
            False,
        ),
    ],
)
def test_the_image_labels_count_where_the_body_sets_none(
    operation: str, body: dict[str, object], problem: bool
) -> None:
    found = image_peer_label_problem(
        GUARDED, operation, json.dumps(body).encode(), "x", {"dockgate.role": "lister"}
    )
    assert (found is not None) is problem, found
    if found is not None:
        assert found.startswith("the image 'x' gives the container its labels: labels ")


def test_no_binding_by_labels_or_no_image_label_is_no_problem() -> None:
    body = b'{"Image": "x"}'
    assert image_peer_label_problem(Guardrails(), "ContainerCreate", body, "x", {"a": "b"}) is None
    assert image_peer_label_problem(GUARDED, "ContainerCreate", body, "x", {}) is None
    assert image_peer_label_problem(GUARDED, "VolumeCreate", b"{}", "x", {"a": "b"}) is None


# ----- through the gateway ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def creator_gateway(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    policy = tmp_path_factory.mktemp("imagelabels") / "policy.yaml"
    policy.write_text(POLICY)
    gateway = Gateway(daemon.host, listen="tcp://127.0.0.1:0", policy=str(policy))
    with running(gateway, "the gateway judging image labels") as gw:
        yield gw


def _post(gateway: Gateway, target: str, body: object) -> tuple[int, dict[str, object]]:
    host, port = gateway.url.removeprefix("tcp://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", target, json.dumps(body), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        raw = answer.read()
    finally:
        conn.close()
    return answer.status, json.loads(raw)


@pytest.fixture(scope="module")
def labelled_image(daemon: PrivateDaemon, busybox_image: str) -> Iterator[str]:
    """An image carrying dockgate.role=lister, committed on the daemon directly."""
    suffix = os.urandom(4).hex()
    base, repo = f"dgt-imgbase-{suffix}", f"dgt-imglabel-{suffix}:latest"
    daemon.docker("create", "--name", base, busybox_image, "true")
    try:
        daemon.docker("commit", "--change", "LABEL dockgate.role=lister", base, repo)
    finally:
        daemon.docker("rm", "-f", base, check=False)
    yield repo
    daemon.docker("rmi", "-f", repo, check=False)


def test_a_create_from_an_image_labelled_as_a_bound_caller_is_refused(
    daemon: PrivateDaemon, creator_gateway: Gateway, labelled_image: str, cleanup: Cleanup
) -> None:
    """Refused with a reason naming the image, and no container is made."""
    name = f"dgt-imgref-{os.urandom(4).hex()}"
    cleanup.container(name)
    status, body = _post(
        creator_gateway, f"/v1.41/containers/create?name={name}", {"Image": labelled_image}
    )
    assert status == 403, body
    message = str(body["message"])
    assert f"the image '{labelled_image}' gives the container its labels" in message
    assert "dockgate.role=lister would make the container a caller bound by binding 1" in message
    assert daemon.docker("ps", "-aq", "--filter", f"name={name}").stdout.strip() == b""


def test_a_create_that_sets_the_label_otherwise_is_made_with_its_own_value(
    daemon: PrivateDaemon, creator_gateway: Gateway, labelled_image: str, cleanup: Cleanup
) -> None:
    """The body's label wins over the image's (the daemon's merge): the container is made,
    labelled as the body says, so it is no bound caller."""
    name = f"dgt-imgok-{os.urandom(4).hex()}"
    cleanup.container(name)
    status, body = _post(
        creator_gateway,
        f"/v1.41/containers/create?name={name}",
        {"Image": labelled_image, "Labels": {"dockgate.role": "web"}},
    )
    assert status == 201, body
    stored = daemon.docker("inspect", "-f", "{{json .Config.Labels}}", name).stdout
    assert json.loads(stored) == {"dockgate.role": "web"}


def test_a_create_from_an_image_the_daemon_does_not_have_is_answered_by_the_daemon(
    creator_gateway: Gateway,
) -> None:
    """An image the daemon does not know passes the check: the daemon answers the create
    with its own 404 (which makes the CLI pull, then ask again: judged then)."""
    status, body = _post(
        creator_gateway, "/v1.41/containers/create", {"Image": "dgt-no-such-image:nope"}
    )
    assert status == 404, body
    assert "No such image" in str(body["message"])


def test_check_says_the_image_is_looked_up(tmp_path: pathlib.Path) -> None:
    """`dockgate check` explains the look-up, and decides by it (as the gateway does)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    body = tmp_path / "create.json"
    body.write_text('{"Image": "registry.local/tool:1"}')
    checked = run_dockgate(
        *("check", "--policy", str(policy)),
        *("POST", "/v1.41/containers/create", "--body", str(body)),
    )
    assert "lookup:    the labels of image 'registry.local/tool:1'" in checked.stdout
    assert "allow" in checked.stdout.splitlines()[-1] and "look" in checked.stdout.splitlines()[-1]


def test_in_warn_mode_the_image_labels_refusal_is_recorded_and_the_create_made(
    daemon: PrivateDaemon,
    labelled_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
) -> None:
    """A rollout mode records the image-label refusal (as any guardrail's) and forwards the
    create: the container is made, with the image's label, and the access log says warn."""
    policy = tmp_path / "warn.yaml"
    policy.write_text(POLICY.replace("  creator:\n", "  creator:\n    mode: warn\n"))
    name = f"dgt-imgwarn-{os.urandom(4).hex()}"
    cleanup.container(name)
    gateway = Gateway(
        daemon.host, "--access-log", "-", listen="tcp://127.0.0.1:0", policy=str(policy)
    )
    with running(gateway, "the warn-mode gateway") as gw:
        status, body = _post(gw, f"/v1.41/containers/create?name={name}", {"Image": labelled_image})
    logged = "\n".join(gateway.stdout())  # (all of it, the gateway stopped)
    assert status == 201, body
    stored = daemon.docker("inspect", "-f", "{{json .Config.Labels}}", name).stdout
    assert json.loads(stored) == {"dockgate.role": "lister"}
    line = next(line for line in logged.splitlines() if "/containers/create" in line)
    assert "decision=warn:creator:guardrails" in line, line
