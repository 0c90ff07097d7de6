"""The exchange's tail as a keep-alive client's repeated request takes it (issue 14, fourth
pass): the access line from parts made once (`AccessLog.line_parts`), the metrics key made once
(`RequestCounts.record_key`), and the sink's lines joined at the flush. Each must give what the
general way gives, byte for byte."""

from __future__ import annotations

import io

import pytest

from dockgate.observe.accesslog import AccessLog
from dockgate.observe.logsink import LineSink
from dockgate.observe.metrics import RequestCounts

FIELDS = [
    # client, method, target, version, operation, decision, identity, source
    ("127.0.0.1:5000", "GET", "/_ping", "1.1", "SystemPing", "allow:p:rule-1", "-", ""),
    (
        "[::1]:80",
        "HEAD",
        "/v1.41/containers/json?all=1",
        "1.0",
        "ContainerList",
        "deny:p:x",
        "alice",
        "",
    ),
    ("unix", "GET", "/info", "1.1", "SystemInfo", "allow:-:r", "CN=a b\tc\x1b", "10.0.0.9"),
]


def _general(
    log: AccessLog, fields: tuple[str, ...], status: int, sizes: tuple[int, int], duration: float
) -> None:
    client, method, target, version, operation, decision, identity, source = fields
    log.write_fields(
        client=client,
        method=method,
        target=target,
        version=version,
        status=status,
        bytes_in=sizes[0],
        bytes_out=sizes[1],
        duration_s=duration,
        note="",
        operation=operation,
        decision=decision,
        identity=identity,
        source=source,
    )


@pytest.mark.parametrize("fields", FIELDS)
def test_a_line_from_its_parts_is_the_line_write_fields_writes(fields: tuple[str, ...]) -> None:
    """For each set of fields (with a proxied source, an identity that needs escaping, HTTP/1.0),
    `line_parts(...).write(status, sizes, duration)` writes exactly write_fields's line."""
    general, parted = io.StringIO(), io.StringIO()
    general_log, parted_log = AccessLog(general), AccessLog(parted)
    _general(general_log, fields, 404, (12, 3456), 0.0123456)
    parts = parted_log.line_parts(*fields)
    assert parts is not None
    parts.write(404, 12, 3456, 0.0123456)
    general_log.flush()
    parted_log.flush()
    assert parted.getvalue() == general.getvalue()
    assert parted.getvalue().count("\n") == 1


def test_lines_from_parts_and_from_fields_match_after_the_flush() -> None:
    """The same, read back from the streams the two sinks wrote."""
    general, parted = io.StringIO(), io.StringIO()
    general_log, parted_log = AccessLog(general), AccessLog(parted)
    for fields in FIELDS:
        _general(general_log, fields, 200, (0, 2), 0.0004)
        parts = parted_log.line_parts(*fields)
        assert parts is not None
        parts.write(200, 0, 2, 0.0004)
    general_log.flush()
    parted_log.flush()
    assert parted.getvalue() == general.getvalue()
    assert parted.getvalue().count("\n") == len(FIELDS)


def test_the_text_line_is_as_before() -> None:
    """The line itself, pinned (both ways put it together from the same parts)."""
    stream = io.StringIO()
    parts = AccessLog(stream).line_parts(*FIELDS[2])
    assert parts is not None
    parts.write(200, 0, 2, 0.0004)
    assert stream.getvalue() == (
        'unix "GET /info HTTP/1.1" 200 in=0 out=2 dur_ms=0.400 op=SystemInfo '
        "decision=allow:-:r user=CN=a\\x20b\\x09c\\x1b src=10.0.0.9\n"
    )


def test_no_parts_for_json_lines_or_a_log_that_is_off() -> None:
    """JSON lines and a log that is off have no parts: the relay then writes each line whole."""
    assert AccessLog(io.StringIO(), "json").line_parts(*FIELDS[0]) is None
    assert AccessLog(None).line_parts(*FIELDS[0]) is None


def test_no_parts_for_an_access_log_that_writes_its_own_way() -> None:
    """A subclass with its own write_fields (the in-process tests' recording log) gets every
    line through it: parts would bypass it."""

    class Recording(AccessLog):
        def write_fields(self, **fields: object) -> None:  # type: ignore[override]
            pass

    assert Recording(io.StringIO()).line_parts(*FIELDS[0]) is None


def test_the_sink_ends_every_line_with_one_newline() -> None:
    """Lines are joined at the flush, each ending with exactly one newline, in order."""
    stream = io.StringIO()
    sink = LineSink(stream)
    sink._pending.extend(["a", "", "b c"])  # as three writes queue them inside a loop
    sink.flush()
    sink.write("d")  # no loop: flushed at once
    assert stream.getvalue() == "a\n\nb c\nd\n"


def test_record_key_counts_what_record_counts() -> None:
    """A key made once and `record_key` count what `record` counts from the fields."""
    general, keyed = RequestCounts(), RequestCounts()
    key = ("SystemPing", "allow", "p", "200")
    for duration in (0.0001, 0.004, 7.0, 5000.0):
        general.record("SystemPing", "allow", "p", 200, duration, 10, 20)
        keyed.record_key(key, duration, 10, 20)
    assert keyed.to_json() == general.to_json()
    assert keyed.requests == {key: 4}
