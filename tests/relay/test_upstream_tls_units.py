"""Which upstream, and with what TLS (upstreamtls.resolve_upstream): the options, DOCKER_HOST
with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH as the docker CLI reads them, and the start-up refusals
that name the option or variable and the file. Before issue 13 every one of these cases gave a
plain-HTTP upstream, the certificates silently ignored."""

from __future__ import annotations

import pathlib
import ssl

import pytest
import trustme

from dockgate.addresses import parse_address
from dockgate.cli import main
from dockgate.relay.upstreamtls import UpstreamTLSError, resolve_upstream, tls_failure

DEFAULT = "unix:///var/run/docker.sock"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A DOCKER_CERT_PATH-shaped directory: ca.pem, cert.pem, key.pem (and a bad.pem)."""
    root = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("client.example.test")
    (root / "ca.pem").write_bytes(ca.cert_pem.bytes())
    (root / "cert.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (root / "key.pem").write_bytes(leaf.private_key_pem.bytes())
    (root / "bad.pem").write_text("not a certificate\n")
    return root


def test_options_make_a_verifying_client_context(certs: pathlib.Path) -> None:
    address, files = resolve_upstream(
        "tcp://127.0.0.1:2376",
        {},
        DEFAULT,
        ca=str(certs / "ca.pem"),
        cert=str(certs / "cert.pem"),
        key=str(certs / "key.pem"),
    )
    assert files is not None and files.cert == str(certs / "cert.pem")
    context = address.tls
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    # Only the operator's CA vouches for the daemon (no system roots).
    assert len(context.get_ca_certs()) == 1
    assert address == parse_address("tcp://127.0.0.1:2376")  # TLS is not the address's identity


def test_no_options_and_no_environment_is_plain() -> None:
    address, files = resolve_upstream(None, {}, DEFAULT)
    assert (address.scheme, address.tls, files) == ("unix", None, None)


def test_a_tls_option_for_a_unix_upstream_is_refused(certs: pathlib.Path) -> None:
    with pytest.raises(UpstreamTLSError, match=r"--upstream-tls-ca: the upstream unix://"):
        resolve_upstream("unix:///run/docker.sock", {}, DEFAULT, ca=str(certs / "ca.pem"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cert": "cert.pem"}, "--upstream-tls-cert and --upstream-tls-key go together"),
        ({"cert": "cert.pem", "key": "key.pem"}, "--upstream-tls-cert needs --upstream-tls-ca"),
        ({"ca": "bad.pem"}, r"--upstream-tls-ca .*bad\.pem: not a PEM CA certificate"),
        ({"ca": "missing.pem"}, r"--upstream-tls-ca .*missing\.pem: No such file"),
        (
            {"ca": "ca.pem", "cert": "ca.pem", "key": "key.pem"},
            r"--upstream-tls-cert .*ca\.pem / --upstream-tls-key .*key\.pem",
        ),
    ],
)
def test_unusable_options_name_the_option_and_file(
    certs: pathlib.Path, kwargs: dict[str, str], message: str
) -> None:
    files = {name: str(certs / value) for name, value in kwargs.items()}
    with pytest.raises(UpstreamTLSError, match=message):
        resolve_upstream("tcp://127.0.0.1:2376", {}, DEFAULT, **files)


def test_docker_tls_verify_reads_the_cert_path(certs: pathlib.Path) -> None:
    env = {
        "DOCKER_HOST": "tcp://127.0.0.1",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(certs),
    }
    address, files = resolve_upstream(None, env, DEFAULT)
    assert address.tls is not None and files is not None
    assert files.named_by == "DOCKER_CERT_PATH" and files.key == str(certs / "key.pem")
    assert address.port == 2376  # as the docker CLI: a TLS DOCKER_HOST without a port


def test_docker_tls_verify_defaults_to_the_home_docker_directory(
    certs: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "yes"}
    with pytest.raises(UpstreamTLSError, match=rf"{tmp_path}/\.docker/ca\.pem does not exist"):
        resolve_upstream(None, env, DEFAULT)
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())
    address, files = resolve_upstream(None, env, DEFAULT)
    # No cert.pem/key.pem: no client certificate, as the CLI goes on without one.
    assert address.tls is not None and files is not None and files.cert is None


def test_half_a_client_pair_in_the_cert_path_is_refused(
    certs: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "ca.pem").write_bytes((certs / "ca.pem").read_bytes())
    (tmp_path / "cert.pem").write_bytes((certs / "cert.pem").read_bytes())
    env = {
        "DOCKER_HOST": "tcp://h:2376",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(tmp_path),
    }
    with pytest.raises(UpstreamTLSError, match=rf"{tmp_path}/key\.pem does not exist"):
        resolve_upstream(None, env, DEFAULT)


def test_cert_path_without_verify_for_a_tcp_daemon_is_refused(certs: pathlib.Path) -> None:
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_CERT_PATH": str(certs)}
    with pytest.raises(UpstreamTLSError, match="DOCKER_TLS_VERIFY is not"):
        resolve_upstream(None, env, DEFAULT)
    with pytest.raises(UpstreamTLSError, match="DOCKER_TLS is set without DOCKER_TLS_VERIFY"):
        resolve_upstream(None, {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS": "1"}, DEFAULT)


def test_docker_tls_verify_for_a_unix_docker_host_is_refused(certs: pathlib.Path) -> None:
    env = {"DOCKER_HOST": "unix:///run/d.sock", "DOCKER_TLS_VERIFY": "1"}
    with pytest.raises(UpstreamTLSError, match="DOCKER_TLS_VERIFY: the upstream unix://"):
        resolve_upstream(None, env | {"DOCKER_CERT_PATH": str(certs)}, DEFAULT)


def test_the_environment_counts_only_for_docker_host(certs: pathlib.Path) -> None:
    """--upstream (or DOCKGATE_UPSTREAM) is not DOCKER_HOST: the CLI's variables are its own."""
    env = {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/none"}
    address, files = resolve_upstream("unix:///run/d.sock", env, DEFAULT)
    assert (address.scheme, files) == ("unix", None)


def test_options_win_over_the_environment(certs: pathlib.Path) -> None:
    env = {"DOCKER_HOST": "tcp://h", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/none"}
    address, files = resolve_upstream(None, env, DEFAULT, ca=str(certs / "ca.pem"))
    assert files is not None and files.named_by == "--upstream-tls" and address.port == 2376


def test_the_cli_refuses_to_start_with_the_message(
    certs: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKGATE_UPSTREAM_TLS_CA", str(certs / "bad.pem"))
    code = main(["serve", "--upstream", "tcp://127.0.0.1:2376", "--listen", "tcp://127.0.0.1:0"])
    assert code == 2
    err = capsys.readouterr().err
    # The error came from a variable: it is named (the start-up checks' rule), with the option.
    assert err.startswith("dockgate: error: DOCKGATE_UPSTREAM_TLS_CA="), err
    assert f"(--upstream-tls-ca) {certs / 'bad.pem'}: not a PEM" in err, err


def test_tls_failures_say_what_to_change() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.reason = "CERTIFICATE_VERIFY_FAILED"
    verify.verify_message = "unable to get local issuer certificate"
    assert "signed by the CA given with --upstream-tls-ca" in (tls_failure(verify) or "")
    refused = ssl.SSLError(1, "sslv3 alert bad certificate")
    refused.reason = "SSLV3_ALERT_BAD_CERTIFICATE"
    assert "--upstream-tls-cert and --upstream-tls-key" in (tls_failure(refused) or "")
    assert tls_failure(ConnectionRefusedError(111, "Connection refused")) is None
