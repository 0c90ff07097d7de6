"""Who is calling: Basic credentials (htpasswd) or a bearer token, from the Authorization header.

The header is consumed here and never forwarded to the daemon. Unknown users, wrong passwords
and unknown tokens all get the same answer, so the outside cannot tell them apart.

The htpasswd and tokens files are watched: when one changes (a user added, a token revoked),
it is read again within a second, without a restart. A file that no longer loads leaves the
previous contents in force, with one log line per change.

A Basic password that has not succeeded before needs a hash check (slow by design): `identify`
hands it back as a `PasswordCheck`, which policy/admission.py runs off the event loop
(auth/checks.py). Everything else (tokens, remembered passwords, malformed headers) is decided at
once.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from dockgate.auth.htpasswd import Htpasswd, HtpasswdError, load_htpasswd
from dockgate.auth.identity import BASIC, TOKEN, Identity
from dockgate.auth.tokens import TokenFileError, Tokens, load_tokens
from dockgate.watched import WatchedFile

# The longest Basic user name considered, in bytes (UTF-8). Apache's htpasswd refuses longer
# ones (MAX_STRING_LEN 256, support/htpasswd.c); longer names are wrong credentials, refused
# before any bookkeeping: an attacker's 47 KiB name once took 47 KiB of the throttle's table
# for every attempt (issue 12, item 4).
MAX_USER_NAME_BYTES = 256
# The longest Basic password considered, in bytes (UTF-8). A hash check costs more the longer
# the password ($apr1$, htpasswd's default, hashes it 1001 times: ~0.6 ms for 8 bytes, 3.6 ms
# at this limit, 150 ms for 44 KiB), and a few sources within their limits sending long guesses
# kept the check threads busy for seconds (issue 12, attack review). Apache's htpasswd makes
# none over 255 bytes (MAX_STRING_LEN 256, support/passwd_common.c get_password) and bcrypt
# reads 72: longer ones are wrong credentials, refused before any hash and counted against the
# source only, as a malformed header is.
MAX_PASSWORD_BYTES = 1024


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """Basic credentials that only a password hash can decide."""

    htpasswd: Htpasswd
    user: str
    password: str

    def run(self) -> bool:
        """The hash check; runs in a worker thread (it changes nothing)."""
        return self.htpasswd.check(self.user, self.password)

    def remember(self) -> None:
        """On the event loop, after `run` said yes: later requests skip the hash."""
        self.htpasswd.remember(self.user, self.password)

    @property
    def identity(self) -> Identity:
        return Identity(self.user, BASIC)


class Authenticator:
    def __init__(
        self,
        htpasswd: WatchedFile[Htpasswd] | Htpasswd | None = None,
        tokens: WatchedFile[Tokens] | Tokens | None = None,
    ) -> None:
        self._htpasswd = htpasswd
        self._tokens = tokens

    @classmethod
    def from_files(cls, htpasswd: str | None, tokens: str | None) -> Authenticator:
        """Load (and then watch) the files; HtpasswdError / TokenFileError stop the start."""
        return cls(
            WatchedFile(htpasswd, load_htpasswd, (HtpasswdError,)) if htpasswd else None,
            WatchedFile(tokens, load_tokens, (TokenFileError,)) if tokens else None,
        )

    @property
    def htpasswd(self) -> Htpasswd | None:
        source = self._htpasswd
        return source.value if isinstance(source, WatchedFile) else source

    @property
    def tokens(self) -> Tokens | None:
        source = self._tokens
        return source.value if isinstance(source, WatchedFile) else source

    def watched(self) -> list[tuple[str, WatchedFile[Any]]]:
        """The credential files watched for changes, by kind (for the reload metrics)."""
        named = (("htpasswd", self._htpasswd), ("tokens", self._tokens))
        return [(name, source) for name, source in named if isinstance(source, WatchedFile)]

    @property
    def required(self) -> bool:
        return self._htpasswd is not None or self._tokens is not None

    @property
    def generation(self) -> int:
        """Changes whenever a file is reloaded: identities remembered before are stale."""
        total = 0
        for source in (self._htpasswd, self._tokens):
            if isinstance(source, WatchedFile):
                total += source.generation
        return total

    def refresh(self, now: float, *, force: bool = False) -> None:
        for source in (self._htpasswd, self._tokens):
            if isinstance(source, WatchedFile):
                source.refresh(now, force=force)

    def identify(self, authorization: bytes | None) -> Identity | PasswordCheck | None:
        """The caller, None for credentials that are wrong, or the password check that will
        tell (no hash is computed here)."""
        if authorization is None:
            return None
        scheme, credentials = _split(authorization)
        htpasswd = self.htpasswd
        if scheme == b"basic" and htpasswd is not None:
            pair = _basic_pair(credentials)
            if pair is None:
                return None
            user, password = pair
            if htpasswd.remembered(user, password):
                return Identity(user, BASIC)
            return PasswordCheck(htpasswd, user, password)
        tokens = self.tokens
        if scheme == b"bearer" and tokens is not None:
            entry = tokens.identify(credentials.decode("latin-1"))
            if entry is not None:
                return Identity(entry.identity, TOKEN, entry.name)
        return None


def claimed_user(authorization: bytes) -> str | None:
    """The user name a Basic header claims (unverified), for per-user throttling; None for a
    name over MAX_USER_NAME_BYTES (no user could have it: it is never counted) or a password
    over MAX_PASSWORD_BYTES (no user's password: counted against the source only)."""
    scheme, credentials = _split(authorization)
    if scheme != b"basic":
        return None
    pair = _basic_pair(credentials)
    return pair[0] if pair is not None else None


def _split(authorization: bytes) -> tuple[bytes, bytes]:
    scheme, _, credentials = authorization.strip().partition(b" ")
    return scheme.lower(), credentials.strip()


def _basic_pair(credentials: bytes) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    if (
        not colon
        or len(user.encode("utf-8")) > MAX_USER_NAME_BYTES
        or len(password.encode("utf-8")) > MAX_PASSWORD_BYTES
    ):
        return None
    return user, password
