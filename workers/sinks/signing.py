"""Standard Webhooks signatures (https://www.standardwebhooks.com/), symmetric scheme ``v1``.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature is
HMAC-SHA256 under the secret's key, base64-encoded and prefixed ``v1,``. A secret is written
``whsec_`` + base64 of the key. While a receiver rotates its secret, every configured secret
signs and the signatures travel space-separated in one ``webhook-signature`` header, so the
receiver accepts the delivery with either its old or its new secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from service.secret import Secret

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's marker, not a secret


def signing_key(secret: Secret) -> bytes:
    """The HMAC key inside a ``whsec_`` secret.

    Padding may be left out, as the reference libraries accept.

    Raises:
        ValueError: the secret is not ``whsec_`` followed by base64 (the value is not repeated).
    """
    encoded = secret.reveal().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a signing secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("a signing secret must not be empty")
    return key


def sign(secrets: Sequence[Secret], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64>`` per secret, space-separated.

    Args:
        secrets: one secret, or several while the receiver rotates.
        msg_id: the ``webhook-id`` header (the delivery id).
        timestamp: the ``webhook-timestamp`` header, in whole seconds since the epoch.
        body: the request body exactly as sent.

    Raises:
        ValueError: no secret was given, or one is not a Standard Webhooks secret.
    """
    if not secrets:
        raise ValueError("signing needs at least one secret")
    content = f"{msg_id}.{timestamp}.".encode() + body
    signatures = (
        base64.b64encode(hmac.digest(signing_key(secret), content, hashlib.sha256)).decode("ascii")
        for secret in secrets
    )
    return " ".join(f"v1,{signature}" for signature in signatures)
