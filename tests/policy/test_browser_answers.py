"""The browser guard's two halves (issue 11, finding 9): the gateway's own origin is accepted, so
docker-py's WebSocket attach (websocket-client sends `Origin: http://HOST:PORT`) works, and every
answer, the gateway's own and the daemon's relayed ones of every framing, carries
`Content-Security-Policy: sandbox` and `X-Content-Type-Options: nosniff`, so no document served
from that origin can run a script in it."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time
from collections.abc import Iterator

import docker
import pytest
import websocket

from dockgate.policy.browser import ANSWER_HEADERS, BrowserGuard
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running

CSP = "content-security-policy"
NOSNIFF = "x-content-type-options"

# ----- the gateway's own origin -----------------------------------------------------------------

GUARD = BrowserGuard()
TLS_GUARD = BrowserGuard(scheme="https")


@pytest.mark.parametrize(
    ("guard", "host", "origin"),
    [
        (GUARD, b"127.0.0.1:2375", b"http://127.0.0.1:2375"),  # websocket-client, docker-py
        (GUARD, b"localhost:2375", b"HTTP://LocalHost:2375"),
        (GUARD, b"[::1]:2375", b"http://[::1]:2375"),
        (GUARD, b"127.0.0.1", b"http://127.0.0.1:80"),  # the default port, left out or not
        (GUARD, b"127.0.0.1:80", b"http://127.0.0.1"),
        (TLS_GUARD, b"10.0.0.5:2376", b"https://10.0.0.5:2376"),
        (TLS_GUARD, b"10.0.0.5", b"https://10.0.0.5:443"),
    ],
)
def test_the_gateways_own_origin_is_accepted(
    guard: BrowserGuard, host: bytes, origin: bytes
) -> None:
    """An Origin that is the listener's scheme and this request's (accepted) Host passes,
    authenticated or not (it was refused before: finding 9)."""
    assert guard.refusal(host, origin, authenticated=False) is None
    assert guard.refusal(host, origin, authenticated=True) is None


@pytest.mark.parametrize(
    ("guard", "host", "origin", "authenticated"),
    [
        (GUARD, b"127.0.0.1:2375", b"http://127.0.0.1:8080", False),  # another local app
        (GUARD, b"127.0.0.1:2375", b"https://127.0.0.1:2375", False),  # not this listener's
        (TLS_GUARD, b"127.0.0.1:2375", b"http://127.0.0.1:2375", False),
        (GUARD, b"127.0.0.1:2375", b"http://127.0.0.1:2375/", False),  # not an origin
        (GUARD, b"127.0.0.1:2375", b"http://127.0.0.1", False),
        (GUARD, b"127.0.0.1:2375", b"null", False),
        # DNS rebinding: the page's origin and the Host both name the attacker's domain;
        # refused even where authentication lifts the Host check.
        (GUARD, b"evil.example:2375", b"http://evil.example:2375", False),
        (GUARD, b"evil.example:2375", b"http://evil.example:2375", True),
        (GUARD, b"127.0.0.1:2375/x", b"http://127.0.0.1:2375/x", False),  # not an authority
        (GUARD, None, b"http://127.0.0.1:2375", False),
    ],
)
def test_other_origins_are_still_refused(
    guard: BrowserGuard,
    host: bytes | None,
    origin: bytes,
    authenticated: bool,
) -> None:
    refusal = guard.refusal(host, origin, authenticated=authenticated)
    assert refusal is not None and "Origin" in refusal


def test_the_gateways_fixed_answers_carry_the_headers() -> None:
    """The admin listener's answers and the plain-HTTP answer of a TLS port are documents in
    an origin too."""
    from dockgate.http.errors import error_response  # noqa: PLC0415
    from dockgate.observe.admin import _answer  # noqa: PLC0415
    from dockgate.relay.tls import _HTTP_ON_TLS_PORT  # noqa: PLC0415

    for raw in (
        _answer(200, "OK", {"status": "ok"}, head_only=False),
        _HTTP_ON_TLS_PORT,
        error_response(403, "no"),
        error_response(401, "who", extra_headers=b"WWW-Authenticate: Basic\r\n", head_only=True),
    ):
        head = raw.partition(b"\r\n\r\n")[0] + b"\r\n"
        assert ANSWER_HEADERS in head


# ----- every answer through a gateway, on the wire ----------------------------------------------

POLICY = """\
policies:
  all:
    guardrails: false
    redact: {env: true}
    rules:
      - allow: {sections: ["*"]}
"""


@pytest.fixture(scope="module")
def gw(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    policy = tmp_path_factory.mktemp("browser") / "policy.yaml"
    policy.write_text(POLICY)
    with running(Gateway(daemon.host, policy=str(policy))) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def ticker(daemon: PrivateDaemon, busybox_image: str) -> Iterator[str]:
    """A running container that prints a line a second, with stdin open."""
    name = f"dgt-browser-{os.urandom(3).hex()}"
    daemon.docker(
        "run", "-d", "-i", "--name", name, "-e", "TOKEN=browser-canary", busybox_image,
        "sh", "-c", "while :; do echo tick; sleep 1; done",
    )  # fmt: skip
    yield name
    daemon.docker("rm", "-f", name, check=False)


def _heads(port: int, raw: bytes, count: int = 1) -> list[tuple[int, dict[str, list[str]]]]:
    """Send `raw` on a fresh connection; the first `count` response heads (bodies skipped by
    their length or chunks; a 101 or a raw stream ends the reading)."""
    out: list[tuple[int, dict[str, list[str]]]] = []
    # A body that never ends (data keeps coming, so no recv times out) fails within a minute,
    # naming the request and what was read, rather than at the test's own timeout.
    deadline = time.monotonic() + 60
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(raw)
        data = b""
        while len(out) < count:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, f"closed after {data!r}"
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers: dict[str, list[str]] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), []).append(value.strip())
            status = int(lines[0].split(" ")[1])
            out.append((status, headers))
            length = int(headers.get("content-length", ["0"])[0])
            if b"HEAD " in raw.split(b"\r\n", 1)[0]:
                length = 0
            while len(data) < length:
                data += sock.recv(65536)
            data = data[length:]
            if headers.get("transfer-encoding") == ["chunked"]:
                while b"\r\n0\r\n\r\n" not in b"\r\n" + data:
                    chunk = sock.recv(65536)
                    assert chunk
                    data += chunk
                    assert time.monotonic() < deadline, (raw, head, data[:300], data[-300:])
                data = (b"\r\n" + data).partition(b"\r\n0\r\n\r\n")[2]
    return out


def _request(method: str, target: str, *extra: str, close: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *extra]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _assert_guarded(status: int, headers: dict[str, list[str]], what: str) -> None:
    assert headers.get(CSP) == ["sandbox"], (what, status, headers)
    assert headers.get(NOSNIFF) == ["nosniff"], (what, status, headers)


@pytest.mark.daemon
@pytest.mark.timeout(180)
def test_every_answer_carries_both_headers(
    gw: Gateway, ticker: str, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """Relayed 200 (length, chunked, streamed events, HEAD, a redacted answer), 204, 304, 404,
    101 (Upgrade: tcp and WebSocket), the old 200 hijack, and the gateway's own 400 and 403:
    each head carries the two headers exactly once, and the daemon's own answer (straight)
    carries neither (the gateway adds them)."""
    doomed = f"dgt-browser-204-{os.urandom(3).hex()}"
    daemon.docker("create", "--name", doomed, busybox_image, "true")
    attach = f"/containers/{ticker}/attach?stream=1&stdout=1"
    attach_ws = f"/containers/{ticker}/attach/ws?stream=1&stdout=1"
    ws = (
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Origin: http://127.0.0.1",  # the gateway's own: Host is 127.0.0.1
    )
    now = int(time.time())
    cases = [
        ("ping", _request("GET", "/_ping"), 200),
        ("head", _request("HEAD", "/_ping"), 200),
        ("chunked list", _request("GET", "/containers/json?all=1"), 200),
        ("redacted", _request("GET", f"/containers/{ticker}/json"), 200),
        # Events of the last seconds only: `since=0` replays the daemon's whole buffer, which
        # earlier modules fill with events of images carrying megabytes of labels.
        ("events", _request("GET", f"/events?since={now - 2}&until={now}"), 200),
        ("404", _request("GET", "/containers/no-such-container/json"), 404),
        ("304", _request("POST", f"/containers/{ticker}/start"), 304),
        ("204", _request("DELETE", f"/containers/{doomed}"), 204),
        ("101", _request("POST", attach, "Upgrade: tcp", "Connection: Upgrade", close=False), 101),
        ("hijack", _request("POST", attach, "Content-Length: 0", close=False), 200),
        ("ws", _request("GET", attach_ws, *ws, close=False), 101),
        ("own 403", _request("GET", "/_ping", "Origin: https://evil.example"), 403),
        ("own 400", b"GET /_ping HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", 400),
    ]
    for what, raw, expected in cases:
        (status, headers), *_ = _heads(gw.port, raw)
        assert status == expected, (what, status, headers)
        _assert_guarded(status, headers, what)
    # Keep-alive: each of several answers on one connection.
    pings = _request("GET", "/_ping", close=False) * 2 + _request("GET", "/version")
    for status, headers in _heads(gw.port, pings, count=3):
        _assert_guarded(status, headers, "keep-alive")
    # Straight from the daemon: neither header (so the test is about the gateway).
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.socket_path))
    with sock:
        sock.sendall(_request("GET", "/_ping"))
        head = sock.recv(65536).partition(b"\r\n\r\n")[0].lower()
    assert b"content-security-policy" not in head and b"nosniff" not in head


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_an_upstream_failure_carries_both_headers(tmp_path: pathlib.Path) -> None:
    """The gateway's own 502 (no daemon behind it)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with running(Gateway(f"unix://{tmp_path}/absent.sock", policy=str(policy))) as gateway:
        (status, headers), *_ = _heads(gateway.port, _request("GET", "/_ping"))
    assert status == 502
    _assert_guarded(status, headers, "502")


# ----- docker-py's WebSocket attach -------------------------------------------------------------


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_docker_py_websocket_attach_works(gw: Gateway, ticker: str) -> None:
    """`attach_socket(ws=True)` sends `Origin: http://127.0.0.1:PORT` (websocket-client): it
    was refused (403) before, and now reads the container's output."""
    client = docker.DockerClient(base_url=gw.url, version="1.41")
    try:
        ws = client.api.attach_socket(ticker, params={"stdout": 1, "stream": 1}, ws=True)
        try:
            ws.settimeout(10)
            received = b""
            while b"tick" not in received:
                frame = ws.recv()
                received += frame if isinstance(frame, bytes) else frame.encode()
        finally:
            ws.close()
    finally:
        client.close()


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_a_foreign_origin_websocket_is_still_refused(gw: Gateway, ticker: str) -> None:
    url = f"ws://127.0.0.1:{gw.port}/v1.41/containers/{ticker}/attach/ws?stream=1&stdout=1"
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        websocket.create_connection(url, origin="http://evil.example:2375", timeout=10)
    assert caught.value.status_code == 403
    body = caught.value.resp_body or b""
    assert "Origin" in json.loads(body)["message"]
