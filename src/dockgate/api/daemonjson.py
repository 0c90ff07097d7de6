"""The daemon's JSON answers, read where the gateway rewrites or judges them: an answer that is
not the JSON the daemon sends fails the request (502) rather than passing unchecked."""

from __future__ import annotations

import json
from typing import Any


def _parsed(operation: str, body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError(f"the daemon's {operation} answer is nested too deeply") from None


def daemon_object(operation: str, body: bytes) -> dict[Any, Any]:
    """The daemon's answer to `operation`, a JSON object. ValueError for one that does not
    parse (or is nested too deeply), TypeError for another JSON value."""
    document = _parsed(operation, body)
    if not isinstance(document, dict):
        raise TypeError(f"the daemon's {operation} answer is not a JSON object")
    return document


def daemon_array(operation: str, body: bytes) -> list[Any]:
    """The daemon's answer to `operation`, a JSON array. ValueError for one that does not
    parse (or is nested too deeply), TypeError for another JSON value."""
    entries = _parsed(operation, body)
    if not isinstance(entries, list):
        raise TypeError(f"the daemon's {operation} answer is not a JSON array")
    return entries
