"""Questions the gateway asks the daemon itself: who owns an object (ownership mode).

One short HTTP/1.0 request per question on a connection of its own (so the daemon answers with
a plain body and closes), never on a client's upstream connection. Answers are not cached: an
object's labels are read at the moment the request about it is decided, and the request then
names the object by the full ID that was read. The one exception is an image's owner label,
asked by image ID: an image ID is the digest of the image's config, labels included, so what
it says never changes (a bounded cache, `ImageOwners`); and a container's verdict (its trusted
owner, ownership.trusted_owner), asked by full container ID: its labels, image and log driver
are fixed at its create (`ContainerVerdicts`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from dockgate.addresses import Address
from dockgate.api.daemonjson import daemon_array
from dockgate.caching import Recent
from dockgate.http.hops import with_hop
from dockgate.ownership.operations import (
    CONTAINER,
    MAX_OWNER_BYTES,
    PARENT_FIELD,
    Kind,
    container_ids_of,
    image_owner_of,
    log_driver_of,
    owner_of,
    trusted_owner,
    vouched_list,
)
from dockgate.relay.upstreamtls import tls_failure

LOOKUP_TIMEOUT_SECONDS = 10.0
LOOKUP_MAX_BYTES = 8 * 1024 * 1024


class LookupError_(Exception):
    """The daemon could not be asked (the request fails with 502)."""


class TooLarge(LookupError_):
    """The daemon's answer is over LOOKUP_MAX_BYTES."""


class Unresolved(Exception):
    """The daemon answered that it cannot tell which object the reference names (400: a name
    two networks share, an ID prefix of several objects): the request is refused with a 400,
    as the daemon refuses it, not failed with a 502."""


@dataclass(frozen=True, slots=True)
class Found:
    full_id: str  # the object's full ID (a volume's name)
    owner: str | None  # its owner label, for exec instances and tasks their parent's
    # What an object scope (policy/scopes.py) matches, as inspected: its labels and its name
    # (a container's without the leading `/`); for exec instances and tasks their parent's.
    labels: Mapping[str, str] = field(default_factory=dict)
    name: str = ""


async def get_json(address: Address, path: str) -> tuple[int, object]:
    """GET `path` from the daemon: its status and decoded JSON answer (None if not JSON)."""
    return await ask_json(address, "GET", path)


async def ask_json(
    address: Address, method: str, path: str, body: bytes | None = None
) -> tuple[int, object]:
    """`method path` (with a JSON `body`, if any) to the daemon: its status and decoded JSON
    answer (None if not JSON). One HTTP/1.0 exchange on a connection of its own."""
    try:
        if address.scheme == "unix":
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(address.path), LOOKUP_TIMEOUT_SECONDS
            )
        elif address.tls is not None:  # the same TLS as the upstream pool (relay/upstreamtls.py)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    address.host, address.port, ssl=address.tls, server_hostname=address.host
                ),
                LOOKUP_TIMEOUT_SECONDS,
            )
        else:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address.host, address.port), LOOKUP_TIMEOUT_SECONDS
            )
    except (OSError, TimeoutError) as exc:
        raise LookupError_(f"cannot connect to the daemon: {tls_failure(exc) or exc}") from None
    try:
        # With this gateway's hop field (http/hops.py): in a ring of gateways, a look-up that
        # comes back is refused like any forwarded request, rather than starting another.
        request = f"{method} {path} HTTP/1.0\r\nHost: docker\r\n"
        if body is not None:
            request += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(with_hop((request + "\r\n").encode()) + (body or b""))
        pieces: list[bytes] = []
        size = 0
        while True:  # an HTTP/1.0 answer ends when the daemon closes
            more = await asyncio.wait_for(reader.read(65536), LOOKUP_TIMEOUT_SECONDS)
            if not more:
                break
            pieces.append(more)
            size += len(more)
            if size > LOOKUP_MAX_BYTES:
                raise TooLarge("the daemon's answer is too large")
        raw = b"".join(pieces)
    except (OSError, TimeoutError) as exc:
        raise LookupError_(f"the daemon did not answer: {tls_failure(exc) or exc}") from None
    finally:
        writer.close()
    answer_head, _, answer_body = raw.partition(b"\r\n\r\n")
    status_line = answer_head.split(b"\r\n", 1)[0].split(b" ")
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise LookupError_("the daemon's answer is not HTTP")
    try:
        document = json.loads(answer_body) if answer_body else None
    except ValueError:
        document = None
    return int(status_line[1]), document


async def find(address: Address, kind: Kind, reference: str) -> Found | None:
    """The object `reference` names, as the daemon resolves it (full ID, unique ID prefix,
    name), with its owner; None when the daemon knows no such object."""
    # A lone surrogate (a JSON "\udfff") is U+FFFD to Go: the same here, so it can be quoted.
    reference = reference.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    asked = reference
    by_name_only = kind.name == "container" and reference.startswith("/")
    if by_name_only:
        # `/web` is how inspect writes a container's name, and bodies may name it so
        # (NetworkConnect's Container, VolumesFrom `/web:ro`, `container:/web`). The daemon
        # finds it by name only (daemon/container.go GetContainer: no ID is `/...`; GetByName
        # adds the `/` that names are stored with). It cannot be asked as written: the router
        # decodes `%2F` and redirects the unclean path (301). So `web` is asked, and the answer
        # counts only if that container's name is `/web` (not an ID or prefix that is `web`).
        asked = reference[1:]
        if "/" in asked:
            return None  # no name has another `/` (daemon/names.go validContainerNamePattern)
    status, answer = await get_json(address, kind.inspect.format(quote(asked, safe="")))
    if status == 404:
        return None
    if status == 400:
        raise Unresolved(f"the daemon cannot tell which {kind.name} {reference!r} names")
    if 300 <= status < 400:
        # The router redirects a path that is not clean (`..`, `//` in a reference): it cannot
        # be asked about, and is not found as written either.
        raise Unresolved(f"{kind.name} {reference!r} cannot be looked up as written")
    if status != 200 or not isinstance(answer, dict):
        raise LookupError_(f"the daemon answered {status} to a look-up of {kind.name} {reference}")
    if by_name_only and answer.get("Name") != reference:
        return None
    full_id = answer.get(kind.id_field)
    if not isinstance(full_id, str):
        raise LookupError_(f"no {kind.id_field} in the daemon's {kind.name} answer")
    parent = PARENT_FIELD.get(kind.name)
    if parent is None:
        labels, name = scope_facts(answer, kind)
        if kind is CONTAINER:
            owner = await CONTAINER_VERDICTS.verdict(address, full_id, answer)
            return Found(full_id, owner, labels, name)
        return Found(full_id, owner_of(answer, kind), labels, name)
    parent_field, parent_kind = parent
    parent_id = answer.get(parent_field)
    if not isinstance(parent_id, str) or not parent_id:
        return Found(full_id, None)
    # An exec instance is its container's: the container's trusted owner (above), and what a
    # scope matches of it is the container's (a task's, its service's).
    found_parent = await find(address, parent_kind, parent_id)
    if found_parent is None:
        return Found(full_id, None)
    return Found(full_id, found_parent.owner, found_parent.labels, found_parent.name)


def scope_facts(answer: dict[str, object], kind: Kind) -> tuple[dict[str, str], str]:
    """An inspect answer's labels (where `kind.labels` says) and name, as a scope matches
    them: a container's `Name` without its leading `/` (moby stores `/web`), a swarm object's
    `Spec.Name`, a network's or volume's `Name`. Labels that are not strings match nothing."""
    node: object = answer
    for key in kind.labels:
        node = node.get(key) if isinstance(node, dict) else None
    labels = (
        {k: v for k, v in node.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(node, dict)
        else {}
    )
    where: object = answer.get("Spec") if kind.labels[:1] == ("Spec",) else answer
    name = where.get("Name") if isinstance(where, dict) else None
    if not isinstance(name, str):
        return labels, ""
    return labels, name.removeprefix("/") if kind is CONTAINER else name


# ----- images: whose owner label they carry ------------------------------------------------------

_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")
IMAGE_OWNERS_CACHED = 4096  # image IDs remembered (about 200 bytes each)


class ImageOwners:
    """Image ID -> the image's owner label (or None), least recently used forgotten first.

    Only full image IDs are asked and kept: an ID is the digest of the image's config (moby
    image/store.go, the ID is the content digest), so its labels cannot change and nothing
    kept here goes stale. An image the daemon no longer knows (force-removed while a stopped
    container still uses it) is not kept, and vouches for nothing: a container's label is
    then trusted, unless its log driver is the build steps' (`none`, ownership.trusted_owner),
    so a leftover step container stays nobody's when its image is removed. An owner label
    over MAX_OWNER_BYTES is kept as None: it cannot equal a trusted owner, and the cache stays
    small (4 MB owner values were kept whole)."""

    def __init__(self, size: int = IMAGE_OWNERS_CACHED) -> None:
        self._owners: Recent[str, str | None] = Recent(size)

    def __len__(self) -> int:
        return len(self._owners)

    async def owner(self, address: Address, image_id: str) -> str | None:
        """The owner label of the image `image_id`; None when it has none or is unknown."""
        if not _IMAGE_ID.fullmatch(image_id):
            # Not an ID (a container's `Image` is one on 20.10): asked, never kept.
            return await named_image_owner(address, image_id)
        if image_id in self._owners:
            return self._owners.get(image_id)
        status, answer = await get_json(address, f"/images/{image_id}/json")
        if status == 404:
            return None
        if status != 200 or not isinstance(answer, dict):
            raise LookupError_(f"the daemon answered {status} to a look-up of image {image_id}")
        owner = image_owner_of(answer)
        if owner is not None and len(owner.encode("utf-8", "surrogatepass")) > MAX_OWNER_BYTES:
            # No container's trusted owner is that long (trusted_owner): it cannot equal one,
            # so it judges as no label at all, and the cache keeps small values only.
            owner = None
        self._owners.put(image_id, owner)
        return owner


IMAGE_OWNERS = ImageOwners()


async def named_image_owner(address: Address, name: str) -> str | None:
    """The owner label of the image `name` (a name, tag, digest or ID, resolved by the daemon
    now); None when it has none, or when the daemon does not find it (the create that names it
    then fails the same way, or the client pulls it and asks again)."""
    answer = await named_image(address, name)
    return None if answer is None else image_owner_of(answer)


async def named_image(address: Address, name: str) -> dict[str, object] | None:
    """The daemon's inspect answer for the image `name` (resolved by the daemon now), or None
    when it does not find it (not an image the daemon would create from either)."""
    name = name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    status, answer = await get_json(address, f"/images/{quote(name, safe='/:@')}/json")
    if status in (400, 404) or 300 <= status < 400:
        return None  # not an image the daemon would create from either
    if status != 200 or not isinstance(answer, dict):
        raise LookupError_(f"the daemon answered {status} to a look-up of image {name}")
    return answer


async def named_image_labels(address: Address, name: str) -> dict[str, str]:
    """The labels the image `name` gives the containers created from it (`Config.Labels`:
    the daemon copies each one the create does not set: moby daemon/commit.go `merge`); empty
    when it has none or the daemon does not find it."""
    answer = await named_image(address, name)
    config = answer.get("Config") if answer is not None else None
    labels = config.get("Labels") if isinstance(config, dict) else None
    if not isinstance(labels, dict):
        return {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


# ----- the daemon's default log driver ----------------------------------------------------------

DEFAULT_LOG_DRIVER_SECONDS = 60.0  # how long /info's LoggingDriver is kept (set at daemon start)
_default_log_driver: tuple[float, str | None] | None = None


async def default_log_driver(address: Address) -> str | None:
    """The daemon's default log driver (`GET /info` LoggingDriver: daemon/info.go, the
    daemon's `log-driver` setting), kept DEFAULT_LOG_DRIVER_SECONDS; None when /info does not
    say. A container created without a driver gets it (daemon/logs.go
    mergeAndVerifyLogConfig): when it is `none`, ownership cannot tell such a container from a
    build step (ownership.silent_log_problem)."""
    global _default_log_driver  # noqa: PLW0603 - one daemon per gateway, one value
    now = asyncio.get_running_loop().time()
    kept = _default_log_driver
    if kept is not None and now - kept[0] < DEFAULT_LOG_DRIVER_SECONDS:
        return kept[1]
    status, answer = await get_json(address, "/info")
    if status != 200 or not isinstance(answer, dict):
        raise LookupError_(f"the daemon answered {status} to /info")
    driver = answer.get("LoggingDriver")
    value = driver if isinstance(driver, str) else None
    _default_log_driver = (now, value)
    return value


# ----- containers: whom dockgate trusts them to be ---------------------------------------------

CONTAINER_VERDICTS_CACHED = 16384  # container IDs remembered (under 1.2 KB each)
LIST_LOOKUPS_AT_ONCE = 8  # container inspects one list answer runs at the same time


class ContainerVerdicts:
    """Full container ID -> its trusted owner (ownership.trusted_owner) or None, least recently
    used forgotten first. A verdict never changes: a container's labels, image and log driver
    are fixed at its create, and a container ID is never reused. Owners are at most
    MAX_OWNER_BYTES (longer labels are nobody's), so the cache stays small."""

    def __init__(self, size: int = CONTAINER_VERDICTS_CACHED) -> None:
        self._verdicts: Recent[str, str | None] = Recent(size)

    def __len__(self) -> int:
        return len(self._verdicts)

    def known(self, container_id: str) -> tuple[bool, str | None]:
        if container_id in self._verdicts:
            return True, self._verdicts.get(container_id)
        return False, None

    def keep(self, container_id: str, owner: str | None) -> None:
        self._verdicts.put(container_id, owner)

    async def verdict(self, address: Address, container_id: str, answer: object) -> str | None:
        """The trusted owner of the container `container_id` (full ID), whose inspect answer
        is `answer`: from the cache, or judged now (its image looked up unless the label or
        the log driver already decide) and kept."""
        cached, owner = self.known(container_id)
        if cached:
            return owner
        owner = owner_of(answer, CONTAINER)
        log_driver = log_driver_of(answer)
        if trusted_owner(owner, None, log_driver) is None:
            owner = None  # decided without the image: no label, a build step's log driver, ...
        else:
            # Every container has an image: without one, it cannot be judged.
            image = answer.get("Image") if isinstance(answer, dict) else None
            if isinstance(image, str) and image:
                try:
                    image_owner = await IMAGE_OWNERS.owner(address, image)
                except TooLarge:
                    # Its labels are over the look-up bound, and so are the container's own
                    # (copied from it): not judged, nobody's.
                    owner = None
                else:
                    owner = trusted_owner(owner, image_owner, log_driver)
            else:
                owner = None
        self.keep(container_id, owner)
        return owner


CONTAINER_VERDICTS = ContainerVerdicts()


async def listed_verdict(address: Address, container_id: str) -> str | None:
    """A listed container's trusted owner: cached, or its inspect asked for (the list answer
    has no log driver). A container the daemon no longer knows, or whose look-up fails, is
    nobody's for this list (not kept: it may answer next time); one whose inspect is over the
    look-up bound is nobody's for good (its size is its labels')."""
    cached, owner = CONTAINER_VERDICTS.known(container_id)
    if cached:
        return owner
    try:
        status, answer = await get_json(address, CONTAINER.inspect.format(container_id))
        if status != 200 or not isinstance(answer, dict) or answer.get("Id") != container_id:
            return None
        return await CONTAINER_VERDICTS.verdict(address, container_id, answer)
    except TooLarge:
        CONTAINER_VERDICTS.keep(container_id, None)
        return None
    except LookupError_:
        return None


async def vouched_containers(address: Address, raw: bytes, owner: str) -> bytes:
    """The daemon's container list (narrowed to `owner`'s label by the daemon) with only the
    containers trusted as `owner`'s (ownership.vouched_list): each container without a
    cached verdict is inspected, LIST_LOOKUPS_AT_ONCE at a time. A look-up that fails hides
    that container, never fails the list (one container whose inspect was over the bound, a
    build step of someone else's, made every list of its label's owner a 502). ValueError or
    TypeError for an answer that is not the JSON array the daemon sends."""
    entries = daemon_array("ContainerList", raw)
    gate = asyncio.Semaphore(LIST_LOOKUPS_AT_ONCE)

    async def judged(container_id: str) -> str | None:
        async with gate:
            return await listed_verdict(address, container_id)

    ids = container_ids_of(entries)
    found = await asyncio.gather(*(judged(cid) for cid in ids))
    verdicts = dict(zip(ids, found, strict=True))
    return json.dumps(vouched_list(entries, owner, verdicts)).encode() + b"\n"
