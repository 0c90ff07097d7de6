"""Issue 14, "attack your own change": the shared event streams (relay/eventfeed.py) attacked by
a caller with limited rights, against the real daemon (and in-process where only that reaches
the state). The attacks that held are plain tests, and so are the three findings, fixed since:
- test_a_cut_member_does_not_strand_a_late_joiner: a member cut (or leaving) inside the feed's
  delivery, while a late joiner sits in a local list, ends the feed: the joiner is added to a
  dead feed and its 200 stream never sends another byte (in-process: timing only).
- test_a_slow_reader_is_not_cut_by_another_callers_burst: a caller making containers with big
  labels gets another caller's slow (reading) event stream cut; its own stream would only lag.
- test_a_joiner_head_is_its_own: a joiner's head is the first member's, Date included: it tells
  that someone else watches the same events, and since when.
"""

from __future__ import annotations

import email.utils
import json
import pathlib
import signal
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from dockgate.relay.eventfeed import SLOW_MEMBER_BYTES
from support.attack import (
    ATTACK_MARKS,
    TENANT_USERS,
    direct,
    running_tenants,
    tenants_policy,
)
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.inprocess import ClockLoop, open_connection, relayed, request
from support.rawhttp import BufferedConn, parse_head
from support.remote import basic_header, write_htpasswd
from support.streams import wait_for

pytestmark = ATTACK_MARKS

VOLUME_EVENTS = "/v1.41/events?filters=%7B%22type%22%3A%5B%22volume%22%5D%7D"
CONTAINER_EVENTS = "/v1.41/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D"

USERS = {"root": "root-pw", "viewer": "viewer-pw"}
POLICY = """\
policies:
  everything:
    rules:
      - allow: {sections: ["*"]}
  viewer:
    redact: {env: true, mounts: true, labels: true}
    rules:
      - allow: {sections: [events, ping, version, volumes, containers]}
bindings:
  - {policy: everything, users: [root]}
  - {policy: viewer, users: [viewer]}
"""


@pytest.fixture(scope="module")
def shared(daemon: PrivateDaemon) -> Iterator[Gateway]:
    with running(Gateway(daemon.host), "the sharing gateway") as gw:
        yield gw


@pytest.fixture(scope="module")
def unshared(daemon: PrivateDaemon) -> Iterator[Gateway]:
    with running(Gateway(daemon.host, "--no-shared-events"), "the one-to-one gateway") as gw:
        yield gw


@pytest.fixture(scope="module")
def callers(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A sharing gateway with two callers: root (everything) and viewer (labels redacted)."""
    base = tmp_path_factory.mktemp("eventfeed-callers")
    write_htpasswd(base / "htpasswd", USERS)
    (base / "policy.yaml").write_text(POLICY)
    gateway = Gateway(
        daemon.host,
        *("--htpasswd", str(base / "htpasswd"), "--auth-failures", "0"),
        policy=str(base / "policy.yaml"),
    )
    with running(gateway, "the gateway of two callers") as gw:
        yield gw


def listeners(daemon: PrivateDaemon) -> int:
    return int(daemon.docker("info", "--format", "{{.NEventsListener}}").stdout.decode().strip())


def open_stream(port: int, target: str, extra: str = "", timeout: float = 15) -> BufferedConn:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = BufferedConn(sock, timeout)
    conn.send(f"GET {target} HTTP/1.1\r\nHost: docker\r\n{extra}\r\n".encode())
    return conn


def read_head(conn: BufferedConn) -> tuple[int, dict[str, str]]:
    return parse_head(conn.read_until(b"\r\n\r\n")[:-4])


def next_event(
    conn: BufferedConn, needle: str, timeout: float = 15, seen: list[bytes] | None = None
) -> dict[str, object]:
    """The first event (decoded from the chunked stream) that mentions `needle`; the events
    read on the way are added to `seen`."""
    deadline = time.monotonic() + timeout
    body = b""
    while time.monotonic() < deadline:
        size_line = conn.read_until(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        assert size, "the stream ended"
        while len(conn.buf) < size + 2:
            assert conn._fill(), "EOF inside a chunk"
        body += bytes(conn.buf[:size])
        del conn.buf[: size + 2]
        *lines, body = body.split(b"\n")
        for line in lines:
            if seen is not None:
                seen.append(line)
            if needle.encode() in line:
                return json.loads(line)  # type: ignore[no-any-return]
    raise AssertionError(f"no event with {needle!r}")


def unique(prefix: str) -> str:
    return f"dgt-{prefix}-{uuid.uuid4().hex[:10]}"


def volume(daemon: PrivateDaemon, labels: dict[str, str] | None = None) -> str:
    name = unique("vol")
    status, _ = direct(daemon, "POST", "/v1.41/volumes/create", {"Name": name, "Labels": labels})
    assert status == 201
    return name


def remove_volume(daemon: PrivateDaemon, name: str) -> None:
    direct(daemon, "DELETE", f"/v1.41/volumes/{name}")


def subscribed(daemon: PrivateDaemon, conns: list[BufferedConn], made: list[str]) -> None:
    """Make volumes until every stream has seen one (then it receives events)."""
    for conn in conns:
        name = volume(daemon)
        made.append(name)
        next_event(conn, name)


# ----- information between callers ------------------------------------------------------------


def test_a_joiner_head_is_its_own(shared: Gateway, daemon: PrivateDaemon) -> None:
    first = open_stream(shared.port, VOLUME_EVENTS)
    with first:
        read_head(first)
        time.sleep(3.2)
        with open_stream(shared.port, VOLUME_EVENTS) as late:
            _, headers = read_head(late)
            date = email.utils.parsedate_to_datetime(headers["date"]).timestamp()
            assert time.time() - date < 2.0, f"the joiner's Date is {time.time() - date:.1f} s old"


def test_a_joiner_head_is_fresh_without_sharing(unshared: Gateway) -> None:
    with open_stream(unshared.port, VOLUME_EVENTS) as first:
        read_head(first)
        time.sleep(2.2)
        with open_stream(unshared.port, VOLUME_EVENTS) as late:
            _, headers = read_head(late)
            date = email.utils.parsedate_to_datetime(headers["date"]).timestamp()
            assert time.time() - date < 2.0


@pytest.mark.parametrize("first_is_root", [True, False])
def test_redacted_caller_on_a_shared_feed_sees_no_labels(
    callers: Gateway, daemon: PrivateDaemon, busybox_image: str, first_is_root: bool
) -> None:
    """root and viewer ask the same container events (same target: one feed, whichever opens
    it): the viewer's policy redacts labels, root's does not; each sees what its own stream
    shows."""
    root = f"Authorization: {basic_header('root', USERS['root'])}\r\n"
    viewer = f"Authorization: {basic_header('viewer', USERS['viewer'])}\r\n"
    order = [root, viewer] if first_is_root else [viewer, root]
    made: list[str] = []
    conns = [open_stream(callers.port, CONTAINER_EVENTS, who) for who in order]
    secret = f"secret-{uuid.uuid4().hex[:8]}"
    try:
        for conn in conns:
            assert read_head(conn)[0] == 200
        for conn in conns:  # each is in once it saw a container made after it
            made.append(container(daemon, busybox_image, {}))
            next_event(conn, made[-1])
        made.append(container(daemon, busybox_image, {"dg.secret": secret}))
        seen = {who: next_event(conn, made[-1]) for who, conn in zip(order, conns, strict=True)}
    finally:
        for conn in conns:
            conn.close()
        for cid in made:
            direct(daemon, "DELETE", f"/v1.41/containers/{cid}?force=1")
    assert secret in json.dumps(seen[root])
    assert secret not in json.dumps(seen[viewer])


def container(daemon: PrivateDaemon, image: str, labels: dict[str, str]) -> str:
    status, created = direct(
        daemon, "POST", "/v1.41/containers/create", {"Image": image, "Labels": labels}
    )
    assert status == 201, created
    return str(created["Id"])


# ----- what the first member sends ---------------------------------------------------------------

FIRST_MEMBER_HEADERS = [
    "Connection: close\r\n",
    "Connection: Upgrade, close\r\nUpgrade: websocket\r\n",
    "Connection: Upgrade\r\nUpgrade: tcp\r\n",
    "Expect: 100-continue\r\n",
    "Content-Length: 0\r\n",
    "X-Forwarded-For: 10.9.9.9\r\nX-Forwarded-Proto: https\r\nForwarded: for=10.9.9.9\r\n",
    "Origin: http://evil.example\r\n",
    "Accept-Encoding: gzip\r\nTE: trailers\r\n",
]


def joiner_head(gateway: Gateway, first_headers: str, target: str) -> dict[str, str]:
    """The head a plain second caller gets while a first one (with `first_headers`) holds the
    same stream open."""
    with open_stream(gateway.port, target, first_headers) as first:
        status, _ = read_head(first)
        with open_stream(gateway.port, target) as second:
            status2, headers = read_head(second)
    assert status2 == 200, (status, status2)
    return headers


@pytest.mark.parametrize("extra", FIRST_MEMBER_HEADERS)
def test_first_member_headers_do_not_change_a_joiner_head(
    shared: Gateway, unshared: Gateway, extra: str
) -> None:
    target = f"{VOLUME_EVENTS}&x={uuid.uuid4().hex[:6]}"  # a feed of this test's own
    got = joiner_head(shared, extra, target)
    alone = joiner_head(unshared, extra, target)
    for headers in (got, alone):
        headers.pop("date", None)
    assert got == alone


# ----- feeds that end -------------------------------------------------------------------------


def test_members_leaving_at_every_moment_leave_no_daemon_subscriber(
    shared: Gateway, daemon: PrivateDaemon
) -> None:
    """Callers that leave right after asking (before the head), right after the head, and a
    half-close after the request: the daemon's subscriber count goes back."""
    wait_for(lambda: listeners(daemon) == 0, timeout=20, what="no stream from earlier tests")
    target = f"{VOLUME_EVENTS}&x={uuid.uuid4().hex[:6]}"
    for _ in range(10):
        conn = open_stream(shared.port, target)
        conn.close()
    for _ in range(5):
        with open_stream(shared.port, target) as conn:
            read_head(conn)
    for _ in range(5):
        conn = open_stream(shared.port, target)
        conn.sock.shutdown(socket.SHUT_WR)
        conn.wait_closed(5)
        conn.close()
    # A member stays while others come and go.
    with open_stream(shared.port, target) as keep:
        read_head(keep)
        for _ in range(5):
            open_stream(shared.port, target).close()
        assert listeners(daemon) == 1
    wait_for(lambda: listeners(daemon) == 0, timeout=20, what="the subscriptions to end")


def test_an_error_answer_reaches_those_who_asked_and_no_one_is_stuck(shared: Gateway) -> None:
    target = "/v1.41/events?filters=%7Bbad"
    conns = [open_stream(shared.port, target) for _ in range(3)]
    for conn in conns:
        status, _ = read_head(conn)
        assert status in (400, 500)
        conn.close()
    with open_stream(shared.port, target) as later:
        assert read_head(later)[0] in (400, 500)
    with open_stream(shared.port, VOLUME_EVENTS) as fine:
        assert read_head(fine)[0] == 200


# ----- ownership -----------------------------------------------------------------------------


def test_tenants_in_ownership_mode_never_share_a_feed(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """alice and bob (ownership mode) both ask `GET /events`: their narrowed targets differ, so
    each has a daemon subscriber of its own, and bob never sees alice's container."""
    wait_for(lambda: listeners(daemon) == 0, timeout=20, what="no stream from earlier tests")
    policy = tenants_policy("ping, version, events, containers")
    with running_tenants(daemon, tmp_path, policy, TENANT_USERS) as apis:
        port = apis["alice"].gateway.port
        streams = {
            user: open_stream(port, "/v1.41/events", f"Authorization: {api.authorization}\r\n")
            for user, api in apis.items()
        }
        try:
            for conn in streams.values():
                assert read_head(conn)[0] == 200
            assert listeners(daemon) == 2
            mine = apis["alice"].create({"Image": busybox_image})
            theirs = apis["bob"].create({"Image": busybox_image})
            bob_saw: list[bytes] = []
            next_event(streams["bob"], theirs, seen=bob_saw)
            next_event(streams["alice"], mine)
            assert bob_saw and not any(mine.encode() in line for line in bob_saw)
        finally:
            for conn in streams.values():
                conn.close()
            for cid in (locals().get("mine"), locals().get("theirs")):
                if cid:
                    direct(daemon, "DELETE", f"/v1.41/containers/{cid}?force=1")


# ----- members that do not read ------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stalled_stream(port: int, target: str) -> socket.socket:
    """A client that asks for `target` and never reads (a small receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
    return sock


def stalled_members_load(
    daemon: PrivateDaemon, image: str, gateway: Gateway, members: int, containers: int
) -> tuple[int, int, float, int]:
    """`members` clients that never read and one that does, on container events; `containers`
    made with 128 KiB of labels each (an event as big). The gateway's RSS growth (KiB), how
    many stalled clients were cut, the reader's slowest wait for an event, and events read."""
    before = rss_kib(gateway.pid)
    stalled = [stalled_stream(gateway.port, CONTAINER_EVENTS) for _ in range(members)]
    made: list[str] = []
    try:
        with open_stream(gateway.port, CONTAINER_EVENTS) as reader:
            assert read_head(reader)[0] == 200
            made.append(container(daemon, image, {}))
            next_event(reader, made[-1])
            labels = {f"dg.big{i}": "x" * 1024 for i in range(128)}
            slowest = 0.0
            for _ in range(containers):
                made.append(container(daemon, image, labels))
                started = time.monotonic()
                next_event(reader, made[-1], timeout=20)
                slowest = max(slowest, time.monotonic() - started)
            peak = rss_kib(gateway.pid)
        cut = 0
        for sock in stalled:
            sock.setblocking(False)
            try:
                while sock.recv(1 << 20):
                    pass
                cut += 1  # EOF
            except BlockingIOError:
                pass
            except ConnectionResetError:
                cut += 1
        return peak - before, cut, slowest, len(made)
    finally:
        for sock in stalled:
            sock.close()
        for cid in made:
            direct(daemon, "DELETE", f"/v1.41/containers/{cid}?force=1")


def test_stalled_members_cost_no_more_than_their_own_streams(
    daemon: PrivateDaemon, busybox_image: str
) -> None:
    """100 callers that never read and one that does, while 5 MiB of events go by: the reader
    is never held back, and the gateway grows no more than with a stream each."""
    grown = {}
    for sharing in (True, False):
        args = () if sharing else ("--no-shared-events",)
        with running(Gateway(daemon.host, *args)) as gw:
            grown[sharing], cut, slowest, _ = stalled_members_load(
                daemon, busybox_image, gw, 100, 40
            )
            assert slowest < 5.0
            if sharing:
                assert cut > 0, "stalled members are cut"
    assert grown[True] <= grown[False] + 8 * 1024, grown


# ----- replays -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["since", "%73ince", "%73%69%6e%63%65", "x=1&since"])
def test_replays_spelled_otherwise_are_replayed_for_each_caller(
    shared: Gateway, daemon: PrivateDaemon, key: str
) -> None:
    """Two callers ask a replay from a moment before an event, the key spelled as the daemon
    reads it: each gets the past event (no one shares a feed that started after it)."""
    made = volume(daemon)
    try:
        since = int(time.time()) - 1
        time.sleep(1.1)  # the second caller comes later than the first's feed started
        target = f"{VOLUME_EVENTS}&{key}={since}"
        with open_stream(shared.port, target) as first:
            assert read_head(first)[0] == 200
            next_event(first, made)
            time.sleep(1.1)
            with open_stream(shared.port, target) as second:
                assert read_head(second)[0] == 200
                next_event(second, made)
    finally:
        remove_volume(daemon, made)


# ----- in-process: states only timing reaches ----------------------------------------------------

EVENTS_HEAD = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def event(n: int, pad: int = 0) -> bytes:
    return b'{"Type":"volume","Action":"create","Actor":{"ID":"v%d"},"p":"%b"}\n' % (
        n,
        b"x" * pad,
    )


@pytest.fixture
def loop() -> Iterator[ClockLoop]:
    loop = ClockLoop()
    yield loop
    loop.shut()


def test_a_cut_member_does_not_strand_a_late_joiner(loop: ClockLoop) -> None:
    """Attacker A holds a stream open and stops reading; victim B joins while an event is half
    sent. The read that ends that event pushes A past the cap: A is cut. B must go on getting
    the events (or at least see its stream end), as its own stream would."""
    a = open_connection(loop)
    b = open_connection(loop, context=a.context)
    feeds = a.context.event_feeds
    assert feeds is not None
    feeds.unread_budget = SLOW_MEMBER_BYTES  # A alone spends it
    a.send(request("GET", "/events"))
    daemon = a.daemon()
    daemon.send(EVENTS_HEAD)
    a.client.take()
    a.fill()  # A's socket is full from now on
    big = event(0, pad=SLOW_MEMBER_BYTES)
    half = SLOW_MEMBER_BYTES - 300
    daemon.send(b"%x\r\n%b" % (len(big), big[:half]))  # A: unread just under the cap
    assert not a.client.closing
    b.send(request("GET", "/events"))
    loop.settle()
    assert b.client.take() == relayed(EVENTS_HEAD)
    daemon.send(big[half:] + b"\r\n" + chunk(event(1)))  # A cut on this read; B starts at 1
    assert a.client.aborted
    assert b.client.take() == chunk(event(1))
    daemon.send(chunk(event(2)))
    # (Found, fixed: the cut left no member in the feed's sets, B being held in a local list,
    # so the feed ended and closed the daemon connection; B was then added to the dead feed:
    # a 200 stream that never sent another byte, and never ended.)
    assert not daemon.closed, "B is still a member: the daemon stream must stay"
    assert b.client.take() == chunk(event(2))


# ----- other requests beside a running feed -------------------------------------------------------


def test_http10_head_and_pipelined_requests_beside_a_feed(
    shared: Gateway, daemon: PrivateDaemon
) -> None:
    """With a feed running: an HTTP/1.0 caller gets its own until-close stream (no chunks), a
    HEAD its own head, and a request pipelined behind a shared stream never reaches anyone."""
    with open_stream(shared.port, VOLUME_EVENTS) as feed:
        assert read_head(feed)[0] == 200
        sock = socket.create_connection(("127.0.0.1", shared.port), timeout=10)
        with BufferedConn(sock, 10) as old:
            old.send(f"GET {VOLUME_EVENTS} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            status, headers = read_head(old)
            assert status == 200 and "transfer-encoding" not in headers
            name = volume(daemon)
            try:
                line = old.read_until(b"\n")
                assert line.startswith(b"{") and name.encode() in line, line[:100]
            finally:
                remove_volume(daemon, name)
        sock = socket.create_connection(("127.0.0.1", shared.port), timeout=10)
        with BufferedConn(sock, 10) as heads:
            heads.send(f"HEAD {VOLUME_EVENTS} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
            assert read_head(heads)[0] == 404  # the daemon has no HEAD /events
        piped = open_stream(
            shared.port, VOLUME_EVENTS, "\r\nGET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\n"
        )
        with piped:
            assert read_head(piped)[0] == 200
            name = volume(daemon)
            try:
                next_event(piped, name)
                next_event(feed, name)
            finally:
                remove_volume(daemon, name)
            assert b"OK" not in bytes(piped.buf)


@pytest.mark.parametrize("sharing", [True, False])
def test_gateway_stops_promptly_with_shared_streams(daemon: PrivateDaemon, sharing: bool) -> None:
    """Streams held open at SIGTERM end by --shutdown-timeout, shared or not, and the daemon
    subscription with them."""
    args = ("--shutdown-timeout", "2", *(() if sharing else ("--no-shared-events",)))
    gw = Gateway(daemon.host, *args).start()
    try:
        conns = [open_stream(gw.port, VOLUME_EVENTS) for _ in range(5)]
        for conn in conns:
            read_head(conn)
        started = time.monotonic()
        code = gw.stop(timeout=15)
        assert time.monotonic() - started < 6, code
        for conn in conns:
            assert conn.wait_closed(5)[0]
            conn.close()
    finally:
        gw.stop()
    wait_for(lambda: listeners(daemon) == 0, timeout=20, what="the subscription to end")


def test_a_policy_reload_applies_to_those_who_join_a_running_feed(
    daemon: PrivateDaemon, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    """root opens container events under a policy that shows viewer the labels; the policy is
    reloaded to redact them: a viewer joining root's running feed afterwards sees none."""
    write_htpasswd(tmp_path / "htpasswd", USERS)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("    redact: {env: true, mounts: true, labels: true}\n", ""))
    gateway = Gateway(
        daemon.host,
        *("--htpasswd", str(tmp_path / "htpasswd"), "--auth-failures", "0"),
        policy=str(policy),
    )
    made: list[str] = []
    secret = f"secret-{uuid.uuid4().hex[:8]}"
    with running(gateway) as gw:
        root = open_stream(
            gw.port, CONTAINER_EVENTS, f"Authorization: {basic_header('root', USERS['root'])}\r\n"
        )
        try:
            assert read_head(root)[0] == 200
            made.append(container(daemon, busybox_image, {}))
            next_event(root, made[-1])
            policy.write_text(POLICY)
            gw.signal(signal.SIGHUP)
            gw.wait_stderr(r"reload", timeout=10)
            time.sleep(0.5)
            viewer = open_stream(
                gw.port,
                CONTAINER_EVENTS,
                f"Authorization: {basic_header('viewer', USERS['viewer'])}\r\n",
            )
            with viewer:
                assert read_head(viewer)[0] == 200
                made.append(container(daemon, busybox_image, {}))
                next_event(viewer, made[-1])
                made.append(container(daemon, busybox_image, {"dg.secret": secret}))
                seen = next_event(viewer, made[-1])
                assert secret in json.dumps(next_event(root, made[-1]))
                assert listeners(daemon) == 1, "the viewer joined root's feed"
        finally:
            root.close()
            for cid in made:
                direct(daemon, "DELETE", f"/v1.41/containers/{cid}?force=1")
    assert secret not in json.dumps(seen)


def slow_reader_under_burst(
    daemon: PrivateDaemon, image: str, gateway: Gateway, containers: int
) -> tuple[int, bool]:
    """A caller that reads its container events slowly (16 KiB every 20 ms: 800 KB/s) while
    another makes `containers` containers with 256 KiB of labels each, as fast as it can: how
    many of those events the slow caller read, and whether its stream was cut."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.connect(("127.0.0.1", gateway.port))
    made: list[str] = []
    with BufferedConn(sock, 15) as slow:
        slow.send(f"GET {CONTAINER_EVENTS} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
        assert read_head(slow)[0] == 200
        try:
            made.append(container(daemon, image, {}))
            next_event(slow, made[-1])
            labels = {f"dg.big{i}": "x" * 1024 for i in range(256)}
            ids = []
            for _ in range(containers):
                made.append(container(daemon, image, labels))
                ids.append(made[-1].encode())
            got = bytearray()
            deadline = time.monotonic() + 20
            cut = False
            sock.settimeout(0.02)
            while time.monotonic() < deadline and ids[-1] not in got:
                try:
                    data = sock.recv(16384)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    cut = True
                    break
                if not data:
                    cut = True
                    break
                got += data
                time.sleep(0.02)
            return sum(1 for cid in ids if cid in got), cut
        finally:
            for cid in made:
                direct(daemon, "DELETE", f"/v1.41/containers/{cid}?force=1")


def test_a_slow_reader_is_not_cut_by_another_callers_burst(
    shared: Gateway, daemon: PrivateDaemon, busybox_image: str
) -> None:
    read, cut = slow_reader_under_burst(daemon, busybox_image, shared, 24)
    # (Found, fixed: cut after about 14 of the 24 events, at 256 KiB unread; the one-to-one
    # stream below reads all 24. The budget for all members' unread events now covers it.)
    assert (read, cut) == (24, False)


def test_a_slow_reader_keeps_its_own_stream_through_a_burst(
    unshared: Gateway, daemon: PrivateDaemon, busybox_image: str
) -> None:
    """The same slow reader with a daemon stream of its own: the daemon waits for it (its
    subscriber buffer holds 1,024 events), nothing is lost, nothing is cut."""
    assert slow_reader_under_burst(daemon, busybox_image, unshared, 24) == (24, False)


def test_many_distinct_targets_are_one_subscriber_each_and_all_go(
    shared: Gateway, daemon: PrivateDaemon
) -> None:
    """200 streams each asking something else (a query key of their own): 200 daemon
    subscribers, as without sharing, and none left once they close."""
    wait_for(lambda: listeners(daemon) == 0, timeout=20, what="no stream from earlier tests")
    conns = [open_stream(shared.port, f"{VOLUME_EVENTS}&n={n}") for n in range(200)]
    try:
        for conn in conns:
            assert read_head(conn)[0] == 200
        assert listeners(daemon) == 200
    finally:
        for conn in conns:
            conn.close()
    wait_for(lambda: listeners(daemon) == 0, timeout=20, what="the subscriptions to end")
