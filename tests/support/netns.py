"""Test hosts of their own: network namespaces on a private LAN, each with a private Docker
daemon that has its own iptables, bridge and Swarm networking.

The session's daemon (support.daemon) runs with ``--iptables=false --bridge=none`` so that it
cannot touch this machine's networking; that also means no published ports. A Swarm test needs
them, so its daemons live in namespaces where dockerd may rewrite iptables freely: nothing it
does is seen outside.

The LAN is a bridge in a namespace of its own (a switch); this machine plugs into it with
``lan.host_address`` and each node with its own address, so nodes reach each other (Swarm's
raft, gossip and overlay traffic) and the tests reach every node, as clients outside the
cluster would, without any forwarding on this machine.

Only the network is separate: dockerd is started with ``nsenter --net`` (not ``ip netns exec``,
which remounts /sys and so hides the cgroup mounts dockerd needs), so its files, sockets and
mounts stay under its base directory like any private daemon's.
"""

from __future__ import annotations

import contextlib
import itertools
import pathlib
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

from support.daemon import PrivateDaemon

NETNS_DIR = pathlib.Path("/var/run/netns")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    # The kernel frees the namespace's devices a moment after its last process is gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (NETNS_DIR / name).exists():
        time.sleep(0.2)


class Lan:
    """A switch (bridge ``br0`` in namespace ``dglan-TAG``) on a random /24 of 10.231.0.0/16,
    with this machine plugged in at ``host_address`` (.1)."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.name = f"dglan-{self.tag}"
        self.prefix = f"10.231.{random.randrange(1, 255)}"
        self.host_address = f"{self.prefix}.1"
        self._host_link = f"dg{self.tag}h"  # interface names are at most 15 bytes
        self._ports = itertools.count()

    def create(self) -> None:
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.name, "link", "set", "br0", "up")
            self.plug(None, self._host_link)
            _ip("addr", "add", f"{self.host_address}/24", "dev", self._host_link)
            _ip("link", "set", self._host_link, "up")
        except Exception:
            self.delete()
            raise

    def plug(self, netns: str | None, link: str) -> None:
        """A veth pair: ``link`` in ``netns`` (None: this machine), its peer on the switch."""
        port = f"p{next(self._ports)}"
        where = ["-n", netns] if netns else []
        _ip(*where, "link", "add", link, "type", "veth", "peer", "name", port, "netns", self.name)
        _ip("-n", self.name, "link", "set", port, "master", "br0", "up")

    def delete(self) -> None:
        # Deleting one end of a veth pair deletes both.
        subprocess.run(["ip", "link", "del", self._host_link], capture_output=True, check=False)
        _delete_netns(self.name)


class NetNamespace:
    """Node ``number`` on ``lan``: namespace ``dgns-TAG-N`` with ``eth0`` at ``address``
    (.11, .12, ...), loopback up, and a default route to this machine."""

    def __init__(self, lan: Lan, number: int) -> None:
        self.lan = lan
        self.name = f"dgns-{lan.tag}-{number}"
        self.address = f"{lan.prefix}.{11 + number}"
        self.path = NETNS_DIR / self.name

    def create(self) -> None:
        _ip("netns", "add", self.name)
        try:
            self.lan.plug(self.name, "eth0")
            inside = ("-n", self.name)
            _ip(*inside, "addr", "add", f"{self.address}/24", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "route", "add", "default", "via", self.lan.host_address)
        except Exception:
            self.delete()
            raise

    def delete(self) -> None:
        _delete_netns(self.name)

    def nsenter(self) -> list[str]:
        """The command prefix that runs a program inside this namespace's network only."""
        return [shutil.which("nsenter") or "nsenter", f"--net={self.path}"]


class NamespacedDaemon(PrivateDaemon):
    """A `PrivateDaemon` inside `netns`, with iptables and the default bridge enabled there."""

    def __init__(self, base_dir: pathlib.Path, netns: NetNamespace) -> None:
        super().__init__(base_dir)
        self.netns = netns

    def command(self) -> list[str]:
        confined = ("--iptables=false", "--ip6tables=false", "--bridge=none")
        return self.netns.nsenter() + [a for a in super().command() if a not in confined]


@contextlib.contextmanager
def namespaced_daemons(count: int) -> Iterator[list[NamespacedDaemon]]:
    """``count`` started daemons, each in a namespace of its own on one fresh LAN; daemons,
    namespaces and base directories removed afterwards."""
    lan = Lan()
    lan.create()
    spaces: list[NetNamespace] = []
    daemons: list[NamespacedDaemon] = []
    try:
        for number in range(count):
            spaces.append(NetNamespace(lan, number))
            spaces[-1].create()
            base = pathlib.Path(tempfile.mkdtemp(prefix="dgns-", dir="/tmp"))
            daemons.append(NamespacedDaemon(base, spaces[-1]))
            daemons[-1].start()
        yield daemons
    finally:
        for daemon in daemons:
            daemon.cleanup()
        for netns in spaces:
            netns.delete()
        lan.delete()


@contextlib.contextmanager
def namespaced_daemon() -> Iterator[NamespacedDaemon]:
    """One started daemon in a namespace of its own (see `namespaced_daemons`)."""
    with namespaced_daemons(1) as daemons:
        yield daemons[0]
