"""Answers about covered objects that name objects out of the scope (policy/scopes.py), and
what of them a scoped caller is shown (docs/policy.md, "Lists and events under a scope").

An object a scope covers may be named by, or name, objects the scope does not cover, in what
the daemon stores about it without the caller's doing:

- a network's inspect answer maps every container attached to it (`Containers`: full ID to
  name, endpoint, MAC and IP addresses; moby v20.10.24 api/server/router/network
  network_routes.go buildDetailedNetworkResources), and with `verbose=true` on a swarm
  every service with tasks on it (`Services`: names, VIPs, task names and node addresses).
  An admin's container attached to the caller's network is named there, which the scoped
  event stream takes care to hide (scopelists.scoped_event). Both maps are answered empty
  under a scope: which of those containers the caller may see is a question of other rules
  (the container rules' scope), and looking each one up would make a network's inspect
  cost a list per answer; clients we know do not read them (the docker CLI prints them,
  compose reads a network's labels, driver and options). `docker ps --filter network=N`
  lists the attached containers the caller may see. A network list's entries carry the
  same maps (empty on 20.10 daemons, which fill them for inspect only): emptied as well;
- a container's list entry names, besides its own name, every link alias other containers
  gave it (`/linker/alias`: moby daemon/list.go, container.Names from the name index, where
  `docker run --link web:w` registers `/linker/w` for the web container). The linker may be
  out of the scope: every alias name is dropped under a scope, and only the container's own
  name stays (the docker CLI's `ps` shows only that one unless `--no-trunc`).

What a covered object's own configuration names (the networks a container joined, its
`HostConfig.Links` and `VolumesFrom`, a service's networks) is left as the daemon answers:
it is what was asked of the object (by the caller, or by whoever made it), not what other
objects did to it, and the covered container's own processes can see it anyway.

Pure functions: the plan (policy/plan.py answer_handling) holds these answers, the relay
(relay/steps.py) rewrites them.
"""

from __future__ import annotations

import json
from typing import Any

from dockgate.api.daemonjson import daemon_object

# One-object answers (200) rewritten under a scope.
SCOPED_ANSWERS = frozenset({"NetworkInspect"})
# What of a network (inspect answer, list entry) names other objects.
_NETWORK_MEMBERS = ("Containers", "Services")


def scoped_answer(operation: str, body: bytes) -> bytes:
    """One of `SCOPED_ANSWERS` (a 200) without what it says of other objects. ValueError or
    TypeError for an answer that is not the JSON object the daemon sends (the request then
    fails, 502, rather than passing it)."""
    document = daemon_object(operation, body)
    without_members(document)
    return json.dumps(document).encode() + b"\n"


def without_members(network: dict[str, Any]) -> None:
    """A network's `Containers` and `Services` maps emptied (when the daemon sent them)."""
    for key in _NETWORK_MEMBERS:
        if network.get(key) is not None:
            network[key] = {}


def own_names(container: dict[str, Any]) -> None:
    """A listed container's `Names` with its own name only: link aliases (`/other/alias`,
    names in another container's namespace) dropped."""
    names = container.get("Names")
    if isinstance(names, list):
        container["Names"] = [
            n for n in names if isinstance(n, str) and n.startswith("/") and "/" not in n[1:]
        ]
