"""Reading the operator's files (policies, htpasswd, tokens): one place, one set of errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def read_config_text(path: str | Path, fail: Callable[[str], Exception]) -> str:
    """The UTF-8 text of a configuration file; `fail(problem)` builds the error to raise."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
