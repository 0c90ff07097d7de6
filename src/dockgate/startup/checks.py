"""Checks made once at start, so a mistake shows up as one clear line rather than on the
first request: the upstream socket, certificate files, an upstream that is the gateway itself,
whether the daemon answers `_ping`.

Each check either raises StartupError (the gateway cannot work as configured) or returns
warnings (it may work later: the daemon can start after the gateway).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import stat

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from dockgate.addresses import Address
from dockgate.config import ServeConfig
from dockgate.http.hops import HOP_HEADER, TOKEN
from dockgate.startup.accounts import group_name

PING_TIMEOUT_SECONDS = 2.0


class StartupCheckError(Exception):
    """The gateway cannot work as configured; the message names the setting and the fix."""


# ----- the upstream socket ----------------------------------------------------------------------


def check_upstream_socket(upstream: Address) -> list[str]:
    """A unix upstream must be a socket this process may write to (connect(2) on a unix
    socket needs write permission on it). A missing one is only a warning: a stopped daemon
    removes its socket, and it may start after the gateway."""
    if upstream.scheme != "unix":
        return []
    path = upstream.path
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return [
            f"upstream {path} does not exist: is the Docker daemon running, and is this its "
            "socket? Requests get 502 until it is there (set --upstream or DOCKER_HOST to the "
            "daemon's socket; in a container, mount it: -v /var/run/docker.sock:"
            "/var/run/docker.sock)"
        ]
    except OSError as exc:
        raise StartupCheckError(
            f"upstream {path}: {exc.strerror}: the directory is not readable by this user"
        ) from None
    if not stat.S_ISSOCK(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a socket"
        hint = (
            " (a bind mount of a socket that did not exist when the container started "
            "creates an empty directory)"
            if stat.S_ISDIR(info.st_mode)
            else ""
        )
        raise StartupCheckError(
            f"upstream {path} is {kind}{hint}: set --upstream (or DOCKER_HOST) to the Docker "
            "daemon's socket, e.g. unix:///var/run/docker.sock"
        )
    if not os.access(path, os.W_OK):
        raise StartupCheckError(
            f"upstream {path}: permission denied for this user (uid {os.getuid()}): "
            + _socket_permission_fix(info)
        )
    return []


def _socket_permission_fix(info: os.stat_result) -> str:
    group = group_name(info.st_gid)
    return (
        f"the socket is mode {stat.S_IMODE(info.st_mode):o}, group {group}; run dockgate as a "
        f"member of group {group} (usermod -aG {group} USER, or in a container "
        f"--group-add {info.st_gid}), or as the socket's owner"
    )


# ----- certificate files ------------------------------------------------------------------------


def check_certificate_files(config: ServeConfig) -> list[str]:
    """Each PEM file read and parsed on its own, so the error names the file and what is
    wrong with it (OpenSSL's own error names neither: `[SSL] PEM lib (_ssl.c:3905)`).
    Returns warnings (an expired certificate)."""
    warnings: list[str] = []
    if config.tls_cert is not None:
        chain = _certificates("--tls-cert", config.tls_cert)
        warnings += _expiry("--tls-cert", config.tls_cert, chain[0])
        if config.tls_key is not None:
            key = _private_key("--tls-key", config.tls_key)
            if key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) != chain[0].public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ):
                raise StartupCheckError(
                    f"--tls-key {config.tls_key} does not match the certificate in --tls-cert "
                    f"{config.tls_cert} (the first certificate of the file must be the server's)"
                )
    if config.tls_client_ca is not None:
        for cert in _certificates("--tls-client-ca", config.tls_client_ca):
            warnings += _expiry("--tls-client-ca", config.tls_client_ca, cert)
    return warnings


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise StartupCheckError(f"{option} {path}: {exc.strerror or exc}") from None


def _read_pem(option: str, path: str, marker: bytes, what: str, line: str) -> bytes:
    """The file's bytes, which hold `marker`; if not, it has no PEM `what` (no `line` line),
    and the error says what PEM it holds instead."""
    data = _read(option, path)
    if marker not in data:
        found = _pem_kinds(data)
        raise StartupCheckError(
            f"{option} {path}: no PEM {what} in the file (no '{line}' "
            f"line{'; it holds ' + found if found else ''})"
        )
    return data


def _certificates(option: str, path: str) -> list[x509.Certificate]:
    data = _read_pem(
        option, path, b"-----BEGIN CERTIFICATE-----", "certificate", "-----BEGIN CERTIFICATE-----"
    )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise StartupCheckError(f"{option} {path}: a certificate does not parse: {exc}") from None


def _private_key(option: str, path: str) -> PrivateKeyTypes:
    data = _read_pem(
        option, path, b"PRIVATE KEY-----", "private key", "-----BEGIN ... PRIVATE KEY-----"
    )
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise StartupCheckError(
            f"{option} {path}: the key is encrypted; give it without a passphrase "
            "(openssl pkey -in KEY -out KEY.plain)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise StartupCheckError(f"{option} {path}: the private key does not parse: {exc}") from None


def _pem_kinds(data: bytes) -> str:
    kinds = sorted(
        {
            line.strip().removeprefix(b"-----BEGIN ").removesuffix(b"-----")
            for line in data.splitlines()
            if line.startswith(b"-----BEGIN ")
        }
    )
    return ", ".join(kind.decode(errors="replace") for kind in kinds)


def _expiry(option: str, path: str, cert: x509.Certificate) -> list[str]:
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        return [
            f"{option} {path}: the certificate {cert.subject.rfc4514_string()} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d}"
        ]
    return []


# ----- an upstream that is the gateway itself ---------------------------------------------------


def refuse_own_listener(
    upstream: Address, listeners: list[tuple[Address, socket.socket | None]]
) -> None:
    """The upstream must not be one of the gateway's own listeners (as bound: `:0` ports are
    known by then; before binding, with no sockets, only unix paths are compared): every
    request would come back to it, round and round."""
    for address, sock in listeners:
        if _same_endpoint(upstream, address, sock):
            raise StartupCheckError(own_listener_message(upstream, address))


def own_listener_message(upstream: Address, listener: Address) -> str:
    return (
        f"the upstream {upstream} is this gateway's own listener {listener}: every "
        "request would come back to it (a loop). Set --upstream to the Docker daemon's "
        "socket (unix:///var/run/docker.sock); a DOCKER_HOST that names this gateway is "
        "for its clients, unset it (or give --upstream) for `dockgate serve`"
    )


def configured_own_listener(upstream: Address, listeners: list[Address]) -> Address | None:
    """Without binding (`dockgate doctor`, while the gateway may hold the ports): the listener
    the upstream names, if any. A TCP listener is compared by the addresses its host resolves
    to and its port; a `:0` port is only chosen when bound, so never the same."""
    for address in listeners:
        if address.scheme == "tcp" and address.port != 0 and address.port == upstream.port:
            if upstream.scheme == "tcp" and any(
                _reaches(upstream, ip) for ip in _resolve(address.host, address.port)
            ):
                return address
        elif _same_endpoint(upstream, address, None):
            return address
    return None


def _same_endpoint(upstream: Address, listener: Address, sock: socket.socket | None) -> bool:
    if upstream.scheme != listener.scheme:
        return False
    if upstream.scheme == "unix":
        if os.path.normpath(upstream.path) == os.path.normpath(listener.path):
            return True
        try:
            return os.path.samefile(upstream.path, listener.path)  # a link to it, a bind mount
        except OSError:
            return False
    if sock is None:
        return False
    bound = sock.getsockname()
    bound_ip, bound_port = ipaddress.ip_address(str(bound[0]).split("%")[0]), int(bound[1])
    if upstream.port != bound_port:
        return False
    return _reaches(upstream, bound_ip)


def _reaches(upstream: Address, bound_ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a connection to the upstream's host lands on a listener bound to `bound_ip`
    (the ports already compared)."""
    for ip in _resolve(upstream.host, upstream.port):
        if ip == bound_ip:
            return True
        # A wildcard listener (0.0.0.0, ::) takes every local address of its family.
        if bound_ip.is_unspecified and ip.version == bound_ip.version and _is_local(ip):
            return True
    return False


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _is_local(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip` is an address of this host: binding to it works only if it is."""
    if ip.is_loopback:
        return True
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


# ----- does the daemon answer -------------------------------------------------------------------


def ping_upstream(upstream: Address, timeout: float = PING_TIMEOUT_SECONDS) -> list[str]:
    """`GET /_ping` to the upstream, once; a warning when it does not answer 200 (the daemon
    may start later: the gateway serves anyway and answers 502 meanwhile)."""
    if upstream.scheme == "unix" and not os.path.exists(upstream.path):
        return []  # already said by check_upstream_socket
    request = (
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nUser-Agent: dockgate-startup\r\n"
        b"%b: %b\r\nConnection: close\r\n\r\n" % (HOP_HEADER, TOKEN)
    )
    family = socket.AF_UNIX if upstream.scheme == "unix" else None
    try:
        if family is not None:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(upstream.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((upstream.host, upstream.port), timeout=timeout)
            if upstream.tls is not None:  # the upstream's own TLS (relay/upstreamtls.py), verified
                try:
                    sock = upstream.tls.wrap_socket(sock, server_hostname=upstream.host)
                except BaseException:
                    sock.close()
                    raise
        with sock:
            sock.sendall(request)
            answer = b""
            while b"\r\n" not in answer and len(answer) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        return [_not_answering(upstream, f"no answer to GET /_ping within {timeout:g} s")]
    except OSError as exc:
        return [_not_answering(upstream, exc.strerror or str(exc))]
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ", 2)
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1] == "200":
        return []
    return [_not_answering(upstream, f"GET /_ping answered {status_line!r}")]


def _not_answering(upstream: Address, what: str) -> str:
    return (
        f"the Docker daemon at {upstream} does not answer ({what}); serving anyway, requests "
        "get 502 until it does"
    )
