"""Bearer tokens: a file of token hashes, each mapped to an identity.

A token is 32 random bytes (`dg_` + URL-safe base64), printed once when created; the file keeps
only its SHA-256, which is enough for a secret with that much entropy (no slow hash needed) and
lets a check cost one hash and one dictionary look-up. File format, one token per line:

    # name  identity  sha256  [created]
    ci-runner  ci  3f1c...e9  2026-12-07T03:40:00Z

The name is for the operator (revocation, audit); the identity is what policies bind to. The
creation time (UTC, RFC 3339 with `Z`) is optional: `dockgate token create` writes it and
`dockgate token list` shows it; files written before it existed have three fields.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from dockgate.files import read_config_text

TOKEN_PREFIX = "dg_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


class TokenFileError(ValueError):
    """A tokens file that cannot be used; `str()` is `FILE:LINE: problem`."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    identity: str
    digest: str  # hex SHA-256 of the token
    created: str | None = None  # "2026-12-07T03:40:00Z", when the file says


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Tokens:
    source: str
    by_digest: dict[str, TokenEntry]

    def identify(self, token: str) -> TokenEntry | None:
        """The entry for a presented token, or None. The look-up is by digest, so its time does
        not depend on how much of a guess matches a real token."""
        return self.by_digest.get(token_digest(token))


def parse_tokens(text: str, source: str) -> Tokens:
    entries: dict[str, TokenEntry] = {}
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) not in (3, 4):
            raise TokenFileError(f"{source}:{number}: expected: NAME IDENTITY SHA256 [CREATED]")
        name, identity, digest = fields[:3]
        created = fields[3] if len(fields) == 4 else None
        if created is not None and not _valid_time(created):
            raise TokenFileError(
                f"{source}:{number}: the fourth field is the creation time, "
                "YYYY-MM-DDTHH:MM:SSZ (UTC)"
            )
        if not _NAME.fullmatch(name) or not _NAME.fullmatch(identity):
            raise TokenFileError(f"{source}:{number}: names use letters, digits and _ . @ -")
        if not _HEX64.fullmatch(digest):
            raise TokenFileError(
                f"{source}:{number}: the third field must be a SHA-256 in lower-case hex "
                "(the file never holds tokens themselves)"
            )
        if name in names:
            raise TokenFileError(f"{source}:{number}: token name {name!r} appears twice")
        if digest in entries:
            raise TokenFileError(f"{source}:{number}: the same token appears twice")
        names.add(name)
        entries[digest] = TokenEntry(name, identity, digest, created)
    return Tokens(source, entries)


def _valid_time(text: str) -> bool:
    if not _CREATED.fullmatch(text):
        return False
    try:
        time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def line_name(line: str) -> str | None:
    """The token name a line of the file defines, read as parse_tokens reads it; None for
    comments and blank lines."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    return stripped.split()[0]


def line_identity(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = stripped.split()
    return fields[1] if len(fields) > 1 else None


def load_tokens(path: str | Path) -> Tokens:
    source = str(path)
    text = read_config_text(path, lambda problem: TokenFileError(f"{source}: {problem}"))
    return parse_tokens(text, source)


def create_token_line(name: str, identity: str, created: float | None = None) -> tuple[str, str]:
    """A new token and the line to append to the tokens file for it (stamped `created`, in
    seconds since the epoch; now by default)."""
    if not _NAME.fullmatch(name) or not _NAME.fullmatch(identity):
        raise TokenFileError("names use letters, digits and _ . @ -")
    token = new_token()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    return token, f"{name} {identity} {token_digest(token)} {stamp}"
