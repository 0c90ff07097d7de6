"""TLS to the Docker daemon: which files say how, and the client context every connection to a
`tcp://` upstream is made with (the pool, the ownership look-ups, /readyz: they all connect with
the `Address` this module returns, whose `tls` carries the context).

Two ways to ask for it, as the docker CLI reads them (docker/cli cli/flags/options.go,
`dockerTLSVerify = os.Getenv("DOCKER_TLS_VERIFY") != ""`, files `ca.pem`, `cert.pem`, `key.pem`
in `DOCKER_CERT_PATH`, default `~/.docker`):

- `--upstream-tls-ca/--upstream-tls-cert/--upstream-tls-key` (or their DOCKGATE_ variables);
- `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`, only when the upstream comes from `DOCKER_HOST`.

The daemon is always verified (its certificate must chain to the CA and name the upstream's
host): there is no "TLS without verification" (the CLI's `--tls` / `DOCKER_TLS`), and anything
that would leave the link plain or unverified while the operator named certificates is refused
at start, never ignored.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dockgate.addresses import Address, AddressError, parse_address, shown_address
from dockgate.http.errors import describe_error

# The port `tcp://HOST` means without one, as the docker CLI reads DOCKER_HOST (opts/hosts.go:
# DefaultTLSHTTPPort 2376 with TLS, DefaultHTTPPort 2375 without).
PLAIN_PORT = 2375
TLS_PORT = 2376


class UpstreamTLSError(ValueError):
    """TLS to the upstream cannot be set up as asked; the message names the option or variable,
    and the file."""


@dataclass(frozen=True, slots=True)
class UpstreamTLSFiles:
    ca: str
    cert: str | None
    key: str | None
    # How the operator named them, for messages: "--upstream-tls" or "DOCKER_CERT_PATH".
    named_by: str


def _option(files: UpstreamTLSFiles, which: str) -> str:
    if files.named_by == "DOCKER_CERT_PATH":
        return f"DOCKER_TLS_VERIFY (DOCKER_CERT_PATH {which}.pem)"
    return f"--upstream-tls-{which}"


def client_context(files: UpstreamTLSFiles) -> ssl.SSLContext:
    """A client context trusting only `files.ca`, checking the daemon's host name, with the
    client certificate if there is one. UpstreamTLSError names the file that does not load."""
    # create_default_context: CERT_REQUIRED, check_hostname, no SSLv3/TLS 1.0/1.1. With a
    # cafile and no capath/cadata it loads no system roots: only the operator's CA vouches.
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamTLSError(
            f"{_option(files, 'ca')} {files.ca}: {_why(exc, 'not a PEM CA certificate')}"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # as the daemon's own floor (go-connections)
    if files.cert is not None and files.key is not None:
        try:
            context.load_cert_chain(files.cert, files.key)
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamTLSError(
                f"{_option(files, 'cert')} {files.cert} / {_option(files, 'key')} {files.key}: "
                f"{_why(exc, 'not a PEM certificate and its private key')}"
            ) from None
    return context


def _why(exc: BaseException, unreadable: str) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"{unreadable} ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _from_options(ca: str | None, cert: str | None, key: str | None) -> UpstreamTLSFiles | None:
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise UpstreamTLSError("--upstream-tls-cert and --upstream-tls-key go together")
    if ca is None:
        raise UpstreamTLSError(
            "--upstream-tls-cert needs --upstream-tls-ca: the CA that signed the daemon's "
            "certificate (the daemon is always verified)"
        )
    return UpstreamTLSFiles(ca, cert, key, "--upstream-tls")


def _from_environment(env: Mapping[str, str], host: str) -> UpstreamTLSFiles | None:
    """The files DOCKER_TLS_VERIFY and DOCKER_CERT_PATH name for the DOCKER_HOST `host`."""
    verify = env.get("DOCKER_TLS_VERIFY", "") != ""
    cert_path = env.get("DOCKER_CERT_PATH", "")
    if not verify:
        if env.get("DOCKER_TLS", "") != "":
            raise UpstreamTLSError(
                "DOCKER_TLS is set without DOCKER_TLS_VERIFY: dockgate does not speak TLS to a "
                "daemon it does not verify; set DOCKER_TLS_VERIFY=1 (and DOCKER_CERT_PATH)"
            )
        if cert_path and host.startswith(("tcp://", "http://")):
            # The docker CLI would speak plain HTTP here (TLS needs --tls or --tlsverify);
            # certificates named for a TCP daemon and then not used are refused, not ignored.
            raise UpstreamTLSError(
                f"DOCKER_CERT_PATH is set ({cert_path}) but DOCKER_TLS_VERIFY is not: the link "
                f"to {shown_address(host)} would be plain HTTP; set DOCKER_TLS_VERIFY=1 to use the "
                "certificates, or unset DOCKER_CERT_PATH"
            )
        return None
    directory = Path(cert_path) if cert_path else Path.home() / ".docker"
    ca, cert, key = (directory / name for name in ("ca.pem", "cert.pem", "key.pem"))
    if not ca.is_file():
        raise UpstreamTLSError(
            f"DOCKER_TLS_VERIFY is set but {ca} does not exist: put the daemon's CA certificate "
            "there, or point DOCKER_CERT_PATH at the directory that holds ca.pem, cert.pem and "
            "key.pem"
        )
    have_cert, have_key = cert.is_file(), key.is_file()
    if have_cert != have_key:
        missing = key if have_cert else cert
        raise UpstreamTLSError(
            f"DOCKER_TLS_VERIFY is set but {missing} does not exist (cert.pem and key.pem in "
            f"{directory} go together)"
        )
    # Neither: no client certificate, as the CLI goes on without one (a daemon started with
    # --tlsverify then refuses the handshake, and the 502 says so).
    return UpstreamTLSFiles(
        str(ca),
        str(cert) if have_cert else None,
        str(key) if have_key else None,
        "DOCKER_CERT_PATH",
    )


def resolve_upstream(
    upstream: str | None,
    env: Mapping[str, str],
    default: str,
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> tuple[Address, UpstreamTLSFiles | None]:
    """The upstream address, from `upstream` (--upstream), else DOCKER_HOST, else `default`,
    with the TLS context attached when asked for. AddressError or UpstreamTLSError."""
    files = _from_options(ca, cert, key)
    docker_host = env.get("DOCKER_HOST", "")
    if upstream:
        text = upstream
    elif docker_host:
        text = docker_host
        if files is None:  # the options win over the environment, as on the docker CLI
            files = _from_environment(env, docker_host)
    else:
        text = default
    try:
        address = parse_address(text, default_port=TLS_PORT if files is not None else PLAIN_PORT)
    except AddressError as exc:
        if upstream or not docker_host:
            raise
        # Nobody typed it on this command line: say where it came from.
        raise AddressError(f"DOCKER_HOST: {exc}") from None
    if files is None:
        return address, None
    if address.scheme != "tcp":
        named = "--upstream-tls-ca" if files.named_by == "--upstream-tls" else "DOCKER_TLS_VERIFY"
        raise UpstreamTLSError(
            f"{named}: the upstream {address} is a unix socket; TLS is for tcp:// upstreams"
        )
    return dataclasses.replace(address, tls=client_context(files)), files


def describe(files: UpstreamTLSFiles) -> str:
    """For the start-up line: how the link to the daemon is protected."""
    client = (
        f"client certificate {files.cert}" if files.cert is not None else "no client certificate"
    )
    return f"TLS, daemon verified against {files.ca}, {client}"


# OpenSSL's reasons for the two ways a TLS link to the daemon fails in practice, and what the
# operator changes: the daemon's certificate (or our CA), or our client certificate.
_NOT_TRUSTED = frozenset({"CERTIFICATE_VERIFY_FAILED"})
_CLIENT_REFUSED = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
    }
)


def describe_upstream_error(exc: BaseException) -> str:
    """`errors.describe_error`, with what to change when a TLS link to the daemon failed."""
    return tls_failure(exc) or describe_error(exc)


def tls_failure(exc: BaseException) -> str | None:
    """What failed and what to change, when `exc` is a TLS failure the operator can fix."""
    reason = exc.reason if isinstance(exc, ssl.SSLError) else None
    if isinstance(exc, ssl.SSLCertVerificationError) or reason in _NOT_TRUSTED:
        detail = getattr(exc, "verify_message", None) or describe_error(exc)
        return (
            f"TLS: the daemon's certificate is not trusted ({detail}): it must be signed by "
            "the CA given with --upstream-tls-ca (or ca.pem in DOCKER_CERT_PATH) and name the "
            "upstream's host"
        )
    if reason in _CLIENT_REFUSED:
        return (
            f"TLS: the daemon refused our client certificate ({reason}): give one its "
            "--tlscacert signed, with --upstream-tls-cert and --upstream-tls-key (or cert.pem "
            "and key.pem in DOCKER_CERT_PATH)"
        )
    return None
