"""Issue 14, "attack your own change": the hot path's fourth-pass shortcuts (perf14d) attacked
by a caller with limited rights: the reader's kept head (`RequestReader._last`), the
connection's remembered admission (`ConnectionFacts.admitted`), the repeated exchange started
in one call (`ClientConnection._repeat`) and logged from kept parts (`_tail`).

Findings (xfail, strict):
- test_an_idle_connection_keeps_no_large_refused_head: a refused request with a large head
  (a 60 KiB query) leaves the head pinned on the idle keep-alive connection by `_tail` (the
  last exchange's log parts), which, unlike the reader's and admission's memos, keeps heads of
  any size: ~120 KiB of the gateway's RSS per idle connection for the idle timeout (120 s),
  against ~4 KiB at 3e654be.

The attacks that held are plain tests.
"""

from __future__ import annotations

import pathlib
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from support.fake_upstream import FakeUpstream
from support.gateway import Gateway
from support.remote import write_htpasswd

pytestmark = pytest.mark.timeout(60)

# Only /_ping and /version: anything else is refused by the policy (403), never forwarded.
PING_ONLY = "policies:\n  p:\n    rules:\n      - allow: {sections: [ping, version]}\n"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def _answer(sock: socket.socket, timeout: float = 5) -> tuple[int, bytes, bytes]:
    """One answer with a Content-Length body (status, head, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            raise EOFError(data)
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        got = sock.recv(65536)
        if not got:
            raise EOFError(data)
        rest += got
    return int(head.split(b" ")[1]), head, rest


def _rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ----- memory ----------------------------------------------------------------------------------

IDLE_CONNECTIONS = 200
BIG_QUERY = 60_000  # under --max-header-bytes (64 KiB): a head the gateway reads


@pytest.mark.xfail(
    strict=True,
    reason="_tail keeps the last exchange's head whatever its size: a refused 60 KiB head "
    "pins ~120 KiB of RSS per idle keep-alive connection (3e654be: ~4 KiB)",
)
def test_an_idle_connection_keeps_no_large_refused_head(
    fake: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    """200 keep-alive connections each send one request the policy refuses, with a 60 KiB
    query, read the 403 and stay open (idle, as the idle timeout allows for 120 s). The
    gateway's RSS should not grow by much more than a connection's own state per connection
    (3e654be: ~4 KiB each); with the kept log parts it grows by ~120 KiB each (24 MiB here)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(PING_ONLY)
    g = Gateway(fake.url, policy=str(policy)).start()
    socks: list[socket.socket] = []
    try:
        for _ in range(20):  # warm the process up (imports, caches) before measuring
            with socket.create_connection(("127.0.0.1", g.port), timeout=5) as c:
                c.sendall(b"GET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
                _answer(c)
        time.sleep(0.3)
        before = _rss_kib(g.pid)
        for i in range(IDLE_CONNECTIONS):
            c = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            socks.append(c)
            query = f"{i:05d}" + "a" * BIG_QUERY
            c.sendall(
                f"GET /v1.41/containers/json?x={query} HTTP/1.1\r\nHost: docker\r\n\r\n".encode()
            )
            assert _answer(c)[0] == 403
        time.sleep(0.3)
        grown = _rss_kib(g.pid) - before
    finally:
        for c in socks:
            c.close()
        g.stop()
    assert fake.requests_for("/v1.41/containers/json") == []
    assert grown / IDLE_CONNECTIONS < 32, f"{grown} KiB for {IDLE_CONNECTIONS} idle connections"


# ----- one request's admission serving another -------------------------------------------------


def _request(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: docker", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _statuses(sock: socket.socket, request: bytes, times: int) -> list[int]:
    out = []
    for _ in range(times):
        sock.sendall(request)
        out.append(_answer(sock)[0])
    return out


def test_the_same_bytes_behind_two_proxy_headers_are_judged_by_each_source(
    fake: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    """--proxy-protocol: two connections from the trusted balancer send the same bytes (one
    parsed head object for both: the process's head cache), one for an allowed client, one
    for a --deny-source one, interleaved and repeated. Each connection's remembered admission
    is its own (keyed by its source): the denied client is refused every time, before and
    after the allowed one repeats, and the daemon sees the allowed client's requests only.
    Held."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(PING_ONLY.replace("ping, version", "ping, version, containers"))
    g = Gateway(
        fake.url,
        *("--proxy-protocol", "--trusted-proxy", "127.0.0.1", "--deny-source", "203.0.113.66"),
        policy=str(policy),
    ).start()
    try:
        request = _request("/v1.41/containers/json")
        with (
            socket.create_connection(("127.0.0.1", g.port), timeout=5) as good,
            socket.create_connection(("127.0.0.1", g.port), timeout=5) as bad,
        ):
            good.sendall(b"PROXY TCP4 198.51.100.1 10.0.0.1 5555 2375\r\n")
            bad.sendall(b"PROXY TCP4 203.0.113.66 10.0.0.1 5555 2375\r\n")
            seen = []
            for _ in range(3):
                seen += _statuses(bad, request, 2)
                seen += _statuses(good, request, 2)
        assert seen == [403, 403, 200, 200] * 3
        assert len(fake.requests_for("/v1.41/containers/json")) == 6
    finally:
        g.stop()


def test_forwarded_for_repeats_are_judged_by_the_forwarded_client(
    fake: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    """A trusted proxy (X-Forwarded-For) repeats, on one keep-alive connection, a request for
    a denied client and one for an allowed client, alternating, each several times in a row:
    the remembered admission of one never answers the other. Held."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(PING_ONLY.replace("ping, version", "ping, version, containers"))
    g = Gateway(
        fake.url,
        *("--trusted-proxy", "127.0.0.1", "--deny-source", "203.0.113.66"),
        policy=str(policy),
    ).start()
    try:
        denied = _request("/v1.41/containers/json", "X-Forwarded-For: 203.0.113.66")
        allowed = _request("/v1.41/containers/json", "X-Forwarded-For: 198.51.100.1")
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as c:
            seen = []
            for _ in range(3):
                seen += _statuses(c, allowed, 2)
                seen += _statuses(c, denied, 2)
        assert seen == [200, 200, 403, 403] * 3
        assert len(fake.requests_for("/v1.41/containers/json")) == 6
        assert {r.header("X-Forwarded-For") for r in fake.requests_for("/v1.41/")} <= {
            "198.51.100.1",
            None,
        }
    finally:
        g.stop()


SOURCES_POLICY = """\
policies:
  p:
    rules:
      - allow: {{sections: [ping, version, containers]}}
bindings:
  - {{policy: p, anonymous: true, sources: {{allow: [{sources}]}}}}
"""


def test_a_repeat_after_the_binding_sources_change_is_refused(
    fake: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    """Anonymous callers bound from 127.0.0.0/8 only, with an htpasswd file so that a binding
    is what admits them; a keep-alive client repeats a request, then the policy is reloaded
    (SIGHUP) with the binding's sources narrowed to another network. The next repeat (same
    bytes, same connection, same remembered admission before the reload) must be refused and
    never reach the daemon; widened again, the repeat goes through. Held (the remembered
    admission is keyed by the Admissions generation)."""
    htpasswd = tmp_path / "htpasswd"
    write_htpasswd(htpasswd, {"alice": "secret"})
    policy = tmp_path / "policy.yaml"
    policy.write_text(SOURCES_POLICY.format(sources="127.0.0.0/8"))
    g = Gateway(fake.url, "--htpasswd", str(htpasswd), policy=str(policy)).start()
    try:
        request = _request("/v1.41/containers/json")
        path = "/v1.41/containers/json"
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as c:
            assert _statuses(c, request, 3) == [200, 200, 200]
            policy.write_text(SOURCES_POLICY.format(sources="192.0.2.0/24"))
            g.signal(signal.SIGHUP)
            time.sleep(1.5)
            before = len(fake.requests_for(path))
            narrowed = _statuses(c, request, 2)
            after = len(fake.requests_for(path))
            policy.write_text(SOURCES_POLICY.format(sources="127.0.0.0/8"))
            g.signal(signal.SIGHUP)
            time.sleep(1.5)
            widened = _statuses(c, request, 2)
        assert narrowed[0] in (401, 403) and narrowed[1] == narrowed[0]
        assert after == before
        assert widened == [200, 200]
    finally:
        g.stop()
