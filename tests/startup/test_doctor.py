"""Issue 13, `dockgate doctor`: serve's start-up checks on demand, who can reach each listener,
what the policy allows, what a client sets. Unit tests on the report as data (startup/doctor.py),
then real `python3 -m dockgate doctor` processes against the session's private daemon, a missing
socket, a policy file with bindings, TLS and credentials (no secret in the output), and
Tecnativa-style variables with typos.

Every test here fails on the code before issue 13's doctor: there was no `doctor` command, no
table of what a policy allows, and the own-listener check could not compare TCP listeners
without binding them.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest
import requests
import trustme

from dockgate.addresses import parse_address
from dockgate.auth.sourceaddr import SourceRules, parse_address_list
from dockgate.auth.tokens import create_token_line
from dockgate.policy.loader import load_policy_file
from dockgate.policy.summary import policy_summary, section_access
from dockgate.policy.tecnativa import policy_from_environment
from dockgate.startup.checks import configured_own_listener
from dockgate.startup.doctor import (
    ADMIN,
    API,
    ERROR,
    OK,
    WARNING,
    Check,
    Credentials,
    ListenerFacts,
    Report,
    SocketFile,
    authentication,
    client_settings,
    policy_facts,
    reach,
    to_json,
    to_text,
)
from dockgate.startup.doctorprobe import Setup, diagnose, probe_header
from support.daemon import PrivateDaemon, free_tcp_port
from support.gateway import Gateway, gateway_env, run_dockgate, running, serve_command
from support.paths import TEST_POLICIES
from support.remote import write_htpasswd

POLICIES = TEST_POLICIES
BINDINGS = POLICIES / "identity-bindings.yaml"
RUN_TIMEOUT = 30


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_dockgate("doctor", *args, env=env, timeout=RUN_TIMEOUT)


@pytest.fixture
def short_tmp() -> Iterator[pathlib.Path]:
    """A short directory for unix sockets (AF_UNIX paths are limited to 108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="dgdoc-", dir="/tmp") as path:
        yield pathlib.Path(path)


# ----- the report as data -----------------------------------------------------------------------


def test_the_table_and_the_start_up_line_come_from_one_computation() -> None:
    """`CONTAINERS=1`: containers' reads are "some" (two POSTs that only read need POST=1),
    writes none; the one line says the same words."""
    policy = policy_from_environment({"CONTAINERS": "1"})
    env = policy.policies[policy.default]
    rows = {row.section: row for row in section_access(env)}
    assert (rows["containers"].read, rows["containers"].write) == ("some", "none")
    assert (rows["ping"].read, rows["ping"].write) == ("all", "-")
    assert (rows["images"].read, rows["images"].write) == ("none", "none")
    line = policy_summary(env)
    assert line == (
        'policy "environment": read: containers (some), events, ping, version; write: none'
    )
    opened = policy_from_environment({"CONTAINERS": "1", "POST": "1"})
    rows = {row.section: row for row in section_access(opened.policies[opened.default])}
    assert (rows["containers"].read, rows["containers"].write) == ("all", "all")


def test_policy_rows_name_who_gets_each_policy() -> None:
    """With bindings: one row per policy, its bindings in words (names from the file only)."""
    facts = policy_facts(load_policy_file(str(BINDINGS)), authenticated=True)
    rows = {row.name: row for row in facts.rows}
    assert set(rows) == {"everything", "containers-read-only"}
    ro = rows["containers-read-only"]
    assert ro.read_only and ro.guardrails and not ro.ownership
    access = {s.section: s for s in ro.sections}
    assert (access["containers"].read, access["containers"].write) == ("all", "none")
    assert (access["images"].read, access["images"].write) == ("none", "none")
    assert any(who.endswith(": users bob") for who in ro.who), ro.who
    assert any("groups operators" in who for who in rows["everything"].who)
    assert any("tokens ci" in who for who in rows["everything"].who)
    # Without bindings: the default policy, given to every caller.
    env = policy_facts(policy_from_environment({}), authenticated=False)
    assert [row.who for row in env.rows] == [("every caller",)]


def _unix(mode: int, group: str = "docker", owner: str = "root") -> ListenerFacts:
    return ListenerFacts(
        parse_address("unix:///run/dg.sock"), API, True, SocketFile(mode, owner, group, True)
    )


def test_reach_in_words() -> None:
    rules = SourceRules()
    assert reach(_unix(0o660), rules, in_container=False).endswith(
        "mode 0660 owner root group docker: root, members of group docker"
    )
    assert reach(_unix(0o600, owner="gw"), rules, in_container=False).endswith(": root, user gw")
    assert reach(_unix(0o666), rules, in_container=False).endswith(": every local user")
    loop = ListenerFacts(parse_address("tcp://127.0.0.1:2375"), API, True)
    assert "loopback: local processes only" in reach(loop, rules, in_container=False)
    assert "network namespace" in reach(loop, rules, in_container=True)
    wild = ListenerFacts(parse_address("tcp://0.0.0.0:2375"), API, False)
    limited = SourceRules(parse_address_list(["10.0.0.0/8"]))
    text = reach(wild, limited, in_container=False)
    assert "all interfaces: any host that can route here" in text
    assert "only from 10.0.0.0/8 (--allow-source)" in text
    # The global lists do not judge unix clients unless they name "unix" (auth/sourceaddr.py).
    assert "--allow-source" not in reach(_unix(0o660), limited, in_container=False)
    one = ListenerFacts(parse_address("tcp://192.0.2.7:2375"), API, False)
    assert "any host that can route to 192.0.2.7" in reach(one, rules, in_container=False)


def test_authentication_in_words_counts_and_never_lists() -> None:
    wild = ListenerFacts(parse_address("tcp://0.0.0.0:2376"), API, False)
    creds = Credentials("/etc/dg/htpasswd", 3, "/etc/dg/tokens", 1, "/etc/dg/s.pem", "/etc/dg/ca")
    text = authentication(wild, creds, None)
    assert text.startswith("required: a client certificate signed by --tls-client-ca /etc/dg/ca")
    assert "Basic (3 users in /etc/dg/htpasswd) or a bearer token (1 token in" in text
    # A unix listener: TLS (and so the client CA) is for TCP listeners only.
    assert "client certificate" not in authentication(_unix(0o660), creds, None)
    assert authentication(wild, Credentials(), None).startswith("NONE: anyone who reaches it")
    assert authentication(_unix(0o660), Credentials(), None).startswith("none: every caller")
    admin = ListenerFacts(parse_address("tcp://127.0.0.1:9375"), ADMIN, True)
    assert "never the Engine API" in authentication(admin, creds, None)
    # An anonymous binding: callers without credentials still get a policy.
    anonymous = load_policy_file(str(POLICIES / "identity-anonymous.yaml"))
    assert "callers without credentials get policy" in authentication(wild, creds, anonymous)
    # Bindings and no credentials on this listener: only an anonymous binding lets anyone in.
    bound = load_policy_file(str(BINDINGS))
    assert "every request is refused" in authentication(_unix(0o660), Credentials(), bound)
    probes = authentication(_unix(0o660), Credentials(), anonymous)
    assert probes == "none: callers get policy probes"


def test_client_settings() -> None:
    """TLS with client certificates: DOCKER_TLS_VERIFY and a context with ca, cert and key;
    tokens and Basic: the HttpHeaders snippet with placeholders, and what DOCKER_HOST cannot
    carry; a wildcard listener is named by this host's name, IPv6 in brackets."""
    creds = Credentials("/h", 2, "/t", 1, "/s.pem", "/ca.pem")
    settings = client_settings(parse_address("tcp://0.0.0.0:2376"), creds, hostname="gw1")
    assert settings.docker_host == "tcp://gw1:2376"
    assert "DOCKER_TLS_VERIFY=1" in settings.environment
    assert settings.context == (
        'docker context create dockgate --docker "host=tcp://gw1:2376,'
        "ca=$HOME/.docker/dockgate/ca.pem,cert=$HOME/.docker/dockgate/cert.pem,"
        'key=$HOME/.docker/dockgate/key.pem"'
    )
    assert settings.config_json is not None
    assert json.loads(settings.config_json)["HttpHeaders"]["Authorization"].startswith(
        "Bearer TOKEN"
    )
    assert any("ParseTCPAddr" in note for note in settings.notes)
    plain = client_settings(parse_address("tcp://[::1]:2375"), Credentials(), hostname="x")
    assert plain.environment == ("DOCKER_HOST=tcp://[::1]:2375",)
    assert plain.config_json is None and plain.notes == ()
    basic = client_settings(parse_address("unix:///run/dg.sock"), Credentials("/h"), hostname="x")
    assert basic.docker_host == "unix:///run/dg.sock"
    assert basic.config_json == '{ "HttpHeaders": { "Authorization": "Basic BASE64" } }'


def test_exit_status_follows_the_worst_check() -> None:
    def report(*statuses: str) -> Report:
        checks = tuple(Check("x", status, "y") for status in statuses)
        return Report(probe_header(), checks, None, (), (), None)

    assert report(OK, WARNING).exit_code == 0
    assert report(OK, WARNING, ERROR).exit_code == 1
    assert json.loads(to_json(report(WARNING)))["status"] == WARNING
    assert "[error] x: y" in to_text(report(ERROR))


def test_own_listener_found_without_binding() -> None:
    """Before: only unix paths were compared before binding; doctor binds nothing (the gateway
    may hold the port), so TCP listeners are compared by address and port."""
    port = free_tcp_port()
    listeners = [parse_address(f"tcp://0.0.0.0:{port}")]
    upstream = parse_address(f"tcp://localhost:{port}")
    assert configured_own_listener(upstream, listeners) == listeners[0]
    assert configured_own_listener(parse_address(f"tcp://127.0.0.1:{port + 1}"), listeners) is None
    assert configured_own_listener(upstream, [parse_address("tcp://127.0.0.1:0")]) is None
    unix = parse_address("unix:///tmp/dg-doctor.sock")
    assert configured_own_listener(unix, [unix]) == unix


def test_a_configuration_error_is_reported_not_raised() -> None:
    setup = Setup(
        None, "--workers: Input should be greater than or equal to 1", "plain", None, None
    )
    report = diagnose(setup)
    assert report.exit_code == 1
    assert report.checks[0] == Check("configuration", ERROR, setup.config_error or "")
    assert report.listeners == () and report.daemon is None


# ----- `python3 -m dockgate doctor` -------------------------------------------------------------


def test_doctor_against_the_daemon(daemon: PrivateDaemon) -> None:
    """The private daemon answers: exit 0, its version as the daemon reports it; the policy
    table in the text and in JSON; the client settings for the listener."""
    proc = doctor("--upstream", daemon.host, env={"CONTAINERS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = daemon.docker("version", "--format", "{{.Server.Version}}").stdout.decode().strip()
    assert f"answers GET /_ping: Docker {version}, API 1.41" in proc.stdout, proc.stdout
    assert "[error]" not in proc.stdout
    assert "export DOCKER_HOST=tcp://127.0.0.1:2375" in proc.stdout
    assert "containers            some/none" in proc.stdout, proc.stdout
    as_json = doctor("--upstream", daemon.host, "--format", "json", env={"CONTAINERS": "1"})
    data = json.loads(as_json.stdout)
    assert data["exit_code"] == 0 and data["daemon"]["version"] == version
    sections = data["policy"]["rows"][0]["sections"]
    assert sections["containers"] == {"read": "some", "write": "none"}
    assert data["listeners"][0]["client"]["docker_host"] == "tcp://127.0.0.1:2375"


def test_a_missing_socket_is_an_error_that_names_the_fix(short_tmp: pathlib.Path) -> None:
    """`serve` warns (the daemon may come later); doctor says requests fail now: exit 1, with
    serve's own text naming --upstream, DOCKER_HOST and the bind mount."""
    missing = short_tmp / "docker.sock"
    proc = doctor("--upstream", f"unix://{missing}")
    assert proc.returncode == 1, proc
    assert f"[warning] upstream socket: upstream {missing} does not exist" in proc.stdout
    text = " ".join(proc.stdout.split())  # the report wraps long lines
    assert "set --upstream or DOCKER_HOST to the daemon's socket" in text
    assert "-v /var/run/docker.sock:/var/run/docker.sock" in text
    assert "[error] daemon:" in proc.stdout
    assert proc.stderr == "", proc.stderr


def test_what_serve_refuses_doctor_reports_as_an_error() -> None:
    """The same refusals with the same words: an open listener without authentication, an
    upstream that is a listener, a variable that does not fit its option."""
    port = free_tcp_port()
    cases = [
        (("--listen", f"tcp://0.0.0.0:{port}"), {}, "refusing to listen on"),
        (
            ("--listen", f"tcp://0.0.0.0:{port}", "--insecure"),
            {"DOCKER_HOST": f"tcp://127.0.0.1:{port}"},
            "is this gateway's own listener",
        ),
        ((), {"DOCKGATE_WORKERS": "0"}, "DOCKGATE_WORKERS='0' (--workers)"),
        (("--policy", "/nonexistent/policy.yaml"), {}, "/nonexistent/policy.yaml"),
        (("--tls-cert", __file__, "--tls-key", __file__), {}, "no PEM certificate in the file"),
    ]
    for args, env, words in cases:
        report = doctor(*args, env=env)
        started = subprocess.run(
            serve_command(*args),
            env=gateway_env(env),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert started.returncode == 2 and words in started.stderr, started.stderr
        assert report.returncode == 1, report.stdout
        assert words in " ".join(report.stdout.split()), report.stdout
        said = started.stderr.strip().splitlines()[-1].removeprefix("dockgate: error: ")
        assert " ".join(said.split()) in " ".join(report.stdout.split())


def test_tecnativa_variables_and_typos_are_warned(daemon: PrivateDaemon) -> None:
    proc = doctor(
        "--upstream",
        daemon.host,
        env={"CONTAINERS": "1", "POST": "1", "CONTAINER": "1", "DOCKGATE_LISTN": "x"},
    )
    assert proc.returncode == 0, proc.stdout
    text = " ".join(proc.stdout.split())
    assert (
        "[warning] environment: CONTAINER=1 is not a Tecnativa variable, ignored; did you "
        "mean CONTAINERS=1?" in text
    )
    assert (
        "DOCKGATE_LISTN is not a dockgate variable, ignored; did you mean DOCKGATE_LISTEN?" in text
    )
    assert "containers            all/all" in proc.stdout


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """TLS files, an htpasswd file (bcrypt hashes) and a tokens file (digests), and the
    secrets that must never appear in a report: the token, its digest, the hashes."""
    base = tmp_path_factory.mktemp("doctor")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(base / "server.pem"))
    leaf.private_key_pem.write_to_path(str(base / "server-key.pem"))
    ca.cert_pem.write_to_path(str(base / "ca.pem"))
    client = ca.issue_cert("doctor@example.test", common_name="doctor")
    client.cert_chain_pems[0].write_to_path(str(base / "client.pem"))
    client.private_key_pem.write_to_path(str(base / "client-key.pem"))
    write_htpasswd(base / "htpasswd", {"alice": "correct horse", "bob": "battery staple"})
    token, line = create_token_line("ci", "ci")
    (base / "tokens").write_text(line + "\n")
    hashes = [entry.split(":", 1)[1].strip() for entry in (base / "htpasswd").read_text().split()]
    return {
        "dir": str(base),
        "token": token,
        "digest": line.split()[2],
        "hash0": hashes[0],
        "hash1": hashes[1],
    }


def test_tls_tokens_and_bindings_without_a_secret(
    daemon: PrivateDaemon, secured: dict[str, str], short_tmp: pathlib.Path
) -> None:
    """A policy file with bindings, TLS with client certificates, Basic and tokens, a unix
    listener and the admin listener: each listener's reach and authentication in words, the
    client settings, and no token, digest or password hash in the text or the JSON."""
    base = pathlib.Path(secured["dir"])
    port = free_tcp_port()
    sock = short_tmp / "dg.sock"
    args = [
        "--upstream",
        daemon.host,
        "--listen",
        f"tcp://0.0.0.0:{port}",
        "--listen",
        f"unix://{sock}",
        "--admin-listen",
        "tcp://127.0.0.1:9375",
        "--policy",
        str(BINDINGS),
        "--tls-cert",
        str(base / "server.pem"),
        "--tls-key",
        str(base / "server-key.pem"),
        "--tls-client-ca",
        str(base / "ca.pem"),
        "--htpasswd",
        str(base / "htpasswd"),
        "--tokens",
        str(base / "tokens"),
    ]
    proc = doctor(*args)
    as_json = doctor(*args, "--format", "json")
    for output in (proc.stdout, as_json.stdout):
        for secret in ("token", "digest", "hash0", "hash1"):
            assert secured[secret] not in output, secret
    # Bindings name users that the htpasswd file lacks (bob is there, deployer is not): a
    # warning, as at start; not an error.
    assert proc.returncode == 0, proc.stdout
    text = " ".join(proc.stdout.split())
    assert "user 'deployer' is in no --htpasswd or --tokens file" in text
    assert f"tcp://0.0.0.0:{port} (API, TCP with TLS)" in proc.stdout
    assert "all interfaces: any host that can route here" in text
    assert f"a client certificate signed by --tls-client-ca {base / 'ca.pem'}" in text
    assert f"Basic (2 users in {base / 'htpasswd'}) or a bearer token (1 token in" in text
    assert f"unix socket {sock} mode 0660 owner root group root (as serve will create it)" in text
    assert "tcp://127.0.0.1:9375 (admin, TCP)" in proc.stdout
    assert '"Authorization": "Bearer TOKEN"' in proc.stdout
    assert "cert=$HOME/.docker/dockgate/cert.pem" in proc.stdout
    assert "containers-read-only:" in proc.stdout and "users bob" in text
    data = json.loads(as_json.stdout)
    assert [row["name"] for row in data["policy"]["rows"]] == ["everything", "containers-read-only"]
    assert data["policy"]["rows"][1]["read_only"] is True
    assert [item["role"] for item in data["listeners"]] == [API, API, ADMIN]


def test_a_running_gateway_is_described_as_it_is(
    daemon: PrivateDaemon, short_tmp: pathlib.Path
) -> None:
    """Doctor binds nothing: next to a running gateway with the same options, it reads the
    socket the gateway made (mode 0600 here) and reports no error for the ports it holds."""
    sock = short_tmp / "gw.sock"
    gw = Gateway(
        daemon.host,
        "--socket-mode",
        "600",
        listen=f"unix://{sock}",
        env=gateway_env(),
    )
    with running(gw):
        proc = doctor(
            "--upstream", daemon.host, "--listen", f"unix://{sock}", "--socket-mode", "600"
        )
    assert proc.returncode == 0, proc.stdout
    text = " ".join(proc.stdout.split())
    assert f"unix socket {sock} mode 0600 owner root group root: root" in text, text
    assert "as serve will create it" not in text
    assert os.getuid() == 0 and socket.gethostname()


# ----- through the upstream's TLS ---------------------------------------------------------------


class TLSFront:
    """The private daemon behind a TLS listener on 127.0.0.1 that requires a client certificate
    (as `dockerd --tlsverify` does): each connection relayed to the daemon's unix socket."""

    def __init__(self, daemon_socket: str, pki: pathlib.Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(pki / "server.pem", pki / "server-key.pem")
        self.context.load_verify_locations(pki / "ca.pem")
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.daemon_socket = daemon_socket
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes: list[str] = []  # "ok" or the reason a handshake failed
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshakes.append(str(exc))
            raw.close()
            return
        self.handshakes.append("ok")
        with client, socket.socket(socket.AF_UNIX) as upstream:
            upstream.connect(self.daemon_socket)
            request = b""
            while b"\r\n\r\n" not in request:  # a GET: the head is the whole request
                chunk = client.recv(65536)
                if not chunk:
                    return
                request += chunk
            upstream.sendall(request)
            while chunk := upstream.recv(65536):
                client.sendall(chunk)

    def close(self) -> None:
        self.listener.close()


def test_the_daemon_is_asked_through_the_upstream_tls(
    daemon: PrivateDaemon, secured: dict[str, str]
) -> None:
    """`--upstream-tls-*` (and DOCKER_TLS_VERIFY/DOCKER_CERT_PATH): `_ping` and `/version`
    go through TLS with the client certificate. Without the options the same upstream does
    not answer (plain HTTP to a TLS port): an error, so the test is not vacuous."""
    base = pathlib.Path(secured["dir"])
    front = TLSFront(str(daemon.socket_path), base)
    upstream = f"tcp://127.0.0.1:{front.port}"
    tls = [
        "--upstream-tls-ca",
        str(base / "ca.pem"),
        "--upstream-tls-cert",
        str(base / "client.pem"),
        "--upstream-tls-key",
        str(base / "client-key.pem"),
    ]
    try:
        proc = doctor("--upstream", upstream, *tls)
        assert proc.returncode == 0, proc.stdout
        assert f"upstream: {upstream} (TLS, daemon verified against {base / 'ca.pem'}" in (
            proc.stdout
        )
        assert "answers GET /_ping: Docker" in proc.stdout
        assert "ok" in front.handshakes
        cert_path = base / "docker"
        cert_path.mkdir(exist_ok=True)
        for ours, docker_name in (("ca", "ca"), ("client", "cert"), ("client-key", "key")):
            shutil.copy(base / f"{ours}.pem", cert_path / f"{docker_name}.pem")
        by_variables = doctor(
            env={
                "DOCKER_HOST": upstream,
                "DOCKER_TLS_VERIFY": "1",
                "DOCKER_CERT_PATH": str(cert_path),
            }
        )
        assert by_variables.returncode == 0, by_variables.stdout
        assert "answers GET /_ping: Docker" in by_variables.stdout
        plain = doctor("--upstream", upstream)
        assert plain.returncode == 1, plain.stdout
        assert "[error] daemon: the Docker daemon at" in plain.stdout
    finally:
        front.close()


def test_what_the_report_says_about_callers_is_what_the_gateway_does(
    daemon: PrivateDaemon,
) -> None:
    """Bindings without credential files: the report says every request is refused, and a
    gateway with the same options refuses `_ping` with 403; with an anonymous binding it says
    which policy callers get, and the gateway lets them ping but not list containers."""
    for policy, expected, ping, containers in (
        (BINDINGS, "every request is refused", 403, 403),
        (POLICIES / "identity-anonymous.yaml", "none: callers get policy probes", 200, 403),
    ):
        report = doctor("--upstream", daemon.host, "--policy", str(policy))
        assert expected in " ".join(report.stdout.split()), report.stdout
        gw = Gateway(daemon.host, policy=policy, env=gateway_env())
        with running(gw):
            assert requests.get(f"{gw.http_base}/_ping", timeout=10).status_code == ping
            listed = requests.get(f"{gw.http_base}/v1.41/containers/json", timeout=10)
            assert listed.status_code == containers, listed.text
