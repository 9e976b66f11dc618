"""The sync error tree: every network or HQ failure is translated once, in `transport`, into
one of these, so callers decide with `except Retryable` / `except Rejected` and nothing else.

    SyncError
    ├── Retryable             try again later, with backoff (the outbox is the retry queue)
    │   ├── Offline           connection refused/reset/cut, DNS, TLS handshake
    │   ├── TimedOut          no complete answer within the hard per-request timeout
    │   └── Throttled         429, 503 (and 408, 500, 502, 504), honouring Retry-After
    └── Rejected              HQ understood and said no: park the batch, raise an alert
        ├── BadRequest        400, 413, 422: the request is malformed
        ├── Unauthorized      401: bad/forged/replayed signature, unknown terminal, clock
        ├── Forbidden         403: another terminal's or another store's data
        ├── Conflict          409: a sequence gap (`expected`) or quarantined content
        └── Gone              410: the pull cursor is older than the feed keeps
"""

from __future__ import annotations


class SyncError(Exception):
    """Anything that stopped a sync request."""


class Retryable(SyncError):
    """A failure that may pass by itself: try again with backoff."""

    retry_after: float | None = None


class Offline(Retryable):
    """HQ could not be reached, or the connection broke before an answer."""


class TimedOut(Retryable):
    """HQ did not answer within the per-request timeout."""


class Throttled(Retryable):
    """HQ is busy or failing (429/503/5xx); `retry_after` seconds when it said so."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.retry_after = retry_after


class Rejected(SyncError):
    """HQ refused the request (4xx): retrying the same request cannot help."""

    status = 400

    def __init__(self, code: str, message: str, *, expected: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.expected = expected


class BadRequest(Rejected):
    """400/413/422: the request itself is wrong."""

    status = 400


class Unauthorized(Rejected):
    """401: the request's signature, terminal or time is not accepted."""

    status = 401


class Forbidden(Rejected):
    """403: the terminal asked for something that is not its own."""

    status = 403


class Conflict(Rejected):
    """409: a gap in the sequence (`expected` is what HQ wants next) or quarantined content."""

    status = 409


class Gone(Rejected):
    """410: the pull cursor is older than the feed's retention; take a full snapshot."""

    status = 410


class Parked(SyncError):
    """Pushing is stopped: an earlier batch was rejected and waits for a person."""


REJECTED_BY_STATUS: dict[int, type[Rejected]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: BadRequest,
    409: Conflict,
    410: Gone,
    413: BadRequest,
    422: BadRequest,
}
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def from_status(status: int, code: str, message: str, *, expected: int | None = None,
                retry_after: float | None = None) -> SyncError:
    """The error for an HTTP error status (the single place statuses are interpreted)."""
    if status in RETRYABLE_STATUS or status >= 500:
        return Throttled(status, f"{code}: {message}", retry_after)
    cls = REJECTED_BY_STATUS.get(status, BadRequest)
    return cls(code, message, expected=expected)
