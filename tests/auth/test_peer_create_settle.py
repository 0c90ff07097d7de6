"""The peer_labels guardrail after the create (auth/peercreate.py): a container the daemon made
with a binding's labels (its image's, a tag moved after the look-up) is removed, whether the
create's answer was held (`settle_peer_create`) or the client left before it
(`sweep_peer_create`); a container without them stays. Against the real daemon, each
container made on it directly (the race itself, through a gateway, is
tests/auth/test_attacks_peer_2.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import pytest

from dockgate.addresses import parse_address
from dockgate.auth import peercreate
from dockgate.auth.peercreate import settle_peer_create, sweep_peer_create
from dockgate.body.guardrails import Guardrails
from support.clients import Cleanup
from support.daemon import PrivateDaemon

pytestmark = pytest.mark.daemon

CONDITIONS = (("binding 1 (policy lister)", (("dockgate.role", re.compile("lister")),)),)
GUARDED = Guardrails(peer_labels=CONDITIONS)


def _image(daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup, label: str) -> str:
    """An image named afresh whose own labels are `label` (none when empty)."""
    base = f"dgt-settle-base-{os.urandom(4).hex()}"
    cleanup.container(base)
    daemon.docker("create", "--name", base, busybox_image, "true")
    name = f"dgt-settle-{os.urandom(4).hex()}:t"
    cleanup.image(name)
    changes = ("--change", f"LABEL {label}") if label else ()
    daemon.docker("commit", *changes, base, name)
    return name


def _made(daemon: PrivateDaemon, image: str, cleanup: Cleanup) -> tuple[str, str]:
    name = f"dgt-settle-c-{os.urandom(4).hex()}"
    cleanup.container(name)
    container_id = daemon.docker("create", "--name", name, image, "true").stdout.decode().strip()
    return name, container_id


def _exists(daemon: PrivateDaemon, ref: str) -> bool:
    return daemon.docker("inspect", ref, check=False).returncode == 0


@pytest.mark.parametrize("label", ["dockgate.role=lister", "dockgate.role=web"])
def test_a_created_container_with_a_bound_label_is_removed_and_others_stay(
    daemon: PrivateDaemon, busybox_image: str, cleanup: Cleanup, label: str
) -> None:
    image = _image(daemon, busybox_image, cleanup, label)
    _, container_id = _made(daemon, image, cleanup)
    answer = json.dumps({"Id": container_id, "Warnings": []}).encode()
    address = parse_address(daemon.host)
    settled = asyncio.run(settle_peer_create(address, 201, answer, GUARDED))
    bound = label.endswith("lister")
    assert (settled.problem is not None) is bound, settled
    assert settled.failure is None, settled
    assert _exists(daemon, container_id) is not bound


def test_an_answer_naming_no_container_is_a_failure(daemon: PrivateDaemon) -> None:
    address = parse_address(daemon.host)
    settled = asyncio.run(settle_peer_create(address, 201, b'{"Id": "x"}', GUARDED))
    assert settled.failure is not None and settled.problem is None
    assert asyncio.run(settle_peer_create(address, 404, b"{}", GUARDED)).failure is None


@pytest.mark.parametrize("named", [True, False])
def test_the_sweep_finds_the_create_by_name_or_image_and_removes_only_bound_ones(
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    named: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client left before the answer: the container its create made (by its name, or
    by its image name and time) is removed when bound; one from an unbound image stays."""
    monkeypatch.setattr(peercreate, "SWEEP_DELAYS", (0.0,))  # (made already: one sweep)
    since = int(time.time())
    bound_image = _image(daemon, busybox_image, cleanup, "dockgate.role=lister")
    plain_image = _image(daemon, busybox_image, cleanup, "dockgate.role=web")
    bound_name, bound_id = _made(daemon, bound_image, cleanup)
    plain_name, plain_id = _made(daemon, plain_image, cleanup)
    address = parse_address(daemon.host)
    for image, name in ((bound_image, bound_name), (plain_image, plain_name)):
        asyncio.run(sweep_peer_create(address, GUARDED, name if named else None, image, since))
    assert not _exists(daemon, bound_id)
    assert _exists(daemon, plain_id)
