#!/usr/bin/env python3
"""A small keep-alive HTTP/1.1 load generator that can present a TLS client certificate, and can
alternate between several targets over connections it keeps open.

wrk speaks https but has no option for a client certificate; this generator needs no help for
one. `bench/run.py` uses it to compare `dockgate` with its TLS and mTLS variants in short
alternating slices: every connection to every target is opened (TLS handshake done) before the
common start time, then each slice sends requests to one target only, one at a time per
connection (no pipelining, like wrk), while the other targets' connections stay open and idle.
The handshakes are thus left out, and the slices of the compared targets are a second apart.

A slice counts the responses completed before its end to requests sent during it, with their
latency from send to the last byte. Slices start at fixed times (`--start-at`, a
`time.monotonic()` value: the same clock in every process), so that several processes switch
targets together; a slice a process is not ready for in time is marked skipped. Prints one JSON
object: per slice, the target, counts and a latency histogram (µs); errors; and the CPU time the
process used.

    python3 bench/pyload.py --target a:2375 --duration 5               # one target
    python3 bench/pyload.py --spec '[{"name": "a", "port": 2375}, {"name": "b", "port": 2376,
        "tls": true}]' --slice 1 --cycles 4                           # alternating slices
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import resource
import ssl
import sys
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # asyncio's own loop: slower, but the same for every target of a run
    uvloop = None

CONTENT_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CLOSE_RE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)
MAX_HEAD_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 20.0
SLICE_GAP_S = 0.05  # between slices, for the last responses of one to arrive before the next


@dataclass
class Slot:
    """One slice: a target, its time window, and what was counted in it."""

    index: int
    target: int
    start: float
    end: float
    count: int = 0
    non2xx: int = 0
    skipped: bool = False  # this process was not ready in time for it
    hist: collections.Counter[int] = field(default_factory=collections.Counter)  # µs -> n

    def record(self, latency_s: float, status: int) -> None:
        self.count += 1
        us = int(latency_s * 1e6)
        # µs below 1 ms, then 10 µs, then 100 µs steps (at most 1 % off): a small histogram
        self.hist[us if us < 1000 else us - us % 10 if us < 10000 else us - us % 100] += 1
        if not 200 <= status < 300:
            self.non2xx += 1


@dataclass
class Errors:
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: set[str] = field(default_factory=set)
    stopping: bool = False  # the run is over: closed connections are not errors


class Client(asyncio.Protocol):
    """One keep-alive connection: in its target's slices, request, whole response, next request."""

    def __init__(self, request: bytes, errors: Errors, ready: asyncio.Future[None]) -> None:
        self.request = request
        self.errors = errors
        self.ready = ready
        self.buf = bytearray()
        self.need = -1  # bytes of the current response (head + body) once its head is parsed
        self.status = 0
        self.closing = False
        self.sent_at = 0.0
        self.slot: Slot | None = None  # the slice of the request in flight, if any
        self.pending: Slot | None = None  # a slice that began while a response was on its way
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        if not self.ready.done():
            self.ready.set_result(None)

    def start(self, slot: Slot) -> None:
        if self.transport is None:
            return
        if self.slot is not None:  # a response of the previous slice is still on its way
            self.pending = slot
            return
        self.slot = slot
        self.sent_at = time.monotonic()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD_BYTES:
                        self.fail("head too large")
                    return
                head = bytes(self.buf[:end])
                length = CONTENT_LENGTH_RE.search(head)
                if not head.startswith(b"HTTP/1.") or length is None:
                    self.fail("response without Content-Length")
                    return
                self.status = int(head[9:12])
                self.closing = CLOSE_RE.search(head) is not None
                self.need = end + 4 + int(length.group(1))
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = -1
            self.complete()
            if self.transport is None:
                return

    def complete(self) -> None:
        now = time.monotonic()
        slot, self.slot = self.slot, None
        if slot is None:
            self.fail("response without a request")
            return
        if now <= slot.end:
            slot.record(now - self.sent_at, self.status)
        if self.closing:
            self.errors.counts["closed by the server"] += 1
            assert self.transport is not None
            self.transport.close()
            return
        following = slot if now < slot.end else self.pending
        self.pending = None
        if following is not None and now < following.end:
            self.start(following)

    def fail(self, why: str) -> None:
        self.errors.counts[why] += 1
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during connect: {exc!r}"))
        elif not self.closing and not self.errors.stopping:
            self.errors.counts["read"] += 1  # closed without announcing it, as wrk counts it
        self.transport = None


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    host: str = "127.0.0.1"
    path: str = "/_ping"
    headers: tuple[str, ...] = ()
    tls: bool = False
    cafile: str | None = None  # verify the server against this CA (else: no verification)
    cert: str | None = None  # client certificate (PEM)
    key: str | None = None

    def request(self) -> bytes:
        lines = [f"GET {self.path} HTTP/1.1", "Host: docker", *self.headers, "", ""]
        return "\r\n".join(lines).encode()

    def context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.cafile)
        if self.cafile is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def schedule(n_targets: int, start: float, slice_s: float, cycles: int, shift: int) -> list[Slot]:
    """`cycles` rounds of one slice per target, the order rotated by one every cycle."""
    slots: list[Slot] = []
    at = start
    for c in range(cycles):
        k = (shift + c) % n_targets
        for t in [*range(k, n_targets), *range(k)]:
            slots.append(Slot(len(slots), t, at, at + slice_s))
            at += slice_s + SLICE_GAP_S
    return slots


async def run(
    targets: list[Target], *, conns: int, slice_s: float, cycles: int, shift: int, start_at: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    errors = Errors()
    clients: list[list[Client]] = [[] for _ in targets]

    async def connect(i: int, target: Target, ctx: ssl.SSLContext | None) -> None:
        ready: asyncio.Future[None] = loop.create_future()
        proto = Client(target.request(), errors, ready)
        await loop.create_connection(
            lambda: proto,
            target.host,
            target.port,
            ssl=ctx,
            server_hostname=target.host if ctx is not None else None,
        )
        await ready
        clients[i].append(proto)

    jobs = []
    for i, target in enumerate(targets):
        ctx = target.context()
        jobs += [connect(i, target, ctx) for _ in range(conns)]
    outcomes = await asyncio.wait_for(
        asyncio.gather(*jobs, return_exceptions=True), CONNECT_TIMEOUT_S
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            errors.counts["connect"] += 1
            errors.reasons.add(repr(outcome)[:200])
    late = max(0.0, time.monotonic() - start_at)
    # Fixed times, the same in every process: a slice this process is late for is skipped (and
    # left out by the caller for all processes), rather than shifted.
    slots = schedule(len(targets), start_at, slice_s, cycles, shift)
    for slot in slots:
        await asyncio.sleep(max(0.0, slot.start - time.monotonic()))
        if time.monotonic() > slot.start + SLICE_GAP_S:
            slot.skipped = True
            continue
        for client in clients[slot.target]:
            client.start(slot)
        await asyncio.sleep(max(0.0, slot.end - time.monotonic()))
    await asyncio.sleep(SLICE_GAP_S)
    errors.stopping = True
    for group in clients:
        for client in group:
            if client.transport is not None:
                client.transport.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "slots": [
            {
                "index": s.index,
                "target": targets[s.target].name,
                "start": s.start,
                "end": s.end,
                "count": s.count,
                "non2xx": s.non2xx,
                "skipped": s.skipped,
                "hist": {str(k): v for k, v in s.hist.items()},
            }
            for s in slots
        ],
        "conns": {t.name: len(c) for t, c in zip(targets, clients, strict=True)},
        "errors": dict(errors.counts),
        "reasons": sorted(errors.reasons)[:3],
        "late_s": late,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", help="NAME:PORT, one plain-HTTP target (or use --spec)")
    ap.add_argument("--spec", help="JSON list of targets: name, port, [path, headers, tls, ...]")
    ap.add_argument("--conns", type=int, default=16, help="connections per target")
    ap.add_argument("--duration", type=float, help="one slice of this many seconds per target")
    ap.add_argument("--slice", type=float, default=1.0, help="seconds per slice")
    ap.add_argument("--cycles", type=int, default=1, help="slices per target")
    ap.add_argument("--shift", type=int, default=0, help="rotate the first cycle's order")
    ap.add_argument("--start-at", type=float, help="time.monotonic() value to start at")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.spec:
        targets = [
            Target(**{**t, "headers": tuple(t.get("headers", ()))}) for t in json.loads(args.spec)
        ]
    elif args.target:
        name, _, port = args.target.rpartition(":")
        targets = [Target(name or "target", int(port))]
    else:
        print("pyload: --target or --spec is required", file=sys.stderr)
        return 2
    slice_s = args.duration if args.duration is not None else args.slice
    cycles = 1 if args.duration is not None else args.cycles
    start_at = args.start_at if args.start_at is not None else time.monotonic() + 0.5
    runner = uvloop.run if uvloop is not None else asyncio.run
    result = runner(
        run(
            targets,
            conns=args.conns,
            slice_s=slice_s,
            cycles=cycles,
            shift=args.shift,
            start_at=start_at,
        )
    )
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
