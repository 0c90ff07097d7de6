"""Attack review 12, finding 3, pinned without a daemon: in ownership mode an ID prefix is
resolved among the caller's own objects, never by the daemon's prefix search, so what it
costs (and so its answer time) does not depend on other callers' objects. The effect on the
real daemon is tests/ownership/test_attacks_builds_and_prefixes.py
test_prefix_ambiguity_still_shows_in_the_answer_time. Each test here fails on the code before
the fix (find_owned asked the daemon the prefix first and listed only on its ambiguity)."""

from __future__ import annotations

import asyncio

import pytest

from dockgate.addresses import Address
from dockgate.ownership import prefix as ownedprefix
from dockgate.ownership.lookup import Found, LookupError_
from dockgate.ownership.operations import CONTAINER, NETWORK, SECRET, SERVICE, VOLUME, Kind
from dockgate.ownership.prefix import find_owned, is_id_prefix

MINE = "abc1" + "0" * 60
ADDRESS = Address("unix", path="/nonexistent")


@pytest.mark.parametrize(
    ("kind", "reference", "expected"),
    [
        (CONTAINER, "3f", True),
        (CONTAINER, "ABC", True),  # no ID matches it, and no name may be hex only
        (CONTAINER, "3f" * 31 + "a", True),  # 63 digits
        (CONTAINER, "3f" * 32, False),  # a full ID: looked up directly
        (CONTAINER, "web", False),  # a name
        (CONTAINER, "/abc", False),  # `/` names
        (CONTAINER, "", False),
        (NETWORK, "deadbeef", True),
        (SERVICE, "1a2b", True),
        (SERVICE, "a" * 25, False),  # a swarm object's full ID is 25 digits
        (SECRET, "q1w2", False),  # base 36: could be a name
        (VOLUME, "abc", False),  # volumes are found by exact name only
    ],
)
def test_what_is_an_id_prefix(kind: Kind, reference: str, expected: bool) -> None:
    assert is_id_prefix(kind, reference) is expected


class _Daemon:
    """Stands for lookup.get_json and lookup.find: what was asked, and the caller's list."""

    def __init__(self, listed: list[object], status: int = 200) -> None:
        self.listed = listed
        self.status = status
        self.asked: list[str] = []

    async def get_json(self, address: Address, path: str) -> tuple[int, object]:
        self.asked.append(f"list {path}")
        return self.status, self.listed

    async def find(self, address: Address, kind: Kind, reference: str) -> Found | None:
        self.asked.append(f"find {reference}")
        return Found(reference, "user:bob") if reference == MINE else None


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> _Daemon:
    fake = _Daemon([{"Id": MINE, "Names": ["/web"]}])
    monkeypatch.setattr(ownedprefix, "get_json", fake.get_json)
    monkeypatch.setattr(ownedprefix, "find", fake.find)
    return fake


@pytest.mark.parametrize("prefix", ["0", "ff", "abd", "ABC"])
def test_a_prefix_none_of_ones_own_fits_costs_one_list_only(daemon: _Daemon, prefix: str) -> None:
    """Missing, someone else's, ambiguous on the daemon: all the same one list, no prefix
    search."""
    assert asyncio.run(find_owned(ADDRESS, CONTAINER, prefix, "user:bob")) is None
    assert len(daemon.asked) == 1 and daemon.asked[0].startswith("list /containers/json?all=1&")
    assert "user%3Abob" in daemon.asked[0]


def test_a_prefix_of_ones_own_is_looked_up_by_its_full_id(daemon: _Daemon) -> None:
    found = asyncio.run(find_owned(ADDRESS, CONTAINER, "abc", "user:bob"))
    assert found == Found(MINE, "user:bob")
    assert daemon.asked[1:] == [f"find {MINE}"]


def test_names_and_full_ids_are_looked_up_directly(daemon: _Daemon) -> None:
    for reference in ("web", MINE):
        daemon.asked.clear()
        asyncio.run(find_owned(ADDRESS, CONTAINER, reference, "user:bob"))
        assert daemon.asked == [f"find {reference}"]


def test_without_an_owner_the_daemon_resolves_it(daemon: _Daemon) -> None:
    asyncio.run(find_owned(ADDRESS, CONTAINER, "abc", None))
    assert daemon.asked == ["find abc"]


def test_a_list_that_fails_fails_the_request(daemon: _Daemon) -> None:
    """Not the daemon's prefix search as a fallback: its time would tell."""
    daemon.status = 500
    with pytest.raises(LookupError_):
        asyncio.run(find_owned(ADDRESS, CONTAINER, "abc", "user:bob"))
    assert len(daemon.asked) == 1
