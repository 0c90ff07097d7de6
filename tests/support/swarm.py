"""The operator's side of deploying dockgate on a swarm: the secrets deploy/stack.yml expects,
`docker stack deploy` of one of deploy/'s files, and whether a task is healthy."""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Iterator, Mapping

import trustme

from support.daemon import PrivateDaemon, free_tcp_port, run_docker
from support.image import REPO
from support.remote import write_htpasswd


def create_stack_secrets(
    manager: PrivateDaemon, work: pathlib.Path, addresses: list[str], users: Mapping[str, str]
) -> pathlib.Path:
    """``dockgate_htpasswd_1`` for ``users``, and ``dockgate_tls_cert_1``/``dockgate_tls_key_1``
    (version 1 of each, as deploy/stack.yml names them): a server certificate for
    ``addresses`` from a new CA. Returns the clients' DOCKER_CERT_PATH
    (``ca.pem`` only: the gateway asks for passwords, not client certificates)."""
    ca = trustme.CA()
    server = ca.issue_cert(*addresses)
    files = work / "secrets"
    files.mkdir()
    write_htpasswd(files / "htpasswd", users)
    (files / "chain.pem").write_bytes(b"".join(p.bytes() for p in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files / "key.pem"))
    for name, source in (
        ("dockgate_htpasswd_1", "htpasswd"),
        ("dockgate_tls_cert_1", "chain.pem"),
        ("dockgate_tls_key_1", "key.pem"),
    ):
        manager.docker("secret", "create", name, str(files / source))
    client = work / "client"
    client.mkdir()
    ca.cert_pem.write_to_path(str(client / "ca.pem"))
    return client


def deploy_stack(manager: PrivateDaemon, stack_file: str, stack: str, **variables: str) -> None:
    """`docker stack deploy` of deploy/``stack_file``, with the file's substitutions in
    ``variables``. The image is not resolved on a registry (there is none here)."""
    proc = run_docker(
        manager.env() | variables,
        *("stack", "deploy", "--detach=true", "--resolve-image", "never"),
        *("-c", str(REPO / "deploy" / stack_file), stack),
    )
    assert proc.returncode == 0, proc.stderr.decode()


def healthy_task(node: PrivateDaemon, service: str) -> str | None:
    """The container ID of a running task of ``service`` on ``node`` that Docker reports
    healthy (the image's HEALTHCHECK: dockgate answers and the daemon behind it too)."""
    label = f"label=com.docker.swarm.service.name={service}"
    for cid in node.docker("ps", "-q", "--filter", label).stdout.decode().split():
        state = json.loads(node.docker("inspect", cid).stdout)[0]["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return cid
    return None


@contextlib.contextmanager
def single_node_swarm(daemon: PrivateDaemon, *, joined_ok: bool = False) -> Iterator[PrivateDaemon]:
    """`daemon` the manager of a swarm of its own (on a free loopback port) while the block
    runs, and out of it (forced) after; with `joined_ok`, a daemon already in a swarm is used
    as it is."""
    port = free_tcp_port()
    if joined_ok:
        done = daemon.docker(
            *("swarm", "init", "--advertise-addr", "127.0.0.1"),
            *("--listen-addr", f"127.0.0.1:{port}"),
            check=False,
        )
        assert done.returncode == 0 or b"already part of a swarm" in done.stderr, done.stderr
    else:
        daemon.docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr",
                      f"127.0.0.1:{port}")  # fmt: skip
    try:
        yield daemon
    finally:
        daemon.docker("swarm", "leave", "--force", check=False, timeout=60)
