"""The three ways a Capture API client proves who it is.

- ``basic``: ``Authorization: Basic base64(client_id:client_secret)``; what most tenants use.
- ``signed``: janrain-signed. ``Date: YYYY-MM-DD HH:MM:SS`` (UTC) and ``Authorization: Signature
  client_id:base64(HMAC-SHA1(secret, path\\ndate\\n + sorted "k=v\\n" lines))``. The secret never
  travels and a captured request cannot be replayed outside the server's clock window.
- ``params``: ``client_id`` and ``client_secret`` as form fields, as old Janrain tools do.

The signing follows Janrain's own Python client (janrain/janrain-python-api ``make_signature``):
the ``key=value`` strings are sorted as strings, and with no parameters the string to sign is
``path\\ndate\\n``. reference/capture-protocol.md §6.1 holds the vectors the tests reproduce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from service.secret import Secret

AuthMode = Literal["basic", "signed", "params"]


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """A Capture API client: its id (not secret, it appears in signatures) and its secret."""

    client_id: str
    client_secret: Secret


def basic_authorization(credentials: ClientCredentials) -> str:
    """The ``Authorization`` value of HTTP Basic for these credentials."""
    pair = f"{credentials.client_id}:{credentials.client_secret.reveal()}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def signing_date(now: float) -> str:
    """The ``Date`` header janrain-signed expects: ``2016-02-26 19:08:44`` in UTC."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S")


def string_to_sign(path: str, date: str, params: Mapping[str, str]) -> str:
    """``path\\ndate\\n`` followed by each ``key=value`` (sorted as strings), each ending in a newline."""
    lines = sorted(f"{key}={value}" for key, value in params.items())
    return "".join(f"{line}\n" for line in [path, date, *lines])


def signature(path: str, date: str, params: Mapping[str, str], secret: Secret) -> str:
    """Base64 HMAC-SHA1 of ``string_to_sign`` keyed with the client secret."""
    digest = hmac.new(secret.reveal().encode(), string_to_sign(path, date, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def authorize(
    mode: AuthMode, credentials: ClientCredentials, path: str, params: Mapping[str, str], now: float
) -> tuple[dict[str, str], dict[str, str]]:
    """The headers to add and the form fields to send for one call.

    ``params`` are the call's own fields, already encoded as Capture expects (JSON values as
    strings); credentials are never part of what is signed.
    """
    if mode == "basic":
        return {"Authorization": basic_authorization(credentials)}, dict(params)
    if mode == "signed":
        date = signing_date(now)
        signed = signature(path, date, params, credentials.client_secret)
        return {"Date": date, "Authorization": f"Signature {credentials.client_id}:{signed}"}, dict(params)
    fields = dict(params)
    fields["client_id"] = credentials.client_id
    fields["client_secret"] = credentials.client_secret.reveal()
    return {}, fields
