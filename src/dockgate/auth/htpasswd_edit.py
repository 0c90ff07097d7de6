"""Changing an htpasswd file's users without Apache's tools: `dockgate htpasswd add/remove/list`.

New entries are bcrypt with the `$2y$` prefix, exactly what `htpasswd -B` writes, so the file
stays readable by Apache, nginx, Traefik and Go's x/crypto/bcrypt as well as by dockgate
(auth/htpasswd.py). Lines are found as the loader finds them (the same `splitlines`, the same
stripping, `#` comments and blank lines skipped), and every line but the user's own is kept
byte for byte. The edited text is parsed by the loader before it is written: a file the gateway
would refuse is never written.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass

import bcrypt

from dockgate.auth.authenticator import MAX_USER_NAME_BYTES
from dockgate.auth.htpasswd import (
    BCRYPT_MAX_PASSWORD,
    DEFAULT_BCRYPT_COST,
    Htpasswd,
    HtpasswdError,
    parse_htpasswd,
)

# Apache's htpasswd takes -C 4 to 17 (bcrypt itself stops at 31, which takes hours per check).
MIN_BCRYPT_COST = 4
MAX_BCRYPT_COST = 17
# The cost a new entry gets: the loader's dummy cost for a file without users, bcrypt's own
# default (about 50 ms a check here; `htpasswd -B` writes 5, about 2 ms).
NEW_ENTRY_COST = DEFAULT_BCRYPT_COST


class HtpasswdEditError(ValueError):
    """A user name, password or cost that cannot go into the file; `str()` says why."""


def check_user_name(user: str) -> None:
    """A name the loader reads back and a Basic header can carry, else HtpasswdEditError.

    The loader takes `[^:\\s]+` after stripping the line, and skips lines starting with `#`;
    HTTP Basic ends the name at the first `:`; the authenticator refuses names over
    MAX_USER_NAME_BYTES (Apache's MAX_STRING_LEN) in UTF-8.
    """
    if not user:
        raise HtpasswdEditError("the user name is empty")
    if ":" in user:
        raise HtpasswdEditError(f"user name {user!r}: no ':' (HTTP Basic ends the name there)")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs") for ch in user):
        raise HtpasswdEditError(f"user name {user!r}: no spaces or control characters")
    if user.startswith("#"):
        raise HtpasswdEditError(f"user name {user!r}: may not start with '#' (a comment)")
    if len(user.encode("utf-8")) > MAX_USER_NAME_BYTES:
        raise HtpasswdEditError(
            f"user name of {len(user.encode('utf-8'))} bytes: at most {MAX_USER_NAME_BYTES}"
        )


def check_password(password: str) -> bytes:
    """The password's bytes as a Basic header carries them (UTF-8), else HtpasswdEditError."""
    if not password:
        raise HtpasswdEditError("the password is empty")
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:
        raise HtpasswdEditError("the password is not valid UTF-8") from None
    if b"\x00" in secret:
        # crypt_blowfish (Apache) reads a C string: everything after a NUL would be ignored.
        raise HtpasswdEditError("the password contains a NUL byte")
    if len(secret) > BCRYPT_MAX_PASSWORD:
        raise HtpasswdEditError(
            f"the password has {len(secret)} bytes; bcrypt reads only the first "
            f"{BCRYPT_MAX_PASSWORD}: choose a shorter one"
        )
    return secret


def check_cost(cost: int) -> None:
    if not MIN_BCRYPT_COST <= cost <= MAX_BCRYPT_COST:
        raise HtpasswdEditError(
            f"--cost {cost}: bcrypt cost from {MIN_BCRYPT_COST} to {MAX_BCRYPT_COST}"
        )


def hash_password(password: str, cost: int = NEW_ENTRY_COST) -> str:
    """A `$2y$` bcrypt hash of `password`, as `htpasswd -B -C cost` writes it."""
    check_cost(cost)
    secret = check_password(password)
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost)).decode()
    return hashed.replace("$2b$", "$2y$", 1)  # same algorithm; $2y$ is what Apache writes


def _line_user(line: str) -> str | None:
    """The user a line defines, read as parse_htpasswd reads it; None for comments and blanks."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    return stripped.partition(":")[0]


def _ending(line: str) -> str:
    content = line.rstrip("\r\n")
    return line[len(content) :] or "\n"


@dataclass(frozen=True, slots=True)
class Edited:
    text: str
    changed: bool  # add: an existing user's line was replaced; remove: the user was there


def set_user(text: str | None, user: str, hashed: str, source: str) -> Edited:
    """`text` with `user`'s line replaced by `user:hashed` (where it was), or appended."""
    check_user_name(user)
    lines = (text or "").splitlines(keepends=True)
    out: list[str] = []
    replaced = False
    for line in lines:
        if _line_user(line) != user:
            out.append(line)
        elif not replaced:
            out.append(f"{user}:{hashed}{_ending(line)}")
            replaced = True
        # a second line of the same user (a file the loader refuses) is dropped
    if not replaced:
        if out and not out[-1].endswith(("\n", "\r")):
            out[-1] += "\n"
        out.append(f"{user}:{hashed}\n")
    return Edited(_loadable("".join(out), source), replaced)


def remove_user(text: str | None, user: str, source: str) -> Edited:
    """`text` without `user`'s lines."""
    lines = (text or "").splitlines(keepends=True)
    kept = [line for line in lines if _line_user(line) != user]
    found = len(kept) != len(lines)
    return Edited(_loadable("".join(kept), source) if found else (text or ""), found)


def _loadable(text: str, source: str) -> str:
    """`text` if the gateway's loader takes it, else the loader's reason, with what to do."""
    try:
        parse_htpasswd(text, source)
    except HtpasswdError as exc:
        raise HtpasswdEditError(
            f"{exc} (the gateway would not load the file: fix that line first)"
        ) from None
    return text


def describe_users(htpasswd: Htpasswd) -> list[tuple[str, str]]:
    """(user, algorithm and cost) for each user, in file order; never the hash itself."""
    rows = []
    for credential in htpasswd.credentials.values():
        if credential.scheme == "bcrypt":
            kind = f"bcrypt cost {int(credential.hash[4:6])}"
        elif credential.scheme == "argon2":
            kind = "argon2 " + credential.hash.split("$")[3]
        else:
            kind = f"{credential.scheme} (legacy: re-create it with `dockgate htpasswd add`)"
        rows.append((credential.user, kind))
    return rows


def mixed_costs(htpasswd: Htpasswd) -> str | None:
    """A warning when users' hashes cost different amounts: an unknown user is checked against
    the most used one (htpasswd.py), so timing can tell some users exist."""
    costs = Counter(kind for _, kind in describe_users(htpasswd))
    if len(costs) <= 1:
        return None
    shown = ", ".join(f"{n} x {kind}" for kind, n in costs.most_common())
    return (
        f"{htpasswd.source}: the users' hashes differ ({shown}); a login's time can tell a "
        "user of a rarer kind exists: re-create them with one --cost"
    )
