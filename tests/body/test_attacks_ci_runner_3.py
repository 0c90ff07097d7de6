"""Issue 11, "attack your own change", third pass: the fixes of the last hour (tmpfs option
allowlist, bind volumes judged by their own `o`, legacy top-level HostConfig fields, build
limits, network subnets, blkio paths, logs details, loopback registry names, the checked-body
cost bound, owner labels at any depth, pinning, leading-slash references), attacked as a
limited caller against the real daemon.

Each test is one finding, proven by its effect on the real daemon (or, for the gateway's own
robustness, by a measurement). Each was pinned as an `xfail(strict=True)` while the hole was
open; the closed ones are ordinary tests now, and the tests still marked so are holes that stay
open (their reasons say why).
Fixtures and helpers are the second pass's (tests/body/test_attacks_ci_runner_2.py): `ci` is a
gateway with the CI runner's policy, `tenants` two ownership tenants.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest
from test_attacks_ci_runner_2 import (  # noqa: F401  (fixtures are found by name)
    RUN,
    _LoopbackRegistry,
    ci,
    leftovers,
    tenants,
)

from dockgate.body import bodycost
from support.attack import ATTACK_MARKS, Api, LoopbackHandler, loopback_service, pings_under_load
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running

pytestmark = ATTACK_MARKS

SECRET = f"loopback-only-secret-{RUN}"


class _LoopbackIndex(LoopbackHandler):
    """A service on the host's loopback only, answering as a v1 registry index would: its
    search results are whatever it holds (here, a secret)."""

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.startswith("/v1/search"):
            data = json.dumps(
                {"num_results": 1, "query": "x", "results": [{"name": SECRET, "description": ""}]}
            ).encode()
        else:
            data = b"true"
        self.answer(200, "application/json", data)


def test_image_search_reads_a_loopback_only_service(ci: Api) -> None:  # noqa: F811
    """Found by the review: ImageSearch term=127.0.0.1:PORT/x was not judged, and the daemon
    GET /v1/_ping and /v1/search from a loopback-only service and returned its answer. Closed:
    a search of a loopback registry is refused like a pull (guardrails.search_problem), and
    the service sees no request; a Docker Hub term is still searched by the daemon."""
    with loopback_service(_LoopbackIndex) as (port, requests):
        # The same registry is refused for a pull (guardrails.pull_problem).
        status, answer = ci.call("POST", f"/v1.41/images/create?fromImage=127.0.0.1:{port}/x")
        assert status == 403 and "loopback" in answer["message"], (status, answer)
        status, answer = ci.call("GET", f"/v1.41/images/search?term=127.0.0.1:{port}/x")
    assert status == 403 and "searching a registry on the daemon's loopback" in answer["message"]
    assert SECRET not in json.dumps(answer, default=repr), (status, answer)
    assert requests == []


def _hosts_file_loopback_name() -> str | None:
    """A name other than localhost that /etc/hosts maps to a loopback address (the daemon's
    resolver reads /etc/hosts before DNS)."""
    try:
        lines = pathlib.Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.partition("#")[0].split()
        if len(fields) < 2 or not fields[0].startswith("127."):
            continue
        for name in fields[1:]:
            if "." not in name and name != "localhost" and name.isalnum():
                return name
    return None


@pytest.mark.xfail(
    strict=True,
    reason="a registry named by a host name that /etc/hosts maps to 127.0.0.1 (here `vm`, "
    "`runsc`) is not seen as loopback: a pull of NAME:PORT/x makes the daemon GET the "
    "loopback-only service and quote its answer (documented as 'a DNS name'; the gateway "
    "could resolve the name as the daemon does)",
)
def test_pull_from_a_hosts_file_name_reads_a_loopback_only_service(ci: Api) -> None:  # noqa: F811
    name = _hosts_file_loopback_name()
    if name is None:
        pytest.skip("no name other than localhost maps to 127.0.0.1 in /etc/hosts")
    with loopback_service(_LoopbackRegistry) as (port, requests):
        status, answer = ci.call(
            "POST", f"/v1.41/images/create?fromImage={name}:{port}/internal/x&tag=latest"
        )
    assert SECRET not in json.dumps(answer, default=repr), (status, answer)
    assert requests == []


# ----- the gateway's own resources -------------------------------------------------------------

SUBNETS_POLICY = """
version: 1
policies:
  ci-runner:
    rules:
      - allow: {sections: [ping, version, info, networks]}
    guardrails:
      network_subnets: [10.0.0.0/8]
"""


@pytest.fixture(scope="module")
def subnets_gateway(
    daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A gateway whose policy lets networks take subnets inside 10.0.0.0/8."""
    base = tmp_path_factory.mktemp("attack3-subnets")
    (base / "policy.yaml").write_text(SUBNETS_POLICY)
    with running(Gateway(daemon.host, policy=str(base / "policy.yaml"))) as gateway:
        yield gateway


def test_network_subnets_of_one_caller_stall_the_event_loop(subnets_gateway: Gateway) -> None:
    """Found by the review: a NetworkCreate of ~5,000 IPAM.Config subnets (under the body cost
    bound) cost ~0.1 s of event-loop CPU to judge against network_subnets, and 8 connections
    sending it took everyone's /_ping to a median of ~1 s. Closed: IPAM.Config may have at most
    16 entries (subnets.MAX_IPAM_CONFIGS), refused before any address is parsed."""
    port = subnets_gateway.port
    configs = ",".join(['{"Subnet":"10.19.0.0/16"}'] * 4990 + ['{"Subnet":"192.0.2.0/24"}'])
    body = f'{{"Name":"x-{RUN}","IPAM":{{"Config":[{configs}]}}}}'.encode()
    assert bodycost.cost_problem(body) is None
    api = Api(subnets_gateway)
    status, refused = api.call("POST", "/v1.41/networks/create", body)
    assert status == 400, (status, refused)
    assert "IPAM.Config may have at most 16 entries" in refused["message"], refused
    idle, loaded, sent = pings_under_load(port, "/v1.41/networks/create", body)
    median = loaded[len(loaded) // 2]
    assert sent > 0
    # The bound of the second pass's stall test (checked container bodies now: ~0.03 s).
    assert median < 0.15, (f"idle median {idle[5]:.4f}s", f"loaded median {median:.3f}s", sent)
