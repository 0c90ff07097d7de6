"""Issue 12, item 6: a PROXY header that names no client, and X-Forwarded-For behind one.

A `--proxy-protocol` gateway sits behind a layer-4 balancer (HAProxy `send-proxy`, an AWS NLB),
which never writes X-Forwarded-For: such a header is the client's own. When the PROXY header
names no client (v1 `UNKNOWN`, v2 `LOCAL`, v2 `AF_UNSPEC` or `AF_UNIX`), the connection's
source stays the proxy's own address. Before the fix that address, being a trusted proxy, made
the gateway read the client's X-Forwarded-For, so any client of the balancer could choose the
address it was judged, logged and throttled by. Now X-Forwarded-For is never read on a
`--proxy-protocol` gateway.

Every case here sends `X-Forwarded-For: 10.9.9.9` to a gateway that denies 10.9.9.9: the old
code answered 403 (the client's header named the source); now the request is served as the
proxy's address (or the client the PROXY header names), which the audit trail records. A
gateway without `--proxy-protocol` still reads the same header from the same peer (403): the
deny list and the header are what the test thinks they are.
"""

from __future__ import annotations

import pathlib
import socket
import ssl
import struct
import uuid
from collections.abc import Iterator

import pytest
import trustme

from support.daemon import PrivateDaemon
from support.gateway import Gateway, running
from support.identity import (
    NO_THROTTLE,
    V2_SIGNATURE,
    Served,
    proxy_v2,
    raw_request,
    request_bytes,
    wait_access_log,
    wait_audit,
)

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]

PROXY_PEER = "127.0.0.1"  # the test's sockets connect from here: the trusted balancer
SPOOFED = "10.9.9.9"  # what the client writes in X-Forwarded-For; denied by the gateway
TRUSTED = (PROXY_PEER, "10.0.0.0/24")  # a client the PROXY header names may be a proxy too


def v2_header(command: int, family: int, block: bytes) -> bytes:
    """A v2 header: version 2 with `command` (0 LOCAL, 1 PROXY), `family`, and `block` after."""
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(block)) + block


def _unix_block(source: str, destination: str) -> bytes:
    """An AF_UNIX address block: two 108-byte NUL-padded socket paths."""
    return source.encode().ljust(108, b"\0") + destination.encode().ljust(108, b"\0")


_TCP4_BLOCK = bytes([10, 9, 9, 9, 10, 0, 0, 1]) + struct.pack("!HH", 5555, 2375)

# Headers after which the connection's source is the proxy itself.
NO_CLIENT = {
    "v1-unknown": b"PROXY UNKNOWN\r\n",
    # The specification: whatever follows UNKNOWN is ignored, addresses included.
    "v1-unknown-with-addresses": b"PROXY UNKNOWN 10.9.9.9 10.0.0.1 5555 2375\r\n",
    "v2-local": v2_header(0x0, 0x00, b""),
    # LOCAL (a health check of the balancer's own) ignores any address block it carries.
    "v2-local-with-tcp4-block": v2_header(0x0, 0x11, _TCP4_BLOCK),
    "v2-proxy-af-unspec": v2_header(0x1, 0x00, b""),
    "v2-proxy-af-unix": v2_header(0x1, 0x31, _unix_block("/run/client.sock", "/run/lb.sock")),
}


@pytest.fixture(scope="module")
def proxy_gw(daemon: PrivateDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    audit = tmp_path_factory.mktemp("proxy-fallbacks") / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *("--trusted-proxy", ",".join(TRUSTED), "--proxy-protocol"),
        *("--deny-source", SPOOFED, "--audit-log", str(audit)),
        *NO_THROTTLE,
    )
    with running(gw, "the PROXY protocol gateway"):
        yield Served(gw, audit)


def _ping(served: Served, prefix: bytes, target: str = "") -> tuple[str, int]:
    """A /_ping (tagged, for its audit record) after `prefix`, with the client's own
    X-Forwarded-For; the status and the source the gateway judged it by."""
    target = target or f"/_ping?dgt={uuid.uuid4().hex}"
    reply = raw_request(served.port, "GET", target, [("X-Forwarded-For", SPOOFED)], prefix=prefix)
    record = wait_audit(served.audit, lambda r: r["path"] == target)
    assert record["status"] == reply.status
    if reply.status == 200:
        assert reply.body == b"OK"
    return record["source"], reply.status


@pytest.mark.parametrize("header", list(NO_CLIENT.values()), ids=list(NO_CLIENT))
def test_a_header_without_a_client_leaves_the_proxy_as_the_source(
    proxy_gw: Served, header: bytes
) -> None:
    """Failed before (403 "requests from 10.9.9.9 are not allowed": the proxy's trust made the
    client's X-Forwarded-For the source). Now the source is the proxy, logged as such."""
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    assert _ping(proxy_gw, header, target) == (PROXY_PEER, 200)
    # The access log shows the peer only: no other source was taken.
    line = wait_access_log(proxy_gw.gw, lambda text: f"GET {target} " in text)
    assert line.startswith(f"{PROXY_PEER}:") and " src=" not in line, line


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 10.9.8.7 10.0.0.1 5555 2375\r\n", "10.9.8.7"),
        (proxy_v2("10.20.30.40", "10.0.0.1", 40000, 2375), "10.20.30.40"),
        (proxy_v2("2001:db8::7", "2001:db8::1", 40000, 2375), "2001:db8::7"),
        # A client inside a --trusted-proxy range: before, its X-Forwarded-For was read too
        # (failed with 403); the PROXY header is the only word on a layer-4 listener.
        (b"PROXY TCP4 10.0.0.5 10.0.0.1 5555 2375\r\n", "10.0.0.5"),
        (proxy_v2("10.0.0.6", "10.0.0.1", 40000, 2375), "10.0.0.6"),
    ],
    ids=["v1-tcp4", "v2-tcp4", "v2-tcp6", "v1-trusted-client", "v2-trusted-client"],
)
def test_a_header_with_a_client_names_it_whatever_x_forwarded_for_says(
    proxy_gw: Served, header: bytes, client: str
) -> None:
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    assert _ping(proxy_gw, header, target) == (client, 200)
    line = wait_access_log(proxy_gw.gw, lambda text: f"GET {target} " in text)
    assert line.endswith(f" src={client}"), line


def test_the_proxy_header_still_decides_the_source_lists(proxy_gw: Served) -> None:
    """The deny list does apply to a PROXY-named client (the fallbacks above are not a hole
    in the list itself)."""
    header = f"PROXY TCP4 {SPOOFED} 10.0.0.1 5555 2375\r\n".encode()
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    reply = raw_request(proxy_gw.port, "GET", target, prefix=header)
    assert (reply.status, reply.message) == (
        403,
        f"dockgate: requests from {SPOOFED} are not allowed",
    )


def test_without_proxy_protocol_the_same_peer_s_header_is_read(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """The control: a plain trusted proxy (a layer-7 balancer) is believed, so the spoofed
    address is refused there; the cases above are not passing because the header is ignored
    for some other reason."""
    audit = tmp_path / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *("--trusted-proxy", ",".join(TRUSTED), "--deny-source", SPOOFED),
        *("--audit-log", str(audit)),
        *NO_THROTTLE,
    )
    with running(gw, "the X-Forwarded-For gateway"):
        assert _ping(Served(gw, audit), b"") == (SPOOFED, 403)


def test_a_header_without_a_client_before_tls_leaves_the_proxy_as_the_source(
    daemon: PrivateDaemon, tmp_path: pathlib.Path
) -> None:
    """The same on a TLS listener, where the PROXY header comes before the handshake
    (relay/tls.py reads it). Failed before: 403, the spoofed address refused."""
    ca = trustme.CA()
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("proxyq.clients.test")
    files = {
        "server.pem": b"".join(b.bytes() for b in server.cert_chain_pems),
        "server-key.pem": server.private_key_pem.bytes(),
        "ca.pem": ca.cert_pem.bytes(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    audit = tmp_path / "audit.jsonl"
    gw = Gateway(
        daemon.host,
        *(
            "--tls-cert",
            str(tmp_path / "server.pem"),
            "--tls-key",
            str(tmp_path / "server-key.pem"),
        ),
        *("--tls-client-ca", str(tmp_path / "ca.pem"), "--audit-log", str(audit)),
        *("--trusted-proxy", ",".join(TRUSTED), "--proxy-protocol", "--deny-source", SPOOFED),
        *NO_THROTTLE,
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    client.configure_cert(context)
    target = f"/_ping?dgt={uuid.uuid4().hex}"
    with running(gw, "the TLS PROXY protocol gateway"):
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
            sock.sendall(NO_CLIENT["v1-unknown"])
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(request_bytes("GET", target, [("X-Forwarded-For", SPOOFED)]))
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        record = wait_audit(audit, lambda r: r["path"] == target)
        assert (record["source"], record["decision"]) == (PROXY_PEER, "allow")
