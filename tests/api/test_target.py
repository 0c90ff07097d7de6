"""Table tests for `dockgate.api.target.parse_target`: Go's decoding, and every refusal class.

The daemon's side of these decisions is checked against a real dockerd by
``test_target_differential.py``; here each rule is pinned down on its own.
"""

from __future__ import annotations

import pytest

from dockgate.api.target import RequestTarget, parse_target
from dockgate.http.errors import ClientProtocolError
from support.gourl import go_unescape_path

# (raw target, decoded path, raw query)
CANONICAL = [
    ("/_ping", "/_ping", ""),
    ("/", "/", ""),
    ("/v1.41/containers/json", "/v1.41/containers/json", ""),
    ("/v1.41/containers/json?all=1&limit=3", "/v1.41/containers/json", "all=1&limit=3"),
    (
        "/images/reg.example.com:5000/team/app:1/json",
        "/images/reg.example.com:5000/team/app:1/json",
        "",
    ),
    (
        "/v1.41/images/reg.example.com%3A5000/team/app%3a1/json",
        "/v1.41/images/reg.example.com:5000/team/app:1/json",
        "",
    ),
    # The query is never decoded nor looked into: '/../' there is the handler's data.
    (
        "/containers/abc/archive?path=%2Fetc%2F..%2Fx",
        "/containers/abc/archive",
        "path=%2Fetc%2F..%2Fx",
    ),
    ("/v1.41/_ping?x=/../&y=//", "/v1.41/_ping", "x=/../&y=//"),
    ("/v1.41/_ping?%zz=%", "/v1.41/_ping", "%zz=%"),
    # Only the first '?' splits; later ones belong to the query (Go: strings.Cut).
    ("/v1.41/_ping?a=?b?", "/v1.41/_ping", "a=?b?"),
    # An encoded ';' is a literal character of a value (url.Values.Encode and urlencode write
    # it so); only a raw one is refused.
    (
        "/v1.41/containers/json?filters=%7B%22label%22%3A%5B%22a%3Bb%22%5D%7D",
        "/v1.41/containers/json",
        "filters=%7B%22label%22%3A%5B%22a%3Bb%22%5D%7D",
    ),
    # An empty query: Go sets ForceQuery, the path is the same; the '?' stays in `raw`.
    ("/v1.41/_ping?", "/v1.41/_ping", ""),
    # '+' is not a space in a path (only query components decode it).
    ("/images/a+b/json", "/images/a+b/json", ""),
    ("/images/a%2Bb/json", "/images/a+b/json", ""),
    ("/images/a%20b/json", "/images/a b/json", ""),
    # As docker-py sends digests: quote(name, safe="/:").
    ("/images/busybox%40sha256:abc/json", "/images/busybox@sha256:abc/json", ""),
    # Encoded '?' and '#' are literal characters of the path, as for the daemon.
    ("/images/a%3Fb/json", "/images/a?b/json", ""),
    ("/images/a%23b/json", "/images/a#b/json", ""),
    # Encoded unreserved letters decode like everything else: this *is* /containers/json.
    ("/v1.41/containers/%6Aso%6E", "/v1.41/containers/json", ""),
    # Valid UTF-8, upper or lower case hex.
    ("/images/%C3%A9/json", "/images/\u00e9/json", ""),
    ("/images/%c3%a9/json", "/images/\u00e9/json", ""),
    ("/images/%E2%80%A4%E2%80%A4/json", "/images/\u2024\u2024/json", ""),
    ("/images/%F0%9F%90%B3/json", "/images/\U0001f433/json", ""),
    # Dots that are not dot segments are names, to path.Clean as to the router.
    ("/images/.a/json", "/images/.a/json", ""),
    ("/images/a./json", "/images/a./json", ""),
    ("/images/.../json", "/images/.../json", ""),
    ("/images/..a/json", "/images/..a/json", ""),
    ("/v./_ping", "/v./_ping", ""),
    ("/v1.41.0/_ping", "/v1.41.0/_ping", ""),
    # Sub-delims, ':' '@' '[' ']' are plain path characters.
    ("/images/[a]!$&'()*,;=@~/json", "/images/[a]!$&'()*,;=@~/json", ""),
    ("/images/a%3Bb%21/json", "/images/a;b!/json", ""),
    ("/images/a%7Eb%5F/json", "/images/a~b_/json", ""),
    ("/images/%7B%7C%7D%5E%60%22%3C%3E/json", '/images/{|}^`"<>/json', ""),
]


@pytest.mark.parametrize(("raw", "path", "query"), CANONICAL, ids=[c[0] for c in CANONICAL])
def test_canonical_targets_decode_like_go(raw: str, path: str, query: str) -> None:
    target = parse_target(raw)
    assert target == RequestTarget(path=path, query=query, raw=raw)


def test_raw_is_kept_exactly() -> None:
    raw = "/v1.41/images/app%3A1/json?force=1&x=%2F..%2F"
    target = parse_target(raw)
    assert target.raw is raw
    assert target.query == "force=1&x=%2F..%2F"


def test_target_is_immutable() -> None:
    target = parse_target("/_ping")
    with pytest.raises(AttributeError):
        target.path = "/other"  # type: ignore[misc]


REFUSED: dict[str, list[str]] = {
    "dot segment in path": [
        "/.",
        "/..",
        "/./",
        "/../",
        "/./_ping",
        "/../_ping",
        "/v1.41/./_ping",
        "/v1.41/../_ping",
        "/v1.41/_ping/.",
        "/v1.41/_ping/..",
        "/v1.41/images/a/../json",
        "/v1.41/containers/x/../../images/json",
        "/v1.41/_ping/..?x=1",
    ],
    "empty path segment": [
        "//",
        "//_ping",
        "///x",
        "/x//y",
        "/v1.41//_ping",
        "/v1.41/images/foo//json",
        "/x//",
        "//./",
    ],
    "trailing slash in path": [
        "/containers/json/",
        "/v1.41/containers/json/",
        "/v1.41/",
        "/v1.41/networks/",
        "/v1.41/networks/none/",
        "/v1.41/_ping/?x=1",
    ],
    "encoded slash in path": [
        "/v1.41/images/foo%2Fbar/json",
        "/v1.41/images/foo%2fbar/json",
        "/v1.41/images/..%2Fjson",
        "/%2F_ping",
        "/v1.41/_ping%2F",
    ],
    "encoded dot in path": [
        "/v1.41/images/%2e%2e/json",
        "/v1.41/images/%2E%2E/json",
        "/v1.41/images/%2e/json",
        "/v1.41/images/.%2e/json",
        "/v1%2E41/_ping",
        "/v1.41/images/a%2Eb/json",
    ],
    "encoded percent in path": [
        "/v1.41/images/%25/json",
        "/v1.41/images/a%25b/json",
        "/v1.41/images/%252e%252e/json",
        "/v1.41/images/%2525/json",
    ],
    "invalid percent-encoding": [
        "/%",
        "/v1.41/images/%/json",
        "/v1.41/images/a%",
        "/v1.41/images/a%4",
        "/v1.41/images/%4/json",
        "/v1.41/images/%zz/json",
        "/v1.41/images/%g0/json",
        "/v1.41/images/%0g/json",
        "/v1.41/images/%+1/json",
        "/v1.41/images/%-1/json",
        "/v1.41/images/%_1/json",
        "/v1.41/images/%%41/json",
        "/v1.41/images/ok%41/%4?x=1",
    ],
    "backslash in path": [
        "/v1.41/images/a\\b/json",
        "/v1.41\\_ping",
        "/v1.41/images/a%5Cb/json",
        "/v1.41/images/a%5cb/json",
        "/v1.41/images/..%5C..%5Cjson",
    ],
    "control character in path": [
        "/v1.41/images/%00/json",
        "/v1.41/images/a%00",
        "/v1.41/images/%0a/json",
        "/v1.41/images/%0D%0A/json",
        "/v1.41/images/%09/json",
        "/v1.41/images/%1f/json",
        "/v1.41/images/%7f/json",
        "/v1.41/images/%7F/json",
        "/v1.41/images/a%C2%85b/json",
        "/v1.41/images/%C2%80/json",
        "/v1.41/images/%C2%9F/json",
        "/v1.41/images/a\x00b/json",
        "/v1.41/images/a\nb/json",
        "/v1.41/images/a\x7fb/json",
    ],
    "invalid UTF-8 in path": [
        "/v1.41/images/%C3/json",
        "/v1.41/images/%C3%28/json",
        "/v1.41/images/a%FFb/json",
        "/v1.41/images/%80/json",
        "/v1.41/images/%C0%AE/json",  # overlong '.'
        "/v1.41/images/%C0%AF/json",  # overlong '/'
        "/v1.41/images/%ED%A0%80/json",  # a surrogate
        "/v1.41/images/%F4%90%80%80/json",  # past U+10FFFF
        "/v1.41/images/%E2%80/json",  # truncated
    ],
    "fragment in target": [
        "/v1.41/_ping#frag",
        "/v1.41/_ping#",
        "/v1.41/_ping?x=1#frag",
        "/v1.41/_ping#a?b",
    ],
    "request target is not origin-form": [
        "",
        "*",
        "_ping",
        "http://docker/v1.41/_ping",
        "docker:2375/_ping",
    ],
    "invalid character in path": [
        "/v1.41/images/a b/json",
        '/v1.41/images/a"b/json',
        "/v1.41/images/{a}/json",
        "/v1.41/images/a|b/json",
        "/v1.41/images/a^b/json",
        "/v1.41/images/a`b/json",
        "/v1.41/images/<a>/json",
        "/v1.41/images/\u00e9/json",
    ],
    "invalid character in query": [
        "/v1.41/_ping?x=a b",
        "/v1.41/_ping?x={}",
        "/v1.41/_ping?x=\\",
        "/v1.41/_ping?x=\u00e9",
    ],
    "control character in query": [
        "/v1.41/_ping?x=\x00",
        "/v1.41/_ping?x=\r\n",
        "/v1.41/_ping?x=\x7f",
    ],
    # Issue 12, item 9: a separator to daemons built with Go < 1.17, one dropped pair to newer
    # ones; the old code passed every one of these (and query_problem refused only two reads).
    "semicolon in query": [
        "/v1.41/containers/json?all=1;filters=%7B%7D",
        "/v1.41/containers/x/top?x=1;ps_args=auxe",
        "/v1.41/containers/x/logs?stdout=1&x=1;details=1",
        "/v1.41/_ping?;",
        "/_ping?a=?;",
        "/v1.41/images/a;b/json?x=;",
    ],
}

REFUSED_CASES = [(raw, reason) for reason, raws in REFUSED.items() for raw in raws]


@pytest.mark.parametrize(
    ("raw", "reason"), REFUSED_CASES, ids=[f"{reason}:{raw!r}" for raw, reason in REFUSED_CASES]
)
def test_non_canonical_targets_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(ClientProtocolError) as info:
        parse_target(raw)
    assert info.value.status == 400
    assert info.value.message == reason


def test_every_refusal_class_has_several_variants() -> None:
    assert all(len(raws) >= 3 for raws in REFUSED.values())


def _go_unescape_path(s: str) -> bytes:
    """Go's ``unescape(s, encodePath)`` as a cross-check, raising where Go returns an error."""
    out = go_unescape_path(s)
    if out is None:
        raise ValueError("invalid URL escape")
    return out


@pytest.mark.parametrize("raw", [c[0] for c in CANONICAL])
def test_accepted_paths_match_go_unescape(raw: str) -> None:
    raw_path = raw.partition("?")[0]
    assert parse_target(raw).path.encode("utf-8") == _go_unescape_path(raw_path)


@pytest.mark.parametrize("raw", REFUSED["invalid percent-encoding"])
def test_invalid_escapes_are_also_go_errors(raw: str) -> None:
    with pytest.raises(ValueError, match="invalid URL escape"):
        _go_unescape_path(raw.partition("?")[0])


def test_every_single_byte_escape() -> None:
    """Each of the 256 ``%XX`` in a segment: refused for the listed bytes, else Go's byte."""
    refused = {0x2F: "slash", 0x2E: "dot", 0x25: "percent", 0x5C: "backslash", 0x7F: "control"}
    for byte in range(256):
        for hexdigits in {f"{byte:02X}", f"{byte:02x}"}:
            raw = f"/images/a%{hexdigits}b/json"
            if byte < 0x20 or byte in refused or byte >= 0x80:
                with pytest.raises(ClientProtocolError):
                    parse_target(raw)
            else:
                assert parse_target(raw).path == f"/images/a{chr(byte)}b/json"


def test_decoding_happens_once() -> None:
    # '%2541' would become 'A' only if decoded twice; it is refused as an encoded '%' instead
    # of being decoded to a path that still contains an escape.
    with pytest.raises(ClientProtocolError, match="encoded percent"):
        parse_target("/images/%2541/json")
    assert parse_target("/images/%41/json").path == "/images/A/json"
