"""Password checks off the event loop, end to end: a real gateway in front of the real daemon,
with an htpasswd file of the bcrypt cost `htpasswd -B` writes (5) and of bcrypt's default (10).

Claims under test (issue 11, finding 6), each of which failed on the code before it:
- a burst of wrong passwords from several loopback addresses (each under the per-address
  limit) leaves everybody else's `/_ping` on a keep-alive connection fast: before, every hash
  ran on the event loop and the pings waited behind them (hundreds of ms);
- a password over bcrypt's 72 bytes gets a 401 in Docker's error shape (before: an exception
  inside admission, no answer), and a right one is checked by its first 72 bytes, as Apache
  and Go's bcrypt do;
- an unknown user costs what a known user with a wrong password costs (before: the dummy hash
  was bcrypt cost 10 whatever the file held, 25 times a cost-5 check).
"""

from __future__ import annotations

import base64
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.rawhttp import BufferedConn, dechunk, parse_head

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

USER, PASSWORD = "alice", "correct horse battery staple"
# 80 bytes: bcrypt hashes the first 72 (what Apache's htpasswd stores for it).
LONG_USER, LONG_PASSWORD = "longpw", "L" * 70 + "0123456789"
SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]  # 10 loopback addresses, for the burst
TIMING_SOURCES = [f"127.0.1.{i}" for i in range(2, 12)]  # others: the burst spent its budgets
PER_SOURCE = 20  # the default --auth-failures: each address stays at its limit, not past it
IO_TIMEOUT = 30.0
# The target is 20 ms p99 on the bench; on this shared 2-core machine a test needs
# room, and the old code blocked pings for hundreds of milliseconds (780 ms measured).
PING_P99_BOUND_S = 0.150


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def htpasswd_file(directory: Path, cost: int) -> Path:
    path = directory / f"htpasswd-{cost}"
    lines = [
        f"{user}:{bcrypt.hashpw(pw.encode()[:72], bcrypt.gensalt(rounds=cost)).decode()}\n"
        for user, pw in ((USER, PASSWORD), (LONG_USER, LONG_PASSWORD), ("bob", "bob-pw"))
    ]
    path.write_text("".join(line.replace("$2b$", "$2y$", 1) for line in lines))  # htpasswd -B
    return path


@pytest.fixture(scope="module", params=[5, 10], ids=["cost5", "cost10"])
def gateway(
    request: pytest.FixtureRequest, daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, int]]:
    cost: int = request.param
    path = htpasswd_file(tmp_path_factory.mktemp("burst"), cost)
    # The per-user limit is raised so that the burst's 200 guesses at a few names are all
    # checked; the per-source limit stays the default (20): the burst keeps under it.
    with running(
        Gateway(daemon.host, "--htpasswd", str(path), "--auth-failures-per-user", "100000")
    ) as gw:
        yield gw, cost


def connect(gw: Gateway, source: str = "127.0.0.1") -> BufferedConn:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((source, 0))
    sock.settimeout(IO_TIMEOUT)
    sock.connect(("127.0.0.1", gw.port))
    return BufferedConn(sock, IO_TIMEOUT)


def exchange(conn: BufferedConn, authorization: bytes) -> tuple[int, bytes, float]:
    """GET /_ping on a keep-alive connection: status, body, seconds until the whole answer."""
    started = time.perf_counter()
    conn.send(b"GET /_ping HTTP/1.1\r\nHost: dockgate\r\nAuthorization: %b\r\n\r\n" % authorization)
    status, headers = parse_head(conn.read_until(b"\r\n\r\n")[:-4])
    length = int(headers.get("content-length", "0"))
    while len(conn.buf) < length:
        assert conn._fill(), "EOF inside a body"
    body = bytes(conn.buf[:length])
    del conn.buf[:length]
    return status, body, time.perf_counter() - started


def read_answer(conn: BufferedConn) -> tuple[int, Any]:
    """A JSON answer, with a Content-Length or chunked (dockerd chunks the larger ones)."""
    status, headers = parse_head(conn.read_until(b"\r\n\r\n")[:-4])
    if headers.get("transfer-encoding") == "chunked":
        return status, json.loads(dechunk(conn.read_until(b"\r\n0\r\n\r\n")))
    length = int(headers["content-length"])
    while len(conn.buf) < length:
        assert conn._fill(), "EOF inside a body"
    body = bytes(conn.buf[:length])
    del conn.buf[:length]
    return status, json.loads(body)


def message(body: bytes) -> str:
    value = json.loads(body)
    assert isinstance(value, dict)
    return str(value["message"])


def test_a_burst_of_wrong_passwords_does_not_stall_other_clients(
    gateway: tuple[Gateway, int],
) -> None:
    """200 wrong passwords, 20 from each of 10 addresses, each address on its own keep-alive
    connection; meanwhile a logged-in client pings on its own connection. Every guess gets its
    401 (none skipped, none throttled: the burst is under the limits), and the pings stay fast:
    p99 under PING_P99_BOUND_S. Before: the hashes ran on the event loop, pings waited for
    them (780 ms measured by the review)."""
    gw, cost = gateway
    answers: list[int] = []
    lock = threading.Lock()
    go = threading.Event()

    def guess(source: str) -> None:
        with connect(gw, source) as conn:
            go.wait(IO_TIMEOUT)
            for i in range(PER_SOURCE):
                user = USER if i % 2 else f"nobody{i}"  # known and unknown users alike
                status, body, _ = exchange(conn, basic(user, f"guess-{source}-{i}"))
                assert message(body) == "dockgate: invalid credentials"
                with lock:
                    answers.append(status)

    with connect(gw) as pinger:
        status, _, _ = exchange(pinger, basic(USER, PASSWORD))
        assert status == 200  # logged in: later pings take the remembered fast path
        baseline = [exchange(pinger, basic(USER, PASSWORD))[2] for _ in range(20)]
        threads = [threading.Thread(target=guess, args=(s,), daemon=True) for s in SOURCES]
        for t in threads:
            t.start()
        go.set()
        during: list[float] = []
        while any(t.is_alive() for t in threads):
            status, body, seconds = exchange(pinger, basic(USER, PASSWORD))
            assert (status, body) == (200, b"OK")
            during.append(seconds)
            time.sleep(0.005)
        for t in threads:
            t.join(IO_TIMEOUT)
    assert answers == [401] * len(SOURCES) * PER_SOURCE
    assert len(during) >= 2, "no ping during the burst"
    p99 = statistics.quantiles(during, n=100, method="inclusive")[98]
    summary = (
        f"cost {cost}: /_ping p50 {statistics.median(baseline) * 1e3:.1f} ms before the burst, "
        f"p50 {statistics.median(during) * 1e3:.1f} / p99 {p99 * 1e3:.1f} / max "
        f"{max(during) * 1e3:.1f} ms during it ({len(during)} pings)"
    )
    print(summary)
    assert p99 < PING_P99_BOUND_S, summary
    assert len(during) >= 20, f"the burst was too short to measure: {summary}"


def test_passwords_over_72_bytes_get_401_or_their_first_72_bytes_checked(
    gateway: tuple[Gateway, int],
) -> None:
    """bcrypt reads 72 bytes: a longer wrong password, for a known or an unknown user, is a
    plain 401 in Docker's shape; the right one (longer than 72 bytes) logs in, checked by its
    first 72 bytes as Apache and Go's bcrypt do. Before: `bcrypt` 5 raised inside admission,
    the client got no answer and the gateway a traceback."""
    gw, _ = gateway
    with connect(gw) as conn:
        for user, password in (
            (USER, "x" * 73),
            (USER, PASSWORD + "y" * 100),
            ("nobody", "z" * 4000),
            (LONG_USER, "L" * 80),
        ):
            status, body, _ = exchange(conn, basic(user, password))
            assert (status, message(body)) == (401, "dockgate: invalid credentials")
        status, body, _ = exchange(conn, basic(LONG_USER, LONG_PASSWORD))
        assert (status, body) == (200, b"OK")
    assert "Traceback" not in gw.stderr_text()


def test_an_unknown_user_costs_what_a_wrong_password_costs(
    gateway: tuple[Gateway, int],
) -> None:
    """Median time of a 401 for an unknown user within 3x of a known user's wrong password
    (the same bcrypt cost, so close to 1x). Before: cost 10 for unknown users whatever the
    file's cost, 25x slower than a cost-5 entry."""
    gw, cost = gateway
    known: list[float] = []
    unknown: list[float] = []
    # From distinct addresses (not the burst's), 9 attempts each: under the limit of 20.
    for round_, source in enumerate(TIMING_SOURCES):
        with connect(gw, source) as conn:
            exchange(conn, basic("bob", "warm-up"))  # the connection's first request
            for i in range(4):
                for user, times in (("bob", known), (f"ghost{round_}-{i}", unknown)):
                    status, _, seconds = exchange(conn, basic(user, f"wrong-{round_}-{i}"))
                    assert status == 401
                    times.append(seconds)
    ratio = statistics.median(unknown) / statistics.median(known)
    print(
        f"cost {cost}: 401 median known {statistics.median(known) * 1e3:.2f} ms, unknown "
        f"{statistics.median(unknown) * 1e3:.2f} ms, ratio {ratio:.2f}"
    )
    assert 1 / 3 < ratio < 3


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic " + b"\xff" * 100,
        b"Basic " + base64.b64encode(b"\xff\xfe:\xff"),
        b"Basic " + base64.b64encode(b"alice:" + b"x" * 40_000),
        b"Bearer " + b"\xff" * 40_000,
        b"Basic",
    ],
    ids=["not-base64", "not-utf8", "40k-password", "40k-token", "empty"],
)
def test_odd_credentials_are_a_plain_401(
    gateway: tuple[Gateway, int], authorization: bytes
) -> None:
    """Whatever the header holds (within the head size limit), the answer is the same 401."""
    gw, _ = gateway
    with connect(gw, "127.0.2.1") as conn:
        status, body, _ = exchange(conn, authorization)
    assert (status, message(body)) in {
        (401, "dockgate: invalid credentials"),
        (401, "dockgate: authentication required"),
    }
    assert "Traceback" not in gw.stderr_text()


def test_requests_sent_during_the_check_wait_in_order(
    gateway: tuple[Gateway, int], daemon: PrivateDaemon, busybox_image: str
) -> None:
    """A create with its body and an inspect, pipelined in one write with a password the
    gateway has not seen yet: both wait for the check, then reach the daemon in order (the
    container exists, and the second answer describes it)."""
    gw, cost = gateway
    name = f"dg-auth-pipelined-{cost}"
    daemon.docker("rm", "-f", name, check=False)
    body = json.dumps({"Image": busybox_image, "Cmd": ["true"]}).encode()
    authorization = basic("bob", "bob-pw")
    with connect(gw, "127.0.2.2") as conn:
        conn.send(
            b"POST /v1.41/containers/create?name=%b HTTP/1.1\r\nHost: dockgate\r\n"
            b"Authorization: %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            b"GET /v1.41/containers/%b/json HTTP/1.1\r\nHost: dockgate\r\nAuthorization: %b\r\n\r\n"
            % (name.encode(), authorization, len(body), body, name.encode(), authorization)
        )
        try:
            answers = [read_answer(conn) for _ in range(2)]
            assert answers[0][0] == 201
            assert answers[1][0] == 200
            assert answers[1][1]["Id"] == answers[0][1]["Id"]
            assert answers[1][1]["Name"] == "/" + name
        finally:
            daemon.docker("rm", "-f", name, check=False)


def test_a_client_that_leaves_during_its_check_changes_nothing_for_others(
    gateway: tuple[Gateway, int],
) -> None:
    """Clients that close their connection while their password is being hashed: the gateway
    goes on (no traceback), and a client from the same address logs in afterwards."""
    gw, _ = gateway
    for i in range(5):
        with connect(gw, "127.0.2.3") as conn:
            conn.send(
                b"GET /_ping HTTP/1.1\r\nHost: dockgate\r\nAuthorization: %b\r\n\r\n"
                % basic(USER if i % 2 else "nobody", f"gone-{i}")
            )
    with connect(gw, "127.0.2.3") as conn:
        status, body, _ = exchange(conn, basic(USER, PASSWORD))
    assert (status, body) == (200, b"OK")
    assert "Traceback" not in gw.stderr_text()
