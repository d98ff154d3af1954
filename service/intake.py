"""Durable intake: the dedup marker and the RQ job of every event, in one atomic Redis script.

Either both are written or neither is: a marker without its job would make Capture's retry of
a lost event look like a duplicate, and a job without its marker would let a retry enqueue the
event twice. rq builds its enqueue commands into a pipeline that is never executed; a Lua
script then checks the markers, the job keys and the backlog, and runs rq's commands for the
new events only, all in one round trip that no other client can interleave with.

Errors::

    IntakeUnavailableError   Redis is unreachable or refused the write, or the backlog is above
                             its high-water mark; ``reason`` is ``redis_unavailable`` or
                             ``backlog_full`` (the route answers 503 with Retry-After)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.asyncio
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from service.events import Event
from service.rqcommands import RUN_PACKED, captured_commands, command_builder, pack_commands
from service.settings import Settings

# The job target lives in workers/; it is named, never imported, so service/ stays free of workers/.
PROCESS_EVENT = "workers.pipeline.process_event"
DEDUP_PREFIX = "capture-relay:dedup:"
_BACKLOG_FULL = -1

# KEYS: n markers, n job keys, the queue. ARGV: n, marker ttl, high-water mark, then per event
# its marker value and its job's commands packed into one string (see service.rqcommands), so that a job's
# forty-odd arguments cross redis-py as one.
# Each marker is written after its job's commands: Redis does not roll a script back, so if a
# command fails the script stops before the marker, and a retry of the delivery is not
# mistaken for a duplicate. A script refused for lack of memory is refused before its first
# write, and Redis does not refuse the later writes of a script that has begun writing.
_STORE = (
    RUN_PACKED
    + """
local n, ttl, high_water = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local flags, any_fresh = {}, false
for i = 1, n do
  local fresh = redis.call('EXISTS', KEYS[i]) == 0 and redis.call('EXISTS', KEYS[n + i]) == 0
  flags[i] = fresh and 1 or 0
  any_fresh = any_fresh or fresh
end
if any_fresh and redis.call('LLEN', KEYS[2 * n + 1]) >= high_water then return {-1, flags} end
for i = 1, n do
  if flags[i] == 1 then
    run(ARGV[3 + 2 * i])
    redis.call('SET', KEYS[i], ARGV[2 + 2 * i], 'EX', ttl)
  end
end
return {0, flags}
"""
)


class IntakeUnavailableError(Exception):
    """The events could not be stored now; nothing was written, the sender should retry."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """Which events were stored now and which had been stored before."""

    accepted: tuple[Event, ...]
    duplicates: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """How the RQ job of an event is stored: its queue, timeouts and TTLs (seconds)."""

    queue: str
    dedup_ttl: int
    backlog_high_water: int
    job_timeout: int
    result_ttl: int
    failure_ttl: int

    @classmethod
    def from_settings(cls, settings: Settings) -> JobPolicy:
        """Take the intake part of the configuration."""
        ingest = settings.ingest
        return cls(
            queue=ingest.queue,
            dedup_ttl=settings.dedup_window,
            backlog_high_water=ingest.backlog_high_water,
            job_timeout=ingest.job_timeout,
            result_ttl=ingest.result_ttl,
            failure_ttl=ingest.failure_ttl,
        )


def dedup_key(event: Event) -> str:
    """The marker that says this delivery was accepted."""
    return f"{DEDUP_PREFIX}{event.source}:{event.delivery_id}"


class Intake:
    """Stores events as RQ jobs, each exactly once per delivery id, without blocking the event loop."""

    def __init__(self, connection: redis.asyncio.Redis, policy: JobPolicy) -> None:
        self._redis = connection
        self._policy = policy
        # rq needs a synchronous client to build its commands; this one never blocks the event loop.
        self._builder = command_builder()
        self._queue = Queue(policy.queue, connection=self._builder, serializer=JSONSerializer)
        self._store = connection.register_script(_STORE)

    async def submit(self, events: Sequence[Event]) -> IntakeResult:
        """Store the events not seen before, all in one atomic script.

        Raises:
            IntakeUnavailableError: nothing was stored; the caller answers 503.
        """
        unique = list({event.delivery_id: event for event in events}.values())
        if not unique:
            return IntakeResult(accepted=(), duplicates=())
        try:
            if self._queue.redis_server_version is None:
                self._queue.redis_server_version = await self._server_version()
            keys = [*(dedup_key(event) for event in unique), *(Job.key_for(event.job_id) for event in unique)]
            status, flags = await self._store(keys=[*keys, self._queue.key], args=self._arguments(unique))
        except redis.RedisError as exc:
            raise IntakeUnavailableError("redis_unavailable", f"Redis refused the write: {type(exc).__name__}") from exc
        if status == _BACKLOG_FULL:
            raise IntakeUnavailableError("backlog_full", "the backlog is above ingest.backlog_high_water")
        return IntakeResult(
            accepted=tuple(event for event, flag in zip(unique, flags, strict=True) if flag),
            duplicates=tuple(event for event, flag in zip(unique, flags, strict=True) if not flag),
        )

    async def _server_version(self) -> tuple[int, int, int]:
        # rq records the server version in each job; it would otherwise ask with a blocking call.
        version = str((await self._redis.info("server"))["redis_version"])
        major, minor, patch = ([int(part) for part in version.split(".")[:3]] + [0, 0, 0])[:3]
        return major, minor, patch

    def _arguments(self, events: list[Event]) -> list[bytes | str | int]:
        policy = self._policy
        arguments: list[bytes | str | int] = [len(events), policy.dedup_ttl, policy.backlog_high_water]
        for event in events:
            arguments += [event.job_id, pack_commands(self._job_commands(event))]
        return arguments

    def _job_commands(self, event: Event) -> list[tuple[object, ...]]:
        """The commands rq would send to enqueue this event's job, built but not sent."""
        policy = self._policy
        return captured_commands(
            self._builder,
            lambda pipe: self._queue.enqueue_call(
                PROCESS_EVENT,
                args=(event.to_dict(),),
                job_id=event.job_id,
                # The default description is a repr of the arguments; ours names only ids.
                description=f"process_event {event.source} {event.event_id}",
                timeout=policy.job_timeout,
                result_ttl=policy.result_ttl,
                failure_ttl=policy.failure_ttl,
                # Also covers a job abandoned by a killed worker: it is retried, not failed.
                retry=Retry(max=5, interval=[5, 30, 120, 600, 1800]),
                pipeline=pipe,
            ),
        )
