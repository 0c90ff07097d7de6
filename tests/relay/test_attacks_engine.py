"""The "attack your own change" review of issue 14's engine (the pure plan, the connection's
state machine, the hot-path caches), as an outsider or a caller with limited rights.

Both findings (also in the engine before issue 14) were pinned as strict xfails, then fixed:
the tests now pass. Each drives a real ``dockgate serve`` subprocess in front of the fake daemon.
"""

from __future__ import annotations

import pathlib
import socket
import time
from collections.abc import Iterator

import pytest

from support.fake_upstream import FakeUpstream
from support.gateway import Gateway

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


# ---------------------------------------------------------------------------------------------
# A client that never reads its answers keeps its connection past every timeout
# ---------------------------------------------------------------------------------------------
def test_client_that_never_reads_is_closed_by_the_idle_timeout(fake: FakeUpstream) -> None:
    """Without credentials: pipeline refused requests (400, answered by the gateway itself)
    until the gateway stops reading (Pause.CLIENT_FULL), and never read. The idle timeout
    (2 s here) is meant to bound that wait (`_take_next_request`); it called `_close`, whose
    `transport.close()` flushes what is buffered first, and the client never takes it: the
    socket, its file descriptor and the buffered answers stay, 15 s later and for good. One
    attacker opening such connections exhausts the gateway's descriptors (there is no
    connection limit) while holding nothing but unread sockets of its own. The same with
    the old engine (463dd49): the connection was never aborted there either. Expected: a
    connection whose timeout has passed is aborted (`transport.abort()`) when what it still
    has to write does not drain. Fixed: a timeout with the client's buffer full aborts."""
    g = Gateway(fake.url, "--idle-timeout", "2", "--header-timeout", "1").start()
    try:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", g.port))
        c.setblocking(False)
        client_port = c.getsockname()[1]
        refused = b"GET /containers//json HTTP/1.1\r\nHost: x\r\n\r\n" * 200
        started = time.monotonic()
        blocked = 0
        # Send until the gateway has stopped reading (a second of sends that do not go), well
        # within the idle timeout: the connection is then held only by what it cannot write.
        while blocked < 20 and time.monotonic() - started < 10:
            try:
                c.send(refused)
                blocked = 0
            except BlockingIOError:
                blocked += 1
                time.sleep(0.05)
            except ConnectionError:
                break  # let go already (the idle timeout passed while sending)
        deadline = time.monotonic() + 12  # idle (2 s) and head (1 s) timeouts, many times over
        while time.monotonic() < deadline and _held(g.port, client_port):
            time.sleep(0.5)
        held = _held(g.port, client_port)
        c.close()
        assert not held, (
            f"the gateway still holds the connection {time.monotonic() - started:.0f} s on"
        )
    finally:
        g.stop()


def _held(gateway_port: int, client_port: int) -> bool:
    """Whether the gateway's end of the connection from `client_port` is still open (its
    socket in /proc/net/tcp, ESTABLISHED or closing with data unsent)."""
    local = f":{gateway_port:04X}"
    remote = f":{client_port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(local) and fields[2].endswith(remote):
                return fields[3] != "06"  # anything but TIME_WAIT: the socket is still held
    return False


# ---------------------------------------------------------------------------------------------
# The browser guard's Host table keeps Host values of any size
# ---------------------------------------------------------------------------------------------
def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0]) / 1024


def _refused_host(port: int, host: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_distinct_large_host_values_do_not_grow_the_gateway(fake: FakeUpstream) -> None:
    """The issue's hot-path tables keep only ordinary keys (heads of at most 1 KiB, verdicts
    of targets, hosts and origins of at most 512 bytes: THREAT_MODEL's bounded tables), but the
    browser guard's table of Host values seen (policy/browser.py, `_host_cache`, 1,024
    entries) keeps any Host the head limit lets through. Without credentials, 1,000 requests
    with distinct 60 KB Host values (each refused 403, DNS-rebinding protection) grew the
    gateway's RSS by about 59 MiB (54 -> 112 MiB; the same Host 1,000 times: no growth); per
    worker with --workers. Expected: long Host values are judged and not remembered, like the
    verdict cache's VERDICT_CACHE_MAX_TARGET."""
    read_only = pathlib.Path(__file__).parents[1] / "policies" / "containers-read-only.yaml"
    g = Gateway(fake.url, policy=read_only).start()
    try:
        assert _refused_host(g.port, b"evil.example").startswith(b"HTTP/1.1 403 ")
        before = _rss_mib(g.pid)
        for i in range(1000):
            answer = _refused_host(g.port, b"%06d" % i + b"a" * 60_000)
            assert answer.startswith(b"HTTP/1.1 403 "), answer[:200]
        grown = _rss_mib(g.pid) - before
        assert grown < 16, f"RSS grew by {grown:.0f} MiB"
    finally:
        g.stop()
