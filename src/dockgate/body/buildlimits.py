"""The memory and CPU limits of a build's RUN steps, judged like a container's.

The classic builder runs each RUN step in a container whose resources are the build's query
parameters (moby builder/dockerfile/internals.go hostConfigFromOptions: Memory, MemorySwap,
CPUQuota, CPUPeriod, ... from api/server/router/build/build_routes.go newImageBuildOptions,
which reads each with httputils.Int64ValueOrZero: the first value, strconv.ParseInt base 10,
0 when absent or unreadable). A policy with `max_memory`/`max_cpus` holds those steps to the
same maxima as a container: the build must ask for limits within them.

BuildKit (`version=2`) does not apply these parameters at all (moby builder/builder-next reads
none of them, v20.10.24): its steps run without limits, so a policy with maxima refuses it.
"""

from __future__ import annotations

import re

_GO_INT = re.compile(r"[+-]?[0-9]+")
_INT64 = 2**63
# The kernel's default CFS period (cpu.cfs_period_us), used when cpuperiod is not given.
_DEFAULT_PERIOD = 100_000


def first_value(params: list[tuple[str, str]], key: str) -> str:
    """What r.FormValue gives: the first value of `key`, "" when absent."""
    return next((value for k, value in params if k == key), "")


def go_int64_or_zero(text: str) -> int:
    """httputils.Int64ValueOrZero: strconv.ParseInt(text, 10, 64), 0 on any error."""
    if not _GO_INT.fullmatch(text):
        return 0
    value = int(text)
    return value if -_INT64 <= value < _INT64 else 0


def build_limits_problem(
    max_memory: int | None, max_nano_cpus: int | None, params: list[tuple[str, str]]
) -> str | None:
    """Why an ImageBuild's query does not hold its steps to the policy's maxima (None: it
    does, or the policy sets none)."""
    if max_memory is None and max_nano_cpus is None:
        return None
    if first_value(params, "version") == "2":
        return (
            "BuildKit builds (version=2) run their steps without the required memory and CPU "
            "limits: use the classic builder (DOCKER_BUILDKIT=0) with --memory and "
            "--cpu-quota/--cpu-period"
        )
    if max_memory is not None:
        memory = go_int64_or_zero(first_value(params, "memory"))
        if not 0 < memory <= max_memory:
            return f"a build needs a memory limit of at most {max_memory} bytes (--memory)"
    if max_nano_cpus is not None:
        quota = go_int64_or_zero(first_value(params, "cpuquota"))
        period = go_int64_or_zero(first_value(params, "cpuperiod"))
        nano = quota * 1_000_000_000 // (period or _DEFAULT_PERIOD) if quota > 0 else 0
        if period < 0 or not 0 < nano <= max_nano_cpus:
            return (
                f"a build needs a CPU limit of at most {max_nano_cpus / 1e9:g} CPUs "
                "(--cpu-quota and --cpu-period)"
            )
    return None
