"""`dockgate check` and the gateway decide a request the same way, for an authenticated caller's
Host header (issue 14's first finding): the gateway accepts any DNS name in the Host header of a
caller who proved who it is (a browser tricked by DNS rebinding presents no credentials), while
`check --as user:alice --host gw.example.com` built its verdict as for an anonymous caller and
printed `deny, 403`. Both sides are run for real: a gateway with an htpasswd file in front of the
private daemon, and the `dockgate check` command with the same policy file.
"""

from __future__ import annotations

import base64
import pathlib

import bcrypt
import pytest

from support.daemon import PrivateDaemon
from support.gateway import Gateway, run_dockgate, running
from support.remote import json_call

POLICY = """\
version: 1
policies:
  ops:
    rules:
      - allow: {sections: [ping, version, containers]}
"""


@pytest.mark.daemon
@pytest.mark.parametrize(
    ("caller", "authorization"),
    [("user:alice", "alice:alice-pw"), ("anonymous", "")],
)
def test_a_dns_host_is_decided_alike_by_check_and_the_gateway(
    daemon: PrivateDaemon, tmp_path: pathlib.Path, caller: str, authorization: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"alice-pw", bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"alice:{hashed}\n")
    htpasswd.chmod(0o600)
    headers = {"Host": "gw.example.com"}
    if authorization:
        headers["Authorization"] = "Basic " + base64.b64encode(authorization.encode()).decode()
    with running(Gateway(daemon.host, "--htpasswd", str(htpasswd), policy=policy)) as gw:
        status, answer = json_call(gw.port, "GET", "/v1.41/containers/json", headers=headers)
    checked = run_dockgate(
        "check", "--policy", str(policy), "--as", caller, "--host", "gw.example.com",
        "--auth-required", "GET", "/v1.41/containers/json",
    )  # fmt: skip
    decision = next(line for line in checked.stdout.splitlines() if line.startswith("decision:"))
    if authorization:
        # alice authenticated: the gateway answers, and check agrees (it said deny, 403).
        assert status == 200, (status, answer)
        assert decision.startswith("decision:  allow"), checked.stdout
    else:
        # Without credentials the gateway asks for them (401) before any Host check, and so
        # does check told that the gateway requires credentials (--auth-required): the same
        # admission code.
        assert status == 401, (status, answer)
        assert decision == f"decision:  deny, 401: {answer['message']}", checked.stdout
