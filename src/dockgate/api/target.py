"""The request-target, read exactly once and exactly as the Docker daemon reads it.

The access policy decides on the path that the daemon will route on, so that path must be the
one the daemon computes, and the request forwarded must be the one that was checked. dockerd
is a Go `net/http` server whose handler is a gorilla/mux router; for a request-target such as
``/v1.41/images/reg.example.com:5000/app:1/json?x=1`` it does this:

1. `net/http` calls ``url.ParseRequestURI(target)``. The target is split at its *first* ``?``
   (``rest, url.RawQuery, _ = strings.Cut(rest, "?")``; a lone trailing ``?`` only sets
   ``ForceQuery``), then the path is decoded once by ``setPath`` ->
   ``unescape(p, encodePath)``: every ``%XX`` becomes the byte 0xXX, whatever it is (``%2F``
   becomes ``/`` in ``Path``; only ``RawPath`` keeps ``%2F``), ``+`` stays ``+`` (only query
   components turn it into a space), and a ``%`` not followed by two hex digits
   (``i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2])``) fails the whole request with a
   plain-text ``400 Bad Request``. A ``//`` at the start is not an authority here: that needs a
   scheme or ``viaRequest == false``.
2. gorilla/mux ``Router.ServeHTTP`` takes ``req.URL.Path`` (not ``RawPath``: moby never calls
   ``UseEncodedPath`` nor ``SkipClean``) and, when ``cleanPath(path) != path``, answers
   ``301 Moved Permanently`` with the cleaned path as ``Location`` instead of routing.
   ``cleanPath`` is ``path.Clean`` with the trailing slash put back, so ``.``, ``..``, ``//``
   anywhere (encoded or not: ``%2e%2e`` and ``%2F`` are decoded first) redirect.
3. Otherwise the routes are matched against that same decoded ``Path``: every API route is
   registered twice, as ``/v{version:[0-9.]+}<route>`` and as ``<route>``, and variables such as
   ``{name:.*}`` are Go regexps whose ``.`` does not match a newline.

`parse_target` refuses (400, `ClientProtocolError`) everything a gateway would otherwise have to
guess about, and for everything else returns exactly the ``Path`` the daemon's router sees:

- **dot segment in path**: a ``.`` or ``..`` segment, trailing ones included (``/x/.``,
  ``/x/..``): the daemon would redirect (step 2), never route it.
- **empty path segment**: ``//`` anywhere (``//x``, ``/x//y``, ``/x//``): the daemon redirects.
- **trailing slash in path**: ``/containers/json/``. Not a redirect (``cleanPath`` keeps a
  trailing slash) and no fixed route matches it, but a route ending in a variable captures it:
  ``GET /v1.41/networks/none/`` reaches the network inspect handler with id ``none/``, and
  ``GET /volumes/`` the volume inspect handler with an empty name. The one Engine route that
  ends in ``/`` is ``GET /networks/``, a legacy alias of ``GET /networks`` that no client uses.
  The bare root ``/`` is canonical, is accepted, and routes nowhere (404).
- **encoded slash in path** (``%2F``/``%2f``): it is a path separator to the daemon's router
  (step 2 decodes it) but a reader of the raw target would see a single segment; and a daemon
  that ever switched to ``UseEncodedPath`` would route it differently.
- **encoded dot in path** (``%2E``/``%2e``, anywhere): how ``%2e%2e`` hides a ``..`` from a
  raw-path check. No client needs it: Go's and Python's encoders never escape ``.``.
- **encoded percent in path** (``%25``): the decoded path would contain ``%``, which a second
  decoder anywhere downstream would decode again. The path is decoded exactly once, here.
- **invalid percent-encoding**: ``%``, ``%4``, ``%zz``, ``%+1``: the daemon answers 400 itself.
- **backslash in path**, raw or as ``%5C``: some path handling treats it as a separator.
- **control character in path**: raw or encoded C0 controls and DEL (``%00``, ``%0a``,
  ``%7f``) and the encoded C1 controls U+0080..U+009F (``%C2%85``). ``%0A`` also changes which
  route matches (``.*`` stops at a newline: ``/containers/x%0Ay/json`` answers "page not found").
- **invalid UTF-8 in path**: ``%C3`` alone, ``%FF``, overlong forms, encoded surrogates. Go keeps
  the raw bytes in ``Path`` (its JSON errors show U+FFFD for them); there is no `str` that is
  exactly those bytes, and no Docker object name contains them.
- **fragment in target** (``#``): never sent by a client (RFC 9112 3.2); note that Go's
  ``ParseRequestURI`` does not strip it, it would be part of ``Path``. The request-line reader
  already refuses it; it is refused here too so that this function is safe on its own.
- **request target is not origin-form**, **invalid character in path/query**: what the
  request-line reader refuses anyway (``*``, absolute-form, space, ``"``, ``{``...).
- **semicolon in query**: a raw ``;`` anywhere in the query. Daemons built with Go before 1.17
  (docker 20.10.0 to 20.10.15) split the query on ``;`` as on ``&`` (``url.ParseQuery``'s old
  ``strings.IndexAny(key, "&;")``), so ``x=1;container=victim`` is two pairs to them and one to
  a Go 1.17+ reader, which drops it (net/url, golang.org/issue/25192). Whichever Go the daemon
  was built with, refusing the character leaves one reading. Clients never send it raw: Go's
  ``url.Values.Encode`` (the docker CLI) and Python's ``urlencode`` (docker-py, requests)
  write ``%3B``, which is accepted (a literal ``;`` inside a value).

Accepted and decoded: any other ``%XX`` (``%3A`` -> ``:``, ``%20`` -> space, ``%40`` -> ``@``
as docker-py sends it in ``name@sha256:...``, ``%3F`` -> a literal ``?`` and ``%23`` -> a
literal ``#`` *inside the path*, even encoded unreserved letters: ``/containers/%6Aso%6E`` is
``/containers/json``, exactly as the daemon routes it), and encoded non-ASCII that is valid UTF-8
(``%C3%A9`` -> ``é``; Docker names cannot contain it, the daemon answers "invalid reference
format", but it is unambiguous). Nothing is normalised beyond Go's decoding (no Unicode
normalisation, no case folding: ``/V1.41/...`` is not a versioned route to the daemon either).

The query string is kept raw and undecoded: it cannot change routing. The daemon parses it
with ``url.ParseQuery`` (``r.Form``), splitting on ``&`` only (``;`` is refused above),
decoding ``+`` as a space and ``%XX`` once, and dropping a pair whose escape is invalid while
``ParseForm`` reports the error (most handlers then answer 400). A ``/../`` inside the query is
data for the handler (e.g. ``archive?path=``), not a path. Rules on query parameters (and on
bodies) must decode it the same Go way, never with a more lenient decoder.

``raw`` is what is forwarded, unchanged: the path is never re-encoded, so what the daemon decodes
is what was decoded here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockgate.http.errors import ClientProtocolError

__all__ = ["RequestTarget", "parse_target"]


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """One request-target, split and decoded as the daemon does."""

    path: str  # the decoded path: what Go's url.ParseRequestURI(raw).Path gives the router
    query: str  # the raw query string after the first '?', undecoded ('' if none)
    raw: str  # the request-target exactly as received (what is forwarded, unchanged)


# Characters the request-line reader accepts in a target (RFC 3986 pchar, '/', '?' and '%'),
# minus '?', which ends the path. Anything else has a specific refusal below.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@\[\]/%]*")
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@\[\]/%?]*")
_HEX = frozenset("0123456789abcdefABCDEF")
# Segments the daemon's router would clean away (and redirect) rather than route.
_DOT_SEGMENTS = frozenset((".", ".."))
# Decoded single bytes that are refused, each with its reason.
_FORBIDDEN_BYTES: dict[int, str] = {
    0x2F: "encoded slash in path",
    0x2E: "encoded dot in path",
    0x25: "encoded percent in path",
    0x5C: "backslash in path",
    0x7F: "control character in path",
}
for _b in range(0x20):
    _FORBIDDEN_BYTES[_b] = "control character in path"
del _b
# C1 controls, refused when they arrive encoded as UTF-8 (raw non-ASCII never gets this far).
_C1_CONTROLS = re.compile("[\x80-\x9f]")


def parse_target(raw: str) -> RequestTarget:
    """Split and decode an origin-form request-target exactly as the Docker daemon does.

    Raises `ClientProtocolError` (400) with a short reason for any target whose path is not
    already canonical (see the module docstring for each class and why).
    """
    if not raw.startswith("/"):
        raise ClientProtocolError("request target is not origin-form")
    # Go: strings.Cut(rest, "?") -- the first '?' ends the path, the rest is the raw query.
    raw_path, _, query = raw.partition("?")
    if _PATH_CHARS.fullmatch(raw_path) is None:
        raise ClientProtocolError(_bad_character(raw_path, "path"))
    if query and _QUERY_CHARS.fullmatch(query) is None:
        raise ClientProtocolError(_bad_character(query, "query"))
    if ";" in query:
        # A separator to daemons built with Go < 1.17, a dropped pair to newer ones: the one
        # place this is decided, for every request under every policy (docstring above).
        raise ClientProtocolError("semicolon in query")
    # '/' and '.' cannot arrive encoded (refused in _decode), so the segments of the decoded
    # path are exactly those of the raw one: check them first, on the raw text.
    _check_segments(raw_path)
    path = _decode(raw_path) if "%" in raw_path else raw_path
    return RequestTarget(path=path, query=query, raw=raw)


def _check_segments(raw_path: str) -> None:
    if raw_path == "/":
        return
    if "//" in raw_path:
        raise ClientProtocolError("empty path segment")
    if "/." in raw_path:
        # Only a segment that is exactly '.' or '..' is a dot segment: '/.a', '/a.', '/...' are
        # names to the router (path.Clean leaves them alone).
        for segment in raw_path.split("/"):
            if segment in _DOT_SEGMENTS:
                raise ClientProtocolError("dot segment in path")
    if raw_path.endswith("/"):
        raise ClientProtocolError("trailing slash in path")


def _decode(raw_path: str) -> str:
    """Go's ``unescape(s, encodePath)``, minus what is refused: each ``%XX`` once, '+' kept."""
    out = bytearray()
    start = 0
    end = len(raw_path)
    while True:
        i = raw_path.find("%", start)
        if i < 0:
            out += raw_path[start:].encode("ascii")
            break
        out += raw_path[start:i].encode("ascii")
        # Go: `i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2])` is an EscapeError. `int(x, 16)`
        # alone would be wrong: it accepts '+1', ' 1' and '1_0'.
        if i + 2 >= end or raw_path[i + 1] not in _HEX or raw_path[i + 2] not in _HEX:
            raise ClientProtocolError("invalid percent-encoding")
        byte = int(raw_path[i + 1 : i + 3], 16)
        reason = _FORBIDDEN_BYTES.get(byte)
        if reason is not None:
            raise ClientProtocolError(reason)
        out.append(byte)
        start = i + 3
    try:
        path = out.decode("utf-8")  # strict: no overlong forms, no surrogates
    except UnicodeDecodeError:
        raise ClientProtocolError("invalid UTF-8 in path") from None
    if _C1_CONTROLS.search(path):
        raise ClientProtocolError("control character in path")
    return path


def _bad_character(text: str, where: str) -> str:
    """Say why `text` (the raw path or the raw query) has a character it must not have."""
    for ch in text:
        if ch == "#":
            return "fragment in target"
        if ch == "\\" and where == "path":
            return "backslash in path"
        if ch < " " or ch == "\x7f":
            return f"control character in {where}"
        if (_QUERY_CHARS if where == "query" else _PATH_CHARS).fullmatch(ch) is None:
            return f"invalid character in {where}"
    return f"invalid character in {where}"  # pragma: no cover - the caller saw one
