"""A value that must never reach a log line, a repr or an error message."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit, urlunsplit


class Secret:
    """Wraps a secret string; ``str`` and ``repr`` are masked, ``reveal()`` is the only way out."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret itself, for the one place that needs it."""
        return self._value

    def matches(self, candidate: str | bytes) -> bool:
        """Compare with ``candidate`` in constant time."""
        if isinstance(candidate, str):
            candidate = candidate.encode()
        return hmac.compare_digest(self._value.encode(), candidate)

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


def mask_url(url: str) -> str:
    """Replace the password of a URL (a Redis or database DSN) with ``****``, as httpx does."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    username = userinfo.partition(":")[0]
    return urlunsplit((parts.scheme, f"{username}:****@{host}", parts.path, parts.query, parts.fragment))
