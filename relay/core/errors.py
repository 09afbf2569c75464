"""The error tree of the relay, and its one mapping onto HTTP.

    KetangError
    ├── UserError        the caller's mistake: 4xx with a one-line message
    │   ├── BadRequest             400 malformed input
    │   ├── Unauthorized           401 missing, bad or expired token
    │   ├── Forbidden              403 wrong room or role
    │   ├── NotFound               404 unknown session or id
    │   ├── RequestTimeout         408 the body did not arrive in time
    │   ├── Conflict               409 e.g. a second publisher for one source
    │   ├── PreconditionFailed     412 If-Match names another ICE session (RFC 9725 §4.3.1)
    │   ├── PayloadTooLarge        413 body over the limit
    │   ├── UnsupportedMediaType   415 wrong content type
    │   ├── UnprocessableContent   422 a request this server understands but does not do
    │   └── TooManyRequests        429 this token's limit; Retry-After says when to retry
    ├── Overloaded       503 the room or the process is full; Retry-After says when
    └── ProtocolError    a peer broke a protocol (SDP, RTP): 400

Anything else a handler raises is our bug or a failed dependency: 500 with a generic message,
logged.

Handlers raise; `status_of` is the only place that turns an error into a status code.
The packet path never raises: it drops and counts (monitoring.metrics.count_drop).
"""

from __future__ import annotations


class KetangError(Exception):
    """Base of every error the relay reports to a caller."""

    status = 500

    def __init__(
        self, message: str = "", retry_after: float | None = None, limit: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, for a Retry-After header
        self.limit = limit  # the limit that refused the request, counted where it is answered


class UserError(KetangError):
    """The caller did something wrong; the message is shown to them."""

    status = 400


class BadRequest(UserError):
    status = 400


class Unauthorized(UserError):
    status = 401


class Forbidden(UserError):
    status = 403


class NotFound(UserError):
    status = 404


class RequestTimeout(UserError):
    status = 408


class Conflict(UserError):
    status = 409


class PreconditionFailed(UserError):
    status = 412


class PayloadTooLarge(UserError):
    status = 413


class UnsupportedMediaType(UserError):
    status = 415


class UnprocessableContent(UserError):
    status = 422


class TooManyRequests(UserError):
    status = 429


class Overloaded(KetangError):
    """The room or the process has no room for more; not the caller's fault."""

    status = 503


class ProtocolError(KetangError):
    """A peer sent something that breaks a protocol, such as unusable SDP."""

    status = 400


def status_of(error: BaseException) -> tuple[int, str]:
    """HTTP status and public message for any exception; internals are never leaked."""
    if isinstance(error, UserError | ProtocolError | Overloaded):
        return error.status, str(error) or type(error).__name__
    return 500, "internal error"
