"""Bearer tokens: a file of token hashes, each mapped to an identity.

A token is 32 random bytes (`dg_` + URL-safe base64), printed once when created; the file keeps
only its SHA-256, which is enough for a secret with that much entropy (no slow hash needed) and
lets a check cost one hash and one dictionary look-up. File format, one token per line:

    # name  identity  sha256
    ci-runner  ci  3f1c...e9

The name is for the operator (revocation, audit); the identity is what policies bind to.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from dockgate.files import read_config_text

TOKEN_PREFIX = "dg_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class TokenFileError(ValueError):
    """A tokens file that cannot be used; `str()` is `FILE:LINE: problem`."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    identity: str
    digest: str  # hex SHA-256 of the token


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
        if len(fields) != 3:
            raise TokenFileError(f"{source}:{number}: expected: NAME IDENTITY SHA256")
        name, identity, digest = fields
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
        entries[digest] = TokenEntry(name, identity, digest)
    return Tokens(source, entries)


def load_tokens(path: str | Path) -> Tokens:
    source = str(path)
    text = read_config_text(path, lambda problem: TokenFileError(f"{source}: {problem}"))
    return parse_tokens(text, source)


def create_token_line(name: str, identity: str) -> tuple[str, str]:
    """A new token and the line to append to the tokens file for it."""
    if not _NAME.fullmatch(name) or not _NAME.fullmatch(identity):
        raise TokenFileError("names use letters, digits and _ . @ -")
    token = new_token()
    return token, f"{name} {identity} {token_digest(token)}"
