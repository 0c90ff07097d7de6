#!/usr/bin/env python3
"""Event-loop latency during a burst of failed logins (issue 11, finding 6).

A logged-in client pings (`GET /_ping`, keep-alive, its password remembered after the first
request) every 5 ms on one connection, and sends the same request without credentials on a
second one (the gateway's own 401, without the daemon's share of the latency); first alone
(idle, 5 s), then while 200 wrong passwords arrive from 10 loopback addresses (20 each, in
sequence on one keep-alive connection per address: under the default per-address limit of 20;
the per-user limit is raised so that every guess is hashed). Half the guesses name the file's
user, half unknown users. The gateway has an htpasswd file of bcrypt cost 5 (what
`htpasswd -B` writes) or 10 (bcrypt's default).

Printed per code version and cost: /_ping p50/p99 idle and during the burst, the gateway-only
p99s, and the burst's length and answers; with `--baseline REV`, the same for the
code of that git revision and the ratio of the two burst p99s. Before issue 11 the hashes ran on
the event loop: the review measured 780 ms for everyone's pings during such a burst.

    sudo python3 bench/auth_burst.py                        # this tree, costs 5 and 10
    sudo python3 bench/auth_burst.py --baseline 0f3fd0e     # and the code before the change

Run as root from the repository root (it starts a private dockerd, as bench/run.py does; run.py
calls `measure` with its own daemon for the `authburst` workload). Everything it starts is
stopped, and its temp dir removed, on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from procs import Proc, Reaper
from targets import (
    LISTENING_RE,
    START_TIMEOUT_S,
    dockgate_env,
    import_daemon,
    snapshot_dockgate,
    snapshot_revision,
)

USER, PASSWORD = "bench", "bench-password"
SOURCES = [f"127.0.0.{i}" for i in range(2, 12)]
PER_SOURCE = 20
PING_GAP_S = 0.005
IDLE_S = 5.0


def write_htpasswd(path: pathlib.Path, cost: int) -> None:
    import bcrypt  # noqa: PLC0415 - a runtime dependency of dockgate, installed by run.py

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=cost)).decode()
    path.write_text(f"{USER}:{hashed.replace('$2b$', '$2y$', 1)}\n")  # as `htpasswd -B`


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authorization: bytes | None
) -> tuple[int, float]:
    """One GET /_ping on a keep-alive connection: (status, seconds to the whole answer)."""
    started = time.perf_counter()
    credentials = b"Authorization: %b\r\n" % authorization if authorization else b""
    writer.write(b"GET /_ping HTTP/1.1\r\nHost: bench\r\n%b\r\n" % credentials)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status, time.perf_counter() - started


async def burst_and_pings(port: int) -> dict[str, Any]:
    """The pings, alone and then during the burst. Each round also sends the same request
    without credentials on a second connection: its 401 comes from the gateway alone, so its
    latency is the gateway's, without the daemon's share."""
    good = basic(USER, PASSWORD)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    probe_reader, probe_writer = await asyncio.open_connection("127.0.0.1", port)
    status, _ = await exchange(reader, writer, good)
    if status != 200:
        raise RuntimeError(f"the logged-in client's first /_ping answered {status}")

    async def round_() -> tuple[float, float]:
        status, seconds = await exchange(reader, writer, good)
        if status != 200:
            raise RuntimeError(f"/_ping answered {status}")
        status, probe_seconds = await exchange(probe_reader, probe_writer, None)
        if status != 401:
            raise RuntimeError(f"/_ping without credentials answered {status}")
        await asyncio.sleep(PING_GAP_S)
        return seconds, probe_seconds

    idle: list[tuple[float, float]] = []
    deadline = time.monotonic() + IDLE_S
    while time.monotonic() < deadline:
        idle.append(await round_())

    answers: collections.Counter[int] = collections.Counter()

    async def guesses(source: str) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            for i in range(PER_SOURCE):
                user = USER if i % 2 else f"nobody-{source}-{i}"
                status, _ = await exchange(r, w, basic(user, f"guess-{source}-{i}"))
                answers[status] += 1
        finally:
            w.close()

    started = time.monotonic()
    burst = asyncio.gather(*(guesses(s) for s in SOURCES))
    during: list[tuple[float, float]] = []
    while not burst.done():
        during.append(await round_())
    await burst
    burst_s = time.monotonic() - started
    writer.close()
    probe_writer.close()
    figures: dict[str, Any] = {}
    for phase, rounds in (("idle", idle), ("burst", during)):
        for kind, values in (("", [r[0] for r in rounds]), ("gw_", [r[1] for r in rounds])):
            figures[f"{phase}_{kind}p50_ms"] = statistics.median(values) * 1e3
            figures[f"{phase}_{kind}p99_ms"] = _p99(values) * 1e3
            figures[f"{phase}_{kind}max_ms"] = max(values) * 1e3
    return figures | {"pings": len(during), "burst_s": burst_s, "answers": dict(answers)}


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def start_gateway(
    src: pathlib.Path, socket_path: pathlib.Path, htpasswd: pathlib.Path, workdir: pathlib.Path,
    reaper: Reaper,
) -> tuple[Proc, int]:  # fmt: skip
    argv = [
        sys.executable, "-m", "dockgate", "serve", "--listen", "tcp://127.0.0.1:0",
        "--upstream", f"unix://{socket_path}", "--access-log", str(workdir / "access.log"),
        "--htpasswd", str(htpasswd), "--auth-failures-per-user", "100000",
    ]  # fmt: skip
    stderr = workdir / "stderr.log"
    proc = Proc("dockgate+basic", argv, workdir / "stdout.log", reaper, env=dockgate_env(src),
                stderr_path=stderr)  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.alive():
            proc.stop()
            raise RuntimeError(f"the gateway exited during start:\n{proc.log_tail()}")
        match = LISTENING_RE.search(stderr.read_text())
        if match:
            return proc, int(match.group(1))
        time.sleep(0.05)
    proc.stop()
    raise TimeoutError(f"the gateway printed no listening line:\n{proc.log_tail()}")


def measure(
    socket_path: pathlib.Path,
    versions: dict[str, pathlib.Path],
    workdir: pathlib.Path,
    reaper: Reaper,
    *,
    costs: tuple[int, ...] = (5, 10),
    reps: int = 1,
) -> list[dict[str, Any]]:
    """For each code version (name -> its src/), cost and repetition: a fresh gateway, the
    idle pings, the burst. Versions alternate within a repetition, so drift hits all alike."""
    results = []
    for rep in range(reps):
        for cost in costs:
            for name, src in versions.items():
                run_dir = workdir / f"{name}-cost{cost}-{rep}"
                run_dir.mkdir(parents=True)
                htpasswd = run_dir / "htpasswd"
                write_htpasswd(htpasswd, cost)
                proc, port = start_gateway(src, socket_path, htpasswd, run_dir, reaper)
                try:
                    figures = asyncio.run(burst_and_pings(port))
                finally:
                    proc.stop()
                results.append({"version": name, "cost": cost, "rep": rep, **figures})
    return results


def report(results: list[dict[str, Any]]) -> str:
    """One line per version and cost (medians over repetitions), and the ratios."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in results:
        groups[(r["version"], r["cost"])].append(r)

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(float(r[key]) for r in rows)

    lines = [
        "Auth-failure burst (bench/auth_burst.py): GET /_ping every 5 ms on one keep-alive "
        f"connection, {IDLE_S:.0f} s idle, then during {len(SOURCES) * PER_SOURCE} wrong "
        f"passwords from {len(SOURCES)} loopback addresses ({PER_SOURCE} each, one keep-alive "
        "connection per address; half for the file's user, half for unknown users); `gateway "
        "only`: the same request without credentials on a second connection, whose 401 the "
        "gateway answers alone; medians over "
        f"{max(len(v) for v in groups.values())} repetition(s)",
        "",
        "| code | bcrypt cost | /_ping idle p50 / p99 ms | /_ping burst p50 / p99 / max ms | "
        "gateway only, idle p99 / burst p99 / max ms | burst s | pings | answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (version, cost), rows in groups.items():
        answers: collections.Counter[str] = collections.Counter()
        for r in rows:
            answers.update({str(k): v for k, v in r["answers"].items()})
        lines.append(
            f"| {version} | {cost} | {med(rows, 'idle_p50_ms'):.2f} / "
            f"{med(rows, 'idle_p99_ms'):.2f} | {med(rows, 'burst_p50_ms'):.2f} / "
            f"{med(rows, 'burst_p99_ms'):.2f} / {med(rows, 'burst_max_ms'):.1f} | "
            f"{med(rows, 'idle_gw_p99_ms'):.2f} / {med(rows, 'burst_gw_p99_ms'):.2f} / "
            f"{med(rows, 'burst_gw_max_ms'):.1f} | "
            f"{med(rows, 'burst_s'):.1f} | {med(rows, 'pings'):.0f} | "
            + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
            + " |"
        )
    versions = list(dict.fromkeys(v for v, _ in groups))
    if len(versions) == 2:
        before, after = versions
        for cost in dict.fromkeys(c for _, c in groups):
            if (before, cost) in groups and (after, cost) in groups:
                ratio = med(groups[(before, cost)], "burst_p99_ms") / med(
                    groups[(after, cost)], "burst_p99_ms"
                )
                lines.append(
                    f"\ncost {cost}: burst p99 of {after} is {ratio:.0f}x lower than {before}'s"
                )
    target = [
        f"{cost}: {med(rows, 'burst_p99_ms'):.1f} ms (gateway only "
        f"{med(rows, 'burst_gw_p99_ms'):.1f} ms)"
        for (version, cost), rows in groups.items()
        if version == versions[-1]
    ]
    lines.append(
        f"\nTarget (issue 11): burst p99 under 20 ms; {versions[-1]}, by cost: " + ", ".join(target)
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="also measure the code of this git revision")
    ap.add_argument("--costs", default="5,10", help="bcrypt costs (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions (default: %(default)s)")
    args = ap.parse_args(argv)
    reaper = Reaper()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="dgb-auth-", dir="/tmp"))
    reaper.add("temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        versions = {}
        if args.baseline:
            versions[f"before ({args.baseline})"] = snapshot_revision(
                args.baseline, tmp / "baseline"
            )
        versions["this tree"] = snapshot_dockgate(tmp / "src")
        daemon = import_daemon().PrivateDaemon(tmp / "d")
        reaper.add("private dockerd", daemon.cleanup)
        daemon.start()
        costs = tuple(int(c) for c in args.costs.split(","))
        results = measure(
            daemon.socket_path, versions, tmp / "runs", reaper, costs=costs, reps=args.reps
        )
        print(report(results), flush=True)
    finally:
        reaper.run_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
