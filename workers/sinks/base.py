"""What every destination type offers the delivery engine: one delivery in, success or a ``SinkError`` out.

A sink only sends. Retries, rate limits, the circuit breaker and the log line of each outcome
belong to ``workers/delivery.py``, so the isolation rules between destinations live in one place;
the sink's part is to say what happened in terms the engine can act on (``reason``,
``retryable``, ``retry_after``) without repeating anything private.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from service.secret import mask_url

# Connections a sink may hold when its opener does not say: about one per worker thread.
DEFAULT_MAX_CONNECTIONS = 32
# The longest text a sink quotes in an error's detail (a server's message, an answer's excerpt).
DETAIL_LENGTH = 200


def one_line(text: str, secrets: Iterable[str] = (), *, mask: str = "****") -> str:
    """``text`` as an error's detail may quote it: each of ``secrets`` replaced by ``mask``, control
    characters (a terminal escape, a NUL) as spaces, one line, at most ``DETAIL_LENGTH`` characters.

    Secrets are replaced longest first, so one that contains another is masked whole; before the
    cut, so that no part of one survives at the end.
    """
    for secret in sorted({secret for secret in secrets if secret}, key=len, reverse=True):
        text = text.replace(secret, mask)
    printable = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(printable.split())[:DETAIL_LENGTH]


def shown_url(url: str) -> str:
    """A database or broker URL as logs and errors may show it: password masked, no query string
    (it may carry a password too), no fragment."""
    return mask_url(urlunsplit(urlsplit(url)._replace(query="", fragment="")))


def url_secrets(url: str) -> tuple[str, ...]:
    """What of a database or broker URL no error may show: the URL itself, its password, its query."""
    parts = urlsplit(url)
    return tuple(value for value in (url, parts.password, parts.query) if value)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery as a sink sends it: the payload for one destination, and its identity."""

    # Stable across attempts ("<event-id>:<destination>"): the receiver's idempotency key.
    delivery_id: str
    destination: str
    event_type: str
    uuid: str
    # Record values: kept out of the repr, so that a logged or raised Outgoing shows none.
    payload: dict[str, Any] = field(repr=False)
    attempt: int
    # The record's lastUpdated as epoch seconds (a deletion: a value above every real one), or
    # None when unknown: what a mirror orders its writes by.
    version: float | None = None


class DestinationConfigError(ValueError):
    """A destination's section that passed validation but cannot be used (a DSN libpq cannot read,
    a header value that cannot be sent); the message starts with its key path and quotes no secret.
    Raised when the sink is opened, so that a worker refuses to start rather than fail every delivery.
    """


class SinkError(Exception):
    """A delivery that did not succeed, with what the engine needs to decide what comes next.

    Attributes:
        reason: a short, stable token, reused as metric label and log field (``timeout``,
            ``connect``, ``connection``, ``http_status``, ``redirect``, ``protocol``, ...).
        retryable: whether sending again later may succeed; when False the engine dead-letters.
        status: the receiver's HTTP status (or the like), when it answered.
        retry_after: seconds the receiver asked us to wait (``Retry-After``), uncapped.
        detail: one short line for operators; never the payload, never a secret or header value.
    """

    def __init__(
        self,
        *,
        reason: str,
        retryable: bool,
        detail: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retryable = retryable
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments: rebuild from the attributes when the error crosses a process.
        return (_rebuild, (self.reason, self.retryable, self.detail, self.status, self.retry_after))

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def _rebuild(reason: str, retryable: bool, detail: str, status: int | None, retry_after: float | None) -> SinkError:
    return SinkError(reason=reason, retryable=retryable, detail=detail, status=status, retry_after=retry_after)


class Sink(Protocol):
    """A destination's sender; one instance per destination, shared by the worker's threads."""

    def send(self, outgoing: Outgoing) -> None:
        """Deliver ``outgoing`` once; return on success.

        Raises:
            SinkError: on any failure, already classified as retryable or not.
        """
        ...

    def close(self) -> None:
        """Release the sink's connections; called once when the worker stops."""
        ...
