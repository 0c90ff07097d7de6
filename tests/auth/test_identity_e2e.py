"""Identities end to end: who the caller is, where it comes from, and which policy that gives it.

Everything runs against the private daemon through `dockgate serve`, with the real clients: the
docker CLI (credentials in config.json `HttpHeaders`, client certificates with `--tlsverify`),
the Docker SDK for Python, and raw sockets where a client cannot say what a test needs (a PROXY
protocol header, a malformed request). Each check names the exact status and message, and where
a request could have changed something, the daemon's own state is checked directly.

The policy files are tests/policies/identity-*.yaml.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import pathlib
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import docker
import docker.errors
import docker.tls
import pytest
import requests
import trustme

from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.identity import (
    NO_THROTTLE,
    Served,
    audit_records,
    container_exists,
    ok,
    proxy_v2,
    raw_exchange,
    raw_request,
    request_bytes,
    sdk_client,
    wait_access_log,
    wait_audit,
)
from support.paths import TEST_POLICIES
from support.remote import basic_header, create_token, remote_docker, write_htpasswd

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(180)]


POLICIES = TEST_POLICIES


BINDINGS_POLICY = POLICIES / "identity-bindings.yaml"


ANONYMOUS_POLICY = POLICIES / "identity-anonymous.yaml"


SOURCES_POLICY = POLICIES / "identity-sources.yaml"


ALLOW_ALL_POLICY = POLICIES / "allow-all.yaml"


# The htpasswd and tokens files are checked for changes once a second (auth/authenticator.py).
RELOAD_LIMIT_SECONDS = 3.0


# Distinctive secrets: none of them may ever show up in a log.
RUN = uuid.uuid4().hex[:12]


PASSWORDS = {
    user: f"pw-{user}-{RUN}-sekrit"
    for user in ("alice", "bob", "carol", "dave", "ci", "cert-alice")
}


WRONG_PASSWORD = f"wrong-{RUN}-guess"


BOGUS_TOKEN = f"dg_bogus{RUN}bogus{RUN}"


REGISTRY_SECRET = f"registry-{RUN}-hunter2"


CONFIG_SECRET = f"regconfig-{RUN}-hunter3"


LOGIN_SECRET = f"login-{RUN}-hunter4"


ENV_SECRET = f"env-{RUN}-hunter5"


READ_ONLY_CREATE = "dockgate: ContainerCreate denied by policy containers-read-only (read-only)"


def basic(user: str, password: str | None = None) -> str:
    return basic_header(user, PASSWORDS[user] if password is None else password)


def refused(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """The CLI failed and showed the gateway's message as the daemon's error."""
    assert proc.returncode != 0, proc
    assert f"Error response from daemon: {message}" in proc.stderr, proc.stderr


@dataclass
class Credentials:
    htpasswd: pathlib.Path
    tokens: pathlib.Path
    ci_token: str  # name "ci", identity "runner": bound by its name
    deploy_token: str  # name "deploy", identity "deployer": bound by its identity
    impostor_token: str  # name "impostor", identity "ci": matches no binding


@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    directory = tmp_path_factory.mktemp("identity-creds")
    htpasswd = directory / "htpasswd"
    write_htpasswd(htpasswd, PASSWORDS)
    tokens = directory / "tokens"
    return Credentials(
        htpasswd,
        tokens,
        create_token(tokens, "ci", "runner"),
        create_token(tokens, "deploy", "deployer"),
        create_token(tokens, "impostor", "ci"),
    )


@pytest.fixture(scope="module")
def basic_gw(
    daemon: PrivateDaemon, creds: Credentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Basic users and bearer tokens bound to policies by identity-bindings.yaml."""
    audit = tmp_path_factory.mktemp("basic-audit") / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *("--htpasswd", str(creds.htpasswd), "--tokens", str(creds.tokens)),
        *("--audit-log", str(audit)),
        *NO_THROTTLE,
        policy=BINDINGS_POLICY,
    )
    with running(gw, "the Basic/token gateway"):
        yield Served(gw, audit)


@dataclass
class Pki:
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_ca: pathlib.Path
    clients: dict[str, pathlib.Path]  # name -> DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)


def _cert_dir(
    path: pathlib.Path, trust: trustme.CA, issuer: trustme.CA, cn: str, san: str
) -> pathlib.Path:
    path.mkdir(parents=True)
    leaf = issuer.issue_cert(san, common_name=cn)
    (path / "ca.pem").write_bytes(trust.cert_pem.bytes())
    (path / "cert.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (path / "key.pem").write_bytes(leaf.private_key_pem.bytes())
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("identity-pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server_cert, server_key = root / "server-cert.pem", root / "server-key.pem"
    server_cert.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    server_key.write_bytes(server.private_key_pem.bytes())
    client_ca = root / "client-ca.pem"
    client_ca.write_bytes(ca.cert_pem.bytes())
    # CN, then one SAN DNS name (what --tls-identity dns picks instead).
    names = {
        "cert-alice": "alice.clients.test",  # CN bound to everything
        "cert-bob": "build.clients.test",  # CN read-only; the DNS name is bound to everything
        "cert-ops": "ops.clients.test",  # in group operators
        "cert-nobody": "nobody.clients.test",  # bound to nothing
    }
    clients = {cn: _cert_dir(root / cn, ca, ca, cn, san) for cn, san in names.items()}
    clients["stranger"] = _cert_dir(
        root / "stranger", ca, trustme.CA(), "cert-alice", "alice.clients.test"
    )
    return Pki(server_cert, server_key, client_ca, clients)


def _tls_gateway(daemon: PrivateDaemon, pki: Pki, audit: pathlib.Path, *extra: str) -> Gateway:
    return Gateway(
        daemon.host,
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--tls-client-ca", str(pki.client_ca), "--audit-log", str(audit)),
        *NO_THROTTLE,
        *extra,
        policy=BINDINGS_POLICY,
    )


@pytest.fixture(scope="module")
def tls_gw(
    daemon: PrivateDaemon, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Client certificates named by their CN (the default --tls-identity)."""
    audit = tmp_path_factory.mktemp("tls-audit") / "audit.jsonl"
    with running(_tls_gateway(daemon, pki, audit), "the TLS gateway") as gw:
        yield Served(gw, audit)


@pytest.fixture(scope="module")
def tls_dns_gw(
    daemon: PrivateDaemon, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """Client certificates named by their first SAN DNS name (--tls-identity dns)."""
    audit = tmp_path_factory.mktemp("tls-dns-audit") / "audit.jsonl"
    gw = _tls_gateway(daemon, pki, audit, "--tls-identity", "dns")
    with running(gw, "the --tls-identity dns gateway"):
        yield Served(gw, audit)


def test_same_run_is_allowed_for_alice_and_denied_for_bob(
    *,
    basic_gw: Served,
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """alice is bound to `everything`, bob to `containers-read-only`: the same `docker run`
    runs for alice and is refused (nothing created) for bob; `docker ps` works for both."""
    alice = {"Authorization": basic("alice")}
    bob = {"Authorization": basic("bob")}
    name = cleanup.container(unique("alice-run"))
    proc = ok(
        remote_docker(
            basic_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image,
            "echo", f"alice-{RUN}", headers=alice,
        )
    )  # fmt: skip
    assert proc.stdout.strip() == f"alice-{RUN}"

    name = cleanup.container(unique("bob-run"))
    proc = remote_docker(
        basic_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image, "true",
        headers=bob,
    )  # fmt: skip
    refused(proc, READ_ONLY_CREATE)
    assert not container_exists(daemon, name)

    for headers in (alice, bob):
        assert (
            "CONTAINER ID"
            in ok(remote_docker(basic_gw.url, tmp_path, "ps", headers=headers)).stdout
        )
    wait_access_log(
        basic_gw.gw,
        lambda line: (
            f"name={name} " in line
            and " 403 " in line
            and "decision=deny:containers-read-only:read-only user=bob" in line
        ),
    )


@pytest.mark.parametrize("user", ["carol", "ci", "cert-alice"])
def test_user_without_binding_gets_403(basic_gw: Served, tmp_path: pathlib.Path, user: str) -> None:
    """A valid user no binding names is refused. `ci` and `cert-alice` are bound, but as a token
    name and as a certificate: a Basic user of the same name is not them."""
    proc = remote_docker(basic_gw.url, tmp_path, "ps", headers={"Authorization": basic(user)})
    refused(proc, f"dockgate: no policy is bound to user {user}")
    reply = raw_request(basic_gw.port, "GET", "/_ping", [("Authorization", basic(user))])
    assert reply.status == 403
    assert reply.message == f"dockgate: no policy is bound to user {user}"


@pytest.mark.parametrize(
    ("which", "allowed"),
    [("ci", True), ("deploy", False)],
    ids=["bound-by-token-name", "bound-by-identity"],
)
def test_tokens_get_the_policy_of_their_binding(
    *,
    basic_gw: Served,
    creds: Credentials,
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
    which: str,
    allowed: bool,
) -> None:
    """Token `ci` (identity runner) is bound by `tokens: [ci]` to everything; token `deploy`
    (identity deployer) by `users: [deployer]` to read-only."""
    token = creds.ci_token if which == "ci" else creds.deploy_token
    headers = {"Authorization": f"Bearer {token}"}
    ok(remote_docker(basic_gw.url, tmp_path, "ps", headers=headers))
    name = cleanup.container(unique(f"token-{which}"))
    proc = remote_docker(
        basic_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image,
        "echo", f"token-{RUN}", headers=headers,
    )  # fmt: skip
    if allowed:
        assert ok(proc).stdout.strip() == f"token-{RUN}"
    else:
        refused(proc, READ_ONLY_CREATE)
        assert not container_exists(daemon, name)
    identity = "runner" if which == "ci" else "deployer"
    record = wait_audit(
        basic_gw.audit,
        lambda r: r["operation"] == "ContainerCreate" and r.get("object") == name,
    )
    assert (record["identity"], record["auth"], record["auth_detail"]) == (
        identity,
        "token",
        which,
    )
    assert record["decision"] == ("allow" if allowed else "deny")


def test_token_identity_is_not_its_name(
    basic_gw: Served, creds: Credentials, tmp_path: pathlib.Path
) -> None:
    """Token `impostor` has the identity `ci`; `tokens: [ci]` names the token called ci, so the
    impostor gets no policy."""
    headers = {"Authorization": f"Bearer {creds.impostor_token}"}
    proc = remote_docker(basic_gw.url, tmp_path, "ps", headers=headers)
    refused(proc, "dockgate: no policy is bound to token impostor (ci)")


def test_client_certificates_get_the_policy_of_their_cn(
    *,
    tls_gw: Served,
    pki: Pki,
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    alice, bob = pki.clients["cert-alice"], pki.clients["cert-bob"]
    for cert in (alice, bob):
        assert (
            "CONTAINER ID" in ok(remote_docker(tls_gw.url, tmp_path, "ps", cert_path=cert)).stdout
        )

    name = cleanup.container(unique("cert-alice"))
    proc = remote_docker(
        tls_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image,
        "echo", f"cert-{RUN}", cert_path=alice,
    )  # fmt: skip
    assert ok(proc).stdout.strip() == f"cert-{RUN}"
    record = wait_audit(
        tls_gw.audit, lambda r: r["operation"] == "ContainerCreate" and r.get("object") == name
    )
    assert (record["identity"], record["auth"], record["decision"]) == (
        "cert-alice",
        "certificate",
        "allow",
    )
    assert "CN=cert-alice" in record["auth_detail"]

    name = cleanup.container(unique("cert-bob"))
    proc = remote_docker(
        tls_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image, "true",
        cert_path=bob,
    )  # fmt: skip
    refused(proc, READ_ONLY_CREATE)
    assert not container_exists(daemon, name)


def test_certificate_without_binding_gets_403(
    tls_gw: Served, pki: Pki, tmp_path: pathlib.Path
) -> None:
    proc = remote_docker(tls_gw.url, tmp_path, "ps", cert_path=pki.clients["cert-nobody"])
    refused(proc, "dockgate: no policy is bound to certificate cert-nobody")


def test_tls_identity_dns_names_the_caller_by_its_san(
    *,
    tls_dns_gw: Served,
    pki: Pki,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    """With --tls-identity dns, cert-bob is build.clients.test (bound to everything, where its CN
    is read-only), and cert-alice is alice.clients.test (bound to nothing)."""
    name = cleanup.container(unique("cert-dns"))
    proc = remote_docker(
        tls_dns_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image,
        "echo", f"dns-{RUN}", cert_path=pki.clients["cert-bob"],
    )  # fmt: skip
    assert ok(proc).stdout.strip() == f"dns-{RUN}"
    record = wait_audit(
        tls_dns_gw.audit,
        lambda r: r["operation"] == "ContainerCreate" and r.get("object") == name,
    )
    assert (record["identity"], record["auth"], record["policy"]) == (
        "build.clients.test",
        "certificate",
        "everything",
    )
    proc = remote_docker(tls_dns_gw.url, tmp_path, "ps", cert_path=pki.clients["cert-alice"])
    refused(proc, "dockgate: no policy is bound to certificate alice.clients.test")


def test_certificate_from_another_ca_fails_the_handshake(
    tls_gw: Served, pki: Pki, tmp_path: pathlib.Path
) -> None:
    """Same CN as a bound certificate, wrong issuer: no TLS session, so no request at all."""
    before = len(audit_records(tls_gw.audit))
    proc = remote_docker(tls_gw.url, tmp_path, "ps", cert_path=pki.clients["stranger"], timeout=60)
    assert proc.returncode != 0
    err = proc.stderr.lower()
    assert "tls" in err or "certificate" in err, proc.stderr
    assert "error response from daemon" not in err, proc.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any("TLS handshake" in line and "failed" in line for line in tls_gw.gw.stderr()):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"no failed handshake logged:\n{tls_gw.gw.output()}")
    time.sleep(0.2)
    assert len(audit_records(tls_gw.audit)) == before
    assert tls_gw.gw.alive()


def test_group_binding_covers_a_basic_user(
    basic_gw: Served,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    name = cleanup.container(unique("group-dave"))
    proc = remote_docker(
        basic_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image,
        "echo", f"dave-{RUN}", headers={"Authorization": basic("dave")},
    )  # fmt: skip
    assert ok(proc).stdout.strip() == f"dave-{RUN}"


def test_group_binding_covers_a_certificate(
    *,
    tls_gw: Served,
    pki: Pki,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    name = cleanup.container(unique("group-cert"))
    proc = remote_docker(
        tls_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image,
        "echo", f"ops-{RUN}", cert_path=pki.clients["cert-ops"],
    )  # fmt: skip
    assert ok(proc).stdout.strip() == f"ops-{RUN}"


def test_anonymous_binding_allows_only_probes(
    daemon: PrivateDaemon, creds: Credentials, tmp_path: pathlib.Path
) -> None:
    gw = Gateway(
        daemon.host, "--htpasswd", str(creds.htpasswd), *NO_THROTTLE, policy=ANONYMOUS_POLICY
    )
    with running(gw, "the anonymous gateway"):
        ping = requests.get(gw.http_base + "/_ping", timeout=10)
        assert (ping.status_code, ping.text) == (200, "OK")
        version = requests.get(gw.http_base + "/version", timeout=10)
        assert version.status_code == 200
        assert "ApiVersion" in version.json()
        listing = requests.get(gw.http_base + "/containers/json", timeout=10)
        assert listing.status_code == 403
        assert listing.json()["message"] == (
            'dockgate: no rule of policy "probes" allows ContainerList (allow it with a rule of '
            "operations: [ContainerList] or sections: [containers])"
        )
        # The real client: `docker version` needs only the probes, `docker ps` does not.
        proc = ok(remote_docker(gw.url, tmp_path, "version", "--format", "{{.Server.APIVersion}}"))
        assert proc.stdout.strip() == version.json()["ApiVersion"]
        refused(
            remote_docker(gw.url, tmp_path, "ps"),
            'dockgate: no rule of policy "probes" allows ContainerList',
        )
        # Wrong credentials are not anonymous: they stay a 401.
        bad = requests.get(
            gw.http_base + "/_ping",
            headers={"Authorization": basic("alice", WRONG_PASSWORD)},
            timeout=10,
        )
        assert bad.status_code == 401
        assert bad.json()["message"] == "dockgate: invalid credentials"
        # ... and right ones get alice's policy.
        alice = requests.get(
            gw.http_base + "/containers/json",
            headers={"Authorization": basic("alice")},
            timeout=10,
        )
        assert alice.status_code == 200 and isinstance(alice.json(), list)


def test_without_anonymous_binding_callers_are_asked_for_credentials(
    basic_gw: Served, tmp_path: pathlib.Path
) -> None:
    ping = requests.get(basic_gw.http + "/_ping", timeout=10)
    assert ping.status_code == 401
    assert ping.headers["WWW-Authenticate"].startswith('Basic realm="dockgate"')
    assert ping.json()["message"] == "dockgate: authentication required"
    proc = remote_docker(basic_gw.url, tmp_path, "ps")
    assert proc.returncode != 0
    assert "dockgate: authentication required" in proc.stderr


def _ping(gw: Gateway, authorization: str) -> requests.Response:
    """One request on a new connection (a connection remembers its last good credentials)."""
    return requests.get(
        gw.http_base + "/_ping", headers={"Authorization": authorization}, timeout=10
    )


def test_failed_logins_throttle_the_source(
    daemon: PrivateDaemon, creds: Credentials, tmp_path: pathlib.Path
) -> None:
    """Five failures from one address in 3 s: the sixth attempt gets 429 and Retry-After
    without a check, even with the right password; after the window, the right one works."""
    audit = tmp_path / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *("--htpasswd", str(creds.htpasswd), "--auth-failures", "5"),
        *("--auth-failure-window", "3", "--audit-log", str(audit)),
        policy=BINDINGS_POLICY,
    )
    with running(gw, "the throttling gateway"):
        assert _ping(gw, basic("alice")).status_code == 200
        for _ in range(5):
            reply = _ping(gw, basic("alice", WRONG_PASSWORD))
            assert reply.status_code == 401
            assert reply.json()["message"] == "dockgate: invalid credentials"
        throttled_at = time.monotonic()
        reply = _ping(gw, basic("alice"))
        assert reply.status_code == 429
        assert reply.json()["message"] == "dockgate: too many failed attempts; try again later"
        retry_after = int(reply.headers["Retry-After"])
        assert 1 <= retry_after <= 3
        assert "WWW-Authenticate" not in reply.headers
        record = wait_audit(audit, lambda r: r["status"] == 429)
        assert (record["identity"], record["decision"], record["reason"]) == (
            "anonymous",
            "deny",
            "throttled",
        )
        # Other users from the same address too, and the CLI shows why.
        assert _ping(gw, basic("bob")).status_code == 429
        proc = remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": basic("alice")})
        assert proc.returncode != 0
        assert "too many failed attempts" in proc.stderr
        time.sleep(max(0.0, throttled_at + retry_after + 0.3 - time.monotonic()))
        reply = _ping(gw, basic("alice"))
        assert reply.status_code == 200, reply.text
        ok(remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": basic("alice")}))


def test_failed_logins_throttle_the_user(daemon: PrivateDaemon, creds: Credentials) -> None:
    """Per user only (per source off): bob's name is locked after 3 failures, alice still gets
    in from the same address."""
    gw = Gateway(
        daemon.host,
        *("--htpasswd", str(creds.htpasswd), "--auth-failures", "0"),
        *("--auth-failures-per-user", "3"),
        policy=BINDINGS_POLICY,
    )
    with running(gw, "the per-user throttling gateway"):
        for _ in range(3):
            assert _ping(gw, basic("bob", WRONG_PASSWORD)).status_code == 401
        reply = _ping(gw, basic("bob"))
        assert reply.status_code == 429
        assert int(reply.headers["Retry-After"]) >= 1
        for _ in range(4):  # more failures than bob's limit: alice is not locked
            assert _ping(gw, basic("alice", WRONG_PASSWORD)).status_code == 401
            assert _ping(gw, basic("alice")).status_code == 200


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _registry_header(password: str) -> str:
    return base64.urlsafe_b64encode(
        json.dumps({"username": "u", "password": password}).encode()
    ).decode()


def test_secrets_never_reach_the_logs(
    basic_gw: Served, creds: Credentials, busybox_image: str, tmp_path: pathlib.Path
) -> None:
    registry_auth = _registry_header(REGISTRY_SECRET)
    registry_config = _b64(
        json.dumps({"registry.example.test": {"username": "u", "password": CONFIG_SECRET}})
    )
    ref = f"127.0.0.1:9/dgt-nothing-{RUN}"

    # The SDK sends X-Registry-Auth for a pull with auth_config (the registry does not exist).
    client = sdk_client(basic_gw.url)
    try:
        client.api.headers["Authorization"] = basic("alice")
        with pytest.raises(docker.errors.APIError):
            client.images.pull(
                ref, tag="v1", auth_config={"username": "u", "password": REGISTRY_SECRET}
            )
        # `login` posts the password in the body of /auth (the registry does not exist).
        with pytest.raises(docker.errors.APIError):
            client.login("u", password=LOGIN_SECRET, registry="127.0.0.1:9", reauth=True)
    finally:
        client.close()
    record = wait_audit(
        basic_gw.audit,
        lambda r: r["operation"] == "ImageCreate" and r.get("object") == f"{ref}:v1",
    )
    assert record["details"]["registry_auth"] is True
    assert (record["identity"], record["decision"]) == ("alice", "allow")
    wait_audit(
        basic_gw.audit, lambda r: r["operation"] == "SystemAuth" and r["identity"] == "alice"
    )

    # A container's environment: the audit record keeps the names only.
    proc = remote_docker(
        basic_gw.url, tmp_path, "run", "--rm", "-e", f"DGT_SECRET={ENV_SECRET}", busybox_image,
        "sh", "-c", 'test -n "$DGT_SECRET"', headers={"Authorization": basic("alice")},
    )  # fmt: skip
    ok(proc)
    record = wait_audit(
        basic_gw.audit,
        lambda r: (
            r["operation"] == "ContainerCreate"
            and "DGT_SECRET" in (r.get("details") or {}).get("env_names", [])
        ),
    )
    assert record["details"]["cmd"] == ["sh", "-c", 'test -n "$DGT_SECRET"']

    secret_headers = [("X-Registry-Auth", registry_auth), ("X-Registry-Config", registry_config)]
    port = basic_gw.port
    # Allowed, denied by the policy, and unauthenticated requests carrying them.
    reply = raw_request(port, "GET", "/_ping", [("Authorization", basic("alice")), *secret_headers])
    assert reply.status == 200
    reply = raw_request(
        port,
        "POST",
        f"/images/create?fromImage=dgt-denied-{RUN}&tag=v2",
        [("Authorization", basic("bob")), *secret_headers],
    )
    assert reply.status == 403
    assert (
        reply.message == "dockgate: ImageCreate denied by policy containers-read-only (read-only)"
    )
    denied = wait_audit(basic_gw.audit, lambda r: r.get("object") == f"dgt-denied-{RUN}:v2")
    assert denied["decision"] == "deny" and denied["details"] == {"registry_auth": True}
    for authorization in (
        basic("alice", WRONG_PASSWORD),
        f"Bearer {BOGUS_TOKEN}",
        "Basic " + _b64(f"alice:{WRONG_PASSWORD}")[:-2] + "!!",
    ):
        reply = raw_request(
            port, "GET", "/_ping", [("Authorization", authorization), *secret_headers]
        )
        assert reply.status == 401, reply
    reply = raw_request(port, "GET", "/_ping", [("Authorization", f"Bearer {creds.ci_token}")])
    assert reply.status == 200
    # Malformed requests carrying them: the gateway refuses the head, and logs that it did.
    malformed = [
        # two Authorization headers
        request_bytes(
            "GET",
            "/_ping",
            [("Authorization", basic("alice")), ("Authorization", f"Bearer {BOGUS_TOKEN}")],
        ),
        # a control character in a secret header
        request_bytes("GET", "/_ping", [("X-Registry-Auth", registry_auth + "\x01")]),
        # an obsolete folded line continuing a secret header
        request_bytes(
            "GET",
            "/_ping",
            [("Authorization", basic("alice")), ("X-Registry-Config", "x\r\n " + registry_config)],
        ),
        # a bad Content-Length after the secrets
        request_bytes(
            "POST",
            "/build",
            [("Authorization", basic("alice")), *secret_headers, ("Content-Length", "x")],
        ),
        # a header line without a colon
        b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\nAuthorization: "
        + basic("alice").encode()
        + b"\r\nX-Registry-Auth "
        + registry_auth.encode()
        + b"\r\n\r\n",
    ]
    logged_400 = basic_gw.gw.stdout_text().count(" 400 ")
    for data in malformed:
        reply = raw_exchange(port, data)
        assert reply.status == 400, (data, reply)
    deadline = time.monotonic() + 5
    while basic_gw.gw.stdout_text().count(" 400 ") < logged_400 + len(malformed):
        assert time.monotonic() < deadline, basic_gw.gw.stdout_text()[-3000:]
        time.sleep(0.05)

    secrets = {
        "alice's password": PASSWORDS["alice"],
        "bob's password": PASSWORDS["bob"],
        "alice's Basic credentials": _b64(f"alice:{PASSWORDS['alice']}"),
        "the wrong password": WRONG_PASSWORD,
        "the wrong Basic credentials": _b64(f"alice:{WRONG_PASSWORD}"),
        "a valid token": creds.ci_token,
        "a bogus token": BOGUS_TOKEN,
        "the registry password": REGISTRY_SECRET,
        "the X-Registry-Auth value": registry_auth,
        "the SDK's X-Registry-Auth value": base64.urlsafe_b64encode(
            json.dumps({"username": "u", "password": REGISTRY_SECRET}).encode()
        ).decode(),
        "the registry config password": CONFIG_SECRET,
        "the X-Registry-Config value": registry_config,
        "the login password": LOGIN_SECRET,
        "a container's environment value": ENV_SECRET,
    }
    logs = {
        "access log": basic_gw.gw.stdout_text(),
        "stderr": basic_gw.gw.stderr_text(),
        "audit log": basic_gw.audit.read_text(),
    }
    assert "ImageCreate" in logs["access log"] and "ImageCreate" in logs["audit log"]
    leaks = [
        f"{what} in the {log}"
        for what, secret in secrets.items()
        for log, text in logs.items()
        if secret in text
    ]
    assert not leaks, leaks


def test_audit_records_create_and_exec(
    *,
    basic_gw: Served,
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    alice = {"Authorization": basic("alice")}
    name = cleanup.container(unique("audit-run"))
    proc = remote_docker(
        basic_gw.url, tmp_path, "run", "--name", name, busybox_image, "echo", "hi",
        headers=alice,
    )  # fmt: skip
    assert ok(proc).stdout == "hi\n"
    create = wait_audit(
        basic_gw.audit, lambda r: r["operation"] == "ContainerCreate" and r.get("object") == name
    )
    assert create["identity"] == "alice"
    assert create["auth"] == "basic"
    assert "auth_detail" not in create
    assert create["source"] == "127.0.0.1"
    assert create["peer"].startswith("127.0.0.1:")
    assert create["method"] == "POST"
    assert create["path"].split("?")[0].endswith("/containers/create")
    assert (create["decision"], create["policy"], create["reason"]) == (
        "allow",
        "everything",
        "rule 1",
    )
    assert create["status"] == 201
    assert create["details"]["image"] == busybox_image
    assert create["details"]["cmd"] == ["echo", "hi"]
    container_id = json.loads(daemon.docker("inspect", name).stdout)[0]["Id"]
    start = wait_audit(
        basic_gw.audit,
        lambda r: r["operation"] == "ContainerStart" and r.get("object") == container_id,
    )
    assert (start["identity"], start["decision"], start["status"]) == ("alice", "allow", 204)

    sleeper = cleanup.container(unique("audit-exec"))
    daemon.docker("run", "-d", "--name", sleeper, busybox_image, "sleep", "60")
    marker = f"exec-{RUN}"
    proc = remote_docker(basic_gw.url, tmp_path, "exec", sleeper, "echo", marker, headers=alice)
    assert ok(proc).stdout.strip() == marker
    exec_create = wait_audit(
        basic_gw.audit, lambda r: r["operation"] == "ContainerExec" and r.get("object") == sleeper
    )
    assert exec_create["details"]["cmd"] == ["echo", marker]
    assert (exec_create["identity"], exec_create["auth"]) == ("alice", "basic")
    assert (exec_create["decision"], exec_create["policy"], exec_create["reason"]) == (
        "allow",
        "everything",
        "rule 1",
    )
    assert exec_create["status"] == 201
    # The exec instance is gone once it ran: its ID is the one the CLI started next.
    exec_start = wait_audit(
        basic_gw.audit, lambda r: r["operation"] == "ExecStart" and r["time"] >= exec_create["time"]
    )
    assert exec_start["path"].split("?")[0].endswith(f"/exec/{exec_start['object']}/start")
    assert exec_start["decision"] == "allow" and exec_start["identity"] == "alice"


def test_audit_records_denials(
    basic_gw: Served,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    name = cleanup.container(unique("audit-deny"))
    proc = remote_docker(
        basic_gw.url, tmp_path, "create", "--name", name, busybox_image, "true",
        headers={"Authorization": basic("bob")},
    )  # fmt: skip
    refused(proc, READ_ONLY_CREATE)
    record = wait_audit(
        basic_gw.audit, lambda r: r["operation"] == "ContainerCreate" and r.get("object") == name
    )
    assert (record["identity"], record["auth"], record["source"]) == ("bob", "basic", "127.0.0.1")
    assert (record["decision"], record["policy"], record["reason"]) == (
        "deny",
        "containers-read-only",
        "read-only",
    )
    assert record["status"] == 403

    # No binding, and bad credentials.
    target = f"/containers/json?dgt={RUN}-nobinding"
    assert (
        raw_request(basic_gw.port, "GET", target, [("Authorization", basic("carol"))]).status == 403
    )
    record = wait_audit(basic_gw.audit, lambda r: r["path"] == target)
    assert (record["identity"], record["decision"], record["policy"], record["reason"]) == (
        "carol",
        "deny",
        None,
        "no binding",
    )
    target = f"/containers/json?dgt={RUN}-badpassword"
    headers = [("Authorization", basic("alice", WRONG_PASSWORD))]
    assert raw_request(basic_gw.port, "GET", target, headers).status == 401
    record = wait_audit(basic_gw.audit, lambda r: r["path"] == target)
    assert (record["identity"], record["auth"], record["decision"], record["status"]) == (
        "anonymous",
        "anonymous",
        "deny",
        401,
    )
    assert record["reason"] == "bad credentials"


@pytest.fixture(scope="module")
def sources_gw(
    daemon: PrivateDaemon, creds: Credentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    audit = tmp_path_factory.mktemp("sources-audit") / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *("--htpasswd", str(creds.htpasswd), "--audit-log", str(audit)),
        *("--allow-source", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1"),
        *NO_THROTTLE,
        policy=SOURCES_POLICY,
    )
    with running(gw, "the source-address gateway"):
        yield Served(gw, audit)


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        (["10.1.2.3"], "10.1.2.3"),
        (["10.1.2.3, 127.0.0.1"], "10.1.2.3"),  # through a second trusted proxy
        (["192.0.2.1, 10.1.2.3"], "10.1.2.3"),  # what the client wrote is not read
        (["192.0.2.1"], "192.0.2.1"),
        ([], "127.0.0.1"),
        (["10.1.2.3, 192.0.2.1"], "192.0.2.1"),  # a spoofed left-most entry
        (["10.1.2.3", "192.0.2.1"], "192.0.2.1"),  # ... in a header field of its own
    ],
    ids=["allowed", "chain", "left-ignored", "refused", "no-header", "spoofed", "spoofed-field"],
)
def test_allow_source_judges_the_forwarded_client(
    sources_gw: Served, forwarded: list[str], client: str
) -> None:
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    headers = [("Authorization", basic("alice"))] + [("X-Forwarded-For", v) for v in forwarded]
    reply = raw_request(sources_gw.port, "GET", target, headers)
    if ipaddress.ip_address(client) in ipaddress.ip_network("10.0.0.0/8"):
        assert (reply.status, reply.body) == (200, b"OK")
    else:
        assert reply.status == 403
        assert reply.message == f"dockgate: requests from {client} are not allowed"
    record = wait_audit(sources_gw.audit, lambda r: r["path"] == target)
    assert record["source"] == client
    assert record["peer"].startswith("127.0.0.1:")


def test_refused_source_never_gets_to_try_credentials(sources_gw: Served) -> None:
    """The source lists come before credentials: a wrong password from a refused address is a
    403 about the address, not a 401."""
    headers = [
        ("Authorization", basic("alice", WRONG_PASSWORD)),
        ("X-Forwarded-For", "192.0.2.1"),
    ]
    reply = raw_request(sources_gw.port, "GET", "/_ping", headers)
    assert (reply.status, reply.message) == (
        403,
        "dockgate: requests from 192.0.2.1 are not allowed",
    )
    assert "www-authenticate" not in reply.headers


def test_malformed_forwarded_for_is_refused(sources_gw: Served) -> None:
    headers = [("Authorization", basic("alice")), ("X-Forwarded-For", "10.1.2.3, not-an-address")]
    reply = raw_request(sources_gw.port, "GET", "/_ping", headers)
    assert reply.status == 400
    assert reply.message == "dockgate: malformed X-Forwarded-For"


@pytest.mark.parametrize(
    ("user", "address", "outcome"),
    [
        ("alice", "10.1.2.3", "run"),
        ("alice", "10.1.9.9", "read-only"),  # the binding's own deny list
        ("alice", "10.3.0.1", "read-only"),  # outside the binding's allow list
        ("bob", "10.2.0.5", "run"),
        ("bob", "10.3.0.1", "no binding"),
    ],
)
def test_binding_sources_apply_to_their_clients_only(
    *,
    sources_gw: Served,
    daemon: PrivateDaemon,
    busybox_image: str,
    tmp_path: pathlib.Path,
    cleanup: Cleanup,
    unique: Callable[[str], str],
    user: str,
    address: str,
    outcome: str,
) -> None:
    """The docker CLI behind a (pretend) proxy: config.json adds X-Forwarded-For."""
    headers = {"Authorization": basic(user), "X-Forwarded-For": address}
    name = cleanup.container(unique("source"))
    proc = remote_docker(
        sources_gw.url, tmp_path, "run", "--rm", "--name", name, busybox_image,
        "echo", f"from-{address}", headers=headers,
    )  # fmt: skip
    if outcome == "run":
        assert ok(proc).stdout.strip() == f"from-{address}"
    elif outcome == "read-only":
        refused(proc, READ_ONLY_CREATE)
        ok(remote_docker(sources_gw.url, tmp_path, "ps", headers=headers))
    else:
        refused(proc, f"dockgate: no policy is bound to user {user} from {address}")
    if outcome != "run":
        assert not container_exists(daemon, name)


@pytest.fixture(scope="module")
def deny_gw(daemon: PrivateDaemon) -> Iterator[Gateway]:
    gw = Gateway(
        daemon.host, "--allow-source", "127.0.0.0/8", "--deny-source", "127.0.0.1", *NO_THROTTLE
    )
    with running(gw, "the --deny-source gateway"):
        yield gw


def test_deny_source_refuses_a_direct_client(deny_gw: Gateway, tmp_path: pathlib.Path) -> None:
    """Deny wins over allow; an X-Forwarded-For from an untrusted peer changes nothing."""
    message = "dockgate: requests from 127.0.0.1 are not allowed"
    for headers in ([], [("X-Forwarded-For", "127.0.0.2")]):
        reply = raw_request(deny_gw.port, "GET", "/_ping", headers)
        assert (reply.status, reply.message) == (403, message)
    refused(remote_docker(deny_gw.url, tmp_path, "ps"), message)
    reply = raw_request(deny_gw.port, "GET", "/_ping", source="127.0.0.2")
    assert (reply.status, reply.body) == (200, b"OK")


@pytest.fixture(scope="module")
def proxy_gw(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    audit = tmp_path_factory.mktemp("proxy-audit") / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *("--trusted-proxy", "127.0.0.1", "--proxy-protocol", "--audit-log", str(audit)),
        *("--deny-source", "192.0.2.0/24"),
        *NO_THROTTLE,
    )
    with running(gw, "the PROXY protocol gateway"):
        yield Served(gw, audit)


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 10.9.8.7 10.0.0.1 5555 2375\r\n", "10.9.8.7"),
        (proxy_v2("10.20.30.40", "10.0.0.1", 40000, 2375), "10.20.30.40"),
        (proxy_v2("2001:db8::7", "2001:db8::1", 40000, 2375), "2001:db8::7"),
    ],
    ids=["v1", "v2-ipv4", "v2-ipv6"],
)
def test_proxy_header_names_the_client(proxy_gw: Served, header: bytes, client: str) -> None:
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    reply = raw_request(proxy_gw.port, "GET", target, prefix=header)
    assert (reply.status, reply.body) == (200, b"OK")
    record = wait_audit(proxy_gw.audit, lambda r: r["path"] == target)
    assert record["source"] == client
    assert record["operation"] == "SystemPing" and record["decision"] == "allow"
    wait_access_log(proxy_gw.gw, lambda line: target in line and line.endswith(f" src={client}"))


def test_audit_peer_behind_a_proxy_header_is_the_proxy(proxy_gw: Served) -> None:
    """observe/audit.py: `peer` is "the directly connected peer ("10.0.0.2:51234" or "unix")"; the
    client the PROXY header names is `source`."""
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    header = b"PROXY TCP4 10.9.8.7 10.0.0.1 5555 2375\r\n"
    assert raw_request(proxy_gw.port, "GET", target, prefix=header).status == 200
    record = wait_audit(proxy_gw.audit, lambda r: r["path"] == target)
    assert record["source"] == "10.9.8.7"
    host, _, port = record["peer"].rpartition(":")
    assert host == "127.0.0.1" and port.isdigit(), record["peer"]


def test_proxy_header_address_is_judged_by_the_source_lists(proxy_gw: Served) -> None:
    reply = raw_request(
        proxy_gw.port, "GET", "/_ping", prefix=b"PROXY TCP4 192.0.2.5 10.0.0.1 5555 2375\r\n"
    )
    assert (reply.status, reply.message) == (
        403,
        "dockgate: requests from 192.0.2.5 are not allowed",
    )


def test_trusted_proxy_without_a_header_gets_400(proxy_gw: Served) -> None:
    reply = raw_request(proxy_gw.port, "GET", "/_ping")
    assert reply.status == 400
    assert reply.message is not None and reply.message.startswith("dockgate: PROXY protocol: ")


def test_untrusted_peer_is_not_asked_for_a_header(proxy_gw: Served) -> None:
    """From 127.0.0.2 (not a trusted proxy) plain HTTP is served as that address, and a PROXY
    line is not believed: it is not HTTP."""
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    reply = raw_request(proxy_gw.port, "GET", target, source="127.0.0.2")
    assert (reply.status, reply.body) == (200, b"OK")
    assert wait_audit(proxy_gw.audit, lambda r: r["path"] == target)["source"] == "127.0.0.2"
    reply = raw_request(
        proxy_gw.port,
        "GET",
        "/_ping",
        source="127.0.0.2",
        prefix=b"PROXY TCP4 10.9.8.7 10.0.0.1 5555 2375\r\n",
    )
    assert reply.status == 400


def test_proxy_header_before_tls(daemon: PrivateDaemon, pki: Pki, tmp_path: pathlib.Path) -> None:
    audit = tmp_path / "audit.jsonl"
    gw = _tls_gateway(daemon, pki, audit, "--trusted-proxy", "127.0.0.1", "--proxy-protocol")
    client = pki.clients["cert-alice"]
    context = ssl.create_default_context(cafile=str(client / "ca.pem"))
    context.load_cert_chain(str(client / "cert.pem"), str(client / "key.pem"))
    with running(gw, "the TLS PROXY protocol gateway"):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(b"PROXY TCP4 10.9.8.7 10.0.0.1 5555 2376\r\n")
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(request_bytes("GET", "/_ping"))
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        record = wait_audit(audit, lambda r: r["operation"] == "SystemPing")
        assert (record["source"], record["identity"]) == ("10.9.8.7", "cert-alice")


def _wait_status(
    gw: Gateway, authorization: str, status: int, limit: float = RELOAD_LIMIT_SECONDS
) -> float:
    """Seconds until a new connection's /_ping gets `status` (fails after `limit` + 1 s)."""
    started = time.monotonic()
    while True:
        got = _ping(gw, authorization).status_code
        elapsed = time.monotonic() - started
        if got == status:
            return elapsed
        assert elapsed < limit + 1, f"still {got} after {elapsed:.1f}s, wanted {status}"
        time.sleep(0.1)


class KeepAlive:
    """One client connection for several requests (bodies framed by Content-Length)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the connection was closed; buffered: {self.buf!r}"
        self.buf += chunk

    def status(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> int:
        lines = [f"{method} {target} HTTP/1.1", "Host: docker"]
        lines += [f"{name}: {value}" for name, value in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._more()
        self.buf = self.buf[length:]
        return int(head.split(b" ")[1])


def test_credential_files_are_reloaded(daemon: PrivateDaemon, tmp_path: pathlib.Path) -> None:
    htpasswd, tokens = tmp_path / "htpasswd", tmp_path / "tokens"
    users = {"alice": PASSWORDS["alice"]}
    write_htpasswd(htpasswd, users)
    keep = create_token(tokens, "keep", "keeper")
    revoked = create_token(tokens, "temp", "temporary")
    gw = Gateway(
        daemon.host,
        *("--htpasswd", str(htpasswd), "--tokens", str(tokens)),
        *NO_THROTTLE,
        policy=ALLOW_ALL_POLICY,
    )
    with running(gw, "the reloading gateway"):
        frank = "Basic " + _b64(f"frank:frank-{RUN}")
        assert _ping(gw, frank).status_code == 401
        write_htpasswd(htpasswd, {**users, "frank": f"frank-{RUN}"})
        assert _wait_status(gw, frank, 200) <= RELOAD_LIMIT_SECONDS
        ok(remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": frank}))

        # A keep-alive connection that authenticated frank before is not trusted after.
        with KeepAlive(gw.port) as conn:
            assert conn.status("GET", "/_ping", [("Authorization", frank)]) == 200
            write_htpasswd(htpasswd, users)
            assert _wait_status(gw, frank, 401) <= RELOAD_LIMIT_SECONDS
            assert conn.status("GET", "/_ping", [("Authorization", frank)]) == 401
        proc = remote_docker(gw.url, tmp_path, "ps", headers={"Authorization": frank})
        assert proc.returncode != 0 and "dockgate: invalid credentials" in proc.stderr

        # A file that no longer loads keeps the previous contents, with one line saying so.
        good = htpasswd.read_text()
        htpasswd.write_text("this is not an htpasswd line\n")
        deadline = time.monotonic() + RELOAD_LIMIT_SECONDS
        while not any("reload of" in line and "failed" in line for line in gw.stderr()):
            assert time.monotonic() < deadline, gw.output()
            assert _ping(gw, basic("alice")).status_code == 200
            time.sleep(0.1)
        assert _ping(gw, basic("alice")).status_code == 200
        htpasswd.write_text(good)

        bearer = f"Bearer {revoked}"
        assert _ping(gw, bearer).status_code == 200
        lines = tokens.read_text().splitlines(keepends=True)
        tokens.write_text("".join(line for line in lines if not line.startswith("temp ")))
        assert _wait_status(gw, bearer, 401) <= RELOAD_LIMIT_SECONDS
        assert _ping(gw, f"Bearer {keep}").status_code == 200
        assert _ping(gw, basic("alice")).status_code == 200
        assert sum("changed: reloaded" in line for line in gw.stderr()) == 4, gw.output()
        assert sum("failed" in line for line in gw.stderr()) == 1, gw.output()


def test_sdk_with_client_certificates(
    *,
    tls_gw: Served,
    pki: Pki,
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # requests prefers these over the session's `verify` (the SDK's ca_cert).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    def client_for(cn: str) -> docker.DockerClient:
        path = pki.clients[cn]
        tls = docker.tls.TLSConfig(
            client_cert=(str(path / "cert.pem"), str(path / "key.pem")),
            ca_cert=str(path / "ca.pem"),
            verify=True,
        )
        return sdk_client(tls_gw.url, tls=tls)

    alice, bob, nobody = (client_for(cn) for cn in ("cert-alice", "cert-bob", "cert-nobody"))
    try:
        name = cleanup.container(unique("sdk-cert-alice"))
        created = alice.containers.create(busybox_image, ["true"], name=name)
        assert container_exists(daemon, name)
        assert created.name == name

        assert isinstance(bob.containers.list(all=True), list)
        name = cleanup.container(unique("sdk-cert-bob"))
        with pytest.raises(docker.errors.APIError) as caught:
            bob.containers.create(busybox_image, ["true"], name=name)
        assert caught.value.status_code == 403
        assert caught.value.explanation == READ_ONLY_CREATE
        assert not container_exists(daemon, name)

        with pytest.raises(docker.errors.APIError) as caught:
            nobody.containers.list()
    finally:
        for client in (alice, bob, nobody):
            client.close()
    assert caught.value.status_code == 403
    assert caught.value.explanation == "dockgate: no policy is bound to certificate cert-nobody"


def test_sdk_with_a_custom_authorization_header(
    basic_gw: Served,
    daemon: PrivateDaemon,
    busybox_image: str,
    cleanup: Cleanup,
    unique: Callable[[str], str],
) -> None:
    outcomes: dict[str, str] = {}
    for user in ("alice", "bob", "carol"):
        name = cleanup.container(unique(f"sdk-{user}"))
        client = sdk_client(basic_gw.url)
        client.api.headers["Authorization"] = basic(user)
        try:
            client.containers.create(busybox_image, ["true"], name=name)
            outcomes[user] = "created"
        except docker.errors.APIError as exc:
            assert exc.status_code == 403
            outcomes[user] = str(exc.explanation)
        finally:
            client.close()
        assert container_exists(daemon, name) == (outcomes[user] == "created")
    assert outcomes == {
        "alice": "created",
        "bob": READ_ONLY_CREATE,
        "carol": "dockgate: no policy is bound to user carol",
    }


def _start_failure(daemon: PrivateDaemon, *args: str) -> tuple[int, str]:
    gw = Gateway(daemon.host, *args)
    gw.spawn()
    try:
        code = gw.wait(15)
    finally:
        gw.stop()
    return code, gw.stderr_text()


def test_bad_auth_failures_value_names_the_option(daemon: PrivateDaemon) -> None:
    code, text = _start_failure(daemon, "--auth-failures", "-1")
    assert code == 2, text
    assert "dockgate: error: --auth-failures: " in text


def test_unopenable_audit_log_refuses_to_start(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    code, text = _start_failure(daemon, "--audit-log", str(tmp_path / "missing" / "audit.jsonl"))
    assert code == 2, text
    assert "dockgate: error: --audit-log" in text
    assert "Traceback" not in text
