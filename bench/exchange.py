"""The gateway's own Python per keep-alive request, without system calls: in process.

One `ClientConnection` with mock transports (tests/support/inprocess.py), a text access log to
a `StringIO`; the client's `GET /v1.41/_ping` (the same bytes each time, as a keep-alive client
sends them) and the daemon's whole answer, each in one `data_received`, `--count` times per
run; the best of `--runs`. It resolves changes of a tenth of a microsecond that
`bench/hotpath.py` (the gateway's CPU under wrk, system calls and the loop included) cannot.

    python3 bench/exchange.py                       # this tree: us of Python per exchange
    python3 bench/exchange.py --baseline main       # and git REV's, alternating, with the ratio
    python3 bench/exchange.py --limits              # under a policy with limits (never reached)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from targets import REPO_ROOT, snapshot_revision

# A policy whose limits every exchange is checked against and none reaches (policy/limits.py):
# what the limiter costs per request (`--limits`; a tree before issue 15 cannot load it).
LIMITED_POLICY = """\
policies:
  allow-all:
    guardrails: false
    rules:
      - allow: {sections: ["*"]}
      - allow: {unknown: true}
    limits: {rate: 1000000000, burst: 1000000000, concurrent: 1000, streams: 1000}
"""


def measure(count: int, runs: int, *, limits: bool = False) -> float:
    """Best us per exchange over `runs` runs of `count` exchanges (this process's dockgate)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from dockgate.observe.accesslog import AccessLog  # noqa: PLC0415
    from dockgate.observe.logsink import LineSink  # noqa: PLC0415
    from support.inprocess import ClockLoop, answer, open_connection, request  # noqa: PLC0415

    loop = ClockLoop()
    stream = io.StringIO()
    first = open_connection(loop, LIMITED_POLICY) if limits else open_connection(loop)
    context = dataclasses.replace(first.context, access_log=AccessLog(LineSink(stream)))
    relay = open_connection(loop, context=context)
    ping = request("GET", "/v1.41/_ping")
    ok = answer(200, b"OK", "Api-Version: 1.41", "Content-Type: text/plain; charset=utf-8")
    for _ in range(3):  # the head caches and the pooled connection warm
        relay.send(ping)
        relay.daemon().send(ok)
    conn, daemon = relay.conn, relay.daemon()

    async def run() -> float:
        best = float("inf")
        for _ in range(runs):
            started = time.perf_counter()
            for _ in range(count):
                conn.data_received(ping)
                daemon.conn.data_received(ok)
            best = min(best, (time.perf_counter() - started) / count)
            stream.seek(0)
            stream.truncate()
            relay.client.data.clear()
            daemon.transport.data.clear()
        return best * 1e6

    runner = asyncio.new_event_loop()  # (a running loop: the log sink buffers, as in the gateway)
    try:
        return runner.run_until_complete(run())
    finally:
        runner.close()
        loop.shut()


def in_child(src: pathlib.Path, count: int, runs: int, *, limits: bool = False) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    argv = [sys.executable, __file__, "--count", str(count), "--runs", str(runs), "--one"]
    argv += ["--limits"] if limits else []
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.split()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="REV", help="also the code of git REV, alternating")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--count", type=int, default=100_000, help="exchanges per run")
    ap.add_argument("--runs", type=int, default=5, help="runs per round (the best is taken)")
    ap.add_argument(
        "--limits",
        action="store_true",
        help="this tree under a policy with limits, against this tree without (no --baseline)",
    )
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    if args.one:
        print(f"{measure(args.count, args.runs, limits=args.limits):.4f}")
        return 0
    if args.limits:
        return compare_limits(args.rounds, args.count, args.runs)
    with tempfile.TemporaryDirectory(prefix="dgb-exchange-") as tmp:
        trees = {"this tree": REPO_ROOT / "src"}
        if args.baseline:
            base_src = snapshot_revision(args.baseline, pathlib.Path(tmp) / "base")
            trees[f"base {args.baseline}"] = base_src
        results: dict[str, list[float]] = {name: [] for name in trees}
        for round_no in range(args.rounds):
            names = list(trees) if round_no % 2 == 0 else list(reversed(trees))
            for name in names:
                us = in_child(trees[name], args.count, args.runs)
                results[name].append(us)
                print(f"round {round_no + 1}: {name:<16} {us:6.2f} us of Python per exchange")
        for name, samples in results.items():
            print(
                f"{name:<16} best {min(samples):6.2f}, median {statistics.median(samples):6.2f} us"
            )
        if args.baseline:
            base = results[f"base {args.baseline}"]
            ratios = [a / b for a, b in zip(results["this tree"], base, strict=True)]
            print(
                f"this tree / base: median {statistics.median(ratios):.2f}x "
                f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
    return 0


def compare_limits(rounds: int, count: int, runs: int) -> int:
    """This tree with a policy with limits and without, alternating."""
    src = REPO_ROOT / "src"
    results: dict[bool, list[float]] = {False: [], True: []}
    for round_no in range(rounds):
        order = [False, True] if round_no % 2 == 0 else [True, False]
        for limits in order:
            us = in_child(src, count, runs, limits=limits)
            results[limits].append(us)
            name = "limits" if limits else "no limits"
            print(f"round {round_no + 1}: {name:<10} {us:6.2f} us of Python per exchange")
    for limits, samples in results.items():
        name = "limits" if limits else "no limits"
        print(f"{name:<10} best {min(samples):6.2f}, median {statistics.median(samples):6.2f} us")
    ratios = [a / b for a, b in zip(results[True], results[False], strict=True)]
    print(
        f"limits / no limits: median {statistics.median(ratios):.2f}x "
        f"(+{statistics.median(results[True]) - statistics.median(results[False]):.2f} us; "
        f"rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )
    return 0


if __name__ == "__main__":
    os.chdir(pathlib.Path(__file__).resolve().parent)
    sys.exit(main())
