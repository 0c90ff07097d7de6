"""Issue 11, "attack your own change", third pass: the fixes of the last hour (tmpfs option
allowlist, bind volumes judged by their own `o`, legacy top-level HostConfig fields, build
limits, network subnets, blkio paths, logs details, loopback registry names, the checked-body
cost bound, owner labels at any depth, pinning, leading-slash references), attacked as a
limited caller against the real daemon.

Each test is one finding, proven by its effect on the real daemon (or, for the gateway's own
robustness, by a measurement), and marked `xfail(strict=True)`: it passes while the hole is
open and fails (XPASS) once it is closed, so that the fix must turn it into an ordinary test.
Fixtures and helpers are the second pass's (tests/test_attack_review2.py): `ci` is a gateway
with the CI runner's policy, `tenants` two ownership tenants.
"""

from __future__ import annotations

import http.server
import json
import os
import threading

import pytest

from test_attack_review2 import (  # noqa: F401  (fixtures are found by name)
    RUN,
    Api,
    ci,
    leftovers,
    tenants,
)

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's guardrails",
    ),
]

SECRET = f"loopback-only-secret-{RUN}"


class _LoopbackIndex(http.server.BaseHTTPRequestHandler):
    """A service on the host's loopback only, answering as a v1 registry index would: its
    search results are whatever it holds (here, a secret)."""

    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/v1/search"):
            data = json.dumps(
                {"num_results": 1, "query": "x", "results": [{"name": SECRET, "description": ""}]}
            ).encode()
        else:
            data = b"true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.xfail(
    strict=True,
    reason="ImageSearch term=127.0.0.1:PORT/x (or localhost:PORT/x) is not judged: the daemon "
    "GETs /v1/_ping and /v1/search from a loopback-only service and returns its answer",
)
def test_image_search_reads_a_loopback_only_service(ci: Api) -> None:
    requests: list[str] = []
    handler = type("Handler", (_LoopbackIndex,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        # The same registry is refused for a pull (guardrails.pull_problem).
        status, answer = ci.call("POST", f"/v1.41/images/create?fromImage=127.0.0.1:{port}/x")
        assert status == 403 and "loopback" in answer["message"], (status, answer)
        status, answer = ci.call("GET", f"/v1.41/images/search?term=127.0.0.1:{port}/x")
    finally:
        server.shutdown()
        server.server_close()
    assert SECRET not in json.dumps(answer, default=repr), (status, answer)
    assert requests == []
