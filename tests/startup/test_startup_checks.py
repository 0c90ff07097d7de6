"""Issue 13, "loop and start-up checks" and "errors that name the fix": each message, shown by
real `dockgate serve` / `dockgate check` / `dockgate token` processes (and, where it is about
requests, the private daemon).

Every test here fails on the code before issue 13: the gateway started on its own listener and
looped, started on a directory, printed `[SSL] PEM lib`, ignored typos silently, named
`--workers` for `DOCKGATE_WORKERS`, said `(rule 1)`, refused `dockgate check GET /path`, and
`token create` in a missing directory ended in a traceback.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import trustme

from dockgate.addresses import parse_address
from dockgate.startup.checks import check_upstream_socket
from support.daemon import PrivateDaemon, free_tcp_port
from support.fake_upstream import FakeUpstream
from support.gateway import Gateway, gateway_env, run_dockgate, running, serve_command
from support.remote import write_htpasswd

START_TIMEOUT = 20


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`dockgate serve ARGS` expected to stop by itself (a refusal at start)."""
    return subprocess.run(
        serve_command(*args),
        env=gateway_env(env),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


def dockgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_dockgate(*args, env=env, timeout=START_TIMEOUT)


def new_gateway(upstream: str, *args: str, **kwargs: Any) -> Gateway:
    """A gateway process with this tree's code and no DOCKER_HOST (support.gateway)."""
    kwargs.setdefault("env", gateway_env())
    return Gateway(upstream, *args, **kwargs)


@pytest.fixture
def short_tmp() -> Iterator[pathlib.Path]:
    """A short directory for unix sockets (AF_UNIX paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="dg13-", dir="/tmp") as path:
        yield pathlib.Path(path)


# ----- the gateway as its own upstream ----------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "upstream"),
    [
        ("tcp://0.0.0.0:{port}", "tcp://127.0.0.1:{port}"),  # wildcard vs loopback
        ("tcp://127.0.0.1:{port}", "tcp://localhost:{port}"),  # a name for it
        ("tcp://127.0.0.1:{port}", "tcp://127.0.0.1:{port}"),
    ],
)
def test_docker_host_naming_the_gateway_is_refused_at_start(listen: str, upstream: str) -> None:
    """`DOCKER_HOST` pointing at the gateway (as a shell set up for its clients leaves it)
    and a new `dockgate serve`: refused at start, naming the loop and DOCKER_HOST. Before,
    it started and forwarded to itself until `Too many open files`."""
    port = free_tcp_port()
    proc = serve(
        "--listen",
        listen.format(port=port),
        "--insecure",
        env={"DOCKER_HOST": upstream.format(port=port), "CONTAINERS": "1"},
    )
    assert proc.returncode == 2, proc
    assert "is this gateway's own listener" in proc.stderr, proc.stderr
    assert "(a loop)" in proc.stderr and "DOCKER_HOST" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_unix_upstream_that_is_the_listener_is_refused(short_tmp: pathlib.Path) -> None:
    """The same socket path, and a symbolic link to the listener's socket: refused."""
    sock = short_tmp / "dg.sock"
    same = serve("--listen", f"unix://{sock}", "--upstream", f"unix://{sock}")
    assert same.returncode == 2, same
    assert f"the upstream unix://{sock} is this gateway's own listener" in same.stderr
    assert "does not exist" not in same.stderr, "said before looking at the socket"

    link = short_tmp / "link.sock"
    link.symlink_to(sock)
    linked = serve("--listen", f"unix://{sock}", "--upstream", f"unix://{link}")
    assert linked.returncode == 2, linked
    assert "is this gateway's own listener" in linked.stderr, linked.stderr


def test_two_gateways_in_a_ring_answer_508_and_the_log_stays_bounded() -> None:
    """A's upstream is B, B's upstream is A (neither is its own listener, so both start): a
    request goes round once, comes back to A carrying A's hop token, and gets 508 Loop
    Detected in Docker's message shape. Each request adds a bounded number of access-log
    lines (before: endless forwarding, 232 MB of log in minutes)."""
    port_a, port_b = free_tcp_port(), free_tcp_port()
    a = new_gateway(f"tcp://127.0.0.1:{port_b}", listen=f"tcp://127.0.0.1:{port_a}")
    b = new_gateway(f"tcp://127.0.0.1:{port_a}", listen=f"tcp://127.0.0.1:{port_b}")
    with running(a, "gateway A"), running(b, "gateway B"):
        # B's start-up _ping goes round through A back to B, which is not serving yet (it is
        # pinging): no answer in time, a warning and not a failure.
        b.wait_stderr(r"warning: the Docker daemon at tcp://\S+ does not answer")
        for _ in range(5):
            answer = requests.get(f"{a.http_base}/v1.41/containers/json", timeout=10)
            assert answer.status_code == 508, answer.text
            assert answer.headers["Content-Type"] == "application/json"
            message = answer.json()["message"]
            assert message.startswith("dockgate: this request came back"), message
            assert "--upstream" in message
        time.sleep(0.5)  # let the access lines of the last exchange arrive
        lines = [line for line in a.stdout() + b.stdout() if "/v1.41/containers/json" in line]
        # Per request: A's outer exchange, B's, and A's refusal of the returning one.
        assert len(lines) == 5 * 3, "".join(lines)
        assert sum("decision=deny:-:loop" in line for line in lines) == 5, "".join(lines)
        assert a.alive() and b.alive()


def test_a_chain_of_gateways_to_the_daemon_still_works(daemon: PrivateDaemon) -> None:
    """The hop field is harmless: the daemon ignores it, and a gateway in front of another
    one (a chain, not a ring) forwards as before."""
    inner = new_gateway(daemon.host)
    with running(inner, "the inner gateway"):
        outer = new_gateway(inner.url)
        with running(outer, "the outer gateway"):
            listing = requests.get(f"{outer.http_base}/v1.41/containers/json", timeout=10)
            assert listing.status_code == 200, listing.text
            assert isinstance(listing.json(), list)
            version = requests.get(f"{outer.http_base}/version", timeout=10)
            assert version.status_code == 200 and "ApiVersion" in version.json()


# ----- the upstream socket, _ping and certificates at start -------------------------------------


def test_an_upstream_that_is_a_directory_is_refused(short_tmp: pathlib.Path) -> None:
    """`-v /var/run/docker.sock:...` on a host without the socket mounts an empty directory:
    said at start, naming the path, rather than a 502 on the first request."""
    directory = short_tmp / "docker.sock"
    directory.mkdir()
    proc = serve("--upstream", f"unix://{directory}", "--listen", "tcp://127.0.0.1:0")
    assert proc.returncode == 2, proc
    assert f"upstream {directory} is a directory" in proc.stderr, proc.stderr
    assert "--upstream" in proc.stderr


def test_a_socket_this_user_cannot_write_is_refused(short_tmp: pathlib.Path) -> None:
    """A socket of mode 660 owned by root, checked by a process that is not root and not in
    its group (a forked child that gave up root): the error names the path and the group."""
    path = short_tmp / "docker.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    os.chmod(path, 0o660)
    os.chmod(short_tmp, 0o755)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nobody, then the check
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                outcome = "ok: " + "; ".join(check_upstream_socket(parse_address(f"unix://{path}")))
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pipe.read().decode()
    listener.close()
    assert outcome.startswith("StartupCheckError: "), outcome
    assert f"upstream {path}: permission denied for this user (uid 65534)" in outcome
    assert "member of group root" in outcome and "--group-add 0" in outcome, outcome


def test_a_missing_socket_and_a_silent_daemon_are_warnings(short_tmp: pathlib.Path) -> None:
    """The daemon may start after the gateway: a missing socket, or a TCP daemon that does
    not answer `_ping`, is one warning line and the gateway serves (502 meanwhile)."""
    missing = short_tmp / "absent.sock"
    gw = new_gateway(f"unix://{missing}")
    with running(gw):
        assert f"warning: upstream {missing} does not exist" in gw.stderr_text()
        assert requests.get(f"{gw.http_base}/_ping", timeout=10).status_code == 502
    port = free_tcp_port()  # nothing listens there
    silent = new_gateway(f"tcp://127.0.0.1:{port}")
    with running(silent):
        text = silent.stderr_text()
        assert f"warning: the Docker daemon at tcp://127.0.0.1:{port} does not answer" in text


def test_the_daemon_answering_ping_gives_no_warning(daemon: PrivateDaemon) -> None:
    gw = new_gateway(daemon.host)
    with running(gw):
        gw.wait_stderr(r'policy "allow-all"')
        assert "warning" not in gw.stderr_text(), gw.stderr_text()


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    base = tmp_path_factory.mktemp("pems")
    ca, other = trustme.CA(), trustme.CA()
    leaf, stranger = ca.issue_cert("localhost"), other.issue_cert("localhost")
    files = {
        "cert": leaf.cert_chain_pems[0].bytes(),
        "key": leaf.private_key_pem.bytes(),
        "other-key": stranger.private_key_pem.bytes(),
        "garbage": b"this is not a certificate\n",
    }
    out = {}
    for name, data in files.items():
        (base / name).write_bytes(data)
        out[name] = base / name
    return out


def test_certificate_files_are_named_with_their_problem(pems: dict[str, pathlib.Path]) -> None:
    """Before: `--tls-cert X / --tls-key Y: PEM lib (SSL)`; now the file and what is wrong."""
    garbage = serve("--tls-cert", str(pems["garbage"]), "--tls-key", str(pems["key"]))
    assert garbage.returncode == 2, garbage
    assert f"--tls-cert {pems['garbage']}: no PEM certificate in the file" in garbage.stderr

    a_key_as_cert = serve("--tls-cert", str(pems["key"]), "--tls-key", str(pems["key"]))
    assert a_key_as_cert.returncode == 2
    assert "no PEM certificate in the file" in a_key_as_cert.stderr
    assert "PRIVATE KEY)" in a_key_as_cert.stderr, a_key_as_cert.stderr

    a_cert_as_key = serve("--tls-cert", str(pems["cert"]), "--tls-key", str(pems["cert"]))
    assert f"--tls-key {pems['cert']}: no PEM private key in the file" in a_cert_as_key.stderr

    mismatch = serve("--tls-cert", str(pems["cert"]), "--tls-key", str(pems["other-key"]))
    assert mismatch.returncode == 2
    assert f"--tls-key {pems['other-key']} does not match the certificate" in mismatch.stderr

    bad_ca = serve(
        "--tls-cert",
        str(pems["cert"]),
        "--tls-key",
        str(pems["key"]),
        "--tls-client-ca",
        str(pems["garbage"]),
    )
    assert f"--tls-client-ca {pems['garbage']}: no PEM certificate" in bad_ca.stderr
    for proc in (garbage, a_key_as_cert, a_cert_as_key, mismatch, bad_ca):
        assert "PEM lib" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ----- variables ------------------------------------------------------------------------------


def test_a_bad_variable_is_named_not_the_option() -> None:
    """`DOCKGATE_WORKERS=abc` printed the usage and `argument --workers: invalid int value`."""
    proc = serve(env={"DOCKGATE_WORKERS": "abc"})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "dockgate: error: DOCKGATE_WORKERS='abc': a whole number is needed (the variable sets "
        "--workers)"
    ), proc.stderr
    zero = serve(env={"DOCKGATE_WORKERS": "0"})
    assert "DOCKGATE_WORKERS='0' (--workers): Input should be greater than" in zero.stderr
    listen = serve(env={"DOCKGATE_LISTEN": "localhost:2375"})
    assert listen.stderr.startswith("dockgate: error: DOCKGATE_LISTEN: "), listen.stderr
    # Given on the command line, the option is what is named.
    cli = serve("--workers", "0", env={"DOCKGATE_WORKERS": "0"})
    assert "dockgate: error: --workers: Input should be" in cli.stderr, cli.stderr


def test_lookalike_variables_are_warned_about(daemon: PrivateDaemon) -> None:
    """Typos were silently ignored: `CONTAINER=1`, `containers=1`, `DOCKGATE_LISTN`."""
    gw = new_gateway(
        daemon.host,
        policy=None,
        env=gateway_env(
            {"CONTAINER": "1", "containers": "1", "DOCKGATE_LISTN": "x", "HOSTNAME": "web1"}
        ),
    )
    with running(gw):
        text = gw.stderr_text()
    assert (
        "warning: CONTAINER=1 is not a Tecnativa variable, ignored; did you mean CONTAINERS=1?"
        in text
    ), text
    assert "warning: containers=1 is ignored: variable names are case-sensitive" in text
    assert (
        "warning: DOCKGATE_LISTN is not a dockgate variable, ignored; did you mean "
        "DOCKGATE_LISTEN?" in text
    )
    assert "HOSTNAME" not in text


# ----- denials that say how to allow, the start-up summary ------------------------------------


def test_environment_denials_name_the_variable(daemon: PrivateDaemon) -> None:
    """`CONTAINERS=1` and `docker run`: `needs POST=1` (before: `(rule 1)`); the daemon made
    nothing. The start-up summary says what is open."""
    gw = new_gateway(daemon.host, policy=None, env=gateway_env({"CONTAINERS": "1"}))
    with running(gw):
        summary = gw.wait_stderr(r'dockgate: policy "environment": .*').group(0)
        assert summary == (
            # (some): the two POSTs that only read (wait, copy) need POST=1 too.
            'dockgate: policy "environment": read: containers (some), events, ping, version; '
            "write: none"
        ), summary
        body = json.dumps({"Image": "busybox", "Cmd": ["true"]})
        create = requests.post(
            f"{gw.http_base}/v1.41/containers/create?name=dg13-denied",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert create.status_code == 403
        assert create.json()["message"] == (
            "dockgate: ContainerCreate denied by policy environment (needs POST=1)"
        )
        images = requests.get(f"{gw.http_base}/v1.41/images/json", timeout=10)
        assert images.json()["message"].endswith("(no rule allows it; needs IMAGES=1)")
    assert daemon.docker("inspect", "dg13-denied", check=False).returncode != 0


def test_policy_file_denials_name_the_rule_and_the_policy(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    policy = tmp_path / "ci.yaml"
    policy.write_text(
        "policies:\n"
        "  ci:\n"
        "    rules:\n"
        "      - allow: {sections: [containers]}\n"
        "      - deny: {operations: [ContainerCreate]}\n"
        "default: ci\n"
    )
    gw = new_gateway(daemon.host, policy=policy)
    with running(gw):
        summary = gw.wait_stderr(r'dockgate: policy "ci": .*').group(0)
        assert summary == (
            'dockgate: policy "ci": read: containers; write: containers (some) [guardrails on]'
        )
        create = requests.post(
            f"{gw.http_base}/v1.41/containers/create",
            data="{}",
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert create.json()["message"] == (
            'dockgate: ContainerCreate denied by rule 2 of policy "ci" (line 5: deny: '
            "operations=[ContainerCreate])"
        )
        images = requests.get(f"{gw.http_base}/v1.41/images/json", timeout=10)
        assert images.json()["message"] == (
            'dockgate: no rule of policy "ci" allows ImageList (allow it with a rule of '
            "operations: [ImageList] or sections: [images])"
        )


# ----- the other commands ---------------------------------------------------------------------


def test_check_takes_the_request_unquoted() -> None:
    """`dockgate check GET /path` failed with `unrecognized arguments`."""
    env = {"CONTAINERS": "1"}
    unquoted = dockgate("check", "GET", "/v1.41/containers/json", env=env)
    quoted = dockgate("check", "GET /v1.41/containers/json", env=env)
    assert unquoted.returncode == 0, unquoted
    assert "decision:  allow" in unquoted.stdout
    assert unquoted.stdout == quoted.stdout
    denied = dockgate("check", "POST", "/v1.41/containers/create", env=env)
    assert denied.returncode == 1
    assert "needs POST=1" in denied.stdout


def test_token_create_on_a_fresh_host(short_tmp: pathlib.Path) -> None:
    """`--file /etc/dockgate/tokens` without /etc/dockgate ended in a traceback: the directory
    is made (700), the file is 600, and an impossible place is one line saying what to do."""
    target = short_tmp / "etc" / "dockgate" / "tokens"
    made = dockgate("token", "create", "--file", str(target), "--name", "ci", "--identity", "ci")
    assert made.returncode == 0, made
    assert made.stdout.strip().startswith("dg_")
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    blocked = short_tmp / "file"
    blocked.write_text("")
    impossible = dockgate(
        "token", "create", "--file", str(blocked / "tokens"), "--name", "ci", "--identity", "ci"
    )
    assert impossible.returncode == 2
    assert "Traceback" not in impossible.stderr
    line = impossible.stderr.strip()
    assert "\n" not in line and f"{blocked} is not a directory" in line, impossible.stderr
    assert "give --file a path" in line  # what to do


OWNERSHIP_POLICY = """
policies:
  tenants:
    ownership: true
    rules:
      - allow: {sections: [ping, containers]}
bindings:
  - {policy: tenants, authenticated: true}
"""


def test_forwarded_requests_and_ownership_look_ups_carry_the_hop_field(
    tmp_path: pathlib.Path,
) -> None:
    """What the daemon (a recording fake) gets: one `X-Dockgate-Hop` field, the gateway's,
    on a forwarded request and on the look-up ownership makes on its own (which would
    otherwise start afresh in a ring, without the token)."""
    write_htpasswd(tmp_path / "htpasswd", {"alice": "alice-pw"})
    (tmp_path / "policy.yaml").write_text(OWNERSHIP_POLICY)
    alice = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-pw").decode()}
    with FakeUpstream() as fake:
        gw = new_gateway(
            fake.url,
            *("--htpasswd", str(tmp_path / "htpasswd")),
            policy=str(tmp_path / "policy.yaml"),
        )
        with running(gw):
            fake.reset()  # the start-up _ping, which carries it too
            assert requests.get(f"{gw.http_base}/_ping", headers=alice, timeout=10).ok
            requests.get(f"{gw.http_base}/v1.41/containers/web/json", headers=alice, timeout=10)
        seen = {record.target: record for record in fake.requests}
    ping, look_up = seen["/_ping"], seen["/containers/web/json"]
    tokens = {ping.header("x-dockgate-hop"), look_up.header("x-dockgate-hop")}
    assert len(tokens) == 1 and re.fullmatch(r"dockgate-[0-9a-f]{32}", tokens.pop() or ""), seen
    assert b"authorization" not in look_up.head_raw.lower()
