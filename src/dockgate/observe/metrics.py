"""Prometheus metrics: what the gateway decided, how the daemon answered, what is open now.

Counting is on the hot path, so a request costs a few dict updates (`RequestCounts.record`);
prometheus_client only renders the exposition format when `/metrics` is scraped, from the
counts handed to it (`render`). With `--workers N` every worker counts for itself and writes its
counts to a snapshot file of its own about once a second (`SnapshotDirectory`, a directory the
parent makes); the worker that answers a scrape adds the other workers' snapshots to its own
live counts, after writing its own (so that what one scrape reports, the next one still
counts). Snapshots of workers that have died stay counted; their gauges (open connections) do
not. What a worker counted after its last snapshot is lost if it dies.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dockgate.policy.modes import metric_reason
from dockgate.refusal import Refusal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request durations run from a cached `/_ping` (well under a millisecond) to `logs -f` and attach
# sessions (hours); the buckets cover both ends.
DURATION_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)
SNAPSHOT_SECONDS = 1.0

RequestKey = tuple[str, str, str, str]  # operation, decision, policy, status code


@dataclass
class RequestCounts:
    """One process's counts since it started."""

    requests: dict[RequestKey, int] = field(default_factory=dict)
    # Per operation: the count in each duration bucket (not cumulative), and the sum.
    buckets: dict[str, list[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    connections: int = 0
    # Gauges, set when a snapshot is taken or a scrape is answered.
    open_connections: int = 0
    open_tunnels: int = 0
    # Reloads of each watched file, [ok, failed], as this process saw them: every worker
    # reloads the same files, so workers are not added up but the highest count is taken.
    reloads: dict[str, list[int]] = field(default_factory=dict)
    # Passes of the periodic sweep (timeouts, reloads, snapshots) that raised: each is logged
    # and the sweeper goes on (server.py); a count above zero is a bug worth an alert.
    sweep_failures: int = 0
    # Rollout modes (policy/modes.py): requests let through that enforce would have refused,
    # by (policy, operation, reason: modes.metric_reason).
    would_deny: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def record_would_deny(self, policy: str, operation: str, refusal: Refusal) -> None:
        key = (policy, operation, metric_reason(refusal))
        self.would_deny[key] = self.would_deny.get(key, 0) + 1

    # Requests refused by a policy's limits (policy/limits.py): (policy, operation, limit).
    limited: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def count_limited(self, policy: str, operation: str, limit: str) -> None:
        key = (policy, operation, limit)
        self.limited[key] = self.limited.get(key, 0) + 1

    def record(  # noqa: PLR0917 - positional: the relay's call, once per request, is cheaper so
        self,
        operation: str,
        decision: str,
        policy: str,
        status: int,
        duration: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        self.record_key((operation, decision, policy, str(status)), duration, bytes_in, bytes_out)

    def record_key(self, key: RequestKey, duration: float, bytes_in: int, bytes_out: int) -> None:
        """`record`, with its key made by the caller: the relay keeps the key of a keep-alive
        client's repeated exchange (the same verdict, the same status) rather than make the
        tuple and the status text again per request (issue 14's hot path)."""
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        operation = key[0]
        buckets = self.buckets.get(operation)
        if buckets is None:
            buckets = self.buckets[operation] = [0] * len(DURATION_BUCKETS)
            self.seconds[operation] = 0.0
        index = bisect_left(DURATION_BUCKETS, duration)  # the first bound >= duration
        if index < len(buckets):
            buckets[index] += 1  # beyond the last bound only +Inf (the count) holds it
        self.seconds[operation] += duration
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def add(self, other: RequestCounts, *, gauges: bool) -> None:
        """Add `other`'s counts (and its gauges, for a live process) to these."""
        for key, count in other.requests.items():
            self.requests[key] = self.requests.get(key, 0) + count
        for operation, buckets in other.buckets.items():
            mine = self.buckets.setdefault(operation, [0] * len(DURATION_BUCKETS))
            for index, count in enumerate(buckets):
                mine[index] += count
            self.seconds[operation] = self.seconds.get(operation, 0.0) + other.seconds[operation]
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.connections += other.connections
        self.sweep_failures += other.sweep_failures  # each worker sweeps for itself
        if gauges:
            self.open_connections += other.open_connections
            self.open_tunnels += other.open_tunnels
        for name, (ok, failed) in other.reloads.items():
            mine = self.reloads.setdefault(name, [0, 0])
            mine[0], mine[1] = max(mine[0], ok), max(mine[1], failed)
        for denied, count in other.would_deny.items():
            self.would_deny[denied] = self.would_deny.get(denied, 0) + count
        for limited, count in other.limited.items():
            self.limited[limited] = self.limited.get(limited, 0) + count

    def count_of(self, operation: str) -> int:
        return sum(n for (op, *_), n in self.requests.items() if op == operation)

    def to_json(self) -> str:
        return json.dumps(
            {
                "requests": [[*key, n] for key, n in self.requests.items()],
                "buckets": self.buckets,
                "seconds": self.seconds,
                "bytes": [self.bytes_in, self.bytes_out],
                "connections": self.connections,
                "open": [self.open_connections, self.open_tunnels],
                "reloads": self.reloads,
                "sweep_failures": self.sweep_failures,
                "would_deny": [[*key, n] for key, n in self.would_deny.items()],
                "limited": [[*key, n] for key, n in self.limited.items()],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RequestCounts:
        data = json.loads(text)
        counts = cls()
        counts.requests = {(op, d, p, s): n for op, d, p, s, n in data["requests"]}
        counts.buckets = data["buckets"]
        counts.seconds = data["seconds"]
        counts.bytes_in, counts.bytes_out = data["bytes"]
        counts.connections = data["connections"]
        counts.open_connections, counts.open_tunnels = data["open"]
        counts.reloads = data["reloads"]
        counts.sweep_failures = data["sweep_failures"]
        counts.would_deny = {(p, op, r): n for p, op, r, n in data.get("would_deny", [])}
        counts.limited = {(p, o, k): n for p, o, k, n in data.get("limited", ())}
        return counts


class SnapshotDirectory:
    """Where the workers of one gateway leave their counts for each other."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    @classmethod
    def create(cls) -> SnapshotDirectory | None:
        """A new directory in /dev/shm (memory, and writable even in a container with a
        read-only root), else /tmp; None when neither can have one."""
        for base in ("/dev/shm", "/tmp"):
            try:
                return cls(pathlib.Path(tempfile.mkdtemp(prefix="dockgate-metrics-", dir=base)))
            except OSError:
                continue
        return None

    def write(self, pid: int, counts: RequestCounts) -> None:
        target = self.path / f"{pid}.json"
        tmp = self.path / f".{pid}.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(counts.to_json())
            os.replace(tmp, target)

    def others(self, pid: int) -> Iterator[tuple[RequestCounts, bool]]:
        """Every other worker's last counts, and whether that worker is still alive."""
        for path in self.path.glob("*.json"):
            if path.stem == str(pid) or not path.stem.isdigit():
                continue
            try:
                counts = RequestCounts.from_json(path.read_text())
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a worker killed mid-write: its previous file was replaced whole
            yield counts, _alive(int(path.stem))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Collector(Collector):
    def __init__(self, counts: RequestCounts, workers: int) -> None:
        self._counts = counts
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        c = self._counts
        requests = CounterMetricFamily(
            "dockgate_requests",
            "Requests answered, by Engine API operation (- when refused before it was known: "
            "credentials, source address, malformed request), decision (allow or deny; - for "
            "a malformed request), the policy that decided, and the status code.",
            labels=["operation", "decision", "policy", "code"],
        )
        for key, count in sorted(c.requests.items()):
            requests.add_metric(list(key), count)
        yield requests

        durations = HistogramMetricFamily(
            "dockgate_request_duration_seconds",
            "From the request's arrival to the end of its answer (streams and attach sessions "
            "included), by operation.",
            labels=["operation"],
        )
        for operation, buckets in sorted(c.buckets.items()):
            cumulative, running = [], 0
            for bound, count in zip(DURATION_BUCKETS, buckets, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            total = c.count_of(operation)
            cumulative.append(("+Inf", total))
            durations.add_metric([operation], cumulative, sum_value=c.seconds[operation])
        yield durations

        body = CounterMetricFamily(
            "dockgate_body_bytes",
            "Body bytes relayed: in from clients, out to clients (tunnels included).",
            labels=["direction"],
        )
        body.add_metric(["in"], c.bytes_in)
        body.add_metric(["out"], c.bytes_out)
        yield body

        yield CounterMetricFamily(
            "dockgate_connections", "Client connections accepted.", value=c.connections
        )
        yield GaugeMetricFamily(
            "dockgate_open_connections", "Client connections open now.", value=c.open_connections
        )
        yield GaugeMetricFamily(
            "dockgate_open_tunnels",
            "Hijacked connections (attach, exec, run -i) open now.",
            value=c.open_tunnels,
        )
        yield GaugeMetricFamily("dockgate_workers", "Worker processes.", value=self._workers)

        reloads = CounterMetricFamily(
            "dockgate_reloads",
            "Reloads of a watched file (on change or SIGHUP), the most any worker saw; a "
            "failed one kept the previous contents.",
            labels=["file", "result"],
        )
        for name, (ok, failed) in sorted(c.reloads.items()):
            reloads.add_metric([name, "ok"], ok)
            reloads.add_metric([name, "failed"], failed)
        yield reloads

        yield CounterMetricFamily(
            "dockgate_sweep_failures",
            "Passes of the periodic sweep (header and body timeouts, file reloads, worker "
            "snapshots) that failed with an unexpected error, all workers added up; each is "
            "logged, and the sweep goes on. Any is a bug.",
            value=c.sweep_failures,
        )

        yield _labelled_counter(
            "dockgate_would_deny",
            "Requests a policy in warn or audit mode let through that enforce mode would have "
            "refused, by policy, operation and reason (the rule, or the step: guardrails, "
            "ownership, redaction; the audit record has the whole reason).",
            ["policy", "operation", "reason"],
            c.would_deny,
        )
        yield _labelled_counter(
            "dockgate_limited",
            "Requests refused (429) by a policy's rate and concurrency limits, all workers added "
            "up, by policy, operation and limit (rate, concurrent, streams). Limits are counted "
            "per worker process: with dockgate_workers N a caller may get N times the limits.",
            ["policy", "operation", "limit"],
            c.limited,
        )


def _labelled_counter(
    name: str, documentation: str, labels: list[str], counts: dict[tuple[str, str, str], int]
) -> CounterMetricFamily:
    """A counter family with one sample per label tuple, in a stable order."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for values, count in sorted(counts.items()):
        family.add_metric(list(values), count)
    return family


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(value)


def render(counts: RequestCounts, workers: int) -> bytes:
    """The Prometheus text exposition of `counts` (all workers' added up)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(counts, workers))
    return generate_latest(registry)
