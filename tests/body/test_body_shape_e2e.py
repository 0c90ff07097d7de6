"""What a request body may be, end to end against the session's dockerd (issue 11, findings 3
and 4, and the content types per operation).

Each attack is first sent straight to the daemon, to show that it works there (the tests are
not vacuous), then through dockgate, which must refuse it and leave the daemon unchanged.
Policies: the default guardrails (tests/policies/guardrails-defaults.yaml) and Tecnativa
variables (no policy file, so no guardrails at all).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pathlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping

import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, gateway_env, running
from support.paths import TEST_POLICIES

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        os.environ.get("DOCKGATE_TEST_DIRECT", "") not in ("", "0"),
        reason="DOCKGATE_TEST_DIRECT=1: these tests are about the gateway",
    ),
]

POLICY = TEST_POLICIES / "guardrails-defaults.yaml"
IMAGE = "dockgate-test/busybox:latest"
RUN = uuid.uuid4().hex[:8]
FORM_REFUSAL = {"message": "dockgate: form-encoded bodies are not accepted"}
IO_TIMEOUT = 60.0


def exchange(
    address: str | int, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] = {}
) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange (Connection: close) with the daemon's unix socket (a path) or a
    gateway (a TCP port); the body of the answer de-chunked."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(IO_TIMEOUT)
        s.connect(address if isinstance(address, str) else ("127.0.0.1", address))
        lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if "Transfer-Encoding" not in headers:
            lines.append(f"Content-Length: {len(body)}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        with contextlib.suppress(ConnectionResetError):  # answered before the whole body
            while chunk := s.recv(65536):
                data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        rest = out
    return int(head.split(b" ", 2)[1]), rest


def daemon_json(daemon: PrivateDaemon, target: str) -> object:
    status, body = exchange(str(daemon.socket_path), "GET", target)
    return json.loads(body) if status == 200 else None


@pytest.fixture(scope="module")
def guarded(daemon: PrivateDaemon) -> Iterator[Gateway]:
    """dockgate with the default guardrails."""
    with running(Gateway(daemon.host, "--policy", str(POLICY))) as gw:
        yield gw


@pytest.fixture(scope="module")
def tecnativa(daemon: PrivateDaemon) -> Iterator[Gateway]:
    """dockgate with Tecnativa variables only: builds, containers, POST, and ALLOW_START."""
    env = gateway_env(
        {"BUILD": "1", "CONTAINERS": "1", "POST": "1", "ALLOW_START": "1", "IMAGES": "1"}
    )
    with running(Gateway(daemon.host, policy=None, env=env)) as gw:
        yield gw


# ----- finding 3: a multipart body on POST /build ---------------------------------------------


class _Dockerfile(http.server.BaseHTTPRequestHandler):
    """Serves one Dockerfile as text/plain, which the daemon's `remote=` takes as a Dockerfile."""

    dockerfile = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.dockerfile)))
        self.end_headers()
        self.wfile.write(self.dockerfile)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def dockerfile_url(busybox_image: str) -> Iterator[str]:
    """A Dockerfile whose RUN step writes its network namespace to /netns."""
    _Dockerfile.dockerfile = (
        f"FROM {busybox_image}\nRUN readlink /proc/self/ns/net > /netns\n".encode()
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dockerfile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/Dockerfile"
    finally:
        server.shutdown()
        server.server_close()


# moby 20.10's postBuild peeks at the body (wrapOutputBufferedUntilRequestRead: a 4 KiB
# bufio.Reader) before FormValue parses it: the form's fields must come after that much. Go's
# multipart reader skips a preamble line by line (each under its 4 KiB buffer).
PREAMBLE = (b"p" * 62 + b"\r\n") * 128


def multipart(fields: Mapping[str, str], boundary: str = "dgtboundary") -> tuple[bytes, str]:
    """A multipart/form-data body (a preamble, which Go's reader skips, then the fields)."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    body = "".join(parts) + f"--{boundary}--\r\n"
    return PREAMBLE + b"\r\n" + body.encode(), f"multipart/form-data; boundary={boundary}"


def urlencoded(fields: Mapping[str, str]) -> bytes:
    pairs = b"".join(f"&{k}={v}".encode() for k, v in fields.items())
    return b"pad=" + b"p" * len(PREAMBLE) + pairs


def built_netns(daemon: PrivateDaemon, tag: str) -> str | None:
    """The network namespace the image's RUN step ran in; None if there is no such image."""
    proc = daemon.docker("run", "--rm", tag, "cat", "/netns", check=False)
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def test_form_build_options_run_in_the_hosts_network(
    daemon: PrivateDaemon, guarded: Gateway, tecnativa: Gateway, dockerfile_url: str
) -> None:
    """Finding 3: Go's FormValue reads build options from a multipart body (and ParseForm
    from a url-encoded one), so `networkmode=host` there, absent from the query, runs RUN
    steps in the host's network namespace: shown on the daemon. Through dockgate, with the
    default guardrails and with Tecnativa variables, both bodies are refused (400) and no
    image is built."""
    host_netns = os.readlink("/proc/self/ns/net")
    query = f"/v1.41/build?remote={dockerfile_url}&nocache=1&rm=1"
    direct = {"networkmode": "host", "t": f"dgt-shape-direct-{RUN}"}
    plain = f"dgt-shape-plain-{RUN}"
    try:
        body, content_type = multipart(direct)
        headers = {"Content-Type": content_type}
        status, output = exchange(str(daemon.socket_path), "POST", query, body, headers)
        assert status == 200, output[-500:]
        assert built_netns(daemon, direct["t"]) == host_netns
        status, output = exchange(str(daemon.socket_path), "POST", f"{query}&t={plain}")
        assert status == 200, output[-500:]
        assert built_netns(daemon, plain) not in (None, host_netns)
        for gw in (guarded, tecnativa):
            fields = {"networkmode": "host", "t": f"dgt-shape-{gw.port}-{RUN}"}
            body, content_type = multipart(fields)
            status, answer = exchange(gw.port, "POST", query, body, {"Content-Type": content_type})
            assert (status, json.loads(answer)) == (400, FORM_REFUSAL), answer
            form = urlencoded(fields)
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            status, answer = exchange(gw.port, "POST", query, form, headers)
            assert (status, json.loads(answer)) == (400, FORM_REFUSAL), answer
            assert daemon_json(daemon, f"/images/{fields['t']}/json") is None
    finally:
        for tag in (direct["t"], plain):
            daemon.docker("rmi", "-f", tag, check=False)


# ----- finding 4: a HostConfig in a start body, with Tecnativa variables ------------------------


def _created(daemon: PrivateDaemon, name: str) -> None:
    daemon.docker("create", "--name", name, IMAGE, "cat", "/host/etc/hostname")


def _wait_exit(daemon: PrivateDaemon, name: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while True:
        info = daemon_json(daemon, f"/containers/{name}/json")
        assert isinstance(info, dict)
        state = info["State"]
        assert isinstance(state, dict)
        if state["Status"] != "running" or time.monotonic() > deadline:
            return info


def _logs(daemon: PrivateDaemon, name: str) -> bytes:
    return daemon.docker("logs", name, check=False).stdout


def test_legacy_start_body_is_refused_in_environment_policies(
    daemon: PrivateDaemon, tecnativa: Gateway
) -> None:
    """Finding 4: with ALLOW_START=1 (Tecnativa variables, no guardrails), a start body at API
    1.23 is a HostConfig that replaces the container's: on the daemon, `{"Binds":["/:/host:ro"]}`
    lets the container read the host's /etc/hostname. Through dockgate it is refused (403), the
    container stays as it was created, and a start without the body runs it without the host's
    files. A chunked `{}` (which 20.10 would decode as an empty HostConfig) is forwarded as no
    body."""
    hostname = pathlib.Path("/etc/hostname").read_bytes().strip()
    binds = b'{"Binds": ["/:/host:ro"]}'
    json_type = {"Content-Type": "application/json"}
    direct, through, chunked = (f"dgt-shape-{what}-{RUN}" for what in ("d", "g", "c"))
    try:
        _created(daemon, direct)
        status, answer = exchange(
            str(daemon.socket_path), "POST", f"/v1.23/containers/{direct}/start", binds, json_type
        )
        assert status == 204, answer
        _wait_exit(daemon, direct)
        assert hostname in _logs(daemon, direct), "the attack does not work on this daemon"

        _created(daemon, through)
        status, answer = exchange(
            tecnativa.port, "POST", f"/v1.23/containers/{through}/start", binds, json_type
        )
        assert status == 403, answer
        assert "below API 1.24" in json.loads(answer)["message"]
        info = daemon_json(daemon, f"/containers/{through}/json")
        assert isinstance(info, dict)
        assert info["State"]["Status"] == "created"  # type: ignore[index]
        assert not info["HostConfig"]["Binds"]  # type: ignore[index]
        status, answer = exchange(tecnativa.port, "POST", f"/v1.23/containers/{through}/start")
        assert status == 204, answer
        info = _wait_exit(daemon, through)
        assert not info["HostConfig"]["Binds"]  # type: ignore[index]
        assert hostname not in _logs(daemon, through)

        _created(daemon, chunked)
        status, answer = exchange(
            tecnativa.port,
            "POST",
            f"/v1.23/containers/{chunked}/start",
            b"2\r\n{}\r\n0\r\n\r\n",
            json_type | {"Transfer-Encoding": "chunked"},
        )
        assert status == 204, answer
    finally:
        for name in (direct, through, chunked):
            daemon.docker("rm", "-f", name, check=False)


# ----- bodies on operations that read none ---------------------------------------------------


def test_bodies_on_operations_that_read_none(
    daemon: PrivateDaemon, tecnativa: Gateway, guarded: Gateway
) -> None:
    """dockerode repeats its options as a JSON body on POSTs that read none (a kill with
    `{"signal": "SIGKILL"}`): read and dropped, the kill works. A text/plain body there is
    refused (415), as is a JSON body on ContainerCreate sent as text/plain; the Go client's
    `text/plain` with an empty body passes."""
    name = f"dgt-shape-kill-{RUN}"
    try:
        daemon.docker("run", "-d", "--name", name, IMAGE, "sleep", "300")
        for gw in (tecnativa, guarded):
            status, answer = exchange(
                gw.port,
                "POST",
                f"/v1.41/containers/{name}/kill?signal=SIGSTOP",
                b"not json",
                {"Content-Type": "text/plain"},
            )
            assert status == 415, answer
        info = daemon_json(daemon, f"/containers/{name}/json")
        assert info["State"]["Status"] == "running"  # type: ignore[index]
        status, answer = exchange(
            tecnativa.port,
            "POST",
            f"/v1.41/containers/{name}/kill?signal=SIGKILL",
            b'{"signal":"SIGKILL"}',
            {"Content-Type": "application/json"},
        )
        assert status == 204, answer
        info = _wait_exit(daemon, name)
        assert info["State"]["Status"] == "exited"  # type: ignore[index]
        status, answer = exchange(
            guarded.port,
            "POST",
            f"/v1.41/containers/{name}/start",
            b"",
            {"Content-Type": "text/plain"},
        )
        assert status == 204, answer
        create = json.dumps({"Image": IMAGE, "Cmd": ["true"]}).encode()
        status, answer = exchange(
            guarded.port,
            "POST",
            f"/v1.41/containers/create?name={name}-2",
            create,
            {"Content-Type": "text/plain"},
        )
        assert status == 415, answer
        assert daemon_json(daemon, f"/containers/{name}-2/json") is None
    finally:
        daemon.docker("rm", "-f", name, check=False)
