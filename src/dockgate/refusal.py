"""The one "no": every refusal the gateway answers itself, whichever step decided it.

A step that refuses (the source lists, authentication, the binding, the browser guard, the
policy's rules, the body's shape, the guardrails, ownership, redaction, the held-body budget, a
timeout, a loop) says so with one `Refusal`: the status, the message the client reads in Docker's
`{"message": ...}` shape, the step (`stage`, for the access log's `deny:POLICY:STAGE` label and the
audit record) and a short reason (for the audit record and metrics). `response()` is the one place
that turns it into bytes; `http/errors.error_response` is the shape those bytes have.
"""

from __future__ import annotations

from dataclasses import dataclass

from dockgate.http.errors import error_response

# RFC 7617: what a 401 asks for. The docker CLI sends whatever its config.json HttpHeaders say.
CHALLENGE = b'WWW-Authenticate: Basic realm="dockgate", charset="UTF-8"\r\n'


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 400 malformed, 401, 403 denied, 404 (ownership: as if absent), 408, 413, ...
    message: str  # for the client: "dockgate: ..." (or the daemon's own not-found words)
    stage: str  # the step that refused: "policy", "guardrails", "ownership", "content", ...
    reason: str  # short, for the audit record: "rule 3", "guardrails: privileged", ...
    retry_after: int | None = None  # seconds, for a 429 or 503

    def response(self, *, close: bool, head_only: bool = False) -> bytes:
        """The whole HTTP answer: Docker's error body, a challenge with a 401, Retry-After."""
        return error_response(
            self.status,
            self.message,
            close=close,
            head_only=head_only,
            extra_headers=self._headers(),
        )

    def _headers(self) -> bytes:
        if self.status == 401:
            return CHALLENGE
        if self.retry_after is not None:
            return b"Retry-After: %d\r\n" % self.retry_after
        return b""
