"""What the Capture API clients raise, and which failures are worth retrying.

Errors::

    CaptureError                  anything the clients raise; ``retryable`` says whether a later
    │                             attempt may succeed, ``endpoint`` names the call
    ├── CaptureApiError           Capture answered ``{"stat": "error"}`` (whatever the HTTP status):
    │   │                         ``code``, ``error``, ``request_token``, ``http_status``
    │   ├── RecordNotFoundError   code 310: the record does not exist (any more)
    │   ├── CaptureAuthError      codes 205, 402, 403, 413, 414: credentials or client permissions
    │   └── CaptureLimitError     code 510: too many simultaneous calls (retryable)
    ├── CaptureHttpError          an HTTP failure without a Capture envelope (a gateway's 502, a
    │                             429, a redirect, the v3 subscription API's 4xx): ``http_status``
    ├── CaptureUnavailableError   no answer at all: timeout, connection refused or lost, or no
    │                             free call slot before the deadline (retryable)
    ├── CaptureOutcomeUnknownError  a call that changes something failed in a way that leaves
    │                             open whether it took effect; read the state before trying again
    └── CaptureProtocolError      an answer Capture never sends (a 200 that is not JSON)

Retryable: codes 480, 500, 504 and 510, HTTP 429 and 5xx, timeouts and connection errors.
Everything else is permanent and surfaces at once. ``repeatable`` is stricter: the request
certainly had no effect (it was refused before any work, or never sent), so even a call that
creates something may be sent again.

Messages carry codes, Capture's machine-readable ``error`` and its request token, never
``error_description``: Capture echoes argument values there (an email used as key_value), and
exception messages end up in logs.
"""

from __future__ import annotations

from typing import Any

# Codes that mean "try again later": maintenance, internal error, timeout, simultaneous-call limit.
RETRYABLE_CODES = frozenset({480, 500, 504, 510})
# Of those, the ones Capture answers without doing the work: safe to send again.
_REFUSED_CODES = frozenset({480, 510})
_AUTH_CODES = frozenset({205, 402, 403, 413, 414})
# Reasons of CaptureUnavailableError for requests that never reached Capture.
_UNSENT = frozenset({"no_slot", "limiter_unavailable", "connect", "connect_timeout"})


class CaptureError(Exception):
    """Base of everything the Capture clients raise."""

    retryable = False
    repeatable = False

    def __init__(self, message: str, *, endpoint: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        # Seconds the server asked us to wait (HTTP Retry-After), if it said.
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """A short stable token for metric labels and log fields."""
        return "error"


class CaptureApiError(CaptureError):
    """Capture's error envelope: ``{"stat": "error", "code": 223, "error": "unknown_attribute", ...}``."""

    hint = ""

    def __init__(
        self,
        *,
        endpoint: str,
        code: int,
        error: str,
        description: str = "",
        request_token: str | None = None,
        http_status: int = 200,
        retry_after: float | None = None,
    ) -> None:
        token = f" (request_token {request_token})" if request_token else ""
        super().__init__(
            f"Capture {endpoint} answered error {code} {error}{token}{self.hint}",
            endpoint=endpoint,
            retry_after=retry_after,
        )
        self.code = code
        self.error = error
        # Capture's free text: may repeat argument values, so it is kept out of the message.
        self.description = description
        self.request_token = request_token
        self.http_status = http_status
        # An envelope without a known code on a 429/5xx comes from something in front of Capture.
        self.retryable = code in RETRYABLE_CODES or (code == 0 and (http_status == 429 or http_status >= 500))
        self.repeatable = code in _REFUSED_CODES or (code == 0 and http_status == 429)

    @property
    def reason(self) -> str:
        return "busy" if self.retryable else "rejected"


class RecordNotFoundError(CaptureApiError):
    """Code 310: the record is not there (deleted, or never existed)."""

    @property
    def reason(self) -> str:
        return "not_found"


class CaptureAuthError(CaptureApiError):
    """The client id, secret, signature or permissions were refused; fix the configuration."""

    hint = "; check capture.client_id and capture.client_secret (with auth: signed, also this host's clock)"

    @property
    def reason(self) -> str:
        return "auth"


class CaptureLimitError(CaptureApiError):
    """Code 510 ``api_limit_error``: the application's simultaneous-call limit was reached."""

    hint = "; lower capture.max_concurrency below the application's limit"

    @property
    def reason(self) -> str:
        return "api_limit"


class CaptureHttpError(CaptureError):
    """An HTTP failure that carries no Capture envelope."""

    def __init__(
        self,
        *,
        endpoint: str,
        http_status: int,
        detail: str = "",
        retry_after: float | None = None,
        location: str | None = None,
    ) -> None:
        if location is not None:
            message = f"{endpoint} redirected (HTTP {http_status}) to {location[:120]}; fix the configured base_url"
        else:
            message = f"{endpoint} answered HTTP {http_status}" + (f": {detail}" if detail else "")
        super().__init__(message, endpoint=endpoint, retry_after=retry_after)
        self.http_status = http_status
        self.detail = detail
        self.location = location
        self.retryable = http_status == 429 or http_status >= 500
        self.repeatable = http_status == 429

    @property
    def reason(self) -> str:
        if self.http_status == 429:
            return "http_429"
        if self.location is not None:
            return "redirect"
        return "http_5xx" if self.http_status >= 500 else "http_4xx"


class CaptureUnavailableError(CaptureError):
    """No answer: the call timed out, the connection failed, or no call slot was free in time."""

    retryable = True

    def __init__(self, message: str, *, endpoint: str, reason: str) -> None:
        super().__init__(message, endpoint=endpoint)
        self._reason = reason
        self.repeatable = reason in _UNSENT

    @property
    def reason(self) -> str:
        return self._reason


class CaptureOutcomeUnknownError(CaptureError):
    """A call that creates or deletes something failed after it may have reached Capture."""

    def __init__(self, cause: CaptureError) -> None:
        super().__init__(
            f"{cause.endpoint} may or may not have taken effect ({cause.reason}: {cause}); "
            "read the current state before trying again",
            endpoint=cause.endpoint,
        )
        self.cause = cause

    @property
    def reason(self) -> str:
        return "outcome_unknown"


class CaptureProtocolError(CaptureError):
    """An answer that does not follow Capture's protocol (for example a 200 that is not JSON)."""

    @property
    def reason(self) -> str:
        return "protocol"


def error_from_envelope(
    body: dict[str, Any], *, endpoint: str, http_status: int, retry_after: float | None
) -> CaptureApiError:
    """The exception for one ``stat: error`` body; unknown or missing codes are permanent unless
    the HTTP status says the failure was in front of Capture (429, 5xx)."""
    raw_code = body.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else 0
    kind: type[CaptureApiError] = CaptureApiError
    if code == 310:
        kind = RecordNotFoundError
    elif code == 510:
        kind = CaptureLimitError
    elif code in _AUTH_CODES:
        kind = CaptureAuthError
    token = body.get("request_token")
    return kind(
        endpoint=endpoint,
        code=code,
        error=str(body.get("error", "unknown_error"))[:64],
        description=str(body.get("error_description", ""))[:200],
        request_token=str(token)[:64] if token is not None else None,
        http_status=http_status,
        retry_after=retry_after,
    )
