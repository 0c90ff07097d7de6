"""Response redaction and the relay that carries it, against the real daemon (found by the
review of ownership mode, response redaction and the proxy flow; the ownership findings are
tests/ownership/test_ownership_crossings.py).

An anonymous caller under the review's dashboard policy (redaction of env, mounts and labels)
reads a container that holds a secret. Each test asserts what redaction promises; those that
reproduced a bug were strict xfails until it was fixed, and are ordinary tests now.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator

import pytest

from support.attack import Api
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.rawhttp import until_close

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(240)]

SECRET = "review-canary-s3cret"

# The dashboard policy of the review's gateway, for every caller (all anonymous here).
POLICY = """\
policies:
  dashboard:
    read_only: true
    redact: {env: true, mounts: true, labels: true}
    rules:
      - allow: {sections: [ping, version, info, containers]}
"""


@pytest.fixture(scope="module")
def gw(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    policy = tmp_path_factory.mktemp("redaction-flow") / "policy.yaml"
    policy.write_text(POLICY)
    with running(Gateway(daemon.host, policy=str(policy))) as started:
        yield started


@pytest.fixture
def anonymous(gw: Gateway) -> Api:
    return Api(gw)


# ----- response redaction ----------------------------------------------------------------------


@pytest.fixture
def secret_container(daemon: PrivateDaemon, busybox_image: str) -> Iterator[str]:
    name = f"dgt-rev-redact-{os.urandom(4).hex()}"
    daemon.docker(
        "create", "--name", name, "-e", f"DB_PASSWORD={SECRET}", "--label", f"tok={SECRET}",
        busybox_image, "true",
    )  # fmt: skip
    yield name
    daemon.docker("rm", "-f", name, check=False)


def test_redaction_over_http11_hides_the_secret(anonymous: Api, secret_container: str) -> None:
    status, body = anonymous.call("GET", f"/v1.41/containers/{secret_container}/json")
    assert status == 200
    assert SECRET not in json.dumps(body)
    assert "DB_PASSWORD=<redacted>" in body["Config"]["Env"]


def test_redaction_is_bypassed_by_http10(gw: Gateway, secret_container: str) -> None:
    for target in (f"/v1.41/containers/{secret_container}/json", "/v1.41/containers/json?all=1"):
        answer = until_close(
            gw.port, f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1:{gw.port}\r\n\r\n".encode()
        )
        # Fixed by failing closed: an answer that ends at close is not passed on unredacted.
        assert SECRET.encode() not in answer, f"{target}: the secret went out unredacted"
        assert answer.startswith((b"HTTP/1.0 200 ", b"HTTP/1.1 502 ")), answer[:200]


def test_access_log_counts_a_redacted_answer_once(gw: Gateway, secret_container: str) -> None:
    target = f"/v1.41/containers/{secret_container}/json"
    answer = until_close(
        gw.port,
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nConnection: close\r\n\r\n".encode(),
    )
    body = answer.partition(b"\r\n\r\n")[2]
    deadline = time.monotonic() + 5
    line = ""
    while time.monotonic() < deadline and not line:
        line = next((x for x in reversed(gw.stdout()) if target in x), "")
        time.sleep(0.05)
    match = re.search(r" out=(\d+) ", line)
    assert match is not None, line
    assert int(match.group(1)) == len(body), line
