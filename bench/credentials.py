"""What the authenticated dockgate variants need: an htpasswd file, and a CA with certificates.

Made once per run under the run's temp dir: a bcrypt htpasswd entry (`bcrypt` is a runtime
dependency of dockgate), and with `trustme` a CA, a server certificate for 127.0.0.1/localhost
and a client certificate signed by the same CA.
"""

from __future__ import annotations

import base64
import pathlib
import secrets
import ssl
from dataclasses import dataclass

BCRYPT_ROUNDS = 10
USER = "bench"
CLIENT_NAME = "bench-client@dockgate.test"
CLIENT_CN = "bench-client"


@dataclass(frozen=True)
class Credentials:
    htpasswd: pathlib.Path
    user: str
    password: str
    ca: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path
    client_key: pathlib.Path

    @property
    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Authorization: Basic {token}"

    def client_context(self, with_cert: bool) -> ssl.SSLContext:
        """A client context that verifies the server; with the client certificate if asked."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def make_htpasswd(directory: pathlib.Path) -> tuple[pathlib.Path, str]:
    """An htpasswd file with one bcrypt entry for USER; (its path, the password)."""
    import bcrypt  # noqa: PLC0415 - dockgate's runtime dependency, present where it runs

    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(f"{USER}:{hashed}\n")
    htpasswd.chmod(0o600)
    return htpasswd, password


def make_credentials(
    directory: pathlib.Path, htpasswd: tuple[pathlib.Path, str] | None = None
) -> Credentials:
    """The certificates, and `htpasswd` (from `make_htpasswd`; made here when not given)."""
    # Imported here: only the authenticated variants need it, and run.py installs trustme
    # (if missing) after importing this module.
    import trustme  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    htpasswd_path, password = htpasswd or make_htpasswd(directory)

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert(CLIENT_NAME, common_name=CLIENT_CN)
    paths = {
        "ca": directory / "ca.pem",
        "server_cert": directory / "server.pem",
        "server_key": directory / "server.key",
        "client_cert": directory / "client.pem",
        "client_key": directory / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    for blob, path in ((server, paths["server_cert"]), (client, paths["client_cert"])):
        with open(path, "wb") as fh:
            for pem in blob.cert_chain_pems:
                fh.write(pem.bytes())
    for path in (paths["server_key"], paths["client_key"]):
        path.chmod(0o600)
    return Credentials(htpasswd=htpasswd_path, user=USER, password=password, **paths)
