"""Capture error envelopes and HTTP failures mapped to exception types (reference/capture-protocol.md §4.5)."""

from __future__ import annotations

from typing import Any

import pytest

from workers.capture_errors import (
    CaptureApiError,
    CaptureAuthError,
    CaptureHttpError,
    CaptureLimitError,
    CaptureProtocolError,
    CaptureUnavailableError,
    RecordNotFoundError,
    error_from_envelope,
)


def _envelope(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "stat": "error",
        "code": 310,
        "error": "record_not_found",
        "error_description": "record not found",
        "request_token": "a1b2c3d4e5f6g7h8",
    }
    body.update(overrides)
    return body


def _map(body: dict[str, Any], *, http_status: int = 200, retry_after: float | None = None) -> CaptureApiError:
    return error_from_envelope(body, endpoint="/entity", http_status=http_status, retry_after=retry_after)


class TestErrorFromEnvelope:
    @pytest.mark.parametrize(
        ("code", "error", "kind", "retryable", "reason"),
        [
            pytest.param(310, "record_not_found", RecordNotFoundError, False, "not_found", id="310-not-found"),
            pytest.param(510, "api_limit_error", CaptureLimitError, True, "api_limit", id="510-limit"),
            pytest.param(402, "invalid_client_credentials", CaptureAuthError, False, "auth", id="402-auth"),
            pytest.param(403, "client_permission_error", CaptureAuthError, False, "auth", id="403-auth"),
            pytest.param(205, "invalid_auth_method", CaptureAuthError, False, "auth", id="205-auth"),
            pytest.param(413, "no_access_grant", CaptureAuthError, False, "auth", id="413-auth"),
            pytest.param(414, "access_token_expired", CaptureAuthError, False, "auth", id="414-auth"),
            pytest.param(480, "api_feature_disabled", CaptureApiError, True, "busy", id="480-maintenance"),
            pytest.param(500, "unexpected_error", CaptureApiError, True, "busy", id="500-internal"),
            pytest.param(504, "timeout", CaptureApiError, True, "busy", id="504-timeout"),
            pytest.param(223, "unknown_attribute", CaptureApiError, False, "rejected", id="223-permanent"),
            pytest.param(100, "missing_argument", CaptureApiError, False, "rejected", id="100-permanent"),
            pytest.param(200, "invalid_argument", CaptureApiError, False, "rejected", id="200-permanent"),
        ],
    )
    def test_code_maps_to_type_and_retryability(
        self, code: int, error: str, kind: type[CaptureApiError], retryable: bool, reason: str
    ) -> None:
        """Each code gets its exception type, retryability and reason token from the one table."""
        body = _envelope(code=code, error=error)

        exc = _map(body)

        assert type(exc) is kind
        assert exc.retryable is retryable
        assert exc.reason == reason
        assert exc.code == code

    @pytest.mark.parametrize(
        "code",
        [
            pytest.param(None, id="missing"),
            pytest.param("510", id="string"),
            pytest.param(True, id="bool"),
            pytest.param(510.0, id="float"),
            pytest.param({"n": 1}, id="object"),
        ],
    )
    def test_missing_or_garbage_code_is_permanent(self, code: object) -> None:
        """A code that is not an integer becomes 0: a plain, permanent CaptureApiError."""
        body = _envelope(error="api_limit_error")
        if code is None:
            del body["code"]
        else:
            body["code"] = code

        exc = _map(body)

        assert type(exc) is CaptureApiError
        assert exc.code == 0
        assert exc.retryable is False

    def test_fields_are_kept(self) -> None:
        """code, error, description, request_token, http_status, endpoint and retry_after survive the mapping."""
        body = _envelope(code=510, error="api_limit_error", error_description="too many calls")

        exc = error_from_envelope(body, endpoint="/entity.find", http_status=400, retry_after=7.0)

        assert (exc.code, exc.error, exc.description, exc.request_token) == (
            510,
            "api_limit_error",
            "too many calls",
            "a1b2c3d4e5f6g7h8",
        )
        assert (exc.http_status, exc.endpoint, exc.retry_after) == (400, "/entity.find", 7.0)

    def test_message_names_code_error_and_request_token(self) -> None:
        """The message carries what support needs: endpoint, code, error string and request token."""
        exc = _map(_envelope())

        message = str(exc)

        assert "/entity" in message
        assert "310" in message
        assert "record_not_found" in message
        assert "a1b2c3d4e5f6g7h8" in message

    def test_missing_error_and_token(self) -> None:
        """Without ``error`` and ``request_token`` the error says unknown_error and keeps no token."""
        body: dict[str, Any] = {"stat": "error", "code": 223}

        exc = _map(body)

        assert exc.error == "unknown_error"
        assert exc.request_token is None
        assert "request_token" not in str(exc)

    def test_long_values_are_truncated(self) -> None:
        """A hostile or broken server cannot make the error unbounded: error 64, description 200, token 64."""
        body = _envelope(error="e" * 500, error_description="d" * 500, request_token="t" * 500)

        exc = _map(body)

        assert (len(exc.error), len(exc.description), len(exc.request_token or "")) == (64, 200, 64)


class TestCaptureHttpError:
    @pytest.mark.parametrize(
        ("status", "retryable", "reason"),
        [
            pytest.param(429, True, "http_429", id="429"),
            pytest.param(500, True, "http_5xx", id="500"),
            pytest.param(502, True, "http_5xx", id="502"),
            pytest.param(503, True, "http_5xx", id="503"),
            pytest.param(510, True, "http_5xx", id="510"),
            pytest.param(400, False, "http_4xx", id="400"),
            pytest.param(403, False, "http_4xx", id="403"),
            pytest.param(404, False, "http_4xx", id="404"),
            pytest.param(409, False, "http_4xx", id="409"),
            pytest.param(408, False, "http_4xx", id="408"),
        ],
    )
    def test_retryable_only_for_429_and_5xx(self, status: int, retryable: bool, reason: str) -> None:
        """HTTP 429 and 5xx may succeed later; other statuses are permanent."""
        exc = CaptureHttpError(endpoint="/entity", http_status=status)

        assert exc.retryable is retryable
        assert exc.reason == reason

    def test_fields_and_message(self) -> None:
        """The error keeps status, detail and retry_after, and its message names endpoint, status and detail."""
        exc = CaptureHttpError(endpoint="v3:/webhooks/subscriptions", http_status=409, detail="duplicate title")

        assert (exc.http_status, exc.detail, exc.retry_after) == (409, "duplicate title", None)
        assert str(exc) == "v3:/webhooks/subscriptions answered HTTP 409: duplicate title"


class TestOtherErrors:
    def test_unavailable_is_retryable_with_its_reason(self) -> None:
        """CaptureUnavailableError is always retryable and reports the reason it was given."""
        exc = CaptureUnavailableError("timed out", endpoint="/entity", reason="timeout")

        assert (exc.retryable, exc.reason, exc.endpoint) == (True, "timeout", "/entity")

    def test_protocol_error_is_permanent(self) -> None:
        """An answer Capture never sends is not worth repeating."""
        exc = CaptureProtocolError("not JSON", endpoint="/entity")

        assert (exc.retryable, exc.reason) == (False, "protocol")
