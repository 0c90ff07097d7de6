"""Who is calling: Basic credentials (htpasswd) or a bearer token, from the Authorization header.

The header is consumed here and never forwarded to the daemon. Unknown users, wrong passwords
and unknown tokens all get the same answer, so the outside cannot tell them apart.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from dockgate.auth.htpasswd import Htpasswd
from dockgate.auth.tokens import Tokens


@dataclass(frozen=True, slots=True)
class Identity:
    name: str  # the user name, or the token's identity
    method: str  # "basic" or "token"
    detail: str = ""  # the token's name, for the audit trail


class Authenticator:
    def __init__(self, htpasswd: Htpasswd | None = None, tokens: Tokens | None = None) -> None:
        self.htpasswd = htpasswd
        self.tokens = tokens

    @property
    def required(self) -> bool:
        return self.htpasswd is not None or self.tokens is not None

    def authenticate(self, authorization: bytes | None) -> Identity | None:
        if authorization is None:
            return None
        scheme, _, credentials = authorization.strip().partition(b" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == b"basic" and self.htpasswd is not None:
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user, colon, password = decoded.partition(":")
            if not colon:
                return None
            if self.htpasswd.verify(user, password):
                return Identity(user, "basic")
            return None
        if scheme == b"bearer" and self.tokens is not None:
            entry = self.tokens.identify(credentials.decode("latin-1"))
            if entry is not None:
                return Identity(entry.identity, "token", entry.name)
        return None
