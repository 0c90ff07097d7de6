"""Ownership mode: daemon answers to allowed requests that would tell one caller about the
objects of others, and how they are made safe to show.

These are answers about things no caller owns (the daemon as a whole, an image) that happen to
count or name other callers' objects:

- `GET /info` counts every container (running, paused, stopped), every image, and the
  daemon's event listeners, file descriptors and goroutines, which rise and fall with other
  callers' work (each running container keeps goroutines of its own; each `docker events`
  is a listener): someone else's `docker run` shows as `ContainersRunning: 3 -> 4`. They are
  answered as 0. Computing the caller's own counts would cost a list request per `/info`;
  no client we know reads them (docker CLI prints them; docker-py, compose and Testcontainers
  read versions, OS, memory, the swarm state), and API 1.44+ daemons report the last three
  only in debug mode anyway (moby daemon/info.go fillDebugInfo).
- `DELETE /images/{name}` answers `409` naming the container that uses the image (moby
  v20.10.24 daemon/images/image_delete.go, and daemon/containerd/image_delete.go of newer
  ones, both with `stringid.TruncateID`: 12 hex digits): "container 3f2c1234abcd is using its
  referenced image ...", "image is being used by running container 3f2c1234abcd". The ID is
  taken out; that the image is in use is what the 409 is about, and stays. Whether that
  container runs is taken out too: "(cannot be forced) - ... by running container" against
  "(must be forced) - ... by stopped container" told bob when alice's container from an image
  he can list started and stopped (what /info's counts no longer say), so both are one
  answer, "(in use) - image is being used by a container", with what the caller can do.
- `DELETE /volumes/{name}` of a volume in use answers `409` with the IDs of the containers
  that use it (moby volume/service/errors.go OpErr: `remove v: volume is in use - [id, id]`).
  Ownership lets only the caller's own containers name the caller's volume, but a container
  made outside dockgate (an operator's), or one made in the instant a volume was removed and
  created again under its name, may be another's: the list becomes a count ("[2 containers]";
  `docker ps -a --filter volume=NAME` lists the caller's own).
- A service create or update publishing a port another service holds answers `400` naming
  that service and its ID (swarmkit manager/controlapi/service.go checkPortConflicts): the
  service is no longer named.

The caller's own container or service is not named either: telling it from another caller's
would need a look-up per answer, and `docker ps` names the caller's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from dockgate.api.daemonjson import daemon_object

# (status, operation) of the answers rewritten here, in ownership mode, for every caller of
# the policy (anonymous ones too: they may read /info and delete images).
SCRUBBED_ANSWERS = frozenset(
    {
        (200, "SystemInfo"),
        (409, "ImageDelete"),
        (409, "VolumeDelete"),
        (400, "ServiceCreate"),
        (400, "ServiceUpdate"),
    }
)

# SystemInfo's counts that include other callers' objects or activity (both API specs,
# v1.41 and v1.56: every integer of SystemInfo but NCPU and MemTotal, which are the host's).
INFO_COUNTS = (
    "Containers",
    "ContainersRunning",
    "ContainersPaused",
    "ContainersStopped",
    "Images",
    "NEventsListener",
    "NFd",
    "NGoroutines",
)

# ImageDelete: `container <id>` (`- container 3f2c... is using its referenced image`, `by
# running container 3f2c...`, `by stopped container 3f2c...`), a 12-digit ID in moby, matched
# up to a full one in case a version writes it whole.
_IMAGE_USER = re.compile(r"\b(running |stopped )?container [0-9a-f]{12,64}\b")
# `unable to delete <image> (cannot be forced) - image is being used by running container <id>`
# and `(must be forced) - ... by stopped container <id>` (imageDeleteConflict.Error): one answer
# for both, whether the container runs or not.
_IMAGE_IN_USE = re.compile(
    r"unable to delete (.*?) \((?:cannot|must) be forced\) - "
    r"image is being used by (?:running|stopped) container [0-9a-f]{12,64}\b"
)
# VolumeDelete: `volume is in use - [<id>, <id>]` (the references: container IDs, whole).
_VOLUME_USERS = re.compile(r"volume is in use - \[([^\]]*)\]")
# swarmkit: `port '8080' is already in use by service 'web' (qw3...) as an ingress port`. A
# service name has no `'` (swarmkit's name validation), its ID is 25 alphanumerics.
_PORT_HOLDER = re.compile(r"in use by service '[^']*' \([0-9A-Za-z]+\)")


def scrubbed_answer(operation: str, status: int, body: bytes) -> bytes:
    """One of `SCRUBBED_ANSWERS`, without what it says of other callers' objects. ValueError
    or TypeError for a SystemInfo answer that is not the JSON object the daemon sends (the
    request then fails, 502, rather than passing the counts)."""
    if (status, operation) == (200, "SystemInfo"):
        return _info(body)
    if operation == "ImageDelete":
        return _message(body, _image_delete)
    if operation == "VolumeDelete":
        return _message(body, lambda text: _VOLUME_USERS.sub(_counted, text))
    return _message(body, lambda text: _PORT_HOLDER.sub("in use by another service", text))


def _info(body: bytes) -> bytes:
    document = daemon_object("SystemInfo", body)
    for key in INFO_COUNTS:
        # Only counts the daemon sent (an older or newer daemon may lack one); any value, a
        # number or not, is replaced.
        if key in document:
            document[key] = 0
    return json.dumps(document).encode() + b"\n"


def _image_delete(text: str) -> str:
    return _IMAGE_USER.sub(_a_container, _IMAGE_IN_USE.sub(_in_use, text))


def _in_use(match: re.Match[str]) -> str:
    # Not "use force": a forced delete fails for a running container only, and would tell.
    image = match.group(1)
    return (
        f"unable to delete {image} (in use) - image is being used by a container: remove "
        f"the containers that use it first (`docker ps -a --filter ancestor={image}` "
        "lists yours)"
    )


def _a_container(match: re.Match[str]) -> str:
    return f"a {match.group(1) or ''}container"


def _counted(match: re.Match[str]) -> str:
    count = len(match.group(1).split(","))
    return f"volume is in use - [{count} container{'s' if count > 1 else ''}]"


def _message(body: bytes, scrub: Callable[[str], str]) -> bytes:
    """An error answer with `scrub` applied to its message: `{"message": ...}` (API 1.24 and
    newer) or plain text (older API versions: moby api/server/httputils WriteError)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        document["message"] = scrub(document["message"])
        return json.dumps(document).encode() + b"\n"
    # Not the JSON error: every occurrence in the text, whatever its shape.
    return scrub(body.decode("utf-8", errors="replace")).encode()
