"""Second attack pass on issue 14: the hot-path shortcuts (a keep-alive client's repeated
request reusing its plan, ResponseReader.whole on the straight path, the inline hop check).

Each test drives a real ``dockgate serve`` subprocess (in front of the fake daemon, or of another
gateway) and checks the effect on the wire (what the daemon received, the bytes the client got).
No finding: every attack held, and each test here pins one that did (the engine before the
shortcuts, 8610dab, gave the same bytes). A keep-alive client whose credentials are revoked
between two identical requests is covered by tests/auth/test_identity_e2e.py
(test_credential_files_are_reloaded)."""

from __future__ import annotations

import datetime
import pathlib
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from support.fake_upstream import Exchange, FakeUpstream
from support.gateway import Gateway
from support.pki import Client, Pki, issue, make_pki
from support.rawhttp import read_answer

pytestmark = pytest.mark.timeout(60)

ALLOW = "policies:\n  p:\n    rules:\n      - allow: {sections: [ping, version, containers]}\n"
DENY = "policies:\n  p:\n    rules:\n      - allow: {sections: [ping, version]}\n"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def _settle(sock: socket.socket, wait: float = 0.5) -> bytes:
    """Whatever else the gateway sends on `sock` within `wait` seconds."""
    sock.settimeout(wait)
    extra = b""
    try:
        while True:
            got = sock.recv(65536)
            if not got:
                break
            extra += got
    except TimeoutError:
        pass
    return extra


def test_a_reused_plan_does_not_outlive_a_policy_reload(
    fake: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    """One keep-alive connection sends the same bytes three times; the policy is reloaded
    (SIGHUP) to deny the operation between the second and the third. The third must be
    refused (the repeated request's `_last_plan` is keyed by the admission object, new after
    a reload): held."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(ALLOW)
    g = Gateway(fake.url, policy=str(policy)).start()
    try:
        request = b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\n\r\n"
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as c:
            for _ in range(2):
                c.sendall(request)
                assert read_answer(c)[0] == 200
            policy.write_text(DENY)
            g.signal(signal.SIGHUP)
            time.sleep(1.5)
            before = len(fake.requests_for("/v1.41/containers/json"))
            c.sendall(request)
            status, _, _ = read_answer(c)
        assert status == 403
        assert len(fake.requests_for("/v1.41/containers/json")) == before
    finally:
        g.stop()


OK_2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
# Per case: the daemon's answers to /x, in order (each sent in one write, so that the gateway
# reads each in one read), the client's requests on one keep-alive connection (the head of the
# first answer is then known to the response-head cache, and the second goes by
# ResponseReader.whole), and what must never reach the client.
WHOLE_CASES = {
    "bytes-after-the-body": (
        [OK_2, OK_2 + b"SMUGGLED"],
        ["GET", "GET", "GET"],
        b"SMUGGLED",
    ),
    "head-after-get": (
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nGETBODY!",
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nGETBODY!",
        ],
        ["GET", "HEAD", "HEAD", "GET"],
        b"",
    ),
    "204-with-length-and-bytes": (
        [
            b"HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\nSMUGGLED",
        ],
        ["DELETE", "DELETE", "GET"],
        b"SMUGGLED",
    ),
    "continue-and-answer-in-one-read": (
        [b"HTTP/1.1 100 Continue\r\n\r\n" + OK_2] * 2,
        ["GET", "GET", "GET"],
        b"",
    ),
}


@pytest.mark.parametrize("case", list(WHOLE_CASES))
def test_whole_answers_are_framed_as_feed_frames_them(fake: FakeUpstream, case: str) -> None:
    """The straight path (ResponseReader.whole, by the cached facts of an answer head) gives
    the client exactly what `feed` would: the same bytes as the engine before the shortcut
    (8610dab, compared by hand for these and for TE+CL, 304, Connection: close, a client's
    Connection: close, attach answered 200 with a length, a 101 with stream bytes in the same
    read, a 101 nobody asked for). Held."""
    answers, methods, never = WHOLE_CASES[case]
    sent: list[int] = []

    def handler(ex: Exchange) -> None:
        if ex.path.startswith("/x"):
            ex.send(answers[min(len(sent), len(answers) - 1)])
            sent.append(1)
            return
        ex.send(OK_2)

    fake.handler = handler
    g = Gateway(fake.url).start()
    try:
        got: list[bytes] = []
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as c:
            for method in methods:
                c.sendall(f"{method} /x HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
                more = _settle(c)
                got.append(more)
                if not more:
                    break  # closed (the daemon's answer could not be relayed as is)
        everything = b"".join(got)
        if never:
            assert never not in everything, got
        heads = everything.count(b"HTTP/1.1 ") - everything.count(b"HTTP/1.1 100 ")
        # Every answer the client got is one of the daemon's, each once, in order.
        assert heads <= len(methods), got
        if case == "head-after-get":
            assert heads == 4 and everything.count(b"GETBODY!") == 2, got
            assert got[1].endswith(b"\r\n\r\n") and got[2].endswith(b"\r\n\r\n"), got
    finally:
        g.stop()


def test_a_repeated_request_around_a_loop_is_refused_every_time(tmp_path: pathlib.Path) -> None:
    """Two gateways, each the other's upstream (A -> B -> A); one keep-alive client of A sends
    the same bytes three times, with hop fields of its own in both cases of the name. The
    inline token test (`HOP_TOKEN in head.raw`) and B's reused plan must not let any of them
    round again: each is answered 508, once. Held."""
    a, b = tmp_path / "a.sock", tmp_path / "b.sock"
    gb = Gateway(f"unix://{a}", listen=f"unix://{b}").start()
    ga = Gateway(f"unix://{b}", listen=f"unix://{a}").start()
    try:
        request = (
            b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Dockgate-Hop: dockgate-0000\r\n"
            b"x-dockgate-hop: dockgate-1111\r\n\r\n"
        )
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(str(a))
            statuses = []
            for _ in range(3):
                c.sendall(request)
                statuses.append(read_answer(c)[0])
            assert _settle(c) == b""
        assert statuses == [508, 508, 508]
    finally:
        ga.stop()
        gb.stop()


def _tls_gateway(fake: FakeUpstream, pki: Pki) -> Gateway:
    """A gateway requiring client certificates (ca1's), every caller allowed the containers."""
    policy = pki.root / "policy.yaml"
    policy.write_text(
        "version: 1\npolicies:\n  all:\n    rules:\n      - allow: {sections: [ping, containers]}\n"
    )
    return Gateway(
        fake.url,
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--tls-client-ca", str(pki.client_ca)),
        policy=policy,
    )


def test_a_repeated_request_after_the_certificate_expired_is_refused(
    fake: FakeUpstream, tmp_path: pathlib.Path
) -> None:
    """A TLS client with a certificate valid for a few seconds sends the same bytes on one
    connection before and after its notAfter. The second repeat would reuse the first's plan
    (`_last_plan`) if admission gave the same object; it must be 401 and the connection end,
    and the daemon must not see it. Held (admission checks the certificate first, and its
    refusal is a new object each time)."""
    pki = make_pki(tmp_path)
    g = _tls_gateway(fake, pki).start()
    try:
        leaf = issue(pki.ca1, "alice", lifetime=datetime.timedelta(seconds=3))
        client = Client(g, pki, leaf)
        try:
            assert client.request("GET", "/v1.41/containers/json")[0] == 200
            assert client.request("GET", "/v1.41/containers/json")[0] == 200
            seen = len(fake.requests_for("/v1.41/containers/json"))
            time.sleep(max(0.0, leaf.cert.not_valid_after_utc.timestamp() - time.time()) + 0.5)
            status, _, body = client.request("GET", "/v1.41/containers/json")
            assert status == 401, body
            assert b"expired" in body
            assert client.closed()
        finally:
            client.close()
        assert len(fake.requests_for("/v1.41/containers/json")) == seen
    finally:
        g.stop()
