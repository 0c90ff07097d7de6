"""The authenticated variants' table: each against unauthenticated `dockgate` in the same run.

Rows are (load generator, target), and a ratio is only ever taken between two rows of the same
generator, paired as the samples were taken:

- wrk: the `/_ping` round-robin runs (7 s, one per target and repetition; for the client
  certificate, bench/templates/wrk_client_cert.c preloaded); paired by repetition, like the main
  table.
- pyload (bench/pyload.py): alternating 1 s slices over connections opened before the first
  slice (run.py's `pyload_slices`); paired by cycle, i.e. slices about a second apart.

The reported ratio is the median of the pairs' ratios, with its quartiles and the number of pairs.
"""

from __future__ import annotations

import statistics
from typing import Any

from targets import AUTH_TARGETS

# The target: an authenticated variant at most 10% slower than unauthenticated dockgate,
# read as at most 10% fewer requests per second with the same load generator.
TARGET_RATIO = 0.90
BASE = "dockgate"

Sample = dict[str, Any]
Samples = dict[str, dict[str, list[Sample]]]
# generator, where its samples are, and what pairs them
GENERATORS = (("wrk", "ping", "rep"), ("pyload", "pyping-slices", "cycle"))


def _good(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if "error" not in s and s.get("requests")]


def _pairs(samples: list[Sample], base: list[Sample], key: str, pair: str) -> list[float]:
    """value / base value, for each repetition or cycle (`pair`) that both have."""
    by_pair = {s[pair]: float(s[key]) for s in _good(base) if s.get(key)}
    out = []
    for s in _good(samples):
        b = by_pair.get(s[pair])
        if b and s.get(key):
            out.append(float(s[key]) / b)
    return out


def _verdict(ratio: float) -> str:
    """`met` or `missed`, with the ratio to 3 decimals (2 could show 0.90 for a miss)."""
    return f"{'met' if ratio >= TARGET_RATIO else 'missed'} ({ratio:.3f}x)"


def _median(samples: list[Sample], key: str) -> float | None:
    values = [float(s[key]) for s in _good(samples) if s.get(key) is not None]
    return statistics.median(values) if values else None


def _spread(ratios: list[float]) -> str:
    med = statistics.median(ratios)
    if len(ratios) < 4:
        each = ", ".join(f"{r:.2f}" for r in ratios)
        return f"{med:.2f}x ({each})"
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return f"{med:.2f}x ({q1:.2f}-{q3:.2f}, {len(ratios)} pairs)"


def section(samples: Samples, targets: list[str]) -> tuple[list[list[str]], list[str]]:
    """(table, summary and note lines); empty when there is no authenticated variant."""
    auth = [t for t in targets if t in AUTH_TARGETS]
    if not auth:
        return [], []
    table = [
        [
            "generator",
            "target",
            "req/s",
            "vs direct",
            "vs dockgate: median (quartiles or each)",
            f"target (>= {TARGET_RATIO:.2f}x)",
            "p50 ms",
            "p99 ms",
            "target CPU us/req (vs dockgate)",
        ]
    ]
    ratios: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    for tool, where, pair in GENERATORS:
        by_target = samples.get(where, {})
        base = by_target.get(BASE, [])
        for target in (BASE, *auth):
            mine = by_target.get(target, [])
            good = _good(mine)
            notes += _notes(tool, target, mine)
            if not good:
                continue
            rps = _median(mine, "rps")
            vs_direct = "-"
            if tool == "wrk":
                direct = _pairs(mine, samples.get("ping", {}).get("direct", []), "rps", "rep")
                vs_direct = f"{statistics.median(direct):.2f}x" if direct else "-"
            vs_base = verdict = "-"
            if target != BASE:
                pairs = _pairs(mine, base, "rps", pair)
                if pairs:
                    ratios[(tool, target)] = statistics.median(pairs)
                    vs_base = _spread(pairs)
                    verdict = _verdict(ratios[(tool, target)])
            flag = "!" if any(s.get("socket_errors") or s.get("non2xx") for s in good) else ""
            cols = [tool, target, f"{rps:.0f}{flag}" if rps is not None else "-", vs_direct]
            cols += [vs_base, verdict]
            for key in ("p50_ms", "p99_ms"):
                value = _median(mine, key)
                cols.append("-" if value is None else f"{value:.2f}")
            requests = sum(float(s["requests"]) for s in good)
            cpu = sum(float(s.get("target_cpu_s") or 0.0) for s in good)
            cpu_text = f"{cpu / requests * 1e6:.0f}" if requests and cpu else "-"
            cpu_pairs = [] if target == BASE else _pairs(mine, base, "target_us_per_req", pair)
            if cpu_pairs:
                cpu_text += f" ({statistics.median(cpu_pairs):.2f}x)"
            cols.append(cpu_text)
            table.append(cols)
    return table, _summary(auth, ratios, samples) + notes + _pyload_notes(samples)


def _notes(tool: str, target: str, samples: list[Sample]) -> list[str]:
    notes = []
    errors = [s["error"] for s in samples if "error" in s]
    if errors:
        notes.append(f"{tool} / {target}: {len(errors)} run(s) failed: {errors[0]}")
    good = _good(samples)
    bad = sum(float(s.get("socket_errors", 0)) + float(s.get("non2xx", 0)) for s in good)
    if bad:
        total = sum(float(s["requests"]) for s in good)
        notes.append(f"{tool} / {target} (!): {bad:.0f} errors in {total:.0f} requests")
    return notes


def _pyload_notes(samples: Samples) -> list[str]:
    runs = samples.get("pyping-runs", {}).get("all", [])
    if not runs:
        return []
    notes = []
    for run in runs:
        if "error" in run:
            notes.append(f"pyload run of repetition {run['rep'] + 1} failed: {run['error']}")
            continue
        if run["errors"]:
            notes.append(
                f"pyload, repetition {run['rep'] + 1} (!): errors {run['errors']} "
                f"{'; '.join(run['reasons'])}".rstrip()
            )
        if run["skipped"]:
            notes.append(
                f"pyload, repetition {run['rep'] + 1}: {run['skipped']} slice(s) left out "
                "(a process was not ready in time)"
            )
    good = [r for r in runs if "error" not in r and r["slices_s"]]
    if good:
        cores = sum(r["client_cpu_s"] for r in good) / sum(r["slices_s"] for r in good)
        notes.append(
            f"pyload's own CPU: {cores:.2f} cores on average over its slices (start and TLS "
            "handshakes included)"
        )
    return notes


def _summary(auth: list[str], ratios: dict[tuple[str, str], float], samples: Samples) -> list[str]:
    tools = [tool for tool, _, _ in GENERATORS]
    lines = [
        "Target (issue): an authenticated variant at most 10% slower than unauthenticated "
        f"dockgate in the same run: req/s ratio >= {TARGET_RATIO:.2f} with the same load "
        "generator (median of the paired ratios)."
    ]
    for target in auth:
        got = [
            f"{tool}: {_verdict(ratios[(tool, target)])}"
            for tool in tools
            if (tool, target) in ratios
        ]
        lines.append(
            f"{target} vs dockgate: {', '.join(got)}"
            if got
            else f"{target} vs dockgate: not measured (`dockgate` must be a target too)"
        )
    tls = [
        f"{ratios[(tool, 'dockgate+tls')]:.2f}x ({tool})"
        for tool in tools
        if (tool, "dockgate+tls") in ratios
    ]
    if tls:
        lines.append(f"TLS itself (dockgate+tls vs dockgate): {', '.join(tls)}")
    certs = []
    for tool, where, pair in GENERATORS:
        by_target = samples.get(where, {})
        pairs = _pairs(
            by_target.get("dockgate+mtls", []), by_target.get("dockgate+tls", []), "rps", pair
        )
        if pairs:
            certs.append(f"{statistics.median(pairs):.2f}x ({tool})")
    if certs:
        lines.append(
            "client certificates on top of TLS (dockgate+mtls vs dockgate+tls): " + ", ".join(certs)
        )
    return lines
