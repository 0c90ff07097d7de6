"""Prometheus metrics on the admin listener (`GET /metrics`), against the real daemon: requests
by operation, decision, policy and status as the clients made them; open connections; reloads;
and, with two workers, every scrape adding up both, whichever worker answers it.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dockgate.observe.metrics import RequestCounts, render
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.metrics import http_exchange, scrape
from support.procs import children
from support.remote import basic_header, remote_docker, write_htpasswd

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(180)]


PASSWORD = "metrics-test-password"


POLICY = """\
bindings:
  - {policy: pinger, users: [alice]}
policies:
  pinger:
    rules:
      - allow: {sections: [ping, version]}
"""


def _get(port: int, path: str, authorization: str | None = None) -> int:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    raw = http_exchange(port, request.encode())
    return int(raw.split(b" ")[1])


def requests_of(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], **labels: str
) -> float:
    """The sum of dockgate_requests_total over the series matching `labels`."""
    return sum(
        value
        for (name, series), value in samples.items()
        if name == "dockgate_requests_total" and set(labels.items()) <= set(series)
    )


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    htpasswd, policy = tmp_path / "htpasswd", tmp_path / "policy.yaml"
    write_htpasswd(htpasswd, {"alice": PASSWORD})
    policy.write_text(POLICY)
    yield htpasswd, policy


def _gateway(daemon: PrivateDaemon, files: tuple[Path, Path], *extra: str) -> Gateway:
    htpasswd, policy = files
    admin = ("--admin-listen", "tcp://127.0.0.1:0")
    return Gateway(daemon.host, "--htpasswd", str(htpasswd), *admin, *extra, policy=str(policy))


def test_requests_are_counted_as_the_clients_made_them(
    daemon: PrivateDaemon, files: tuple[Path, Path], tmp_path: Path
) -> None:
    _, policy = files
    alice = basic_header("alice", PASSWORD)
    with running(_gateway(daemon, files)) as gw:
        admin = gw.admin_port()
        for _ in range(3):
            assert _get(gw.port, "/_ping", alice) == 200
        assert _get(gw.port, "/_ping") == 401
        assert http_exchange(gw.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        samples = scrape(admin)
        # Malformed, before any head could be read: no operation, no decision, no policy.
        assert requests_of(samples, operation="-", decision="-", policy="-", code="400") == 1
        ping = {"operation": "SystemPing", "policy": "pinger", "decision": "allow", "code": "200"}
        assert requests_of(samples, **ping) == 3
        # Refused before any policy looked at it: no operation, no policy.
        assert requests_of(samples, operation="-", decision="deny", policy="-", code="401") == 1
        count = samples["dockgate_request_duration_seconds_count", (("operation", "SystemPing"),)]
        assert count == 3
        assert samples["dockgate_connections_total", ()] == 5

        proc = remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": alice})
        assert proc.returncode != 0 and "ContainerList" in proc.stderr
        samples = scrape(admin)
        assert requests_of(samples, operation="ContainerList", decision="deny", code="403") == 1

        # A connection held open is counted as open.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10):
            time.sleep(0.2)
            assert scrape(admin)["dockgate_open_connections", ()] == 1
        # Reloads: a broken policy is refused (and counted), a good one taken.
        policy.write_text("policies: {p: {rules: [{allow: {sections: [nonsense]}}]}}\n")
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        failed = (("file", "policy"), ("result", "failed"))
        while scrape(admin).get(("dockgate_reloads_total", failed)) != 1:
            assert time.monotonic() < deadline, scrape(admin)
            time.sleep(0.2)
        assert scrape(admin)["dockgate_reloads_total", (("file", "policy"), ("result", "ok"))] == 0


def test_two_workers_add_up_whichever_answers(
    daemon: PrivateDaemon, files: tuple[Path, Path]
) -> None:
    """Each scrape is answered by one worker; it adds the other's snapshot to its own counts.
    One worker is stopped (SIGSTOP) while the other answers, then the other way round."""
    alice = basic_header("alice", PASSWORD)
    with running(_gateway(daemon, files, "--workers", "2")) as gw:
        admin = gw.admin_port()
        deadline = time.monotonic() + 5
        while len(workers := children(gw.pid)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for _ in range(60):
            assert _get(gw.port, "/_ping", alice) == 200
        time.sleep(2.5)  # a snapshot a second
        for stopped in workers:
            os.kill(stopped, signal.SIGSTOP)
            try:
                for _ in range(3):
                    assert requests_of(scrape(admin), operation="SystemPing") == 60
            finally:
                os.kill(stopped, signal.SIGCONT)
            time.sleep(1.5)  # the stopped worker catches up on its snapshot
        # More requests, scraped at once (no snapshot interval waited for), then the worker
        # that served them killed: what a scrape showed, no later scrape shows less.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as kept:
            for _ in range(20):
                kept.sendall(
                    f"GET /_ping HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\n\r\n".encode()
                )
                assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
            seen = [requests_of(scrape(admin), operation="SystemPing") for _ in range(4)]
            assert all(n in (60, 80) for n in seen) and seen == sorted(seen), seen
            server_side = next(p for p in workers if _holds_connection(p, kept))
            os.kill(server_side, signal.SIGKILL)
        time.sleep(0.5)
        after = [requests_of(scrape(admin), operation="SystemPing") for _ in range(4)]
        assert min(after) >= max(seen), (seen, after)


def _holds_connection(pid: int, conn: socket.socket) -> bool:
    """Whether process `pid` holds the other end of `conn` (a TCP connection on loopback)."""
    local_port = conn.getsockname()[1]
    wanted = f":{local_port:04X}"
    inodes = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2].endswith(wanted):  # the remote address is our client end
            inodes.add(fields[9])
    fds = Path(f"/proc/{pid}/fd")
    return any(
        os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes
        for fd in fds.iterdir()
        if os.readlink(fd).startswith("socket:[")
    )


def test_render_parses_back_and_buckets_are_cumulative() -> None:
    counts = RequestCounts()
    for duration in (0.0005, 0.003, 0.2, 7200.0):
        counts.record(
            "ContainerLogs", decision="allow", policy="p", status=200, duration=duration,
            bytes_in=0, bytes_out=10,
        )  # fmt: skip
    other = RequestCounts.from_json(counts.to_json())
    counts.add(other, gauges=False)
    text = render(counts, workers=2).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    buckets = {
        s.labels["le"]: s.value
        for s in families["dockgate_request_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets["0.001"] == 2 and buckets["0.005"] == 4 and buckets["0.25"] == 6
    assert buckets["3600.0"] == 6 and buckets["+Inf"] == 8  # two hours: only in +Inf
    assert families["dockgate_body_bytes"].samples[1].value == 80
