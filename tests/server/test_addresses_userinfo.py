"""User info in an address (`tcp://USER:PASSWORD@HOST:PORT`): refused with its own message, and
never printed (issue 13's attack review: `DOCKER_HOST=tcp://alice:PW@gw:2375` made `serve` and
`doctor` quote the whole URL, password included, and say "write an IPv6 address in brackets").

The docker CLI parses such a DOCKER_HOST with Go's url.Parse (user info split off at the
authority's last "@") and moby's opts/hosts.go ParseTCPAddr keeps host and port only; dockgate
has no use for the credentials either way, so it refuses them rather than drop them silently.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from dockgate.addresses import AddressError, parse_address, shown_address
from dockgate.auth.sourceaddr import AddressListError, parse_address_list
from dockgate.policy.loader import PolicyError, load_policy_file
from dockgate.relay.upstreamtls import UpstreamTLSError, resolve_upstream
from support.gateway import gateway_env, serve_command

SECRET = "Zq8r5Wd2-secret"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"tcp://alice:{SECRET}@gw.example:2375", "tcp://***@gw.example:2375"),
        (f"tcp://{SECRET}@gw.example:2375", "tcp://***@gw.example:2375"),  # a token as user
        (f"tcp://alice:a@b/{SECRET}@gw:2375", "tcp://***@gw:2375"),  # "@" and "/" in it
        (f"http://alice:{SECRET}@[::1]:2375", "http://***@[::1]:2375"),
        (f"https://alice:{SECRET}@gw", "https://***@gw"),
        (f"alice:{SECRET}@gw:2375", "***@gw:2375"),  # no scheme at all
        (f"alice:{SECRET}@gw://x", "***@gw://x"),  # not a scheme: all of it goes
        (f"unix://alice:{SECRET}@gw", "unix://***@gw"),
        ("unix:///run/user@1000/docker.sock", "unix:///run/user@1000/docker.sock"),  # a path
        ("/srv/a@b/htpasswd", "/srv/a@b/htpasswd"),
        ("tcp://gw.example:2375", "tcp://gw.example:2375"),
        ("", ""),
    ],
)
def test_shown_address_hides_user_info_only(text: str, shown: str) -> None:
    assert shown_address(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        f"tcp://alice:{SECRET}@gateway.example:2375",
        f"tcp://alice:{SECRET}@gateway.example",
        f"tcp://alice:{SECRET}@[::1]:2375",
        f"http://alice:{SECRET}@127.0.0.1:2375",
        f"tcp://{SECRET}@127.0.0.1:2375",
        "tcp://alice@127.0.0.1:2375",  # a user without a password: accepted before
    ],
)
def test_user_info_is_refused_with_its_own_message(text: str) -> None:
    """Before: "write an IPv6 address in brackets" (the ":" of USER:PASSWORD read as part of
    the host), or, for `tcp://alice@HOST`, an upstream whose host was `alice@HOST`."""
    with pytest.raises(AddressError) as raised:
        parse_address(text)
    message = str(raised.value)
    assert "take no USER:PASSWORD@" in message
    assert "IPv6" not in message
    assert SECRET not in message
    assert "***@" in message


@pytest.mark.parametrize(
    "text",
    [
        f"https://alice:{SECRET}@gw:2375",  # unsupported scheme
        f"unix://alice:{SECRET}@gw",  # a relative unix path
        f"alice:{SECRET}@gw:2375",  # no scheme
        f"alice:{SECRET}@gw://x",  # the "scheme" holds the secret
        f"tcp://alice:{SECRET}@gw:99999",
    ],
)
def test_no_address_error_quotes_the_password(text: str) -> None:
    with pytest.raises(AddressError) as raised:
        parse_address(text)
    assert SECRET not in str(raised.value)


def test_an_at_sign_in_a_unix_path_is_a_path() -> None:
    assert parse_address("unix:///run/user@1000/docker.sock").path == "/run/user@1000/docker.sock"


def test_docker_cert_path_message_hides_user_info() -> None:
    """resolve_upstream's DOCKER_CERT_PATH-without-verify message quoted DOCKER_HOST whole."""
    env = {"DOCKER_HOST": f"tcp://alice:{SECRET}@gw:2376", "DOCKER_CERT_PATH": "/nowhere"}
    with pytest.raises(UpstreamTLSError) as raised:
        resolve_upstream(None, env, "unix:///var/run/docker.sock")
    assert SECRET not in str(raised.value)
    assert "tcp://***@gw:2376" in str(raised.value)


def test_a_docker_host_that_does_not_parse_is_named() -> None:
    env = {"DOCKER_HOST": f"tcp://alice:{SECRET}@gw:2375"}
    with pytest.raises(AddressError, match=r"^DOCKER_HOST: 'tcp://\*\*\*@gw:2375': ") as raised:
        resolve_upstream(None, env, "unix:///var/run/docker.sock")
    assert SECRET not in str(raised.value)
    with pytest.raises(AddressError, match=r"^'tcp://\*\*\*@gw:1': "):  # --upstream wins
        resolve_upstream(f"tcp://a:{SECRET}@gw:1", env, "unix:///var/run/docker.sock")


def test_a_policy_origin_with_a_password_is_refused_without_it(tmp_path: pathlib.Path) -> None:
    """policy/loader.py quoted a refused origin whole (also from --allow-origin)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"origins:\n  - https://alice:{SECRET}@ui.example.com\npolicies:\n  ci: {{}}\n"
    )
    with pytest.raises(PolicyError) as raised:
        load_policy_file(str(policy))
    assert SECRET not in str(raised.value)
    assert "origin 'https://***@ui.example.com'" in str(raised.value)


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=gateway_env(env), capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("variable", "option"),
    [("DOCKGATE_UPSTREAM", "--upstream"), ("DOCKGATE_LISTEN", "--listen")],
)
def test_serve_names_the_variable_and_hides_the_password(variable: str, option: str) -> None:
    """From a DOCKGATE_ variable: the error still names the variable (cli._named_variable
    matched the quoted value, which addresses.py now hides) and never the password."""
    value = f"tcp://alice:{SECRET}@127.0.0.1:2375"
    proc = _run(*serve_command(), env={variable: value})
    assert proc.returncode == 2, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert f"{variable}: " in proc.stderr, proc.stderr
    assert "take no USER:PASSWORD@" in proc.stderr


def test_doctor_json_hides_the_password_of_dockgate_upstream(tmp_path: pathlib.Path) -> None:
    env = {"DOCKGATE_UPSTREAM": f"tcp://alice:{SECRET}@127.0.0.1:2375"}
    proc = _run(sys.executable, "-m", "dockgate", "doctor", "--format", "json", env=env)
    assert proc.returncode == 1, proc.stderr
    json.loads(proc.stdout)
    assert SECRET not in proc.stdout + proc.stderr
    assert "DOCKGATE_UPSTREAM" in proc.stdout


def test_a_password_in_the_port_position_is_not_quoted() -> None:
    """The second attack pass: `tcp://h:PASSWORD` (user info without its `@`) was quoted back
    as "invalid port 'PASSWORD'"."""
    with pytest.raises(AddressError) as raised:
        parse_address(f"tcp://gw:{SECRET}")
    assert SECRET not in str(raised.value)
    assert str(raised.value).startswith("'tcp://gw:***': the port is not a number")
    with pytest.raises(AddressError, match=r"invalid port '99999'"):  # a number is shown
        parse_address("tcp://gw:99999")


def test_a_trusted_proxy_with_user_info_is_not_quoted() -> None:
    with pytest.raises(AddressListError) as raised:
        parse_address_list([f"tcp://alice:{SECRET}@10.0.0.1"])
    assert SECRET not in str(raised.value)
    assert "'tcp://***@10.0.0.1': not an address or network" in str(raised.value)
    with pytest.raises(AddressListError, match=r"'10.0.0.300'"):  # a typo is still shown
        parse_address_list(["10.0.0.300"])
