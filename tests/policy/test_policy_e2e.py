"""The access policy, end to end: real dockgate processes in front of the session's real dockerd.

Each test's docstring states the claim it checks. The gateways here are started by this module
(the session ``gateway`` fixture allows everything): one with the read-only "containers only"
policy of ``tests/policies/containers-read-only.yaml``, others with Tecnativa-style variables or
``--allow-origin``.

Raw requests go over plain sockets so that the bytes on the wire are exactly the ones written
here. A request counts as refused only when the answer is dockgate's own (``Server: dockgate``,
no ``Api-Version`` header, Docker's ``{"message": "dockgate: ..."}`` body), the access log says so,
and the daemon's state (containers, images, volumes, networks, swarm, the victim containers'
exec instances and files) is the same afterwards.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import pytest

from dockgate.api.routes import OPERATIONS
from dockgate.policy.tecnativa import ALL_VARIABLES
from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway
from support.paths import REPO
from support.rawhttp import json_message, parse_head

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's policy",
    ),
]

POLICY_FILE = REPO / "tests" / "policies" / "containers-read-only.yaml"
POLICY = "containers-read-only"
IO_TIMEOUT = 10.0

RUN = uuid.uuid4().hex[:8]
VICTIM = f"dgt-pe-victim-{RUN}"  # running `sleep`: kill, exec, delete, archive, attach targets
IDLE = f"dgt-pe-idle-{RUN}"  # created, never started: start and prune targets
SMUGGLED = f"dgt-pe-smuggled-{RUN}"  # the name every hidden create request asks for
IMAGE = "dockgate-test/busybox:latest"  # what the session's busybox_image fixture imports
PWNED = "dgt-pwned"  # the file a refused archive upload would have written into /tmp

# ----- raw HTTP ------------------------------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated name keeps the last value
    body: bytes
    head: bytes

    @property
    def from_dockgate(self) -> bool:
        """dockgate's own answer: never relayed from the daemon, which names itself Docker/..."""
        return self.headers.get("server") == "dockgate" and "api-version" not in self.headers

    @property
    def message(self) -> str | None:
        return json_message(self.body)


class RawConnection:
    """One client connection to a gateway; bytes go out exactly as given."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        host, local_port = self.sock.getsockname()[:2]
        self.client = f"{host}:{local_port}"  # how the access log names this connection
        self.buffer = b""
        self.eof = False

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise AssertionError(f"connection closed after {self.buffer!r}, wanted {n} bytes")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise AssertionError(f"connection closed in a line: {self.buffer!r}")
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_response(self, *, head_request: bool = False) -> Response | None:
        """The next response (None on a clean EOF before it), framed as HTTP/1.1 says."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                if self.buffer:
                    raise AssertionError(f"connection closed inside a head: {self.buffer!r}")
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert re.fullmatch(rb"HTTP/1\.[01] \d{3} .*", lines[0]), f"not a status line: {head!r}"
        status, headers = parse_head(head)
        if head_request or status < 200 or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                parts.append(self._take(size))
                assert self._take(2) == b"\r\n"
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buffer = self.buffer, b""
        return Response(status, headers, body, head)

    def read_to_eof(self) -> bytes:
        """Everything until the peer closes (fails after IO_TIMEOUT)."""
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data


def http(
    line: str,
    *fields: str,
    body: bytes = b"",
    host: str | None = "localhost",
    length: bool = True,
) -> bytes:
    """A request: the line, Host, the fields, Content-Length for a body, then the body."""
    head = [line]
    if host is not None:
        head.append(f"Host: {host}")
    head.extend(fields)
    if body and length:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


PING_CLOSE = http("GET /_ping HTTP/1.1", "Connection: close")

ACCESS_LINE = re.compile(
    r'^(?P<client>\S+) "(?P<method>\S+) (?P<target>\S+) HTTP/(?P<version>\S+)" (?P<status>\d+) '
    r"in=\d+ out=\d+ dur_ms=\S+ op=(?P<op>\S+) decision=(?P<decision>\S+)(?: user=\S+)?"
    r"(?: \((?P<note>.*)\))?$"
)


@dataclasses.dataclass(frozen=True)
class Client:
    """One client connection, as the access log names it, and where its lines may start."""

    address: str
    log_mark: int  # lines the gateway had logged before this connection was opened


def access_lines(gw: Gateway, client: Client, count: int) -> list[re.Match[str]]:
    """The access-log lines of one client connection, once `count` of them are there.

    Only lines logged after the connection was opened count: the kernel reuses client ports.
    """

    def mine() -> list[str]:
        lines = gw.stdout_text().splitlines()[client.log_mark :]
        return [line for line in lines if line.startswith(client.address + " ")]

    deadline = time.monotonic() + IO_TIMEOUT
    while len(lines := mine()) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"wanted {count} access-log lines for {client}, got {lines}")
        time.sleep(0.01)
    # Lines are flushed 50 ms after they are written: give a stray extra line time to show.
    time.sleep(0.06)
    lines = mine()
    assert len(lines) == count, f"access log for {client.address}: {lines}"
    matches = []
    for line in lines:
        m = ACCESS_LINE.match(line)
        assert m is not None, f"unexpected access-log line: {line!r}"
        matches.append(m)
    return matches


# ----- the daemon, seen directly -------------------------------------------------------------


def daemon_request(daemon: PrivateDaemon, method: str, target: str) -> tuple[int, bytes]:
    """One HTTP/1.0 exchange straight with the daemon's unix socket (not through dockgate)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(IO_TIMEOUT)
        s.connect(str(daemon.socket_path))
        s.sendall(f"{method} {target} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def daemon_json(daemon: PrivateDaemon, target: str) -> Any:
    status, body = daemon_request(daemon, "GET", target)
    assert status == 200, f"GET {target} on the daemon: {status} {body[:300]!r}"
    return json.loads(body)


def daemon_state(daemon: PrivateDaemon) -> dict[str, Any]:
    """What any of the refused requests would have changed, had it reached the daemon."""

    def container(name: str) -> Any:
        c = daemon_json(daemon, f"/containers/{name}/json")
        state = c["State"]
        return (c["Name"], state["Status"], state["Pid"], state["StartedAt"], c["ExecIDs"])

    archive_status, _ = daemon_request(
        daemon, "HEAD", f"/containers/{VICTIM}/archive?path=/tmp/{PWNED}"
    )
    return {
        "containers": sorted(
            (c["Id"], tuple(c["Names"]), c["State"])
            for c in daemon_json(daemon, "/containers/json?all=1")
        ),
        "victim": container(VICTIM),
        "idle": container(IDLE),
        "images": sorted(
            (i["Id"], tuple(i["RepoTags"] or ())) for i in daemon_json(daemon, "/images/json")
        ),
        "volumes": sorted(v["Name"] for v in daemon_json(daemon, "/volumes")["Volumes"] or ()),
        "networks": sorted(n["Id"] for n in daemon_json(daemon, "/networks")),
        "swarm": daemon_json(daemon, "/info")["Swarm"]["LocalNodeState"],
        "pwned-file": archive_status,
    }


# ----- fixtures ------------------------------------------------------------------------------


def clean_environment() -> dict[str, str]:
    """os.environ without Tecnativa's variables (nor a DOCKER_HOST that could mislead a client)."""
    env = {k: v for k, v in os.environ.items() if k not in ALL_VARIABLES}
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def victims(daemon: PrivateDaemon, busybox_image: str) -> Iterator[None]:
    """Two containers made straight on the daemon, for the refused requests to aim at."""
    assert busybox_image == IMAGE
    daemon.docker("run", "-d", "--name", VICTIM, IMAGE, "sleep", "600")
    daemon.docker("create", "--name", IDLE, IMAGE, "sleep", "600")
    try:
        yield
    finally:
        daemon.docker("rm", "-f", "-v", VICTIM, IDLE, SMUGGLED, check=False, timeout=60)


@pytest.fixture(scope="module")
def policy_gateway(daemon: PrivateDaemon, victims: None) -> Iterator[Gateway]:
    """dockgate with the read-only "containers only" policy file, in front of the daemon."""
    gw = Gateway(daemon.host, "--policy", str(POLICY_FILE), env=clean_environment())
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()
    assert gw.returncode == 0, gw.output()


@pytest.fixture(scope="module")
def origin_gateway(daemon: PrivateDaemon) -> Iterator[Gateway]:
    """The same policy, with one web origin allowed on the command line."""
    gw = Gateway(
        daemon.host,
        "--policy",
        str(POLICY_FILE),
        "--allow-origin",
        "http://dash.example",
        env=clean_environment(),
    )
    with gw:
        yield gw


@pytest.fixture
def docker_env(client_config_dir: pathlib.Path) -> Callable[[Gateway], dict[str, str]]:
    """Environment for a docker CLI talking to a given gateway."""

    def make(gw: Gateway) -> dict[str, str]:
        env = clean_environment()
        env.update(
            DOCKER_HOST=gw.url,
            DOCKER_BUILDKIT="0",
            DOCKER_CONFIG=str(client_config_dir),
            DOCKER_CLI_HINTS="false",
        )
        return env

    return make


def run_docker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("docker") or "docker", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ----- the corpus ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """What dockgate answers, and logs, for one refused request."""

    status: int
    message: str
    op: str  # op= in the access log
    decision: str  # decision= in the access log
    note: str = ""  # the reason in parentheses, for refusals by the request reader


def malformed(reason: str) -> Refusal:
    """Refused by the request reader (before any operation is known): logged as `- -`."""
    return Refusal(400, f"dockgate: {reason}", "-", "-", reason)


def bad_target(reason: str) -> Refusal:
    """A well-formed request whose target the daemon would not read canonically."""
    return Refusal(400, f"dockgate: {reason}", "unknown", "deny:-:bad-target")


def read_only(op: str) -> Refusal:
    return Refusal(
        403, f"dockgate: {op} denied by policy {POLICY} (read-only)", op, f"deny:{POLICY}:read-only"
    )


def unknown(method: str, path: str) -> Refusal:
    """A request the daemon's router would not route: denied by read-only whatever the rules."""
    return Refusal(
        403,
        f"dockgate: unknown operation {method} {path} denied by policy {POLICY} (read-only)",
        "unknown",
        f"deny:{POLICY}:read-only",
    )


def no_rule(op: str) -> Refusal:
    return Refusal(
        403,
        f'dockgate: no rule of policy "{POLICY}" allows {op} (allow it with a rule of '
        f"operations: [{op}] or sections: [{OPERATIONS[op].section}])",
        op,
        f"deny:{POLICY}:no-rule-allows-it",
    )


def no_upgrade(op: str) -> Refusal:
    return Refusal(
        403, f"dockgate: {op} cannot switch protocols (Upgrade refused)", op, "deny:-:upgrade"
    )


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    raw: bytes
    expect: tuple[Refusal, ...]  # one per response, in order
    head: bool = False  # HEAD: the response has no body (RFC 9110 9.3.2)


def _tar(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


PRIVILEGED_CREATE = json.dumps(
    {
        "Image": IMAGE,
        "Cmd": ["sh", "-c", "touch /host/tmp/dockgate-escaped"],
        "HostConfig": {
            "Privileged": True,
            "Binds": ["/:/host"],
            "PidMode": "host",
            "NetworkMode": "host",
        },
    }
).encode()
HIDDEN_CREATE = http(
    f"POST /containers/create?name={SMUGGLED} HTTP/1.1",
    "Content-Type: application/json",
    body=json.dumps({"Image": IMAGE, "Cmd": ["true"]}).encode(),
)
EXEC_BODY = json.dumps({"Cmd": ["touch", f"/tmp/{PWNED}"], "AttachStdout": True}).encode()
SWARM_INIT = json.dumps({"ListenAddr": "127.0.0.1:2377", "AdvertiseAddr": "127.0.0.1"}).encode()


def corpus() -> list[Case]:
    v = VICTIM
    json_ct = "Content-Type: application/json"
    return [
        # -- dotted and encoded paths: never what the daemon would route ---------------------
        Case("dotdot", http("GET /containers/../secrets HTTP/1.1"),
             (bad_target("dot segment in path"),)),
        Case("dotdot-encoded", http("GET /containers/%2e%2e/secrets HTTP/1.1"),
             (bad_target("encoded dot in path"),)),
        Case("dotdot-encoded-upper", http("GET /containers/%2E%2E/secrets HTTP/1.1"),
             (bad_target("encoded dot in path"),)),
        Case("dotdot-versioned", http("GET /v1.41/containers/json/../../secrets HTTP/1.1"),
             (bad_target("dot segment in path"),)),
        Case("dotdot-trailing", http("GET /secrets/containers/json/.. HTTP/1.1"),
             (bad_target("dot segment in path"),)),
        Case("dot-segment", http("GET /./secrets HTTP/1.1"), (bad_target("dot segment in path"),)),
        Case("encoded-slashes", http("GET /containers/json%2F..%2F..%2Fsecrets HTTP/1.1"),
             (bad_target("encoded slash in path"),)),
        Case("double-encoded-dots", http("GET /containers/%252e%252e/secrets HTTP/1.1"),
             (bad_target("encoded percent in path"),)),
        Case("overlong-utf8-dot", http("GET /containers/%C0%AE%C0%AE/secrets HTTP/1.1"),
             (bad_target("invalid UTF-8 in path"),)),
        Case("double-slash", http("GET //secrets HTTP/1.1"), (bad_target("empty path segment"),)),
        Case("double-slash-versioned", http("GET /v1.41//secrets HTTP/1.1"),
             (bad_target("empty path segment"),)),
        Case("double-slash-dotdot", http("GET //containers/../secrets HTTP/1.1"),
             (bad_target("empty path segment"),)),
        Case("trailing-slash", http("GET /containers/json/ HTTP/1.1"),
             (bad_target("trailing slash in path"),)),
        Case("nul", http("GET /containers/json%00 HTTP/1.1"),
             (bad_target("control character in path"),)),
        Case("encoded-newline", http(f"GET /containers/{v}%0A/json HTTP/1.1"),
             (bad_target("control character in path"),)),
        Case("backslash", http("GET /containers\\..\\secrets HTTP/1.1"),
             (malformed("invalid request target"),)),
        Case("backslash-encoded", http("GET /containers/%5C..%5Csecrets HTTP/1.1"),
             (bad_target("backslash in path"),)),
        Case("fragment", http("GET /containers/json#/../../secrets HTTP/1.1"),
             (malformed("invalid request target"),)),
        Case("absolute-form", http("GET http://docker/secrets HTTP/1.1"),
             (malformed("invalid request target"),)),
        Case("asterisk-form", http("OPTIONS * HTTP/1.1"), (malformed("invalid request target"),)),
        Case("h2-prior-knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
             (malformed("invalid request target"),)),
        # -- version tricks ------------------------------------------------------------------
        Case("version-twice", http("GET /v1.41/v1.41/secrets HTTP/1.1"),
             (unknown("GET", "/v1.41/v1.41/secrets"),)),
        Case("version-upper-v", http("GET /V1.41/secrets HTTP/1.1"),
             (unknown("GET", "/V1.41/secrets"),)),
        Case("version-then-secrets", http("GET /v1.41/secrets HTTP/1.1"),
             (no_rule("SecretList"),)),
        # -- methods -------------------------------------------------------------------------
        Case("method-lower", http("post /containers/create HTTP/1.1", json_ct,
                                  body=PRIVILEGED_CREATE),
             (malformed("invalid method (methods are upper case)"),)),
        Case("method-mixed", http("Post /containers/create HTTP/1.1", json_ct,
                                  body=PRIVILEGED_CREATE),
             (malformed("invalid method (methods are upper case)"),)),
        Case("get-create", http("GET /containers/create HTTP/1.1"),
             (unknown("GET", "/containers/create"),)),
        Case("get-create-with-body", http("GET /containers/create HTTP/1.1", json_ct,
                                          body=PRIVILEGED_CREATE),
             (unknown("GET", "/containers/create"),)),
        Case("method-override-header", http("GET /containers/create HTTP/1.1",
                                            "X-HTTP-Method-Override: POST", json_ct,
                                            body=PRIVILEGED_CREATE),
             (unknown("GET", "/containers/create"),)),
        Case("head-kill", http(f"HEAD /containers/{v}/kill HTTP/1.1"),
             (unknown("HEAD", f"/containers/{v}/kill"),), head=True),
        Case("head-dotdot", http("HEAD /containers/../_ping HTTP/1.1"),
             (bad_target("dot segment in path"),), head=True),
        Case("head-ping-evil-origin", http("HEAD /_ping HTTP/1.1", "Origin: http://evil.example"),
             (Refusal(403, "dockgate: requests from web pages are refused (Origin "
                      "http://evil.example is not allowed)", "SystemPingHead", "deny:-:browser"),),
             head=True),
        # -- operations that change something ------------------------------------------------
        Case("create-privileged", http(f"POST /containers/create?name={SMUGGLED} HTTP/1.1",
                                       json_ct, body=PRIVILEGED_CREATE),
             (read_only("ContainerCreate"),)),
        Case("create-versioned", http("POST /v1.41/containers/create HTTP/1.1", json_ct,
                                      body=PRIVILEGED_CREATE),
             (read_only("ContainerCreate"),)),
        Case("create-encoded-letters", http("POST /%63ontainers/%63reate HTTP/1.1", json_ct,
                                            body=PRIVILEGED_CREATE),
             (read_only("ContainerCreate"),)),
        Case("create-expect-continue", http("POST /containers/create HTTP/1.1", json_ct,
                                            "Expect: 100-continue",
                                            f"Content-Length: {len(PRIVILEGED_CREATE)}"),
             (read_only("ContainerCreate"),)),
        Case("delete-force", http(f"DELETE /containers/{v}?force=1&v=1 HTTP/1.1"),
             (read_only("ContainerDelete"),)),
        Case("exec-create", http(f"POST /containers/{v}/exec HTTP/1.1", json_ct, body=EXEC_BODY),
             (read_only("ContainerExec"),)),
        Case("start", http(f"POST /containers/{IDLE}/start HTTP/1.1"),
             (read_only("ContainerStart"),)),
        Case("kill", http(f"POST /containers/{v}/kill?signal=KILL HTTP/1.1"),
             (read_only("ContainerKill"),)),
        Case("rename", http(f"POST /containers/{v}/rename?name={SMUGGLED} HTTP/1.1"),
             (read_only("ContainerRename"),)),
        Case("prune", http("POST /containers/prune HTTP/1.1"), (read_only("ContainerPrune"),)),
        Case("commit", http(f"POST /commit?container={v}&repo=dgt-pe-commit HTTP/1.1"),
             (read_only("ImageCommit"),)),
        Case("put-archive", http(f"PUT /containers/{v}/archive?path=/tmp HTTP/1.1",
                                 "Content-Type: application/x-tar",
                                 body=_tar(PWNED, b"written through a read-only policy\n")),
             (read_only("PutContainerArchive"),)),
        Case("attach-upgrade", http(f"POST /containers/{v}/attach?stream=1&stdin=1&stdout=1 "
                                    "HTTP/1.1", "Connection: Upgrade", "Upgrade: tcp"),
             (read_only("ContainerAttach"),)),
        Case("attach-websocket", http(f"GET /containers/{v}/attach/ws?stream=1&stdin=1 HTTP/1.1",
                                      "Connection: Upgrade", "Upgrade: websocket",
                                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                      "Sec-WebSocket-Version: 13"),
             (read_only("ContainerAttachWebsocket"),)),
        Case("volume-create", http("POST /volumes/create HTTP/1.1", json_ct,
                                   body=b'{"Name": "dgt-pe-volume"}'),
             (read_only("VolumeCreate"),)),
        Case("swarm-init", http("POST /swarm/init HTTP/1.1", json_ct, body=SWARM_INIT),
             (read_only("SwarmInit"),)),
        # -- reads outside the allowed sections ----------------------------------------------
        Case("secrets", http("GET /secrets HTTP/1.1"), (no_rule("SecretList"),)),
        Case("secrets-encoded-letter", http("GET /%73ecrets HTTP/1.1"), (no_rule("SecretList"),)),
        Case("secrets-query-looks-allowed", http("GET /secrets?/containers/json HTTP/1.1"),
             (no_rule("SecretList"),)),
        Case("secrets-semicolon", http("GET /secrets;/containers/json HTTP/1.1"),
             (unknown("GET", "/secrets;/containers/json"),)),
        Case("images", http("GET /images/json HTTP/1.1"), (no_rule("ImageList"),)),
        Case("info", http("GET /info HTTP/1.1"), (no_rule("SystemInfo"),)),
        Case("events", http("GET /events HTTP/1.1"), (no_rule("SystemEvents"),)),
        Case("debug-vars", http("GET /debug/vars HTTP/1.1"), (no_rule("DebugVars"),)),
        # The daemon answers OPTIONS on any path (CORS pre-flight): SystemOptions, a read in
        # section "system", which this policy does not allow.
        Case("options-containers-json", http("OPTIONS /containers/json HTTP/1.1"),
             (no_rule("SystemOptions"),)),
        Case("options-containers-create", http("OPTIONS /containers/create HTTP/1.1"),
             (no_rule("SystemOptions"),)),
        # -- protocol switches on an allowed read --------------------------------------------
        Case("h2c-upgrade", http("GET /containers/json HTTP/1.1",
                                 "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                                 "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
             (no_upgrade("ContainerList"),)),
        Case("websocket-upgrade", http("GET /containers/json HTTP/1.1", "Connection: upgrade",
                                       "Upgrade: websocket",
                                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                       "Sec-WebSocket-Version: 13"),
             (no_upgrade("ContainerList"),)),
        Case("tcp-upgrade-on-logs", http(f"GET /containers/{v}/logs?stdout=1&follow=1 HTTP/1.1",
                                         "Connection: keep-alive", "Connection: Upgrade",
                                         "Upgrade: tcp"),
             (no_upgrade("ContainerLogs"),)),
        # -- framing and smuggling -----------------------------------------------------------
        Case("cl-and-te",
             b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN_CREATE,
             (malformed("both Content-Length and Transfer-Encoding"),)),
        Case("te-and-cl",
             b"POST /containers/json HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
             b"Content-Length: %d\r\n\r\n0\r\n\r\n%b" % (5 + len(HIDDEN_CREATE), HIDDEN_CREATE),
             (malformed("both Content-Length and Transfer-Encoding"),)),
        Case("two-content-lengths",
             b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
             b"Content-Length: %d\r\n\r\n%b" % (len(HIDDEN_CREATE), HIDDEN_CREATE),
             (malformed("duplicate Content-Length"),)),
        Case("two-content-lengths-case",
             b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\ncontent-length: 0\r\n"
             b"CONTENT-LENGTH: 0\r\n\r\n",
             (malformed("duplicate Content-Length"),)),
        Case("two-transfer-encodings",
             b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
             (malformed("duplicate Transfer-Encoding"),)),
        Case("te-chunked-identity",
             b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\n"
             b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
             (malformed("unsupported Transfer-Encoding"),)),
        Case("te-in-http10",
             b"GET /containers/json HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
             (malformed("Transfer-Encoding in an HTTP/1.0 request"),)),
        Case("obs-fold-te",
             b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\nX-Pad: a\r\n"
             b" Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
             (malformed("obsolete line folding in header"),)),
        Case("space-before-colon",
             b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\n"
             b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
             (malformed("invalid header field"),)),
        Case("bare-lf", b"GET /secrets HTTP/1.1\nHost: localhost\n\n",
             (malformed("bare LF in request head"),)),
        Case("no-host", b"GET /containers/json HTTP/1.1\r\n\r\n",
             (malformed("an HTTP/1.1 request needs exactly one Host header"),)),
        Case("two-hosts", b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\nHost: evil\r\n\r\n",
             (malformed("an HTTP/1.1 request needs exactly one Host header"),)),
        Case("two-origins",
             b"GET /_ping HTTP/1.1\r\nHost: localhost\r\nOrigin: http://a\r\nOrigin: http://b"
             b"\r\n\r\n",
             (malformed("duplicate Origin"),)),
        Case("hidden-in-denied-body",
             http(f"POST /containers/{IDLE}/start HTTP/1.1", json_ct, body=HIDDEN_CREATE),
             (read_only("ContainerStart"),)),
        Case("hidden-after-denied-body",
             http("POST /containers/create HTTP/1.1", json_ct, body=PRIVILEGED_CREATE)
             + HIDDEN_CREATE,
             (read_only("ContainerCreate"),)),
        Case("hidden-in-denied-chunked-body",
             b"POST /containers/create HTTP/1.1\r\nHost: localhost\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n%b"
             % (len(HIDDEN_CREATE), HIDDEN_CREATE, HIDDEN_CREATE),
             (read_only("ContainerCreate"),)),
        Case("pipelined-denials",
             http("GET /secrets HTTP/1.1") + http(f"DELETE /containers/{v}?force=1 HTTP/1.1"),
             (no_rule("SecretList"), read_only("ContainerDelete"))),
    ]  # fmt: skip


CORPUS = {case.id: case for case in corpus()}
assert len(CORPUS) == len(corpus()), "corpus ids must be unique"


@dataclasses.dataclass
class Exchange:
    responses: list[Response]
    ping: Response | None  # the answer to the follow-up ping; None when the gateway closed
    rest: bytes  # whatever came after, until the gateway closed
    client: Client
    head_body: bytes = b""  # bytes found right after the head of a response to HEAD


def exchange(
    gw: Gateway, raw: bytes, count: int, *, head: bool = False, follow_up: bool = True
) -> Exchange:
    """Send `raw`; read `count` responses; then what follows them on the connection.

    When the last response leaves the connection open, a `GET /_ping` with `Connection: close`
    is sent after it: its answer must be the very next thing on the connection (a forwarded
    extra request, or a stray body, would come first).
    """
    mark = len(gw.stdout_text().splitlines())
    with RawConnection(gw.port) as conn:
        client = Client(conn.client, mark)
        conn.send(raw)
        responses: list[Response] = []
        for _ in range(count):
            response = conn.read_response(head_request=head)
            assert response is not None, f"connection closed after {len(responses)} responses"
            responses.append(response)
        if not follow_up:
            return Exchange(responses, None, b"", client)
        # A response to HEAD has no body (RFC 9110 9.3.2): bytes after its head would be read
        # by a keep-alive client as the start of its next response. Set them aside (the test
        # asserts on them last) so that the rest of the exchange can still be checked.
        head_body = b""
        if head:
            head_body, conn.buffer = conn.buffer, b""
        ping = None
        if responses[-1].headers.get("connection", "").lower() != "close":
            conn.send(PING_CLOSE)
            ping = conn.read_response()
        return Exchange(responses, ping, conn.read_to_eof(), client, head_body)


@pytest.mark.parametrize("case_id", list(CORPUS))
def test_bypass_corpus_is_refused_and_never_reaches_the_daemon(
    policy_gateway: Gateway, daemon: PrivateDaemon, case_id: str
) -> None:
    """Under the read-only "containers only" policy, each request of the corpus is answered by
    dockgate itself with 400 or 403 and Docker's JSON message, the access log records its
    operation and the deciding policy and rule, nothing else is answered on the connection, and
    the daemon's state is exactly what it was."""
    case = CORPUS[case_id]
    before = daemon_state(daemon)
    ex = exchange(policy_gateway, case.raw, len(case.expect), head=case.head)
    responses, ping, rest, client = ex.responses, ex.ping, ex.rest, ex.client
    for response, want in zip(responses, case.expect, strict=True):
        assert response.status == want.status, response
        assert response.from_dockgate, f"relayed from the daemon: {response}"
        if not case.head:
            assert response.message == want.message, response
    if ping is not None:
        assert ping.status == 200, f"after the refusal: {ping}"
        assert ping.body == b"OK", f"after the refusal: {ping}"
    assert rest == b"", f"after the last answer the connection carried {rest!r}"

    lines = access_lines(policy_gateway, client, len(case.expect) + (ping is not None))
    for line, want in zip(lines, case.expect, strict=False):
        got = (line["status"], line["op"], line["decision"], line["note"] or "")
        assert got == (str(want.status), want.op, want.decision, want.note), line.string
    if ping is not None:
        last = lines[-1]
        assert (last["op"], last["decision"]) == ("SystemPing", f"allow:{POLICY}:rule-1"), last

    assert daemon_state(daemon) == before
    assert ex.head_body == b"", f"the response to HEAD carried a body: {ex.head_body!r}"


# ----- what the policy allows ----------------------------------------------------------------

CONTROLS: list[tuple[str, bytes, str]] = [
    ("containers-json", http("GET /containers/json HTTP/1.1"), "ContainerList"),
    ("containers-json-versioned", http("GET /v1.41/containers/json HTTP/1.1"), "ContainerList"),
    ("head-ping", http("HEAD /_ping HTTP/1.1"), "SystemPingHead"),
    ("ping", http("GET /_ping HTTP/1.1"), "SystemPing"),
    ("version", http("GET /version HTTP/1.1"), "SystemVersion"),
    ("inspect", http(f"GET /containers/{VICTIM}/json HTTP/1.1"), "ContainerInspect"),
    ("encoded-letters", http("GET /containers/%6Aso%6E HTTP/1.1"), "ContainerList"),
    ("dotdot-in-query", http("GET /containers/json?x=/../../secrets HTTP/1.1"), "ContainerList"),
    (
        "head-archive",
        http(f"HEAD /containers/{VICTIM}/archive?path=/etc HTTP/1.1"),
        "ContainerArchiveInfo",
    ),
]


@pytest.mark.parametrize(
    ("raw", "op"), [pytest.param(raw, op, id=name) for name, raw, op in CONTROLS]
)
def test_allowed_reads_reach_the_daemon(
    policy_gateway: Gateway, daemon: PrivateDaemon, raw: bytes, op: str
) -> None:
    """The same policy lets container reads, ping and version through: answered 200 by the
    daemon itself (so the corpus above fails if everything were simply blocked), and logged as
    `decision=allow:containers-read-only:rule-1` with their operation."""
    before = daemon_state(daemon)
    head = raw.startswith(b"HEAD ")
    ex = exchange(policy_gateway, raw, 1, head=head)
    responses, ping, rest, client = ex.responses, ex.ping, ex.rest, ex.client
    response = responses[0]
    assert response.status == 200, response
    assert not response.from_dockgate
    assert response.headers.get("server", "").startswith("Docker/"), response
    if op == "ContainerList":
        names = [n for c in json.loads(response.body) for n in c["Names"]]
        assert f"/{VICTIM}" in names
    assert ex.head_body == b""
    assert ping is not None
    assert ping.status == 200
    assert rest == b""
    lines = access_lines(policy_gateway, client, 2)
    assert (lines[0]["status"], lines[0]["op"], lines[0]["decision"]) == (
        "200",
        op,
        f"allow:{POLICY}:rule-1",
    ), lines[0].string
    assert daemon_state(daemon) == before


SMUGGLING_BEHIND_ALLOWED: list[tuple[str, bytes, list[tuple[int, str]]]] = [
    # A body on an allowed GET: the daemon reads it as a body, by the same Content-Length.
    ("create-in-get-body",
     http("GET /containers/json HTTP/1.1", body=HIDDEN_CREATE),
     [(200, "ContainerList")]),
    # After the chunked terminator, the next bytes are a new request: checked on its own.
    ("create-after-chunked-terminator",
     b"GET /containers/json HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n" + HIDDEN_CREATE,
     [(200, "ContainerList"), (403, "ContainerCreate")]),
    ("delete-pipelined-after-read",
     http("GET /containers/json HTTP/1.1") + http(f"DELETE /containers/{VICTIM}?force=1 HTTP/1.1"),
     [(200, "ContainerList"), (403, "ContainerDelete")]),
    # HTTP/1.0 without keep-alive: the connection ends after the first answer.
    ("delete-after-http10",
     b"GET /containers/json HTTP/1.0\r\n\r\n"
     + http(f"DELETE /containers/{VICTIM}?force=1 HTTP/1.1"),
     [(200, "ContainerList")]),
    # Go's h2c handler (golang.org/x/net/http2/h2c) upgrades on `Connection: HTTP2-Settings`
    # without the `upgrade` token: any Upgrade header on an operation that cannot switch
    # protocols is refused by dockgate, so the daemon never sees it.
    ("h2c-without-upgrade-token",
     http("GET /containers/json HTTP/1.1", "Connection: HTTP2-Settings", "Upgrade: h2c",
          "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"),
     [(403, "ContainerList")]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "want"),
    [pytest.param(raw, want, id=name) for name, raw, want in SMUGGLING_BEHIND_ALLOWED],
)
def test_requests_hidden_behind_an_allowed_read_are_checked_or_inert(
    policy_gateway: Gateway, daemon: PrivateDaemon, raw: bytes, want: list[tuple[int, str]]
) -> None:
    """Bytes that follow an allowed read are either its body (which the daemon frames exactly
    as dockgate did, so a request inside it never runs) or a request of their own that the
    policy checks like any other; the daemon never switches protocols on an allowed read."""
    before = daemon_state(daemon)
    ex = exchange(policy_gateway, raw, len(want))
    responses, ping, rest, client = ex.responses, ex.ping, ex.rest, ex.client
    got = [(r.status, r.from_dockgate) for r in responses]
    assert got == [(status, status != 200) for status, _ in want], responses
    assert rest == b""
    if ping is not None:
        assert ping.status == 200
    lines = access_lines(policy_gateway, client, len(want) + (ping is not None))
    assert [(int(m["status"]), m["op"]) for m in lines[: len(want)]] == want
    assert daemon_state(daemon) == before


# ----- real clients see the denial -----------------------------------------------------------


def test_docker_cli_shows_the_denial(
    policy_gateway: Gateway,
    daemon: PrivateDaemon,
    docker_env: Callable[[Gateway], dict[str, str]],
    cleanup: Cleanup,
) -> None:
    """With the read-only policy, `docker run` fails and prints dockgate's message as the
    daemon's error; `docker exec` and `docker rm -f` likewise; `docker ps` works and lists the
    running victim; nothing was created or removed."""
    env = docker_env(policy_gateway)
    name = cleanup.container(f"dgt-pe-run-{RUN}")
    before = daemon_state(daemon)

    run = run_docker(env, "run", "--rm", "--name", name, IMAGE, "true")
    assert run.returncode != 0, run
    assert f"dockgate: ContainerCreate denied by policy {POLICY} (read-only)" in run.stderr, run

    exec_ = run_docker(env, "exec", VICTIM, "true")
    assert exec_.returncode != 0, exec_
    assert f"dockgate: ContainerExec denied by policy {POLICY} (read-only)" in exec_.stderr, exec_

    rm = run_docker(env, "rm", "-f", VICTIM)
    assert rm.returncode != 0, rm
    assert f"dockgate: ContainerDelete denied by policy {POLICY} (read-only)" in rm.stderr, rm

    images = run_docker(env, "images")
    assert images.returncode != 0, images
    assert f'dockgate: no rule of policy "{POLICY}" allows ImageList' in images.stderr

    ps = run_docker(env, "ps", "--format", "{{.Names}}")
    assert ps.returncode == 0, ps
    assert VICTIM in ps.stdout.split(), ps

    assert daemon_state(daemon) == before


def test_docker_sdk_shows_the_denial(
    policy_gateway: Gateway, daemon: PrivateDaemon, cleanup: Cleanup
) -> None:
    """The Docker SDK for Python raises `APIError` (status 403) whose explanation is dockgate's
    message for `containers.run`; listing containers works."""
    name = cleanup.container(f"dgt-pe-sdk-{RUN}")
    before = daemon_state(daemon)
    client = docker.DockerClient(base_url=policy_gateway.url, version="auto", timeout=30)
    try:
        with pytest.raises(docker.errors.APIError) as caught:
            client.containers.run(IMAGE, ["true"], name=name, remove=True)
        assert caught.value.status_code == 403
        assert caught.value.explanation == (
            f"dockgate: ContainerCreate denied by policy {POLICY} (read-only)"
        )
        with pytest.raises(docker.errors.APIError) as caught:
            client.images.list()
        assert caught.value.status_code == 403
        assert f'dockgate: no rule of policy "{POLICY}" allows ImageList' in str(
            caught.value.explanation
        )
        assert VICTIM in [c.name for c in client.containers.list()]
    finally:
        client.close()
    assert daemon_state(daemon) == before


# ----- Tecnativa's variables, real clients ---------------------------------------------------


def test_tecnativa_containers_only(
    daemon: PrivateDaemon,
    victims: None,
    docker_env: Callable[[Gateway], dict[str, str]],
    cleanup: Cleanup,
) -> None:
    """`CONTAINERS=1` alone (no policy file): `docker ps` works; `docker images` is refused
    (IMAGES is not set); `docker run` is refused by the write rule (POST defaults to 0); the
    access log shows the environment policy's decisions."""
    env = clean_environment() | {"CONTAINERS": "1"}
    with Gateway(daemon.host, env=env, policy=None) as gw:
        assert "--policy" not in gw.command
        denv = docker_env(gw)
        ps = run_docker(denv, "ps", "--format", "{{.Names}}")
        assert ps.returncode == 0, ps
        assert VICTIM in ps.stdout.split()

        images = run_docker(denv, "images")
        assert images.returncode != 0, images
        assert (
            "dockgate: ImageList denied by policy environment (no rule allows it; needs IMAGES=1)"
            in (images.stderr)
        ), images

        name = cleanup.container(f"dgt-pe-tec-{RUN}")
        run = run_docker(denv, "run", "--rm", "--name", name, IMAGE, "true")
        assert run.returncode != 0, run
        assert (
            "dockgate: ContainerCreate denied by policy environment (needs POST=1)" in run.stderr
        ), run
        assert daemon.docker("inspect", name, check=False).returncode != 0

        log = _wait_log(gw, "op=ContainerCreate ")
        assert "decision=deny:environment:rule-1" in log, log
        assert re.search(r"op=ContainerList decision=allow:environment:rule-\d+", gw.stdout_text())
        assert "op=ImageList decision=deny:environment:no-rule-allows-it" in gw.stdout_text()


def test_tecnativa_containers_post_images_exec(
    daemon: PrivateDaemon,
    busybox_image: str,
    docker_env: Callable[[Gateway], dict[str, str]],
    cleanup: Cleanup,
) -> None:
    """`CONTAINERS=1 POST=1 IMAGES=1 EXEC=1`: `docker run --rm IMAGE echo hi` prints `hi`
    (create, attach, start, wait all allowed), `docker exec` runs a command in a running
    container; `docker volume ls` is still refused (VOLUMES is not set)."""
    env = clean_environment() | {"CONTAINERS": "1", "POST": "1", "IMAGES": "1", "EXEC": "1"}
    with Gateway(daemon.host, env=env, policy=None) as gw:
        denv = docker_env(gw)
        name = cleanup.container(f"dgt-pe-tec-run-{RUN}")
        run = run_docker(denv, "run", "--rm", "--name", name, busybox_image, "echo", "hi")
        assert run.returncode == 0, run
        assert run.stdout == "hi\n", run

        sleeper = cleanup.container(f"dgt-pe-tec-exec-{RUN}")
        started = run_docker(denv, "run", "-d", "--name", sleeper, busybox_image, "sleep", "300")
        assert started.returncode == 0, started
        exec_ = run_docker(denv, "exec", sleeper, "echo", "from", "exec")
        assert exec_.returncode == 0, exec_
        assert exec_.stdout == "from exec\n", exec_

        images = run_docker(denv, "images", "--format", "{{.Repository}}:{{.Tag}}")
        assert images.returncode == 0, images
        assert busybox_image in images.stdout.split()

        volumes = run_docker(denv, "volume", "ls")
        assert volumes.returncode != 0, volumes
        assert (
            "dockgate: VolumeList denied by policy environment (no rule allows it; needs VOLUMES=1)"
            in (volumes.stderr)
        ), volumes

        for op in (
            "ContainerCreate",
            "ContainerAttach",
            "ContainerStart",
            "ContainerExec",
            "ExecStart",
        ):
            line = _wait_log(gw, f"op={op} ")
            assert re.search(r"decision=allow:environment:rule-\d+", line), line


def _wait_log(gw: Gateway, needle: str) -> str:
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        for line in gw.stdout_text().splitlines():
            if needle in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no access-log line with {needle!r}:\n{gw.stdout_text()}")
        time.sleep(0.02)


# ----- browsers ------------------------------------------------------------------------------

BROWSER_REFUSALS: list[tuple[str, bytes, str, str]] = [
    ("evil-origin-ping", http("GET /_ping HTTP/1.1", "Origin: http://evil.example"),
     "dockgate: requests from web pages are refused (Origin http://evil.example is not allowed)",
     "SystemPing"),
    ("evil-origin-list", http("GET /containers/json HTTP/1.1", "Origin: http://evil.example"),
     "dockgate: requests from web pages are refused (Origin http://evil.example is not allowed)",
     "ContainerList"),
    ("evil-origin-create", http("POST /containers/create HTTP/1.1", "Origin: http://evil.example",
                                "Content-Type: text/plain", body=PRIVILEGED_CREATE),
     "dockgate: requests from web pages are refused (Origin http://evil.example is not allowed)",
     "ContainerCreate"),
    ("null-origin", http("GET /_ping HTTP/1.1", "Origin: null"),
     "dockgate: requests from web pages are refused (Origin null is not allowed)", "SystemPing"),
    ("rebinding-host", http("GET /_ping HTTP/1.1", host="evil.example.com"),
     "dockgate: Host 'evil.example.com' is not accepted on this listener (DNS-rebinding "
     "protection); allow it with --allow-host evil.example.com (DOCKGATE_ALLOW_HOST in the "
     "environment) or under 'hosts' in the policy file", "SystemPing"),
    ("rebinding-host-with-port",
     http("GET /containers/json HTTP/1.1", host="evil.example.com:2375"),
     "dockgate: Host 'evil.example.com' is not accepted on this listener (DNS-rebinding "
     "protection); allow it with --allow-host evil.example.com (DOCKGATE_ALLOW_HOST in the "
     "environment) or under 'hosts' in the policy file", "ContainerList"),
    ("rebinding-host-ip-lookalike", http("GET /_ping HTTP/1.1", host="127.0.0.1.evil.example"),
     "dockgate: Host '127.0.0.1.evil.example' is not accepted on this listener (DNS-rebinding "
     "protection); allow it with --allow-host 127.0.0.1.evil.example (DOCKGATE_ALLOW_HOST in the "
     "environment) or under 'hosts' in the policy file", "SystemPing"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "message", "op"),
    [pytest.param(raw, message, op, id=name) for name, raw, message, op in BROWSER_REFUSALS],
)
def test_browser_requests_are_refused(
    policy_gateway: Gateway, daemon: PrivateDaemon, raw: bytes, message: str, op: str
) -> None:
    """A web page's request (an `Origin` that is not allowed) and a DNS-rebinding request (a
    `Host` that is not a loopback address or a Docker client's name) are refused 403, even for
    `GET /_ping`, and logged as `decision=deny:-:browser`."""
    before = daemon_state(daemon)
    ex = exchange(policy_gateway, raw, 1)
    response = ex.responses[0]
    assert response.status == 403, response
    assert response.from_dockgate
    assert response.message == message
    assert ex.rest == b""
    line = access_lines(policy_gateway, ex.client, 1 + (ex.ping is not None))[0]
    assert (line["status"], line["op"], line["decision"]) == ("403", op, "deny:-:browser")
    assert daemon_state(daemon) == before


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1:{port}", id="ip-and-port"),
        pytest.param("127.0.0.1", id="ip"),
        pytest.param("localhost", id="localhost"),
        pytest.param("localhost:{port}", id="localhost-and-port"),
        pytest.param("[::1]:{port}", id="ipv6-and-port"),
        pytest.param("docker", id="docker"),
        pytest.param("api.moby.localhost", id="api.moby.localhost"),
    ],
)
def test_client_hosts_are_accepted(policy_gateway: Gateway, host: str) -> None:
    """The Host values Docker clients send (an address of the listener, `localhost`, the CLI's
    `docker` and `api.moby.localhost`) are accepted: `GET /_ping` answers the daemon's `OK`."""
    raw = http("GET /_ping HTTP/1.1", host=host.format(port=policy_gateway.port))
    response = exchange(policy_gateway, raw, 1).responses[0]
    assert (response.status, response.body) == (200, b"OK"), response
    assert not response.from_dockgate


def test_allowed_origin_is_accepted(origin_gateway: Gateway) -> None:
    """With `--allow-origin http://dash.example`, that origin may call the API (the policy
    still applies); other origins, and the same host on another port, are still refused."""
    ok = exchange(
        origin_gateway, http("GET /_ping HTTP/1.1", "Origin: http://dash.example"), 1
    ).responses[0]
    assert (ok.status, ok.body) == (200, b"OK"), ok
    listing = exchange(
        origin_gateway, http("GET /containers/json HTTP/1.1", "Origin: http://dash.example"), 1
    ).responses[0]
    assert listing.status == 200 and not listing.from_dockgate, listing
    create = exchange(
        origin_gateway,
        http(
            "POST /containers/create HTTP/1.1",
            "Origin: http://dash.example",
            "Content-Type: application/json",
            body=PRIVILEGED_CREATE,
        ),
        1,
    ).responses[0]
    assert create.status == 403
    assert create.message == f"dockgate: ContainerCreate denied by policy {POLICY} (read-only)"
    for origin in ("http://evil.example", "http://dash.example:8080", "https://dash.example"):
        refused = exchange(
            origin_gateway, http("GET /_ping HTTP/1.1", f"Origin: {origin}"), 1
        ).responses[0]
        assert refused.status == 403, (origin, refused)
        assert refused.message is not None
        assert refused.message.startswith("dockgate: requests from web pages are refused")


# ----- `dockgate check` agrees with the gateway -----------------------------------------------

CHECKED: list[tuple[str, str, str | None, str | None]] = [
    # (method, target, Host, Origin)
    ("GET", "/containers/json", None, None),
    ("GET", "/v1.41/containers/json", None, None),
    ("HEAD", "/_ping", None, None),
    ("GET", f"/containers/{VICTIM}/json", None, None),
    ("GET", "/containers/%6Aso%6E", None, None),
    ("HEAD", f"/containers/{VICTIM}/archive?path=/etc", None, None),
    ("GET", "/containers/../secrets", None, None),
    ("GET", "/containers/%2e%2e/secrets", None, None),
    ("GET", "//secrets", None, None),
    ("GET", "/v1.41/v1.41/secrets", None, None),
    ("GET", "/containers/create", None, None),
    ("HEAD", f"/containers/{VICTIM}/kill", None, None),
    ("POST", "/containers/create", None, None),
    ("GET", "/secrets", None, None),
    ("GET", "/%73ecrets", None, None),
    ("GET", "/images/json", None, None),
    ("OPTIONS", "/containers/json", None, None),
    ("GET", "/containers/json/", None, None),
    ("GET", "/containers/json%00", None, None),
    ("GET", "/_ping", None, "http://evil.example"),
    ("GET", "/_ping", "evil.example.com", None),
]


def _dockgate_check(method: str, target: str, host: str | None, origin: str | None) -> int:
    args = [sys.executable, "-m", "dockgate", "check", "--policy", str(POLICY_FILE)]
    if host is not None:
        args += ["--host", host]
    if origin is not None:
        args += ["--origin", origin]
    proc = subprocess.run(
        [*args, f"{method} {target}"],
        env=clean_environment(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 1), proc
    return proc.returncode


def test_dockgate_check_agrees_with_the_gateway(
    policy_gateway: Gateway, daemon: PrivateDaemon
) -> None:
    """For requests of the corpus and the controls, `dockgate check` exits 0 exactly when the
    gateway forwards the request to the daemon, and 1 exactly when it refuses it."""
    before = daemon_state(daemon)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda args: _dockgate_check(*args), CHECKED))
    disagreements = []
    for (method, target, host, origin), code in zip(CHECKED, verdicts, strict=True):
        fields = [] if origin is None else [f"Origin: {origin}"]
        raw = http(f"{method} {target} HTTP/1.1", *fields, host=host or "localhost")
        response = exchange(
            policy_gateway, raw, 1, head=method == "HEAD", follow_up=False
        ).responses[0]
        forwarded = not response.from_dockgate
        if forwarded != (code == 0):
            disagreements.append((method, target, host, origin, code, response.status))
    assert disagreements == []
    assert sum(code == 0 for code in verdicts) == 6, "the six controls, and only they, are allowed"
    assert daemon_state(daemon) == before
