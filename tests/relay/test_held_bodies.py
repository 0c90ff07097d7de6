"""Bounded memory and time in a running gateway (issue 11, finding 7), measured on its process.

A dockgate process in front of a fake daemon (support/fake_upstream.py) with the default
guardrails (tests/policies/guardrails-defaults.yaml), so container-create bodies are held whole
to be judged. Each test states its claim in its docstring; RSS is the gateway's VmRSS.
"""

from __future__ import annotations

import json
import pathlib
import select
import socket
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from dockgate.config import ServeConfig
from support.fake_upstream import Exchange, FakeUpstream
from support.gateway import Gateway, gateway_env, running
from support.paths import TEST_POLICIES
from support.rawhttp import BufferedConn

pytestmark = pytest.mark.timeout(180)

POLICY = TEST_POLICIES / "guardrails-defaults.yaml"
CREATE = b"POST /v1.41/containers/create HTTP/1.1\r\nHost: localhost\r\n"
JSON = b"Content-Type: application/json\r\n"


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def connect(gw: Gateway) -> Conn:
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(sock, 10.0)


class Conn(BufferedConn):
    """A client connection to the gateway, its reads buffered (responses may be pipelined)."""

    def response(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """One Content-Length response: (status, headers, body)."""
        self.timeout = timeout
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head[:-4].split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                raise EOFError("closed mid-body")
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return int(lines[0].split()[1]), headers, body


def answered(conn: Conn, within: float) -> bool:
    return bool(conn.buf) or bool(select.select([conn.sock], [], [], within)[0])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def _method(i: int) -> bytes:
    out = b""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out += bytes([65 + r])
    return out


def _unknown_methods(gw: Gateway, start: int, count: int, batch: int = 500) -> None:
    """`count` requests with distinct made-up methods on one keep-alive connection, pipelined
    by `batch`; each must be refused (403) and the connection kept."""
    with connect(gw) as sock:
        for first in range(start, start + count, batch):
            n = min(batch, start + count - first)
            sock.send(
                b"".join(
                    b"X" + _method(i) + b" /_ping HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    for i in range(first, first + n)
                )
            )
            for _ in range(n):
                status, _, _ = sock.response()
                assert status == 403


def test_distinct_unknown_methods_do_not_grow_the_gateway(fake: FakeUpstream) -> None:
    """Finding 7: 100k requests with distinct unknown methods grow the gateway's RSS by less
    than 10 MB (before the fix each method stayed in the policy's decision table: ~25 MB)."""
    gw = Gateway(fake.url, "--policy", str(POLICY), "--access-log", "off")
    with running(gw):
        _unknown_methods(gw, 0, 10_000)  # caches warm and full
        before = rss_bytes(gw.pid)
        _unknown_methods(gw, 10_000, 100_000)
        growth = rss_bytes(gw.pid) - before
    assert growth < 10 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"


BUDGET = 4 * 1024 * 1024
BODY_LENGTH = 1_000_000  # under the 1 MiB limit of a checked body
CONNECTIONS = 40


def _create_head(length: int) -> bytes:
    return CREATE + JSON + b"Content-Length: %d\r\n\r\n" % length


def _almost_whole_body(length: int) -> bytes:
    """A create body one byte short of `length` (the closing brace never comes)."""
    prefix = b'{"Image": "busybox", "Labels": {"pad": "'
    return prefix + b"a" * (length - len(prefix) - 3) + b'"}'


def test_held_bodies_stay_within_the_budget(fake: FakeUpstream) -> None:
    """Finding 7, scaled down: 40 connections each hold a checked body one byte short of its
    end. With DOCKGATE_HELD_BODIES_MAX=4MiB only 4 are held (their Content-Length is taken up
    front); the other 36 get 503 at once, and the gateway's RSS grows by less than the budget
    plus 8 MiB (before: 40 MB). A chunked body is cut with 503 when it passes what is left.
    Once the held connections close, the budget is back: a create goes through."""
    env = gateway_env({"DOCKGATE_HELD_BODIES_MAX": "4MiB", "DOCKGATE_BODY_TIMEOUT": "60"})
    gw = Gateway(fake.url, "--policy", str(POLICY), "--access-log", "off", env=env)
    body = _almost_whole_body(BODY_LENGTH)
    held: list[Conn] = []
    refused: list[tuple[int, dict[str, str], bytes]] = []
    with running(gw):
        before = rss_bytes(gw.pid)
        try:
            for _ in range(CONNECTIONS):
                sock = connect(gw)
                sock.send(_create_head(BODY_LENGTH))
                if answered(sock, 0.3):
                    refused.append(sock.response())
                    sock.close()
                    continue
                sock.send(body)
                held.append(sock)
            time.sleep(0.5)
            growth = rss_bytes(gw.pid) - before
            assert len(held) == BUDGET // BODY_LENGTH, (len(held), refused[:1])
            assert all(not answered(sock, 0) for sock in held)
            status, headers, answer = refused[0]
            assert status == 503 and headers.get("retry-after") == "1"
            assert "--held-bodies-max" in json.loads(answer)["message"]
            assert growth < BUDGET + 8 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB"
            # What is left of the budget (~190 KiB) cannot take a 300 KiB chunked body.
            with connect(gw) as sock:
                sock.send(CREATE + JSON + b"Transfer-Encoding: chunked\r\n\r\n")
                piece = b"a" * 100_000
                for _ in range(3):  # read and dropped after the answer (lingering close)
                    sock.send(b"%x\r\n%b\r\n" % (len(piece), piece))
                status, _, _ = sock.response()
                assert status == 503
                assert sock.wait_closed(4.0)[0]
        except OSError as exc:
            pytest.fail(f"{exc!r}\n{gw.output(tail=20)}")
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.5)
        with connect(gw) as sock:
            small = b'{"Image": "busybox"}'
            sock.send(_create_head(len(small)) + small)
            status, _, answer = sock.response()
        assert status == 200, answer  # the fake daemon's echo
        assert json.loads(answer)["target"] == "/v1.41/containers/create"


def test_slow_body_gets_408(fake: FakeUpstream) -> None:
    """A held body that does not arrive within DOCKGATE_BODY_TIMEOUT (1 s) gets 408 with a
    clear message, the connection is closed, and nothing reaches the daemon: a checked body
    (ContainerCreate) and a body read to be dropped (ContainerKill, which reads none)."""
    env = gateway_env({"DOCKGATE_BODY_TIMEOUT": "1"})
    gw = Gateway(fake.url, "--policy", str(POLICY), "--access-log", "off", env=env)
    kill = b"POST /v1.41/containers/x/kill HTTP/1.1\r\nHost: localhost\r\n" + JSON
    with running(gw):
        seen = len(fake.requests)
        for head, length in ((CREATE + JSON, 100), (kill, 40)):
            with connect(gw) as sock:
                started = time.monotonic()
                sock.send(head + b"Content-Length: %d\r\n\r\n{" % length)
                status, _, answer = sock.response(timeout=5)
                waited = time.monotonic() - started
                assert status == 408, answer
                assert json.loads(answer)["message"] == (
                    "dockgate: the request body did not arrive within 1 s"
                )
                assert 1.0 <= waited < 3.0
                assert sock.wait_closed(4.0)[0]
        assert len(fake.requests) == seen


@pytest.mark.parametrize(
    ("text", "size"),
    [("67108864", 64 * 2**20), ("64MiB", 64 * 2**20), ("512k", 512 * 2**10), ("1 GiB", 2**30)],
)
def test_held_bodies_max_sizes(text: str, size: int) -> None:
    """--held-bodies-max (and DOCKGATE_HELD_BODIES_MAX) take bytes or binary units."""
    assert ServeConfig(held_bodies_max=text).held_bodies_max == size


@pytest.mark.parametrize("text", ["64MB?", "-1", "1KiB", ""])
def test_held_bodies_max_refuses_nonsense(text: str) -> None:
    """Not a size, or under 64 KiB: the CLI reports it and does not start."""
    with pytest.raises(ValidationError):
        ServeConfig(held_bodies_max=text)


def test_held_answers_share_the_budget(fake: FakeUpstream, tmp_path: pathlib.Path) -> None:
    """Answers read whole to be redacted count against --held-bodies-max too: with a 64 KiB
    budget, a 200 KB container list gets 503 instead of the answer (the held part given back:
    the next, small list is answered, redacted)."""
    policy = tmp_path / "redact.yaml"
    policy.write_text(
        "policies:\n  dash:\n    redact: {labels: true}\n    rules:\n"
        "      - allow: {sections: [containers]}\n"
    )
    big = [
        {"Id": f"{i:064x}", "Names": [f"/c{i}"], "Labels": {"pad": "x" * 150}} for i in range(1000)
    ]
    small = [{"Id": "0" * 64, "Names": ["/c"], "Labels": {}}]

    def handler(ex: Exchange) -> None:
        ex.respond_json(big if "all=1" in ex.target else small)

    fake.handler = handler
    gw = Gateway(fake.url, "--policy", str(policy), "--held-bodies-max", "64KiB")
    try:
        with running(gw):
            with connect(gw) as sock:
                sock.send(b"GET /v1.41/containers/json?all=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                status, _, answer = sock.response()
                assert status == 503, answer[:200]
                assert "too many answers" in json.loads(answer)["message"]
            with connect(gw) as sock:
                sock.send(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: localhost\r\n\r\n")
                status, _, answer = sock.response()
                assert status == 200 and json.loads(answer)[0]["Names"] == ["/c"]
    finally:
        fake.handler = None
