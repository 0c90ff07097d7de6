"""Browser protections (dockgate.policy.browser.BrowserGuard) and the gatekeeper's other refusals.

Claims: a request carrying any `Origin` is refused unless that origin is configured (exact,
case-insensitive) or is the gateway's own (tests/policy/test_browser_answers.py); a `Host` is
accepted only when it is an IP literal, a name the Docker clients send (`localhost`, `*.localhost`,
`docker`) or a configured name, so a DNS-rebinding page is refused; authenticated listeners skip
the Host check but not the Origin check; a request without Host (HTTP/1.0) passes. The
gatekeeper refuses a protocol upgrade on any operation but attach, exec start, session and
grpc, and lets the policy decide those.
"""

from __future__ import annotations

import pytest

from dockgate.policy.browser import BrowserGuard
from dockgate.policy.gatekeeper import UPGRADABLE_OPERATIONS, Gatekeeper
from dockgate.policy.loader import parse_policy_text
from dockgate.policy.rules import PolicySet

ALLOW_ALL = """
policies:
  all:
    rules:
      - allow: {sections: ["*"]}
"""

CONFIGURED = """
origins: ["https://Portainer.example.com:9443"]
hosts: [Docker.Internal]
policies:
  all:
    rules:
      - allow: {sections: ["*"]}
"""


def policies(text: str = ALLOW_ALL) -> PolicySet:
    return parse_policy_text(text, "test.yaml")


GUARD = BrowserGuard()
CONFIGURED_GUARD = BrowserGuard(
    origins=frozenset({"https://portainer.example.com:9443"}),
    hosts=frozenset({"docker.internal"}),
)


# ----- Origin -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [b"https://evil.example.com", b"http://127.0.0.1:2375", b"null", b"http://localhost", b""],
)
def test_any_origin_is_refused_unless_configured(origin: bytes) -> None:
    """With no origins configured, every Origin header (even loopback, even `null`) but the
    gateway's own (the scheme and this request's Host, here `localhost:2376`) is refused."""
    refusal = GUARD.refusal(b"localhost:2376", origin, authenticated=False)
    assert refusal is not None
    assert "Origin" in refusal
    assert refusal.startswith("dockgate: requests from web pages are refused")


@pytest.mark.parametrize(
    "origin",
    [
        b"https://portainer.example.com:9443",
        b"HTTPS://PORTAINER.EXAMPLE.COM:9443",
        b" https://Portainer.example.com:9443 ",
    ],
)
def test_configured_origin_is_allowed_case_insensitively(origin: bytes) -> None:
    """A configured origin is allowed whatever its case (and surrounding blanks)."""
    assert CONFIGURED_GUARD.refusal(b"localhost", origin, authenticated=False) is None


@pytest.mark.parametrize(
    "origin",
    [
        b"https://portainer.example.com",  # another port
        b"http://portainer.example.com:9443",  # another scheme
        b"https://portainer.example.com:9443.evil.com",  # a prefix is not a match
        b"https://sub.portainer.example.com:9443",
    ],
)
def test_configured_origin_must_match_exactly(origin: bytes) -> None:
    """Only the exact configured origin passes: no prefix, suffix, scheme or port leeway."""
    refusal = CONFIGURED_GUARD.refusal(b"localhost", origin, authenticated=False)
    assert refusal is not None and "Origin" in refusal


def test_origin_is_checked_on_authenticated_listeners() -> None:
    """Authentication does not lift the Origin check (a browser may hold the credentials)."""
    assert GUARD.refusal(b"localhost", b"https://evil.example.com", authenticated=True)


# ----- Host -------------------------------------------------------------------------------------

ACCEPTED_HOSTS = [
    b"127.0.0.1",
    b"127.0.0.1:2375",
    b"10.1.2.3:2375",
    b"[::1]",
    b"[::1]:2375",
    b"[2001:db8::1]:2375",
    b"localhost",
    b"localhost:2375",
    b"LOCALHOST",
    b"localhost.",
    b"api.moby.localhost",
    b"docker",
    b"docker:2375",
]
REFUSED_HOSTS = [
    b"evil.example.com",
    b"evil.example.com:2375",
    b"127.0.0.1.nip.io",
    b"127.0.0.1.nip.io:2375",
    b"localhost.evil.com",
    b"dockerhub.evil.com",
    b"0x7f.0.0.1",
]


@pytest.mark.parametrize("host", ACCEPTED_HOSTS)
def test_accepted_hosts(host: bytes) -> None:
    """IP literals (v4, bracketed v6, with or without port) and the clients' own names pass."""
    assert GUARD.refusal(host, None, authenticated=False) is None


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_refused_hosts(host: bytes) -> None:
    """Any other DNS name (a rebinding page's own name) is refused with a Host message."""
    refusal = GUARD.refusal(host, None, authenticated=False)
    assert refusal is not None
    assert "Host" in refusal
    assert "DNS-rebinding" in refusal
    name = host.decode().rsplit(":", 1)[0] if host.count(b":") == 1 else host.decode()
    assert repr(name) in refusal


@pytest.mark.parametrize("host", [b"docker.internal", b"DOCKER.INTERNAL:2375", b"docker.internal."])
def test_configured_host_names(host: bytes) -> None:
    """A configured name passes, whatever its case, port or trailing dot."""
    assert CONFIGURED_GUARD.refusal(host, None, authenticated=False) is None
    assert GUARD.refusal(host, None, authenticated=False) is not None


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_authenticated_listeners_skip_the_host_check(host: bytes) -> None:
    """On an authenticated listener any Host is accepted (clients may use real DNS names)."""
    assert GUARD.refusal(host, None, authenticated=True) is None


def test_missing_host_is_fine() -> None:
    """HTTP/1.0 requests may omit Host: nothing to check."""
    assert GUARD.refusal(None, None, authenticated=False) is None


# ----- through the gatekeeper -------------------------------------------------------------------


def test_gatekeeper_refuses_foreign_origin_and_host() -> None:
    """Gatekeeper.check answers 403 with the guard's message, before the policy is asked."""
    gatekeeper = Gatekeeper(policies())
    verdict = gatekeeper.check("GET", "/v1.41/_ping", b"localhost", b"https://evil.example.com")
    assert (verdict.allowed, verdict.status, verdict.label) == (False, 403, "deny:-:browser")
    assert "Origin" in verdict.message
    assert verdict.operation == "SystemPing"
    verdict = gatekeeper.check("GET", "/v1.41/_ping", b"evil.example.com:2375")
    assert (verdict.allowed, verdict.status) == (False, 403)
    assert "Host" in verdict.message
    assert gatekeeper.check("GET", "/v1.41/_ping", b"127.0.0.1:2375").allowed
    assert gatekeeper.check("GET", "/v1.41/_ping").allowed  # no Host, no Origin


def test_gatekeeper_uses_the_policy_files_origins_and_hosts() -> None:
    """origins/hosts from the policy file reach the guard (lower-cased by the loader)."""
    gatekeeper = Gatekeeper(policies(CONFIGURED))
    origin = b"https://portainer.example.com:9443"
    assert gatekeeper.check("GET", "/v1.41/_ping", b"docker.internal:2375", origin).allowed
    assert not gatekeeper.check("GET", "/v1.41/_ping", b"evil.example.com", origin).allowed


def test_gatekeeper_authenticated_skips_host_only() -> None:
    """Gatekeeper(authenticated=True) accepts any Host but still refuses a foreign Origin."""
    gatekeeper = Gatekeeper(policies(), authenticated=True)
    assert gatekeeper.check("GET", "/_ping", b"gateway.example.com").allowed
    verdict = gatekeeper.check("GET", "/_ping", b"gateway.example.com", b"https://x.example")
    assert not verdict.allowed and "Origin" in verdict.message


# ----- protocol upgrades ------------------------------------------------------------------------


def test_upgrade_refused_for_ordinary_operations() -> None:
    """An Upgrade on GET /containers/json is refused with 403, even though the policy allows it."""
    gatekeeper = Gatekeeper(policies())
    verdict = gatekeeper.check("GET", "/v1.41/containers/json", upgrade=True)
    assert (verdict.allowed, verdict.status, verdict.label) == (False, 403, "deny:-:upgrade")
    assert verdict.message == "dockgate: ContainerList cannot switch protocols (Upgrade refused)"
    assert gatekeeper.check("GET", "/v1.41/containers/json").allowed


def test_upgrade_refused_for_unknown_requests() -> None:
    """An Upgrade on a request the router cannot place is refused too."""
    gatekeeper = Gatekeeper(policies(ALLOW_ALL + "      - allow: {unknown: true}\n"))
    verdict = gatekeeper.check("GET", "/nonexistent", upgrade=True)
    assert (verdict.allowed, verdict.status) == (False, 403)
    assert "cannot switch protocols" in verdict.message


@pytest.mark.parametrize(
    ("method", "target", "operation"),
    [
        ("POST", "/v1.41/containers/x/attach?stream=1&stdin=1", "ContainerAttach"),
        ("POST", "/v1.41/exec/x/start", "ExecStart"),
        ("GET", "/v1.41/containers/x/attach/ws", "ContainerAttachWebsocket"),
        ("POST", "/v1.41/session", "Session"),
        ("POST", "/v1.41/grpc", "GrpcSession"),
    ],
)
def test_upgrade_allowed_for_hijacking_operations(method: str, target: str, operation: str) -> None:
    """attach, exec start, attach/ws, session and grpc may upgrade when the policy allows them."""
    assert operation in UPGRADABLE_OPERATIONS
    verdict = Gatekeeper(policies()).check(method, target, upgrade=True)
    assert verdict.allowed, verdict.message
    assert verdict.operation == operation


def test_upgrade_still_needs_the_policy() -> None:
    """An upgradable operation the policy denies is refused by the policy, not the upgrade rule."""
    gatekeeper = Gatekeeper(policies("policies: {p: {rules: [{allow: {sections: [exec]}}]}}"))
    verdict = gatekeeper.check("POST", "/v1.41/containers/x/attach", upgrade=True)
    assert (verdict.allowed, verdict.status) == (False, 403)
    assert verdict.message.startswith('dockgate: no rule of policy "p" allows ContainerAttach')
    assert gatekeeper.check("POST", "/v1.41/exec/x/start", upgrade=True).allowed
