"""Issue 11, "attack your own change", second pass, the authentication finding: wrong guesses
from several sources locked a user out, at the source where she had just authenticated too
(the guardrail findings of that pass are tests/body/test_attacks_ci_runner_2.py).

Fixed by issue 12, item 3: a source where a user authenticated stays exempt from the lock on her
name; tests/auth/test_throttle_e2e.py checks the bound from new sources.
"""

from __future__ import annotations

import base64
import http.client
import pathlib

from support.attack import (
    ATTACK_MARKS,
    TENANT_USERS,
    tenants_policy,
)
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.remote import write_htpasswd

pytestmark = ATTACK_MARKS


USERS = TENANT_USERS
TENANTS_POLICY = tenants_policy(
    "ping, version, info, events, containers, exec, images, build, volumes, networks",
    more="    redact: {env: true, mounts: true, labels: true}\n",
)


# ----- authentication --------------------------------------------------------------------------


def _version_status(port: int, user: str, password: str, source: str = "127.0.0.1") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        conn.request("GET", "/v1.41/version", headers={"Authorization": f"Basic {token}"})
        answer = conn.getresponse()
        answer.read()
        return answer.status
    finally:
        conn.close()


def test_wrong_guesses_lock_out_a_user_with_a_remembered_password(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    write_htpasswd(tmp_path / "htpasswd", USERS)
    (tmp_path / "policy.yaml").write_text(TENANTS_POLICY)
    gateway = Gateway(
        daemon.host, "--htpasswd", str(tmp_path / "htpasswd"), policy=str(tmp_path / "policy.yaml")
    )
    with running(gateway) as started:
        # Fixed (issue 12, item 3): a source where alice authenticated stays exempt from the
        # lock on her name (tests/auth/test_throttle_e2e.py checks the bound from new sources).
        assert _version_status(started.port, "alice", USERS["alice"]) == 200
        # Default limits: 20 failures per address, 50 per user name, in 60 s.
        for index in range(60):
            source = f"127.0.0.{2 + index // 20}"
            _version_status(started.port, "alice", f"guess-{index}", source)
        assert _version_status(started.port, "bob", USERS["bob"]) == 200
        assert _version_status(started.port, "alice", USERS["alice"]) == 200
