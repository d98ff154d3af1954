"""The Capture API's answers: ``{"stat": "ok", ...}`` and the error envelope.

Every error answer is ``{"stat": "error", "code", "error", "error_description", "request_token"}``
(protocol reference §4.5). Its HTTP status depends on ``SimulatorConfig.error_http_status``:
``"ok"`` answers 200 as Janrain's own client tests show, ``"mapped"`` answers a 4xx/5xx chosen
by ``http_status``, as some tenants and proxies do; a client must handle both.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from starlette.responses import JSONResponse

ErrorHttpStatus = Literal["ok", "mapped"]

# Code -> machine string (GEDEX Errors.php, AK-ERR). The strings of 485 and 504 are not
# published (§7.9); these two are the simulator's guesses, and clients must not match on them.
ERRORS: dict[int, str] = {
    100: "missing_argument",
    200: "invalid_argument",
    201: "duplicate_argument",
    205: "invalid_auth_method",
    221: "unknown_application",
    222: "unknown_entity_type",
    223: "unknown_attribute",
    300: "error_creating_record",
    310: "record_not_found",
    330: "timestamp_mismatch",
    340: "invalid_data_format",
    341: "invalid_json_type",
    342: "invalid_date_time",
    360: "constraint_violation",
    402: "invalid_client_credentials",
    403: "client_permission_error",
    414: "access_token_expired",
    480: "api_feature_disabled",
    485: "invalid_filter_operator",
    500: "unexpected_error",
    504: "api_call_timeout",
    510: "api_limit_error",
    540: "triggered_error",
}

# The "mapped" statuses that are not simply "4xx for bad input".
_MAPPED = {310: 404, 402: 401, 403: 403, 414: 401, 480: 503, 485: 400, 500: 500, 504: 504, 510: 510, 540: 500}


class CaptureError(Exception):
    """An answer with ``stat: error``; raised by handlers, turned into the envelope by ``error_response``."""

    def __init__(self, code: int, description: str, **extra: Any) -> None:
        super().__init__(f"{code} {ERRORS.get(code, 'unexpected_error')}: {description}")
        self.code = code
        self.description = description
        self.extra = extra

    @property
    def error(self) -> str:
        """The machine string that goes with ``code``."""
        return ERRORS.get(self.code, "unexpected_error")


def request_token() -> str:
    """Capture's per-request id: 16 random hex characters."""
    return secrets.token_hex(8)


def error_body(code: int, description: str, **extra: Any) -> dict[str, Any]:
    """The error envelope for ``code``."""
    return {
        "stat": "error",
        "code": code,
        "error": ERRORS.get(code, "unexpected_error"),
        "error_description": description,
        "request_token": request_token(),
        **extra,
    }


def http_status(code: int, mode: ErrorHttpStatus) -> int:
    """The HTTP status of an error envelope: always 200 in ``ok`` mode, else mapped by code range."""
    if mode == "ok":
        return 200
    if code in _MAPPED:
        return _MAPPED[code]
    if code >= 500:
        return 500
    if 400 <= code < 500:
        return 401
    return 400


def error_response(error: CaptureError, mode: ErrorHttpStatus, headers: dict[str, str] | None = None) -> JSONResponse:
    """The envelope of ``error`` as an HTTP response."""
    body = error_body(error.code, error.description, **error.extra)
    return JSONResponse(body, status_code=http_status(error.code, mode), headers=headers)


def ok_response(payload: dict[str, Any]) -> JSONResponse:
    """A success answer: ``payload`` plus ``"stat": "ok"``."""
    return JSONResponse({**payload, "stat": "ok"})
