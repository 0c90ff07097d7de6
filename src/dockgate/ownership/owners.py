"""Who owns what a caller creates in ownership mode: an owner is named by how the caller
authenticated, so that two methods that happen to give the same name are two owners.

The owner label's value (`io.dockgate.owner`) is, by default, the method and the name:

- `user:alice`  an htpasswd user (Basic authentication);
- `token:ci`    a bearer token's identity (every token of that identity, so rotating a token
                keeps its objects);
- `cert:alice`  a verified client certificate's name (`--tls-identity`).

A certificate whose CN is `alice` is thus not the htpasswd user `alice`. Anonymous callers (no
credentials, or no authentication configured) own nothing: in ownership mode they may not
create, list or touch objects (relay/steps.py refuses them).

The policy file's `owners:` mapping names one owner for several identities (a person's password
and certificate, or anonymous callers of a trusted socket): every identity listed under an owner
writes and sees the label value `<owner>`. Owner names have no `:`, so a mapped owner can
never be mistaken for an identity's own label; the bare names of labels written before owners
were qualified (`alice`) are mapped owners' names, which is how old objects are kept
(docs/policy.md, "Ownership mode").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from dockgate.auth.identity import BASIC, CERTIFICATE, CONTAINER, PROCESS, TOKEN, Identity

ANONYMOUS_KEY = "anonymous"
# The prefixes an identity is written with, in labels and in `owners:`; `certificate:` is
# accepted in the policy file as the CLI writes it (`--as certificate:NAME`).
# A caller named by its unix-socket peer (docs/policy.md, "The calling container as the
# identity") owns as `container:NAME` or `process:uid:N`.
_PREFIXES = {
    BASIC: "user",
    TOKEN: "token",
    CERTIFICATE: "cert",
    CONTAINER: "container",
    PROCESS: "process",
}
_WRITTEN = {
    "user": "user",
    "token": "token",
    "cert": "cert",
    "certificate": "cert",
    "container": "container",
    "process": "process",
}
OWNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")


def identity_key(identity: Identity) -> str:
    """`user:alice`, `token:ci`, `cert:ops`; `anonymous` for a caller without credentials."""
    prefix = _PREFIXES.get(identity.method)
    return ANONYMOUS_KEY if prefix is None else f"{prefix}:{identity.name}"


def owner_for(identity: Identity, owners: Mapping[str, str]) -> str | None:
    """The owner label value for `identity`: its mapped owner, else its own key; None for an
    anonymous caller nobody mapped (it owns nothing)."""
    key = identity_key(identity)
    mapped = owners.get(key)
    if mapped is not None:
        return mapped
    return None if key == ANONYMOUS_KEY else key


def parse_identity(text: str) -> str | None:
    """An identity as the policy file's `owners:` lists it, in its key form (`certificate:x`
    is `cert:x`); None when it is not one."""
    if text == ANONYMOUS_KEY:
        return text
    prefix, colon, name = text.partition(":")
    written = _WRITTEN.get(prefix)
    if not colon or written is None or not name or name != name.strip():
        return None
    return f"{written}:{name}"
