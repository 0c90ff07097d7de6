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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--conns", type=int, default=16)
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
        for path in ("/_ping", "/v1.41/containers/json?all=1"):
            for round_ in range(args.rounds):
                order = list(gateways) if round_ % 2 == 0 else list(reversed(gateways))
                for name in order:
                    url = gateways[name].http_base + path
                    run_wrk(url, 1, conns=args.conns)  # warm the pool
                    out = run_wrk(url, args.seconds, conns=args.conns)
                    assert out["non2xx"] == 0 and out["socket_errors"] == 0, out
                    results.setdefault((path, name), []).append(out)
                    time.sleep(0.5)
        print(f"wrk -t2 -c{args.conns} -d{args.seconds}s, median of {args.rounds} rounds")
        print(f"{'path':<30} {'upstream':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for (path, name), runs in results.items():
            rps = statistics.median(r["rps"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs)
            p99 = statistics.median(r["p99_ms"] for r in runs)
            print(f"{path:<30} {name:<8} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f}")
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
