"""Who is calling: the three ways a Capture API client presents its credentials (§4.2).

1. ``Authorization: Basic base64(client_id:client_secret)``.
2. janrain-signed: ``Date: YYYY-MM-DD HH:MM:SS`` (UTC) and
   ``Authorization: Signature <client_id>:<base64 HMAC-SHA1(client_secret, text)>``, where the
   text is the path, the Date value and the sorted ``key=value`` lines of every parameter but
   ``client_id``/``client_secret``/``access_token``, each line ending in ``\\n``.
3. ``client_id`` and ``client_secret`` as form or query parameters (legacy, still common).

An ``Authorization`` header decides the mode; without one, the parameters are used.

Where the reference is silent, the simulator decides (and clients should not depend on it):
- no credentials at all: 100 ``missing_argument`` naming ``client_id``; ``client_id`` without
  ``client_secret``: 100 naming ``client_secret``;
- a wrong id or secret, a bad signature, an unparsable ``Date``, or a ``Date`` further than
  ``signature_skew`` seconds from the simulator's clock: 402 ``invalid_client_credentials``,
  with the reason in ``error_description``;
- a scheme other than Basic, Signature or OAuth: 205 ``invalid_auth_method``; ``OAuth``: 402,
  since the simulator issues no access tokens;
- with no parameters, both the PYAPI text (``path\\ndate\\n``) and the doc sample's
  (``path\\ndate\\n\\n``) verify, because which one Capture accepts is unknown (§7.7);
- Basic credentials without the ``=`` padding are accepted, as one Akamai page prints them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Literal

from simulator.config import ClientCredentials
from simulator.envelope import CaptureError
from simulator.params import Params

AuthMode = Literal["basic", "signed", "params", "oauth", "bearer", "none", "unsupported"]
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
UNSIGNED_PARAMS = frozenset({"client_id", "client_secret", "access_token"})
_SCHEMES: dict[str, AuthMode] = {"basic": "basic", "signature": "signed", "oauth": "oauth", "bearer": "bearer"}


def auth_mode(authorization: str | None, params: Params) -> AuthMode:
    """Which way the request presents credentials (for the call log; says nothing about validity)."""
    if authorization:
        scheme = authorization.split(" ", 1)[0].lower()
        return _SCHEMES.get(scheme, "unsupported")
    if params.get("client_id") is not None or params.get("client_secret") is not None:
        return "params"
    return "none"


def string_to_sign(path: str, date: str, params: Iterable[tuple[str, str]]) -> str:
    """The janrain-signed text: path, Date and the sorted ``key=value`` lines, each ending in a newline."""
    lines = sorted(f"{key}={value}" for key, value in params if key not in UNSIGNED_PARAMS)
    return f"{path}\n{date}\n" + "".join(f"{line}\n" for line in lines)


def sign(path: str, date: str, params: Iterable[tuple[str, str]], client_secret: str) -> str:
    """The base64 HMAC-SHA1 signature of a call, as a janrain-signed client computes it."""
    return _hmac(client_secret, string_to_sign(path, date, params))


def authenticate(
    *, path: str, headers: Mapping[str, str], params: Params, client: ClientCredentials, now: float, skew: float
) -> AuthMode:
    """Check the credentials of a call against ``client``; returns the mode used.

    Args:
        path: the request path, as signed (``/entity``).
        headers: the request headers (case-insensitive mapping).
        params: the call's parameters.
        client: the one API client the simulator knows.
        now: the simulator's clock, for the ``Date`` check.
        skew: how far (seconds) a signed ``Date`` may be from ``now``.

    Raises:
        CaptureError: 100, 205 or 402, as described in the module docstring.
    """
    authorization = headers.get("authorization")
    mode = auth_mode(authorization, params)
    if mode == "basic":
        _check_basic(authorization or "", client)
    elif mode == "signed":
        _check_signed(path, authorization or "", headers.get("date"), params, client, now, skew)
    elif mode == "params":
        _check_params(params, client)
    elif mode == "oauth":
        raise CaptureError(402, "access tokens are not accepted by the simulator; use client credentials")
    elif mode in ("bearer", "unsupported"):
        raise CaptureError(205, "authorization scheme must be Basic, Signature or OAuth")
    else:
        raise CaptureError(100, "missing required argument: client_id", argument_name="client_id")
    return mode


def _check_basic(authorization: str, client: ClientCredentials) -> None:
    encoded = authorization.split(" ", 1)[1].strip() if " " in authorization else ""
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise CaptureError(402, "Basic credentials are not base64 of client_id:client_secret") from None
    client_id, _, client_secret = decoded.partition(":")
    _check_pair(client_id, client_secret, client)


def _check_params(params: Params, client: ClientCredentials) -> None:
    client_id = params.require("client_id")
    client_secret = params.require("client_secret")
    _check_pair(client_id, client_secret, client)


def _check_pair(client_id: str, client_secret: str, client: ClientCredentials) -> None:
    # Both compared in constant time, and both always compared, so timing says nothing.
    id_ok = hmac.compare_digest(client_id.encode(), client.client_id.encode())
    secret_ok = hmac.compare_digest(client_secret.encode(), client.client_secret.encode())
    if not (id_ok and secret_ok):
        raise CaptureError(402, "client_id or client_secret is wrong")


def _check_signed(
    path: str,
    authorization: str,
    date: str | None,
    params: Params,
    client: ClientCredentials,
    now: float,
    skew: float,
) -> None:
    client_id, _, given = authorization.split(" ", 1)[-1].strip().partition(":")
    if not hmac.compare_digest(client_id.encode(), client.client_id.encode()):
        raise CaptureError(402, "the client_id of the Signature is unknown")
    if not date:
        raise CaptureError(402, "a janrain-signed call needs a Date header (YYYY-MM-DD HH:MM:SS, UTC)")
    try:
        signed_at = datetime.strptime(date, DATE_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise CaptureError(402, f"Date header {date!r} is not YYYY-MM-DD HH:MM:SS (UTC)") from None
    if abs(now - signed_at) > skew:
        raise CaptureError(402, f"Date header {date!r} is more than {skew:g} s from the server's clock")
    text = string_to_sign(path, date, params.pairs)
    signed_params = any(key not in UNSIGNED_PARAMS for key, _ in params.pairs)
    candidates = [text] if signed_params else [text, text + "\n"]
    if not any(hmac.compare_digest(given.encode(), _hmac(client.client_secret, c).encode()) for c in candidates):
        raise CaptureError(402, "the Signature does not match the request")


def _hmac(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")
