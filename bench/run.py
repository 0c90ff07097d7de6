#!/usr/bin/env python3
"""Benchmark dockgate against dockerd itself, nginx and HAProxy, all in one run on one daemon.

Run as root from the repository root::

    python3 bench/run.py            # full run, about 14 minutes on 2 cores
    python3 bench/run.py --quick    # smaller sizes and shorter runs, about 3 minutes

It starts a private dockerd (tests/support/daemon.py) that also listens on a loopback TCP port,
puts nginx, HAProxy and dockgate in front of its unix socket, runs each workload against every
target in turn (round-robin, rotating the order each repetition so that machine drift hits all
alike), prints one table and writes it to bench/results/latest.md (raw samples in latest.json).
A second table compares dockgate's authenticated variants (Basic, TLS, mTLS) with unauthenticated
dockgate on small keep-alive requests.
Everything it starts is stopped, and its temp dir removed, on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import auth_burst
import auth_report
import loads
import prereqs
import report
from procs import LoadMeter, Reaper, cmdline, cpu_seconds, process_tree
from report import Cell, Row
from targets import (
    ALL_TARGETS,
    AUTH_TARGETS,
    CLIENT_CERT_TARGETS,
    DEFAULT_TARGETS,
    REPO_ROOT,
    TCP_ONLY_WORKLOADS,
    Instance,
    Launcher,
    check_auth_enforced,
    dockgate_available,
    free_tcp_port,
    import_daemon,
    raw_get,
    runs,
    snapshot_dockgate,
    snapshot_revision,
)

ROUND_WORKLOADS = ("ping", "pyping", "list", "close", "logs", "export", "cat", "run")
ALL_WORKLOADS = (*ROUND_WORKLOADS, "events", "authburst")
LOG_LINE = "dockgate-bench log line 0123456789abcdefghij"  # 44 bytes + newline = 45
IMAGE_TAG = "dockgate-test/busybox:latest"
STREAM_CONTAINER = "dgbench-stream"


@dataclass(frozen=True)
class Params:
    reps: int
    duration_s: int
    py_cycles: int
    py_slice_s: int
    warmup_s: int
    containers: int
    streams: int
    triggers: int
    logs_mb: int
    export_mb: int
    cat_mb: int
    run_n: int
    cli_timeout_s: int
    event_reps: int


FULL = Params(
    reps=3, duration_s=7, warmup_s=2, containers=50, streams=2000, triggers=5,
    logs_mb=60, export_mb=500, cat_mb=50, run_n=3, cli_timeout_s=20, event_reps=2,
    py_cycles=3, py_slice_s=1,
)  # fmt: skip
QUICK = Params(
    reps=1, duration_s=3, warmup_s=1, containers=50, streams=2000, triggers=3,
    logs_mb=20, export_mb=100, cat_mb=10, run_n=3, cli_timeout_s=15, event_reps=1,
    py_cycles=3, py_slice_s=1,
)  # fmt: skip


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    def __init__(self, params: Params, targets: list[str], workloads: list[str], args: Any) -> None:
        self.p = params
        self.targets = targets
        self.workloads = workloads
        self.args = args
        self.reaper = Reaper()
        self.samples: dict[str, dict[str, list[dict[str, Any]]]] = collections.defaultdict(
            lambda: collections.defaultdict(list)
        )
        self.notes: list[str] = []
        self.instances: dict[str, Instance] = {}
        self.skip: set[tuple[str, str]] = set()
        self.profile_text = ""
        self.wrk_shim: pathlib.Path | None = None  # LD_PRELOAD for wrk's client certificate
        self.extra_text: list[str] = []
        self.container_count = 0

    # -- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        self.load = LoadMeter()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="dgb-", dir="/tmp"))
        if not self.args.keep_tmp:
            self.reaper.add("temp dir", lambda: shutil.rmtree(self.tmp, ignore_errors=True))
        self.dockgate_src = REPO_ROOT / "src"
        if any(t.startswith("dockgate") for t in self.targets):
            self.dockgate_src = snapshot_dockgate(self.tmp / "src")
            ok, why = dockgate_available(self.dockgate_src)
            if not ok:
                say(f"dockgate is not runnable ({why}); leaving it out")
                self.notes.append(f"dockgate left out: `serve --help` failed: {why}")
                self.targets = [t for t in self.targets if not t.startswith("dockgate")]
        self.baseline_src: pathlib.Path | None = None
        if self.args.baseline:
            self.baseline_src = snapshot_revision(self.args.baseline, self.tmp / "base")
            self.notes.append(f"dockgate-base: dockgate at git {self.args.baseline}")
        daemon_mod = import_daemon()
        self.daemon = daemon_mod.PrivateDaemon(self.tmp / "d", tcp_port=free_tcp_port())
        self.reaper.add("private dockerd", self.daemon.cleanup)
        say(f"starting private dockerd in {self.daemon.base_dir}")
        self.daemon.start()
        self.image = self.daemon.make_busybox_image(IMAGE_TAG)
        self.launcher = Launcher(
            self.tmp / "targets",
            self.daemon.socket_path,
            self.daemon.tcp_port,
            self.daemon.pid,
            self.reaper,
            dockgate_src=self.dockgate_src,
            baseline_src=self.baseline_src,
            env_policy=self.args.env_policy,
        )
        self.docker_env = self.daemon.env()
        if {"list"} & set(self.workloads):
            say(f"creating {self.p.containers} stopped containers")
            for i in range(self.p.containers):
                self.daemon.docker("create", "--name", f"dgbench-c{i:03d}", self.image, "true")
        if {"logs", "export"} & set(self.workloads):
            self._make_stream_container()
        if "cat" in self.workloads:
            self.cat_input = self.tmp / "cat-input.bin"
            with open(self.cat_input, "wb") as fh:
                for _ in range(self.p.cat_mb):
                    fh.write(os.urandom(1_000_000))
            self.cat_sha, self.cat_size = loads.sha256_file(self.cat_input)
        if "ping" in self.workloads and CLIENT_CERT_TARGETS & set(self.targets):
            self.wrk_shim, why = loads.build_wrk_client_cert(self.tmp / "wrk_client_cert.so")
            if self.wrk_shim is None:
                say(f"wrk cannot present a client certificate ({why}): mTLS by pyload only")
                self.notes.append(f"wrk_client_cert.c not built ({why}): no wrk row for mTLS")
        out = self.daemon.docker("ps", "-aq").stdout.split()
        self.container_count = len(out)
        for target in self.targets:
            say(f"starting {target}")
            self.instances[target] = self.launcher.launch(target)
        self._check_targets()

    def _make_stream_container(self) -> None:
        logs_b = self.p.logs_mb * 1_000_000
        say(
            f"writing {self.p.logs_mb} MB of logs in 45-byte lines and a {self.p.export_mb} MB "
            "file in one container"
        )
        script = (
            f"yes '{LOG_LINE}' | head -c {logs_b}; "
            f"dd if=/dev/zero of=/big bs=1000000 count={self.p.export_mb} 2>/dev/null"
        )
        self.daemon.docker("run", "-d", "--name", STREAM_CONTAINER, self.image, "sh", "-c", script)
        code = self.daemon.docker("wait", STREAM_CONTAINER, timeout=900).stdout.strip()
        if code != b"0":
            raise RuntimeError(f"stream container exited with {code!r}")
        self.stream_id = (
            self.daemon.docker("inspect", "-f", "{{.Id}}", STREAM_CONTAINER).stdout.decode().strip()
        )

    def _check_targets(self) -> None:
        """Every target must answer the calls the workloads make before any timing starts."""
        paths = ["/_ping", "/containers/json?all=1", "/version"]
        for target, inst in self.instances.items():
            for path in paths:
                status, _ = raw_get(inst, path)
                if status != 200:
                    raise RuntimeError(f"{target}: GET {path} answered {status}")
            if target in AUTH_TARGETS:
                check_auth_enforced(inst)
            if not self.p.warmup_s or inst.tcp_port is None:
                continue
            if "ping" in self.workloads and self.runs("ping", target):
                self.wrk(inst, "/_ping", self.p.warmup_s)
            elif "pyping" in self.workloads and self.runs("pyping", target):
                loads.run_pyload([inst], "/_ping", slice_s=self.p.warmup_s, cycles=1)

    def runs(self, workload: str, target: str) -> bool:
        return runs(workload, target, wrk_client_cert=self.wrk_shim is not None)

    def wrk(self, inst: Instance, path: str, secs: int, close: bool = False) -> dict[str, Any]:
        """wrk against `inst`, with its credentials (header, or client certificate)."""
        env = loads.wrk_env(inst, self.wrk_shim)
        url = inst.base_url + path
        return loads.run_wrk(url, secs, close=close, headers=inst.headers, env=env)

    # -- one measurement per workload ---------------------------------------------------------

    def m_ping(self, inst: Instance, rep: int) -> dict[str, Any]:
        return with_cpu(inst, lambda: self.wrk(inst, "/_ping", self.p.duration_s))

    def pyload_slices(self, rep: int) -> None:
        """`dockgate` and its variants in alternating slices over open connections (pyload).

        One pyload run per repetition: `py_cycles` cycles, each with one `py_slice_s` slice per
        target in an order rotated every cycle. A variant's ratio to `dockgate` is taken per
        cycle, between slices about a second apart, so that other work on the machine, which
        comes and goes, hits both alike; the TLS handshakes are made before the first slice.
        """
        group = [t for t in ("dockgate", *AUTH_TARGETS) if t in self.targets]
        group = [t for t in group if self.runs("pyping", t)]
        if not any(t in AUTH_TARGETS for t in group):
            return
        cycles = self.p.py_cycles
        try:
            slices, summary = loads.run_pyload(
                [self.instances[t] for t in group],
                "/_ping",
                slice_s=self.p.py_slice_s,
                cycles=cycles,
                shift=rep * cycles,
            )
        except Exception as exc:
            slices, summary = [], {"error": repr(exc)[:300]}
        summary["rep"] = rep
        self.samples["pyping-runs"]["all"].append(summary)
        for sample in slices:
            sample.update(rep=rep, cycle=rep * cycles + sample["slice"])
            self.samples["pyping-slices"][sample["target"]].append(sample)
        if "error" in summary:
            say(f"rep {rep + 1}/{self.p.reps} pyload slices: ERROR {summary['error']}")
            return
        medians = []
        for target in group:
            rps = [s["rps"] for s in slices if s["target"] == target]
            medians.append(f"{target} {report.median(rps) or 0:.0f}")
        say(
            f"rep {rep + 1}/{self.p.reps} pyload {cycles} x {len(group)} slices, median req/s: "
            + ", ".join(medians)
        )

    def m_list(self, inst: Instance, rep: int) -> dict[str, Any]:
        return loads.run_wrk(f"{inst.base_url}/containers/json?all=1", self.p.duration_s)

    def m_close(self, inst: Instance, rep: int) -> dict[str, Any]:
        return loads.run_wrk(f"{inst.base_url}/_ping", self.p.duration_s, close=True)

    def m_logs(self, inst: Instance, rep: int) -> dict[str, Any]:
        path = f"/containers/{self.stream_id}/logs?stdout=1"
        return loads.curl_download(inst, path, timeout_s=max(60, self.p.logs_mb * 2))

    def m_export(self, inst: Instance, rep: int) -> dict[str, Any]:
        path = f"/containers/{self.stream_id}/export"
        return loads.curl_download(inst, path, timeout_s=max(60, self.p.export_mb // 5))

    def m_cat(self, inst: Instance, rep: int) -> dict[str, Any]:
        name = f"dgbench-cat-{inst.target}-{rep}"
        out_path = self.tmp / f"cat-out-{inst.target}.bin"
        args = ["run", "-i", "--rm", "--name", name, self.image, "cat"]
        res = loads.docker_cli(
            inst,
            self.docker_env,
            args,
            self.p.cli_timeout_s,
            stdin_path=self.cat_input,
            stdout_path=out_path,
        )
        sha, size = loads.sha256_file(out_path)
        out_path.unlink()
        res.update(out_bytes=size, intact=sha == self.cat_sha, in_bytes=self.cat_size)
        if res["timed_out"] or res["rc"] != 0:
            self.daemon.docker("rm", "-f", name, check=False)
        if res["timed_out"]:
            self.skip.add(("cat", inst.target))  # a hang costs the whole timeout; once is enough
        return res

    def m_run(self, inst: Instance, rep: int) -> dict[str, Any]:
        times = []
        failures = []
        for i in range(self.p.run_n):
            name = f"dgbench-run-{inst.target}-{rep}-{i}"
            args = ["run", "--rm", "--name", name, self.image, "sh", "-c", "true"]
            res = loads.docker_cli(inst, self.docker_env, args, self.p.cli_timeout_s)
            if res["timed_out"] or res["rc"] != 0:
                failures.append(res.get("stderr") or f"timed out after {self.p.cli_timeout_s}s")
                self.daemon.docker("rm", "-f", name, check=False)
            else:
                times.append(res["seconds"])
            if res["timed_out"]:
                self.skip.add(("run", inst.target))  # a hang costs the whole timeout
                break
        return {"times": times, "failures": failures}

    # -- the run ------------------------------------------------------------------------------

    def rounds(self) -> None:
        measure: dict[str, Callable[[Instance, int], dict[str, Any]]] = {
            "ping": self.m_ping,
            "list": self.m_list,
            "close": self.m_close,
            "logs": self.m_logs,
            "export": self.m_export,
            "cat": self.m_cat,
            "run": self.m_run,
        }
        workloads = [w for w in ROUND_WORKLOADS if w in self.workloads]
        for rep in range(self.p.reps):
            shift = rep % len(self.targets)
            order = self.targets[shift:] + self.targets[:shift]
            for wl in workloads:
                for target in order:
                    if wl == "pyping":
                        continue  # measured in pyload_slices below
                    inst = self.instances[target]
                    if wl in TCP_ONLY_WORKLOADS and inst.tcp_port is None:
                        continue
                    if not self.runs(wl, target):
                        continue
                    if (wl, target) in self.skip:
                        continue
                    try:
                        sample = measure[wl](inst, rep)
                    except Exception as exc:
                        sample = {"error": repr(exc)[:300]}
                    sample["rep"] = rep
                    self.samples[wl][target].append(sample)
                    say(f"rep {rep + 1}/{self.p.reps} {wl:<6} {target:<12} {brief(wl, sample)}")
                if wl == "pyping":
                    self.pyload_slices(rep)

    def events(self) -> None:
        targets = [t for t in self.targets if self.runs("events", t)]
        for rep in range(self.p.event_reps):
            shift = rep % len(targets)
            for target in targets[shift:] + targets[:shift]:
                inst = self.instances[target]
                fresh = inst
                try:
                    if inst.proc is not None:
                        fresh = self.launcher.launch(target)  # fresh process: clean RSS baseline
                    loads.tcp_warmup(fresh)
                    res = loads.event_fanout(
                        fresh,
                        self.daemon.socket_path,
                        self.p.streams,
                        triggers=self.p.triggers,
                        tag=target,
                    )
                except Exception as exc:
                    res = {"error": repr(exc)[:300]}
                finally:
                    if fresh is not inst:
                        fresh.stop()
                res["rep"] = rep
                self.samples["events"][target].append(res)
                say(f"rep {rep + 1}/{self.p.event_reps} events {target:<12} {brief('events', res)}")
                time.sleep(0.5)

    def profile(self) -> None:
        inst = self.instances.get("dockgate")
        if inst is None or inst.proc is None:
            self.notes.append("profile: skipped (no dockgate target)")
            return
        py_spy = prereqs.ensure_py_spy()
        if py_spy is None:
            self.notes.append("profile: py-spy could not be installed")
            return
        self.args.out.mkdir(parents=True, exist_ok=True)  # else py-spy has nowhere to write
        out = self.args.out / "profile-dockgate-ping.txt"
        secs = max(5, self.p.duration_s)
        say(f"profiling dockgate (pid {inst.proc.pid}) with py-spy during {secs}s of /_ping")
        spy = subprocess.Popen(
            [py_spy, "record", "--nonblocking", "-r", "200", "-d", str(secs + 2), "-f", "raw",
             "-o", str(out), "-p", str(inst.proc.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.reaper.add("py-spy", spy.kill)
        try:
            time.sleep(1)
            res = loads.run_wrk(f"{inst.base_url}/_ping", secs)
            spy.wait(timeout=secs + 60)
        finally:
            if spy.poll() is None:
                spy.kill()
            self.reaper.discard(spy.kill)
        self.profile_text = summarize_profile(out, res)

    def policy_cost(self) -> None:
        """bench/policy_cost.py's in-process figures for dockgate's policy check, if present."""
        script = REPO_ROOT / "bench" / "policy_cost.py"
        if not script.is_file():
            return
        seconds = "0.5" if self.args.quick else "1.0"
        say("measuring dockgate's policy decision cost (bench/policy_cost.py)")
        try:
            proc = subprocess.run(
                [sys.executable, str(script), "--seconds", seconds],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            self.notes.append("policy_cost.py: timed out")
            return
        if proc.returncode != 0:
            self.notes.append(f"policy_cost.py failed: {proc.stderr.strip()[-300:]}")
            return
        self.extra_text.append(proc.stdout.strip())

    def run(self) -> None:
        self.setup()
        if set(self.workloads) & set(ROUND_WORKLOADS):
            self.rounds()
        if "events" in self.workloads:
            self.events()
        if self.args.profile:
            self.profile()
        if any(t.startswith("dockgate") for t in self.targets):
            self.policy_cost()
            if "authburst" in self.workloads:
                self.auth_burst()

    def auth_burst(self) -> None:
        """/_ping latency during a burst of failed logins (bench/auth_burst.py), this tree's
        code only (`python3 bench/auth_burst.py --baseline REV` compares with another)."""
        say("measuring /_ping latency during a burst of 200 failed logins (bench/auth_burst.py)")
        try:
            results = auth_burst.measure(
                self.daemon.socket_path,
                {"this tree": self.dockgate_src},
                self.tmp / "authburst",
                self.reaper,
                costs=(5, 10),
                reps=1 if self.args.quick else 2,
            )
        except (OSError, RuntimeError, TimeoutError) as exc:
            self.notes.append(f"auth_burst: {exc}")
            return
        self.extra_text.append(auth_burst.report(results))

    # -- results ------------------------------------------------------------------------------

    def cells(self) -> tuple[list[Row], dict[str, dict[str, Cell]]]:
        p = self.p
        rows = [
            Row("ping_rps", "GET /_ping, keep-alive, 32 conns: req/s", "higher"),
            Row("ping_p50", "  /_ping p50 latency, ms", "lower", "{:.2f}"),
            Row("ping_p99", "  /_ping p99 latency, ms", "lower", "{:.2f}"),
            Row("ping_cpu", "  /_ping target CPU per request, us", "lower", base="nginx"),
            Row(
                "list_rps",
                f"GET /containers/json?all=1 ({self.container_count} containers): req/s",
                "higher",
            ),
            Row("list_p99", "  /containers/json p99 latency, ms", "lower", "{:.1f}"),
            Row("close_rps", "GET /_ping, Connection: close, 32 conns: req/s", "higher"),
            Row("logs_mbps", f"logs, {p.logs_mb} MB in 45-byte lines: MB/s", "higher", "{:.1f}"),
            Row("export_mbps", f"export, {p.export_mb} MB container: MB/s", "higher"),
            Row("ev_held", f"{p.streams} x GET /events: streams held", "text", "{}"),
            Row("ev_rss", "  RSS growth per stream, KiB", "lower", "{:.1f}", base="nginx"),
            Row("ev_last", "  one event reaches all streams, ms", "delta", "{:.1f}"),
            Row("cat_s", f"docker run -i cat, {p.cat_mb} MB: s", "lower", "{:.2f}"),
            Row("cat_ok", "  output == input (sha256)", "text", "{}"),
            Row("run_s", "docker run --rm sh -c true: s", "lower", "{:.3f}"),
        ]
        cells: dict[str, dict[str, Cell]] = collections.defaultdict(dict)
        for target in self.targets:
            self._wrk_cells(cells, target)
            self._stream_cells(cells, target)
            self._event_cells(cells, target)
            self._docker_cells(cells, target)
        return rows, cells

    def _good(self, wl: str, target: str) -> tuple[list[dict[str, Any]], list[str]]:
        """(samples without errors, error strings), the errors also added to the notes."""
        samples = self.samples.get(wl, {}).get(target, [])
        errs = [s["error"] for s in samples if "error" in s]
        for err in errs:
            self.notes.append(f"{wl} / {target}: {err}")
        return [s for s in samples if "error" not in s], errs

    @staticmethod
    def _numeric(samples: list[dict[str, Any]], key: str, flag: str = "") -> Cell | None:
        per_rep = {s["rep"]: float(s[key]) for s in samples if s.get(key) is not None}
        if not per_rep:
            return None
        return Cell(report.median(list(per_rep.values())), per_rep=per_rep, flag=flag)

    def _wrk_cells(self, cells: dict[str, dict[str, Cell]], target: str) -> None:
        for wl, keys in (
            ("ping", ("rps", "p50_ms", "p99_ms")),
            ("list", ("rps", "p99_ms")),
            ("close", ("rps",)),
        ):
            good, errs = self._good(wl, target)
            flag = ""
            bad = sum(s["socket_errors"] + s["non2xx"] for s in good)
            if bad:
                total = sum(s["requests"] for s in good)
                kinds = ("connect", "read", "write", "timeout")
                sums = {k: sum(s.get(f"err_{k}", 0) for s in good) for k in kinds}
                detail = ", ".join(f"{k} {n:.0f}" for k, n in sums.items())
                non2xx = sum(s["non2xx"] for s in good)
                flag = "!"
                self.notes.append(
                    f"{wl} / {target}: wrk counted errors in {total:.0f} requests: socket errors "
                    f"({detail}), non-2xx {non2xx:.0f}"
                )
            for key in keys:
                row = f"{wl}_{key.removesuffix('_ms')}"
                cell = self._numeric(good, key, flag)
                if cell is not None:
                    cells[row][target] = cell
                elif errs:
                    cells[row][target] = Cell(text="error")
            if wl == "ping" and target != "direct":  # dockerd's own CPU is not comparable
                cell = self._numeric(good, "target_us_per_req", flag)
                if cell is not None:
                    cells["ping_cpu"][target] = cell

    def _stream_cells(self, cells: dict[str, dict[str, Cell]], target: str) -> None:
        for wl in ("logs", "export"):
            good, errs = self._good(wl, target)
            ref = [s["bytes"] for s in self.samples.get(wl, {}).get("direct", []) if "bytes" in s]
            flag = ""
            for s in good:
                if s["status"] != 200 or s["curl_rc"] != 0 or (ref and s["bytes"] != max(ref)):
                    flag = "!"
                    self.notes.append(
                        f"{wl} / {target}: status {s['status']:.0f}, curl exit "
                        f"{s['curl_rc']:.0f}, {s['bytes']:.0f} bytes "
                        f"(direct: {max(ref or [0]):.0f})"
                    )
            cell = self._numeric(good, "mbps", flag)
            if cell is not None:
                cells[f"{wl}_mbps"][target] = cell
            elif errs:
                cells[f"{wl}_mbps"][target] = Cell(text="error")

    def _event_cells(self, cells: dict[str, dict[str, Cell]], target: str) -> None:
        good, errs = self._good("events", target)
        if not good:
            if errs:
                cells["ev_held"][target] = Cell(text="error")
            return
        held = min(s["established"] for s in good)
        cells["ev_held"][target] = Cell(text=f"{held}/{good[0]['requested']}")
        for s in good:
            if s["errors"]:
                self.notes.append(
                    f"events / {target}: {s['established']}/{s['requested']} held; "
                    f"errors: {'; '.join(s['errors'])}"
                )
            s["last_ms_median"] = report.median(s.get("last_ms", []))
        rss = self._numeric(good, "rss_per_stream_kib")
        if rss is not None:
            cells["ev_rss"][target] = rss
        flag = ""
        for s in good:
            if any(d < s["established"] for d in s.get("delivered", [])):
                flag = "!"
                self.notes.append(
                    f"events / {target}: an event reached only {s['delivered']} "
                    f"of {s['established']} streams"
                )
        last = self._numeric(good, "last_ms_median", flag)
        if last is not None:
            cells["ev_last"][target] = last

    def _docker_cells(self, cells: dict[str, dict[str, Cell]], target: str) -> None:
        good, _ = self._good("cat", target)
        if good:
            for s in good:
                ok = not s["timed_out"] and s["rc"] == 0
                s["ok_seconds"] = s["seconds"] if ok else None
            verdicts = []
            for s in good:
                if s["timed_out"]:
                    verdicts.append(f"hang ({s['out_bytes']}/{s['in_bytes']} B)")
                    self.notes.append(
                        f"cat / {target}: no exit within {self.p.cli_timeout_s}s, "
                        f"{s['out_bytes']} of {s['in_bytes']} bytes out; "
                        f"CLI stderr: {s.get('stderr') or '(empty)'}"
                    )
                elif s["rc"] != 0:
                    verdicts.append(f"exit {s['rc']} ({s['out_bytes']}/{s['in_bytes']} B)")
                    self.notes.append(f"cat / {target}: exit {s['rc']}: {s.get('stderr', '')}")
                elif not s["intact"]:
                    verdicts.append(f"differs ({s['out_bytes']}/{s['in_bytes']} B)")
                else:
                    verdicts.append("ok")
            bad = [v for v in verdicts if v != "ok"]
            cells["cat_ok"][target] = Cell(
                text=f"ok x{len(verdicts)}" if not bad else f"{bad[0]}, {len(bad)}/{len(verdicts)}"
            )
            cell = self._numeric(good, "ok_seconds")
            cells["cat_s"][target] = cell if cell is not None else Cell(text=bad[0].split()[0])
        good, _ = self._good("run", target)
        failures = [f for s in good for f in s["failures"]]
        if failures:
            self.notes.append(f"run / {target}: {len(failures)} failed: {failures[0]}")
        for s in good:
            s["median_s"] = report.median(s["times"])
        cell = self._numeric(good, "median_s", "!" if failures else "")
        if cell is not None:
            cells["run_s"][target] = cell
        elif failures:
            cells["run_s"][target] = Cell(text="fails")

    def write_report(self, started: float) -> str:
        rows, cells = self.cells()
        main_targets = [t for t in self.targets if t not in AUTH_TARGETS]
        table = report.build_table(rows, main_targets, cells, "direct")
        auth_table, auth_lines = auth_report.section(self.samples, self.targets)
        goals = issue_targets(cells)
        auth_title = (
            "Authenticated GET /_ping, keep-alive, 32 conns: each variant against "
            "unauthenticated `dockgate` with the same load generator in the same run (wrk "
            "-t2 -c32, bench/templates/wrk_client_cert.c preloaded for the client certificate, "
            "paired by repetition; pyload = bench/pyload.py, 2 processes x 16 connections per "
            "target, alternating slices, paired by cycle)"
        )
        machine = report.machine_info()
        p = self.p
        mode = "quick" if self.args.quick else "full"
        ours = set(process_tree(os.getpid()))
        load = self.load.summary(lambda pid: pid in ours or str(self.tmp) in cmdline(pid))
        load_line = (
            f"CPUs {load['machine_busy_pct']:.0f}% busy in processes during the run, of which "
            f"processes not of this bench {load['foreign_min_pct']:.0f}-"
            f"{load['foreign_max_pct']:.0f}% ({load['foreign_min_cpu_s']:.0f}-"
            f"{load['foreign_max_cpu_s']:.0f} CPU-s)"
        )
        if load["foreign_min_pct"] > 5:
            load_line += ": other work disturbed this run, compare ratios rather than figures"
        params = (
            f"{mode} run, {p.reps} repetition(s) round-robin (events: {p.event_reps}); "
            f"wrk -t2 -c32 -d{p.duration_s}s; pyload: {p.py_cycles} cycles of {p.py_slice_s}s "
            "slices per repetition; figures are medians over repetitions, ratios the "
            f"median of each repetition's ratio; `run --rm`: median of {p.run_n} per repetition; "
            f"event latency: median of {p.triggers} events; "
            f"took {(time.monotonic() - started) / 60:.1f} min"
        )
        text_lines = [
            "",
            report.to_text(table),
            "",
            "ratios are to `direct` (dockerd's TCP port) in the same repetition; the event row "
            "shows the difference in ms; RSS per stream is compared with nginx (dockerd is not a "
            "fresh process); '!' = see notes",
            *(["", "issue 14's targets:", *goals] if goals else []),
            *(
                ["", auth_title + ":", "", report.to_text(auth_table), *auth_lines]
                if auth_table
                else []
            ),
            "",
            params,
            load_line,
            *(f"{k}: {v}" for k, v in machine.items()),
        ]
        if self.notes:
            text_lines += ["", "notes:", *(f"- {n}" for n in dict.fromkeys(self.notes))]
        for extra in [*self.extra_text, self.profile_text]:
            if extra:
                text_lines += ["", extra]
        md = [
            f"# dockgate bench, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
            "",
            report.to_markdown(table),
            "",
            "Ratios are to `direct` (dockerd's own TCP port) in the same repetition of the same "
            "run; for the event row the difference in ms; RSS per stream is compared with nginx "
            "(dockerd is not a fresh process). `direct-unix` is dockerd's unix socket (wrk cannot "
            "use it). `!` marks a cell with errors, see the notes.",
            "",
            *(["Issue 14's targets:", "", *(f"- {g}" for g in goals), ""] if goals else []),
            *(
                [
                    auth_title + ".",
                    "",
                    report.to_markdown(auth_table),
                    "",
                    *(f"- {x}" for x in auth_lines),
                    "",
                ]
                if auth_table
                else []
            ),
            params + ".",
            "",
            load_line + ".",
            "",
            "| machine | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in machine.items()),
        ]
        if self.notes:
            md += ["", "Notes:", "", *(f"- {n}" for n in dict.fromkeys(self.notes))]
        for extra in [*self.extra_text, self.profile_text]:
            if extra:
                md += ["", "```", extra, "```"]
        self.args.out.mkdir(parents=True, exist_ok=True)
        (self.args.out / "latest.md").write_text("\n".join(md) + "\n")
        raw = {
            "params": asdict(p),
            "machine": machine,
            "targets": self.targets,
            "samples": self.samples,
            "notes": self.notes,
            "load": load,
        }
        (self.args.out / "latest.json").write_text(json.dumps(raw, indent=1, default=str))
        return "\n".join(text_lines)


# Issue 14's targets for `dockgate`: (row, reference column, bound, what the bound says). A
# ratio is paired by repetition (report.compare); the event row is a difference in ms.
ISSUE_TARGETS = (
    ("ping_rps", "nginx", 0.85, "/_ping req/s at least 0.85x nginx's"),
    ("ping_cpu", "nginx", 1.5, "CPU per /_ping at most 1.5x nginx's"),
    ("ping_p50", "nginx", 1.0, "/_ping p50 at most nginx's"),
    ("ev_last", "direct", 10.0, "one event to every stream within direct + 10 ms"),
    ("cat_s", "direct", 1.05, "docker run -i cat within 1.05x direct"),
    ("run_s", "direct", 1.1, "docker run --rm within 1.1x direct"),
    ("ev_rss", "", 6.0, "idle stream memory at most 6 KiB"),
)


def issue_targets(cells: dict[str, dict[str, Cell]], target: str = "dockgate") -> list[str]:
    """One line per target of issue 14 that this run measured: met or missed, and by what."""
    lines = []
    for key, ref, bound, what in ISSUE_TARGETS:
        cell = cells.get(key, {}).get(target)
        if cell is None or cell.value is None:
            continue
        if not ref:
            value = cell.value
            shown = f"{value:.1f} KiB"
        else:
            base = cells.get(key, {}).get(ref)
            if base is None or base.value is None:
                continue
            better = "delta" if key == "ev_last" else "lower"
            rel = report.compare(Row(key, key, better), cell, base)
            if rel is None:
                continue
            value = rel
            shown = f"{rel:+.1f} ms" if better == "delta" else f"{rel:.2f}x"
        met = value >= bound if key == "ping_rps" else value <= bound
        lines.append(f"{what}: {shown}, {'met' if met else 'missed'}")
    return lines


def with_cpu(inst: Instance, load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `load` and add the CPU time the target's processes used meanwhile, per request."""
    pids = inst.pids()
    before = cpu_seconds(pids)
    res = dict(load())
    used = cpu_seconds(pids) - before
    res["target_cpu_s"] = used
    if res.get("requests"):
        res["target_us_per_req"] = used / res["requests"] * 1e6
    return res


def brief(wl: str, s: dict[str, Any]) -> str:
    """One progress line for a sample."""
    if "error" in s:
        return f"ERROR {s['error']}"
    if wl in ("ping", "list", "close"):
        errs = s["socket_errors"] + s["non2xx"]
        return (
            f"{s['rps']:.0f} req/s p50 {s.get('p50_ms', 0):.2f} ms p99 {s.get('p99_ms', 0):.2f} ms"
            + (f" ({errs:.0f} errors)" if errs else "")
            + (f", target {s['target_us_per_req']:.0f} us/req" if "target_us_per_req" in s else "")
        )
    if wl in ("logs", "export"):
        return (
            f"{s['mbps']:.1f} MB/s ({s['bytes']:.0f} B in {s['seconds']:.2f}s, "
            f"HTTP {s['status']:.0f})"
        )
    if wl == "cat":
        state = "timeout" if s["timed_out"] else f"exit {s['rc']}"
        return f"{s['seconds']:.2f}s {state} intact={s['intact']} out={s['out_bytes']}"
    if wl == "run":
        return f"times {[round(t, 3) for t in s['times']]} failures {len(s['failures'])}"
    if wl == "events":
        return (
            f"held {s['established']}/{s['requested']} in {s['open_seconds']:.1f}s, "
            f"rss/stream {s.get('rss_per_stream_kib', 0):.1f} KiB, "
            f"last {[round(x, 1) for x in s.get('last_ms', [])]} ms, delivered {s.get('delivered')}"
        )
    return str(s)


def summarize_profile(path: pathlib.Path, wrk: dict[str, float]) -> str:
    """Top frames by own time and by inclusive time from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return "profile: py-spy wrote nothing"
    for line in lines:
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    if not total:
        return "profile: no samples"
    out = [
        f"py-spy on dockgate (1 worker) during GET /_ping, wrk -c32: {wrk['rps']:.0f} req/s, "
        f"{total} samples (idle samples excluded by py-spy)",
        "own time:",
        *(f"  {n / total:6.1%}  {name}" for name, n in own.most_common(15)),
        "inclusive time:",
        *(f"  {n / total:6.1%}  {name}" for name, n in incl.most_common(15)),
    ]
    return "\n".join(out)


def _frame_name(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({pathlib.Path(file).name})" if file else name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, 1 repetition (~3 min)")
    ap.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated, from {','.join(ALL_TARGETS)} (default: %(default)s)",
    )
    ap.add_argument(
        "--workloads",
        default=",".join(ALL_WORKLOADS),
        help="comma-separated subset of %(default)s",
    )
    ap.add_argument("--reps", type=int, help="repetitions of the round-robin")
    ap.add_argument("--duration", type=int, help="seconds per wrk run")
    ap.add_argument("--py-cycles", type=int, help="pyload slices per target and repetition")
    ap.add_argument("--py-slice", type=int, help="seconds per pyload slice")
    ap.add_argument("--streams", type=int, help="concurrent GET /events streams")
    ap.add_argument("--logs-mb", type=int, help="MB of container logs to read back")
    ap.add_argument("--export-mb", type=int, help="MB file in the exported container")
    ap.add_argument("--cat-mb", type=int, help="MB piped through docker run -i cat")
    ap.add_argument("--profile", action="store_true", help="py-spy dockgate during /_ping")
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also run `dockgate-base`: dockgate at git REV, to compare a change in one run",
    )
    ap.add_argument(
        "--env-policy",
        action="store_true",
        help="dockgate targets without the policy file, htpasswd and admin listener: only the "
        "Tecnativa variables, as before issue 14 (for a --baseline older than the options)",
    )
    ap.add_argument("--keep-tmp", action="store_true", help="keep target configs and logs")
    ap.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent / "results",
        help="where latest.md and latest.json go (default: bench/results)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (it starts a private dockerd)", file=sys.stderr)
        return 2
    params = QUICK if args.quick else FULL
    overrides = {
        "reps": args.reps,
        "duration_s": args.duration,
        "py_cycles": args.py_cycles,
        "py_slice_s": args.py_slice,
        "streams": args.streams,
        "logs_mb": args.logs_mb,
        "export_mb": args.export_mb,
        "cat_mb": args.cat_mb,
    }
    params = replace(params, **{k: v for k, v in overrides.items() if v is not None})
    targets = [t for t in args.targets.split(",") if t]
    if args.baseline and "dockgate-base" not in targets:
        targets.append("dockgate-base")
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [t for t in targets if t not in ALL_TARGETS]
    unknown += [w for w in workloads if w not in ALL_WORKLOADS]
    if unknown or "direct" not in targets:
        print(f"bench: unknown {unknown} (and `direct` is required)", file=sys.stderr)
        return 2
    started = time.monotonic()
    prereqs.ensure_tools(need_dockgate=any(t.startswith("dockgate") for t in targets))
    if set(AUTH_TARGETS) & set(targets):
        prereqs.ensure_pip_module("trustme")  # bench/credentials.py: the TLS certificates
    if CLIENT_CERT_TARGETS & set(targets) and "ping" in workloads:
        prereqs.ensure_cc()  # to build wrk's client-certificate shim
    nofile = prereqs.raise_nofile()
    if params.streams * 2 + 200 > nofile:
        print(f"bench: RLIMIT_NOFILE is {nofile}; streams may fail", flush=True)
    bench = Bench(params, targets, workloads, args)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    # Ctrl-C raises KeyboardInterrupt even where the shell started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        bench.run()
        text = bench.write_report(started)
        print(text, flush=True)
        print(f"\nwrote {args.out / 'latest.md'} and latest.json", flush=True)
    except KeyboardInterrupt:
        print("\nbench: interrupted", flush=True)
        return 130
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            say("cleaning up")
            bench.reaper.run_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
