"""Guardrails, judged by the daemon itself: an oracle test of the default guardrails.

One dockgate (a policy allowing the containers, exec, volumes and services sections, with the
DEFAULT guardrails: no ``guardrails:`` key) sits in front of the session's real dockerd 20.10.
A corpus of crafted ``ContainerCreate`` bodies (key case and Unicode-folding variants, duplicate
keys, escapes, the deprecated top-level HostConfig, odd nesting, wrong types, odd Binds and
Mounts, capabilities, namespaces, security options, sysctls, devices, framing tricks) is sent
through it as raw HTTP. Then the daemon is the oracle:

- whenever dockgate answered 201, the container is inspected *on the daemon directly* and
  nothing the default guardrails forbid may be in effect (privileged, added capabilities,
  devices, host bind mounts or host-device volumes, VolumesFrom, host or container:
  namespaces, security overrides including unmasked system paths, sysctls);
- a body that asks for something forbidden must be refused (400/403/413, Docker's
  ``{"message": ...}`` shape, from dockgate itself) and the daemon must have created nothing;
- a refused body that asks for nothing forbidden is also sent straight to the daemon: if the
  daemon creates it with nothing forbidden in effect, the refusal is a false refusal.

What the first run of this oracle found was fixed in src/ and stays here as ordinary cases:
``Mounts`` given twice (Go decodes the second array into the first one's elements, so a list
of objects given twice is now a 400), ``MaskedPaths``/``ReadonlyPaths`` (the API form of
``systempaths=unconfined``), a HostConfig in a ``POST /v1.23/containers/X/start`` body (API <
1.24 replaces the container's), exec users that are names to the daemon (``"1000 "``,
Arabic-Indic digits), a one-part ``Binds`` entry and a ``local`` tmpfs volume (false refusals).
Refusals by design (the daemon would accept, with nothing forbidden): data after the JSON
value, a list of objects given twice, the 1.40 ``Capabilities`` field (ignored by 20.10), and
``CgroupnsMode: host`` on a cgroup v1 host, where it is the daemon's default anyway. One known
false refusal stays an ``xfail(strict=True)``: nesting deeper than Python's JSON limit (1000
levels; Go's is 10000).

A few ContainerExec bodies go through a second dockgate whose policy says
``guardrails: {exec: {root: false}}`` (checked on the exec's inspect), and VolumeCreate bodies
through the first one (checked on the volume's inspect).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import socket
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dockgate.policy.tecnativa import ALL_VARIABLES
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.rawhttp import parse_head

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway's guardrails",
    ),
]

RUN = uuid.uuid4().hex[:8]
IMAGE = "dockgate-test/busybox:latest"  # what the session's busybox_image fixture imports
VICTIM = f"dgt-or-victim-{RUN}"  # a running container: container:X targets, exec target
IO_TIMEOUT = 15.0

DEFAULT_POLICY = """\
policies:
  oracle:
    rules:
      - allow: {sections: [ping, version, containers, exec, volumes, services]}
"""
EXEC_POLICY = """\
policies:
  oracle-exec:
    rules:
      - allow: {sections: [ping, version, containers, exec, volumes, services]}
    guardrails:
      exec: {root: false}
"""

NAMESPACE_FIELDS = ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
NO_NEW_PRIVILEGES = {
    "no-new-privileges",
    "no-new-privileges=true",
    "no-new-privileges:true",
    "no-new-privileges=false",
    "no-new-privileges:false",
}


# ----- raw HTTP --------------------------------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    interim: list[int]  # 1xx statuses seen before it

    @property
    def message(self) -> str | None:
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value.get("message") if isinstance(value, dict) else None

    def json(self) -> Any:
        return json.loads(self.body)


class Conn:
    """A client connection: bytes go out exactly as given, responses are read as framed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(IO_TIMEOUT)
        self.buf = b""
        self.eof = False

    @classmethod
    def tcp(cls, port: int) -> Conn:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT))

    @classmethod
    def unix(cls, path: pathlib.Path) -> Conn:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(IO_TIMEOUT)
        s.connect(str(path))
        return cls(s)

    def __enter__(self) -> Conn:
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
        except (ConnectionResetError, TimeoutError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError(f"closed after {self.buf[:200]!r}, wanted {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError(f"closed inside a line: {self.buf[:200]!r}")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def response(self) -> Response | None:
        """The next final response (1xx skipped and recorded); None on EOF before one."""
        interim: list[int] = []
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self._fill():
                    if self.buf:
                        raise AssertionError(f"closed inside a head: {self.buf[:300]!r}")
                    return None
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            status, headers = parse_head(head)
            if 100 <= status < 200:
                interim.append(status)
                continue
            break
        if status in (204, 304):
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
                self._take(2)
            body = b"".join(parts)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Response(status, headers, body, interim)


def request(
    method: str,
    target: str,
    body: bytes | None = None,
    *,
    content_type: str | None = "application/json",
    chunked: bool = False,
    expect: bool = False,
    extra: tuple[str, ...] = (),
) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: docker"]
    if content_type is not None and body is not None:
        head.append(f"Content-Type: {content_type}")
    if expect:
        head.append("Expect: 100-continue")
    head.extend(extra)
    payload = b""
    if body is not None:
        if chunked:
            head.append("Transfer-Encoding: chunked")
            pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
            payload = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            head.append(f"Content-Length: {len(body)}")
            payload = body
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


def via_gateway(port: int, raw: bytes) -> Response:
    with Conn.tcp(port) as conn:
        conn.send(raw)
        resp = conn.response()
    assert resp is not None, f"the gateway closed without answering {raw[:200]!r}"
    return resp


# ----- the daemon, seen directly ---------------------------------------------------------------


class Daemon:
    """Straight to the daemon's unix socket (never through dockgate)."""

    def __init__(self, daemon: PrivateDaemon) -> None:
        self.path = daemon.socket_path

    def call(self, method: str, target: str, body: bytes | None = None, **kw: Any) -> Response:
        with Conn.unix(self.path) as conn:
            conn.send(request(method, target, body, extra=("Connection: close",), **kw))
            resp = conn.response()
        assert resp is not None, f"the daemon closed without answering {method} {target}"
        return resp

    def inspect(self, name: str) -> dict[str, Any] | None:
        resp = self.call("GET", f"/v1.41/containers/{name}/json")
        if resp.status == 404:
            return None
        assert resp.status == 200, (resp.status, resp.body[:300])
        value: dict[str, Any] = resp.json()
        return value

    def volume(self, name: str) -> dict[str, Any] | None:
        resp = self.call("GET", f"/v1.41/volumes/{name}")
        if resp.status == 404:
            return None
        assert resp.status == 200, (resp.status, resp.body[:300])
        value: dict[str, Any] = resp.json()
        return value

    def remove(self, name: str) -> None:
        """The container (and its anonymous volumes), then the named volumes it used."""
        info = self.inspect(name)
        if info is None:
            return
        self.call("DELETE", f"/v1.41/containers/{name}?force=1&v=1")
        for mount in info.get("Mounts") or []:
            if mount.get("Type") == "volume" and mount.get("Name"):
                self.call("DELETE", f"/v1.41/volumes/{mount['Name']}?force=1")

    def names_like(self, fragment: str) -> list[str]:
        filters = json.dumps({"name": [fragment]})
        resp = self.call("GET", f"/v1.41/containers/json?all=1&filters={_quote(filters)}")
        assert resp.status == 200
        return sorted(n for c in resp.json() for n in c["Names"])


def _quote(text: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(text, safe="")


# ----- the oracle ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Baseline:
    """What a container made from a plain body gets by default on this daemon."""

    namespaces: dict[str, str]
    masked_paths: list[str]
    readonly_paths: list[str]


def host_device(options: dict[str, str] | None) -> bool:
    """Local volume driver options that mount something of the host: a bind (any `bind` or
    `rbind` word of `o` makes the kernel bind `device`, whatever `type` says), or any file
    system other than a tmpfs (whose device is only a label)."""
    if not options or not (options.get("device") or options.get("type")):
        return False
    words = (options.get("o") or "").split(",")
    return "bind" in words or "rbind" in words or options.get("type") != "tmpfs"


def forbidden_in_effect(d: Daemon, info: dict[str, Any], base: Baseline) -> list[str]:
    """Everything the default guardrails forbid that is in effect for this container."""
    hc = info["HostConfig"]
    found: list[str] = []
    if hc.get("Privileged"):
        found.append("Privileged")
    if hc.get("CapAdd"):
        found.append(f"CapAdd {hc['CapAdd']}")
    if hc.get("Capabilities"):
        found.append(f"Capabilities {hc['Capabilities']}")
    for bind in hc.get("Binds") or []:
        parts = bind.split(":")
        if len(parts) >= 2 and parts[0].startswith("/"):  # one part: an anonymous volume
            found.append(f"Binds {bind!r}")
    for mount in hc.get("Mounts") or []:
        kind = str(mount.get("Type", "")).lower()
        if kind == "bind":
            found.append(f"HostConfig.Mounts bind {mount.get('Source')!r}")
        options = ((mount.get("VolumeOptions") or {}).get("DriverConfig") or {}).get("Options")
        if kind == "volume" and host_device(options):
            found.append(f"HostConfig.Mounts volume with device {options['device']!r}")
    for mount in info.get("Mounts") or []:
        if mount.get("Type") == "bind":
            found.append(f"mount point bind {mount.get('Source')!r} -> {mount.get('Destination')}")
        elif mount.get("Type") == "volume" and mount.get("Name"):
            volume = d.volume(mount["Name"]) or {}
            options = volume.get("Options") or {}
            if volume.get("Driver") == "local" and host_device(options):
                found.append(
                    f"volume {mount['Name']} with device {options['device']!r} "
                    f"(o={options.get('o')!r}) -> {mount.get('Destination')}"
                )
    for key in ("Devices", "DeviceCgroupRules", "DeviceRequests", "VolumesFrom"):
        if hc.get(key):
            found.append(f"{key} {hc[key]}")
    for key in NAMESPACE_FIELDS:
        mode = hc.get(key) or ""
        if (mode == "host" or mode.startswith("container:")) and mode != base.namespaces[key]:
            found.append(f"{key} {mode!r}")
    for option in hc.get("SecurityOpt") or []:
        if option not in NO_NEW_PRIVILEGES:
            found.append(f"SecurityOpt {option!r}")
    if hc.get("Sysctls"):
        found.append(f"Sysctls {hc['Sysctls']}")
    if (hc.get("MaskedPaths") or []) != base.masked_paths:
        found.append(f"MaskedPaths {hc.get('MaskedPaths')!r} (systempaths unconfined)")
    if (hc.get("ReadonlyPaths") or []) != base.readonly_paths:
        found.append(f"ReadonlyPaths {hc.get('ReadonlyPaths')!r} (systempaths unconfined)")
    return found


def assert_dockgate_refusal(resp: Response, what: str) -> None:
    assert resp.status in (400, 403, 413), f"{what}: {resp.status} {resp.body[:300]!r}"
    assert resp.headers.get("server") == "dockgate", f"{what}: not dockgate's answer {resp}"
    assert "api-version" not in resp.headers, f"{what}: relayed from the daemon? {resp}"
    assert resp.message and resp.message.startswith("dockgate:"), f"{what}: {resp.body!r}"


# ----- fixtures --------------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALL_VARIABLES}
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(key, None)
    return env


@dataclasses.dataclass
class Oracle:
    daemon: Daemon
    port: int
    exec_port: int
    base: Baseline


@pytest.fixture(scope="module")
def oracle(
    daemon: PrivateDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Oracle]:
    assert busybox_image == IMAGE
    d = Daemon(daemon)
    folder = tmp_path_factory.mktemp("oracle-policies")
    default_policy = folder / "default.yaml"
    default_policy.write_text(DEFAULT_POLICY)
    exec_policy = folder / "exec.yaml"
    exec_policy.write_text(EXEC_POLICY)
    daemon.docker("run", "-d", "--name", VICTIM, IMAGE, "sleep", "600")
    env = _clean_env()
    try:
        with (
            running(Gateway(daemon.host, policy=default_policy, env=env), "oracle gw") as gw,
            running(Gateway(daemon.host, policy=exec_policy, env=env), "exec gw") as egw,
        ):
            # The daemon's defaults, from a plain body sent through the gateway.
            name = f"dgt-or-base-{RUN}"
            resp = via_gateway(
                gw.port,
                request("POST", f"/v1.41/containers/create?name={name}", _body('{"Image": @IMG@}')),
            )
            assert resp.status == 201, resp
            info = d.inspect(name)
            assert info is not None
            d.remove(name)
            hc = info["HostConfig"]
            base = Baseline(
                {k: hc.get(k) or "" for k in NAMESPACE_FIELDS},
                hc.get("MaskedPaths") or [],
                hc.get("ReadonlyPaths") or [],
            )
            assert base.masked_paths and base.readonly_paths, hc
            yield Oracle(d, gw.port, egw.port, base)
    finally:
        daemon.docker("rm", "-f", "-v", VICTIM, check=False, timeout=60)


# ----- the corpus ------------------------------------------------------------------------------


def _body(text: str, vol: str = "") -> bytes:
    """Corpus text to bytes: @IMG@ is the image (quoted), @VICTIM@ the victim's name, @VOL@ a
    volume name unique to the case. Non-ASCII characters are sent as raw UTF-8."""
    return (
        text.replace("@IMG@", json.dumps(IMAGE))
        .replace("@VICTIM@", VICTIM)
        .replace("@VOL@", vol or f"dgt-or-vol-{RUN}")
        .encode()
    )


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    body: str | bytes
    expect: str  # "deny": forbidden; "allow": nothing forbidden; "either": the daemon refuses it
    path: str = "/v1.41/containers/create"
    chunked: bool = False
    expect_continue: bool = False
    content_type: str | None = "application/json"
    known: str | None = None  # a known bypass / false refusal: xfail(strict=True)
    note: str = ""


# Refusals by design since the field table (fields.py): the daemon ignores these keys, and a
# field dockgate does not know is refused when it has a value.
UNKNOWN = "by design: a field dockgate does not know, with a value (fields.py)"


def _hc(inner: str) -> str:
    return '{"Image": @IMG@, "HostConfig": {' + inner + "}}"


def _top(fields: str) -> str:
    return '{"Image": @IMG@, ' + fields + "}"


DEVICE_VOLUME = (
    '{"Type": "volume", "Source": "@VOL@", "Target": "/host", "VolumeOptions": '
    '{"DriverConfig": {"Name": "local", "Options": '
    '{"type": "none", "o": "bind", "device": "/"}}}}'
)
PLAIN_VOLUME = '{"Type": "volume", "Source": "@VOL@", "Target": "/host"}'
DEEP = "[" * 3000 + "]" * 3000

CASES: list[Case] = [
    # -- Privileged: key case, folding, escapes, duplicates, types --------------------------------
    Case("priv-exact", _hc('"Privileged": true'), "deny"),
    Case("priv-lower", _hc('"privileged": true'), "deny"),
    Case("priv-upper", _hc('"PRIVILEGED": true'), "deny"),
    Case("priv-mixed", _hc('"pRiViLeGeD": true'), "deny"),
    Case(
        "priv-dotless-i",
        _hc('"Priv\u0131leged": true'),
        "deny",
        note="U+0131 does not fold to i: an unknown field with a value (fields.py)",
    ),
    Case("priv-dotless-i-escaped", _hc('"Priv\\u0131leged": true'), "deny", note=UNKNOWN),
    Case("priv-dotted-I", _hc('"Pr\u0130vileged": true'), "deny", note="U+0130: " + UNKNOWN),
    Case("priv-typo", _hc('"Priviledged": true'), "deny", note=UNKNOWN),
    Case("priv-escape-i", _hc('"Pr\\u0069vileged": true'), "deny"),
    Case("priv-escape-all", _hc('"\\u0050\\u0072\\u0069vileged": true'), "deny"),
    Case("priv-nul-suffix", _hc('"Privileged\\u0000": true'), "deny", note=UNKNOWN),
    Case("priv-space-suffix", _hc('"Privileged ": true'), "deny", note=UNKNOWN),
    Case(
        "priv-invalid-utf8-key",
        b'{"Image": "' + IMAGE.encode() + b'", "HostConfig": {"Priv\xffleged": true}}',
        "deny",
        note=UNKNOWN,
    ),
    Case("priv-dup-true-false", _hc('"Privileged": true, "Privileged": false'), "allow"),
    Case("priv-dup-false-true", _hc('"Privileged": false, "Privileged": true'), "deny"),
    Case("priv-dup-case-true-false", _hc('"Privileged": true, "privileged": false'), "allow"),
    Case("priv-dup-case-false-true", _hc('"privileged": false, "PRIVILEGED": true'), "deny"),
    Case(
        "priv-true-then-null",
        _hc('"Privileged": true, "Privileged": null'),
        "deny",
        note="null leaves a bool unchanged",
    ),
    Case("priv-string", _hc('"Privileged": "true"'), "deny", note="the daemon refuses it too"),
    Case("priv-number", _hc('"Privileged": 1'), "deny", note="the daemon refuses it too"),
    Case("priv-false", _hc('"Privileged": false'), "allow"),
    # -- where the HostConfig is ------------------------------------------------------------------
    Case("top-priv", _top('"Privileged": true'), "deny"),
    Case("top-priv-lower", _top('"privileged": true'), "deny"),
    Case("top-binds", _top('"Binds": ["/:/host"]'), "deny"),
    Case("top-netmode-host", _top('"NetworkMode": "host"'), "deny"),
    Case(
        "top-priv-inner-empty",
        _top('"Privileged": true, "HostConfig": {}'),
        "allow",
        note="an inner HostConfig wins: the top-level one is ignored",
    ),
    Case(
        "top-binds-netmode-inner-empty",
        _top('"HostConfig": {}, "Binds": ["/:/host"], "NetworkMode": "host"'),
        "allow",
    ),
    Case(
        "inner-priv-top-false",
        _top('"HostConfig": {"Privileged": true}, "Privileged": false'),
        "deny",
    ),
    Case("hostconfig-null-top-priv", _top('"HostConfig": null, "Privileged": true'), "deny"),
    Case(
        "hostconfig-inner-then-null",
        _top('"HostConfig": {"Privileged": true}, "HostConfig": null'),
        "allow",
    ),
    Case(
        "hostconfig-null-then-inner",
        _top('"HostConfig": null, "HostConfig": {"Privileged": true}'),
        "deny",
    ),
    Case("hostconfig-lower", _top('"hostconfig": {"privileged": true}'), "deny"),
    Case("hostconfig-long-s", _top('"Ho\u017ftconfig": {"Privileged": true}'), "deny"),
    Case("hostconfig-long-s-escaped", _top('"Ho\\u017ftConfig": {"Privileged": true}'), "deny"),
    Case("hostconfig-merge", _top('"HostConfig": {}, "HOSTCONFIG": {"Privileged": true}'), "deny"),
    Case(
        "hostconfig-lower-then-null",
        _top('"hostconfig": {"Privileged": true}, "HostConfig": null, "Privileged": false'),
        "allow",
    ),
    Case(
        "nested-networkingconfig",
        _top('"NetworkingConfig": {"HostConfig": {"Privileged": true}}'),
        "deny",
        note=UNKNOWN,
    ),
    Case(
        "nested-healthcheck",
        _top('"Healthcheck": {"HostConfig": {"Privileged": true}}'),
        "deny",
        note=UNKNOWN,
    ),
    Case(
        "nested-config",
        _top('"Config": {"HostConfig": {"Privileged": true}}'),
        "deny",
        note=UNKNOWN,
    ),
    Case(
        "nested-resources-devices",
        _hc(
            '"Resources": {"Devices": [{"PathOnHost": "/dev/mem", '
            '"PathInContainer": "/dev/mem", '
            '"CgroupPermissions": "rwm"}]}'
        ),
        "deny",
        note="Resources is embedded, not a key of its own: " + UNKNOWN,
    ),
    Case("hostconfig-string", _top('"HostConfig": "{\\"Privileged\\": true}"'), "either"),
    Case("hostconfig-array", _top('"HostConfig": [{"Privileged": true}]'), "either"),
    Case("memory-as-string", _hc('"Memory": "8388608"'), "deny", note="the daemon refuses it"),
    Case("memory-top-copied", _top('"HostConfig": {}, "Memory": 8388608'), "allow"),
    # -- Binds ------------------------------------------------------------------------------------
    Case("binds-root", _hc('"Binds": ["/:/host"]'), "deny"),
    Case("binds-double-slash", _hc('"Binds": ["//:/host"]'), "deny"),
    Case("binds-dotdot", _hc('"Binds": ["/etc/../:/x"]'), "deny"),
    Case("binds-ro", _hc('"Binds": ["/:/host:ro"]'), "deny"),
    Case("binds-docker-sock", _hc('"Binds": ["/var/run/docker.sock:/s"]'), "deny"),
    Case("binds-named-volume", _hc('"Binds": ["@VOL@:/data"]'), "allow"),
    Case("binds-named-volume-ro", _hc('"Binds": ["@VOL@:/data:ro"]'), "allow"),
    Case("binds-dot-relative", _hc('"Binds": ["./x:/x"]'), "either"),
    Case("binds-one-part", _hc('"Binds": ["/data"]'), "allow", note="an anonymous volume"),
    Case("binds-then-null", _hc('"Binds": ["/:/host"], "Binds": null'), "allow"),
    Case("binds-then-empty", _hc('"Binds": ["/:/host"], "Binds": []'), "allow"),
    Case("binds-null-then", _hc('"Binds": null, "Binds": ["/:/host"]'), "deny"),
    Case("binds-upper-key", _hc('"BINDS": ["/:/host"]'), "deny"),
    Case("binds-long-s-key", _hc('"Bind\u017f": ["/:/host"]'), "deny"),
    Case("binds-long-s-escaped", _hc('"Bind\\u017f": ["/:/host"]'), "deny"),
    Case("binds-string", _hc('"Binds": "/:/host"'), "deny", note="the daemon refuses it too"),
    # -- Mounts -----------------------------------------------------------------------------------
    Case(
        "mounts-bind", _hc('"Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]'), "deny"
    ),
    Case(
        "mounts-BIND",
        _hc('"Mounts": [{"Type": "BIND", "Source": "/", "Target": "/host"}]'),
        "deny",
        note="the daemon refuses the type too",
    ),
    Case(
        "mounts-Bind", _hc('"Mounts": [{"Type": "Bind", "Source": "/", "Target": "/host"}]'), "deny"
    ),
    Case(
        "mounts-keys-lower",
        _hc('"mounts": [{"type": "bind", "source": "/", "target": "/host"}]'),
        "deny",
    ),
    Case("mounts-volume-device", _hc(f'"Mounts": [{DEVICE_VOLUME}]'), "deny"),
    Case(
        "mounts-volume-device-noname",
        _hc(
            '"Mounts": [{"Type": "volume", "Source": "@VOL@", "Target": "/host", "VolumeOptions": '
            '{"DriverConfig": {"Options": {"type": "none", "o": "bind", "device": "/etc"}}}}]'
        ),
        "deny",
    ),
    Case(
        "mounts-volume-options-then-null",
        _hc(
            '"Mounts": [{"Type": "volume", "Source": "@VOL@", "Target": "/host", "VolumeOptions": '
            '{"DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", '
            '"device": "/"}}}, "VolumeOptions": null}]'
        ),
        "allow",
    ),
    Case("mounts-volume-plain", _hc(f'"Mounts": [{PLAIN_VOLUME}]'), "allow"),
    Case("mounts-tmpfs", _hc('"Mounts": [{"Type": "tmpfs", "Target": "/t"}]'), "allow"),
    Case(
        "mounts-no-type",
        _hc('"Mounts": [{"Source": "/", "Target": "/host"}]'),
        "deny",
        note="the daemon refuses it too",
    ),
    Case(
        "mounts-volume-tmpfs-device",
        _hc(
            '"Mounts": [{"Type": "volume", "Source": "@VOL@", "Target": "/t", "VolumeOptions": '
            '{"DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}}}]'
        ),
        "allow",
        note="a tmpfs: its device is a label",
    ),
    Case(
        "mounts-volume-tmpfs-typed-bind",
        _hc(
            '"Mounts": [{"Type": "volume", "Source": "@VOL@", "Target": "/t", "VolumeOptions": '
            '{"DriverConfig": {"Name": "local", "Options": '
            '{"type": "tmpfs", "device": "/", "o": "size=1m,rbind"}}}}]'
        ),
        "deny",
        note="issue 11 finding 1: rbind makes the kernel bind the device; allowed before",
    ),
    Case(
        "mounts-merge-arrays",
        _hc(f'"Mounts": [{DEVICE_VOLUME}], "Mounts": [{PLAIN_VOLUME}]'),
        "deny",
    ),
    Case(
        "mounts-merge-arrays-key-case",
        _hc(f'"Mounts": [{DEVICE_VOLUME}], "mounts": [{{"Type": "volume", "Target": "/h"}}]'),
        "deny",
    ),
    Case(
        "mounts-merge-options-map",
        _hc(
            f'"Mounts": [{DEVICE_VOLUME}], "Mounts": [{{"Type": "volume", "Target": "/host", '
            '"VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"type": "none"}}}}]'
        ),
        "deny",
    ),
    Case(
        "mounts-merge-two-hostconfigs",
        _top(
            f'"HostConfig": {{"Mounts": [{DEVICE_VOLUME}]}}, '
            f'"hostconfig": {{"Mounts": [{PLAIN_VOLUME}]}}'
        ),
        "deny",
    ),
    Case(
        "mounts-merge-top-level",
        _top(f'"Mounts": [{DEVICE_VOLUME}], "Mounts": [{PLAIN_VOLUME}]'),
        "deny",
    ),
    Case(
        "mounts-merge-stale-capacity",
        _hc(
            '"Mounts": [{"Type": "tmpfs", "Target": "/t"}, ' + DEVICE_VOLUME + "], "
            '"Mounts": [{"Type": "tmpfs", "Target": "/t"}], '
            '"Mounts": [{"Type": "tmpfs", "Target": "/t"}, {"Type": "volume", "Target": "/y"}]'
        ),
        "deny",
    ),
    # Refused by design (fail closed): a list of objects given twice is a 400, whatever the
    # second one holds.
    Case("mounts-then-empty", _hc(f'"Mounts": [{DEVICE_VOLUME}], "Mounts": []'), "deny"),
    # -- capabilities -----------------------------------------------------------------------------
    Case("capadd-sys_admin", _hc('"CapAdd": ["sys_admin"]'), "deny"),
    Case("capadd-CAP_SYS_ADMIN", _hc('"CapAdd": ["CAP_SYS_ADMIN"]'), "deny"),
    Case("capadd-ALL", _hc('"CapAdd": ["ALL"]'), "deny"),
    Case("capadd-space-all", _hc('"CapAdd": [" all"]'), "deny"),
    Case("capadd-string", _hc('"CapAdd": "ALL"'), "deny", note="a strslice: the daemon takes it"),
    Case("capadd-key-case", _hc('"capadd": ["NET_ADMIN"]'), "deny"),
    Case("capadd-empty", _hc('"CapAdd": []'), "allow"),
    Case("capadd-then-null", _hc('"CapAdd": ["ALL"], "CapAdd": null'), "allow"),
    Case(
        "capabilities-1.40",
        _hc('"Capabilities": ["CAP_SYS_ADMIN"]'),
        "deny",
        note="conservative: 20.10 ignores the field (Capabilities stays null)",
    ),
    Case("capdrop", _hc('"CapDrop": ["ALL"]'), "allow"),
    # -- namespaces -------------------------------------------------------------------------------
    Case("netmode-host", _hc('"NetworkMode": "host"'), "deny"),
    Case(
        "netmode-HOST",
        _hc('"NetworkMode": "HOST"'),
        "either",
        note="a network named HOST to the daemon",
    ),
    Case("netmode-kelvin-key", _hc('"Networ\u212aMode": "host"'), "deny"),
    Case("netmode-container", _hc('"NetworkMode": "container:@VICTIM@"'), "deny"),
    Case("netmode-none", _hc('"NetworkMode": "none"'), "allow"),
    Case("netmode-host-then-none", _hc('"NetworkMode": "host", "networkmode": "none"'), "allow"),
    Case("netmode-none-then-host", _hc('"NetworkMode": "none", "NETWORKMODE": "host"'), "deny"),
    Case("netmode-host-then-null", _hc('"NetworkMode": "host", "NetworkMode": null'), "deny"),
    Case("pidmode-host", _hc('"PidMode": "host"'), "deny"),
    Case("pidmode-container", _hc('"PidMode": "container:@VICTIM@"'), "deny"),
    Case("ipcmode-host", _hc('"IpcMode": "host"'), "deny"),
    Case("ipcmode-container", _hc('"IpcMode": "container:@VICTIM@"'), "deny"),
    Case("ipcmode-shareable", _hc('"IpcMode": "shareable"'), "allow"),
    Case("utsmode-host", _hc('"UTSMode": "host"'), "deny"),
    Case("utsmode-long-s-key", _hc('"UT\u017fMode": "host"'), "deny"),
    Case("usernsmode-host", _hc('"UsernsMode": "host"'), "deny"),
    Case(
        "cgroupnsmode-host",
        _hc('"CgroupnsMode": "host"'),
        "deny",
        note="on a cgroup v1 host this is the daemon's default anyway",
    ),
    Case("cgroupnsmode-private", _hc('"CgroupnsMode": "private"'), "allow"),
    # -- security options -------------------------------------------------------------------------
    Case("secopt-seccomp-eq", _hc('"SecurityOpt": ["seccomp=unconfined"]'), "deny"),
    Case("secopt-seccomp-colon", _hc('"SecurityOpt": ["seccomp:unconfined"]'), "deny"),
    Case("secopt-apparmor", _hc('"SecurityOpt": ["apparmor=unconfined"]'), "deny"),
    Case("secopt-label-eq", _hc('"SecurityOpt": ["label=disable"]'), "deny"),
    Case("secopt-label-colon", _hc('"SecurityOpt": ["label:disable"]'), "deny"),
    Case("secopt-bare-disable", _hc('"SecurityOpt": ["disable"]'), "deny"),
    Case(
        "secopt-systempaths",
        _hc('"SecurityOpt": ["systempaths=unconfined"]'),
        "deny",
        note="the daemon refuses it: the CLI sends MaskedPaths/ReadonlyPaths instead",
    ),
    Case("secopt-key-long-s", _hc('"\u017fecurityOpt": ["seccomp=unconfined"]'), "deny"),
    Case("secopt-key-upper", _hc('"SECURITYOPT": ["apparmor=unconfined"]'), "deny"),
    Case("secopt-nnp", _hc('"SecurityOpt": ["no-new-privileges"]'), "allow"),
    Case("secopt-nnp-colon-true", _hc('"SecurityOpt": ["no-new-privileges:true"]'), "allow"),
    Case("secopt-nnp-false", _hc('"SecurityOpt": ["no-new-privileges=false"]'), "allow"),
    Case(
        "secopt-dup-bad-then-nnp",
        _hc('"SecurityOpt": ["seccomp=unconfined"], "SecurityOpt": ["no-new-privileges"]'),
        "allow",
    ),
    Case(
        "secopt-dup-nnp-then-bad",
        _hc('"SecurityOpt": ["no-new-privileges"], "securityopt": ["seccomp=unconfined"]'),
        "deny",
    ),
    Case(
        "systempaths-api-form",
        _hc('"MaskedPaths": [], "ReadonlyPaths": []'),
        "deny",
        note="the API form of systempaths=unconfined",
    ),
    Case("readonlypaths-empty", _hc('"ReadonlyPaths": []'), "deny"),
    # -- sysctls, devices, volumes-from -----------------------------------------------------------
    Case("sysctls", _hc('"Sysctls": {"net.ipv4.ip_forward": "1"}'), "deny"),
    Case("sysctls-empty", _hc('"Sysctls": {}'), "allow"),
    Case(
        "sysctls-then-empty",
        _hc('"Sysctls": {"net.ipv4.ip_forward": "1"}, "Sysctls": {}'),
        "deny",
        note="maps merge",
    ),
    Case(
        "sysctls-then-null",
        _hc('"Sysctls": {"net.ipv4.ip_forward": "1"}, "Sysctls": null'),
        "allow",
    ),
    Case(
        "sysctls-long-s-key", _hc('"\u017fy\u017fctl\u017f": {"net.ipv4.ip_forward": "1"}'), "deny"
    ),
    Case(
        "devices",
        _hc(
            '"Devices": [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem", '
            '"CgroupPermissions": "rwm"}]'
        ),
        "deny",
    ),
    Case(
        "devices-key-long-s",
        _hc(
            '"Device\u017f": [{"PathOnHost": "/dev/mem", '
            '"PathInContainer": "/dev/mem", "CgroupPermissions": "rwm"}]'
        ),
        "deny",
    ),
    Case("devices-empty", _hc('"Devices": []'), "allow"),
    Case(
        "devices-then-null",
        _hc(
            '"Devices": [{"PathOnHost": "/dev/mem", '
            '"PathInContainer": "/dev/mem", "CgroupPermissions": "rwm"}], '
            '"Devices": null'
        ),
        "allow",
    ),
    Case("device-cgroup-rules", _hc('"DeviceCgroupRules": ["c *:* rwm"]'), "deny"),
    Case(
        "device-requests",
        _hc('"DeviceRequests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]'),
        "deny",
    ),
    Case("volumes-from", _hc('"VolumesFrom": ["@VICTIM@"]'), "deny"),
    Case("volumes-from-lower", _hc('"volumesfrom": ["@VICTIM@:ro"]'), "deny"),
    # -- the body as a whole ----------------------------------------------------------------------
    Case("plain", '{"Image": @IMG@}', "allow"),
    Case("leading-trailing-whitespace", ' \r\n\t{"Image": @IMG@} \n', "allow"),
    Case(
        "trailing-garbage",
        '{"Image": @IMG@} x',
        "deny",
        note="deliberate: 20.10 reads only the first value and would accept it",
    ),
    Case(
        "second-json-value",
        '{"Image": @IMG@}{"HostConfig": {"Privileged": true}}',
        "deny",
        note="deliberate: 20.10 reads only the first value and would accept it",
    ),
    Case(
        "bom", b"\xef\xbb\xbf" + _body('{"Image": @IMG@}'), "deny", note="the daemon refuses it too"
    ),
    Case(
        "invalid-utf8-label",
        b'{"Image": "' + IMAGE.encode() + b'", "Labels": {"x": "\xff"}}',
        "allow",
    ),
    Case(
        "deep-nesting-3000",
        '{"Image": @IMG@, "X": ' + DEEP + "}",
        "allow",
        known="false refusal: Python's json recursion limit (1000) refuses nesting that Go "
        "(limit 10000) decodes; harmless",
    ),
    Case(
        "deep-nesting-20000",
        '{"Image": @IMG@, "X": ' + "[" * 20000 + "]" * 20000 + "}",
        "deny",
        note="Go refuses it too",
    ),
    Case(
        "huge-body",
        '{"Image": @IMG@, "Labels": {"x": "'
        + "a" * (1024 * 1024 + 10)
        + '"}, "HostConfig": {"Privileged": true}}',
        "deny",
    ),
    Case("no-content-type", _hc('"Privileged": true'), "deny", content_type=None),
    Case(
        "chunked-forbidden", _hc('"Privileged": true, "Binds": ["/:/host"]'), "deny", chunked=True
    ),
    Case("chunked-benign", '{"Image": @IMG@}', "allow", chunked=True),
    Case("expect-continue-forbidden", _hc('"Privileged": true'), "deny", expect_continue=True),
    # -- other paths to the same handler ----------------------------------------------------------
    Case("path-unversioned", _hc('"Privileged": true'), "deny", path="/containers/create"),
    Case("path-v1.40", _hc('"Privileged": true'), "deny", path="/v1.40/containers/create"),
    Case("path-v1.23", _top('"Privileged": true'), "deny", path="/v1.23/containers/create"),
    Case("path-v1.12-binds", _top('"Binds": ["/:/host"]'), "deny", path="/v1.12/containers/create"),
]


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.known)] if case.known else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_container_create_oracle(oracle: Oracle, case: Case) -> None:
    d = oracle.daemon
    name = f"dgt-or-{case.id}-{RUN}"[:120]
    vol = f"dgt-or-vol-{case.id}-{RUN}"
    body = case.body if isinstance(case.body, bytes) else _body(case.body, vol)
    target = f"{case.path}?name={name}"
    raw = request(
        "POST",
        target,
        body,
        content_type=case.content_type,
        chunked=case.chunked,
        expect=case.expect_continue,
    )
    try:
        resp = via_gateway(oracle.port, raw)
        if case.expect_continue:
            assert resp.interim == [100], resp
        info = d.inspect(name)
        if resp.status == 201:
            assert info is not None, f"201 but no container {name}"
            problems = forbidden_in_effect(d, info, oracle.base)
            assert not problems, (
                f"BYPASS: dockgate allowed {body[:400]!r} and the daemon created a container "
                f"with {problems}"
            )
            assert case.expect != "deny", f"a forbidden body was allowed: {body[:300]!r}"
            return
        if resp.headers.get("server") != "dockgate":
            # dockgate passed it on and the daemon refused it: nothing may exist.
            assert info is None, f"the daemon answered {resp.status} but created {name}"
            assert case.expect != "deny", (
                f"dockgate passed a forbidden body; the daemon refused it itself "
                f"({resp.status} {resp.body[:200]!r})"
            )
            return
        assert_dockgate_refusal(resp, case.id)
        if case.id == "huge-body":
            assert resp.status == 413, resp
        assert info is None, f"dockgate refused ({resp.status}) but {name} exists: {info}"
        assert d.names_like(name) == []
        if case.expect == "allow":
            # Would the daemon have made it, with nothing forbidden? Then it is a false refusal.
            direct_name = name + "-direct"
            direct = d.call(
                "POST", f"{case.path}?name={direct_name}", body, content_type=case.content_type
            )
            try:
                found = d.inspect(direct_name) if direct.status == 201 else None
                if found is not None:
                    assert forbidden_in_effect(d, found, oracle.base), (
                        f"false refusal: dockgate {resp.status} {resp.message!r}; the daemon "
                        f"creates it with nothing forbidden in effect"
                    )
            finally:
                d.remove(direct_name)
    finally:
        d.remove(name)
        d.call("DELETE", f"/v1.41/volumes/{vol}?force=1")


# ----- framing: what reaches the daemon is what was judged -------------------------------------


def test_pipelined_forbidden_create_after_benign_one(oracle: Oracle) -> None:
    """Two creates in one write: the first (benign) is made, the second (forbidden) refused."""
    d = oracle.daemon
    first, second = f"dgt-or-pipe-a-{RUN}", f"dgt-or-pipe-b-{RUN}"
    raw = request(
        "POST", f"/v1.41/containers/create?name={first}", _body('{"Image": @IMG@}')
    ) + request(
        "POST",
        f"/v1.41/containers/create?name={second}",
        _body(_hc('"Privileged": true, "Binds": ["/:/host"]')),
    )
    try:
        with Conn.tcp(oracle.port) as conn:
            conn.send(raw)
            one, two = conn.response(), conn.response()
        assert one is not None and one.status == 201, one
        assert two is not None, "no answer to the second request"
        assert_dockgate_refusal(two, "pipelined")
        assert d.inspect(second) is None
        info = d.inspect(first)
        assert info is not None
        assert forbidden_in_effect(d, info, oracle.base) == []
    finally:
        d.remove(first)
        d.remove(second)


def test_content_length_shorter_than_body(oracle: Oracle) -> None:
    """Content-Length covers a benign object; the forbidden rest is not a request at all."""
    d = oracle.daemon
    name = f"dgt-or-clshort-{RUN}"
    benign = _body('{"Image": @IMG@}')
    rest = b', "HostConfig": {"Privileged": true, "Binds": ["/:/host"]}}'
    head = (
        f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: docker\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(benign)}\r\n\r\n"
    ).encode()
    try:
        with Conn.tcp(oracle.port) as conn:
            conn.send(head + benign + rest + b"\r\n\r\n")
            one = conn.response()
            two = conn.response()
        assert one is not None and one.status == 201, one
        # The rest is not a request: dockgate answers it itself (or just closes).
        assert two is None or (two.status >= 400 and two.headers.get("server") == "dockgate"), two
        info = d.inspect(name)
        assert info is not None
        assert forbidden_in_effect(d, info, oracle.base) == []
        assert d.names_like("dgt-or-clshort-") == [f"/{name}"]
    finally:
        d.remove(name)


def test_content_length_longer_than_body(oracle: Oracle) -> None:
    """A body cut short (the client half-closes): nothing is judged, nothing forwarded."""
    d = oracle.daemon
    name = f"dgt-or-cllong-{RUN}"
    body = _body(_hc('"Privileged": true'))
    head = (
        f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: docker\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 64}\r\n\r\n"
    ).encode()
    try:
        with Conn.tcp(oracle.port) as conn:
            conn.send(head + body)
            conn.sock.shutdown(socket.SHUT_WR)
            resp = conn.response()
        assert resp is None or resp.status >= 400, resp
        time.sleep(0.2)
        assert d.inspect(name) is None
    finally:
        d.remove(name)


@pytest.mark.parametrize(
    "fields",
    [
        ("Transfer-Encoding: chunked", "Content-Length: 5"),
        ("Content-Length: 5", "Content-Length: 500"),
        ("Transfer-Encoding: gzip, chunked",),
        ("Transfer-Encoding: identity",),
    ],
    ids=["te-and-cl", "two-cl", "te-gzip-chunked", "te-identity"],
)
def test_ambiguous_framing_of_a_forbidden_body(oracle: Oracle, fields: tuple[str, ...]) -> None:
    d = oracle.daemon
    name = f"dgt-or-frame-{RUN}"
    body = _body(_hc('"Privileged": true, "Binds": ["/:/host"]'))
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    payload = chunked if any("chunked" in f for f in fields) else body
    head = (
        f"POST /v1.41/containers/create?name={name} HTTP/1.1\r\nHost: docker\r\n"
        "Content-Type: application/json\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n"
    ).encode()
    try:
        with Conn.tcp(oracle.port) as conn:
            conn.send(head + payload)
            conn.sock.shutdown(socket.SHUT_WR)
            resp = conn.response()
        assert resp is None or resp.status >= 400, resp
        time.sleep(0.2)
        info = d.inspect(name)
        assert info is None or forbidden_in_effect(d, info, oracle.base) == [], info
        assert info is None, "created from an ambiguously framed request"
    finally:
        d.remove(name)


# ----- a HostConfig given to ContainerStart (API < 1.24) ---------------------------------------


def test_start_with_a_host_config_on_an_old_api_version(oracle: Oracle) -> None:
    d = oracle.daemon
    name = f"dgt-or-start-{RUN}"
    create = _body('{"Image": @IMG@, "Cmd": ["head", "-n1", "/host/etc/os-release"]}')
    try:
        resp = via_gateway(
            oracle.port, request("POST", f"/v1.41/containers/create?name={name}", create)
        )
        assert resp.status == 201, resp
        start = via_gateway(
            oracle.port,
            request("POST", f"/v1.23/containers/{name}/start", b'{"Binds": ["/:/host:ro"]}'),
        )
        if start.headers.get("server") == "dockgate":
            assert_dockgate_refusal(start, "start with a HostConfig")
            return
        deadline = time.monotonic() + 10
        info = d.inspect(name)
        while info and info["State"]["Status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
            info = d.inspect(name)
        assert info is not None
        logs = d.call("GET", f"/v1.41/containers/{name}/logs?stdout=1&stderr=1").body
        problems = forbidden_in_effect(d, info, oracle.base)
        assert not problems, (
            f"BYPASS: POST /v1.23/containers/{name}/start with body "
            f'{{"Binds": ["/:/host:ro"]}} answered {start.status}; the container now has '
            f"{problems} and printed the host's /etc/os-release: {logs[8:80]!r}"
        )
    finally:
        d.remove(name)


# ----- ContainerExec ---------------------------------------------------------------------------


def exec_problems(user: str, privileged: bool) -> list[str]:
    """What an exec with exec.root false may not be: privileged, or a user that is not a
    numeric (ASCII digits, as runc's strconv.Atoi reads it) uid other than 0."""
    found = []
    if privileged:
        found.append("privileged exec")
    uid = user.split(":", maxsplit=1)[0]
    if not (uid.isascii() and uid.isdigit()):
        found.append(f"user {user!r} is looked up by NAME in the container's /etc/passwd")
    elif int(uid) == 0:
        found.append(f"user {user!r} is root")
    return found


EXEC_CASES = [
    ("user-0", '{"Cmd": ["true"], "User": "0"}', "deny"),
    ("user-0000", '{"Cmd": ["true"], "User": "0000"}', "deny"),
    ("user-0-0", '{"Cmd": ["true"], "User": "0:0"}', "deny"),
    ("user-root", '{"Cmd": ["true"], "User": "root"}', "deny"),
    ("user-empty", '{"Cmd": ["true"], "User": ""}', "deny"),
    ("user-absent", '{"Cmd": ["true"]}', "deny"),
    ("user-space-0", '{"Cmd": ["true"], "User": " 0"}', "deny"),
    ("user-number", '{"Cmd": ["true"], "User": 0}', "deny"),
    ("user-key-lower", '{"Cmd": ["true"], "user": "0"}', "deny"),
    ("user-key-long-s", '{"Cmd": ["true"], "U\u017fer": "0"}', "deny"),
    ("user-1000-then-0", '{"Cmd": ["true"], "User": "1000", "USER": "0"}', "deny"),
    ("user-0-then-null", '{"Cmd": ["true"], "User": "0", "User": null}', "deny"),
    ("user-1000", '{"Cmd": ["true"], "User": "1000"}', "allow"),
    ("user-1000-1000", '{"Cmd": ["true"], "User": "1000:1000"}', "allow"),
    ("user-0-then-1000", '{"Cmd": ["true"], "User": "0", "user": "1000"}', "allow"),
    ("privileged", '{"Cmd": ["true"], "User": "1000", "Privileged": true}', "deny"),
    ("privileged-lower", '{"Cmd": ["true"], "User": "1000", "privileged": true}', "deny"),
    ("privileged-upper", '{"Cmd": ["true"], "User": "1000", "PRIVILEGED": true}', "deny"),
    ("privileged-escaped", '{"Cmd": ["true"], "User": "1000", "Pr\\u0069vileged": true}', "deny"),
    (
        "privileged-true-false",
        '{"Cmd": ["true"], "User": "1000", "Privileged": true, "privileged": false}',
        "allow",
    ),
    # By design: a field dockgate does not know, with a value (fields.py).
    ("privileged-typo", '{"Cmd": ["true"], "User": "1000", "Priviledged": true}', "deny"),
]
# Not numbers to the daemon (strconv.Atoi): user names, whatever str.isdigit() says.
EXEC_CASES_NAMES = [
    ("user-arabic-indic-digits", "\u0661\u0660\u0660\u0660", None),
    ("user-fullwidth-digits", "\uff11\uff10\uff10\uff10", None),
    ("user-superscript-one", "\u00b9", None),
    ("user-1000-trailing-space", "1000 ", None),
    ("user-1000-trailing-tab", "1000\t", None),
    ("user-1000-trailing-nbsp", "1000\u00a0", None),
]


def _exec_params() -> list[Any]:
    out = [pytest.param(body, expect, id=cid) for cid, body, expect in EXEC_CASES]
    for cid, user, known in EXEC_CASES_NAMES:
        body = json.dumps({"Cmd": ["true"], "User": user}, ensure_ascii=False)
        marks = [pytest.mark.xfail(strict=True, reason=known)] if known else []
        out.append(pytest.param(body, "deny", id=cid, marks=marks))
    return out


def _exec_create(port: int, body: bytes) -> Response:
    return via_gateway(port, request("POST", f"/v1.41/containers/{VICTIM}/exec", body))


@pytest.mark.parametrize(("body", "expect"), _exec_params())
def test_exec_oracle_without_root(oracle: Oracle, body: str, expect: str) -> None:
    d = oracle.daemon
    resp = _exec_create(oracle.exec_port, body.encode())
    if resp.status == 201:
        info = d.call("GET", f"/v1.41/exec/{resp.json()['Id']}/json").json()
        process = info["ProcessConfig"]
        problems = exec_problems(process.get("user") or "", bool(process.get("privileged")))
        assert not problems, f"BYPASS: dockgate allowed exec {body!r}: {problems}"
        assert expect == "allow", f"a forbidden exec was allowed: {body!r}"
    else:
        assert_dockgate_refusal(resp, body)
        assert expect == "deny", f"refused: {resp.message}"


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ('{"Cmd": ["true"], "User": "0"}', "allow"),
        ('{"Cmd": ["true"]}', "allow"),
        ('{"Cmd": ["true"], "Privileged": true}', "deny"),
        ('{"Cmd": ["true"], "privileged": true}', "deny"),
        ('{"Cmd": ["true"], "Privileged": false, "PRIVILEGED": true}', "deny"),
    ],
    ids=["root", "no-user", "privileged", "privileged-lower", "privileged-dup"],
)
def test_exec_oracle_default_guardrails(oracle: Oracle, body: str, expect: str) -> None:
    d = oracle.daemon
    resp = _exec_create(oracle.port, body.encode())
    if resp.status == 201:
        info = d.call("GET", f"/v1.41/exec/{resp.json()['Id']}/json").json()
        assert not info["ProcessConfig"].get("privileged"), f"BYPASS: privileged exec {body}"
        assert expect == "allow"
    else:
        assert_dockgate_refusal(resp, body)
        assert expect == "deny"


def test_exec_user_superscript_digit_is_refused_cleanly(oracle: Oracle) -> None:
    """'¹'.isdigit() is True but int('¹') raises: a refusal, not a dropped connection."""
    d = oracle.daemon
    before = (d.inspect(VICTIM) or {}).get("ExecIDs") or []
    with Conn.tcp(oracle.exec_port) as conn:
        conn.send(
            request(
                "POST",
                f"/v1.41/containers/{VICTIM}/exec",
                json.dumps({"Cmd": ["true"], "User": "\u00b9"}).encode(),
            )
        )
        resp = conn.response()
    after = (d.inspect(VICTIM) or {}).get("ExecIDs") or []
    assert len(after) == len(before), "the exec reached the daemon"
    assert resp is not None, "the gateway closed the connection without an answer"
    assert_dockgate_refusal(resp, "User ¹")


@pytest.mark.parametrize(
    "user",
    [
        pytest.param("1000 ", id="space"),
        pytest.param("\u0661\u0660\u0660\u0660", id="arabic"),
    ],
)
def test_exec_user_that_resolves_to_root(oracle: Oracle, daemon: PrivateDaemon, user: str) -> None:
    """The passwd entries could come with the image, or PUT /containers/X/archive (allowed by
    the containers section); here they are written straight on the daemon."""
    d = oracle.daemon
    entries = "".join(f"{u}:x:0:0::/:/bin/sh\n" for u in ("1000 ", "\u0661\u0660\u0660\u0660"))
    have = daemon.docker("exec", VICTIM, "cat", "/etc/passwd").stdout.decode()
    if entries not in have:
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:
            data = (have + entries).encode()
            item = tarfile.TarInfo("passwd")
            item.size = len(data)
            item.mode = 0o644
            t.addfile(item, io.BytesIO(data))
        put = d.call(
            "PUT",
            f"/v1.41/containers/{VICTIM}/archive?path=/etc",
            tar.getvalue(),
            content_type="application/x-tar",
        )
        assert put.status == 200, put
    out = f"/tmp/uid-{uuid.uuid4().hex[:8]}"
    body = json.dumps({"Cmd": ["sh", "-c", f"id -u > {out}"], "User": user}).encode()
    resp = _exec_create(oracle.exec_port, body)
    if resp.status != 201:
        assert_dockgate_refusal(resp, f"exec as {user!r}")
        return
    exec_id = resp.json()["Id"]
    started = d.call("POST", f"/v1.41/exec/{exec_id}/start", b'{"Detach": true}')
    assert started.status == 200, started
    deadline = time.monotonic() + 10
    uid = b""
    while time.monotonic() < deadline and not uid:
        uid = daemon.docker("exec", VICTIM, "cat", out, check=False).stdout.strip()
        time.sleep(0.05)
    raise AssertionError(
        f"BYPASS: exec with User {user!r} allowed by the exec.root=false policy ran as uid "
        f"{uid.decode()!r}"
    )


# ----- VolumeCreate ----------------------------------------------------------------------------

VOLUME_CASES = [
    ("plain", '{"Name": "@VOL@"}', "allow", None),
    ("local-plain", '{"Name": "@VOL@", "Driver": "local"}', "allow", None),
    (
        "device-bind",
        '{"Name": "@VOL@", "Driver": "local", "DriverOpts": '
        '{"type": "none", "o": "bind", "device": "/"}}',
        "deny",
        None,
    ),
    (
        "device-default-driver",
        '{"Name": "@VOL@", "DriverOpts": {"type": "none", "o": "bind", "device": "/etc"}}',
        "deny",
        None,
    ),
    (
        "device-ro",
        '{"Name": "@VOL@", "DriverOpts": {"type": "none", "o": "bind,ro", "device": "/"}}',
        "deny",
        None,
    ),
    (
        "driveropts-key-lower",
        '{"Name": "@VOL@", "driveropts": {"type": "none", "o": "bind", "device": "/"}}',
        "deny",
        None,
    ),
    (
        "driver-key-upper",
        '{"Name": "@VOL@", "DRIVER": "local", "DriverOpts": '
        '{"type": "none", "o": "bind", "device": "/"}}',
        "deny",
        None,
    ),
    (
        "driveropts-then-empty",
        '{"Name": "@VOL@", "DriverOpts": '
        '{"type": "none", "o": "bind", "device": "/"}, "DriverOpts": {}}',
        "deny",
        None,
    ),
    (
        "driveropts-then-null",
        '{"Name": "@VOL@", "DriverOpts": '
        '{"type": "none", "o": "bind", "device": "/"}, "DriverOpts": null}',
        "allow",
        None,
    ),
    (
        "driveropts-split",
        '{"Name": "@VOL@", "DriverOpts": {"type": "none", "o": "bind"}, '
        '"DriverOpt\u017f": {"device": "/"}}',
        "deny",
        None,
    ),
    (
        "device-key-capital",
        '{"Name": "@VOL@", "DriverOpts": {"type": "none", "o": "bind", "Device": "/"}}',
        "either",
        None,
    ),
    (
        "tmpfs",
        '{"Name": "@VOL@", "DriverOpts": {"type": "tmpfs", "device": "tmpfs"}}',
        "allow",
        None,
    ),
]


def _volume_params() -> list[Any]:
    out = []
    for cid, body, expect, known in VOLUME_CASES:
        marks = [pytest.mark.xfail(strict=True, reason=known)] if known else []
        out.append(pytest.param(body, expect, id=cid, marks=marks))
    return out


@pytest.mark.parametrize(("body", "expect"), _volume_params())
def test_volume_create_oracle(oracle: Oracle, body: str, expect: str) -> None:
    d = oracle.daemon
    name = f"dgt-or-v-{uuid.uuid4().hex[:10]}"
    data = _body(body, name)
    try:
        resp = via_gateway(oracle.port, request("POST", "/v1.41/volumes/create", data))
        volume = d.volume(name)
        if resp.status == 201:
            assert volume is not None
            if volume["Driver"] == "local" and host_device(volume.get("Options")):
                raise AssertionError(f"BYPASS: volume {volume}")
            assert expect != "deny", f"a forbidden volume was allowed: {data!r}"
            return
        if resp.headers.get("server") != "dockgate":
            assert volume is None
            assert expect != "deny"
            return
        assert_dockgate_refusal(resp, body)
        assert volume is None
        if expect == "allow":
            direct = d.call("POST", "/v1.41/volumes/create", data)
            made = d.volume(name) if direct.status == 201 else None
            assert made is None or host_device(made.get("Options")), (
                f"false refusal: dockgate {resp.status} {resp.message!r}; the daemon makes {made}"
            )
    finally:
        d.call("DELETE", f"/v1.41/volumes/{name}?force=1")
