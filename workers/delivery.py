"""``deliver``: one attempt of one delivery, and what follows it (done, retry, dead letter).

Each destination is a lane of its own (sink, schedule, rate limit, circuit breaker), so one
failing receiver never holds up the others. An attempt goes through, in order:

1. already delivered (a rerun of a finished attempt)?  → ``duplicate``, nothing sent;
2. the stale guard: a newer version already reached this destination?  → ``stale``;
3. the breaker: open?  → rescheduled for when it half-opens, ``deferred`` (not an attempt);
4. the rate limit: no turn within ``delivery.rate_limit_wait``?  → rescheduled, ``deferred``;
5. send.  2xx → ``delivered``.  A retryable failure → the next wait of the schedule (±jitter,
   never sooner than ``Retry-After``), ``retry``; past the last one, or a failure no retry can
   fix (4xx other than 408/409/425/429, a redirect) → the dead letter, ``dead_letter``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import redis
import structlog

from service.destination_config import BreakerSettings, Destination
from service.metrics import WorkerMetrics
from service.settings import Settings
from workers import context
from workers.breaker import CircuitBreaker
from workers.deadletter import DeadLetter, DeadLetterEntry
from workers.delivery_job import DeliveryJob, delivery_key
from workers.delivery_queue import DeliveryPolicy, DeliveryQueue
from workers.limits import CallLimiter, LimiterTimeoutError
from workers.sinks import open_sink
from workers.sinks.base import Outgoing, Sink, SinkError
from workers.stale_guard import Hold, StaleGuard

log = structlog.get_logger(__name__)

DELIVERED_PREFIX = "capture-relay:delivered:"
# Far more sends than any receiver takes at once: the destination limit is its rate, not this.
_UNCAPPED = 10_000


def deliver(job: dict[str, Any]) -> str:
    """RQ entry point: one attempt of the delivery ``job`` (a :meth:`DeliveryJob.to_dict`)."""
    return context.current().deliveries.attempt(DeliveryJob.from_dict(job))


@dataclass(frozen=True, slots=True)
class Lane:
    """Everything one destination's deliveries go through."""

    name: str
    sink: Sink
    breaker: CircuitBreaker
    limiter: CallLimiter | None
    schedule: tuple[float, ...]
    # How long one delivery may hold a profile's lease: longer than any send with its rate-limit wait.
    lease: float
    # How long deliveries wait before asking an open breaker again.
    recheck: float
    # How long a delivery that got no rate-limit turn waits before trying again: at least one
    # interval of the rate, so a slow rate does not churn through the queue.
    rate_recheck: float = 1.0


class DeliveryEngine:
    """Runs delivery attempts for every configured destination."""

    def __init__(
        self,
        *,
        connection: redis.Redis,
        settings: Settings,
        lanes: Mapping[str, Lane],
        queue: DeliveryQueue,
        metrics: WorkerMetrics,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._redis = connection
        self._delivery = settings.delivery
        self._lanes = dict(lanes)
        self._queue = queue
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._dead_letter = DeadLetter(connection, settings.delivery.dead_letter_retention)
        self._stale_guard = StaleGuard(connection, settings.delivery.stale_guard_ttl)
        self._marker_ttl = settings.dedup_window

    @property
    def queue(self) -> DeliveryQueue:
        """Where delivery jobs go (the pipeline fans out onto it)."""
        return self._queue

    def attempt(self, job: DeliveryJob) -> str:
        """Run one attempt of ``job``; returns its outcome (the ``outcome`` label of the metric)."""
        bound = log.bind(
            delivery_id=job.delivery_id,
            destination=job.destination,
            route=job.route,
            event_id=job.event_id,
            uuid=job.uuid,
            attempt=job.attempt,
        )
        lane = self._lanes.get(job.destination)
        if lane is None:
            # The destination was removed from the config while this delivery waited: keep it
            # where an operator can replay it once the destination is back.
            return self._dead_lettered(job, bound, reason="unknown_destination", status=None, detail="")
        if self._redis.exists(self._delivered_key(job)):
            return self._count(job, "duplicate", bound)
        deletion = job.event_type == "entityDeleted"
        with self._stale_guard.hold(
            job.destination, job.route, job.uuid, job.version, lease=lane.lease, deletion=deletion
        ) as hold:
            if hold.outcome == "stale":
                return self._count(job, "stale", bound)
            if hold.outcome == "busy":
                # Another delivery of this profile to this destination is being sent: after it.
                return self._defer(job, bound, reason="profile_busy", wait=hold.retry_in)
            return self._admitted(lane, job, hold, bound)

    def _admitted(self, lane: Lane, job: DeliveryJob, hold: Hold, bound: Any) -> str:
        admission = lane.breaker.admit()
        if not admission.allowed:
            # Waiters re-check at most twice per open period, however many of them there are.
            return self._defer(job, bound, reason="breaker_open", wait=max(admission.retry_in, lane.recheck))
        if lane.limiter is None:
            return self._send(lane, job, hold, bound, probe=admission.probe)
        try:
            with lane.limiter.slot(deadline=time.monotonic() + self._delivery.rate_limit_wait):
                return self._send(lane, job, hold, bound, probe=admission.probe)
        except LimiterTimeoutError as exc:
            if admission.probe:
                lane.breaker.release_probe()  # the probe never ran; let the next one try
            bound.debug("delivery.rate_limit_wait", reason=exc.reason)
            return self._defer(job, bound, reason="rate_limited", wait=lane.rate_recheck)

    def _send(self, lane: Lane, job: DeliveryJob, hold: Hold, bound: Any, *, probe: bool) -> str:
        if job.first_attempt_at is None:
            job = replace(job, first_attempt_at=self._clock())
        outgoing = Outgoing(
            delivery_id=job.delivery_id,
            destination=job.destination,
            event_type=job.event_type,
            uuid=job.uuid,
            payload=job.payload,
            attempt=job.attempt,
            version=job.version,
        )
        started = time.perf_counter()
        try:
            lane.sink.send(outgoing)
        except SinkError as exc:
            self._metrics.delivery_duration.labels(job.destination).observe(time.perf_counter() - started)
            return self._failed(lane, job, bound, exc, probe=probe)
        except Exception as exc:  # noqa: BLE001 - a sink bug must not lose the delivery
            # Our fault, not the destination's: the breaker is left alone, and only the type is
            # logged (an exception's text may quote the payload).
            if probe:
                lane.breaker.release_probe()
            bound.error("delivery.sink_error", reason=type(exc).__name__)
            error = SinkError(reason="internal_error", retryable=True, detail=type(exc).__name__)
            return self._retry(lane, job, bound, error)
        self._metrics.delivery_duration.labels(job.destination).observe(time.perf_counter() - started)
        lane.breaker.record_success(probe=probe)
        hold.delivered()
        self._redis.set(self._delivered_key(job), "1", ex=self._marker_ttl)
        since = job.occurred_at if job.occurred_at is not None else job.received_at
        self._metrics.end_to_end.labels(job.destination).observe(max(0.0, self._clock() - since))
        return self._count(job, "delivered", bound)

    def _failed(self, lane: Lane, job: DeliveryJob, bound: Any, error: SinkError, *, probe: bool) -> str:
        if error.retryable:
            lane.breaker.record_failure(probe=probe)
        else:
            # The receiver answered (it is up); it refused this delivery in particular.
            lane.breaker.record_success(probe=probe)
            return self._dead_lettered(job, bound, reason=error.reason, status=error.status, detail=error.detail)
        return self._retry(lane, job, bound, error)

    def _retry(self, lane: Lane, job: DeliveryJob, bound: Any, error: SinkError) -> str:
        if job.attempt >= len(lane.schedule):
            reason = f"retries_exhausted:{error.reason}"
            return self._dead_lettered(job, bound, reason=reason, status=error.status, detail=error.detail)
        wait = self._jittered(lane.schedule[job.attempt])
        if error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self._delivery.max_retry_after))
        self._queue.schedule(job.next(counts_as_attempt=True), wait)
        bound.info("delivery.retry_scheduled", reason=error.reason, status=error.status, retry_in=round(wait, 3))
        return self._count(job, "retry", bound, quiet=True)

    def _defer(self, job: DeliveryJob, bound: Any, *, reason: str, wait: float) -> str:
        # Spread the waiters so that they do not all knock at once when the breaker half-opens.
        wait = max(0.5, wait) * (1 + self._rng.uniform(0, self._delivery.jitter))
        self._queue.schedule(job.next(counts_as_attempt=False), wait)
        bound.info("delivery.deferred", reason=reason, retry_in=round(wait, 3))
        return self._count(job, "deferred", bound, quiet=True)

    def _dead_lettered(self, job: DeliveryJob, bound: Any, *, reason: str, status: int | None, detail: str) -> str:
        entry = DeadLetterEntry(
            job=job,
            failed_at=self._clock(),
            attempts=job.attempt,
            last_status=status,
            reason=reason,
            detail=detail,
        )
        self._dead_letter.add(entry)
        bound.warning("delivery.dead_lettered", reason=reason, status=status, detail=detail)
        return self._count(job, "dead_letter", bound, quiet=True)

    def _count(self, job: DeliveryJob, outcome: str, bound: Any, *, quiet: bool = False) -> str:
        self._metrics.deliveries.labels(job.destination, outcome).inc()
        if not quiet:
            bound.info(f"delivery.{outcome}", outcome=outcome)
        return outcome

    def _jittered(self, wait: float) -> float:
        spread = self._delivery.jitter
        return max(0.0, wait * (1 + self._rng.uniform(-spread, spread)))

    @staticmethod
    def _delivered_key(job: DeliveryJob) -> str:
        return DELIVERED_PREFIX + delivery_key(job.delivery_id)


def open_lane(name: str, config: Destination, settings: Settings, connection: redis.Redis) -> Lane:
    """The sink, breaker, rate limit and schedule of one destination."""
    breaker: BreakerSettings = config.breaker or settings.delivery.breaker
    limiter = None
    if config.rate_limit is not None:
        limiter = CallLimiter(
            connection,
            name=f"destination:{name}",
            max_concurrency=_UNCAPPED,
            rate=config.rate_limit,
            # Longer than any send can last, so a live send never loses its turn.
            lease=3 * config.timeout + 5,
        )
    return Lane(
        name=name,
        sink=open_sink(name, config, max_connections=settings.worker.concurrency, relay_redis_url=settings.redis_url),
        breaker=CircuitBreaker(connection, name, breaker),
        limiter=limiter,
        schedule=tuple(config.schedule or settings.delivery.schedule),
        lease=3 * config.timeout + 5 + settings.delivery.rate_limit_wait,
        recheck=breaker.open_for / 2,
        rate_recheck=max(1.0, settings.delivery.rate_limit_wait, 1 / config.rate_limit) if config.rate_limit else 1.0,
    )


@contextmanager
def delivery_engine(settings: Settings, connection: redis.Redis, metrics: WorkerMetrics) -> Iterator[DeliveryEngine]:
    """A delivery engine over every configured destination; the sinks' connections close on exit."""
    with ExitStack() as stack:
        lanes = {}
        for name, config in settings.destinations.items():
            lane = open_lane(name, config, settings, connection)
            stack.callback(lane.sink.close)
            lanes[name] = lane
        queue = DeliveryQueue(connection, DeliveryPolicy.from_settings(settings))
        yield DeliveryEngine(connection=connection, settings=settings, lanes=lanes, queue=queue, metrics=metrics)
