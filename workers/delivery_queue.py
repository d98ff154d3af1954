"""Putting delivery jobs on the delivery queue, each attempt at most once.

Every enqueue writes a marker with the job in one script (shared with the intake through
``service/rqcommands.py``); a marker that exists means the job was enqueued before, and
nothing is written. The fan-out of an event marks each delivery id, for as long as the ingress
remembers the event, so a rerun of ``process_event`` enqueues no delivery twice. A retry or a
deferral marks its attempt's job id, so a rerun of an attempt (a worker killed after it
scheduled the next one) cannot start a second chain of attempts, even after the finished job
itself is gone: delivery jobs are deleted once they finish, because each holds a copy of the
payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from service.rqcommands import RUN_PACKED, captured_commands, command_builder, pack_commands
from service.settings import Settings
from workers.delivery_job import DELIVER, DeliveryJob, delivery_key

MARKER_PREFIX = "capture-relay:fanout:"
ATTEMPT_MARKER_PREFIX = "capture-relay:attempt:"
# Longer than rq's retries of an abandoned attempt take (Retry intervals below sum to ~43 min).
ATTEMPT_MARKER_TTL = 3 * 3600

# KEYS: n markers. ARGV: n, marker ttl, then per job its packed enqueue commands.
# The marker is written after its job, so a failed enqueue leaves no marker behind.
_ENQUEUE_ONCE = (
    RUN_PACKED
    + """
local n, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local fresh = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    run(ARGV[2 + i])
    redis.call('SET', KEYS[i], '1', 'EX', ttl)
    fresh[i] = 1
  else
    fresh[i] = 0
  end
end
return fresh
"""
)


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Queue name, job timeout and how long finished jobs and fan-out markers are kept (seconds)."""

    queue: str
    job_timeout: int
    marker_ttl: int
    # Finished delivery jobs are deleted at once: each holds a copy of the payload.
    result_ttl: int = 0
    failure_ttl: int = 14 * 86400

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        """The delivery part of the configuration; markers last as long as the ingress dedup window."""
        delivery = settings.delivery
        return cls(
            queue=delivery.queue,
            job_timeout=delivery.job_timeout,
            marker_ttl=settings.dedup_window,
            failure_ttl=delivery.dead_letter_retention,
        )


class DeliveryQueue:
    """Enqueues delivery jobs on the delivery queue."""

    def __init__(self, connection: redis.Redis, policy: DeliveryPolicy) -> None:
        self._redis = connection
        self._policy = policy
        self._queue = Queue(policy.queue, connection=connection, serializer=JSONSerializer)
        self._builder = command_builder()
        self._builder_queue = Queue(policy.queue, connection=self._builder, serializer=JSONSerializer)
        self._enqueue_once = connection.register_script(_ENQUEUE_ONCE)

    @property
    def name(self) -> str:
        """The rq queue name."""
        return self._policy.queue

    def fan_out(self, jobs: Sequence[DeliveryJob]) -> list[bool]:
        """Enqueue the first job of each delivery not enqueued before; True where it was new."""
        markers = [MARKER_PREFIX + delivery_key(job.delivery_id) for job in jobs]
        return self._once(markers, [(job, 0.0) for job in jobs], self._policy.marker_ttl)

    def schedule(self, job: DeliveryJob, delay: float) -> bool:
        """Enqueue ``job`` to run after ``delay`` seconds (now if 0); False if that attempt was enqueued before."""
        return self._once([ATTEMPT_MARKER_PREFIX + job.job_id], [(job, delay)], ATTEMPT_MARKER_TTL)[0]

    def _once(self, markers: list[str], jobs: list[tuple[DeliveryJob, float]], ttl: int) -> list[bool]:
        if not jobs:
            return []
        if self._builder_queue.redis_server_version is None:
            self._builder_queue.redis_server_version = self._queue.get_redis_server_version()
        packed = [pack_commands(self._commands(job, delay)) for job, delay in jobs]
        fresh = self._enqueue_once(keys=markers, args=[len(jobs), ttl, *packed])
        return [bool(flag) for flag in fresh]

    def _commands(self, job: DeliveryJob, delay: float) -> list[tuple[object, ...]]:
        options = self._options(job)
        if delay <= 0:
            return captured_commands(
                self._builder,
                lambda pipe: self._builder_queue.enqueue_call(DELIVER, args=(job.to_dict(),), pipeline=pipe, **options),
            )
        # enqueue_at names the timeout job_timeout; any other unknown name would reach deliver().
        options["job_timeout"] = options.pop("timeout")
        at = datetime.now(UTC) + timedelta(seconds=delay)
        return captured_commands(
            self._builder,
            lambda pipe: self._builder_queue.enqueue_at(at, DELIVER, args=(job.to_dict(),), pipeline=pipe, **options),
        )

    def _options(self, job: DeliveryJob) -> dict[str, Any]:
        policy = self._policy
        return {
            "job_id": job.job_id,
            # Ids only: rq stores and logs the description, and the payload is personal data.
            "description": f"deliver {job.destination} {job.event_id}",
            "timeout": policy.job_timeout,
            "result_ttl": policy.result_ttl,
            "failure_ttl": policy.failure_ttl,
            # Failures are handled inside the job (retry schedule, dead letter); this covers a job
            # whose worker was killed, which rq retries instead of failing.
            "retry": Retry(max=5, interval=[5, 30, 120, 600, 1800]),
        }
