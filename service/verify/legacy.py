"""Checks for legacy Capture webhook deliveries (a JSON array of objects, no signature).

The protocol has no signature: authenticity rests on a shared callback ``hash`` in every
element and/or HTTP Basic credentials, both compared in constant time. A batch is accepted or
refused as a whole, so every element is checked before anything is stored.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

import orjson

from service.secret import Secret
from service.settings import LegacySource
from service.verify.errors import BodyTooLargeError, MalformedDeliveryError, UnauthenticDeliveryError

MAX_UUID_LENGTH = 128


def check_basic_auth(authorization: str | None, source: LegacySource) -> None:
    """Require the configured HTTP Basic credentials, if any are configured."""
    credentials = source.basic_auth
    if credentials is None:
        return
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise UnauthenticDeliveryError("basic_auth_missing", "HTTP Basic credentials are required")
    try:
        username, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError as exc:  # binascii.Error, UnicodeDecodeError, and non-ASCII input
        raise UnauthenticDeliveryError("basic_auth_invalid", "the Authorization header is not valid Basic") from exc
    # Evaluate both comparisons so that timing does not tell which part was wrong.
    user_ok = hmac.compare_digest(username.encode(), credentials.username.encode())
    password_ok = credentials.password.matches(password)
    if not (user_ok and password_ok):
        raise UnauthenticDeliveryError("basic_auth_invalid", "the HTTP Basic credentials do not match")


def parse_batch(body: bytes, max_elements: int) -> list[dict[str, Any]]:
    """Parse and shape-check the batch; a 400 names the offending element index and field."""
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedDeliveryError("body_malformed", "the body is not JSON") from exc
    if not isinstance(batch, list):
        raise MalformedDeliveryError("body_malformed", "the body must be a JSON array of objects")
    if len(batch) > max_elements:
        raise BodyTooLargeError(
            "batch_too_large", f"the batch has {len(batch)} elements; ingest.max_batch_size is {max_elements}"
        )
    for index, element in enumerate(batch):
        if not isinstance(element, dict):
            raise MalformedDeliveryError("body_malformed", f"[{index}]: must be a JSON object")
        uuid = element.get("uuid")
        if uuid is None:
            raise MalformedDeliveryError("body_malformed", f"[{index}].uuid: field required")
        if not isinstance(uuid, str) or not 0 < len(uuid) <= MAX_UUID_LENGTH:
            raise MalformedDeliveryError(
                "body_malformed", f"[{index}].uuid: must be a string of 1 to {MAX_UUID_LENGTH} characters"
            )
        if "hash" in element and not isinstance(element["hash"], str):
            raise MalformedDeliveryError("body_malformed", f"[{index}].hash: must be a string")
    return batch


def check_hashes(batch: list[dict[str, Any]], hashes: list[Secret]) -> None:
    """Require every element's ``hash`` to equal one of the configured callback hashes."""
    if not hashes:
        return
    for index, element in enumerate(batch):
        given = element.get("hash")
        if given is None:
            raise UnauthenticDeliveryError("hash_missing", f"[{index}].hash: field required")
        # Compare with every configured hash (rotation keeps two), without stopping early.
        matches = [expected.matches(given) for expected in hashes]
        if not any(matches):
            raise UnauthenticDeliveryError("hash_mismatch", f"[{index}].hash: does not match a configured hash")
