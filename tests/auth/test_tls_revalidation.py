"""Client certificates checked again while their connection lasts (issue 12, items 5 and 7).

The TLS handshake verifies a client certificate once; a keep-alive connection outlives it. Here a
real gateway in front of the real daemon, and a raw TLS client that keeps one connection open:

- the `--tls-client-ca` file replaced by another CA: the next request on the old connection is
  refused (401) and the connection closed, and the request changed nothing on the daemon;
- a certificate that expires while its connection is open: the same;
- a reload that keeps the certificate's CA (SIGHUP; a re-issued CA certificate with the same key):
  the connection goes on;
- a certificate with two CNs (`CN=admin,CN=bob`: dockgate took the first, Go's x509 the last)
  names no one: 401, with the reason logged.

Certificates are made with `cryptography`: trustme makes neither two CNs nor a CA re-issued with
its own key. The pure tests at the end pin the naming rule and the trust check.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import signal
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from dockgate.auth.authenticator import Authenticator
from dockgate.auth.clientcerts import PeerCertificate, TrustSet
from dockgate.auth.identity import CERTIFICATE, Identity
from dockgate.auth.sourceaddr import parse_address_list
from dockgate.auth.throttle import FailureThrottle, ThrottleSettings
from dockgate.auth.tokens import create_token_line, parse_tokens
from dockgate.http.request import parse_head as parse_request_head
from dockgate.policy.admission import Admission, Admissions, ConnectionFacts
from dockgate.policy.gatekeeper import Gatekeeper
from dockgate.policy.loader import parse_policy_text
from dockgate.relay.tls import SeveralNames, peer_identity
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.pki import Client, Issuer, Pki, issue, make_ca, make_pki, replace
from support.rawhttp import json_message

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

# The TLS files are looked at at most once a second (relay/tls.py, watched.py).
RELOAD_WAIT_SECONDS = 1.3
LOG_WAIT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
LIFETIME_SECONDS = 3  # of the certificate that expires during its connection

POLICY = """
policies:
  everything:
    rules:
      - allow: {sections: ["*"]}
bindings:
  - {policy: everything, certificates: [admin, alice]}
"""


# ----- a small PKI ------------------------------------------------------------------------------


def start_gateway(daemon: PrivateDaemon, pki: Pki) -> Gateway:
    policy = pki.root / "policy.yaml"
    policy.write_text(POLICY)
    return Gateway(
        daemon.host,
        *("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)),
        *("--tls-client-ca", str(pki.client_ca)),
        policy=policy,
    )


def refused_at_handshake(gw: Gateway, pki: Pki, leaf: Issuer) -> bool:
    """True when a new connection with `leaf` gets no answer (with TLS 1.3 the client learns of
    its refused certificate after its side of the handshake, at the first read)."""
    try:
        client = Client(gw, pki, leaf)
    except (ssl.SSLError, OSError):
        return True
    try:
        client.request("GET", "/_ping")
    except (ssl.SSLError, OSError, AssertionError):
        return True
    finally:
        client.close()
    return False


def create_volume(client: Client) -> tuple[int, dict[str, str], bytes, str]:
    name = f"dg-reval-{uuid.uuid4().hex[:10]}"
    body = f'{{"Name": "{name}"}}'.encode()
    return (*client.request("POST", "/v1.41/volumes/create", body), name)


def volume_exists(daemon: PrivateDaemon, name: str) -> bool:
    return daemon.docker("volume", "inspect", name, check=False).returncode == 0


@pytest.fixture
def remove_volumes(daemon: PrivateDaemon) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        daemon.docker("volume", "rm", "-f", name, check=False)


def assert_refused_and_closed(
    client: Client, answer: tuple[int, dict[str, str], bytes], why: str
) -> None:
    status, headers, body = answer
    assert status == 401, (status, body)
    message = json_message(body) or ""
    assert why in message, message
    assert headers.get("connection", "").lower() == "close", headers
    assert client.closed(), "the connection stayed open"


def wait_for_log(gw: Gateway, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while sum(text in line for line in gw.stderr()) < count:
        assert time.monotonic() < deadline, gw.output()
        time.sleep(0.05)


# ----- the CA file replaced ---------------------------------------------------------------------


def test_a_replaced_client_ca_ends_open_sessions(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, remove_volumes: list[str]
) -> None:
    """After `--tls-client-ca` is replaced by another CA, the next request of a connection
    authenticated under the old one is refused (401) and the connection closed; its volume is
    not created. Before: the connection kept its identity and the volume was created."""
    pki = make_pki(tmp_path)
    intermediate = make_ca("client intermediate", parent=pki.ca1)
    with running(start_gateway(daemon, pki), "the TLS gateway") as gw:
        direct = Client(gw, pki, issue(pki.ca1, "alice"))
        # Signed by an intermediate the client sends: the anchor is the root in the CA file.
        chained = Client(gw, pki, issue(intermediate, "alice"), intermediate)
        for client in (direct, chained):
            status, _, body, name = create_volume(client)
            remove_volumes.append(name)
            assert status == 201, body
            assert volume_exists(daemon, name)

        ca2 = make_ca("client CA 2")
        replace(pki.client_ca, ca2.pem())
        time.sleep(RELOAD_WAIT_SECONDS)
        for client in (direct, chained):
            status, headers, body, name = create_volume(client)
            remove_volumes.append(name)
            assert_refused_and_closed(
                client, (status, headers, body), "CA is no longer in --tls-client-ca"
            )
            assert not volume_exists(daemon, name)
            client.close()
        wait_for_log(gw, "TLS certificate files changed: reloaded")

        # What a new handshake says too: the old CA's certificate is refused, the new one's is in.
        assert refused_at_handshake(gw, pki, issue(pki.ca1, "alice"))
        fresh = Client(gw, pki, issue(ca2, "alice"))
        assert fresh.request("GET", "/_ping")[0] == 200
        fresh.close()
        assert "Traceback" not in gw.stderr_text()


def test_a_reload_that_keeps_the_ca_keeps_the_session(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, remove_volumes: list[str]
) -> None:
    """A reload that leaves the certificate's CA in force does not end its connection: SIGHUP
    with the same files, then the CA certificate re-issued with its own key next to another
    CA. A guard against refusing too much; on the old code it fails only at the second
    "reloaded" line (a changed file was looked at on new connections only, not on requests)."""
    pki = make_pki(tmp_path)
    with running(start_gateway(daemon, pki), "the TLS gateway") as gw:
        client = Client(gw, pki, issue(pki.ca1, "alice"))
        assert client.request("GET", "/_ping")[0] == 200

        os.kill(gw.pid, signal.SIGHUP)
        wait_for_log(gw, "TLS certificate files changed: reloaded")
        assert client.request("GET", "/_ping")[0] == 200

        renewed = make_ca("client CA 1", key=pki.ca1.key, days=90)
        assert renewed.cert.serial_number != pki.ca1.cert.serial_number
        replace(pki.client_ca, make_ca("another CA").pem() + renewed.pem())
        time.sleep(RELOAD_WAIT_SECONDS)
        status, _, body, name = create_volume(client)
        remove_volumes.append(name)
        assert status == 201, body
        assert volume_exists(daemon, name)
        wait_for_log(gw, "TLS certificate files changed: reloaded", count=2)
        assert client.request("GET", "/_ping")[0] == 200
        client.close()


# ----- expiry and names, on one gateway ---------------------------------------------------------


@pytest.fixture(scope="module")
def module_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("reval-pki"))


@pytest.fixture(scope="module")
def gw(daemon: PrivateDaemon, module_pki: Pki) -> Iterator[Gateway]:
    with running(start_gateway(daemon, module_pki), "the TLS gateway") as gateway:
        yield gateway


def test_a_certificate_that_expires_mid_connection_is_refused(
    gw: Gateway, module_pki: Pki, daemon: PrivateDaemon, remove_volumes: list[str]
) -> None:
    """A certificate valid for a few seconds: accepted while valid; once past its notAfter, the
    next request on the same connection is 401 and the connection ends, the volume not created.
    Before: the expired certificate kept working for as long as the connection lasted."""
    leaf = issue(module_pki.ca1, "alice", lifetime=datetime.timedelta(seconds=LIFETIME_SECONDS))
    client = Client(gw, module_pki, leaf)
    assert client.request("GET", "/_ping")[0] == 200
    left = leaf.cert.not_valid_after_utc.timestamp() - time.time()
    assert left > 0, "the test machine is too slow for this certificate's lifetime"
    time.sleep(left + 0.5)
    status, headers, body, name = create_volume(client)
    remove_volumes.append(name)
    assert_refused_and_closed(client, (status, headers, body), "client certificate expired")
    assert not volume_exists(daemon, name)
    client.close()


def test_a_certificate_with_two_cns_names_no_one(
    gw: Gateway, module_pki: Pki, daemon: PrivateDaemon, remove_volumes: list[str]
) -> None:
    """`CN=admin,CN=bob`: dockgate named it admin (the first), Go's x509 names it bob (the
    last). Now it names no one: 401 with the reason, one stderr line, no volume. `CN=admin`
    alone is bound to everything (the refusal is the two CNs, not the name)."""
    single = Client(gw, module_pki, issue(module_pki.ca1, "admin"))
    status, _, body, name = create_volume(single)
    remove_volumes.append(name)
    assert status == 201, body
    single.close()

    double = Client(gw, module_pki, issue(module_pki.ca1, "admin", "bob"))
    status, _, body, name = create_volume(double)
    remove_volumes.append(name)
    assert status == 401, body
    assert "2 CN values ('admin', 'bob')" in (json_message(body) or ""), body
    assert not volume_exists(daemon, name)
    # The reason, logged once for the connection: its subject and the values.
    wait_for_log(gw, "names several callers")
    line = next(line for line in gw.stderr() if "names several callers" in line)
    assert "CN=admin,CN=bob" in line and "2 CN values" in line, line
    double.close()


# ----- pure: the naming rule and the trust check ------------------------------------------------


def _as_dict(*cns: str, sans: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """A certificate as `ssl.getpeercert()` shows it."""
    return {
        "subject": tuple(((("commonName", cn),)) for cn in cns),
        "subjectAltName": sans,
    }


def test_the_field_that_names_the_caller_must_hold_one_value() -> None:
    """Several CNs, or several SAN values of the kind that names the caller, raise SeveralNames;
    several values of a field that is not read do not (Before: the first value was taken)."""
    with pytest.raises(SeveralNames, match=r"2 CN values \('admin', 'bob'\)"):
        peer_identity(_as_dict("admin", "bob"))
    # Two CNs in one multi-valued RDN (CN=admin+CN=bob) count the same.
    rdn = {"subject": ((("commonName", "admin"), ("commonName", "bob")),)}
    with pytest.raises(SeveralNames):
        peer_identity(rdn)
    # An empty CN next to a real one is still two.
    with pytest.raises(SeveralNames):
        peer_identity(_as_dict("", "bob"))
    # Without a CN, two DNS names decide under the default fields...
    two_dns = _as_dict(sans=(("DNS", "a.test"), ("DNS", "b.test")))
    with pytest.raises(SeveralNames, match="2 DNS values"):
        peer_identity(two_dns)
    # ... but not when one CN names the caller first, or when DNS is not read at all.
    assert peer_identity(_as_dict("alice", sans=(("DNS", "a.test"), ("DNS", "b.test")))) == "alice"
    assert peer_identity(_as_dict("admin", "bob", sans=(("email", "x@y"),)), ("email",)) == "x@y"
    assert peer_identity(_as_dict("alice")) == "alice"


def _der(issuer: Issuer) -> bytes:
    return issuer.cert.public_bytes(serialization.Encoding.DER)


def test_trust_check_by_subject_and_key() -> None:
    """A connection's certificate stays valid across a reload while its anchor (subject and
    key) is in the new CA set and within its validity; not when only the name matches; not
    past the chain's notAfter. Without the verified chain (the leaf alone), the anchor is the
    CA that signed the leaf."""
    ca1 = make_ca("CA")
    impostor = make_ca("CA")  # the same name, another key
    leaf = issue(ca1, "alice")
    now = time.time()
    at_handshake = TrustSet.from_der([_der(ca1)], 0)
    for chain in ([_der(leaf), _der(ca1)], [_der(leaf)]):
        peer = PeerCertificate(chain, at_handshake)
        assert peer.problem(at_handshake, now) is None
        renewed = TrustSet.from_der([_der(make_ca("CA", key=ca1.key, days=365))], 1)
        assert peer.problem(renewed, now) is None
        assert peer.problem(TrustSet.from_der([_der(impostor)], 2), now) is not None
        assert peer.problem(TrustSet.from_der([], 3), now) is not None
        # The same generation is not checked again (the hot path): no anchor lookup.
        assert PeerCertificate(chain, at_handshake).problem(TrustSet(0, {}, ()), now) is None
        expires = leaf.cert.not_valid_after_utc.timestamp()
        assert peer.problem(renewed, expires) is not None
        assert "expired" in (peer.problem(renewed, expires + 1) or "")


def test_admission_refuses_a_stale_certificate_before_anything_else() -> None:
    """Admission asks the connection's certificate first: a valid bearer token on a connection
    whose certificate's CA was reloaded away is 401 all the same, and the connection is to
    close; with the CA in force the token names the caller. (Before: only the Authorization
    header decided.)"""
    token, line = create_token_line("ci", "ci")
    policies = parse_policy_text(
        "policies:\n  p:\n    rules: [{allow: {sections: ['*']}}]\n"
        "bindings:\n  - {policy: p, tokens: [ci], certificates: [alice]}\n",
        "test.yaml",
    )
    ca1, ca2 = make_ca("CA 1"), make_ca("CA 2")
    leaf = issue(ca1, "alice")
    handshake = TrustSet.from_der([_der(ca1)], 0)
    trust = [handshake]
    gate = Admissions(
        policies,
        Gatekeeper(policies, authenticated=True),
        Authenticator(None, parse_tokens(line + "\n", "test.tokens")),
        FailureThrottle(ThrottleSettings(3, 5, 60.0)),
        parse_address_list([]),
        trust=lambda: trust[0],
    )
    request = parse_request_head(
        f"GET /_ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    facts = ConnectionFacts("10.1.1.1", "10.1.1.1", Identity("alice", CERTIFICATE, "CN=alice"))
    facts.peer_certificate = PeerCertificate([_der(leaf), _der(ca1)], handshake)
    allowed = gate.admit(request, facts, 0.0)
    assert isinstance(allowed, Admission)
    assert allowed.verdict.allowed and not allowed.close
    assert allowed.identity.name == "ci"

    trust[0] = TrustSet.from_der([_der(ca2)], 1)
    refused = gate.admit(request, facts, 0.0)
    assert isinstance(refused, Admission)
    assert (refused.verdict.status, refused.close) == (401, True)
    assert refused.verdict.reason == "certificate invalid"
    assert "no longer in --tls-client-ca" in refused.verdict.message
