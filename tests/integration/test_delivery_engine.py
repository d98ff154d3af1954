"""The delivery engine's decisions, against real Redis, with sinks that answer as scripted."""

from __future__ import annotations

import io
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from rq import Queue
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from service.metrics import WorkerMetrics
from service.settings import Settings, from_mapping
from tests.support.deliveries import delivery_job
from workers.breaker import CircuitBreaker
from workers.deadletter import DeadLetter
from workers.delivery import DeliveryEngine, Lane
from workers.delivery_job import DeliveryJob
from workers.delivery_queue import DeliveryPolicy, DeliveryQueue
from workers.limits import CallLimiter
from workers.sinks.base import Outgoing, SinkError

SCHEDULE = (0.0, 10.0, 100.0)


@dataclass
class ScriptedSink:
    """Answers each send with the next scripted error, or success once the script is used up."""

    script: list[SinkError | None] = field(default_factory=list)
    sent: list[Outgoing] = field(default_factory=list)

    def send(self, outgoing: Outgoing) -> None:
        self.sent.append(outgoing)
        if self.script:
            error = self.script.pop(0)
            if error is not None:
                raise error

    def close(self) -> None:
        pass


def _settings(**delivery: Any) -> Settings:
    return from_mapping(
        {
            "destinations": {"crm": {"type": "http", "url": "https://crm.example.com/hooks"}},
            "delivery": {"jitter": 0.2, "breaker": {"consecutive_failures": 2, "open_for": "30s"}, **delivery},
        },
        {},
    )


@dataclass
class Harness:
    engine: DeliveryEngine
    sink: ScriptedSink
    breaker: CircuitBreaker
    metrics: WorkerMetrics
    redis: redis.Redis
    settings: Settings

    def scheduled(self) -> list[tuple[DeliveryJob, float]]:
        """Jobs waiting for a later attempt, with their due time (epoch seconds)."""
        registry = ScheduledJobRegistry(self.settings.delivery.queue, connection=self.redis)  # type: ignore[no-untyped-call]
        queue = Queue(self.settings.delivery.queue, connection=self.redis, serializer=JSONSerializer)
        found = []
        for job_id in registry.get_job_ids():
            job = queue.fetch_job(job_id)
            assert job is not None
            found.append((DeliveryJob.from_dict(job.args[0]), float(registry.get_expiration_time(job).timestamp())))
        return found

    def outcomes(self) -> dict[str, float]:
        return {
            sample.labels["outcome"]: sample.value
            for metric in self.metrics.registry.collect()
            if metric.name == "capture_relay_deliveries"
            for sample in metric.samples
            if sample.name.endswith("_total")
        }


@pytest.fixture
def harness(redis_client: redis.Redis) -> Harness:
    return _harness(redis_client, _settings())


def _harness(
    connection: redis.Redis, settings: Settings, limiter: CallLimiter | None = None, sink: ScriptedSink | None = None
) -> Harness:
    sink = sink or ScriptedSink()
    breaker = CircuitBreaker(connection, "crm", settings.delivery.breaker)
    metrics = WorkerMetrics(CollectorRegistry())
    lane = Lane(
        name="crm",
        sink=sink,
        breaker=breaker,
        limiter=limiter,
        schedule=SCHEDULE,
        lease=30,
        recheck=15,
        rate_recheck=60,
    )
    engine = DeliveryEngine(
        connection=connection,
        settings=settings,
        lanes={"crm": lane},
        queue=DeliveryQueue(connection, DeliveryPolicy.from_settings(settings)),
        metrics=metrics,
        rng=random.Random(7),
    )
    return Harness(engine, sink, breaker, metrics, connection, settings)


def _job(event_id: str = "evt-1", destination: str = "crm", **changes: Any) -> DeliveryJob:
    defaults = {
        "route": "everything",
        "uuid": "0b5e3a4c-0000-4000-8000-000000000001",
        "version": 1000.0,
        "occurred_at": None,
        "payload": {"email": "private@example.com"},
    }
    return delivery_job(event_id, destination, **{**defaults, **changes})


def _retryable(status: int = 503, retry_after: float | None = None) -> SinkError:
    return SinkError(reason="http_status", retryable=True, status=status, retry_after=retry_after, detail="")


def test_a_success_is_counted_once_and_a_rerun_sends_nothing(harness: Harness) -> None:
    assert harness.engine.attempt(_job()) == "delivered"
    assert harness.engine.attempt(_job()) == "duplicate"
    assert len(harness.sink.sent) == 1
    assert harness.outcomes() == {"delivered": 1.0, "duplicate": 1.0}


def test_a_retryable_failure_schedules_the_next_attempt_with_jitter(harness: Harness) -> None:
    harness.sink.script = [_retryable()]
    before = time.time()
    assert harness.engine.attempt(_job()) == "retry"
    [(job, due)] = harness.scheduled()
    assert (job.attempt, job.seq) == (2, 1)
    assert job.first_attempt_at is not None
    # schedule[1] = 10 s, spread by at most 20 % either way (rq keeps whole seconds).
    assert before + 8 - 1 <= due <= time.time() + 12 + 1


def test_retry_after_is_never_undercut(harness: Harness) -> None:
    harness.sink.script = [_retryable(429, retry_after=50.0)]
    before = time.time()
    harness.engine.attempt(_job())
    [(_retried, due)] = harness.scheduled()
    assert due >= before + 50 - 1


def test_the_last_failure_goes_to_the_dead_letter(harness: Harness) -> None:
    harness.sink.script = [_retryable(502)]
    assert harness.engine.attempt(_job(attempt=3)) == "dead_letter"
    [entry] = DeadLetter(harness.redis, 3600).entries()
    assert (entry.reason, entry.last_status, entry.attempts) == ("retries_exhausted:http_status", 502, 3)
    assert harness.scheduled() == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_a_refusal_no_retry_can_fix_goes_straight_to_the_dead_letter(harness: Harness, status: int) -> None:
    harness.sink.script = [SinkError(reason="http_status", retryable=False, status=status, detail="")]
    assert harness.engine.attempt(_job()) == "dead_letter"
    assert harness.scheduled() == []
    assert harness.breaker.state() == "closed"  # the receiver is up; it refused this one


def test_while_the_breaker_is_open_deliveries_wait_without_using_attempts(harness: Harness) -> None:
    harness.sink.script = [_retryable(), _retryable()]
    harness.engine.attempt(_job("evt-1"))
    harness.engine.attempt(_job("evt-2"))
    assert harness.breaker.state() == "open"
    before = time.time()
    assert harness.engine.attempt(_job("evt-3")) == "deferred"
    assert len(harness.sink.sent) == 2  # evt-3 was not sent
    deferred, due = next((job, due) for job, due in harness.scheduled() if job.event_id == "evt-3")
    assert (deferred.attempt, deferred.seq) == (1, 1)
    # It asks again when the breaker half-opens (open_for 30 s), not every second meanwhile.
    assert due >= before + 15 - 1


def test_a_removed_destination_keeps_its_deliveries_in_the_dead_letter(harness: Harness) -> None:
    assert harness.engine.attempt(_job(destination="gone")) == "dead_letter"
    [entry] = DeadLetter(harness.redis, 3600).entries()
    assert entry.reason == "unknown_destination"


def test_an_older_version_is_not_sent_after_a_newer_one(harness: Harness) -> None:
    assert harness.engine.attempt(_job("evt-new", version=2000.0)) == "delivered"
    assert harness.engine.attempt(_job("evt-old", version=1000.0)) == "stale"
    assert harness.engine.attempt(_job("evt-same", version=2000.0)) == "delivered"
    assert [o.delivery_id for o in harness.sink.sent] == ["evt-new:crm", "evt-same:crm"]


def test_a_sink_bug_is_retried_not_lost(harness: Harness) -> None:
    class Broken(ScriptedSink):
        def send(self, outgoing: Outgoing) -> None:
            raise KeyError("bug")

    broken = _harness(harness.redis, harness.settings, sink=Broken())
    assert broken.engine.attempt(_job()) == "retry"
    assert len(broken.scheduled()) == 1


def test_a_rate_limited_delivery_is_deferred(redis_client: redis.Redis) -> None:
    settings = _settings(rate_limit_wait=0)
    limiter = CallLimiter(redis_client, name="destination:crm", max_concurrency=100, rate=0.01, burst=1, lease=10)
    harness = _harness(redis_client, settings, limiter)
    assert harness.engine.attempt(_job("evt-1")) == "delivered"
    before = time.time()
    assert harness.engine.attempt(_job("evt-2")) == "deferred"  # the next turn is 100 s away
    [(job, due)] = harness.scheduled()
    assert (job.event_id, job.attempt) == ("evt-2", 1)
    assert due >= before + 60 - 1  # the lane's rate_recheck: no churn through the queue meanwhile


def test_nothing_of_the_payload_reaches_the_log(harness: Harness, log_output: io.StringIO) -> None:
    harness.sink.script = [_retryable(), SinkError(reason="http_status", retryable=False, status=400, detail="")]
    harness.engine.attempt(_job("evt-1"))
    harness.engine.attempt(_job("evt-2"))
    lines = log_output.getvalue()
    assert "delivery.retry_scheduled" in lines
    assert "delivery.dead_lettered" in lines
    assert "private@example.com" not in lines


def test_another_delivery_of_the_profile_waits_while_one_is_being_sent(harness: Harness) -> None:
    """Check and send do not interleave: v1 being sent slowly holds back v2 until v1's outcome
    is recorded, so v1 can never land after v2."""
    in_send = threading.Event()
    release = threading.Event()

    class Slow(ScriptedSink):
        def send(self, outgoing: Outgoing) -> None:
            in_send.set()
            release.wait(10)
            super().send(outgoing)

    slow = _harness(harness.redis, harness.settings, sink=Slow())
    first = threading.Thread(target=slow.engine.attempt, args=(_job("evt-v1", version=1000.0),))
    first.start()
    assert in_send.wait(10)
    assert slow.engine.attempt(_job("evt-v2", version=2000.0)) == "deferred"
    release.set()
    first.join(10)
    [(later, _due)] = slow.scheduled()
    assert later.event_id == "evt-v2"
    assert slow.engine.attempt(later) == "delivered"
    assert [o.delivery_id for o in slow.sink.sent] == ["evt-v1:crm", "evt-v2:crm"]


def test_each_route_has_its_own_versions_but_a_deletion_ends_them_all(harness: Harness) -> None:
    """A newer delivery of the email route does not make the names route's retry stale; a
    deletion makes every later delivery of the profile stale."""
    assert harness.engine.attempt(_job("evt-email", route="emails", version=3000.0)) == "delivered"
    assert harness.engine.attempt(_job("evt-names", route="names", version=2000.0)) == "delivered"
    assert harness.engine.attempt(_job("evt-gone", route="mirror", event_type="entityDeleted", version=9e15)) == (
        "delivered"
    )
    assert harness.engine.attempt(_job("evt-late", route="names", version=4000.0)) == "stale"
