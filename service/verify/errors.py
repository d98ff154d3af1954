"""Why a webhook was refused.

Errors::

    VerificationError            a delivery we will not accept; ``reason`` is a stable token
    ├── MalformedDeliveryError   the body or its claims are not what the protocol says (400)
    ├── UnauthenticDeliveryError signature, key, issuer, audience, age or hash check failed (401)
    ├── BodyTooLargeError        the body is over the configured limit (413)
    └── UnsupportedMediaError    the Content-Type is not one the route accepts (415)
    KeysUnavailableError         the signing keys cannot be fetched right now (503: retry later)

The route picks the HTTP status from the type; verification code never does. ``reason`` is
reused as a metric label and a log field, so it stays short and from a fixed set.
"""

from __future__ import annotations

_SHOWN_LENGTH = 64


def shown(value: object) -> str:
    """``repr`` of a value taken from the request, cut short: details echo it into answers and logs."""
    text = repr(value)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 1] + "…"


class VerificationError(Exception):
    """A delivery that is refused; ``reason`` is a stable token, ``detail`` a sentence for people."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class MalformedDeliveryError(VerificationError):
    """The body, token or claims do not have the shape the protocol defines."""


class UnauthenticDeliveryError(VerificationError):
    """The delivery could not be shown to come from Capture, or is too old or early."""


class BodyTooLargeError(VerificationError):
    """The body is larger than ``ingest.max_body_size``."""


class UnsupportedMediaError(VerificationError):
    """The request's Content-Type is not one the route accepts."""


class KeysUnavailableError(Exception):
    """The JWKS could not be fetched or held no usable key; the sender should retry later."""

    reason = "jwks_unavailable"
