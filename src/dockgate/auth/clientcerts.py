"""A verified client certificate, kept valid for as long as its connection lasts.

The TLS handshake verifies the client's chain once (OpenSSL, against the `--tls-client-ca` file
loaded then). A keep-alive connection outlives that moment: the CA file can be replaced (a CA
rotated out, a compromised one removed) and the certificate can expire, and a password or token
is checked again after such a change while a certificate was not. So every request on a TLS
connection asks `PeerCertificate.problem()`:

- now past the notAfter of any certificate of the verified chain: expired (OpenSSL checks every
  certificate of the chain at the handshake, so does this);
- the client CA file changed since the last check (a new `TrustSet` generation): the chain's
  trust anchor, the CA certificate the handshake ended at, must still be in the current CA file,
  the same subject AND the same public key (a CA re-issued with its key, e.g. with a later
  notAfter, still anchors what it signed; a new CA under the old name does not), within its own
  validity.

A problem ends the connection after the current exchange (policy/admission.py answers 401 and asks
the proxy to close; a hijacked tunnel runs to its end, having been admitted before).

A resumed TLS session has no verified chain: OpenSSL keeps the leaf in the session, not the
chain it verified (`SSL_get0_verified_chain` is NULL after an abbreviated handshake), so the
leaf alone would leave an expired intermediate or root CA unchecked, and an intermediate's
session without an anchor (issue 12, attack review). relay/tls.py therefore turns TLS 1.3 tickets
and TLS 1.2 tickets off when client certificates are required, and the one resumption left, TLS 1.2
by session ID from OpenSSL's per-context cache (CPython sets a session ID context on every
context and offers no way to turn that cache off), is judged by the full handshake's
`PeerCertificate`, remembered here by session ID (`ResumableSessions`).

Certificates are parsed with `cryptography` (the chain once per connection, the CA file once per
reload); the check on the hot path is a clock read and two comparisons.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dockgate.caching import Recent

# A CA by what makes it the same CA for the certificates it signed: subject name and public key
# (both DER).
AnchorKey = tuple[bytes, bytes]


def _key_of(cert: x509.Certificate) -> AnchorKey:
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return cert.subject.public_bytes(), spki


def _not_after(cert: x509.Certificate) -> float:
    return cert.not_valid_after_utc.timestamp()


@dataclass(frozen=True, slots=True)
class TrustSet:
    """The client CA certificates in force, as the TLS context that uses them loaded them."""

    generation: int  # bumped by every reload of the TLS files that took
    anchors: dict[AnchorKey, float]  # CA -> the latest notAfter among its certificates
    certificates: tuple[x509.Certificate, ...]

    @classmethod
    def from_der(cls, ders: list[bytes], generation: int) -> TrustSet:
        """From `SSLContext.get_ca_certs(binary_form=True)`: exactly what OpenSSL loaded. A
        certificate `cryptography` cannot parse anchors nothing here (a connection it verified
        ends at the next reload: the strict side)."""
        anchors: dict[AnchorKey, float] = {}
        parsed: list[x509.Certificate] = []
        for der in ders:
            try:
                cert = x509.load_der_x509_certificate(der)
                key = _key_of(cert)
            except ValueError:
                continue
            parsed.append(cert)
            anchors[key] = max(anchors.get(key, float("-inf")), _not_after(cert))
        return cls(generation, anchors, tuple(parsed))

    def anchor_for(self, chain: list[x509.Certificate]) -> AnchorKey | None:
        """The CA of this set that `chain` (leaf first, as verified) ends at: its last
        certificate when that is in the set, else the set's certificate that signed it (when
        only the leaf is known)."""
        if not chain:
            return None
        top = chain[-1]
        key = _key_of(top)
        if key in self.anchors:
            return key
        for ca in self.certificates:
            if ca.subject != top.issuer:
                continue
            try:
                top.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return _key_of(ca)
        return None


EMPTY_TRUST = TrustSet(0, {}, ())


class PeerCertificate:
    """One connection's verified client certificate: when it stops being valid, and the CA it
    must still be anchored at."""

    __slots__ = ("_anchor", "_chain", "_checked", "_checked_at_handshake", "_handshake", "expires")

    def __init__(self, chain_der: list[bytes], trust: TrustSet) -> None:
        """`chain_der`: the verified chain, leaf first (or the leaf alone); `trust`: the CA set
        the handshake verified it against."""
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
        if not chain:
            raise ValueError("no certificate")
        self.expires = min(_not_after(c) for c in chain)
        # The anchor is looked up at the first reload, if any: most connections never see one,
        # and the lookup (a subject and a key encoded) is most of the cost (~40 of ~50 us).
        self._chain: list[x509.Certificate] | None = chain
        self._handshake: TrustSet | None = trust
        self._anchor: AnchorKey | None = None
        self._checked = self._checked_at_handshake = trust.generation

    def settle(self, interned: dict[AnchorKey, AnchorKey]) -> None:
        """Look the anchor up now (and let the parsed chain go), keeping one copy of each
        anchor's key in `interned` (a context's sessions share a few CAs)."""
        anchor = self._anchor_key()
        if anchor is not None:
            self._anchor = interned.setdefault(anchor, anchor)

    def resumed(self) -> PeerCertificate:
        """The same verified certificate for another connection that resumed this one's TLS
        session (the same chain, verified against the same context's CA set)."""
        other = PeerCertificate.__new__(PeerCertificate)
        other.expires = self.expires
        other._anchor = self._anchor_key()
        other._chain = other._handshake = None
        other._checked = self._checked_at_handshake
        return other

    def _anchor_key(self) -> AnchorKey | None:
        if self._handshake is not None and self._chain is not None:
            self._anchor = self._handshake.anchor_for(self._chain)
            self._handshake = self._chain = None
        return self._anchor

    def problem(self, trust: TrustSet, now: float) -> str | None:
        """Why the certificate no longer authenticates its connection (`now`: Unix time), or
        None while it does."""
        if now >= self.expires:
            when = datetime.datetime.fromtimestamp(self.expires, datetime.UTC)
            return f"the client certificate expired at {when:%Y-%m-%dT%H:%M:%SZ}"
        if trust.generation != self._checked:
            anchor = self._anchor_key()
            until = trust.anchors.get(anchor) if anchor is not None else None
            if until is None or now >= until:
                return "the client certificate's CA is no longer in --tls-client-ca"
            self._checked = trust.generation
        return None


# OpenSSL's default session cache size (SSL_SESSION_CACHE_MAX_SIZE_DEFAULT, ssl/ssl_local.h): a
# session it can still resume is remembered here too, unless a resumption was refused since.
MAX_REMEMBERED_SESSIONS = 1024 * 20


class ResumableSessions:
    """The full handshakes' verified certificates of one TLS context, by TLS 1.2 session ID.

    One per context: OpenSSL's session cache belongs to its SSL_CTX, so a reload of the TLS
    files (a new context) starts with an empty cache and an empty memory. A resumed session
    whose full handshake is not remembered (evicted first here, or never seen) is refused: the
    client's next connection makes a full handshake, which is checked like any other.
    """

    __slots__ = ("_anchors", "_sessions")

    def __init__(self, limit: int = MAX_REMEMBERED_SESSIONS) -> None:
        # session ID -> (the leaf's SHA-256, its full handshake's certificate)
        self._sessions: Recent[bytes, tuple[bytes, PeerCertificate]] = Recent(limit)
        # One copy of each anchor's key (bounded by the CA file: anchors are its CAs).
        self._anchors: dict[AnchorKey, AnchorKey] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def remember(self, session_id: bytes, leaf_der: bytes, peer: PeerCertificate) -> None:
        """After a full handshake whose session can be resumed by ID."""
        if not session_id:
            return
        peer.settle(self._anchors)  # the parsed chain is not kept as long as the session
        self._sessions.put(session_id, (hashlib.sha256(leaf_der).digest(), peer))

    def resume(self, session_id: bytes, leaf_der: bytes) -> PeerCertificate | None:
        """The certificate a resumed session stands for, None when its full handshake is not
        known here (or named another leaf: never expected, as OpenSSL found the session by
        the same ID)."""
        # Found, it is now the most recently used, as OpenSSL's copy is once resumed.
        found = self._sessions.get(session_id) if session_id else None
        if found is None or found[0] != hashlib.sha256(leaf_der).digest():
            return None
        return found[1].resumed()
