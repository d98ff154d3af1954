"""Standard Webhooks signing against a published vector and the reference ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from service.secret import Secret
from workers.sinks.signing import sign, signing_key

# The vector of the reference library's own test suite (standard-webhooks/standard-webhooks,
# libraries/python/tests/test_webhooks.py, test_sign_function).
REFERENCE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REFERENCE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REFERENCE_TIMESTAMP = 1614265330
REFERENCE_BODY = b'{"test": 2432232314}'
REFERENCE_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def new_secret(size: int = 24) -> str:
    """A fresh ``whsec_`` secret of ``size`` random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


def test_the_published_vector() -> None:
    """Our signature of the reference library's example is the one it documents."""
    assert sign([Secret(REFERENCE_SECRET)], REFERENCE_ID, REFERENCE_TIMESTAMP, REFERENCE_BODY) == REFERENCE_SIGNATURE


@pytest.mark.parametrize("size", [24, 32, 64])
def test_matches_the_standardwebhooks_package(size: int) -> None:
    """For a random secret, the reference package computes the same signature."""
    secret = new_secret(size)
    body = '{"type":"entityUpdated","data":{"uuid":"0b5c"}}'
    expected = Webhook(secret).sign("evt-1:crm", datetime.fromtimestamp(1_750_000_000, UTC), body)

    assert sign([Secret(secret)], "evt-1:crm", 1_750_000_000, body.encode()) == expected


def test_several_secrets_sign_in_order_separated_by_spaces() -> None:
    """During rotation each secret's signature is sent, in the configured order."""
    old, new = new_secret(), new_secret()

    header = sign([Secret(old), Secret(new)], "evt-1:crm", 1_750_000_000, b"{}")

    assert header.split(" ") == [
        sign([Secret(old)], "evt-1:crm", 1_750_000_000, b"{}"),
        sign([Secret(new)], "evt-1:crm", 1_750_000_000, b"{}"),
    ]


def test_every_part_of_the_signed_content_counts() -> None:
    """A different id, timestamp or body gives a different signature."""
    secret = [Secret(new_secret())]
    base = sign(secret, "evt-1:crm", 1_750_000_000, b"{}")

    assert sign(secret, "evt-2:crm", 1_750_000_000, b"{}") != base
    assert sign(secret, "evt-1:crm", 1_750_000_001, b"{}") != base
    assert sign(secret, "evt-1:crm", 1_750_000_000, b"{ }") != base


def test_a_secret_without_padding_is_the_same_key() -> None:
    """``whsec_`` secrets written without base64 padding decode as the reference libraries do."""
    padded = "whsec_" + base64.b64encode(os.urandom(25)).decode()
    assert padded.endswith("=")

    assert signing_key(Secret(padded.rstrip("="))) == signing_key(Secret(padded))


@pytest.mark.parametrize("value", ["whsec_not*base64", "whsec_abc=def", "whsec_"])
def test_an_unusable_secret_is_refused_without_repeating_it(value: str) -> None:
    """A secret that is not base64, or empty, raises; the message does not contain it."""
    with pytest.raises(ValueError, match="signing secret") as caught:
        sign([Secret(value)], "evt-1:crm", 1_750_000_000, b"{}")

    assert value not in str(caught.value)


def test_signing_needs_a_secret() -> None:
    """An empty list is a programming error, not an unsigned delivery."""
    with pytest.raises(ValueError, match="at least one secret"):
        sign([], "evt-1:crm", 1_750_000_000, b"{}")
