"""Which container dockgate runs in, and who can reach it: the Tecnativa drop-in rule.

Tecnativa's docker-socket-proxy is run as `docker run -e CONTAINERS=1 -v
/var/run/docker.sock:/var/run/docker.sock` on a container network, listening on all of the
container's interfaces without authentication, for clients that call `tcp://SERVICE:2375`.
dockgate starts the same way, without --insecure, only when the daemon itself says that the
listener is reachable from the container's networks and nowhere else (THREAT_MODEL.md,
"The container drop-in"):

- dockgate can tell which container it is: the daemon bind-mounts the container's own
  `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` from `<data-root>/containers/<ID>/`
  (moby container/container_unix.go NetworkMounts), so /proc/self/mountinfo names the ID; the
  inspected container's hostname must be this process's (a cross-check);
- the container publishes no port (HostConfig.PortBindings, HostConfig.PublishAllPorts,
  NetworkSettings.Ports), does not share the host's network (HostConfig.NetworkMode), and a
  Swarm task's service publishes none (Endpoint.Ports). A container run with
  `--network container:X` gets X's three files and hostname (moby daemon/container_operations.go
  initializeNetworking), so the container judged is X, whose network namespace the listener is
  in; an X that itself joins another's (`container:` again) is refused;
- each network it is on keeps its members to themselves: a bridge or overlay network (macvlan
  and ipvlan put the container on the host's LAN), not in a routed gateway mode (moby
  libnetwork/drivers/bridge: `com.docker.network.bridge.gateway_mode_ipv4|6` `routed` and
  `nat-unprotected` let the LAN reach unpublished ports), on a bridge the daemon made itself
  (`com.docker.network.bridge.name` names an existing bridge, which may have a LAN port), and,
  when a listener accepts IPv6, with no IPv6 address on the container but a link-local one
  (routed to it from outside, and from the daemon's other networks, whether or not a port is
  published: 20.10 writes no ip6tables rules).

The same answer gives the names other containers reach this one by (its name, its network
aliases and DNS names, its Compose service and Swarm service): those, and only those, are
accepted as a Host header (policy/browser.py), since a web page cannot make them resolve.

Everything but the daemon calls is sans-IO (pure functions over the texts and JSON answers).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.ownership.lookup import LookupError_, TooLarge, get_json

MOUNTINFO = "/proc/self/mountinfo"
# The files the daemon bind-mounts into every container from its own directory.
_NETWORK_FILES = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}
_OWN_FILE = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)")
# Network drivers whose members only reach each other (and the host, through the bridge).
# `null`: network mode none, no interface but loopback.
_CONTAINED_DRIVERS = frozenset({"bridge", "overlay", "null"})
_ROUTED_MODES = frozenset({"routed", "nat-unprotected"})
_GATEWAY_MODE_OPTIONS = (
    "com.docker.network.bridge.gateway_mode_ipv4",
    "com.docker.network.bridge.gateway_mode_ipv6",
)
# The bridge driver's options (moby v20.10.24 vendor/github.com/docker/libnetwork/drivers/
# bridge/labels.go and bridge.go fromLabels; HEAD daemon/libnetwork/drivers/bridge/labels.go,
# bridge_linux.go), decided one by one:
# - bridge.name: the driver uses an existing bridge as it is (bridge.go: ifaceCreatedByUser)
#   with whatever else the operator enslaved to it, a LAN port included: refused, but for the
#   daemon's own default network on docker0, which the daemon makes itself (daemon_unix.go
#   initBridgeDriver: DefaultBridgeName, unless dockerd -b names another bridge).
# - gateway_mode_ipv4|6 `routed`/`nat-unprotected` (HEAD): the LAN reaches unpublished ports:
#   refused; `nat` and `isolated` are not.
# - enable_ip_masquerade: the SNAT of what the members send out (setup_ip_tables.go); what
#   comes in still meets the DOCKER chain, which accepts published ports only: harmless.
# - enable_icc: false only isolates members from each other: harmless.
# - inhibit_ipv4: no IPv4 address on the bridge itself: harmless (an existing bridge, its use,
#   is refused by bridge.name).
# - host_binding_ipv4 (DefaultBindingIP), HEAD trusted_host_interfaces: where *published*
#   ports bind or who reaches them directly; a published port is refused anyway: harmless.
# - default_bridge: a user may set it on any network (fromLabels parses it), so it proves
#   nothing alone; the default network is told by its name `bridge` as well.
# - com.docker.network.driver.mtu, container_iface_prefix, host_ipv4|6 (the SNAT source):
#   harmless.
_BRIDGE_NAME = "com.docker.network.bridge.name"
_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
_DOCKER0 = "docker0"
# A name other containers can resolve: one DNS label (Docker's container names also allow
# `_`; the embedded DNS resolves them).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class CannotTell(Exception):
    """dockgate cannot tell which container it is, or the daemon could not be asked."""


@dataclass(frozen=True, slots=True)
class ContainerSelf:
    container_id: str
    name: str  # without the leading `/`
    networks: tuple[str, ...]  # network names, sorted
    names: frozenset[str]  # single-label names other containers reach it by, lower case
    problems: tuple[str, ...]  # why it is reachable from outside its networks; empty: it is not
    # Why it is, for a listener that accepts IPv6 (its IPv6 addresses); empty: it is not.
    ipv6_problems: tuple[str, ...] = ()

    def describe(self) -> str:
        networks = ", ".join(self.networks) if self.networks else "none"
        return f"container {self.name} ({self.container_id[:12]}) on network(s) {networks}"


def container_id_from_mountinfo(text: str) -> str | None:
    """The container ID in the sources of /etc/hostname, /etc/hosts and /etc/resolv.conf, or
    None when they name none, or more than one (then no answer is safer than a guess)."""
    found: set[str] = set()
    for line in text.splitlines():
        fields = line.split(" ")
        # mountinfo(5): ID, parent ID, major:minor, root (the mounted path within its file
        # system), mount point, ...
        if len(fields) < 5 or fields[4] not in _NETWORK_FILES:
            continue
        match = _OWN_FILE.search(fields[3])
        if match is None:
            return None  # one of the three comes from elsewhere: not the daemon's layout
        found.add(match.group(1))
    return found.pop() if len(found) == 1 else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _published(ports: object, loopback_filtered: bool = False) -> list[str]:
    """`port 2375/tcp is published on 0.0.0.0:49153` for each binding in a port map
    (HostConfig.PortBindings or NetworkSettings.Ports: `{"2375/tcp": [{"HostIp", "HostPort"}]}`).

    A binding on a loopback address reaches the host's own processes only when the daemon
    drops what other machines send to it (`loopback_filtered`): before Docker 28.0 the DNAT
    rule answered on every interface, so a host on the same LAN sending to 127.0.0.1 through
    this one got in (moby#41872, #45610); 28.0 added a raw-table DROP for packets to it that
    do not come from `lo` (libnetwork bridge iptabler port.go filterPortMappedOnLoopback)."""
    found = []
    for port, bindings in sorted(_dict(ports).items()):
        if not isinstance(bindings, list):
            continue  # null: exposed, not published
        for binding in bindings:
            b = _dict(binding)
            host_ip = b.get("HostIp") or "0.0.0.0"
            loopback = _is_loopback(str(host_ip))
            if loopback and loopback_filtered:
                continue
            where = f"[{host_ip}]" if ":" in str(host_ip) else str(host_ip)
            note = (
                " (before Docker 28.0, which this daemon is, the LAN reaches a port published on "
                "loopback: moby#45610)"
                if loopback
                else ""
            )
            found.append(
                f"port {port} is published on {where}:{b.get('HostPort') or '(any)'}{note}"
            )
    return found


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def loopback_publish_filtered(version: Mapping[str, Any]) -> bool:
    """Whether the daemon (its /version answer) drops LAN packets to loopback-published ports:
    Docker Engine 28.0 and later, API 1.48 (`DOCKER_INSECURE_NO_IPTABLES_RAW=1` on the daemon
    turns that off, which the API does not show: THREAT_MODEL.md says so)."""
    try:
        major, minor = (int(part) for part in str(version.get("ApiVersion") or "").split("."))
    except ValueError:
        return False
    return (major, minor) >= (1, 48)


def container_problems(
    inspected: Mapping[str, Any], hostname: str, *, loopback_filtered: bool = False
) -> list[str]:
    """What in a container's inspect answer makes it reachable from outside its networks (a
    publish on the host's loopback only is not, when the daemon filters it: `_published`)."""
    host_config = _dict(inspected.get("HostConfig"))
    settings = _dict(inspected.get("NetworkSettings"))
    problems: list[str] = []
    mode = str(host_config.get("NetworkMode") or "")
    if mode == "host":
        problems.append("network mode host (it listens on the host's own interfaces)")
    elif mode.startswith("container:"):
        problems.append(f"network mode {mode} (another container's network, not checked)")
    if host_config.get("PublishAllPorts"):
        problems.append("all exposed ports are published (-P)")
    # What the daemon bound (NetworkSettings.Ports, with the host ports it chose), and what
    # was asked for (HostConfig.PortBindings) for a port it did not bind (yet).
    bound = _dict(settings.get("Ports"))
    asked = _dict(host_config.get("PortBindings"))
    problems += _published(bound, loopback_filtered)
    unbound = {p: b for p, b in asked.items() if not isinstance(bound.get(p), list)}
    problems += _published(unbound, loopback_filtered)
    config = _dict(inspected.get("Config"))
    configured = str(config.get("Hostname") or "")
    domain = str(config.get("Domainname") or "")
    if mode != "host" and hostname not in (configured, f"{configured}.{domain}"):
        problems.append(
            f"its hostname {configured!r} is not this process's {hostname!r} (is this the "
            "container dockgate runs in?)"
        )
    return problems


def ipv6_problems(inspected: Mapping[str, Any]) -> list[str]:
    """The container's IPv6 addresses but link-local ones, for a listener that accepts IPv6.

    Not only global ones: a ULA (fd00::/8) is routed inside a site like any other prefix, the
    bridge driver turns IPv6 forwarding on itself (setup_ipv6.go), and 20.10 writes no
    ip6tables rules (no DOCKER chain, no isolation between networks) unless --ip6tables: a
    machine with a route to the subnet, and a container on another IPv6 network of the same
    daemon, reach the unpublished port. A link-local address is reached from the link only
    (the network's members and the host), as IPv4 is."""
    found = []
    networks = _dict(_dict(inspected.get("NetworkSettings")).get("Networks"))
    for network, endpoint in sorted(networks.items()):
        address = str(_dict(endpoint).get("GlobalIPv6Address") or "")
        try:
            link_local = ipaddress.ip_address(address.split("%", 1)[0]).is_link_local
        except ValueError:
            link_local = False  # not an address: not known to be harmless
        if address and not link_local:
            found.append(
                f"network {network} gives it the IPv6 address {address} and a listener accepts "
                "IPv6 (routed machines and the daemon's other IPv6 networks reach it where the "
                "daemon writes no ip6tables rules, as 20.10 by default); listen on IPv4 only "
                "(DOCKGATE_LISTEN=tcp://0.0.0.0:2375)"
            )
    return found


def network_problems(name: str, network: Mapping[str, Any]) -> list[str]:
    """What in a network's inspect answer lets machines outside it reach its members (the
    bridge driver's options: the table above `_BRIDGE_NAME`)."""
    driver = str(network.get("Driver") or "")
    if driver not in _CONTAINED_DRIVERS:
        return [f"network {name} uses the {driver or 'unknown'} driver (on the host's LAN)"]
    options = _dict(network.get("Options"))
    problems = [
        f"network {name} has {option}={options[option]} (the LAN reaches unpublished ports)"
        for option in _GATEWAY_MODE_OPTIONS
        if str(options.get(option, "")).lower() in _ROUTED_MODES
    ]
    if driver == "bridge" and _BRIDGE_NAME in options:
        bridge = str(options[_BRIDGE_NAME])
        default = (
            network.get("Name") == "bridge"
            and str(options.get(_DEFAULT_BRIDGE, "")).lower() == "true"
            and bridge == _DOCKER0
        )
        if not default:
            problems.append(
                f"network {name} has {_BRIDGE_NAME}={bridge} (the daemon uses an existing bridge "
                "as it is: dockgate cannot tell what else is on it, a LAN port included); use a "
                "network whose bridge the daemon makes (no -o com.docker.network.bridge.name)"
            )
    return problems


def merged_options(network: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A `--config-from` network as the daemon builds it: the config-only network's options
    (moby libnetwork network.go applyConfigurationTo copies its generic options) under the
    network's own."""
    merged = dict(network)
    merged["Options"] = {**_dict(config.get("Options")), **_dict(network.get("Options"))}
    return merged


def service_problems(service: Mapping[str, Any]) -> list[str]:
    """A Swarm service's published ports (the routing mesh or the task's host port)."""
    endpoint = _dict(service.get("Endpoint"))
    spec = _dict(_dict(service.get("Spec")).get("EndpointSpec"))
    ports = endpoint.get("Ports") or spec.get("Ports") or []
    found = []
    for port in ports if isinstance(ports, list) else []:
        p = _dict(port)
        found.append(
            f"service port {p.get('TargetPort')}/{p.get('Protocol') or 'tcp'} is published on "
            f"{p.get('PublishedPort') or '(any)'} ({p.get('PublishMode') or 'ingress'} mode)"
        )
    return found


def reachable_names(inspected: Mapping[str, Any]) -> frozenset[str]:
    """The single-label names the daemon's DNS answers with this container's address: its
    name, its aliases and DNS names on each network (moby daemon/container_operations.go:
    the short ID and the Compose service are aliases), its Compose and Swarm service."""
    candidates = [str(inspected.get("Name") or "").lstrip("/")]
    for endpoint in _dict(_dict(inspected.get("NetworkSettings")).get("Networks")).values():
        for key in ("Aliases", "DNSNames"):
            values = _dict(endpoint).get(key)
            candidates += [str(v) for v in values] if isinstance(values, list) else []
    labels = _dict(_dict(inspected.get("Config")).get("Labels"))
    candidates.append(str(labels.get("com.docker.compose.service") or ""))
    service = str(labels.get("com.docker.swarm.service.name") or "")
    namespace = str(labels.get("com.docker.stack.namespace") or "")
    candidates.append(service)
    if namespace and service.startswith(namespace + "_"):
        candidates.append(service[len(namespace) + 1 :])  # a stack's service, by its short name
    return frozenset(c.lower() for c in candidates if c and _LABEL.fullmatch(c.lower()) is not None)


async def _ask(upstream: Address, path: str, what: str) -> Mapping[str, Any]:
    try:
        status, answer = await get_json(upstream, path)
    except (LookupError_, TooLarge) as exc:
        raise CannotTell(f"could not ask the daemon about {what}: {exc}") from None
    if status != 200 or not isinstance(answer, dict):
        message = _dict(answer).get("message") or f"status {status}"
        raise CannotTell(f"could not ask the daemon about {what}: {message}")
    return answer


async def inspect_self(upstream: Address, container_id: str, hostname: str) -> ContainerSelf:
    """Ask the daemon behind `upstream` about container `container_id` (this process's), its
    networks and, for a Swarm task, its service."""
    what = f"container {container_id[:12]}"
    inspected = await _ask(upstream, f"/containers/{container_id}/json", what)
    if inspected.get("Id") != container_id:
        raise CannotTell(
            f"the daemon behind {upstream} does not know container {container_id[:12]} "
            "(is it the daemon that runs this container?)"
        )
    version = await _ask(upstream, "/version", "its version")
    problems = container_problems(
        inspected, hostname, loopback_filtered=loopback_publish_filtered(version)
    )
    attached = _dict(_dict(inspected.get("NetworkSettings")).get("Networks"))
    for name, endpoint in sorted(attached.items()):
        if name == "host":
            continue  # said above: network mode host
        network_id = str(_dict(endpoint).get("NetworkID") or name)
        network = await _ask(upstream, f"/networks/{quote(network_id, safe='')}", f"network {name}")
        source = str(_dict(network.get("ConfigFrom")).get("Network") or "")
        if source:
            config = await _ask(
                upstream, f"/networks/{quote(source, safe='')}", f"config network {source}"
            )
            network = merged_options(network, config)
        problems += network_problems(name, network)
    labels = _dict(_dict(inspected.get("Config")).get("Labels"))
    service_id = labels.get("com.docker.swarm.service.id")
    if isinstance(service_id, str) and service_id:
        service = await _ask(upstream, f"/services/{quote(service_id, safe='')}", "its service")
        problems += service_problems(service)
    return ContainerSelf(
        container_id=container_id,
        name=str(inspected.get("Name") or container_id[:12]).lstrip("/"),
        networks=tuple(sorted(attached)),
        names=reachable_names(inspected),
        problems=tuple(problems),
        ipv6_problems=tuple(ipv6_problems(inspected)),
    )


def read_container_id(path: str = MOUNTINFO) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return container_id_from_mountinfo(f.read())
    except OSError:
        return None


async def find_self(upstream: Address) -> ContainerSelf:
    """This process's container as the daemon sees it; CannotTell when not in one (that the
    daemon runs) or when the daemon cannot be asked."""
    container_id = read_container_id()
    if container_id is None:
        raise CannotTell("not running in a container (no container ID in /proc/self/mountinfo)")
    return await inspect_self(upstream, container_id, socket.gethostname())
