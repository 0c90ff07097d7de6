"""`defaults:` of a policy in a policy file: its schema and its validation (body/defaults.py
puts them into the creates).

Checked when the policy is loaded, so that a default can never make a create ask for more than
the policy's guardrails allow (the gateway checks the body with its defaults again all the
same: plan.judge_body):

- labels: names non-empty, none under `io.dockgate.` (the owner label and provenance are
  ownership mode's), none both in `labels` and `force_labels`; a label the guardrails require
  (`required_labels`) must match its pattern, or every create given it would be refused;
- memory: docker's sizes (`512m`, `2g`, `1.5g`, bytes as an integer), at least the daemon's
  minimum of 6 MiB (moby daemon/daemon_unix.go linuxMinMemory), at most `max_memory`;
- cpus: a number of CPUs from 0.01 (the daemon's smallest NanoCpus) to `max_cpus`;
- pids: a positive integer;
- log_driver: a name; not `none` in ownership mode (a container with it cannot be told from a
  build step, ownership.trusted_owner); `log_options` and `force_log_driver` need it;
- cgroup_parent: a non-empty path without NUL or line breaks.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt

from dockgate.body.defaults import Defaults
from dockgate.body.guardrails import Guardrails
from dockgate.ownership.operations import SILENT_LOG_DRIVER

Location = tuple[str | int, ...]

MIN_MEMORY_BYTES = 6 * 1024 * 1024  # moby daemon/daemon_unix.go linuxMinMemory (20.10)
MIN_NANO_CPUS = 10_000_000  # 0.01 CPU: the daemon's "Range of CPUs is from 0.01 to N"
RESERVED_LABEL_PREFIX = "io.dockgate."


class DefaultsSpec(BaseModel):
    """`policies.NAME.defaults` (docs/policy.md, "Defaults put into creates")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[str, str] = Field(default_factory=dict)
    force_labels: dict[str, str] = Field(default_factory=dict)
    memory: str | StrictInt | None = None
    cpus: StrictFloat | StrictInt | None = None
    pids: StrictInt | None = None
    no_new_privileges: StrictBool = False
    cgroup_parent: str | None = None
    log_driver: str | None = None
    log_options: dict[str, str] = Field(default_factory=dict)
    force_log_driver: StrictBool = False


def compile_defaults(
    spec: DefaultsSpec | None,
    loc: Location,
    fail: Any,
    guardrails: Guardrails | None,
    *,
    ownership: bool,
    parse_size: Callable[[str | int], int],
) -> Defaults | None:
    """The policy's `Defaults`, or None without any; `fail(loc, problem)` makes the error,
    `parse_size` reads docker's sizes (the loader's, as for `max_memory`)."""
    if spec is None:
        return None
    _check_labels(spec, loc, fail, guardrails)
    memory = None
    if spec.memory is not None:
        try:
            memory = parse_size(spec.memory)
        except ValueError as exc:
            raise fail((*loc, "memory"), f"defaults: {exc}") from None
        if memory < MIN_MEMORY_BYTES:
            raise fail((*loc, "memory"), "defaults: memory must be at least 6m (the daemon's)")
        limit = guardrails.max_memory if guardrails is not None else None
        if limit is not None and memory > limit:
            raise fail(
                (*loc, "memory"),
                f"defaults: memory is over the guardrails' max_memory ({limit} bytes)",
            )
    nano_cpus = None
    if spec.cpus is not None:
        cpus = float(spec.cpus)
        nano_cpus = round(cpus * 1e9) if math.isfinite(cpus) else 0
        if nano_cpus < MIN_NANO_CPUS:
            raise fail((*loc, "cpus"), "defaults: cpus must be at least 0.01")
        most = guardrails.max_nano_cpus if guardrails is not None else None
        if most is not None and nano_cpus > most:
            raise fail((*loc, "cpus"), "defaults: cpus is over the guardrails' max_cpus")
    if spec.pids is not None and spec.pids < 1:
        raise fail((*loc, "pids"), "defaults: pids must be a positive number")
    if spec.cgroup_parent is not None:
        parent = spec.cgroup_parent
        if not parent.strip() or any(c in parent for c in "\0\r\n"):
            raise fail((*loc, "cgroup_parent"), "defaults: cgroup_parent must be a cgroup path")
    _check_log(spec, loc, fail, ownership=ownership)
    compiled = Defaults(
        labels=dict(spec.labels),
        force_labels=dict(spec.force_labels),
        memory=memory,
        nano_cpus=nano_cpus,
        pids=spec.pids,
        no_new_privileges=spec.no_new_privileges,
        cgroup_parent=spec.cgroup_parent,
        log_driver=spec.log_driver,
        log_options=dict(spec.log_options),
        force_log_driver=spec.force_log_driver,
    )
    return compiled if compiled.active else None


def _check_labels(
    spec: DefaultsSpec, loc: Location, fail: Any, guardrails: Guardrails | None
) -> None:
    for key in ("labels", "force_labels"):
        for name, value in getattr(spec, key).items():
            where = (*loc, key, name)
            if not name:
                raise fail(where, "defaults: a label needs a name")
            if name.startswith(RESERVED_LABEL_PREFIX):
                raise fail(where, f"defaults: labels under {RESERVED_LABEL_PREFIX} are dockgate's")
            if key == "labels" and name in spec.force_labels:
                raise fail(where, f"defaults: label {name!r} is in labels and force_labels")
            required = guardrails.required_labels if guardrails is not None else {}
            pattern = required.get(name)
            if pattern is not None and not fnmatch.fnmatchcase(value, pattern):
                raise fail(
                    where,
                    f"defaults: label {name}={value!r} does not match the guardrails' "
                    f"required_labels pattern {pattern!r}",
                )


def _check_log(spec: DefaultsSpec, loc: Location, fail: Any, *, ownership: bool) -> None:
    driver = spec.log_driver
    if driver is None:
        if spec.log_options:
            raise fail((*loc, "log_options"), "defaults: log_options need a log_driver")
        if spec.force_log_driver:
            raise fail((*loc, "force_log_driver"), "defaults: force_log_driver needs a log_driver")
        return
    if not driver or driver != driver.strip():
        raise fail((*loc, "log_driver"), "defaults: log_driver must be a driver's name")
    if ownership and driver == SILENT_LOG_DRIVER:
        raise fail(
            (*loc, "log_driver"),
            f"defaults: log_driver {SILENT_LOG_DRIVER!r} is the build steps' driver: in "
            "ownership mode a container with it would be nobody's",
        )
