"""What the tests of presets with real clients share (tests/clients/test_preset_*.py): a gateway
in front of the session's daemon whose only policy is one preset, with the audit log on; a
labelled site container for the client to discover; and the audit log read back.

The site runs busybox httpd on the host's network (the session's daemon has no bridge:
`--bridge=none`), so a discovering client reaches it at 127.0.0.1:PORT, and what it answers (a
token of the test's own) proves the answer came from that container.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import pathlib
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

from support.clients import Cleanup
from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.streams import wait_for


@dataclasses.dataclass(frozen=True)
class ClientRun:
    """A real client running on a preset's gateway, and what the test needs to judge it."""

    gateway: Gateway
    audit: pathlib.Path  # the gateway's audit log
    site: str  # the labelled container's name
    token: str  # what the site answers at `/`
    web_port: int  # the client's own HTTP port
    log: pathlib.Path  # the client's output
    cli_config: pathlib.Path  # a DOCKER_CONFIG for the docker CLI run as the same caller


@contextlib.contextmanager
def preset_gateway(
    daemon: PrivateDaemon, work: pathlib.Path, policy_text: str
) -> Iterator[tuple[Gateway, pathlib.Path]]:
    """A dockgate on tcp://127.0.0.1:PORT with `policy_text` as its policy file and an audit
    log; yields the gateway and the audit log's path."""
    policy = work / "policy.yaml"
    policy.write_text(policy_text)
    audit = work / "audit.jsonl"
    gateway = Gateway(daemon.host, "--audit-log", str(audit), policy=policy)
    with running(gateway, "the preset's gateway") as gw:
        yield gw, audit


def audit_records(path: pathlib.Path) -> list[dict[str, object]]:
    """Every record of an audit log (JSON lines), in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_site(
    daemon: PrivateDaemon,
    cleanup: Cleanup,
    image: str,
    *,
    name: str,
    port: int,
    token: str,
    labels: Mapping[str, str],
) -> str:
    """A busybox httpd on 127.0.0.1:`port` (host network) answering `token` at `/`, with
    `labels`; started straight on the daemon (the client under test only discovers it).
    Returns the container's id."""
    script = (
        f"mkdir -p /tmp/www && echo {token} > /tmp/www/index.html && "
        f"exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    )
    label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    proc = daemon.docker(
        *("run", "-d", "--network", "host", "--name", name, *label_args),
        *(image, "sh", "-c", script),
    )
    cleanup.container(name)
    return proc.stdout.decode().strip()


def http_get(url: str, host: str | None = None, timeout: float = 5) -> tuple[int, str]:
    """(status, body) of a GET; (0, error) when nothing answered."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def docker_through(
    gateway: Gateway, config: pathlib.Path, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """The docker CLI through `gateway`, as the client under test connects (anonymously)."""
    return subprocess.run(
        ["docker", "--config", str(config), "-H", gateway.url, *args],
        capture_output=True,
        timeout=60,
        check=False,
    )


def api_post(gateway: Gateway, path: str, body: object) -> tuple[int, str]:
    """(status, body) of a JSON POST to the Engine API through `gateway` (anonymously)."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        connection.request(
            "POST", path, json.dumps(body), headers={"Content-Type": "application/json"}
        )
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    finally:
        connection.close()


def exec_ids(daemon: PrivateDaemon, container: str) -> list[str]:
    """The exec instances the daemon holds for `container` (asked of the daemon directly)."""
    state = json.loads(daemon.docker("inspect", container).stdout)[0]
    return list(state.get("ExecIDs") or [])


def assert_outside_denied(run: ClientRun, daemon: PrivateDaemon, policy: str) -> None:
    """The client's caller (anonymous, on the same listener) is refused what its preset does
    not allow, and the daemon shows nothing happened: `docker create` leaves no container, and
    an exec asked of the API itself (the CLI would first be refused its inspect) leaves the
    site container without exec instances."""
    extra = f"{run.site}-x"
    create = docker_through(run.gateway, run.cli_config, "create", "--name", extra, "busybox")
    assert create.returncode != 0
    assert f"denied by policy {policy}".encode() in create.stderr, create.stderr
    assert daemon.docker("inspect", extra, check=False).returncode != 0

    status, answer = api_post(run.gateway, f"/v1.41/containers/{run.site}/exec", {"Cmd": ["id"]})
    assert status == 403, answer
    assert f"ContainerExec denied by policy {policy}" in answer, answer
    assert exec_ids(daemon, run.site) == []
    # The gateway writes its audit lines as the exchanges end, apart from answering them.
    wanted = {("ContainerCreate", "deny"), ("ContainerExec", "deny")}
    wait_for(
        lambda: wanted <= {(r["operation"], r["decision"]) for r in audit_records(run.audit)},
        timeout=10,
        what="the denials in the audit log",
    )
