"""Turn raw samples into one table (rows = workloads, columns = targets) in text and markdown."""

from __future__ import annotations

import os
import pathlib
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass, field

from targets import REPO_ROOT


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    better: str  # "higher", "lower", "delta" (show +ms against direct) or "text"
    fmt: str = "{:.0f}"
    base: str | None = None  # compare with this column instead of the table's base


@dataclass
class Cell:
    value: float | None = None
    text: str | None = None  # shown instead of the value (e.g. "hang", "-")
    flag: str = ""  # appended mark, e.g. "!" for errors seen
    per_rep: dict[int, float] = field(default_factory=dict)  # repetition -> value


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def compare(row: Row, cell: Cell, base: Cell) -> float | None:
    """Ratio (or difference, for "delta" rows) to the base, paired by repetition.

    Each repetition's value is compared with the base's value from the same repetition, and the
    median of those is taken, so that drift between repetitions cancels out. Without common
    repetitions, the medians are compared.
    """
    if cell.value is None or base.value is None:
        return None
    common = sorted(set(cell.per_rep) & set(base.per_rep))
    if row.better == "delta":
        if common:
            return median([cell.per_rep[r] - base.per_rep[r] for r in common])
        return cell.value - base.value
    pairs = [(cell.per_rep[r], base.per_rep[r]) for r in common if base.per_rep[r] > 0]
    if pairs:
        return median([c / b for c, b in pairs])
    return cell.value / base.value if base.value > 0 else None


def render_cell(row: Row, cell: Cell | None, base: Cell | None, is_base: bool) -> str:
    if cell is None:
        return "-"
    if cell.value is None:
        return (cell.text or "-") + cell.flag
    text = row.fmt.format(cell.value)
    if row.better != "text" and not is_base and base is not None:
        rel = compare(row, cell, base)
        suffix = f" {row.base}" if row.base else ""
        if rel is not None:
            text += f" ({rel:+.1f} ms)" if row.better == "delta" else f" ({rel:.2f}x{suffix})"
    if cell.text:
        text += f" {cell.text}"
    return text + cell.flag


def build_table(
    rows: list[Row], targets: list[str], cells: dict[str, dict[str, Cell]], base: str
) -> list[list[str]]:
    table = [["workload", *targets]]
    for row in rows:
        by_target = cells.get(row.key, {})
        if not by_target:
            continue
        row_base = row.base or base
        base_cell = by_target.get(row_base)
        line = [row.label]
        for target in targets:
            line.append(render_cell(row, by_target.get(target), base_cell, target == row_base))
        table.append(line)
    return table


def to_text(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    out = []
    for n, row in enumerate(table):
        out.append(
            "  ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def to_markdown(table: list[list[str]]) -> str:
    out = ["| " + " | ".join(table[0]) + " |"]
    out.append("|" + "|".join(["---"] + ["---:"] * (len(table[0]) - 1)) + "|")
    for row in table[1:]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(out)


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0].strip() if text else "?"


def machine_info() -> dict[str, str]:
    cpu = "?"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", pathlib.Path("/proc/meminfo").read_text())
        if match:
            mem = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    rev = _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()
    return {
        "cpus": f"{os.cpu_count()} x {cpu}",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _first_line(["nginx", "-v"]).replace("nginx version: ", ""),
        "haproxy": _first_line(["haproxy", "-v"]).split(" - ")[0],
        "dockerd": _first_line(["dockerd", "--version"]),
        "docker CLI": _first_line(["docker", "--version"]),
        "wrk": _first_line(["wrk", "-v"]).split(" Copyright")[0],
        "curl": _first_line(["curl", "--version"]).split(" (")[0],
        "dockgate": f"git {rev}" + (" + uncommitted changes in src/" if dirty else ""),
    }
