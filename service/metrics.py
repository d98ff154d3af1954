"""Prometheus metrics: the shared definitions, and queue gauges read from Redis at scrape time.

Metrics live on a ``CollectorRegistry`` created at start-up and passed down, so nothing is
registered as an import side effect and every test gets a fresh registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import redis
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue, worker_registration
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from service.redistext import as_text

log = structlog.get_logger(__name__)

PREFIX = "capture_relay_"
# Seconds to days: a delivery that waited out a receiver's outage is still counted in a bucket.
_END_TO_END_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0, 86400.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """What the ingress counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.webhooks_received = Counter(
            f"{PREFIX}webhooks_received",
            "Webhook deliveries by source and outcome (accepted, duplicate, malformed, unauthentic, "
            "too_large, unsupported_media_type, unavailable, disabled, error).",
            ["source", "outcome"],
            registry=registry,
        )
        self.webhook_rejections = Counter(
            f"{PREFIX}webhook_rejections",
            "Refused webhook deliveries by source and reason (kid_unknown, iat_too_old, ...).",
            ["source", "reason"],
            registry=registry,
        )
        self.ingest_duration = Histogram(
            f"{PREFIX}ingest_duration_seconds",
            "Time from request to answer on the webhook routes, verification and enqueue included.",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class WorkerMetrics:
    """What the workers count."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_processed = Counter(
            f"{PREFIX}events_processed",
            "Events processed by the workers, by event type and outcome (routed, unrouted, gone, failed).",
            ["type", "outcome"],
            registry=registry,
        )
        self.deliveries = Counter(
            f"{PREFIX}deliveries",
            "Delivery attempts by destination and outcome (delivered, retry, dead_letter, deferred, stale, duplicate).",
            ["destination", "outcome"],
            registry=registry,
        )
        self.delivery_duration = Histogram(
            f"{PREFIX}delivery_duration_seconds",
            "One send to a destination, from the request to its answer.",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end = Histogram(
            f"{PREFIX}end_to_end_seconds",
            "From the change in Capture (the event's toe, else its receipt) to its delivery.",
            ["destination"],
            buckets=_END_TO_END_BUCKETS,
            registry=registry,
        )


class QueueCollector(Collector):
    """Depth, oldest-job age and registry sizes of RQ queues, read from Redis at each scrape."""

    def __init__(self, connection: redis.Redis, queues: Sequence[str], clock: Callable[[], float] = time.time) -> None:
        self._redis = connection
        self._queues = tuple(queues)
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(f"{PREFIX}queue_depth", "Jobs waiting in the queue.", labels=["queue"])
        age = GaugeMetricFamily(
            f"{PREFIX}queue_oldest_job_age_seconds",
            "Age of the job that has waited longest in the queue (0 when empty).",
            labels=["queue"],
        )
        jobs = GaugeMetricFamily(
            f"{PREFIX}queue_jobs", "Jobs in the queue's registries, by state.", labels=["queue", "state"]
        )
        workers = GaugeMetricFamily(
            f"{PREFIX}workers",
            "Live workers on the queue: registered, with a heartbeat that has not expired.",
            labels=["queue"],
        )
        try:
            for queue in self._queues:
                waiting, oldest, registries = self._read(queue)
                depth.add_metric([queue], waiting)
                age.add_metric([queue], oldest)
                for state, count in registries.items():
                    jobs.add_metric([queue, state], count)
                workers.add_metric([queue], self._live_workers(queue))
        except redis.RedisError as exc:
            # A scrape must not fail because Redis is down: the gauges are left out instead,
            # and readiness reports the outage.
            log.warning("metrics.queue_read_failed", reason=type(exc).__name__)
            return
        yield from (depth, age, jobs, workers)

    def _live_workers(self, queue: str) -> int:
        # A SIGKILLed worker stays registered until maintenance cleans up, but its key (kept alive
        # by its heartbeat) expires within a few minutes, so count only the keys that still exist.
        keys = sorted(worker_registration.get_keys(Queue(queue, connection=self._redis)))
        return int(self._redis.exists(*keys)) if keys else 0

    def _read(self, queue: str) -> tuple[int, float, dict[str, int]]:
        # Key names come from rq itself, so a change of rq's layout cannot silently zero the gauges.
        queue_key = Queue(queue, connection=self._redis).key
        registries = {
            "started": StartedJobRegistry(queue, connection=self._redis).key,
            "scheduled": ScheduledJobRegistry(queue, connection=self._redis).key,  # type: ignore[no-untyped-call]
            "failed": FailedJobRegistry(queue, connection=self._redis).key,
        }
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.llen(queue_key)
            pipe.lindex(queue_key, 0)
            for key in registries.values():
                pipe.zcard(key)
            waiting, head, *sizes = pipe.execute()
        oldest = 0.0
        if head is not None:
            enqueued = self._redis.hget(Job.key_for(as_text(head)), "enqueued_at")
            if enqueued:
                stamp = datetime.strptime(as_text(enqueued), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                oldest = max(0.0, self._clock() - stamp.timestamp())
        return waiting, oldest, dict(zip(registries, sizes, strict=True))
