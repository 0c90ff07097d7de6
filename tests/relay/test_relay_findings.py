"""Findings of a review of relay/connection.py / relay/upstream.py / server.py, each pinned by a
test.

Some tests demonstrated a bug when written (fixed since: the docstring says what happens now);
the others pin a subtle behaviour that was checked and is right. They drive a real
``dockgate serve`` subprocess in front of the scriptable fake daemon, like test_http_edges.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from test_http_edges import Client, Gateway, request

from support.fake_upstream import Exchange, FakeUpstream, default_handler

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Gateway, FakeUpstream]]:
    with FakeUpstream() as f:
        g = Gateway(f.url).start()
        try:
            yield g, f
        finally:
            g.stop()


@pytest.fixture
def gwf(env: tuple[Gateway, FakeUpstream]) -> Iterator[tuple[Gateway, FakeUpstream]]:
    g, f = env
    f.reset()
    yield g, f
    errors = list(f.errors)
    f.reset()
    assert g.alive(), g.output(40)
    assert not errors, "fake upstream errors:\n" + "\n".join(errors)


def _log_lines(g: Gateway, since: int) -> list[str]:
    time.sleep(0.3)  # the access log is flushed 50 ms after a line is written
    return g.stdout()[since:]


# ---------------------------------------------------------------------------------------------
# Finding 1: a partial head pipelined behind a request gets --idle-timeout, not --header-timeout
# ---------------------------------------------------------------------------------------------
def test_pipelined_partial_head_is_bound_by_header_timeout() -> None:
    """The head timeout must bound a head from its first byte, also when that first byte arrived
    together with the previous request (pipelined). Today `_read_next_request` sets the
    deadline to now + idle_timeout, and `data_received` never moves it back to the head timeout
    because `reader.started` is already true: a slowloris client gets 120 s per connection
    instead of 10 s simply by sending the first bytes of its next head with the current one."""
    with FakeUpstream() as f:
        g = Gateway(f.url, "--header-timeout", "1", "--idle-timeout", "20").start()
        try:
            with Client(g.port, timeout=10) as c:
                c.send(request("GET", "/_ping") + b"GET /_ping HTTP/1.1\r\nHo")
                resp = c.read_response()
                assert resp.status == 200, resp.describe()
                started = time.monotonic()
                closed, extra = c.wait_closed(6.0)
                waited = time.monotonic() - started
                assert closed, (
                    f"partial pipelined head still open after {waited:.1f}s "
                    "(header timeout is 1 s; it is being held to the 20 s idle timeout)"
                )
                assert b"408" in extra[:20] or not extra, extra[:200]
        finally:
            g.stop()


# ---------------------------------------------------------------------------------------------
# Finding 2: "upstream write buffer full" pause reason survives into the next exchange
# ---------------------------------------------------------------------------------------------
def test_upstream_full_pause_does_not_outlive_the_exchange(
    gwf: tuple[Gateway, FakeUpstream],
) -> None:
    """When the last piece of a request body pushes the upstream write buffer over its
    high-water mark (64 KiB, uvloop's default: upstream transports get no explicit limits), the
    client connection is paused with `_PAUSE_UPSTREAM_FULL`. If the daemon then answers
    (keep-alive) and reads the body afterwards, as Go does for small unread bodies, the
    exchange ends with the request complete, the upstream connection goes back to the pool
    with owner=None, and its later `resume_writing` reaches nobody. `_read_next_request` only
    clears HELD|TUNNEL_SETUP, so the client connection stays paused for ever: its next request
    is never read (until the idle timeout closes it).

    The test finds the body size at which the upstream buffer crosses the mark, then sends a
    body whose final 8 KiB piece is the one that crosses it; the next request must be
    answered."""
    g, f = gwf
    release = threading.Event()

    def handler(ex: Exchange) -> None:
        if ex.path != "/upload":
            default_handler(ex)
            return
        release.wait(10)
        ex.respond(200, b'{"ok":true}\n')  # answer first; the fake reads the body afterwards

    f.handler = handler

    def attempt(first: int, last: int) -> str:
        """Upload first+last bytes in two sends; "closed" (early response: the pause hit
        mid-body), "ok" (the next request was answered) or "stuck"."""
        release.clear()
        with Client(g.port, timeout=5) as c:
            # Warm the pool so the upload gets an already-open upstream connection.
            c.send(request("GET", "/_ping"))
            assert c.read_response().status == 200
            c.send(request("POST", "/upload", f"Content-Length: {first + last}"))
            time.sleep(0.1)  # the fake reads the head alone, then blocks in the handler
            c.sock.sendall(b"a" * first)
            time.sleep(0.15)
            c.sock.sendall(b"b" * last)
            time.sleep(0.15)
            release.set()
            resp = c.read_response("POST")
            assert resp.status == 200, resp.describe()
            closed, _ = c.wait_closed(0.3)
            if closed:
                return "closed"
            c.send(request("GET", "/_ping"))
            try:
                second = c.read_response()
            except (TimeoutError, EOFError):
                return "stuck"
            assert second.status == 200, second.describe()
            return "ok"

    # Find the largest first part that does not pause the client by itself (binary search,
    # 1 KiB resolution), then finish the body with a piece that crosses the mark.
    low, high = 16 * 1024, 4 * 1024 * 1024
    assert attempt(high, 1) == "closed", "a 4 MiB body never filled the upstream buffer?"
    while high - low > 1024:
        mid = (low + high) // 2
        outcome = attempt(mid, 1)
        assert outcome != "stuck", f"stuck with first={mid}"
        if outcome == "closed":
            high = mid
        else:
            low = mid
    outcomes = {first: attempt(first, 8 * 1024) for first in (low, low - 2048, low - 4096)}
    assert "stuck" not in outcomes.values(), (
        f"outcomes by first-part size {outcomes}: after an exchange whose last body piece "
        "paused the client for a full upstream buffer, the next request on the keep-alive "
        "connection was never answered (reading from the client stayed paused)"
    )


# ---------------------------------------------------------------------------------------------
# Finding 3: pipelined refused requests are handled by recursion
# ---------------------------------------------------------------------------------------------
def test_many_pipelined_refused_requests(gwf: tuple[Gateway, FakeUpstream]) -> None:
    """A refused request (here: a non-canonical path, a 400 "on a connection that stays
    usable") is answered synchronously, and `_after_refusal -> _read_next_request -> _handle
    -> _refuse -> _after_refusal ...` recurses once per pipelined request already in the
    buffer. 600 small refused requests in one send exceed Python's recursion limit inside
    `data_received`: uvloop treats the RecursionError as a fatal protocol error and aborts
    the connection, discarding the answers already written. Each should get its 400 (or the
    gateway should stop at some bound with a clean close), iteratively."""
    g, _ = gwf
    count = 600
    one = request("GET", "/containers//json")
    with Client(g.port, timeout=5) as c:
        c.send(one * count + request("GET", "/_ping"))
        statuses = []
        try:
            for _ in range(count + 1):
                statuses.append(c.read_response().status)
        except (EOFError, TimeoutError, ConnectionResetError) as exc:
            pytest.fail(f"connection died after {len(statuses)} of {count + 1} answers: {exc!r}")
    assert statuses[:count] == [400] * count
    assert statuses[-1] == 200
    assert not any("RecursionError" in line for line in g.stderr()), g.output(20)


# ---------------------------------------------------------------------------------------------
# Finding 4: a protocol error mid-body loses the exchange's access-log line
# ---------------------------------------------------------------------------------------------
def test_bad_chunk_mid_body_still_logs_the_forwarded_request(
    gwf: tuple[Gateway, FakeUpstream],
) -> None:
    """An allowed chunked upload is forwarded as it arrives; if a later chunk is malformed,
    `_fail` answers 400 and writes an access record with method/target/operation "-" and
    clears `_head`, so the request that *did* reach the daemon (partially) never appears in
    the access log with its method, path and operation. For an audit log that is the one line
    that matters; `_fail` should log through `_log()` when an exchange is running."""
    g, f = gwf
    got_first = threading.Event()

    def handler(ex: Exchange) -> None:
        if ex.path != "/audit-upload":
            default_handler(ex)
            return
        ex.read_body_piece()
        got_first.set()
        ex.read_body()  # the gateway aborts the connection: PeerClosed, treated as "gone"

    f.handler = handler
    since = len(g.stdout())
    with Client(g.port, timeout=5) as c:
        c.send(request("POST", "/audit-upload", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n")
        assert got_first.wait(5), "first chunk never reached the daemon"
        c.send(b"zz\r\nbad\r\n")
        resp = c.read_response("POST")
        assert resp.status == 400, resp.describe()
    lines = _log_lines(g, since)
    assert any("/audit-upload" in line for line in lines), (
        "the partially forwarded request has no access-log line naming it:\n" + "\n".join(lines)
    )


# ---------------------------------------------------------------------------------------------
# Finding 5: a pooled connection the daemon closed with FIN is not retried (tcp:// upstream)
# ---------------------------------------------------------------------------------------------
class _TcpDaemon:
    """A minimal TCP 'daemon': answers each GET with 200 and keep-alive, but closes (FIN, after
    reading it completely) the connection when a request arrives on it for the second time, as
    a daemon whose idle timeout fired just as the gateway reused the connection looks like to
    the gateway over TCP."""

    def __init__(self) -> None:
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.requests = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.lsock.settimeout(0.2)
        while not self._stop:
            try:
                s, _ = self.lsock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        buf = b""
        served = 0
        s.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = s.recv(65536)
                    if not data:
                        return
                    buf += data
                _, _, buf = buf.partition(b"\r\n\r\n")
                self.requests += 1
                if served == 1:
                    s.shutdown(socket.SHUT_WR)  # FIN, nothing unread: no RST
                    time.sleep(0.5)
                    return
                served += 1
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        except OSError:
            return
        finally:
            s.close()

    def close(self) -> None:
        self._stop = True
        self.lsock.close()


def test_stale_pooled_tcp_connection_closed_with_fin_is_retried() -> None:
    """`upstream_lost` retries a body-less request on a reused connection that died before a
    byte of the answer came back. Over a unix socket a dead peer makes the write fail (EPIPE,
    `connection_lost`), and the retry happens. Over TCP the write succeeds and the gateway
    reads a FIN: `upstream_eof` -> `ResponseReader.eof()` raises -> `_upstream_failed` -> 502,
    and the retry branch is never reached. `upstream_eof` should take the same retry decision
    as `upstream_lost` (or defer to it) when no byte of the response has arrived."""
    daemon = _TcpDaemon()
    try:
        g = Gateway(f"tcp://127.0.0.1:{daemon.port}").start()
        try:
            with Client(g.port, timeout=5) as c:
                c.send(request("GET", "/_ping"))
                assert c.read_response().status == 200
                c.send(request("GET", "/_ping"))
                resp = c.read_response()
                assert resp.status == 200, (
                    f"reused connection closed by the daemon: {resp.describe()} "
                    "(expected a transparent retry on a fresh connection)"
                )
        finally:
            g.stop()
    finally:
        daemon.close()


# ---------------------------------------------------------------------------------------------
# Verified-correct behaviours worth pinning
# ---------------------------------------------------------------------------------------------
def test_pipelined_bytes_after_attach_reach_daemon_only_as_tunnel_data(
    gwf: tuple[Gateway, FakeUpstream],
) -> None:
    """Passing; pins why `_PAUSE_TUNNEL_SETUP` and the reader's stop-at-end-of-request matter.
    moby's HijackConnection drops the bufio.Reader that Go's server filled, so any pipelined
    byte forwarded before the hijack would be lost or, worse, parsed as a request by Go. The
    gateway must hold everything after an attach request until the daemon's answer, then hand
    it over as raw stream data, exactly once and in order."""
    g, f = gwf
    seen: list[bytes] = []
    before_reqs: list[bytes] = []

    def handler(ex: Exchange) -> None:
        if not ex.path.endswith("/attach"):
            default_handler(ex)
            return
        # Nothing past the attach request may have arrived before the answer.
        time.sleep(0.3)
        before_reqs.append(bytes(ex.conn.buf))
        ex.send(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
            b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        )
        ex.hijack()
        data = b""
        while len(data) < len(payload):
            piece = ex.conn.read_some(timeout=5)
            if not piece:
                break
            data += piece
        seen.append(data)
        ex.conn.send(b"bye")

    f.handler = handler
    payload = request("DELETE", "/containers/x") + b"raw stdin"
    with Client(g.port, timeout=5) as c:
        c.send(
            request(
                "POST",
                "/containers/x/attach?stream=1&stdin=1",
                "Upgrade: tcp",
                "Connection: Upgrade",
            )
            + payload
        )
        resp = c.read_head()
        assert resp.status == 101, resp.describe()
        assert c.read_exact(3) == b"bye"
    assert before_reqs == [b""], "pipelined bytes reached the daemon before it hijacked"
    assert seen == [payload]
    assert not f.requests_for("/containers/x?") and len(f.requests_for("/containers/x")) == 1


def test_refused_upload_body_never_reaches_daemon(gwf: tuple[Gateway, FakeUpstream]) -> None:
    """Passing; pins that a refused request (here a non-canonical path) with a body is answered
    and lingered on, and neither its body nor a request pipelined behind it is forwarded."""
    g, f = gwf
    before = f.total_bytes_in()
    with Client(g.port, timeout=5) as c:
        c.send(request("POST", "/containers//create", body=b'{"Image":"x"}') + request("GET", "/x"))
        resp = c.read_response("POST")
        assert resp.status == 400, resp.describe()
        assert resp.header("connection") == "close"
        closed, extra = c.wait_closed(4.0)
        assert closed and extra == b"", extra[:200]
    time.sleep(0.3)
    assert f.total_bytes_in() == before


def test_head_refusal_has_no_body(gwf: tuple[Gateway, FakeUpstream]) -> None:
    """Passing; a refused HEAD gets a head only, and keep-alive goes on in step."""
    g, _ = gwf
    with Client(g.port, timeout=5) as c:
        c.send(request("HEAD", "/containers//json") + request("GET", "/_ping"))
        first = c.read_response("HEAD")
        assert first.status == 400 and first.body == b""
        second = c.read_response()
        assert second.status == 200 and second.body == b"OK"
