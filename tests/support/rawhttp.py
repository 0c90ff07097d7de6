"""Raw HTTP/1.1 for the byte-level tests: a buffered client socket and small message helpers."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable
from typing import Self


def header_value(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive) in (name, value) pairs, or None."""
    lname = name.lower()
    for k, v in headers:
        if k.lower() == lname:
            return v
    return None


def json_message(body: bytes) -> str | None:
    """The ``message`` of a JSON object body (Docker's error shape), or None."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("message") if isinstance(value, dict) else None


def until_close(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` as is on a new connection to 127.0.0.1:`port`; everything the other end
    sends until it closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


class BufferedConn:
    """A connected client socket with a read buffer: bytes read past what a call wanted stay in
    ``buf`` for the next one. Every read waits at most ``timeout`` s unless told otherwise."""

    RECV_SIZE = 65536

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, timeout: float | None = None) -> bool:
        """Receive more bytes into ``buf``; False at EOF (a reset counts as EOF)."""
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(self.RECV_SIZE)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, delim: bytes, limit: int | None = None) -> bytes:
        """Bytes up to and including ``delim``; fails past ``limit`` buffered bytes or at EOF."""
        start = 0
        while (idx := self.buf.find(delim, start)) < 0:
            if limit is not None and len(self.buf) > limit:
                raise AssertionError(f"no {delim!r} in {bytes(self.buf[:200])!r}...")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self._fill():
                raise EOFError(f"EOF before {delim!r}; got {bytes(self.buf[:300])!r}")
        end = idx + len(delim)
        out = bytes(self.buf[:end])
        del self.buf[:end]
        return out

    def wait_closed(self, timeout: float) -> tuple[bool, bytes]:
        """Read until EOF/reset for up to ``timeout`` s: (closed?, bytes that arrived meanwhile)."""
        deadline = time.monotonic() + timeout
        got = bytearray(self.buf)
        self.buf.clear()
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(got)
            try:
                if self._fill(left):
                    got += self.buf
                    self.buf.clear()
            except TimeoutError:
                return False, bytes(got)
        return True, bytes(got)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """A response head (without its blank line): the status and the lower-cased headers (the
    last of a repeated header wins)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def dechunk(data: bytes) -> bytes:
    """A whole chunked body decoded (extensions ignored, trailers dropped)."""
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def read_answer(sock: socket.socket, timeout: float = 5) -> tuple[int, bytes, bytes]:
    """One answer with a Content-Length body, read from a plain socket: (status, head, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            raise EOFError(data)
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        got = sock.recv(65536)
        if not got:
            raise EOFError(data)
        rest += got
    return int(head.split(b" ")[1]), head, rest
