"""The building blocks of the configuration models: the base model and the value types.

Shared by ``service.settings`` and ``service.routing_config``, so that a URL, a duration or a
secret is read the same way wherever it appears in the file.
"""

from __future__ import annotations

import math
import re
from typing import Annotated
from urllib.parse import urlsplit

import redis.connection
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from service.secret import Secret
from service.timeutil import parse_duration, parse_rate, parse_size

_HTTP_URL = re.compile(r"^(https?)://(?:[^\s/@]*@)?(\[[^\]]+\]|[^\s/:]+)(?::\d+)?(?:/\S*)?$")
_LOOPBACK = frozenset({"127.0.0.1", "[::1]", "localhost"})


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return Secret(value)


def _https_url(value: object) -> object:
    # Signing keys fetched in clear could be swapped by anyone on the path, and API credentials
    # sent in clear could be read; plain http is only for a simulator on this machine.
    match = _HTTP_URL.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be an https:// URL")
    if match.group(1) == "http" and match.group(2) not in _LOOPBACK:
        raise ValueError("must be https://; plain http is allowed only for 127.0.0.1, ::1 or localhost")
    return value


def _bare_origin(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and key names; they belong in client_id/client_secret.
        raise ValueError("must not carry credentials; use client_id and client_secret")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"must be the bare origin, e.g. {parts.scheme}://{parts.netloc} (no path or query)")
    return f"{parts.scheme}://{parts.netloc}"


def _redis_url(value: object) -> object:
    secret = _to_secret(value)
    try:
        redis.connection.parse_url(secret.reveal())  # type: ignore[no-untyped-call]
    except ValueError:
        # The value is not repeated: a Redis URL may carry a password.
        raise ValueError(
            "is not a Redis URL; use redis://[:password@]host:port/db, rediss://... or unix:///path"
        ) from None
    return secret


def _whole_seconds(value: object) -> int:
    seconds = parse_duration(value)  # type: ignore[arg-type]
    if seconds < 1:
        raise ValueError(f"{value!r} is shorter than one second, the smallest time-to-live Redis keeps")
    return math.ceil(seconds)


def one_or_list(value: object) -> object:
    """A single string where a list is expected becomes a list of one (``to: crm``)."""
    return [value] if isinstance(value, str) else value


SecretStr = Annotated[Secret, BeforeValidator(_to_secret)]
RedisUrl = Annotated[Secret, BeforeValidator(_redis_url)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
# Times that become Redis TTLs or rq timeouts: whole seconds, at least one.
Ttl = Annotated[int, BeforeValidator(_whole_seconds)]
Size = Annotated[int, BeforeValidator(parse_size)]
OneOrMany = Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(one_or_list), Field(min_length=1)]
HttpsUrl = Annotated[str, BeforeValidator(_https_url)]
# The root of an API: calls append their paths, and the janrain signature covers only those paths.
BaseUrl = Annotated[str, BeforeValidator(_https_url), AfterValidator(_bare_origin)]
Rate = Annotated[float, BeforeValidator(parse_rate)]


class ConfigModel(BaseModel):
    """Base of every config section: frozen, and unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
