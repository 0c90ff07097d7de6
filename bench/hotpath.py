"""The gateway's own cost per small request, without dockerd in the way.

`bench/run.py` measures dockgate against a real dockerd, which takes a large, varying share of
the machine's two cores; the gateway's CPU per request moves with it. This script puts a
scripted daemon behind the gateway (a uvloop server in a process of its own that answers every
request at once with the head dockerd 20.10 sends for `/_ping`, its `Date` changing each
second), loads it with wrk over keep-alive connections, and reads the gateway's CPU time from
`/proc`: what is left is the gateway's work per request. The gateway runs as bench/run.py's
`dockgate` target does (the policy file with bindings, an htpasswd file, metrics on an admin
listener, the access log to a file).

    python3 bench/hotpath.py                        # this tree: us of gateway CPU per request
    python3 bench/hotpath.py --baseline ed6cd9a     # and the code of a git revision, alternating
    python3 bench/hotpath.py --profile cprofile     # the top functions under cProfile
    python3 bench/hotpath.py --profile cprofile --baseline ed6cd9a   # both, one after the other
    python3 bench/hotpath.py --limits --baseline HEAD  # this tree's policy with limits, vs none
    python3 bench/hotpath.py --nginx                # and nginx (bench's template) in the rounds
    python3 bench/hotpath.py --nginx --profile perf # where each one's CPU goes, by binary
    python3 bench/hotpath.py --nginx --bare         # and a Python relay doing nothing else
    python3 bench/hotpath.py --src /tmp/built/src   # and the package under a path, as it is

`--nginx` puts nginx, as bench/run.py runs it (templates/nginx.conf: two workers, upstream
keep-alive, an access log), in front of the same scripted daemon: its CPU per request (all its
processes) is the yardstick the issue's targets are set against, without dockerd's share
moving under both. `--profile perf` records each subject with `perf record` during one wrk run
and splits its CPU per request by where it ran: the kernel (the system calls and the loopback
network stack, which nginx pays too), the interpreter, uvloop, httptools, libc, nginx.
`--bare` adds bench/barerelay.py, a Python relay on uvloop that only relays (no parsing, no
policy, no log): the least any gateway written on this loop pays per request.

`--src PATH` adds the gateway run from the package under PATH as it is there, not copied: a
built copy of src/, such as one compiled with mypyc (docs/mypyc.md).

With `--baseline`, the two gateways run one after the other in `--rounds` rounds and the
ratio of their CPU per request is taken in each round (the median is printed), so that other
work on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import os
import pathlib
import pstats
import re
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time

from credentials import CLIENT_CN, USER, make_htpasswd
from loads import run_wrk
from procs import cpu_seconds, process_tree
from targets import (
    TEMPLATES,
    dockgate_env,
    free_tcp_port,
    nginx_argv,
    snapshot_dockgate,
    snapshot_revision,
)

LISTENING_RE = re.compile(r"dockgate: listening on tcp://127\.0\.0\.1:(\d+)")
START_TIMEOUT_S = 30.0
# What dockerd 20.10 answers to `GET /_ping` (its Date is filled in each second).
PING_HEAD = (
    b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nCache-Control: no-cache, no-store, "
    b"must-revalidate\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Docker-Experimental: false\r\nOstype: linux\r\nPragma: no-cache\r\n"
    b"Server: Docker/20.10.24 (linux)\r\nDate: %s\r\n\r\nOK"
)


# -- the scripted daemon ---------------------------------------------------------------------


class _Daemon(asyncio.Protocol):
    """Answers each complete request head (requests without bodies only) at once."""

    answer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(_Daemon.answer * count)  # type: ignore[attr-defined]


def serve_daemon(path: str) -> None:
    import uvloop  # noqa: PLC0415 - a dependency of dockgate, present where it runs

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            date = email.utils.formatdate(usegmt=True).encode()
            _Daemon.answer = PING_HEAD % date
            loop.call_later(1.0, tick)

        tick()
        server = await loop.create_unix_server(_Daemon, path)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the gateway -----------------------------------------------------------------------------


# `--limits`: the loopback callers' policy (`bench`, the last of the template) with limits that
# every request is checked against and none reaches (policy/limits.py; issue 15 and later).
BENCH_LIMITS = "    limits: {rate: 100000000, burst: 100000000, concurrent: 9999, streams: 9999}\n"


def start_gateway(
    src: pathlib.Path,
    work: pathlib.Path,
    daemon: pathlib.Path,
    profile: pathlib.Path | None,
    *,
    limits: bool = False,
) -> tuple[subprocess.Popen[bytes], int]:
    work.mkdir(parents=True, exist_ok=True)
    htpasswd, _ = make_htpasswd(work)
    policy = work / "policy.yaml"
    template = string.Template((TEMPLATES / "dockgate-policy.yaml").read_text())
    text = template.substitute(user=USER, client_cn=CLIENT_CN)
    policy.write_text(text + BENCH_LIMITS if limits else text)
    argv = [sys.executable]
    if profile is not None:
        argv += ["-m", "cProfile", "-o", str(profile)]
    argv += [
        *("-m", "dockgate", "serve", "--listen", "tcp://127.0.0.1:0"),
        *("--upstream", f"unix://{daemon}", "--access-log", str(work / "access.log")),
        *("--policy", str(policy), "--htpasswd", str(htpasswd)),
        *("--admin-listen", f"tcp://127.0.0.1:{free_tcp_port()}"),
    ]
    stderr = work / "stderr.log"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, env=dockgate_env(src), stderr=err, stdout=err)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = LISTENING_RE.search(stderr.read_text())
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the gateway did not start:\n{stderr.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_nginx(work: pathlib.Path, daemon: pathlib.Path) -> tuple[subprocess.Popen[bytes], int]:
    """nginx as bench/run.py's `nginx` target runs it, in front of the scripted daemon."""
    prefix = work / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_tcp_port()
    return start_listening(nginx_argv(prefix, daemon, port), port, prefix / "stdout.log"), port


def start_bare(work: pathlib.Path, daemon: pathlib.Path) -> tuple[subprocess.Popen[bytes], int]:
    """bench/barerelay.py: a Python relay on uvloop that does nothing else."""
    port = free_tcp_port()
    argv = [sys.executable, "barerelay.py", str(port), str(daemon)]
    return start_listening(argv, port, work / "bare.log"), port


def start_listening(argv: list[str], port: int, log: pathlib.Path) -> subprocess.Popen[bytes]:
    """`argv` started, once it accepts connections on 127.0.0.1:`port`."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-2000:]}")


def measure(port: int, pids: list[int], seconds: int) -> tuple[float, float]:
    """(req/s, CPU us per request of `pids`) over one wrk run of keep-alive `/_ping`."""
    before = cpu_seconds(pids)
    res = run_wrk(f"http://127.0.0.1:{port}/_ping", seconds)
    used = cpu_seconds(pids) - before
    if res["socket_errors"] or res["non2xx"] or not res["requests"]:
        raise RuntimeError(f"wrk saw errors: {res}")
    return res["rps"], used / res["requests"] * 1e6


# Where a sample ran, by the file perf names (in its base name): what each share is spent on.
PERF_PLACES = (
    ("kernel", ("[kernel",)),
    ("interpreter", ("libpython", "python3")),
    ("uvloop", ("loop.cpython",)),
    ("httptools", ("parser.cpython", "url_parser.cpython")),
    ("libc", ("libc.so", "libc-")),
    ("nginx", ("nginx",)),
    # A gateway compiled with mypyc (--src): the shared library of its modules, HASH__mypyc.*.
    ("compiled", ("__mypyc.",)),
)


def perf_split(data: pathlib.Path) -> dict[str, float]:
    """Share of the samples in `data` per place (PERF_PLACES, and "other")."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-g", "none"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares: dict[str, float] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[0].endswith("%") or line.lstrip().startswith("#"):
            continue
        share, dso = float(fields[0][:-1]) / 100, fields[1]
        place = next(
            (name for name, marks in PERF_PLACES if any(m in dso for m in marks)),
            "other",
        )
        shares[place] = shares.get(place, 0.0) + share
    return shares


def measure_perf(name: str, port: int, pids: list[int], seconds: int, work: pathlib.Path) -> str:
    """One wrk run under `perf record`: the CPU per request, split by place."""
    data = work / f"perf-{name.replace(' ', '-')}.data"
    argv = ["perf", "record", "-q", "-F", "1999", "-o", str(data)]
    recorder = subprocess.Popen(
        [*argv, "-p", ",".join(map(str, pids))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # (perf attaches)
    try:
        rps, us = measure(port, pids, seconds)
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
    shares = perf_split(data)
    parts = ", ".join(
        f"{place} {us * share:.1f}"
        for place, share in sorted(shares.items(), key=lambda kv: -kv[1])
        if share >= 0.005
    )
    return f"{name:<16} {rps:8.0f} req/s {us:6.1f} us/req under perf: {parts}"


def top_functions(path: pathlib.Path, count: int) -> str:
    stats = pstats.Stats(str(path))
    total = sum(tt for _, _, tt, _, _ in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    lines = [f"cProfile, own time, {total:.2f} s in all:"]
    for (file, line, name), (_, calls, tt, ct, _) in rows[:count]:
        where = f"{pathlib.Path(file).name}:{line}" if line else file
        lines.append(
            f"  {tt / total:6.1%}  own {tt * 1e6 / max(calls, 1):6.2f} us/call  "
            f"incl {ct / total:6.1%}  {calls:8d} calls  {name} ({where})"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="REV", help="also the gateway at git REV")
    ap.add_argument(
        "--src",
        metavar="PATH",
        type=pathlib.Path,
        help="also the package under PATH (absolute), as it is",
    )
    ap.add_argument("--nginx", action="store_true", help="also nginx, as bench/run.py runs it")
    ap.add_argument("--bare", action="store_true", help="also bench/barerelay.py (the floor)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument(
        "--profile",
        choices=["cprofile", "perf"],
        help="cprofile: the gateways' Python functions; perf: every subject's CPU by place",
    )
    ap.add_argument("--top", type=int, default=30, help="functions shown with --profile")
    ap.add_argument(
        "--limits", action="store_true", help="this tree's policy with limits (not the baseline's)"
    )
    ap.add_argument("--daemon", metavar="SOCKET", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args()
    if args.daemon:
        serve_daemon(args.daemon)
        return 0
    with tempfile.TemporaryDirectory(prefix="dgb-hot-") as tmp:
        work = pathlib.Path(tmp)
        sock = work / "daemon.sock"
        daemon = subprocess.Popen([sys.executable, __file__, "--daemon", str(sock)])
        started: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            while not sock.exists():
                time.sleep(0.05)
            trees = {"this tree": snapshot_dockgate(work / "src")}
            if args.baseline:
                trees[f"base {args.baseline}"] = snapshot_revision(args.baseline, work / "base")
            if args.src:
                trees["src"] = args.src.resolve()
            if args.profile == "cprofile":
                for number, (name, src) in enumerate(trees.items()):
                    out = work / f"profile-{number}.out"
                    limits = args.limits and name == "this tree"
                    proc, port = start_gateway(
                        src, work / f"prof-{number}", sock, out, limits=limits
                    )
                    started[name] = (proc, port)
                    run_wrk(f"http://127.0.0.1:{port}/_ping", 1)
                    rps, us = measure(port, [proc.pid], args.duration)
                    stop(proc)
                    print(f"{name} under cProfile: {rps:.0f} req/s, {us:.1f} us/req")
                    print(top_functions(out, args.top))
                return 0
            for name, src in trees.items():
                limits = args.limits and name == "this tree"
                dest = work / name.replace(" ", "-")
                started[name] = start_gateway(src, dest, sock, None, limits=limits)
            if args.nginx:
                started["nginx"] = start_nginx(work, sock)
            if args.bare:
                started["bare relay"] = start_bare(work, sock)
            for _, port in started.values():
                run_wrk(f"http://127.0.0.1:{port}/_ping", 1)  # warm-up
            if args.profile == "perf":
                for name, (proc, port) in started.items():
                    pids = process_tree(proc.pid)
                    print(measure_perf(name, port, pids, args.duration, work))
                return 0
            compare_rounds(started, args.rounds, args.duration, args.baseline, args.src)
        finally:
            for proc, _ in started.values():
                if proc.poll() is None:
                    stop(proc)
            daemon.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=10)
    return 0


def compare_rounds(
    started: dict[str, tuple[subprocess.Popen[bytes], int]],
    rounds: int,
    duration: int,
    baseline: str | None,
    src: pathlib.Path | None = None,
) -> None:
    """Each subject in turn, in `rounds` rounds (alternating order); medians and the ratios of
    this tree to the others, taken round by round so that other work hits both alike."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in started}
    for round_no in range(rounds):
        names = list(started) if round_no % 2 == 0 else list(reversed(started))
        for name in names:
            proc, port = started[name]
            rps, us = measure(port, process_tree(proc.pid), duration)
            results[name].append((rps, us))
            print(f"round {round_no + 1}: {name:<16} {rps:8.0f} req/s {us:6.1f} us/req")
    for name, samples in results.items():
        us = statistics.median(s[1] for s in samples)
        rps = statistics.median(s[0] for s in samples)
        print(f"{name:<16} median {rps:8.0f} req/s, {us:6.1f} us of CPU/req")
    others = [f"base {baseline}"] if baseline else []
    others += ["src"] if src else []
    others += [name for name in ("nginx", "bare relay") if name in started]
    for other in others:
        pairs = list(zip(results["this tree"], results[other], strict=True))
        cpu = [a[1] / b[1] for a, b in pairs]
        rate = [a[0] / b[0] for a, b in pairs]
        print(
            f"this tree / {other}: CPU per request median {statistics.median(cpu):.2f}x "
            f"(rounds: {', '.join(f'{r:.2f}' for r in cpu)}); req/s median "
            f"{statistics.median(rate):.2f}x"
        )


if __name__ == "__main__":
    os.chdir(pathlib.Path(__file__).resolve().parent)
    sys.exit(main())
