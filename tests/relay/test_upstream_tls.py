"""TLS to the upstream: a dockerd of our own started with `--tlsverify` on a TCP port, and
dockgate in front of it with `--upstream-tls-*` (or DOCKER_TLS_VERIFY/DOCKER_CERT_PATH), used
by the docker CLI and docker-py through the gateway. Before issue 13 none of these options
existed and the gateway spoke plain HTTP to such a daemon, which answers every request 400
(the first test shows that still happens without them: the TLS tests are not vacuous).
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
import trustme

from support.daemon import PrivateDaemon, free_tcp_port, run_docker
from support.gateway import Gateway, gateway_env, running
from support.remote import write_htpasswd

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(300)]


@dataclass
class Pki:
    ca: pathlib.Path  # the CA that signed the daemon's certificate and the client's
    server_cert: pathlib.Path
    server_key: pathlib.Path
    cert_path: pathlib.Path  # a DOCKER_CERT_PATH: ca.pem, cert.pem, key.pem
    stranger_ca: pathlib.Path  # a CA that signed nothing here


def _make_pki(root: pathlib.Path) -> Pki:
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("dockgate@example.test", common_name="dockgate")
    (root / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (root / "server-cert.pem").write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    (root / "server-key.pem").write_bytes(server.private_key_pem.bytes())
    (root / "stranger-ca.pem").write_bytes(stranger.cert_pem.bytes())
    cert_path = root / "client"
    cert_path.mkdir()
    (cert_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (cert_path / "cert.pem").write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    (cert_path / "key.pem").write_bytes(client.private_key_pem.bytes())
    return Pki(
        root / "ca.pem",
        root / "server-cert.pem",
        root / "server-key.pem",
        cert_path,
        root / "stranger-ca.pem",
    )


class TLSDaemon(PrivateDaemon):
    """A private dockerd that also listens on tcp://127.0.0.1:PORT with --tlsverify (client
    certificates required, as `dockerd --tlsverify` always does)."""

    def __init__(self, base_dir: pathlib.Path, port: int, pki: Pki) -> None:
        super().__init__(base_dir)
        self.tls_port = port
        self.pki = pki

    def command(self) -> list[str]:
        return [
            *super().command(),
            "-H",
            f"tcp://127.0.0.1:{self.tls_port}",
            "--tlsverify",
            "--tlscacert",
            str(self.pki.ca),
            "--tlscert",
            str(self.pki.server_cert),
            "--tlskey",
            str(self.pki.server_key),
        ]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("upstream-pki"))


@pytest.fixture(scope="module")
def tls_daemon(pki: Pki) -> Iterator[TLSDaemon]:
    if os.geteuid() != 0:
        pytest.fail("the daemon tests need root (they start a private dockerd)")
    base = pathlib.Path(tempfile.mkdtemp(prefix="dg-ut-", dir="/tmp"))
    daemon = TLSDaemon(base, free_tcp_port(), pki)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="module")
def image(tls_daemon: TLSDaemon) -> str:
    return tls_daemon.make_busybox_image()


def _upstream(daemon: TLSDaemon) -> str:
    return f"tcp://127.0.0.1:{daemon.tls_port}"


def _tls_options(pki: Pki, ca: pathlib.Path | None = None, client: bool = True) -> list[str]:
    args = ["--upstream-tls-ca", str(ca or pki.ca)]
    if client:
        args += [
            "--upstream-tls-cert",
            str(pki.cert_path / "cert.pem"),
            "--upstream-tls-key",
            str(pki.cert_path / "key.pem"),
        ]
    return args


@pytest.fixture(scope="module")
def gateway(tls_daemon: TLSDaemon, pki: Pki) -> Iterator[Gateway]:
    gw = Gateway(
        _upstream(tls_daemon),
        *_tls_options(pki),
        "--admin-listen",
        "tcp://127.0.0.1:0",
        env=gateway_env(),
    )
    with running(gw, "the gateway to the TLS daemon") as started:
        yield started


def _env(gw: Gateway, config: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    config.mkdir(parents=True, exist_ok=True)
    return env | {"DOCKER_HOST": gw.url, "DOCKER_CONFIG": str(config), "DOCKER_BUILDKIT": "0"}


def _ok(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ----- the link is plain without the options ----------------------------------------------------


def test_without_tls_options_the_daemon_refuses_plain_http(
    tls_daemon: TLSDaemon, tmp_path: pathlib.Path
) -> None:
    """What the gateway did before issue 13: plain HTTP to the TLS port, which the daemon
    answers 400 for every request."""
    with running(Gateway(_upstream(tls_daemon), env=gateway_env())) as gw:
        done = run_docker(_env(gw, tmp_path / "cfg"), "ps")
    assert done.returncode != 0
    assert b"HTTPS server" in done.stderr or b"400" in done.stderr, done.stderr


# ----- the docker CLI and docker-py through the gateway -----------------------------------------


def test_cli_ps_run_and_follow_logs(gateway: Gateway, image: str, tmp_path: pathlib.Path) -> None:
    """`ps`, `run --rm` (attach: a hijacked exchange) and `logs -f` (a stream) all reach the
    TLS daemon through the gateway's pool."""
    env = _env(gateway, tmp_path / "cfg")
    _ok(run_docker(env, "ps"))
    marker = os.urandom(4).hex()
    assert _ok(run_docker(env, "run", "--rm", image, "echo", marker)).strip() == marker
    name = f"dgt-uptls-{marker}"
    _ok(
        run_docker(
            env, "run", "-d", "--name", name, image, "sh", "-c",
            "for i in 1 2 3; do echo line-$i; sleep 0.3; done",
        )
    )  # fmt: skip
    try:
        logs = _ok(run_docker(env, "logs", "-f", name, timeout=30))
        assert logs.split() == ["line-1", "line-2", "line-3"]
    finally:
        run_docker(env, "rm", "-f", name)


def test_sdk_over_the_tls_upstream(gateway: Gateway, image: str) -> None:
    client = docker.DockerClient(base_url=gateway.url, version="1.41", timeout=60)
    try:
        assert client.ping()
        marker = os.urandom(4).hex()
        out = client.containers.run(image, ["echo", marker], remove=True)
        assert out.decode().strip() == marker
        assert isinstance(client.containers.list(all=True), list)
    finally:
        client.close()


def test_readyz_asks_the_tls_daemon(gateway: Gateway) -> None:
    status, body = _get(f"http://127.0.0.1:{gateway.admin_port()}/readyz")
    assert (status, body.get("status")) == (200, "ready"), body


OWNERSHIP_POLICY = """\
policies:
  owned:
    ownership: true
    rules:
      - allow:
          sections: [ping, version, info, containers, images]
bindings:
  - {policy: owned, authenticated: true}
"""


def test_ownership_look_ups_use_tls(
    tls_daemon: TLSDaemon, pki: Pki, image: str, tmp_path: pathlib.Path
) -> None:
    """Ownership mode asks the daemon who owns what on connections of its own (ownership/lookup.py):
    they are TLS too. Alice's container is hers by label; `stop` by name needs a look-up and
    works for her; Bob's look-up finds it not his."""
    users = {"alice": "alice-pw", "bob": "bob-pw"}
    htpasswd, policy = tmp_path / "htpasswd", tmp_path / "policy.yaml"
    write_htpasswd(htpasswd, users)
    policy.write_text(OWNERSHIP_POLICY)
    gw = Gateway(
        _upstream(tls_daemon),
        *_tls_options(pki),
        "--htpasswd",
        str(htpasswd),
        policy=str(policy),
        env=gateway_env(),
    )
    with running(gw) as started:
        envs = {}
        for user, password in users.items():
            env = _env(started, tmp_path / user)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            (tmp_path / user / "config.json").write_text(
                json.dumps({"HttpHeaders": {"Authorization": f"Basic {token}"}})
            )
            envs[user] = env
        name = f"dgt-uptls-own-{os.urandom(4).hex()}"
        try:
            _ok(run_docker(envs["alice"], "run", "-d", "--name", name, image, "sleep", "60"))
            labels = tls_daemon.docker("inspect", "-f", "{{json .Config.Labels}}", name).stdout
            assert json.loads(labels).get("io.dockgate.owner") == "user:alice"
            refused = run_docker(envs["bob"], "stop", "-t", "0", name)
            assert refused.returncode != 0
            assert f"No such container: {name}" in refused.stderr.decode()
            assert name in _ok(run_docker(envs["alice"], "ps", "--format", "{{.Names}}"))
            _ok(run_docker(envs["alice"], "stop", "-t", "0", name))
            state = tls_daemon.docker("inspect", "-f", "{{.State.Running}}", name).stdout
            assert state.strip() == b"false"
        finally:
            tls_daemon.docker("rm", "-f", name, check=False)


# ----- DOCKER_TLS_VERIFY / DOCKER_CERT_PATH with DOCKER_HOST --------------------------------------


def test_docker_tls_verify_and_cert_path_are_honoured(
    tls_daemon: TLSDaemon, pki: Pki, tmp_path: pathlib.Path
) -> None:
    env = gateway_env(
        {
            "DOCKER_HOST": _upstream(tls_daemon),
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(pki.cert_path),
        }
    )
    # Two workers: the context is made by the parent before it forks, and used by each.
    with running(Gateway(None, "--workers", "2", env=env)) as gw:
        gw.wait_stderr(r"forwarding to tcp://127\.0\.0\.1:\d+ over TLS")
        gw.wait_stderr(r"TLS, daemon verified against \S+/client/ca\.pem, client certificate ")
        for _ in range(4):
            _ok(run_docker(_env(gw, tmp_path / "cfg"), "version"))
        # The start-up `_ping` spoke TLS too: no warning that the daemon does not answer.
        assert "does not answer" not in gw.stderr_text(), gw.stderr_text()


def test_docker_tls_verify_without_certificates_refuses_to_start(
    tls_daemon: TLSDaemon, tmp_path: pathlib.Path
) -> None:
    env = gateway_env(
        {
            "DOCKER_HOST": _upstream(tls_daemon),
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(tmp_path),
        }
    )
    gw = Gateway(None, env=env).spawn()
    assert gw.wait(30) == 2
    text = gw.stderr_text()
    assert "DOCKER_TLS_VERIFY" in text and str(tmp_path / "ca.pem") in text, text


# ----- failures say why -------------------------------------------------------------------------


def test_a_daemon_signed_by_another_ca_is_a_clear_502(
    tls_daemon: TLSDaemon, pki: Pki, tmp_path: pathlib.Path
) -> None:
    gw = Gateway(
        _upstream(tls_daemon),
        *_tls_options(pki, ca=pki.stranger_ca),
        "--admin-listen",
        "tcp://127.0.0.1:0",
        env=gateway_env(),
    )
    with running(gw) as started:
        status, body = _get(f"{started.http_base}/v1.41/containers/json")
        assert status == 502
        assert "the daemon's certificate is not trusted" in str(body["message"]), body
        assert "--upstream-tls-ca" in str(body["message"]), body
        status, body = _get(f"http://127.0.0.1:{started.admin_port()}/readyz")
        assert status == 503 and "certificate is not trusted" in str(body["reason"]), body


def test_no_client_certificate_for_a_tlsverify_daemon_is_a_clear_502(
    tls_daemon: TLSDaemon, pki: Pki
) -> None:
    """A TLS 1.3 daemon refuses the missing certificate with an alert right after the
    handshake, often before the new connection is handed to the exchange: the pool must not
    hand out that dead connection (before the fix, the request waited for ever, within 5
    tries every time)."""
    gw = Gateway(
        _upstream(tls_daemon),
        *_tls_options(pki, client=False),
        "--admin-listen",
        "tcp://127.0.0.1:0",
        env=gateway_env(),
    )
    with running(gw) as started:
        for _ in range(5):  # a fresh connection each time: none is ever pooled
            status, body = _get(f"{started.http_base}/v1.41/containers/json")
            assert status == 502, body
            assert "the daemon refused our client certificate" in str(body["message"]), body
            time.sleep(0.1)
        status, body = _get(f"http://127.0.0.1:{started.admin_port()}/readyz")
        assert status == 503 and "refused our client certificate" in str(body["reason"]), body


def test_hijacked_stdin_half_close_reaches_the_tls_daemon(
    gateway: Gateway, image: str, tmp_path: pathlib.Path
) -> None:
    """`docker run -i` with stdin that ends: the end must reach the container (a TLS
    close_notify towards the daemon) while its output keeps coming back. With uvloop's own SSL
    transport for the pool (the first version of this change) it hung until the timeout:
    that transport cannot half-close (relay/tlsclient.py)."""
    env = _env(gateway, tmp_path / "cfg")
    data = os.urandom(1024 * 1024).hex().encode()  # 2 MiB: most of it comes back after the end
    done = run_docker(
        env,
        "run",
        "-i",
        "--rm",
        image,
        "sh",
        "-c",
        "cat; echo end-of-stdin",
        input=data,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == data + b"end-of-stdin\n"
