"""Putting delivery jobs on the delivery queue: once per delivery id, and again later for retries.

The fan-out of an event writes, per destination, a marker and the first job of the delivery in
one script: a rerun of ``process_event`` (a worker killed after the fan-out, say) finds the
markers and enqueues nothing twice. Later attempts are scheduled under their own job ids with
rq's ``unique`` flag, so a rerun of one attempt cannot start a second chain of retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from service.rqcommands import RUN_PACKED, captured_commands, command_builder, pack_commands
from service.settings import Settings
from workers.delivery_job import DELIVER, DeliveryJob, delivery_key

MARKER_PREFIX = "capture-relay:fanout:"

# KEYS: n markers. ARGV: n, marker ttl, then per delivery its packed enqueue commands.
# The marker is written after its job, so a failed enqueue leaves no marker behind.
_FAN_OUT = (
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
    result_ttl: int = 600
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
        self._fan_out = connection.register_script(_FAN_OUT)

    @property
    def name(self) -> str:
        """The rq queue name."""
        return self._policy.queue

    def fan_out(self, jobs: Sequence[DeliveryJob]) -> list[bool]:
        """Enqueue the first job of each delivery not enqueued before; True where it was new."""
        if not jobs:
            return []
        if self._builder_queue.redis_server_version is None:
            self._builder_queue.redis_server_version = self._queue.get_redis_server_version()
        markers = [MARKER_PREFIX + delivery_key(job.delivery_id) for job in jobs]
        packed = [pack_commands(self._commands(job)) for job in jobs]
        fresh = self._fan_out(keys=markers, args=[len(jobs), self._policy.marker_ttl, *packed])
        return [bool(flag) for flag in fresh]

    def schedule(self, job: DeliveryJob, delay: float) -> bool:
        """Enqueue ``job`` to run after ``delay`` seconds (now if 0); False if that attempt already exists."""
        options = self._options(job)
        try:
            if delay <= 0:
                self._queue.enqueue_call(DELIVER, args=(job.to_dict(),), unique=True, **options)
            else:
                # enqueue_at names the timeout job_timeout; any other unknown name would reach deliver().
                at = datetime.now(UTC) + timedelta(seconds=delay)
                options["job_timeout"] = options.pop("timeout")
                self._queue.enqueue_at(at, DELIVER, args=(job.to_dict(),), unique=True, **options)
        except DuplicateJobError:
            return False
        return True

    def _commands(self, job: DeliveryJob) -> list[tuple[object, ...]]:
        return captured_commands(
            self._builder,
            lambda pipe: self._builder_queue.enqueue_call(
                DELIVER, args=(job.to_dict(),), pipeline=pipe, **self._options(job)
            ),
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
