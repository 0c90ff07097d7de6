"""The hot-path caches stay bounded whatever clients send, and never change an answer."""

from __future__ import annotations

from dockgate.http import request
from dockgate.http.request import parse_head, parse_head_cached
from dockgate.policy.gatekeeper import VERDICT_CACHE_ENTRIES, Gatekeeper
from dockgate.policy.tecnativa import policy_from_environment


def test_head_cache_is_bounded_and_skips_large_heads() -> None:
    """Large heads are not remembered, and the number of remembered heads never passes the cap."""
    request._head_cache.clear()
    big = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n"
    assert parse_head_cached(big) == parse_head(big)
    assert big not in request._head_cache
    for i in range(request.HEAD_CACHE_ENTRIES + 10):
        raw = b"GET /containers/c%d/json HTTP/1.1\r\nHost: docker\r\n\r\n" % i
        assert parse_head_cached(raw) == parse_head(raw)
        assert len(request._head_cache) <= request.HEAD_CACHE_ENTRIES


def test_verdict_cache_is_bounded_and_agrees_with_check() -> None:
    """Cached verdicts equal fresh ones; long targets are not remembered; the cap holds."""
    gatekeeper = Gatekeeper(policy_from_environment({"CONTAINERS": "1"}))
    long_target = "/containers/json?filters=" + "x" * 1000
    cached = gatekeeper.check_cached("GET", long_target, b"docker", None, False)
    assert cached == gatekeeper.check("GET", long_target, b"docker", None)
    assert len(gatekeeper._cache) == 0
    for i in range(VERDICT_CACHE_ENTRIES + 10):
        target = f"/containers/c{i}/json"
        verdict = gatekeeper.check_cached("GET", target, b"docker", None, False)
        assert verdict == gatekeeper.check("GET", target, b"docker", None)
        assert len(gatekeeper._cache) <= VERDICT_CACHE_ENTRIES
