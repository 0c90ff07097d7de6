"""Where the tests find the repository's files, whichever directory under tests/ a module is in."""

from __future__ import annotations

import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]
REPO = TESTS.parent
TEST_POLICIES = TESTS / "policies"  # policy files written for the tests (tests/policies/)
