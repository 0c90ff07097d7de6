"""Environment variables that look meant for dockgate but that it ignores: a typo
(`DOCKGATE_LISTN`, `CONTAINER=1`) or the wrong case (`containers=1`). The gateway still
starts (the variable may be meant for something else), with one warning line each.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping

from dockgate.policy.tecnativa import ALL_VARIABLES
from dockgate.relay.phase import STRICT_VARIABLE

PREFIX = "DOCKGATE_"
# DOCKGATE_ variables read that are no option of `serve`.
OTHER_VARIABLES = (STRICT_VARIABLE,)  # relay/phase.py: illegal phase moves raise (tests)
# Tecnativa's variables that are not about access, which dockgate accepts and ignores.
TECNATIVA_OTHER = ("LOG_LEVEL", "DISABLE_IPV6", "BIND_CONFIG", "SOCKET_PATH")
# The values Tecnativa's switches take: a name that only looks like one of them, with a
# value like these, is most likely a typo of it (HOSTNAME=web1 is not).
_SWITCH_VALUES = frozenset({"0", "1", "true", "false", "yes", "no", "on", "off"})
CUTOFF = 0.75


def environment_warnings(
    env: Mapping[str, str], options: Iterable[str], *, compatibility: bool
) -> list[str]:
    """Warnings for `env`: DOCKGATE_ names that are no option (`options`: the known
    DOCKGATE_ names), and, when the policy comes from Tecnativa-style variables
    (`compatibility`), names close to theirs."""
    known = sorted(set(options).union(OTHER_VARIABLES))
    warnings = []
    for name in sorted(env):
        if name.upper().startswith(PREFIX) and name not in known:
            hint = _did_you_mean(name, known)
            warnings.append(f"{name} is not a dockgate variable, ignored{hint}")
        elif compatibility:
            warning = _tecnativa_lookalike(name, env[name])
            if warning is not None:
                warnings.append(warning)
    return warnings


def _tecnativa_lookalike(name: str, value: str) -> str | None:
    names = ALL_VARIABLES + TECNATIVA_OTHER
    if name in names:
        return None
    upper = name.upper()
    switch = value.strip().lower() in _SWITCH_VALUES
    if upper in names:
        # Warned whatever the value (`containers=1` is surely meant for CONTAINERS), but the
        # value is quoted only when it is a switch value: `auth`, `secrets`, `configs` are
        # ordinary names for an application's own settings (a password, a key), and these
        # lines go to the log and into `dockgate doctor`'s report.
        if not switch and value.strip():
            return (
                f"{name}=... is ignored: variable names are case-sensitive (the value is not "
                f"shown); did you mean {upper}?"
            )
        return (
            f"{name}={value} is ignored: variable names are case-sensitive; did you mean "
            f"{upper}={value}?"
        )
    if not switch:
        return None
    close = difflib.get_close_matches(upper, names, n=1, cutoff=CUTOFF)
    if not close:
        return None
    return f"{name}={value} is not a Tecnativa variable, ignored; did you mean {close[0]}={value}?"


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=CUTOFF)
    return f"; did you mean {close[0]}?" if close else " (see dockgate serve --help)"
