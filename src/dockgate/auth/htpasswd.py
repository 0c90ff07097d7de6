"""htpasswd files: parsed strictly, checked in constant time, successful checks remembered.

Formats: bcrypt (`htpasswd -B`: `$2y$`, `$2b$`, `$2a$`) and argon2 (`$argon2id$`, `$argon2i$`)
are the supported ones; the legacy Apache forms, MD5-crypt (`$apr1$`) and SHA-1 (`{SHA}`), are
accepted with a warning at load time; plaintext and DES crypt are refused, never guessed at.

Password hashes are slow by design (bcrypt cost 10 is tens of milliseconds), which would make
every request slow and hand attackers a cheap way to burn CPU. A successful check is therefore
remembered under an HMAC of user and password with a per-process random key: a changed
password or a reloaded file never matches an old entry, and the cache holds no password.

The two halves are separate so that the slow one can leave the event loop: `remembered` is the
look-up (microseconds, on the loop), `check` the hash (run in a worker thread by
auth/checks.py: it only reads this object), and `remember` records a success (on the loop).

An unknown user is checked against a dummy hash of the algorithm and cost most used in the
file, made when the file is loaded: "no such user" then costs what "wrong password" costs, and
the two cannot be told apart by timing (a fixed bcrypt cost 10 made an unknown user 25 times
slower than a user of `htpasswd -B`, which writes cost 5).

bcrypt reads at most 72 bytes of a password: Apache's crypt_blowfish (apr-util) and Go's
golang.org/x/crypto/bcrypt compare only those, so a longer password is checked by its first 72
bytes, as the servers that wrote and read htpasswd files always did (the `bcrypt` package, 5.0
on, raises instead of truncating, which gave a traceback rather than a 401).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import argon2
import bcrypt

from dockgate.files import read_config_text

# bcrypt's key schedule takes 72 bytes (18 32-bit words); crypt_blowfish ignores the rest.
BCRYPT_MAX_PASSWORD = 72
# The dummy's cost for a file without users (bcrypt.gensalt's default).
DEFAULT_BCRYPT_COST = 10
_USER = re.compile(r"[^:\s]+")
SUCCESS_CACHE_ENTRIES = 4096


class HtpasswdError(ValueError):
    """A file that cannot be used; `str()` is `FILE:LINE: problem`."""


@dataclass(frozen=True, slots=True)
class Credential:
    user: str
    scheme: str  # "bcrypt", "argon2", "apr1", "sha1"
    hash: str


@dataclass(slots=True)
class Htpasswd:
    source: str
    credentials: dict[str, Credential]
    warnings: list[str] = field(default_factory=list)
    # Checked for unknown users: the file's most used algorithm and cost, with a random salt.
    dummy: Credential = field(default_factory=lambda: dummy_credential([]))
    _key: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    _successes: set[bytes] = field(default_factory=set, repr=False)

    def verify(self, user: str, password: str) -> bool:
        """Whether `password` is `user`'s, all on the calling thread (tests, tools); the gateway
        uses `remembered`, then `check` off the event loop, then `remember`."""
        if self.remembered(user, password):
            return True
        ok = self.check(user, password)
        if ok:
            self.remember(user, password)
        return ok

    def remembered(self, user: str, password: str) -> bool:
        """Whether this password already succeeded for this user (no hash computed; the same
        work for known and unknown users)."""
        token = self._token(user, password)
        return token in self._successes and user in self.credentials

    def check(self, user: str, password: str) -> bool:
        """The hash check: slow by design, safe in a worker thread (it changes nothing).
        Unknown users cost the same as wrong passwords (the dummy); never raises."""
        credential = self.credentials.get(user)
        if credential is None:
            _check(self.dummy, password)
            return False
        return _check(credential, password)

    def remember(self, user: str, password: str) -> None:
        """Record a success, so that the next request with these credentials skips the hash."""
        if len(self._successes) >= SUCCESS_CACHE_ENTRIES:
            self._successes.clear()
        self._successes.add(self._token(user, password))

    def _token(self, user: str, password: str) -> bytes:
        message = user.encode() + b"\x00" + password.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()


def _check(credential: Credential, password: str) -> bool:
    secret = password.encode()
    if credential.scheme == "bcrypt":
        # htpasswd writes $2y$, which is $2b$ for every purpose here.
        stored = credential.hash.replace("$2y$", "$2b$", 1).encode()
        try:
            return bcrypt.checkpw(secret[:BCRYPT_MAX_PASSWORD], stored)
        except ValueError:  # not expected after the truncation and parse_htpasswd's checks
            return False
    if credential.scheme == "argon2":
        try:
            return argon2.PasswordHasher().verify(credential.hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False
    if credential.scheme == "sha1":
        digest = base64.b64encode(hashlib.sha1(secret).digest()).decode()
        return hmac.compare_digest(digest, credential.hash[len("{SHA}") :])
    if credential.scheme == "apr1":
        salt = credential.hash.split("$")[2]
        return hmac.compare_digest(apr1_crypt(secret, salt.encode()), credential.hash)
    return False


def _scheme(hashed: str) -> str | None:
    if re.fullmatch(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", hashed):
        return "bcrypt"
    if hashed.startswith(("$argon2id$", "$argon2i$")):
        return "argon2"
    if re.fullmatch(r"\$apr1\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}", hashed):
        return "apr1"
    if re.fullmatch(r"\{SHA\}[A-Za-z0-9+/]{27}=", hashed):
        return "sha1"
    return None


def parse_htpasswd(text: str, source: str) -> Htpasswd:
    credentials: dict[str, Credential] = {}
    warnings: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        user, colon, hashed = stripped.partition(":")
        if not colon or not _USER.fullmatch(user) or not hashed:
            raise HtpasswdError(f"{source}:{number}: expected user:hash")
        if user in credentials:
            raise HtpasswdError(f"{source}:{number}: user {user!r} appears twice")
        scheme = _scheme(hashed)
        if scheme is None:
            raise HtpasswdError(
                f"{source}:{number}: user {user!r}: unsupported or plaintext password; "
                "write it with `htpasswd -B` (bcrypt) or argon2"
            )
        if scheme in ("apr1", "sha1"):
            warnings.append(
                f"{source}:{number}: user {user!r} uses the legacy {scheme} hash; "
                "re-create it with `htpasswd -B`"
            )
        credentials[user] = Credential(user, scheme, hashed)
    return Htpasswd(source, credentials, warnings, dummy_credential(list(credentials.values())))


def _cost(credential: Credential) -> str:
    """What a check of this hash costs: its algorithm and parameters, without salt or digest."""
    if credential.scheme == "bcrypt":
        return credential.hash[:7]  # "$2y$05$": variant and cost
    if credential.scheme == "argon2":
        return credential.hash.rsplit("$", 2)[0]  # "$argon2id$v=19$m=65536,t=3,p=4"
    return credential.scheme  # apr1 and SHA-1 have no cost parameter


def dummy_credential(credentials: list[Credential]) -> Credential:
    """A hash no password matches, with the algorithm and cost most used in `credentials`.

    Made without hashing anything (a file reload runs on the event loop): checking a password
    computes the whole hash from the salt and parameters and only then compares the digest, so
    a random salt and a digest of the right shape cost exactly what a real entry costs.
    """
    counts = Counter(_cost(c) for c in credentials)
    if not counts:
        salt = bcrypt.gensalt(rounds=DEFAULT_BCRYPT_COST).decode()
        return Credential("", "bcrypt", salt + "." * 31)
    cost, _ = counts.most_common(1)[0]
    example = next(c for c in credentials if _cost(c) == cost)
    if example.scheme == "bcrypt":
        salt = bcrypt.gensalt(rounds=int(cost[4:6])).decode()[7:]
        return Credential("", "bcrypt", cost + salt + "." * 31)
    if example.scheme == "argon2":
        params = argon2.extract_parameters(example.hash)
        salt = base64.b64encode(os.urandom(params.salt_len)).decode().rstrip("=")
        digest = base64.b64encode(bytes(params.hash_len)).decode().rstrip("=")
        return Credential("", "argon2", f"{cost}${salt}${digest}")
    if example.scheme == "apr1":
        return Credential("", "apr1", "$apr1$" + "." * 8 + "$" + "." * 22)
    return Credential("", "sha1", "{SHA}" + "A" * 27 + "=")


def load_htpasswd(path: str | Path) -> Htpasswd:
    source = str(path)
    text = read_config_text(path, lambda problem: HtpasswdError(f"{source}: {problem}"))
    return parse_htpasswd(text, source)


# ----- Apache MD5-crypt ($apr1$): legacy files only; MD5 and SHA-1 never make new hashes

_APR1_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def apr1_crypt(password: bytes, salt: bytes) -> str:
    """Apache's `$apr1$` hash (Poul-Henning Kamp's MD5-crypt with the `$apr1$` magic)."""
    magic = b"$apr1$"
    salt = salt[:8]
    alternate = hashlib.md5(password + salt + password).digest()
    ctx = password + magic + salt
    length = len(password)
    while length > 0:
        ctx += alternate[: min(16, length)]
        length -= 16
    length = len(password)
    while length:
        ctx += b"\x00" if length & 1 else password[:1]
        length >>= 1
    final = hashlib.md5(ctx).digest()
    for i in range(1000):
        round_input = password if i & 1 else final
        if i % 3:
            round_input += salt
        if i % 7:
            round_input += password
        round_input += final if i & 1 else password
        final = hashlib.md5(round_input).digest()

    def encode(a: int, b: int, c: int, n: int) -> str:
        value = (final[a] << 16) | (final[b] << 8) | final[c]
        out = ""
        for _ in range(n):
            out += _APR1_ALPHABET[value & 0x3F]
            value >>= 6
        return out

    encoded = (
        encode(0, 6, 12, 4)
        + encode(1, 7, 13, 4)
        + encode(2, 8, 14, 4)
        + encode(3, 9, 15, 4)
        + encode(4, 10, 5, 4)
        + "".join(_APR1_ALPHABET[(final[11] >> (6 * k)) & 0x3F] for k in range(2))
    )
    return f"$apr1${salt.decode()}${encoded}"
