"""Who made a request, and how the gateway knows: the value bindings, logs and the audit share."""

from __future__ import annotations

from dataclasses import dataclass

BASIC = "basic"  # htpasswd user name and password
TOKEN = "token"  # bearer token; the name is the token's identity, the detail the token's name
CERTIFICATE = "certificate"  # verified TLS client certificate; the detail is its subject
ANONYMOUS = "anonymous"  # no credentials, where authentication is configured
NONE = "none"  # no credentials, and no authentication configured at all


@dataclass(frozen=True, slots=True)
class Identity:
    name: str  # user name, token identity, certificate name; "anonymous" or "-"
    method: str  # one of the constants above
    detail: str = ""  # token name, certificate subject

    @property
    def authenticated(self) -> bool:
        return self.method in (BASIC, TOKEN, CERTIFICATE)

    def describe(self) -> str:
        """For messages: `user alice`, `token ci-runner (ci)`, `certificate ops`, `anonymous`."""
        if self.method == BASIC:
            return f"user {self.name}"
        if self.method == TOKEN:
            return f"token {self.detail} ({self.name})"
        if self.method == CERTIFICATE:
            return f"certificate {self.name}"
        return "anonymous callers"


ANONYMOUS_IDENTITY = Identity(ANONYMOUS, ANONYMOUS)
NO_AUTH_IDENTITY = Identity("-", NONE)
