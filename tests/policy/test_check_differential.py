"""`dockgate check` decides every request of a corpus as the gateway does (issue 14).

Each request is run twice, with the same policy file and options:

(a) through a real gateway (`dockgate serve` in a subprocess) in front of a fake daemon that
    answers 200 to anything it receives, sent as raw bytes over a socket: the very bytes
    `dockgate check` builds (`check.request_bytes`), plus what only the wire carries (an
    `Authorization` header where check says `--as`, an `X-Forwarded-For` from a trusted proxy
    where check says `--source`);
(b) through `dockgate check` in-process (`dockgate.cli.main`).

The claim, for each request: the same decision; for a refusal the same status and exactly the
gateway's error `message`; an allowed request reaches the daemon (and comes back with its 200)
and a refused one never does. Requests whose answer needs a look-up in the daemon (ownership)
are not compared: check must say so (exit status 3).

The set-ups (`SETUPS`, one gateway each, started on first use): a read-only policy with
--allow-origin/--allow-host, bindings for htpasswd users, a token and anonymous callers behind a
trusted proxy with source lists, the guardrails' defaults, redaction, ownership, a gateway
configured by DOCKGATE_ variables alone, a unix socket, TLS with client certificates, and
Tecnativa's variables.

The gateway still runs its own relay code (relay/connection.py, relay/steps.py) while check runs
policy/plan.py: a disagreement here is a place where the two differ.

Not compared (check has no way to say them): passwords, tokens and certificates themselves
(`--as` names the caller; check takes any Authorization header it is given as wrong
credentials), a certificate's expiry, the throttle's 429, --held-bodies-max's 503, chunked
bodies, pipelined requests, and the loop guard (X-Dockgate-Hop carries a token of the
gateway's process).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import socket
import ssl
import tarfile
from collections.abc import Iterator

import bcrypt
import pytest
import trustme

from dockgate.auth.identity import ANONYMOUS_IDENTITY
from dockgate.body.guardrails import CHECKED_BODY_LIMIT
from dockgate.check import CheckRequest, request_bytes
from dockgate.cli import main
from support.fake_upstream import Exchange, FakeUpstream
from support.gateway import Gateway, run_dockgate, running
from support.rawhttp import BufferedConn, dechunk, json_message, parse_head

IO_TIMEOUT = 10.0
ALLOW, DENY, LOOKUP = 0, 1, 3
STARTUP_AGENT = "dockgate-startup"  # the gateway's own start-up `_ping` (startup/checks.py)

# ----- the set-ups: one policy file and one set of options each --------------------------------

READ_ONLY = """\
policies:
  containers-read-only:
    read_only: true
    rules:
      - allow: {sections: [containers, ping, version]}
"""

IDENTITIES = """\
policies:
  everything:
    rules:
      - allow: {sections: ["*"]}
  containers-read-only:
    read_only: true
    rules:
      - allow: {sections: [containers, ping, version]}
  probes:
    rules:
      - allow: {operations: [SystemPing, SystemPingHead, SystemVersion]}
bindings:
  - {policy: everything, users: [alice]}
  - {policy: containers-read-only, users: [bob]}
  - {policy: containers-read-only, tokens: [ci]}
  - {policy: probes, anonymous: true, sources: {allow: [127.0.0.1]}}
"""

GUARDED = """\
policies:
  guarded:
    rules:
      - allow: {sections: ["*"]}
      - allow: {unknown: true}
"""

REDACTED = """\
policies:
  dashboard:
    read_only: true
    redact: {env: true, mounts: true, labels: true}
    rules:
      - allow: {sections: [ping, version, containers, images]}
"""

OWNED = """\
policies:
  tenants:
    ownership: true
    rules:
      - allow:
          sections: [ping, version, system, containers, images, build, commit, volumes, networks]
bindings:
  - {policy: tenants, authenticated: true}
  - {policy: tenants, anonymous: true}
"""

# Alice may do everything; anonymous callers may probe.
ENVIRONMENT = """\
policies:
  everything:
    rules:
      - allow: {sections: ["*"]}
  probes:
    rules:
      - allow: {operations: [SystemPing, SystemPingHead, SystemVersion]}
bindings:
  - {policy: everything, users: [alice]}
  - {policy: probes, anonymous: true}
"""

# A unix socket's callers may do everything; the loopback's may read containers.
UNIX = """\
policies:
  everything:
    rules:
      - allow: {sections: ["*"]}
  containers-read-only:
    read_only: true
    rules:
      - allow: {sections: [containers, ping, version]}
bindings:
  - {policy: everything, anonymous: true, sources: {allow: [unix]}}
  - {policy: containers-read-only, anonymous: true}
"""

# Rollout modes (policy/modes.py): the same refusals in warn mode, forwarded; carol's binding
# enforces the same policy.
WARNED = """\
policies:
  trial:
    mode: warn
    read_only: true
    redact: {env: true, labels: true}
    rules:
      - allow: {sections: [ping, version, containers, volumes, images]}
      - deny: {operations: [ContainerLogs]}
  guarded-trial:
    mode: warn
    rules:
      - allow: {sections: ["*"]}
  owned-trial:
    mode: warn
    ownership: true
    rules:
      - allow: {sections: ["*"]}
bindings:
  - {policy: trial, users: [alice]}
  - {policy: trial, users: [carol], mode: enforce}
  - {policy: guarded-trial, users: [bob]}
  - {policy: owned-trial, anonymous: true}
"""

# Client certificates by CN (the gateway's default --tls-identity).
CERTIFIED = """\
policies:
  everything:
    rules:
      - allow: {sections: ["*"]}
  containers-read-only:
    read_only: true
    rules:
      - allow: {sections: [containers, ping, version]}
bindings:
  - {policy: everything, certificates: [cert-alice]}
  - {policy: containers-read-only, certificates: [cert-bob]}
"""
CERTIFICATES = ("cert-alice", "cert-bob", "cert-nobody")

# Users of the htpasswd file (bcrypt cost 4: the test is not about hashing) and the token.
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
TOKEN_NAME, TOKEN_IDENTITY = "ci", "ci-bot"
# Global source lists of the identity set-up (the gateway's peer, 127.0.0.1, is a trusted proxy
# whose X-Forwarded-For names the client).
ALLOW_SOURCES = "127.0.0.0/8,10.0.0.0/8"
DENY_SOURCES = "10.66.0.0/16"


@dataclasses.dataclass(frozen=True)
class Setup:
    policy: str | None  # None: no policy file, Tecnativa's variables (`variables`) describe it
    credentials: bool = False  # serve --htpasswd --tokens; check --auth-required
    gateway_args: tuple[str, ...] = ()  # serve only
    shared_args: tuple[str, ...] = ()  # serve and check alike
    # The policy file, the credential files and `shared_args` given as DOCKGATE_ variables (a
    # gateway configured by its container's environment, and check run in that environment).
    by_environment: bool = False
    variables: tuple[tuple[str, str], ...] = ()  # more variables, for both sides
    unix: bool = False  # the gateway listens on a unix socket too (check --source unix)
    tls: bool = False  # TLS with client certificates (CERTIFICATES; check --as certificate:CN)


SETUPS = {
    "read-only": Setup(
        READ_ONLY,
        shared_args=("--allow-origin", "http://dash.example", "--allow-host", "gw.example.com"),
    ),
    "identities": Setup(
        IDENTITIES,
        credentials=True,
        gateway_args=("--trusted-proxy", "127.0.0.1"),
        shared_args=("--allow-source", ALLOW_SOURCES, "--deny-source", DENY_SOURCES),
    ),
    "guarded": Setup(GUARDED),
    "redacted": Setup(REDACTED),
    "owned": Setup(OWNED, credentials=True),
    "environment": Setup(
        ENVIRONMENT,
        credentials=True,
        gateway_args=("--trusted-proxy", "127.0.0.1"),
        shared_args=("--allow-host", "gw.example.com", "--allow-source", "127.0.0.1,10.1.0.0/16"),
        by_environment=True,
    ),
    "unix": Setup(UNIX, unix=True),
    "warned": Setup(WARNED, credentials=True),
    "certificates": Setup(CERTIFIED, tls=True),
    "tecnativa": Setup(
        None, variables=(("CONTAINERS", "1"), ("IMAGES", "1"), ("ALLOW_START", "1"))
    ),
    "tecnativa-post": Setup(
        None, variables=(("CONTAINERS", "1"), ("POST", "1"), ("EXEC", "1"), ("EVENTS", "0"))
    ),
}

# ----- the corpus -----------------------------------------------------------------------------

JSON = "application/json"


@dataclasses.dataclass(frozen=True)
class Case:
    """One request as `dockgate check` takes it (and the gateway gets it)."""

    setup: str
    id: str
    method: str
    target: str
    host: str | None = "localhost"  # None: an HTTP/1.0 request without Host, as check sends
    origin: str | None = None
    upgrade: bool = False
    headers: tuple[str, ...] = ()
    body: bytes | None = None
    caller: str = "anonymous"  # check --as; on the wire, the Authorization header it stands for
    source: str = "127.0.0.1"  # check --source; on the wire, X-Forwarded-For unless loopback
    lookup: bool = False  # decided by a look-up in the daemon: check exits 3, no comparison

    @property
    def param_id(self) -> str:
        return f"{self.setup}:{self.id}"


VICTIM, IDLE, SMUGGLED = "dgt-victim", "dgt-idle", "dgt-smuggled"
PRIVILEGED_CREATE = json.dumps(
    {
        "Image": "busybox",
        "Cmd": ["sh", "-c", "touch /host/tmp/escaped"],
        "HostConfig": {
            "Privileged": True,
            "Binds": ["/:/host"],
            "PidMode": "host",
            "NetworkMode": "host",
        },
    }
).encode()
HIDDEN_CREATE = (
    f"POST /containers/create?name={SMUGGLED} HTTP/1.1\r\nHost: localhost\r\n"
    "Content-Type: application/json\r\nContent-Length: 33\r\n\r\n"
    '{"Image": "busybox", "Cmd": ["x"]}'
).encode()
EXEC_BODY = b'{"Cmd": ["touch", "/tmp/pwned"], "AttachStdout": true}'
SWARM_INIT = b'{"ListenAddr": "127.0.0.1:2377", "AdvertiseAddr": "127.0.0.1"}'
WEBSOCKET = ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13")
EVIL = "http://evil.example"


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def read_only_corpus() -> list[Case]:
    """tests/test_policy_e2e.py's bypass corpus (refused under the read-only "containers only"
    policy), its browser refusals and its allowed controls, as `dockgate check` can say them.
    Left out, since check's options cannot write them: the absolute and asterisk forms and the
    HTTP/2 preface (check takes a target starting with '/'), a bare LF, an HTTP/1.1 request
    without Host (check sends HTTP/1.0 then), a chunked body, and pipelined requests."""
    v = VICTIM

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("read-only", id, method, target, **kw)  # type: ignore[arg-type]

    ct_json = f"Content-Type: {JSON}"
    return [
        # -- dotted and encoded paths ------------------------------------------------------
        c("dotdot", "GET", "/containers/../secrets"),
        c("dotdot-encoded", "GET", "/containers/%2e%2e/secrets"),
        c("dotdot-encoded-upper", "GET", "/containers/%2E%2E/secrets"),
        c("dotdot-versioned", "GET", "/v1.41/containers/json/../../secrets"),
        c("dotdot-trailing", "GET", "/secrets/containers/json/.."),
        c("dot-segment", "GET", "/./secrets"),
        c("encoded-slashes", "GET", "/containers/json%2F..%2F..%2Fsecrets"),
        c("double-encoded-dots", "GET", "/containers/%252e%252e/secrets"),
        c("overlong-utf8-dot", "GET", "/containers/%C0%AE%C0%AE/secrets"),
        c("double-slash", "GET", "//secrets"),
        c("double-slash-versioned", "GET", "/v1.41//secrets"),
        c("double-slash-dotdot", "GET", "//containers/../secrets"),
        c("trailing-slash", "GET", "/containers/json/"),
        c("nul", "GET", "/containers/json%00"),
        c("encoded-newline", "GET", f"/containers/{v}%0A/json"),
        c("backslash", "GET", "/containers\\..\\secrets"),
        c("backslash-encoded", "GET", "/containers/%5C..%5Csecrets"),
        c("fragment", "GET", "/containers/json#/../../secrets"),
        # -- version tricks ----------------------------------------------------------------
        c("version-twice", "GET", "/v1.41/v1.41/secrets"),
        c("version-upper-v", "GET", "/V1.41/secrets"),
        c("version-then-secrets", "GET", "/v1.41/secrets"),
        # -- methods -----------------------------------------------------------------------
        c("method-lower", "post", "/containers/create", body=PRIVILEGED_CREATE),
        c("method-mixed", "Post", "/containers/create", body=PRIVILEGED_CREATE),
        c("get-create", "GET", "/containers/create"),
        c("get-create-with-body", "GET", "/containers/create", body=PRIVILEGED_CREATE),
        c("method-override-header", "GET", "/containers/create",
          headers=("X-HTTP-Method-Override: POST",), body=PRIVILEGED_CREATE),
        c("head-kill", "HEAD", f"/containers/{v}/kill"),
        c("head-dotdot", "HEAD", "/containers/../_ping"),
        c("head-ping-evil-origin", "HEAD", "/_ping", origin=EVIL),
        # -- operations that change something ----------------------------------------------
        c("create-privileged", "POST", f"/containers/create?name={SMUGGLED}",
          body=PRIVILEGED_CREATE),
        c("create-versioned", "POST", "/v1.41/containers/create", body=PRIVILEGED_CREATE),
        c("create-encoded-letters", "POST", "/%63ontainers/%63reate", body=PRIVILEGED_CREATE),
        c("create-expect-continue", "POST", "/containers/create", headers=(
            ct_json, "Expect: 100-continue", f"Content-Length: {len(PRIVILEGED_CREATE)}")),
        c("delete-force", "DELETE", f"/containers/{v}?force=1&v=1"),
        c("exec-create", "POST", f"/containers/{v}/exec", body=EXEC_BODY),
        c("start", "POST", f"/containers/{IDLE}/start"),
        c("kill", "POST", f"/containers/{v}/kill?signal=KILL"),
        c("rename", "POST", f"/containers/{v}/rename?name={SMUGGLED}"),
        c("prune", "POST", "/containers/prune"),
        c("commit", "POST", f"/commit?container={v}&repo=dgt-commit"),
        c("put-archive", "PUT", f"/containers/{v}/archive?path=/tmp",
          headers=("Content-Type: application/x-tar",), body=_tar("pwned", b"written\n")),
        c("attach-upgrade", "POST", f"/containers/{v}/attach?stream=1&stdin=1&stdout=1",
          upgrade=True),
        c("attach-websocket", "GET", f"/containers/{v}/attach/ws?stream=1&stdin=1",
          headers=("Connection: Upgrade", "Upgrade: websocket", *WEBSOCKET)),
        c("volume-create", "POST", "/volumes/create", body=b'{"Name": "dgt-volume"}'),
        c("swarm-init", "POST", "/swarm/init", body=SWARM_INIT),
        # -- reads outside the allowed sections --------------------------------------------
        c("secrets", "GET", "/secrets"),
        c("secrets-encoded-letter", "GET", "/%73ecrets"),
        c("secrets-query-looks-allowed", "GET", "/secrets?/containers/json"),
        c("secrets-semicolon", "GET", "/secrets;/containers/json"),
        c("images", "GET", "/images/json"),
        c("info", "GET", "/info"),
        c("events", "GET", "/events"),
        c("debug-vars", "GET", "/debug/vars"),
        c("options-containers-json", "OPTIONS", "/containers/json"),
        c("options-containers-create", "OPTIONS", "/containers/create"),
        # -- protocol switches on an allowed read ------------------------------------------
        c("h2c-upgrade", "GET", "/containers/json", headers=(
            "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")),
        c("websocket-upgrade", "GET", "/containers/json",
          headers=("Connection: upgrade", "Upgrade: websocket", *WEBSOCKET)),
        c("tcp-upgrade-on-logs", "GET", f"/containers/{v}/logs?stdout=1&follow=1",
          headers=("Connection: keep-alive", "Connection: Upgrade", "Upgrade: tcp")),
        c("upgrade-on-ping", "GET", "/_ping", upgrade=True),
        # -- framing and smuggling ---------------------------------------------------------
        c("cl-and-te", "GET", "/containers/json",
          headers=("Content-Length: 4", "Transfer-Encoding: chunked")),
        c("te-and-cl", "POST", "/containers/json",
          headers=("Transfer-Encoding: chunked", f"Content-Length: {5 + len(HIDDEN_CREATE)}")),
        c("two-content-lengths", "GET", "/containers/json",
          headers=("Content-Length: 0", f"Content-Length: {len(HIDDEN_CREATE)}")),
        c("two-content-lengths-case", "GET", "/containers/json",
          headers=("content-length: 0", "CONTENT-LENGTH: 0")),
        c("two-transfer-encodings", "GET", "/containers/json",
          headers=("Transfer-Encoding: chunked", "Transfer-Encoding: chunked")),
        c("te-chunked-identity", "GET", "/containers/json",
          headers=("Transfer-Encoding: chunked, identity",)),
        c("te-in-http10", "GET", "/containers/json", host=None,
          headers=("Transfer-Encoding: chunked",)),
        c("obs-fold-te", "GET", "/containers/json",
          headers=("X-Pad: a", " Transfer-Encoding: chunked")),
        c("space-before-colon", "GET", "/containers/json",
          headers=("Transfer-Encoding : chunked",)),
        c("two-hosts", "GET", "/containers/json", headers=("Host: evil",)),
        c("two-origins", "GET", "/_ping", headers=("Origin: http://a", "Origin: http://b")),
        c("hidden-in-denied-body", "POST", f"/containers/{IDLE}/start", body=HIDDEN_CREATE),
        # -- browsers (Origin) and DNS rebinding (Host) ------------------------------------
        c("evil-origin-ping", "GET", "/_ping", origin=EVIL),
        c("evil-origin-list", "GET", "/containers/json", origin=EVIL),
        c("evil-origin-create", "POST", "/containers/create", origin=EVIL,
          headers=("Content-Type: text/plain",), body=PRIVILEGED_CREATE),
        c("null-origin", "GET", "/_ping", origin="null"),
        c("rebinding-host", "GET", "/_ping", host="evil.example.com"),
        c("rebinding-host-with-port", "GET", "/containers/json", host="evil.example.com:2375"),
        c("rebinding-host-ip-lookalike", "GET", "/_ping", host="127.0.0.1.evil.example"),
        # -- --allow-origin, --allow-host, and the gateway's own origin ---------------------
        c("allowed-origin", "GET", "/containers/json", origin="http://dash.example"),
        c("allowed-origin-other-port", "GET", "/_ping", origin="http://dash.example:8080"),
        c("allowed-origin-https", "GET", "/_ping", origin="https://dash.example"),
        c("allowed-origin-read-only-create", "POST", "/containers/create",
          origin="http://dash.example", body=PRIVILEGED_CREATE),
        c("allowed-host", "GET", "/_ping", host="gw.example.com"),
        c("allowed-host-port", "GET", "/containers/json", host="GW.example.com:8080"),
        c("allowed-host-trailing-dot", "GET", "/_ping", host="gw.example.com."),
        c("other-host", "GET", "/_ping", host="other.example.com"),
        c("own-origin", "GET", "/_ping", host="localhost:2375", origin="http://localhost:2375"),
        c("own-origin-default-port", "GET", "/_ping", host="localhost:80",
          origin="http://localhost"),
        c("own-origin-https", "GET", "/_ping", host="localhost:2375",
          origin="https://localhost:2375"),
        c("own-origin-allowed-host", "GET", "/_ping", host="gw.example.com",
          origin="http://gw.example.com"),
        c("own-origin-other-port", "GET", "/_ping", host="localhost:2375",
          origin="http://localhost:2376"),
        c("origin-without-host", "GET", "/_ping", host=None, origin="http://localhost"),
        # -- bodies on reads (their handlers read none: read and dropped) -----------------
        c("list-json-body", "GET", "/containers/json", body=b'{"all": true}'),
        c("list-text-body", "GET", "/containers/json", headers=("Content-Type: text/plain",),
          body=b"x"),
        c("list-form-body", "GET", "/containers/json",
          headers=("Content-Type: application/x-www-form-urlencoded",), body=b"all=1"),
        c("list-large-body", "GET", "/containers/json",
          body=b'{"x": "' + b"x" * (64 * 1024) + b'"}'),
        c("list-expect-continue-body", "GET", "/containers/json",
          headers=("Expect: 100-continue",), body=b"{}"),
        # -- credentials where the gateway asks for none ------------------------------------
        c("stray-authorization", "GET", "/containers/json",
          headers=("Authorization: Basic YWxpY2U6YWxpY2UtcHc=",)),
        # -- allowed -----------------------------------------------------------------------
        c("allowed-containers-json", "GET", "/containers/json"),
        c("allowed-containers-json-versioned", "GET", "/v1.41/containers/json"),
        c("allowed-containers-json-http10", "GET", "/containers/json", host=None),
        c("allowed-head-ping", "HEAD", "/_ping"),
        c("allowed-ping", "GET", "/_ping"),
        c("allowed-version", "GET", "/version"),
        c("allowed-inspect", "GET", f"/containers/{v}/json"),
        c("allowed-encoded-letters", "GET", "/containers/%6Aso%6E"),
        c("allowed-dotdot-in-query", "GET", "/containers/json?x=/../../secrets"),
        c("allowed-head-archive", "HEAD", f"/containers/{v}/archive?path=/etc"),
        c("allowed-docker-host", "GET", "/_ping", host="docker"),
        c("allowed-loopback-host", "GET", "/_ping", host="127.0.0.1:2375"),
    ]  # fmt: skip


def identity_corpus() -> list[Case]:
    """Callers: htpasswd users bound to different policies, a bearer token, an unbound user,
    anonymous callers (bound from the loopback only), source lists, and client addresses
    reported by a trusted proxy."""

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("identities", id, method, target, **kw)  # type: ignore[arg-type]

    token = f"token:{TOKEN_NAME}:{TOKEN_IDENTITY}"
    return [
        c("alice-list", "GET", "/containers/json", caller="user:alice"),
        c("alice-kill", "POST", f"/containers/{VICTIM}/kill", caller="user:alice"),
        c("alice-images", "GET", "/images/json", caller="user:alice"),
        c("bob-list", "GET", "/containers/json", caller="user:bob"),
        c("bob-kill-read-only", "POST", f"/containers/{VICTIM}/kill", caller="user:bob"),
        c("bob-images-no-rule", "GET", "/images/json", caller="user:bob"),
        c("token-list", "GET", "/containers/json", caller=token),
        c("token-delete-read-only", "DELETE", f"/containers/{VICTIM}", caller=token),
        c("carol-unbound", "GET", "/_ping", caller="user:carol"),
        c("anonymous-loopback-ping", "GET", "/_ping"),
        c("anonymous-loopback-version", "GET", "/version"),
        c("anonymous-loopback-list-no-rule", "GET", "/containers/json"),
        c("anonymous-elsewhere-401", "GET", "/_ping", source="10.1.2.3"),
        c("alice-via-proxy", "GET", "/containers/json", caller="user:alice", source="10.1.2.3"),
        c("alice-denied-source", "GET", "/_ping", caller="user:alice", source="10.66.1.1"),
        c("alice-not-allowed-source", "GET", "/_ping", caller="user:alice",
          source="192.168.7.7"),
        c("anonymous-denied-source", "GET", "/_ping", source="10.66.1.1"),
        c("bob-via-proxy-kill", "POST", f"/containers/{VICTIM}/kill", caller="user:bob",
          source="10.1.2.3"),
        c("carol-via-proxy-unbound", "GET", "/_ping", caller="user:carol", source="10.1.2.3"),
        # DNS rebinding: a dotted Host is refused to anonymous callers only.
        c("alice-dotted-host", "GET", "/containers/json", caller="user:alice",
          host="gw.example.com"),
        c("token-dotted-host", "GET", "/containers/json", caller=token, host="gw.example.com"),
        c("anonymous-dotted-host", "GET", "/_ping", host="gw.example.com"),
        c("alice-foreign-origin", "GET", "/containers/json", caller="user:alice", origin=EVIL),
        c("alice-upgrade-on-list", "GET", "/containers/json", caller="user:alice",
          upgrade=True),
        c("alice-http10", "GET", "/containers/json", caller="user:alice", host=None),
        c("alice-attach-upgrade", "POST", f"/containers/{VICTIM}/attach?stream=1&stdin=1",
          caller="user:alice", upgrade=True),
        c("alice-rebinding-origin", "GET", "/_ping", caller="user:alice", host="gw.example.com",
          origin="http://gw.example.com"),
        # Credentials check cannot stand for with --as: wrong ones, and unknown schemes. Last
        # in this set-up: the gateway counts their failures against 127.0.0.1 (its throttle).
        c("wrong-password", "GET", "/_ping",
          headers=("Authorization: Basic " + base64.b64encode(b"alice:nope").decode(),)),
        c("unknown-user", "GET", "/_ping",
          headers=("Authorization: Basic " + base64.b64encode(b"mallory:x").decode(),)),
        c("unknown-token", "GET", "/_ping", headers=("Authorization: Bearer dgt_nope",)),
        c("unknown-scheme", "GET", "/_ping", headers=("Authorization: Negotiate abc",)),
        c("empty-authorization", "GET", "/_ping", headers=("Authorization: ",)),
    ]  # fmt: skip


def _body(value: object) -> bytes:
    return json.dumps(value).encode()


def guarded_corpus() -> list[Case]:
    """Bodies and queries under the guardrails' defaults: what they refuse, what they let
    through, and the shape a body may have."""

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("guarded", id, method, target, **kw)  # type: ignore[arg-type]

    def create(host_config: dict[str, object]) -> bytes:
        return _body({"Image": "busybox", "HostConfig": host_config})

    big = b'{"Image": "busybox", "Env": ["X=' + b"x" * CHECKED_BODY_LIMIT + b'"]}'
    form = "Content-Type: application/x-www-form-urlencoded"
    return [
        c("create-allowed", "POST", "/containers/create", body=_body({"Image": "busybox"})),
        c("create-allowed-versioned", "POST", "/v1.41/containers/create?name=web",
          body=create({"Memory": 1 << 24, "CapDrop": ["ALL"]})),
        c("create-privileged", "POST", "/containers/create", body=create({"Privileged": True})),
        c("create-bind-root", "POST", "/containers/create", body=create({"Binds": ["/:/host"]})),
        c("create-bind-docker-sock", "POST", "/containers/create",
          body=create({"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]})),
        c("create-mount-host-path", "POST", "/containers/create",
          body=create({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x"}]})),
        c("create-cap-add", "POST", "/containers/create", body=create({"CapAdd": ["SYS_ADMIN"]})),
        c("create-devices", "POST", "/containers/create",
          body=create({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda"}]})),
        c("create-network-host", "POST", "/containers/create",
          body=create({"NetworkMode": "host"})),
        c("create-pid-host", "POST", "/containers/create", body=create({"PidMode": "host"})),
        c("create-key-case", "POST", "/containers/create",
          body=b'{"Image": "busybox", "hostconfig": {"PRIVILEGED": true}}'),
        c("create-duplicate-key", "POST", "/containers/create",
          body=b'{"Image": "busybox", "HostConfig": {"Privileged": false, "Privileged": true}}'),
        c("create-not-json", "POST", "/containers/create", body=b"{not json"),
        c("create-form-body", "POST", "/containers/create", headers=(form,),
          body=_body({"Image": "busybox"})),
        c("create-too-large", "POST", "/containers/create", body=big),
        c("create-too-many-volumes", "POST", "/containers/create",
          body=create({"Binds": [f"v{i}:/v{i}" for i in range(65)]})),
        c("exec-privileged", "POST", f"/containers/{VICTIM}/exec",
          body=_body({"Cmd": ["sh"], "Privileged": True})),
        c("exec-allowed", "POST", f"/containers/{VICTIM}/exec", body=_body({"Cmd": ["sh"]})),
        c("update-allowed", "POST", f"/containers/{VICTIM}/update",
          body=_body({"Memory": 1 << 24})),
        c("volume-create-allowed", "POST", "/volumes/create", body=_body({"Name": "v1"})),
        # ContainerStart's handler reads no body: one that would have mattered is refused.
        c("start-with-binds", "POST", f"/containers/{IDLE}/start",
          body=_body({"Binds": ["/:/host"]})),
        c("start-with-empty-body", "POST", f"/containers/{IDLE}/start", body=b"{}"),
        c("start-without-body", "POST", f"/containers/{IDLE}/start"),
        # Query-checked: ImageBuild's build containers.
        c("build-network-host", "POST", "/build?networkmode=host",
          headers=("Content-Type: application/x-tar",), body=_tar("Dockerfile", b"FROM x\n")),
        c("build-allowed", "POST", "/build?t=app",
          headers=("Content-Type: application/x-tar",), body=_tar("Dockerfile", b"FROM x\n")),
        c("build-network-host-no-body", "POST", "/build?networkmode=host"),
        # The body's shape, in every policy (body/content.py), and its order with the rest.
        c("create-text-body", "POST", "/containers/create", headers=("Content-Type: text/plain",),
          body=_body({"Image": "busybox"})),
        c("create-json-charset", "POST", "/containers/create",
          headers=("Content-Type: Application/JSON; charset=utf-8",),
          body=_body({"Image": "busybox"})),
        c("create-two-content-types", "POST", "/containers/create",
          headers=(f"Content-Type: {JSON}", f"Content-Type: {JSON}"),
          body=_body({"Image": "busybox"})),
        c("create-non-ascii-content-type", "POST", "/containers/create",
          headers=("Content-Type: appl\xe9cation/json",),
          body=_body({"Image": "busybox"})),
        c("create-too-large-form", "POST", "/containers/create", headers=(form,), body=big),
        c("create-expect-continue", "POST", "/containers/create",
          headers=("Expect: 100-continue",), body=create({"Privileged": True})),
        c("create-empty-body", "POST", "/containers/create", body=b""),
        c("kill-json-options", "POST", f"/containers/{VICTIM}/kill", body=b'{"signal": "KILL"}'),
        c("kill-text-body", "POST", f"/containers/{VICTIM}/kill",
          headers=("Content-Type: text/plain",), body=b"KILL"),
        c("kill-large-body", "POST", f"/containers/{VICTIM}/kill",
          body=b'{"x": "' + b"x" * (64 * 1024) + b'"}'),
        c("start-null-body", "POST", f"/containers/{IDLE}/start", body=b" null "),
        c("start-text-body", "POST", f"/containers/{IDLE}/start",
          headers=("Content-Type: text/plain",), body=b"{}"),
        c("build-form-body", "POST", "/build?networkmode=host", headers=(form,),
          body=b"networkmode=host"),
        c("build-multipart-body", "POST", "/build",
          headers=("Content-Type: multipart/form-data; boundary=x",),
          body=b"--x\r\nContent-Disposition: form-data; name=networkmode\r\n\r\nhost\r\n--x--"),
        c("build-network-host-text-body", "POST", "/build?networkmode=host",
          headers=("Content-Type: text/plain",), body=b"not a tar"),
        c("image-import-url", "POST", "/images/create?fromSrc=http://example.com/x.tar"),
        c("push-auth-body", "POST", "/images/busybox/push", body=b"{}"),
        c("unknown-allowed", "GET", "/nothing/here"),
        c("unknown-form-body", "POST", "/nothing/here",
          headers=("Content-Type: application/x-www-form-urlencoded",), body=b"a=b"),
        c("session-upgrade", "POST", "/session",
          headers=("Connection: Upgrade", "Upgrade: h2c")),
        c("image-pull-allowed", "POST", "/images/create?fromImage=busybox&tag=latest"),
    ]  # fmt: skip


def redacted_corpus() -> list[Case]:
    """A policy that redacts: the filters and queries that would tell hidden values."""

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("redacted", id, method, target, **kw)  # type: ignore[arg-type]

    label = '{"label":["secret=1"]}'
    quoted = "%7B%22label%22%3A%5B%22secret%3D1%22%5D%7D"
    volume = "%7B%22volume%22%3A%5B%22data%22%5D%7D"
    return [
        c("list-allowed", "GET", "/containers/json"),
        c("list-status-filter-allowed", "GET",
          "/containers/json?filters=%7B%22status%22%3A%5B%22running%22%5D%7D"),
        c("list-label-filter", "GET", f"/containers/json?filters={quoted}"),
        c("list-label-filter-unquoted", "GET", f"/containers/json?filters={label}"),
        # Which comes first: the body's shape (every policy) or the redaction's query check.
        c("list-label-filter-text-body", "GET", f"/containers/json?filters={quoted}",
          headers=("Content-Type: text/plain",), body=b"x"),
        c("list-label-filter-json-body", "GET", f"/containers/json?filters={quoted}",
          body=b'{"all": true}'),
        c("images-label-filter", "GET", f"/images/json?filters={quoted}"),
        c("list-volume-filter", "GET", f"/containers/json?filters={volume}"),
        c("top-ps-args-e", "GET", f"/containers/{VICTIM}/top?ps_args=e"),
        c("top-allowed", "GET", f"/containers/{VICTIM}/top"),
        c("logs-details", "GET", f"/containers/{VICTIM}/logs?stdout=1&details=1"),
        c("inspect-allowed", "GET", f"/containers/{VICTIM}/json"),
        c("kill-read-only", "POST", f"/containers/{VICTIM}/kill"),
    ]  # fmt: skip


def owned_corpus() -> list[Case]:
    """Ownership mode: refusals that need no look-up, and requests decided by one."""

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("owned", id, method, target, **kw)  # type: ignore[arg-type]

    alice = "user:alice"
    tar = ("Content-Type: application/x-tar",)
    dockerfile = _tar("Dockerfile", b"FROM x\n")
    return [
        c("anonymous-list", "GET", "/containers/json"),
        c("anonymous-create", "POST", "/containers/create", body=_body({"Image": "busybox"})),
        c("anonymous-inspect", "GET", f"/containers/{VICTIM}/json"),
        c("anonymous-ping", "GET", "/_ping"),
        c("anonymous-create-form-body", "POST", "/containers/create",
          headers=("Content-Type: application/x-www-form-urlencoded",), body=b"a=b"),
        c("anonymous-list-json-body", "GET", "/containers/json", body=b"{}"),
        c("anonymous-images", "GET", "/images/json"),
        c("buildkit", "POST", "/build?version=2", caller=alice, headers=tar, body=dockerfile),
        c("buildkit-no-body", "POST", "/build?version=2", caller=alice),
        c("container-prune-unavailable", "POST", "/containers/prune", caller=alice),
        c("build-prune-unavailable", "POST", "/build/prune", caller=alice),
        c("data-usage-unavailable", "GET", "/system/df", caller=alice),
        c("hex-name", "POST", "/containers/create?name=" + "a" * 64, caller=alice,
          body=_body({"Image": "busybox"})),
        c("list-narrowed", "GET", "/containers/json", caller=alice),
        c("volumes-narrowed", "GET", "/volumes", caller=alice),
        c("networks-narrowed", "GET", "/networks?filters=%7B%22driver%22%3A%5B%22bridge%22%5D%7D",
          caller=alice),
        c("list-owner-label-filter", "GET",
          "/containers/json?filters=%7B%22label%22%3A%5B%22io.dockgate.owner%3Duser%3Abob%22%5D%7D",
          caller=alice),
        c("rename-hex-name", "POST", f"/containers/{VICTIM}/rename?name=" + "b" * 64,
          caller=alice),
        c("import-changes-newline", "POST",
          "/images/create?fromSrc=-&changes=ENV%20a%3Db%0ARUN%20x", caller=alice,
          headers=tar, body=dockerfile),
        c("import-allowed", "POST", "/images/create?fromSrc=-", caller=alice, headers=tar,
          body=dockerfile),
        c("commit-lookup", "POST", f"/commit?container={VICTIM}", caller=alice, lookup=True),
        c("ping", "GET", "/_ping", caller=alice),
        c("list-bad-filters", "GET", "/containers/json?filters=%7Bnot", caller=alice),
        c("buildkit-form-body", "POST", "/build?version=2", caller=alice,
          headers=("Content-Type: application/x-www-form-urlencoded",), body=b"a=b"),
        c("create-too-large", "POST", "/containers/create", caller=alice,
          body=b'{"Image": "busybox", "Env": ["X=' + b"x" * CHECKED_BODY_LIMIT + b'"]}'),
        c("create-log-driver-none", "POST", "/containers/create", caller=alice,
          body=_body({"Image": "busybox", "HostConfig": {"LogConfig": {"Type": "none"}}})),
        c("create-log-driver-none-lower-keys", "POST", "/containers/create", caller=alice,
          body=b'{"Image": "busybox", "hostconfig": {"logconfig": {"type": "none"}}}'),
        c("create-privileged", "POST", "/containers/create", caller=alice,
          body=_body({"Image": "busybox", "HostConfig": {"Privileged": True}})),
        c("foreign-owner-label", "POST", "/volumes/create", caller=alice,
          body=_body({"Name": "v", "Labels": {"io.dockgate.owner": "user:bob"}})),
        c("build-classic", "POST", "/build?t=app", caller=alice, headers=tar, body=dockerfile),
        # Decided by the daemon's answer to a look-up: check says so.
        c("inspect-lookup", "GET", f"/containers/{VICTIM}/json", caller=alice, lookup=True),
        c("start-lookup", "POST", f"/containers/{VICTIM}/start", caller=alice, lookup=True),
        c("create-image-lookup", "POST", "/containers/create", caller=alice,
          body=_body({"Image": "busybox"}), lookup=True),
        c("create-log-driver-local-lookup", "POST", "/containers/create", caller=alice,
          body=_body({"Image": "busybox", "HostConfig": {"LogConfig": {"Type": "local"}}}),
          lookup=True),
        c("create-log-driver-none-volume-lookup", "POST", "/containers/create", caller=alice,
          body=_body({"Image": "busybox", "HostConfig": {
              "LogConfig": {"Type": "none"}, "Binds": ["data:/data"]}}), lookup=True),
        c("list-before-lookup", "GET", f"/containers/json?before={VICTIM}", caller=alice,
          lookup=True),
    ]  # fmt: skip


def warned_corpus() -> list[Case]:
    """Warn mode: the policy's refusals (rules, read_only, redaction's filters, guardrails,
    ownership) forwarded; what is not the policy's still refused; a binding that enforces."""

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("warned", id, method, target, **kw)  # type: ignore[arg-type]

    alice, bob, carol = "user:alice", "user:bob", "user:carol"
    quoted = "%7B%22label%22%3A%5B%22secret%3D1%22%5D%7D"
    form = ("Content-Type: application/x-www-form-urlencoded",)
    privileged = _body({"Image": "busybox", "HostConfig": {"Privileged": True}})
    return [
        c("read-only-kill", "POST", f"/containers/{VICTIM}/kill", caller=alice),
        c("read-only-kill-enforced", "POST", f"/containers/{VICTIM}/kill", caller=carol),
        c("deny-rule-logs", "GET", f"/containers/{VICTIM}/logs?stdout=1", caller=alice),
        c("no-rule-secrets", "GET", "/secrets", caller=alice),
        c("no-rule-secrets-enforced", "GET", "/secrets", caller=carol),
        c("unknown-route", "GET", "/nothing/here", caller=alice),
        c("label-filter", "GET", f"/containers/json?filters={quoted}", caller=alice),
        c("top-ps-args-e", "GET", f"/containers/{VICTIM}/top?ps_args=e", caller=alice),
        c("form-body", "POST", "/containers/create", caller=bob, headers=form, body=b"a=b"),
        c("cross-site", "GET", "/_ping", caller=alice, origin=EVIL),
        c("privileged-create", "POST", "/containers/create", caller=bob, body=privileged),
        c("privileged-create-read-only", "POST", "/containers/create", caller=alice,
          body=privileged),
        c("create-two-values", "POST", "/containers/create", caller=bob,
          body=b'{"Image": "busybox"} {"HostConfig": {"Privileged": true}}'),
        c("create-too-large", "POST", "/containers/create", caller=bob,
          body=b'{"Image": "busybox", "Env": ["X=' + b"x" * CHECKED_BODY_LIMIT + b'"]}'),
        c("swarm-init", "POST", "/swarm/init", caller=bob, body=SWARM_INIT),
        c("anonymous-stop", "POST", f"/containers/{VICTIM}/stop"),
        c("anonymous-list", "GET", "/containers/json"),
        c("anonymous-create", "POST", "/containers/create", body=_body({"Image": "busybox"})),
        c("anonymous-prune", "POST", "/containers/prune"),
    ]  # fmt: skip


def environment_corpus() -> list[Case]:
    """A gateway configured by DOCKGATE_ variables alone (a container's environment), and check
    run in the same environment without options: the same policy, credentials and lists."""

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("environment", id, method, target, **kw)  # type: ignore[arg-type]

    return [
        c("alice-list", "GET", "/containers/json", caller="user:alice"),
        c("alice-secrets", "GET", "/secrets", caller="user:alice"),
        c("anonymous-ping", "GET", "/_ping"),
        c("anonymous-list-no-rule", "GET", "/containers/json"),
        c("anonymous-allowed-host", "GET", "/_ping", host="gw.example.com"),
        c("anonymous-other-host", "GET", "/_ping", host="other.example.com"),
        c("alice-allowed-source", "GET", "/_ping", caller="user:alice", source="10.1.2.3"),
        c("alice-other-source", "GET", "/_ping", caller="user:alice", source="10.2.2.3"),
        c("token-unbound", "GET", "/_ping", caller=f"token:{TOKEN_NAME}:{TOKEN_IDENTITY}"),
    ]


def tecnativa_corpus() -> list[Case]:
    """No policy file: Tecnativa's variables (CONTAINERS=1, POST=1, ALLOW_START=1...)."""
    v = VICTIM
    read = [
        Case("tecnativa", id, method, target)
        for id, method, target in [
            ("list", "GET", "/containers/json"),
            ("inspect", "GET", f"/containers/{v}/json"),
            ("images", "GET", "/images/json"),
            ("events-default", "GET", "/events"),
            ("ping", "GET", "/_ping"),
            ("head-ping", "HEAD", "/_ping"),
            ("version", "GET", "/version"),
            ("info-closed", "GET", "/info"),
            ("secrets-closed", "GET", "/secrets"),
            ("create-needs-post", "POST", "/containers/create"),
            ("start-allowed", "POST", f"/containers/{v}/start"),
            ("kill-needs-post", "POST", f"/containers/{v}/kill"),
            ("delete-needs-delete", "DELETE", f"/containers/{v}"),
            ("image-delete-needs-delete", "DELETE", "/images/busybox"),
            ("unknown", "GET", "/nothing/here"),
            ("dotdot", "GET", "/containers/../secrets"),
        ]
    ]
    post = [
        Case("tecnativa-post", id, method, target, body=body)
        for id, method, target, body in [
            ("create", "POST", "/containers/create", _body({"Image": "busybox"})),
            ("create-privileged", "POST", "/containers/create",
             _body({"Image": "busybox", "HostConfig": {"Privileged": True}})),
            ("kill", "POST", f"/containers/{v}/kill", None),
            ("exec-create", "POST", f"/containers/{v}/exec", _body({"Cmd": ["sh"]})),
            ("exec-privileged", "POST", f"/containers/{v}/exec",
             _body({"Cmd": ["sh"], "Privileged": True})),
            ("events-closed", "GET", "/events", None),
            ("images-closed", "GET", "/images/json", None),
            ("build-closed", "POST", "/build", None),
        ]
    ]  # fmt: skip
    return read + post


def unix_corpus() -> list[Case]:
    """A gateway on a unix socket and on TCP: bindings and source lists by `unix`."""

    def c(id: str, method: str, target: str, **kw: object) -> Case:
        return Case("unix", id, method, target, **kw)  # type: ignore[arg-type]

    return [
        c("unix-kill", "POST", f"/containers/{VICTIM}/kill", source="unix"),
        c("unix-secrets", "GET", "/secrets", source="unix"),
        c("unix-cli-host", "GET", "/_ping", source="unix", host="api.moby.localhost"),
        c("unix-dotted-host", "GET", "/_ping", source="unix", host="gw.example.com"),
        c("unix-foreign-origin", "GET", "/_ping", source="unix", origin=EVIL),
        c("unix-http10", "GET", "/containers/json", source="unix", host=None),
        c("loopback-kill-read-only", "POST", f"/containers/{VICTIM}/kill"),
        c("loopback-list", "GET", "/containers/json"),
    ]


def certificate_corpus() -> list[Case]:
    """TLS listeners that require a client certificate: callers named by their CN."""

    def c(id: str, method: str, target: str, cn: str, **kw: object) -> Case:
        return Case("certificates", id, method, target, caller=f"certificate:{cn}", **kw)  # type: ignore[arg-type]

    return [
        c("alice-list", "GET", "/containers/json", "cert-alice"),
        c("alice-kill", "POST", f"/containers/{VICTIM}/kill", "cert-alice"),
        c("bob-list", "GET", "/containers/json", "cert-bob"),
        c("bob-kill-read-only", "POST", f"/containers/{VICTIM}/kill", "cert-bob"),
        c("nobody-unbound", "GET", "/_ping", "cert-nobody"),
        c("alice-dotted-host", "GET", "/_ping", "cert-alice", host="gw.example.com"),
        c("alice-foreign-origin", "GET", "/_ping", "cert-alice", origin=EVIL),
        # The gateway's own origin is https:// on a TLS listener (policy/browser.py).
        c("alice-own-origin", "GET", "/_ping", "cert-alice", host="localhost:2375",
          origin="https://localhost:2375"),
        c("alice-own-origin-http", "GET", "/_ping", "cert-alice", host="localhost:2375",
          origin="http://localhost:2375"),
        c("alice-own-origin-default-port", "GET", "/_ping", "cert-alice", host="localhost",
          origin="https://localhost:443"),
    ]  # fmt: skip


CORPUS = [
    *read_only_corpus(),
    *identity_corpus(),
    *guarded_corpus(),
    *redacted_corpus(),
    *owned_corpus(),
    *environment_corpus(),
    *unix_corpus(),
    *warned_corpus(),
    *certificate_corpus(),
    *tecnativa_corpus(),
]
assert len({case.param_id for case in CORPUS}) == len(CORPUS), "corpus ids must be unique"

# ----- the two sides --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int  # the gateway's answer (200 from the daemon for an allow)
    message: str | None  # the gateway's JSON `message` (None for HEAD, which has no body)

    def __str__(self) -> str:
        return "allow" if self.allowed else f"deny, {self.status}: {self.message}"


class Deployment:
    """The files of one set-up, and its gateway once started."""

    def __init__(
        self, name: str, setup: Setup, directory: pathlib.Path, upstream: FakeUpstream
    ) -> None:
        self.name = name
        self.upstream = upstream
        self.setup = setup
        self.policy: pathlib.Path | None = None
        if setup.policy is not None:
            self.policy = directory / "policy.yaml"
            self.policy.write_text(setup.policy)
        args = [] if setup.by_environment else list(setup.shared_args)
        self.variables = dict(setup.variables)  # for both sides
        if setup.by_environment:
            self.variables["DOCKGATE_POLICY"] = str(self.policy)
            shared = iter(setup.shared_args)
            for option, value in zip(shared, shared, strict=True):
                self.variables["DOCKGATE_" + option[2:].upper().replace("-", "_")] = value
        if setup.credentials:
            htpasswd = directory / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                    for user, pw in PASSWORDS.items()
                )
            )
            tokens = directory / "tokens"
            created = run_dockgate(
                "token", "create", "--name", TOKEN_NAME, "--identity", TOKEN_IDENTITY,
                "--file", str(tokens),
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            self.token = created.stdout.strip().splitlines()[-1]
            for path in (htpasswd, tokens):
                path.chmod(0o600)
            if setup.by_environment:
                self.variables["DOCKGATE_HTPASSWD"] = str(htpasswd)
                self.variables["DOCKGATE_TOKENS"] = str(tokens)
            else:
                args += ["--htpasswd", str(htpasswd), "--tokens", str(tokens)]
        self.client_tls: dict[str, ssl.SSLContext] = {}
        if setup.tls:
            args += self._pki(directory)
        self.socket: pathlib.Path | None = None
        if setup.unix:
            self.socket = directory / "gw.sock"
            args += ["--listen", f"unix://{self.socket}"]
        self.gateway = Gateway(
            upstream.url,
            *args,
            *setup.gateway_args,
            policy=None if setup.by_environment else self.policy,
            env={**os.environ, **self.variables},
        )

    def _pki(self, directory: pathlib.Path) -> list[str]:
        """A CA, the gateway's certificate and one client context per CN: serve's options."""
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        cert, key, client_ca = (directory / name for name in ("cert.pem", "key.pem", "ca.pem"))
        cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        key.write_bytes(server.private_key_pem.bytes())
        client_ca.write_bytes(ca.cert_pem.bytes())
        for cn in CERTIFICATES:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            ca.issue_cert(f"{cn}.clients.test", common_name=cn).configure_cert(context)
            self.client_tls[cn] = context
        return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(client_ca)]

    def check_args(self, case: Case) -> list[str]:
        args = ["check"]
        if not self.setup.by_environment:
            if self.policy is not None:
                args += ["--policy", str(self.policy)]
            args += self.setup.shared_args
            if self.setup.credentials:
                args.append("--auth-required")
            if self.setup.tls:
                args.append("--tls")
        args += ["--as", case.caller, "--source", case.source]
        if case.host is not None:
            args += ["--host", case.host]
        if case.origin is not None:
            args += ["--origin", case.origin]
        if case.upgrade:
            args.append("--upgrade")
        for header in case.headers:
            args += ["--header", header]
        return args

    def authorization(self, caller: str) -> str | None:
        kind, _, name = caller.partition(":")
        if kind == "user":
            pair = f"{name}:{PASSWORDS[name]}".encode()
            return "Authorization: Basic " + base64.b64encode(pair).decode()
        if kind == "token":
            return f"Authorization: Bearer {self.token}"
        if kind == "certificate":
            return None  # the TLS handshake says it
        assert caller == "anonymous", caller
        return None

    def wire_bytes(self, case: Case) -> bytes:
        """The bytes `dockgate check` parses, with what only the wire carries added."""
        extra = []
        authorization = self.authorization(case.caller)
        if authorization is not None:
            extra.append(authorization)
        if case.source not in ("127.0.0.1", "unix"):
            extra.append(f"X-Forwarded-For: {case.source}")
        request = CheckRequest(
            method=case.method,
            target=case.target,
            caller=ANONYMOUS_IDENTITY,
            source=case.source,
            host=case.host,
            origin=case.origin,
            upgrade=case.upgrade,
            headers=(*extra, *case.headers),
            body=case.body,
        )
        return request_bytes(request)


def daemon_answers(ex: Exchange) -> None:
    """The fake daemon: 200 to anything (a list for the lists a held answer is read as)."""
    ex.read_body()
    if ex.path.endswith("/_ping"):
        ex.respond(200, b"OK", content_type="text/plain; charset=utf-8")
    elif ex.path.endswith(("/containers/json", "/images/json")):
        ex.respond_json([])
    else:
        ex.respond_json({})


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.handler = daemon_answers
        yield fake
    assert not fake.errors, "fake daemon errors:\n" + "\n".join(fake.errors)


@pytest.fixture(scope="module")
def deployments(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Deployment]]:
    """Each set-up's gateway, started on first use and stopped at the module's end."""
    with contextlib.ExitStack() as stack:

        class Lazy(dict[str, Deployment]):
            def __missing__(self, name: str) -> Deployment:
                directory = tmp_path_factory.mktemp(name)
                deployment = Deployment(name, SETUPS[name], directory, upstream)
                stack.enter_context(running(deployment.gateway, f"the {name} gateway"))
                if deployment.socket is not None:
                    deployment.gateway.listening(2)
                self[name] = deployment
                return deployment

        yield Lazy()


def daemon_requests(fake: FakeUpstream) -> list[str]:
    """What the daemon received, but the gateway's own start-up `_ping`."""
    records = list(fake.requests)  # (a copy: the fake daemon's threads append to it)
    return [f"{r.method} {r.target}" for r in records if r.header("user-agent") != STARTUP_AGENT]


def read_response(conn: BufferedConn, *, head_request: bool) -> tuple[int, dict[str, str], bytes]:
    status, headers = parse_head(conn.read_until(b"\r\n\r\n", 1 << 20)[:-4])
    while 100 <= status < 200 and status != 101:  # `100 Continue` to an Expect: the answer follows
        status, headers = parse_head(conn.read_until(b"\r\n\r\n", 1 << 20)[:-4])
    if head_request or status < 200 or status in (204, 304):
        return status, headers, b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        data = bytearray()
        while not data.endswith(b"0\r\n\r\n"):
            data += conn.read_until(b"\r\n")
        return status, headers, dechunk(bytes(data))
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(conn.buf) < length and conn._fill():
            pass
        body = bytes(conn.buf[:length])
        del conn.buf[:length]
        return status, headers, body
    _, rest = conn.wait_closed(IO_TIMEOUT)
    return status, headers, rest


def through_gateway(deployment: Deployment, case: Case) -> tuple[Decision, list[str]]:
    """The gateway's decision, and what reached the daemon meanwhile."""
    fake = deployment.upstream
    before = len(daemon_requests(fake))
    raw = deployment.wire_bytes(case)
    if case.source == "unix":
        assert deployment.socket is not None, "a unix source needs a set-up with a unix socket"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(str(deployment.socket))
    else:
        sock = socket.create_connection(("127.0.0.1", deployment.gateway.port), IO_TIMEOUT)
    kind, _, cn = case.caller.partition(":")
    if kind == "certificate":
        sock = deployment.client_tls[cn].wrap_socket(sock, server_hostname="localhost")
    with BufferedConn(sock, IO_TIMEOUT) as conn:
        # A gateway that refuses from the head alone may close before the body is all sent.
        with contextlib.suppress(OSError):
            conn.send(raw)
        head_request = case.method == "HEAD"
        status, headers, body = read_response(conn, head_request=head_request)
    reached = daemon_requests(fake)[before:]
    relayed = "api-version" in headers  # the fake daemon's header; dockgate's answers have none
    message = None if head_request else json_message(body)
    return Decision(relayed and status == 200, status, message), reached


def through_check(
    deployment: Deployment,
    case: Case,
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, str]:
    """`dockgate check`'s exit status and its last line."""
    for name, value in deployment.variables.items():
        monkeypatch.setenv(name, value)
    args = deployment.check_args(case)
    if case.body is not None:
        body = tmp_path / "body"
        body.write_bytes(case.body)
        args += ["--body", str(body)]
    capsys.readouterr()
    status = main([*args, case.method, case.target])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines, f"check printed nothing (exit {status})"
    return status, lines[-1]


def check_decision(status: int, last: str, *, head_request: bool) -> Decision:
    assert status in (ALLOW, DENY), (status, last)
    if status == ALLOW:
        assert last.startswith("decision:  allow ("), last
        return Decision(True, 200, None)
    prefix = "decision:  deny, "
    assert last.startswith(prefix), last
    code, _, message = last[len(prefix) :].partition(": ")
    return Decision(False, int(code), None if head_request else message)


# ----- the test -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CORPUS, ids=[case.param_id for case in CORPUS])
def test_check_decides_as_the_gateway(
    deployments: dict[str, Deployment],
    capsys: pytest.CaptureFixture[str],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    case: Case,
) -> None:
    """`dockgate check` and the gateway take the same decision (for a refusal: the same status
    and message); the daemon gets the request exactly when it is allowed; a request decided
    by a look-up in the daemon is said to be (exit 3) rather than guessed."""
    deployment = deployments[case.setup]
    status, last = through_check(deployment, case, capsys, tmp_path, monkeypatch)
    if case.lookup:
        assert status == LOOKUP, last
        assert last.startswith("decision:  allow (") and last.endswith("else deny"), last
        return
    checked = check_decision(status, last, head_request=case.method == "HEAD")
    served, reached = through_gateway(deployment, case)
    if served.allowed:
        assert len(reached) == 1, f"allowed, yet the daemon got {reached}"
    else:
        assert reached == [], f"refused ({served}), yet the daemon got {reached}"
    assert str(checked) == str(served), f"check: {last}"
