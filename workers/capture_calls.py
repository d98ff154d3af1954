"""How every Capture API call is made: a shared call slot, the request, metrics, and retries.

Each endpoint method of the clients hands ``ApiCaller.call`` one attempt (build the request,
send it, parse the answer). The caller takes a slot from the limiter shared by all workers,
times and counts the attempt, and retries retryable failures with exponential backoff and
jitter until the call's deadline; then the last error surfaces and the RQ job is retried later.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx2
import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.metrics import PREFIX
from workers.capture_errors import (
    CaptureError,
    CaptureOutcomeUnknownError,
    CaptureProtocolError,
    CaptureUnavailableError,
)
from workers.limits import LimiterTimeoutError

log = structlog.get_logger(__name__)
T = TypeVar("T")

# A page of /entity.find with full records can be large; anything beyond this is not Capture.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_ENCODING_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Limiter(Protocol):
    """A source of call slots (``workers.limits.CallLimiter`` in production)."""

    def slot(self, *, deadline: float) -> AbstractContextManager[None]: ...


class CaptureApiMetrics:
    """What the Capture clients count; one instance per process, on the process's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}capture_api_requests",
            "Capture API attempts by endpoint and outcome (ok, not_found, api_limit, busy, auth, rejected, "
            "http_429, http_5xx, http_4xx, redirect, timeout, connect_timeout, connect, connection, protocol, error; "
            "no_slot and limiter_unavailable when no request was sent).",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}capture_api_request_duration_seconds",
            "Time of one Capture API attempt, from sending the request to parsing the answer.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{PREFIX}capture_api_in_flight",
            "Capture API calls of this process waiting for an answer.",
            registry=registry,
        )
        self.slot_wait = Histogram(
            f"{PREFIX}capture_api_slot_wait_seconds",
            "Time spent waiting for a shared call slot (concurrency cap and rate limit).",
            buckets=_BUCKETS,
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one call may keep trying, and how the waits between attempts grow."""

    deadline: float = 30.0
    base_delay: float = 0.25
    max_delay: float = 8.0

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so waits still grow."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (failures - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def _transport_reason(exc: httpx2.TransportError) -> str:
    # Failures before the request went out are told apart: such a request can be sent again
    # even when it creates something.
    if isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout):
        return "connect_timeout"
    if isinstance(exc, httpx2.TimeoutException):
        return "timeout"
    return "connect" if isinstance(exc, httpx2.ConnectError) else "connection"


def send_bounded(
    http: httpx2.Client, method: str, url: str, *, budget: float, max_bytes: int = MAX_ANSWER_BYTES, **kwargs: Any
) -> httpx2.Response:
    """Send a request and read its answer within ``budget`` seconds in all, and at most ``max_bytes``.

    httpx's timeouts apply per phase and per read, so an answer that trickles in could outlive
    the call's slot lease; this bounds the whole read.

    Raises:
        httpx2.ReadTimeout: the budget ran out while reading.
        CaptureProtocolError: the answer is larger than ``max_bytes``.
    """
    started = time.monotonic()
    request = http.build_request(method, url, timeout=httpx2.Timeout(budget), **kwargs)
    response = http.send(request, stream=True)
    try:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise CaptureProtocolError(f"an answer larger than {max_bytes} bytes", endpoint=request.url.path)
            if time.monotonic() - started > budget:
                raise httpx2.ReadTimeout("the answer took longer than the call's budget", request=request)
    finally:
        response.close()
    # The body is decoded already: drop the headers that describe the encoded form.
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _ENCODING_HEADERS]
    return httpx2.Response(response.status_code, headers=headers, content=bytes(body), request=request)


def answer_excerpt(response: httpx2.Response, limit: int = 200) -> str:
    """The start of an answer's text on one line, for error messages (a gateway's page, say).

    Only failing answers are quoted, and Capture never sends a record with a failure.
    """
    return " ".join(response.text.split())[:limit]


class _NoLimit:
    def slot(self, *, deadline: float) -> AbstractContextManager[None]:
        return nullcontext()


class ApiCaller:
    """Runs attempts of Capture calls under the shared limits, with metrics and retries."""

    def __init__(
        self,
        *,
        policy: RetryPolicy,
        limiter: Limiter | None = None,
        metrics: CaptureApiMetrics | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self._limiter: Limiter = limiter if limiter is not None else _NoLimit()
        self._metrics = metrics
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not secrecy

    def call(self, endpoint: str, attempt: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``attempt`` until it succeeds, fails permanently, or the deadline leaves no room.

        A call that is not ``idempotent`` (one that creates or deletes something) is sent again
        only after failures that prove it had no effect; any other failure raises
        ``CaptureOutcomeUnknownError``, because repeating it could, say, register a webhook twice.

        Raises:
            CaptureError: the permanent error, or the last retryable one.
        """
        deadline = self._monotonic() + self.policy.deadline
        failures = 0
        while True:
            try:
                return self._once(endpoint, attempt, deadline)
            except CaptureError as exc:
                if not exc.retryable:
                    raise
                if not idempotent and not exc.repeatable:
                    raise CaptureOutcomeUnknownError(exc) from exc
                failures += 1
                delay = self.policy.backoff(failures, self._rng)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                if self._monotonic() + delay >= deadline:
                    log.warning("capture_api.gave_up", endpoint=endpoint, attempt=failures, reason=exc.reason)
                    raise
                log.info(
                    "capture_api.retry",
                    endpoint=endpoint,
                    attempt=failures,
                    reason=exc.reason,
                    capture_code=getattr(exc, "code", None),
                    request_token=getattr(exc, "request_token", None),
                    retry_in=round(delay, 3),
                )
                self._sleep(delay)

    def _once(self, endpoint: str, attempt: Callable[[], T], deadline: float) -> T:
        waited_from = self._monotonic()
        try:
            with self._limiter.slot(deadline=deadline):
                self._observe_wait(waited_from)
                return self._timed(endpoint, attempt)
        except LimiterTimeoutError as exc:
            self._count(endpoint, "no_slot")
            setting = "capture.max_concurrency" if exc.reason == "concurrency" else "capture.rate_limit"
            raise CaptureUnavailableError(
                f"no free Capture API call slot within capture.retry_deadline ({exc.reason} limit, {setting}); "
                "the calls of all workers together are at their limit",
                endpoint=endpoint,
                reason="no_slot",
            ) from exc
        except redis.ResponseError:
            raise  # a script error, not an outage: retrying would not help
        except redis.RedisError as exc:
            self._count(endpoint, "limiter_unavailable")
            raise CaptureUnavailableError(
                f"the call limiter's Redis is unavailable ({type(exc).__name__})",
                endpoint=endpoint,
                reason="limiter_unavailable",
            ) from exc

    def _timed(self, endpoint: str, attempt: Callable[[], T]) -> T:
        started = time.perf_counter()
        if self._metrics is not None:
            self._metrics.in_flight.inc()
        # Anything unforeseen counts as "error", never as "ok".
        outcome = "error"
        try:
            result = attempt()
            outcome = "ok"
            return result
        except httpx2.TransportError as exc:
            outcome = _transport_reason(exc)
            raise CaptureUnavailableError(
                f"{endpoint}: {outcome.replace('_', ' ')} ({type(exc).__name__})", endpoint=endpoint, reason=outcome
            ) from exc
        except httpx2.RequestError as exc:
            # An answer that could not be read (a body that is not the gzip it claims to be).
            outcome = "protocol"
            raise CaptureProtocolError(
                f"{endpoint}: unreadable answer ({type(exc).__name__})", endpoint=endpoint
            ) from exc
        except CaptureError as exc:
            outcome = exc.reason
            raise
        finally:
            if self._metrics is not None:
                self._metrics.in_flight.dec()
                self._metrics.duration.labels(endpoint).observe(time.perf_counter() - started)
            self._count(endpoint, outcome)

    def _observe_wait(self, since: float) -> None:
        if self._metrics is not None:
            self._metrics.slot_wait.observe(self._monotonic() - since)

    def _count(self, endpoint: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.requests.labels(endpoint, outcome).inc()
