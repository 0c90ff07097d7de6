"""Errors by fault, each carrying the HTTP status to answer with, and Docker's error body.

The gateway turns every failure into a response at exactly one place (the client connection);
everything below it raises one of these instead of writing to a socket.
"""

from __future__ import annotations

import json

from dockgate.policy.browser import ANSWER_HEADERS


class GatewayError(Exception):
    """A failure that the client is told about with `status` and a Docker-style JSON body."""

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class ClientProtocolError(GatewayError):
    """The client sent bytes that are not acceptable HTTP/1.1: its fault, answered with 400."""

    status = 400


class UpstreamError(GatewayError):
    """The Docker daemon could not be reached or broke the protocol: answered with 502."""

    status = 502


REASONS = {
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Payload Too Large",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    508: b"Loop Detected",
}


def error_response(
    status: int,
    message: str,
    *,
    close: bool = True,
    head_only: bool = False,
    extra_headers: bytes = b"",
) -> bytes:
    """A complete HTTP/1.1 response whose body has Docker's `{"message": ...}` error shape.

    The docker CLI and SDK show the `message` field to their users as they do the daemon's own.
    """
    body = json.dumps({"message": message}).encode() + b"\n"
    reason = REASONS.get(status, b"Error")
    head = (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: %d\r\n"
        b"Server: dockgate\r\n%s" % (status, reason, len(body), ANSWER_HEADERS)
    )
    head += extra_headers  # complete lines, each ending in CRLF
    if close:
        head += b"Connection: close\r\n"
    # A response to HEAD ends at the blank line: a body would be read as the next response.
    return head + b"\r\n" + (b"" if head_only else body)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
