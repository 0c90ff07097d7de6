"""Reading the admin listener's `GET /metrics` (Prometheus text) in tests."""

from __future__ import annotations

import socket

from prometheus_client.parser import text_string_to_metric_families


def http_exchange(port: int, request: bytes) -> bytes:
    """Send `request` (asking for `Connection: close`) and read the answer to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as conn:
        conn.sendall(request)
        raw = b""
        while chunk := conn.recv(65536):
            raw += chunk
    return raw


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of `GET /metrics`, by name and labels."""
    raw = http_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"text/plain; version=0.0.4" in head, head
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples
