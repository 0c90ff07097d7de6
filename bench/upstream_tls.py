#!/usr/bin/env python3
"""What TLS to the upstream costs on the hot path: dockgate in front of one private dockerd,
once over its unix socket and once over its `--tlsverify` TCP port (`--upstream-tls-*`),
wrk with keep-alive against each in turn (alternating, so machine drift hits both alike).

Run as root from the repository root::

    python3 bench/upstream_tls.py            # /_ping and /containers/json, 3 rounds of 8 s

Pooled upstream connections are reused, so the handshake is paid once per pooled connection;
what is measured is the record layer (and loopback TCP against the unix socket).
Everything it starts is stopped, and its temp dir removed, on exit.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import trustme

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from loads import run_wrk  # noqa: E402
from support.daemon import PrivateDaemon, free_tcp_port  # noqa: E402
from support.gateway import Gateway, gateway_env  # noqa: E402


class TLSDaemon(PrivateDaemon):
    def __init__(self, base: pathlib.Path, port: int, pki: pathlib.Path) -> None:
        super().__init__(base)
        self.tls_port, self.pki = port, pki

    def command(self) -> list[str]:
        p = self.pki
        return [
            *super().command(),
            *("-H", f"tcp://127.0.0.1:{self.tls_port}", "--tlsverify"),
            *("--tlscacert", str(p / "ca.pem"), "--tlscert", str(p / "server.pem")),
            *("--tlskey", str(p / "server-key.pem")),
        ]


def make_pki(root: pathlib.Path) -> None:
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("dockgate.bench")
    (root / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (root / "server.pem").write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    (root / "server-key.pem").write_bytes(server.private_key_pem.bytes())
    (root / "cert.pem").write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    (root / "key.pem").write_bytes(client.private_key_pem.bytes())


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` (/proc/PID/stat, clock ticks)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument(
        "--path", action="append", default=[], help="(repeatable) default /_ping and a list"
    )
    args = parser.parse_args()
    base = pathlib.Path(tempfile.mkdtemp(prefix="dg-bt-", dir="/tmp"))
    (base / "pki").mkdir()
    make_pki(base / "pki")
    daemon = TLSDaemon(base / "d", free_tcp_port(), base / "pki")
    gateways: dict[str, Gateway] = {}
    try:
        daemon.start()
        image = daemon.make_busybox_image()
        for i in range(5):  # a list with something in it
            daemon.docker("create", "--name", f"bench-{i}", image, "true")
        pki = base / "pki"
        gateways["unix"] = Gateway(daemon.host, "--access-log", "off", env=gateway_env())
        gateways["tls"] = Gateway(
            f"tcp://127.0.0.1:{daemon.tls_port}",
            *("--upstream-tls-ca", str(pki / "ca.pem")),
            *("--upstream-tls-cert", str(pki / "cert.pem")),
            *("--upstream-tls-key", str(pki / "key.pem")),
            *("--access-log", "off"),
            env=gateway_env(),
        )
        for gw in gateways.values():
            gw.start()
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        assert daemon.pid is not None
        for path in args.path or ["/_ping", "/v1.41/containers/json?all=1"]:
            for round_ in range(args.rounds):
                order = list(gateways) if round_ % 2 == 0 else list(reversed(gateways))
                for name in order:
                    gw = gateways[name]
                    run_wrk(gw.http_base + path, 1, conns=args.conns)  # warm the pool
                    before = (_cpu_seconds(gw.pid), _cpu_seconds(daemon.pid))
                    out = run_wrk(gw.http_base + path, args.seconds, conns=args.conns)
                    after = (_cpu_seconds(gw.pid), _cpu_seconds(daemon.pid))
                    assert out["non2xx"] == 0 and out["socket_errors"] == 0, out
                    # CPU microseconds per request, of dockgate and of dockerd.
                    out["gw_us"] = 1e6 * (after[0] - before[0]) / out["requests"]
                    out["d_us"] = 1e6 * (after[1] - before[1]) / out["requests"]
                    results.setdefault((path, name), []).append(out)
                    time.sleep(0.5)
        print(
            f"wrk -t2 -c{args.conns} -d{args.seconds}s keep-alive, median of {args.rounds} rounds"
        )
        print(
            f"{'path':<30} {'upstream':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'dockgate us/req':>16} {'dockerd us/req':>15}"
        )
        for (path, name), runs in results.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(
                f"{path:<30} {name:<8} {med['rps']:>9.0f} {med['p50_ms']:>8.2f} "
                f"{med['p99_ms']:>8.2f} {med['gw_us']:>16.0f} {med['d_us']:>15.0f}"
            )
    finally:
        for gw in gateways.values():
            gw.stop()
        daemon.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root (it starts a private dockerd)")
    sys.exit(main())
