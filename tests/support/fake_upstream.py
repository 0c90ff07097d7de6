"""A scriptable fake Docker daemon on a unix socket, for byte-level gateway tests.

``FakeUpstream`` listens on a unix socket and serves every accepted connection in its own thread
with plain blocking sockets. It speaks just enough HTTP/1.1 to be pooled by a gateway (keep-alive,
``Content-Length`` responses by default) and it records everything:

* per upstream connection (``UpstreamConn``): the raw bytes received (first 8 MiB), the total byte
  count, when it opened, when the peer sent EOF and when it was closed, and the peer's pid;
* per request (``RequestRecord``): method, target, headers, the decoded body (first 1 MiB), its
  length and sha256, and whether the whole body arrived.

A test scripts the daemon by setting ``fake.handler`` to a function taking an ``Exchange``; the
exchange gives the parsed request head and lets the handler read the body (whole, in pieces, or
only a part), answer with raw bytes or a ``Content-Length`` response, stream a chunked response,
send ``100 Continue`` only when asked, answer early and close, or take over the raw connection
(``101 Switching Protocols`` / Docker's hijacked attach). Handlers can fall back to
``default_handler`` for other paths: ``/_ping`` answers ``OK`` and everything else answers a JSON
echo ``{"method", "target", "conn", "body_len", "body_sha256"}``.

Unexpected exceptions in handlers (anything but the peer going away) are collected in
``fake.errors`` so that a test fixture can fail on them.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import os
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from support.procs import StartStop
from support.rawhttp import header_value

RAW_RECORD_LIMIT = 8 * 1024 * 1024
BODY_KEEP_LIMIT = 1024 * 1024
MAX_HEAD_BYTES = 1024 * 1024
BODY_TIMEOUT = 30.0

DOCKER_HEADERS: tuple[tuple[str, str], ...] = (
    ("Api-Version", "1.45"),
    ("Docker-Experimental", "false"),
    ("Ostype", "linux"),
    ("Server", "Docker/26.1.0 (linux)"),
)

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
}

Handler = Callable[["Exchange"], None]

# Exceptions that mean "the gateway went away": not test failures by themselves.
PEER_GONE = (OSError, EOFError)


class PeerClosed(EOFError):
    """The peer closed the connection before the expected bytes arrived."""


class ProtocolError(ValueError):
    """The gateway sent bytes that are not valid HTTP/1.1."""


@dataclass
class RequestRecord:
    """What the fake daemon saw of one request."""

    conn_id: int
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    head_raw: bytes
    received_at: float
    body: bytearray = field(default_factory=bytearray)
    body_len: int = 0
    body_sha256: str = hashlib.sha256(b"").hexdigest()
    complete: bool = False

    def header(self, name: str) -> str | None:
        return header_value(self.headers, name)


class UpstreamConn:
    """One accepted connection from the gateway, with its recordings."""

    def __init__(self, server: FakeUpstream, sock: socket.socket, conn_id: int) -> None:
        self.server = server
        self.sock = sock
        self.id = conn_id
        self.peer_pid: int | None = None
        with contextlib.suppress(OSError):
            cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            self.peer_pid = struct.unpack("3i", cred)[0]
        self.raw = bytearray()
        self.bytes_in = 0
        self.bytes_out = 0
        self.buf = bytearray()
        self.opened_at = time.monotonic()
        self.eof_at: float | None = None
        self.closed_at: float | None = None
        self.eof = threading.Event()
        self.closed = threading.Event()
        self.sends: list[tuple[float, int]] = []
        self.request_count = 0
        self.thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed.is_set() else "open"
        return f"<UpstreamConn #{self.id} {state} in={self.bytes_in} reqs={self.request_count}>"

    # -- receiving ---------------------------------------------------------------------------
    def _mark_eof(self) -> None:
        if not self.eof.is_set():
            self.eof_at = time.monotonic()
            self.eof.set()

    def _fill(self, timeout: float | None) -> bool:
        """Receive more bytes into ``buf``; False on EOF (or reset)."""
        if self.eof.is_set():
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(262144)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self._mark_eof()
            return False
        self.bytes_in += len(data)
        room = RAW_RECORD_LIMIT - len(self.raw)
        if room > 0:
            self.raw += data[:room]
        self.buf += data
        return True

    def read_until(self, delim: bytes, limit: int, timeout: float | None) -> bytes | None:
        """Bytes up to and including ``delim``; None on EOF before any byte of it."""
        start = 0
        while True:
            idx = self.buf.find(delim, start)
            if idx >= 0:
                end = idx + len(delim)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise ProtocolError(f"no {delim!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self._fill(timeout):
                if self.buf:
                    raise PeerClosed(f"EOF inside a line/head: {bytes(self.buf[:200])!r}")
                return None

    def read_exact(self, n: int, timeout: float | None = BODY_TIMEOUT) -> bytes:
        while len(self.buf) < n:
            if not self._fill(timeout):
                raise PeerClosed(f"EOF after {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_some(self, max_bytes: int = 65536, timeout: float | None = BODY_TIMEOUT) -> bytes:
        """Up to ``max_bytes`` bytes, buffered ones first; b"" on EOF."""
        if not self.buf and not self._fill(timeout):
            return b""
        out = bytes(self.buf[:max_bytes])
        del self.buf[: len(out)]
        return out

    def peer_closed(self) -> bool:
        """Non-blocking: has the peer closed its side (EOF or reset already pending)?"""
        if self.eof.is_set():
            return True
        if self.buf:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            self._mark_eof()
            return True
        if not readable:
            return False
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._mark_eof()
            return True
        return False

    # -- sending -----------------------------------------------------------------------------
    def send(self, data: bytes) -> float:
        """sendall ``data``; returns the monotonic time just before the send."""
        t = time.monotonic()
        self.sock.settimeout(BODY_TIMEOUT)
        self.sock.sendall(data)
        self.bytes_out += len(data)
        self.sends.append((t, len(data)))
        return t

    def shutdown_write(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the socket (only from the connection's own thread)."""
        if self.closed_at is None:
            self.closed_at = time.monotonic()
        with contextlib.suppress(OSError):
            self.sock.close()
        self.closed.set()


class Exchange:
    """One request on an upstream connection, handed to a handler."""

    def __init__(self, conn: UpstreamConn, record: RequestRecord) -> None:
        self.conn = conn
        self.record = record
        self.method = record.method
        self.target = record.target
        self.version = record.version
        self.headers = record.headers
        self.response_started = False
        self.close_after = False
        self.hijacked = False
        self.body_done = False
        self._hasher = hashlib.sha256()
        self._chunk_left = 0
        self._length_left = 0
        te = ",".join(v for k, v in self.headers if k.lower() == "transfer-encoding").lower()
        cl = self.header("content-length")
        if te:
            if [p.strip() for p in te.split(",")][-1] != "chunked":
                raise ProtocolError(f"forwarded request with Transfer-Encoding {te!r}")
            self.body_mode = "chunked"
        elif cl is not None:
            if not cl.strip().isdigit():
                raise ProtocolError(f"forwarded request with Content-Length {cl!r}")
            self.body_mode = "length"
            self._length_left = int(cl)
        else:
            self.body_mode = "none"
        if self.body_mode == "length" and self._length_left == 0:
            self.body_mode = "none"
        if self.body_mode == "none":
            self._finish_body()
        conn_hdr = (self.header("connection") or "").lower()
        if "close" in conn_hdr or (self.version == "HTTP/1.0" and "keep-alive" not in conn_hdr):
            self.close_after = True

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        return self.record.header(name)

    # -- request body ------------------------------------------------------------------------
    def _finish_body(self) -> None:
        self.body_done = True
        self.record.body_sha256 = self._hasher.hexdigest()
        self.record.complete = True

    def _account(self, data: bytes) -> None:
        self._hasher.update(data)
        self.record.body_len += len(data)
        room = BODY_KEEP_LIMIT - len(self.record.body)
        if room > 0:
            self.record.body += data[:room]

    def read_body_piece(self, max_bytes: int = 65536, timeout: float = BODY_TIMEOUT) -> bytes:
        """The next decoded piece of the request body; b"" once the body is complete."""
        if self.body_done:
            return b""
        conn = self.conn
        if self.body_mode == "length":
            data = conn.read_some(min(max_bytes, self._length_left), timeout)
            if not data:
                raise PeerClosed(f"EOF with {self._length_left} body bytes missing")
            self._length_left -= len(data)
            self._account(data)
            if self._length_left == 0:
                self._finish_body()
            return data
        # chunked
        if self._chunk_left == 0:
            line = conn.read_until(b"\r\n", 4096, timeout)
            if line is None:
                raise PeerClosed("EOF before a chunk-size line")
            size_txt = line[:-2].split(b";", 1)[0].strip()
            try:
                size = int(size_txt, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk-size line forwarded: {line!r}") from None
            if size == 0:
                while True:
                    trailer = conn.read_until(b"\r\n", 65536, timeout)
                    if trailer is None:
                        raise PeerClosed("EOF in chunked trailers")
                    if trailer == b"\r\n":
                        break
                self._finish_body()
                return b""
            self._chunk_left = size
        data = conn.read_some(min(max_bytes, self._chunk_left), timeout)
        if not data:
            raise PeerClosed("EOF inside a chunk")
        self._chunk_left -= len(data)
        self._account(data)
        if self._chunk_left == 0 and conn.read_exact(2, timeout) != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        return data

    def iter_body(self, max_bytes: int = 65536, timeout: float = BODY_TIMEOUT) -> Iterator[bytes]:
        while True:
            piece = self.read_body_piece(max_bytes, timeout)
            if not piece:
                return
            yield piece

    def read_body(self, timeout: float = BODY_TIMEOUT) -> bytes:
        """The whole (remaining) decoded body."""
        return b"".join(self.iter_body(timeout=timeout))

    def read_body_upto(self, n: int, timeout: float = BODY_TIMEOUT) -> bytes:
        """At least ``n`` body bytes (or the whole body if shorter); leaves the rest unread."""
        out = bytearray()
        while len(out) < n:
            piece = self.read_body_piece(n - len(out), timeout)
            if not piece:
                break
            out += piece
        return bytes(out)

    # -- response ----------------------------------------------------------------------------
    def send(self, data: bytes) -> float:
        """Raw bytes to the gateway; returns the monotonic time just before sending."""
        self.response_started = True
        return self.conn.send(data)

    def send_continue(self) -> float:
        return self.conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    @staticmethod
    def head_bytes(
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        reason: str | None = None,
        docker_headers: bool = True,
    ) -> bytes:
        lines = [f"HTTP/1.1 {status} {reason if reason is not None else REASONS.get(status, 'X')}"]
        if docker_headers:
            lines += [f"{k}: {v}" for k, v in DOCKER_HEADERS]
            lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
        lines += [f"{k}: {v}" for k, v in headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def respond(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        *,
        content_type: str | None = "application/json",
        reason: str | None = None,
        close: bool = False,
    ) -> float:
        """A Content-Length response (no body on HEAD/1xx/204/304, but the length is kept)."""
        hdrs: list[tuple[str, str]] = []
        if content_type is not None and status not in (204, 304):
            hdrs.append(("Content-Type", content_type))
        if status not in (204, 304) and status >= 200:
            hdrs.append(("Content-Length", str(len(body))))
        hdrs += list(headers)
        if close:
            hdrs.append(("Connection", "close"))
            self.close_after = True
        with_body = self.method != "HEAD" and status >= 200 and status not in (204, 304)
        return self.send(self.head_bytes(status, hdrs, reason) + (body if with_body else b""))

    def respond_json(self, obj: object, status: int = 200, *, close: bool = False) -> float:
        return self.respond(status, json.dumps(obj).encode() + b"\n", close=close)

    def start_chunked(
        self,
        status: int = 200,
        headers: Iterable[tuple[str, str]] = (),
        content_type: str = "application/json",
    ) -> float:
        hdrs = [("Content-Type", content_type), ("Transfer-Encoding", "chunked"), *headers]
        return self.send(self.head_bytes(status, hdrs))

    def send_chunk(self, data: bytes) -> float:
        assert data, "an empty chunk would end the body; use end_chunked()"
        return self.send(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> float:
        return self.send(b"0\r\n\r\n")

    def hijack(self) -> None:
        """The connection is raw from now on; it is closed once the handler returns."""
        self.hijacked = True
        self.response_started = True

    def abort(self) -> None:
        """Close the connection right now (abruptly, whatever is unread)."""
        self.close_after = True
        self.response_started = True
        with contextlib.suppress(OSError):
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()

    def linger_close(self, delay: float = 0.5) -> None:
        """Like Go's net/http after an early answer: half-close, wait, then close."""
        self.close_after = True
        self.conn.shutdown_write()
        time.sleep(delay)
        self.conn.close()


def default_handler(ex: Exchange) -> None:
    """``/_ping`` (any API version prefix) answers OK; anything else a JSON echo of the request."""
    if ex.path.endswith("/_ping"):
        ex.read_body()
        ex.respond(200, b"OK", content_type="text/plain; charset=utf-8")
        return
    ex.read_body()
    ex.respond_json(
        {
            "method": ex.method,
            "target": ex.target,
            "conn": ex.conn.id,
            "body_len": ex.record.body_len,
            "body_sha256": ex.record.body_sha256,
        }
    )


def parse_request_head(conn: UpstreamConn, head: bytes) -> RequestRecord:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as e:  # pragma: no cover - latin-1 decodes anything
        raise ProtocolError(str(e)) from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError(f"bad request line forwarded: {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[:1] in (" ", "\t"):
            raise ProtocolError(f"bad header line forwarded: {line!r}")
        headers.append((name, value.strip(" \t")))
    return RequestRecord(
        conn_id=conn.id,
        method=parts[0],
        target=parts[1],
        version=parts[2],
        headers=headers,
        head_raw=head,
        received_at=time.monotonic(),
    )


class FakeUpstream(StartStop):
    """The fake daemon: ``with FakeUpstream() as fake: ... fake.url ...``."""

    def __init__(self, path: str | None = None) -> None:
        self._tmpdir: str | None = None
        if path is None:
            # Short path: unix socket paths are limited to 107 bytes.
            self._tmpdir = tempfile.mkdtemp(prefix="dgfake-", dir="/tmp")
            path = os.path.join(self._tmpdir, "docker.sock")
        self.path = path
        self.handler: Handler | None = None
        self.conns: list[UpstreamConn] = []
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._lsock: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return "unix://" + self.path

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(self.path)
        lsock.listen(1024)
        lsock.settimeout(0.1)
        self._lsock = lsock
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="fake-upstream-accept", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        if self._lsock is not None:
            self._lsock.close()
        with self._lock:
            conns = list(self.conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)
        for c in conns:
            if c.thread is not None:
                c.thread.join(5)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def reset(self) -> None:
        """Back to the default handler; forget requests and errors (connections stay)."""
        with self._lock:
            self.handler = None
            self.requests.clear()
            self.errors.clear()

    # -- observation -------------------------------------------------------------------------
    @property
    def opened_count(self) -> int:
        with self._lock:
            return len(self.conns)

    def open_conns(self, pids: Iterable[int] | None = None) -> list[UpstreamConn]:
        want = set(pids) if pids is not None else None
        with self._lock:
            conns = list(self.conns)
        return [c for c in conns if not c.closed.is_set() and (want is None or c.peer_pid in want)]

    def total_bytes_in(self) -> int:
        with self._lock:
            return sum(c.bytes_in for c in self.conns)

    def conn(self, conn_id: int) -> UpstreamConn:
        with self._lock:
            return self.conns[conn_id]

    def requests_for(self, path_prefix: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.target.startswith(path_prefix)]

    def raw_since(self, first_conn: int = 0) -> bytes:
        with self._lock:
            return b"".join(bytes(c.raw) for c in self.conns[first_conn:])

    # -- serving -----------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._lsock is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            sock.setblocking(True)
            with self._lock:
                conn = UpstreamConn(self, sock, len(self.conns))
                self.conns.append(conn)
            conn.thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"fake-upstream-{conn.id}", daemon=True
            )
            conn.thread.start()

    def _record_error(self, conn: UpstreamConn, what: str) -> None:
        with self._lock:
            self.errors.append(f"upstream conn #{conn.id}: {what}")

    def _serve(self, conn: UpstreamConn) -> None:
        try:
            while not self._stopping.is_set():
                head = conn.read_until(b"\r\n\r\n", MAX_HEAD_BYTES, None)
                if head is None:
                    return
                record = parse_request_head(conn, head)
                conn.request_count += 1
                with self._lock:
                    self.requests.append(record)
                    handler = self.handler or default_handler
                ex = Exchange(conn, record)
                handler(ex)
                if ex.hijacked or ex.close_after or conn.closed.is_set():
                    return
                if not ex.response_started:
                    self._record_error(conn, f"handler sent no response to {record.target}")
                    return
                if not ex.body_done:
                    ex.read_body()
                if conn.eof.is_set() and not conn.buf:
                    return
        except TimeoutError as e:
            self._record_error(
                conn, f"timed out waiting for the gateway: {e!r} (after {conn.raw[-200:]!r})"
            )
        except PEER_GONE:
            return
        except Exception as e:
            self._record_error(conn, f"{e!r}\n{traceback.format_exc()}")
        finally:
            conn.close()
