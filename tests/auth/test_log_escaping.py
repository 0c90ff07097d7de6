"""Certificate text and client-chosen identities in plain-text log lines (issue 12, attack
review): a CN holding a line break wrote a line of the holder's choosing into the gateway's
logs, through the several-names refusal on stderr
(tests/auth/test_attacks_identity.py::test_several_names_refusal_log_line_can_be_forged) and
through the text access log's `user=` (here, against the real daemon, and as units).
"""

from __future__ import annotations

import io
import json
import pathlib
import time

import pytest
from test_tls_revalidation import start_gateway

from dockgate.observe.accesslog import AccessLog, AccessRecord
from dockgate.observe.logtext import printable
from support.daemon import PrivateDaemon
from support.gateway import running
from support.pki import Client, issue, make_pki

FORGED = '10.0.0.9:1 "GET /info HTTP/1.1" 200 user=admin'  # a CN holds 64 bytes


def test_printable_escapes_what_breaks_or_disguises_a_line() -> None:
    assert printable("alice") == "alice"
    assert printable("CN=Alice Smith,O=Example") == "CN=Alice Smith,O=Example"
    assert printable("Alice Smith", spaces=True) == "Alice\\x20Smith"
    assert printable("a\nb\rc\td\x00e\x7ff\x85") == "a\\x0ab\\x0dc\\x09d\\x00e\\x7ff\\x85"
    # Unicode line and paragraph separators, a right-to-left override, a no-break space.
    assert printable("a\u2028b\u2029c\u202ed\xa0") == "a\\u2028b\\u2029c\\u202ed\\xa0"
    assert printable("\U000e0041") == "\\U000e0041"  # a tag character (format, invisible)
    assert printable("é日本") == "é日本"  # printable non-ASCII stays readable
    # The backslash is escaped too: a CN that spells an escape is not the character.
    assert printable("a\\x0ab") == "a\\\\x0ab"
    assert printable("a\\x0ab") != printable("a\nb")


def _record(identity: str) -> AccessRecord:
    return AccessRecord(
        "127.0.0.1:5000", "GET", "/_ping", "1.1", 200, 0, 2, 0.001, identity=identity
    )


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_identity_is_one_field_of_one_access_log_line(fmt: str) -> None:
    """Failed before (text): `user=` printed the identity as is, so a CN `x\\n<line>` wrote
    <line> as a record of its own, and `alice src=10.0.0.1` a field that was not there."""
    out = io.StringIO()
    log = AccessLog(out, fmt)
    log.write(_record(f"x\n{FORGED}"))
    log.write(_record("alice src=10.0.0.1"))
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    if fmt == "json":
        assert [json.loads(line)["identity"] for line in lines] == [
            f"x\n{FORGED}",
            "alice src=10.0.0.1",
        ]
    else:
        assert lines[0].endswith("user=x\\x0a" + FORGED.replace(" ", "\\x20")), lines[0]
        assert lines[1].endswith("user=alice\\x20src=10.0.0.1"), lines[1]


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_a_certificate_cn_cannot_write_an_access_log_line(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """A certificate whose one CN holds a line break: it names that (unbound) caller, refused
    403; its access log line is one line with the CN escaped. Failed before: the access log
    (stdout) held FORGED as a line of its own."""
    pki = make_pki(tmp_path)
    leaf = issue(pki.ca1, f"x\n{FORGED}")
    with running(start_gateway(daemon, pki), "the TLS gateway") as gw:
        client = Client(gw, pki, leaf)
        try:
            status = client.request("GET", "/_ping")[0]
        finally:
            client.close()
        assert status == 403
        deadline = time.monotonic() + 5
        while not any("/_ping" in line for line in gw.stdout()):
            assert time.monotonic() < deadline, gw.output()
            time.sleep(0.05)
        lines = gw.stdout()
    assert FORGED not in [line.strip() for line in lines], lines
    ping = [line for line in lines if "/_ping" in line]
    assert len(ping) == 1 and "user=x\\x0a10.0.0.9:1\\x20" in ping[0], ping
