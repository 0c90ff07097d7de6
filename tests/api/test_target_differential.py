"""Differential test of `parse_target` against the real Docker daemon.

Each raw request-target of the corpus is sent, byte for byte, straight to the private dockerd's
unix socket (``GET <target> HTTP/1.1``; only GET on read endpoints, so nothing changes), and the
daemon's answer is classified:

- ``301 <Location>``: gorilla/mux cleaned the path and redirected instead of routing;
- ``400 bad URL``: Go's ``url.ParseRequestURI`` refused the target (net/http's own plain-text
  ``400 Bad Request``);
- ``404 page not found``: no route matched (moby's not-found handler);
- ``routed``: a handler (or the version middleware) answered.

The corpus records what the daemon is expected to do with each target, and that is asserted,
so the table doubles as documentation of dockerd's behaviour (it shows in the test ids next to
dockgate's decision). The claims under test:

1. whenever `parse_target` accepts a target, the daemon does not redirect it and routes it on
   exactly ``parse_target(...).path``: its answer to the raw target equals its answer to the
   plain re-encoding of ``.path`` (same query), status and body alike;
2. every target the daemon answers with 301 is refused;
3. for every target the daemon parses at all, it routes on Go's once-decoded path (the same
   comparison, on a transcription of Go's ``unescape``): what a refused target would have
   reached is shown in its id.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from dataclasses import dataclass

import pytest

from dockgate.api.target import parse_target
from dockgate.http.errors import ClientProtocolError
from support.daemon import PrivateDaemon
from support.gourl import go_unescape_path
from support.rawhttp import dechunk, json_message, parse_head

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

IO_TIMEOUT = 10.0

# A container list that is empty whatever other tests left behind: a running container's
# "Status" ("Up 2 seconds") would otherwise differ between two consecutive answers.
NO_CONTAINERS = "filters=%7B%22label%22%3A%5B%22dockgate.test%3Dnone%22%5D%7D"

REDIRECT = "301"
BAD_URL = "400 bad URL"
NOT_FOUND = "404 page not found"
ROUTED = "routed"

# (raw target, what the daemon does with it: ROUTED, NOT_FOUND, BAD_URL or "301 <Location>")
CORPUS: list[tuple[str, str]] = [
    # -- version prefixes: /v{version:[0-9.]+} is a route variable, not a syntax check
    ("/_ping", ROUTED),
    ("/v1.41/_ping", ROUTED),
    ("/v1/_ping", ROUTED),  # version middleware: "client version 1 is too old"
    ("/v1.41.0/_ping", ROUTED),
    ("/v./_ping", ROUTED),  # version middleware: "client version . is too old"
    ("/v9.99/_ping", ROUTED),  # version middleware: "client version 9.99 is too new"
    ("/v/_ping", NOT_FOUND),
    ("/V1.41/_ping", NOT_FOUND),
    ("/v1.41", NOT_FOUND),
    ("/", NOT_FOUND),
    ("/v1%2E41/_ping", ROUTED),  # refused (encoded dot); the daemon decodes it to /v1.41/_ping
    ("/v1.41/version", ROUTED),
    # -- read endpoints, names with slashes and colons
    (f"/v1.41/containers/json?{NO_CONTAINERS}", ROUTED),
    ("/v1.41/images/json", ROUTED),
    ("/v1.41/networks/none", ROUTED),
    # Encoded unreserved letters: this is /containers/json, to the daemon as to dockgate.
    (f"/v1.41/containers/%6Aso%6E?{NO_CONTAINERS}", ROUTED),
    ("/v1.41/images/reg.example.com:5000/team/app:1/json", ROUTED),
    ("/v1.41/images/reg.example.com%3A5000/team/app%3A1/json", ROUTED),
    ("/v1.41/images/a/b/json", ROUTED),
    ("/v1.41/images/busybox%40sha256%3Aabc/json", ROUTED),
    ("/v1.41/images/a%20b/json", ROUTED),
    ("/v1.41/images/a+b/json", ROUTED),
    ("/v1.41/images/a%3Fb/json", ROUTED),
    ("/v1.41/images/a%23b/json", ROUTED),
    ("/v1.41/_ping%3F", NOT_FOUND),  # the path is "/v1.41/_ping?", which no route matches
    ("/v1.41/images/[a]/json", ROUTED),
    ("/v1.41/images/.a/json", ROUTED),
    ("/v1.41/images/.../json", ROUTED),
    ("/v1.41/images/%C3%A9/json", ROUTED),
    ("/v1.41/images/%E2%80%A4%E2%80%A4/json", ROUTED),  # U+2024 is not a dot to path.Clean
    # -- query strings: never routing
    ("/v1.41/containers/abc/archive?path=%2Fetc%2F..%2Fx", ROUTED),
    ("/v1.41/_ping?x=/../", ROUTED),
    ("/v1.41/_ping?x=//..//&y=%2e%2e", ROUTED),
    ("/v1.41/_ping?", ROUTED),
    ("/v1.41/_ping?a=?b?", ROUTED),
    ("/v1.41/images/json?filters=..%2F..", ROUTED),  # the handler's JSON error
    ("/v1.41/containers/json?all=%zz", ROUTED),  # ParseForm: "invalid URL escape" (400)
    # -- dot segments: redirected
    ("/v1.41/./_ping", "301 /v1.41/_ping"),
    ("/v1.41/../_ping", "301 /_ping"),
    ("/v1.41/_ping/.", "301 /v1.41/_ping"),
    ("/v1.41/_ping/..", "301 /v1.41"),
    ("/v1.41/images/a/./json", "301 /v1.41/images/a/json"),
    ("/v1.41/images/a/../json", "301 /v1.41/images/json"),
    ("/v1.41/containers/x/../../_ping", "301 /v1.41/_ping"),
    ("/v1.41/_ping/..?x=1", "301 /v1.41?x=1"),
    # -- empty segments: redirected
    ("//_ping", "301 /_ping"),
    ("///_ping", "301 /_ping"),
    ("/v1.41//_ping", "301 /v1.41/_ping"),
    ("/v1.41/images/foo//json", "301 /v1.41/images/foo/json"),
    # -- trailing slashes: not redirected; no fixed route, but variables capture them
    ("/v1.41/containers/json/", NOT_FOUND),
    ("/containers/json/", NOT_FOUND),
    ("/v1.41/_ping/", NOT_FOUND),
    ("/v1.41/networks/", ROUTED),  # the legacy alias of GET /networks
    ("/v1.41/networks/none/", ROUTED),  # "network none/ not found"
    ("/v1.41/volumes/", ROUTED),  # volume inspect with an empty name
    # -- encoded slashes: the router sees real slashes
    ("/v1.41/images/foo%2Fbar/json", ROUTED),  # "No such image: foo/bar"
    ("/v1.41/images/a%2fb%2Fc/json", ROUTED),
    ("/v1.41/images/..%2Fjson", "301 /v1.41/json"),
    ("/v1.41/containers/%2e%2e%2f_ping", "301 /v1.41/_ping"),
    # -- encoded dots
    ("/v1.41/images/%2e%2e/json", "301 /v1.41/json"),
    ("/v1.41/images/%2E/json", "301 /v1.41/images/json"),
    ("/v1.41/images/a%2Eb/json", ROUTED),
    # -- encoded percent: decoded once by the daemon, never twice
    ("/v1.41/images/a%25b/json", ROUTED),
    ("/v1.41/images/%252e%252e/json", ROUTED),  # the name "%2e%2e"
    # -- invalid escapes: Go's URL parser refuses the request
    ("/v1.41/images/%/json", BAD_URL),
    ("/v1.41/images/a%4", BAD_URL),
    ("/v1.41/images/%zz/json", BAD_URL),
    ("/v1.41/images/%+1/json", BAD_URL),
    # -- backslashes, controls, bad UTF-8
    ("/v1.41/images/a%5Cb/json", ROUTED),
    ("/v1.41/images/a\\b/json", ROUTED),
    ("/v1.41/images/%00/json", ROUTED),
    ("/v1.41/containers/x%0Ay/json", NOT_FOUND),  # '.*' in {name:.*} stops at a newline
    ("/v1.41/containers/x%09y/json", ROUTED),
    ("/v1.41/images/%7F/json", ROUTED),
    ("/v1.41/images/a%C2%85b/json", ROUTED),
    ("/v1.41/images/%C3/json", ROUTED),
    ("/v1.41/images/%C0%AE%C0%AE/json", ROUTED),  # an overlong "..": not a dot segment to Go
    ("/v1.41/_ping\x7f", BAD_URL),
    ("/v1.41/images/a\x01b/json", BAD_URL),
    # -- a fragment is not stripped by ParseRequestURI: it is part of the path
    ("/v1.41/_ping#frag", NOT_FOUND),
]

# Characters Go's `escape(path, encodePath)` leaves alone, plus the sub-delims and '[', ']'
# that `validEncoded` accepts raw: the plain re-encoding of a decoded path.
_SAFE = "/!$&'()*+,;=:@[]~"


def _decision(raw: str) -> str:
    try:
        return f"ok {parse_target(raw).path!a}"
    except ClientProtocolError as exc:
        return f"refused ({exc.message})"


def _id(raw: str, daemon: str) -> str:
    return f"{raw!a} -> {_decision(raw)} | daemon: {daemon}"


def reencode(path: bytes | str, raw: str) -> str:
    """The plain origin-form for a decoded `path`, with `raw`'s query (and '?') unchanged."""
    _, question, query = raw.partition("?")
    return urllib.parse.quote(path, safe=_SAFE) + question + query


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None
    body: bytes

    @property
    def message(self) -> str | None:
        return json_message(self.body)

    def classify(self) -> str:
        if self.status == 301:
            return f"{REDIRECT} {self.location}"
        if self.status == 400 and self.body.startswith(b"400 Bad Request"):
            return BAD_URL
        if self.status == 404 and self.message == "page not found":
            return NOT_FOUND
        return ROUTED

    def show(self) -> str:
        return f"{self.status} location={self.location!r} body={self.body[:200]!r}"


def ask(daemon: PrivateDaemon, target: str) -> Answer:
    """Send ``GET <target>`` as raw bytes to the daemon's socket; read the whole answer."""
    request = f"GET {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(IO_TIMEOUT)
        sock.connect(str(daemon.socket_path))
        sock.sendall(request.encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return Answer(status=status, location=headers.get("location"), body=body)


def test_corpus_is_large_and_covers_both_decisions() -> None:
    assert len(CORPUS) >= 60
    assert len({raw for raw, _ in CORPUS}) == len(CORPUS)
    decisions = [_decision(raw).startswith("ok") for raw, _ in CORPUS]
    assert sum(decisions) >= 20
    assert len(decisions) - sum(decisions) >= 30
    assert sum(daemon.startswith(REDIRECT) for _, daemon in CORPUS) >= 15


@pytest.mark.parametrize(("raw", "expected"), CORPUS, ids=[_id(r, d) for r, d in CORPUS])
def test_dockgate_agrees_with_the_daemon(daemon: PrivateDaemon, raw: str, expected: str) -> None:
    answer = ask(daemon, raw)
    observed = answer.classify()
    assert observed == expected, f"the daemon answered {answer.show()}"

    try:
        target = parse_target(raw)
    except ClientProtocolError:
        target = None

    # Claim 2: what the daemon redirects, dockgate refuses.
    if answer.status == 301:
        assert target is None, f"accepted a target the daemon redirects: {answer.show()}"

    go_path = go_unescape_path(raw.partition("?")[0])
    if target is not None:
        # Claim 1: accepted -> not redirected, routed on exactly `target.path`.
        assert answer.status != 301
        assert go_path == target.path.encode("utf-8")
        canonical = reencode(target.path, raw)
        assert parse_target(canonical).path == target.path
        again = ask(daemon, canonical)
        assert (again.status, normal(again.body)) == (answer.status, normal(answer.body)), (
            f"{raw!a} -> {answer.show()}\n{canonical!a} -> {again.show()}"
        )
    elif observed not in (BAD_URL,) and not observed.startswith(REDIRECT):
        # Claim 3, for a refused target: the daemon routed it on Go's decoded path.
        assert go_path is not None
        plain = reencode(go_path, raw)
        again = ask(daemon, plain)
        assert (again.status, normal(again.body)) == (answer.status, normal(answer.body)), (
            f"{raw!a} -> {answer.show()}\n{plain!a} -> {again.show()}"
        )


def normal(body: bytes) -> object:
    """A body to compare: JSON lists as sorted items, since the daemon lists some objects (such
    as networks) in Go map order, which differs from one request to the next."""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, list):
        return sorted(json.dumps(item, sort_keys=True) for item in value)
    return value
