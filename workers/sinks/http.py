"""The ``http`` destination: each delivery is a JSON POST signed as Standard Webhooks.

One ``httpx2.Client`` per destination, shared by the worker's threads, keeps connections open
across deliveries. Redirects are never followed (a redirect could carry personal data to
another host), and an answer is read only as far as an error message needs. What the answer
means is decided by its status alone:

    2xx                        delivered
    408, 409, 425, 429, 5xx    SinkError(http_status, retryable), with Retry-After
    other 4xx                  SinkError(http_status, not retryable): the engine dead-letters
    3xx                        SinkError(redirect, not retryable), naming where it pointed
    no answer                  SinkError(timeout | connect | connection | protocol, retryable)

Errors name the URL without its query string or credentials (either may hold a token) and
never quote the payload or a header value.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx2
import orjson

from service.destination_config import HttpDestination
from service.timeutil import parse_retry_after
from workers.sinks.base import DEFAULT_MAX_CONNECTIONS, DestinationConfigError, Outgoing, SinkError, one_line
from workers.sinks.signing import sign, signing_key

# An answer is only ever quoted in an error, never parsed: this much is plenty.
ANSWER_CAP = 4096
RETRYABLE_4XX = frozenset({408, 409, 425, 429})
REDACTED = "[redacted]"


def loggable_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]/path``: no credentials, no query string, no fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path or '/'}"


class HttpSink:
    """Sends deliveries to one ``http`` destination; safe to share between threads."""

    def __init__(
        self,
        name: str,
        config: HttpDestination,
        *,
        client: httpx2.Client | None = None,
        clock: Callable[[], float] = time.time,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        """Open the destination's connection pool (unless ``client`` is given; then ``close`` leaves it open).

        Raises:
            DestinationConfigError: a signing secret or header value could not be used; better at start-up
                than at every delivery.
        """
        _check_sendable(name, config)
        self.name = name
        # The URL as logs and errors may show it.
        self.target = loggable_url(config.url)
        self._config = config
        self._clock = clock
        self._timeout = httpx2.Timeout(config.timeout)
        self._owns_client = client is None
        self._client = client if client is not None else _open_client(config.timeout, max_connections)
        self._user_agent = f"capture-relay/{version('capture-relay')}"
        # What a receiver might echo back that must not reach a log or the dead letter.
        self._secrets = _configured_secrets(config)

    def send(self, outgoing: Outgoing) -> None:
        """POST ``outgoing.payload`` once; return when the receiver answered 2xx.

        Raises:
            SinkError: the receiver answered otherwise, or did not answer in time.
        """
        body = orjson.dumps(outgoing.payload)
        try:
            status, headers, answer = self._exchange(body, self._headers(outgoing.delivery_id, body))
        except httpx2.TransportError as exc:
            raise self._transport_error(exc) from exc
        excerpt = "" if 200 <= status < 300 else _excerpt(answer, outgoing.payload, self._secrets)
        failure = classify(status, headers, excerpt, now=self._clock(), url=self._config.url)
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Close the connection pool, if this sink opened it."""
        if self._owns_client:
            self._client.close()

    def _headers(self, delivery_id: str, body: bytes) -> dict[str, str]:
        timestamp = int(self._clock())
        headers = {
            "content-type": "application/json",
            "user-agent": self._user_agent,
            # Uncompressed answers: their size is what the read cap counts.
            "accept-encoding": "identity",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(timestamp),
        }
        if self._config.signing_secret:
            headers["webhook-signature"] = sign(self._config.signing_secret, delivery_id, timestamp, body)
        headers.update((name, value.reveal()) for name, value in self._config.headers.items())
        return headers

    def _exchange(self, body: bytes, headers: dict[str, str]) -> tuple[int, httpx2.Headers, bytes]:
        # httpx's timeouts apply per phase and per read; the answer is also read against a
        # deadline, so that a receiver trickling it out cannot hold a worker thread for long.
        deadline = time.monotonic() + self._config.timeout
        request = self._client.build_request(
            "POST", self._config.url, content=body, headers=headers, timeout=self._timeout
        )
        response = self._client.send(request, stream=True, follow_redirects=False)
        try:
            answer = _read_capped(response.iter_raw(), deadline)
        finally:
            response.close()
        return response.status_code, response.headers, answer

    def _transport_error(self, exc: httpx2.TransportError) -> SinkError:
        retryable = True
        if isinstance(exc, httpx2.TimeoutException):
            reason, what = "timeout", f"no answer within {self._config.timeout:g}s"
        elif isinstance(exc, httpx2.ConnectError):
            reason, what = "connect", "cannot connect"
        elif isinstance(exc, httpx2.ProtocolError):
            # A receiver that hung up mid-answer may be fine next time; a request we cannot
            # even write will not be.
            reason, what = "protocol", "broken HTTP exchange"
            retryable = not isinstance(exc, httpx2.LocalProtocolError)
        else:
            reason, what = "connection", "connection failed"
        message = one_line(str(exc).replace(self._config.url, self.target))
        cause = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        return SinkError(reason=reason, retryable=retryable, detail=f"{what} ({self.target}; {cause})")


def classify(status: int, headers: httpx2.Headers, excerpt: str, *, now: float, url: str) -> SinkError | None:
    """What an answer means for the delivery: None when delivered, else the error to raise.

    Args:
        status: the answer's HTTP status.
        headers: the answer's headers (``Location``, ``Retry-After``).
        excerpt: the start of the answer's text, fit to quote (see ``_excerpt``).
        now: seconds since the epoch, to turn a ``Retry-After`` date into seconds.
        url: the request's URL, against which a relative ``Location`` is resolved.
    """
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        location = headers.get("location")
        where = f"points to {loggable_url(urljoin(url, location))}" if location else "has no Location"
        return SinkError(
            reason="redirect",
            retryable=False,
            status=status,
            detail=f"HTTP {status}: redirects are not followed; the answer {where}",
        )
    detail = f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}"
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return SinkError(reason="http_status", retryable=False, status=status, detail=detail)
    reason = "http_status" if 400 <= status < 600 else "protocol"
    retry_after = parse_retry_after(headers.get("retry-after"), now)
    return SinkError(reason=reason, retryable=True, status=status, retry_after=retry_after, detail=detail)


def _check_sendable(name: str, config: HttpDestination) -> None:
    # The messages name the key, never the value.
    for index, secret in enumerate(config.signing_secret):
        try:
            signing_key(secret)
        except ValueError as exc:
            raise DestinationConfigError(f"destinations.{name}.signing_secret[{index}]: {exc}") from None
    for header, value in config.headers.items():
        if not (value.reveal().isascii() and value.reveal().isprintable()):
            raise DestinationConfigError(
                f"destinations.{name}.headers.{header}: the value must be printable ASCII on one line"
            )


def _open_client(timeout: float, max_connections: int) -> httpx2.Client:
    return httpx2.Client(
        timeout=httpx2.Timeout(timeout),
        follow_redirects=False,
        limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )


def _read_capped(chunks: Iterator[bytes], deadline: float) -> bytes:
    # Up to ANSWER_CAP bytes, as far as they arrive before the deadline. An answer read to its
    # end leaves the connection reusable; one cut short closes it, which costs only a reconnect.
    # The status decided the outcome already, so an answer that breaks off is quoted as far as it came.
    answer = bytearray()
    with contextlib.suppress(httpx2.TransportError):
        for chunk in chunks:
            answer += chunk
            if len(answer) >= ANSWER_CAP or time.monotonic() > deadline:
                break
    return bytes(answer[:ANSWER_CAP])


def _excerpt(answer: bytes, payload: dict[str, Any], secrets: frozenset[str] = frozenset()) -> str:
    # A receiver may echo what it rejected ("invalid email 'jane@…'", "bad key sk_live_…", the
    # URL with its token); the excerpt goes to logs and the dead letter, so the payload's values
    # and the destination's secrets are masked before the text is cut short.
    return one_line(answer.decode("utf-8", "replace"), set(_payload_values(payload)) | secrets, mask=REDACTED)


def _configured_secrets(config: HttpDestination) -> frozenset[str]:
    """Header values (and the tokens inside them), signing secrets, and the URL's query and user info."""
    found: set[str] = set()
    for secret in config.headers.values():
        value = secret.reveal()
        found.add(value)
        found.update(part for part in value.split() if len(part) >= 6)  # "Bearer <token>"
    for secret in config.signing_secret:
        value = secret.reveal()
        found.update((value, value.removeprefix("whsec_")))
    parts = urlsplit(config.url)
    found.update(value for value in (parts.query, parts.username, parts.password, config.url) if value)
    found.update(value for pair in parts.query.split("&") for value in pair.split("=")[1:] if len(value) >= 6)
    return frozenset(value for value in found if len(value) >= 3)


def _payload_values(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for item in node.values():
            yield from _payload_values(item)
    elif isinstance(node, list):
        for item in node:
            yield from _payload_values(item)
    elif isinstance(node, str) and len(node) >= 3:
        yield node
        yield orjson.dumps(node).decode()[1:-1]  # as it reads inside an echoed JSON document
    elif isinstance(node, int | float) and not isinstance(node, bool) and len(str(node)) >= 6:
        yield str(node)  # a phone or account number sent as a number
