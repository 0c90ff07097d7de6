"""A small PKI (CAs, leaves with chosen lifetimes and names) and a keep-alive TLS client, for
the tests of client certificates (tests/auth/test_tls_revalidation.py, and the attack tests
that need a certificate expiring during its connection)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import socket
import ssl
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.gateway import Gateway
from support.rawhttp import parse_head

READ_TIMEOUT_SECONDS = 10.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(*cns: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dockgate tests")]
        + [x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]
    )


def make_ca(
    label: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    parent: Issuer | None = None,
    days: int = 30,
) -> Issuer:
    """A CA (self-signed, or under `parent`); `key` again re-issues an existing CA."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = _name(label)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(parent.cert.subject if parent else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Issuer(builder.sign(parent.key if parent else key, hashes.SHA256()), key)


def issue(
    ca: Issuer,
    *cns: str,
    sans: list[x509.GeneralName] | None = None,
    lifetime: datetime.timedelta = datetime.timedelta(days=1),
) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(*cns))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issuer(builder.sign(ca.key, hashes.SHA256()), key)


def write_pair(directory: pathlib.Path, name: str, leaf: Issuer, *chain: Issuer) -> pathlib.Path:
    """cert (leaf first, then `chain`) and key files; the certificate file's path."""
    cert = directory / f"{name}-cert.pem"
    cert.write_bytes(leaf.pem() + b"".join(c.pem() for c in chain))
    key = leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / f"{name}-key.pem").write_bytes(key)
    return cert


def replace(path: pathlib.Path, data: bytes) -> None:
    """As a Docker secret update or `cp new ca.pem` through a temporary file does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class Pki:
    root: pathlib.Path
    server_ca: Issuer
    server_cert: pathlib.Path
    server_key: pathlib.Path
    ca1: Issuer
    client_ca: pathlib.Path  # the --tls-client-ca file, ca1 at first


def make_pki(root: pathlib.Path) -> Pki:
    server_ca = make_ca("server CA")
    server_cert = write_pair(
        root,
        "server",
        issue(server_ca, "gateway", sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
    )
    ca1 = make_ca("client CA 1")
    client_ca = root / "client-ca.pem"
    client_ca.write_bytes(ca1.pem())
    return Pki(root, server_ca, server_cert, root / "server-key.pem", ca1, client_ca)


# ----- a keep-alive client ----------------------------------------------------------------------


class Client:
    """One TLS connection, kept open across requests."""

    def __init__(self, gw: Gateway, pki: Pki, leaf: Issuer, *chain: Issuer) -> None:
        name = uuid.uuid4().hex[:8]
        cert = write_pair(pki.root, name, leaf, *chain)
        context = ssl.create_default_context(cadata=pki.server_ca.pem().decode())
        context.load_cert_chain(cert, pki.root / f"{name}-key.pem")
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=READ_TIMEOUT_SECONDS)
        try:
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            data = b""
        self.buf += data
        return bool(data)

    def request(
        self, method: str, path: str, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: gateway\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"connection closed before an answer: {self.buf!r}"
        raw_head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status, headers = parse_head(raw_head)
        assert "chunked" not in headers.get("transfer-encoding", ""), headers
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            assert self._fill(), "connection closed mid-body"
        answer, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, answer

    def closed(self) -> bool:
        """True once the gateway ends the connection (within the read timeout)."""
        try:
            return not self._fill()
        except TimeoutError:
            return False
