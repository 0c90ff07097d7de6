"""Load generators and probes: wrk, curl downloads, docker CLI runs, and the /events fan-out client.

Every call here is bounded in time (a subprocess timeout or an asyncio deadline) and talks only to
127.0.0.1 or unix sockets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

from procs import cpu_seconds, rss_kib
from targets import BENCH_DIR, Instance

uvloop: ModuleType | None
try:
    import uvloop
except ImportError:  # the event client falls back to asyncio's own loop
    uvloop = None

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


# -- wrk ------------------------------------------------------------------------------------------


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, p50/p99 latency (ms), request count and error counts from `wrk --latency` output."""
    result: dict[str, float] = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise ValueError(f"no Requests/sec in wrk output:\n{out}")
    result["rps"] = float(match.group(1))
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.MULTILINE)
        if match:
            result[f"p{pct}_ms"] = _to_ms(match.group(1))
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = float(match.group(1)) if match else 0.0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    counts = [int(g) for g in match.groups()] if match else [0, 0, 0, 0]
    result["socket_errors"] = float(sum(counts))
    for kind, count in zip(("connect", "read", "write", "timeout"), counts, strict=True):
        result[f"err_{kind}"] = float(count)
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = float(match.group(1)) if match else 0.0
    return result


def run_wrk(
    url: str,
    duration_s: int,
    *,
    conns: int = 32,
    threads: int = 2,
    close: bool = False,
    headers: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> dict[str, float]:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration_s}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    return parse_wrk(proc.stdout)


WRK_CLIENT_CERT_C = BENCH_DIR / "templates" / "wrk_client_cert.c"


def build_wrk_client_cert(dest: pathlib.Path) -> tuple[pathlib.Path | None, str]:
    """Compile the LD_PRELOAD shim that makes wrk present a client certificate.

    Returns (the shared object, "") or (None, why not)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler"
    argv = [cc, "-O2", "-shared", "-fPIC", "-o", str(dest), str(WRK_CLIENT_CERT_C), "-ldl"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        return None, f"cc failed: {proc.stderr.strip()[-300:]}"
    return dest, ""


def wrk_env(inst: Instance, shim: pathlib.Path | None) -> dict[str, str] | None:
    """wrk's environment for `inst`: the client-certificate shim preloaded where one is needed."""
    if not inst.client_cert:
        return None
    if shim is None or inst.creds is None:
        raise RuntimeError("wrk cannot present a client certificate in this run")
    return dict(
        os.environ,
        LD_PRELOAD=str(shim),
        DGB_CLIENT_CERT=str(inst.creds.client_cert),
        DGB_CLIENT_KEY=str(inst.creds.client_key),
    )


# -- the Python load generator (bench/pyload.py) -------------------------------------------------

PYLOAD = BENCH_DIR / "pyload.py"
PYLOAD_START_DELAY_S = 0.6  # for the processes to start and connect (TLS included): ~0.2 s here
PYLOAD_GAP_S = 0.05  # pyload.SLICE_GAP_S
CPU_SAMPLE_S = 0.02


def pyload_target(inst: Instance, path: str) -> dict[str, object]:
    """pyload's description of `inst`: port, headers, TLS and client certificate."""
    if inst.tcp_port is None:
        raise ValueError("pyload speaks TCP only")
    spec: dict[str, object] = {"name": inst.target, "port": inst.tcp_port, "path": path}
    if inst.headers:
        spec["headers"] = list(inst.headers)
    if inst.tls is not None:
        spec["tls"] = True
        if inst.creds is not None:
            spec["cafile"] = str(inst.creds.ca)
            if inst.client_cert:
                spec["cert"] = str(inst.creds.client_cert)
                spec["key"] = str(inst.creds.client_key)
    return spec


def run_pyload(
    insts: list[Instance],
    path: str,
    *,
    slice_s: float,
    cycles: int,
    shift: int = 0,
    conns: int = 32,
    procs: int = 2,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Alternating slices over `insts` with `procs` pyload processes, `conns` connections per
    target in all (every one opened before the first slice).

    Returns one sample per slice (target, slice number, req/s, p50/p99 in ms, the CPU time the
    target's processes used during the slice) and a summary of the run (errors, generator CPU).
    Slices that a process was not ready for in time are left out (`skipped` in the summary).
    """
    start_at = time.monotonic() + PYLOAD_START_DELAY_S
    argv = [
        sys.executable,
        str(PYLOAD),
        "--spec",
        json.dumps([pyload_target(i, path) for i in insts]),
    ]
    argv += ["--slice", str(slice_s), "--cycles", str(cycles), "--shift", str(shift)]
    argv += ["--start-at", f"{start_at:.6f}"]
    span = cycles * len(insts) * (slice_s + PYLOAD_GAP_S)
    pids = {inst.target: inst.pids() for inst in insts}
    timeline: list[tuple[float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="dgb-pyload-") as tmp:
        children = []
        for i in range(procs):
            n = conns // procs + (1 if i < conns % procs else 0)
            with open(f"{tmp}/{i}.out", "wb") as out, open(f"{tmp}/{i}.err", "wb") as err:
                children.append(
                    subprocess.Popen([*argv, "--conns", str(n)], stdout=out, stderr=err)
                )
        deadline = start_at + span + 60
        try:
            while any(c.poll() is None for c in children):
                now = time.monotonic()
                timeline.append((now, {t: cpu_seconds(p) for t, p in pids.items()}))
                if now > deadline:
                    raise TimeoutError(f"pyload still running {span + 60:.0f}s after its start")
                time.sleep(CPU_SAMPLE_S)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait(timeout=10)
        outs = []
        for i, child in enumerate(children):
            if child.returncode != 0:
                err_text = pathlib.Path(f"{tmp}/{i}.err").read_text(errors="replace")
                raise RuntimeError(f"pyload exit {child.returncode}: {err_text.strip()[-300:]}")
            outs.append(json.loads(pathlib.Path(f"{tmp}/{i}.out").read_text()))
    return merge_pyload(outs, timeline, slice_s, len(insts))


def _cpu_at(timeline: list[tuple[float, dict[str, float]]], target: str, at: float) -> float:
    """The target's CPU seconds at time `at`, interpolated between the samples around it."""
    before = [(t, c[target]) for t, c in timeline if t <= at]
    after = [(t, c[target]) for t, c in timeline if t >= at]
    if not before:
        return after[0][1]
    if not after:
        return before[-1][1]
    (t0, c0), (t1, c1) = before[-1], after[0]
    return c0 if t1 == t0 else c0 + (c1 - c0) * (at - t0) / (t1 - t0)


def merge_pyload(
    outs: list[dict[str, Any]],
    timeline: list[tuple[float, dict[str, float]]],
    slice_s: float,
    n_targets: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    errors: collections.Counter[str] = collections.Counter()
    for o in outs:
        errors.update(o["errors"])
    samples = []
    skipped = 0
    for slots in zip(*(o["slots"] for o in outs), strict=True):
        if any(s.get("skipped") for s in slots):
            skipped += 1
            continue
        hist: collections.Counter[int] = collections.Counter()
        for s in slots:
            hist.update({int(k): int(v) for k, v in s["hist"].items()})
        first = slots[0]
        count = sum(int(s["count"]) for s in slots)
        cpu = _cpu_at(timeline, first["target"], first["end"]) - _cpu_at(
            timeline, first["target"], first["start"]
        )
        sample: dict[str, Any] = {
            "target": first["target"],
            "slice": int(first["index"]) // n_targets,
            "rps": count / slice_s,
            "requests": float(count),
            "non2xx": float(sum(int(s["non2xx"]) for s in slots)),
            "target_cpu_s": cpu,
            "target_us_per_req": cpu / count * 1e6 if count else None,
        }
        for pct in (50, 99):
            value = hist_percentile(hist, pct)
            if value is not None:
                sample[f"p{pct}_ms"] = value / 1e3
        samples.append(sample)
    summary = {
        "errors": dict(errors),
        "reasons": sorted({r for o in outs for r in o["reasons"]})[:3],
        "skipped": skipped,
        "client_cpu_s": sum(float(o["cpu_s"]) for o in outs),
        "slices_s": slice_s * len(samples),
        "conns": [o["conns"] for o in outs],
    }
    return samples, summary


def hist_percentile(hist: collections.Counter[int], pct: float) -> float | None:
    """The `pct` percentile of a {value: count} histogram (nearest rank)."""
    total = sum(hist.values())
    if not total:
        return None
    rank = max(1, -(-total * pct // 100))
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


# -- curl downloads -------------------------------------------------------------------------------


def curl_download(inst: Instance, path: str, timeout_s: float) -> dict[str, float]:
    """GET `path` through `inst`, body to /dev/null; returns status, bytes, seconds, MB/s."""
    argv = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        str(int(timeout_s)),
        "-w",
        "%{http_code} %{size_download} %{time_total}",
        *inst.curl_args(),
        inst.base_url + path,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 30, check=False)
    status, size, total = proc.stdout.split()
    size_b, secs = float(size), float(total)
    return {
        "status": float(status),
        "curl_rc": float(proc.returncode),
        "bytes": size_b,
        "seconds": secs,
        "mbps": size_b / secs / 1e6 if secs > 0 else 0.0,
    }


# -- docker CLI -----------------------------------------------------------------------------------


def docker_cli(
    inst: Instance,
    env: dict[str, str],
    args: list[str],
    timeout_s: float,
    *,
    stdin_path: pathlib.Path | None = None,
    stdout_path: pathlib.Path | None = None,
) -> dict[str, object]:
    """Run `docker ARGS` with DOCKER_HOST pointing at `inst`; wall time, exit status, stderr."""
    env = dict(env, DOCKER_HOST=inst.docker_host)
    with contextlib.ExitStack() as stack:
        stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        stdout = stack.enter_context(open(stdout_path, "wb")) if stdout_path else subprocess.DEVNULL
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["docker", *args], env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE
        )
        timed_out = False
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            _, err = proc.communicate(timeout=30)
        return {
            "timed_out": timed_out,
            "seconds": time.perf_counter() - start,
            "rc": None if timed_out else proc.returncode,
            "stderr": err.decode(errors="replace").strip()[-500:],
        }


def sha256_file(path: pathlib.Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# -- /events fan-out ------------------------------------------------------------------------------

EVENTS_REQUEST = b"GET /events HTTP/1.1\r\nHost: docker\r\nAccept: */*\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024


@dataclass
class _FanState:
    """Shared by all stream protocols: the needle to look for and who has seen it."""

    needle: bytes = b""
    trigger_id: int = 0
    expected: int = 0
    seen: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    lost: int = 0


class _EventStream(asyncio.Protocol):
    """One `GET /events` stream: waits for the response head, then watches for the needle."""

    def __init__(self, state: _FanState, ready: asyncio.Future[None]) -> None:
        self.state = state
        self.ready = ready
        self.head = bytearray()
        self.tail = b""
        self.hit_id = 0
        self.hit_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(EVENTS_REQUEST)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.ready.done():
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD_BYTES:
                    self.ready.set_exception(ValueError("response head too large"))
                return
            status_line = bytes(self.head[: self.head.find(b"\r\n")])
            if not re.match(rb"HTTP/1\.[01] 200 ", status_line):
                self.ready.set_exception(ValueError(status_line.decode(errors="replace")))
                return
            data = bytes(self.head[end + 4 :])
            self.head.clear()
            self.ready.set_result(None)
        st = self.state
        if not st.needle:
            self.tail = b""
            return
        buf = self.tail + data
        if self.hit_id != st.trigger_id and st.needle in buf:
            self.hit_id = st.trigger_id
            self.hit_at = now
            st.seen += 1
            if st.seen >= st.expected:
                st.done.set()
        self.tail = buf[-len(st.needle) :]

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.lost += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before response head: {exc!r}"))


def _succeeded(fut: asyncio.Future[None]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


async def _create_volume(daemon_socket: pathlib.Path, name: str) -> None:
    reader, writer = await asyncio.open_unix_connection(str(daemon_socket))
    body = json.dumps({"Name": name}).encode()
    writer.write(
        b"POST /volumes/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    response = await reader.read()
    writer.close()
    if not re.match(rb"HTTP/1\.[01] 201 ", response):
        raise RuntimeError(f"volume create failed: {response[:200]!r}")


async def _fanout(
    inst: Instance,
    daemon_socket: pathlib.Path,
    n_streams: int,
    *,
    triggers: int,
    tag: str,
    connect_parallel: int = 64,
    phase_timeout_s: float = 120.0,
) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    state = _FanState()
    streams: list[_EventStream] = []
    sem = asyncio.Semaphore(connect_parallel)
    pids = inst.pids()
    rss_before = rss_kib(pids)

    async def open_one() -> None:
        async with sem:
            ready: asyncio.Future[None] = loop.create_future()
            proto = _EventStream(state, ready)
            if inst.tcp_port is not None:
                await loop.create_connection(lambda: proto, "127.0.0.1", inst.tcp_port)
            else:
                await loop.create_unix_connection(lambda: proto, str(inst.unix_path))
            streams.append(proto)
            await asyncio.wait_for(asyncio.shield(ready), 30)

    start = time.perf_counter()
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(open_one() for _ in range(n_streams)), return_exceptions=True),
            phase_timeout_s,
        )
    except TimeoutError:
        outcomes = [TimeoutError("connect phase timed out")]
    open_s = time.perf_counter() - start
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    live = [s for s in streams if _succeeded(s.ready)]
    result: dict[str, object] = {
        "requested": n_streams,
        "established": len(live),
        "open_seconds": open_s,
        "errors": sorted({repr(e)[:160] for e in errors})[:5],
    }
    try:
        await asyncio.sleep(1.0)  # let the targets settle before sampling memory
        pids = inst.pids()
        rss_after = rss_kib(pids)
        result["rss_before_kib"] = rss_before
        result["rss_after_kib"] = rss_after
        result["rss_per_stream_kib"] = (rss_after - rss_before) / max(1, len(live))
        result["pids"] = len(pids)
        last_ms: list[float] = []
        p50_ms: list[float] = []
        delivered: list[int] = []
        for i in range(triggers):
            state.needle = f"dgbench-{tag}-{i}-{time.monotonic_ns()}".encode()
            state.trigger_id = i + 1
            state.seen = 0
            state.expected = len(live)
            state.done = asyncio.Event()
            t0 = time.perf_counter()
            await _create_volume(daemon_socket, state.needle.decode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.done.wait(), 20)
            got = sorted((s.hit_at - t0) * 1e3 for s in live if s.hit_id == state.trigger_id)
            delivered.append(len(got))
            if got:
                last_ms.append(got[-1])
                p50_ms.append(got[len(got) // 2])
            state.needle = b""
            await asyncio.sleep(0.3)
        result["delivered"] = delivered
        result["last_ms"] = last_ms
        result["p50_ms"] = p50_ms
    finally:
        for s in streams:
            if s.transport is not None:
                s.transport.abort()
        await asyncio.sleep(0.2)
    return result


def event_fanout(
    inst: Instance, daemon_socket: pathlib.Path, n_streams: int, *, triggers: int, tag: str
) -> dict[str, object]:
    """Hold `n_streams` `GET /events` through `inst`; RSS growth and event delivery latencies."""
    runner = uvloop.run if uvloop is not None else asyncio.run
    return runner(_fanout(inst, daemon_socket, n_streams, triggers=triggers, tag=tag))


def tcp_warmup(inst: Instance, n: int = 20) -> None:
    """A few one-shot `GET /_ping` connections so each worker has served a request."""
    for _ in range(n):
        if inst.tcp_port is None:
            return
        with socket.create_connection(("127.0.0.1", inst.tcp_port), timeout=5) as sock:
            sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass
