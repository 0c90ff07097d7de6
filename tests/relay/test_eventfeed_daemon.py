"""Shared event streams against the real daemon, with the real docker CLI: three `docker events`
through the gateway are one subscriber for the daemon (its own count, `docker info`'s
NEventsListener), each CLI sees every event, and a replay (`--since`) has a stream of its own."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from support.clients import Cleanup, DockerPopen
from support.daemon import PrivateDaemon
from support.streams import LineReader, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
    reason="DOCKGATE_TEST_DIRECT=1: about the gateway's shared streams",
)


def listeners(daemon: PrivateDaemon) -> int:
    """The daemon's own count of its event subscribers."""
    out = daemon.docker("info", "--format", "{{.NEventsListener}}").stdout
    return int(out.decode().strip())


def subscribed(
    daemon: PrivateDaemon, readers: list[LineReader], unique: Callable[[str], str], cleanup: Cleanup
) -> list[str]:
    """Make volumes until every reader (a `docker events` just started) has seen one: then it
    is subscribed. The volumes' names."""
    made: list[str] = []
    waiting = list(readers)
    deadline = time.monotonic() + 30
    while waiting and time.monotonic() < deadline:
        name = unique("vol")
        cleanup.volume(name)
        daemon.docker("volume", "create", name)
        made.append(name)
        for reader in list(waiting):
            try:
                reader.expect(name, timeout=1.0)
            except AssertionError:
                continue
            waiting.remove(reader)
    assert not waiting, f"{len(waiting)} of the CLIs never saw an event"
    return made


def test_same_event_streams_are_one_subscriber_for_the_daemon(
    daemon: PrivateDaemon,
    docker_popen: DockerPopen,
    unique: Callable[[str], str],
    cleanup: Cleanup,
) -> None:
    before = listeners(daemon)
    args = ("events", "--filter", "type=volume", "--format", "{{.Action}} {{.Actor.ID}}")
    watchers = [docker_popen(*args) for _ in range(3)]
    readers = [LineReader(proc.stdout) for proc in watchers]  # type: ignore[arg-type]
    first = subscribed(daemon, readers, unique, cleanup)[-1]
    assert listeners(daemon) == before + 1, "three CLIs, one daemon subscriber"

    # A replay asks something else of the daemon: a subscriber of its own.
    replay = docker_popen(*args, "--since", "1h")
    replay_lines = LineReader(replay.stdout)  # type: ignore[arg-type]
    replay_lines.expect(rf"^create {first}$")
    assert listeners(daemon) == before + 2

    # Two leave; the third still gets every event, from the same daemon stream.
    for proc in watchers[:2]:
        proc.terminate()
        proc.wait(timeout=10)
    second = unique("vol")
    cleanup.volume(second)
    daemon.docker("volume", "create", second)
    readers[2].expect(rf"^create {second}$")
    replay_lines.expect(rf"^create {second}$")
    assert listeners(daemon) == before + 2

    # The last leaves: so does the daemon subscription.
    for proc in (watchers[2], replay):
        proc.terminate()
        proc.wait(timeout=10)
    wait_for(lambda: listeners(daemon) == before, timeout=20, what="the subscriptions to end")


def test_a_late_joiner_starts_with_whole_events(
    daemon: PrivateDaemon,
    docker_popen: DockerPopen,
    unique: Callable[[str], str],
    cleanup: Cleanup,
) -> None:
    """A CLI that joins a running shared stream reads only whole events (its JSON decoder
    would fail on half of one), each event after it joined."""
    args = ("events", "--filter", "type=volume", "--format", "{{json .}}")
    early = docker_popen(*args)
    early_lines = LineReader(early.stdout)  # type: ignore[arg-type]
    before = subscribed(daemon, [early_lines], unique, cleanup)
    after = unique("vol")
    cleanup.volume(after)
    late = docker_popen(*args)
    late_lines = LineReader(late.stdout)  # type: ignore[arg-type]
    # The late one is in once it has seen a volume made after it started: make them until so.
    made = subscribed(daemon, [late_lines], unique, cleanup)
    daemon.docker("volume", "create", after)
    late_lines.expect(after)
    early_lines.expect(after)
    for proc in (early, late):
        proc.terminate()
        proc.wait(timeout=10)
    early_all, late_all = early_lines.read_to_eof(), late_lines.read_to_eof()
    assert late_all and all(line.startswith("{") and line.endswith("}") for line in late_all)
    assert not any(name in line for line in late_all for name in before)
    assert all(any(name in line for line in early_all) for name in made)
