"""Issue 12, item 9: a raw `;` in a query is refused, at the gateway, for every request.

Go's `url.ParseQuery` split on `;` as on `&` until Go 1.17; daemons built before it (docker
20.10.0 to 20.10.15) read `x=1;container=victim` as two pairs, while the gateway (as Go 1.17+)
reads one pair and drops it. The daemon here is built with a newer Go, so it cannot show the
split itself; what it shows is that it does not take `;` as a character of a value either (400
"invalid semicolon separator in query" from every handler that parses its form, and the pair
silently dropped by the rest). The gateway now answers 400 itself, nothing forwarded, whatever
the operation and the policy, and real clients, which encode `;` as `%3B`, pass.
"""

from __future__ import annotations

import json
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.identity import (
    Served,
    container_exists,
    ok,
    sdk_client,
    wait_access_log,
    wait_audit,
)
from support.remote import UnixHTTPConnection, json_call, json_exchange, remote_docker

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

REFUSED = "dockgate: semicolon in query"
DAEMON_REFUSAL = "invalid semicolon separator in query"  # Go 1.17+ ParseForm (moby httputils)


@pytest.fixture(scope="module")
def served(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The most open gateway there is: allow-all, no authentication."""
    audit = tmp_path_factory.mktemp("semicolon") / "audit.jsonl"
    with running(Gateway(daemon.host, "--audit-log", str(audit))) as gw:
        yield Served(gw, audit)


def _direct(daemon: PrivateDaemon, method: str, target: str, body: object = None) -> Any:
    return json_exchange(UnixHTTPConnection(str(daemon.socket_path)), method, target, body)


def _refused_at_the_gateway(served: Served, method: str, target: str, body: object) -> None:
    status, answer = json_call(served.port, method, target, body)
    assert (status, answer) == (400, {"message": REFUSED})
    # Refused before any policy or the daemon: the audit and access logs say the gateway did.
    record = wait_audit(served.audit, lambda r: r["path"] == target)
    assert (record["decision"], record["status"], record["reason"]) == ("deny", 400, "bad target")
    line = wait_access_log(served.gw, lambda text: f"{method} {target} " in text)
    assert " decision=deny:-:bad-target " in line, line


def test_a_container_list_with_a_semicolon_is_refused_by_the_gateway(
    served: Served, daemon: PrivateDaemon
) -> None:
    """Failed before: forwarded, and the daemon's own 400 came back (an older daemon would
    have listed every container, `all=1` and the filter read as two pairs)."""
    filters = quote(json.dumps({"name": [f"dgt-{uuid.uuid4().hex[:8]}"]}), safe="")
    target = f"/v1.41/containers/json?all=1;filters={filters}"
    assert _direct(daemon, "GET", target) == (400, {"message": DAEMON_REFUSAL})
    _refused_at_the_gateway(served, "GET", target, None)


def test_a_create_with_a_semicolon_is_refused_and_creates_nothing(
    served: Served, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """Failed before: forwarded (the daemon's 400, not the gateway's)."""
    name = f"dgt-semi-{uuid.uuid4().hex[:8]}"
    target = f"/v1.41/containers/create?name={name};platform=linux"
    _refused_at_the_gateway(served, "POST", target, {"Image": busybox_image})
    assert not container_exists(daemon, name)
    assert not container_exists(daemon, f"{name};platform=linux")


@pytest.mark.parametrize("target", ["/v1.41/_ping?x=1;y=2", "/v1.41/version?;"])
def test_even_where_the_daemon_ignores_it(
    served: Served, daemon: PrivateDaemon, target: str
) -> None:
    """Handlers that never parse their form answer 200 to the daemon's direct client; the
    rule is the same for every request (failed before: forwarded, 200)."""
    assert _direct(daemon, "GET", target)[0] == 200
    _refused_at_the_gateway(served, "GET", target, None)


def test_an_encoded_semicolon_is_a_character_of_a_value(
    served: Served, daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """`%3B` passes, and means `;` inside a value to the gateway and the daemon alike: a label
    filter `a;b` finds the container labelled so, through the CLI, the SDK and a raw call.
    The clients encode it themselves (url.Values.Encode, urlencode): none sends a raw `;`."""
    cleanup = Cleanup(daemon)
    value = f"v;{uuid.uuid4().hex[:8]}"
    name = cleanup.container(f"dgt-semi-{uuid.uuid4().hex[:8]}")
    try:
        daemon.docker("create", "--name", name, "--label", f"dgt.semi={value}", busybox_image)
        label = f"dgt.semi={value}"

        proc = ok(
            remote_docker(served.url, tmp_path, "ps", "-a", "-q", "--filter", f"label={label}")
        )
        assert len(proc.stdout.split()) == 1, proc.stdout
        cli = wait_audit(
            served.audit, lambda r: r["operation"] == "ContainerList" and "%3B" in r["path"]
        )
        assert ";" not in cli["path"] and cli["decision"] == "allow"

        client = sdk_client(served.url)
        try:
            assert [c.name for c in client.containers.list(all=True, filters={"label": label})] == [
                name
            ]
        finally:
            client.close()

        filters = quote(json.dumps({"label": [label]}), safe="")
        status, answer = json_call(
            served.port, "GET", f"/v1.41/containers/json?all=1&filters={filters}"
        )
        assert status == 200 and [c["Names"] for c in answer] == [[f"/{name}"]]
        assert "%3B" in filters
    finally:
        cleanup.run()
