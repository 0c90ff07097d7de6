"""Host ports a container or service publishes, read as the daemon reads them, and the
`host_ports` guardrail's ranges.

A published port with a fixed host port makes the daemon listen on the host (docker-proxy,
running as root, or iptables DNAT), on that port of the given HostIp or of every address:
a bind on 0.0.0.0 also answers 127.0.0.1:PORT. A job that takes a port of a local service
that is down or not started yet answers the host's own clients of it, privileged ports
included. An ephemeral port (HostPort "" or "0", PublishAllPorts, a service's PublishedPort 0)
is one the daemon picks from its own range: allowed on any HostIp.
"""

from __future__ import annotations

from dataclasses import dataclass

# (first, last), both included, 1..65535.
PortRange = tuple[int, int]

_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host port range a body asks for: (0, 0) is ephemeral (the daemon picks the port)."""

    first: int
    last: int
    via: str  # where in the body, for the refusal

    @property
    def ephemeral(self) -> bool:
        return self.first == 0 and self.last == 0


def _number(text: str) -> int:
    """Go's strconv.ParseUint(text, 10, 16): decimal digits only (no sign, no spaces, no
    underscores in base 10), at most 65535."""
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_PORT:
        raise ValueError(f"{text!r} is not a port number")
    return int(text)


def parse_host_port(text: str) -> PortRange:
    """A PortBindings entry's HostPort: "", "N", "N-M", each optionally with "/proto".

    moby 20.10 (daemon/container.go validatePortBindings, buildCreateEndpointOptions) reads it
    with go-connections nat.SplitProtoPort and nat.ParsePortRange: "" and "0" are ephemeral;
    "N-M" lets the allocator take any free port in the range (libnetwork portallocator
    RequestPortInRange). Newer daemons (api/types/network/port.go ParsePortRange) read the
    same forms. Where the two differ ("/80" is ephemeral to 20.10 and an error to newer ones;
    "1-2-3" is 1-2 to 20.10), the text is refused (ValueError) rather than guessed at."""
    if text == "":
        return (0, 0)
    # Both read the ports before the first "/" (the protocol is the container port's).
    ports = text.partition("/")[0]
    first_text, dash, last_text = ports.partition("-")
    try:
        first = _number(first_text)
        last = _number(last_text) if dash else first
    except ValueError:
        raise ValueError(f"HostPort {text!r} is not PORT[-PORT][/PROTOCOL]") from None
    if last < first:
        raise ValueError(f"HostPort {text!r}: the range ends before it starts")
    return (first, last)


def parse_policy_range(entry: int | str) -> PortRange:
    """A `host_ports` entry of a policy: a port (8080, "8080") or a range ("8000-8999")."""
    text = str(entry).strip()
    first_text, dash, last_text = text.partition("-")
    try:
        first = _number(first_text.strip())
        last = _number(last_text.strip()) if dash else first
    except ValueError:
        raise ValueError(f"{entry!r} is not a port (1-65535) or a range FIRST-LAST") from None
    if first == 0:
        raise ValueError(f"{entry!r}: port 0 is the ephemeral port, always allowed")
    if last < first:
        raise ValueError(f"{entry!r}: the range ends before it starts")
    return (first, last)


def merge(ranges: list[PortRange]) -> tuple[PortRange, ...]:
    """Sorted, with overlapping and adjacent ranges joined: a range asked for may then be
    checked against one of them ("8000-8010" is covered by "8000-8005" and "8006-8999")."""
    merged: list[PortRange] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def host_port_problem(allowed: tuple[PortRange, ...], port: HostPort) -> str | None:
    """A fixed host port (or range: the daemon may take any port in it) outside the merged
    `allowed` ranges, as a sentence; None if it is ephemeral or inside."""
    if port.ephemeral:
        return None
    if any(first <= port.first and port.last <= last for first, last in allowed):
        return None
    asked = str(port.first) if port.first == port.last else f"{port.first}-{port.last}"
    return (
        f"publishing on host port {asked} ({port.via}) is not allowed: let the daemon pick "
        "it (an empty HostPort, -p IP::PORT; PublishedPort 0), or list it under host_ports"
    )
