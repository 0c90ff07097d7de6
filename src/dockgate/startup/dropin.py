"""The container drop-in: whether an unauthenticated listener on all interfaces may start
without --insecure, and the one warning line it then prints (THREAT_MODEL.md, "The container
drop-in").

Only for the environment policy (Tecnativa's variables, no policy file): that is the
configuration a Tecnativa user switches with, and its access is what the warning states. The
container facts come from startup/containerself.py, asked once at start.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dockgate.addresses import Address
from dockgate.policy.rules import PolicySet
from dockgate.policy.tecnativa import compatibility_variables_set
from dockgate.startup.containerself import CannotTell, ContainerSelf, find_self


@dataclass(frozen=True, slots=True)
class Verdict:
    found: ContainerSelf | None  # the container dockgate runs in, when the daemon said
    reason: str | None  # why the drop-in rule does not apply; None: it does

    @property
    def names(self) -> frozenset[str]:
        """Host names to accept: the ones other containers reach this one by."""
        return self.found.names if self.found is not None else frozenset()


def accepts_ipv6(address: Address) -> bool:
    """Whether a listener may accept IPv6 connections: a TCP address but an IPv4 literal (an
    IPv6 literal, `::` included, which Linux binds dual-stack; a name, which may resolve to
    IPv6; all interfaces)."""
    if address.scheme != "tcp":
        return False
    try:
        return ipaddress.ip_address(address.host).version == 6
    except ValueError:
        return True


def reachable_from_outside(found: ContainerSelf, listeners: Sequence[Address]) -> list[str]:
    """Why `listeners` in container `found` are reachable from outside its networks: its
    problems, and its IPv6 ones when a listener accepts IPv6."""
    problems = list(found.problems)
    if any(accepts_ipv6(address) for address in listeners):
        problems += found.ipv6_problems
    return problems


def judge(upstream: Address, policies: PolicySet, listeners: Sequence[Address] = ()) -> Verdict:
    """Ask the daemon (once) whether this process's container is reachable only from its
    networks by `listeners`. Called at start, before the workers; the answer is not revisited
    (a later `docker network connect` or `docker service update --publish-add` is not seen).
    The container's IPv6 addresses count only when a listener accepts IPv6 (the image's
    default, tcp://0.0.0.0:2375, does not)."""
    if policies.source != "environment":
        return Verdict(None, "a policy file is in force (the rule is for the environment policy)")
    try:
        found = asyncio.run(find_self(upstream))
    except CannotTell as exc:
        return Verdict(None, str(exc))
    problems = reachable_from_outside(found, listeners)
    if problems:
        return Verdict(found, f"{found.describe()}: {'; '.join(problems)}")
    return Verdict(found, None)


def warning_line(listeners: str, found: ContainerSelf, env: Mapping[str, str]) -> str:
    """The one line printed when the rule lets the listener start."""
    variables = " ".join(f"{n}={env[n]}" for n in compatibility_variables_set(env))
    allowed = f"what {variables} allow" if variables else "what the default variables allow"
    return (
        f"dockgate: warning: {listeners} accepts anyone without authentication: "
        f"{found.describe()}, no port published beyond the host's loopback; every container "
        f"on those networks (and this host) can do {allowed}; checked once at start "
        "(DOCKGATE_HTPASSWD or DOCKGATE_TOKENS to require authentication)"
    )
