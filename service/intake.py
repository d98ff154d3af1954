"""Durable intake: the dedup marker and the RQ job of every event, in one Redis transaction.

Either both are written or neither is: a marker without its job would make Capture's retry of
a lost event look like a duplicate, and a job without its marker would let a retry enqueue the
event twice. The marker keys and the job keys are WATCHed, checked, and written in MULTI/EXEC;
a concurrent writer of the same delivery makes EXEC fail, and the retry then sees the marker.

Errors::

    IntakeUnavailableError   Redis is unreachable or refused the write, or the backlog is above
                             its high-water mark; ``reason`` is ``redis_unavailable`` or
                             ``backlog_full`` (the route answers 503 with Retry-After)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from service.events import Event
from service.settings import Settings

# The job target lives in workers/; it is named, never imported, so service/ stays free of workers/.
PROCESS_EVENT = "workers.pipeline.process_event"
DEDUP_PREFIX = "capture-relay:dedup:"
_MAX_ATTEMPTS = 8

# One round trip for every read the decision needs: which markers and jobs exist, and the backlog.
_READ_STATE = """
local n = tonumber(ARGV[1])
local seen = {}
for i = 1, n do seen[i] = redis.call('EXISTS', KEYS[i]) + redis.call('EXISTS', KEYS[n + i]) end
return {seen, redis.call('LLEN', KEYS[2 * n + 1])}
"""


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
            dedup_ttl=int(settings.dedup_ttl),
            backlog_high_water=ingest.backlog_high_water,
            job_timeout=int(ingest.job_timeout),
            result_ttl=int(ingest.result_ttl),
            failure_ttl=int(ingest.failure_ttl),
        )


def dedup_key(event: Event) -> str:
    """The marker that says this delivery was accepted."""
    return f"{DEDUP_PREFIX}{event.source}:{event.delivery_id}"


class Intake:
    """Stores events as RQ jobs, each exactly once per delivery id. Blocking: run it in a thread."""

    def __init__(self, connection: redis.Redis, policy: JobPolicy) -> None:
        self._redis = connection
        self._policy = policy
        self._queue = Queue(policy.queue, connection=connection, serializer=JSONSerializer)
        self._read_state = connection.register_script(_READ_STATE)

    @property
    def queue(self) -> Queue:
        """The RQ queue events go to."""
        return self._queue

    def submit(self, events: Sequence[Event]) -> IntakeResult:
        """Store the events not seen before, all in one transaction.

        Raises:
            IntakeUnavailableError: nothing was stored; the caller answers 503.
        """
        unique = list({event.delivery_id: event for event in events}.values())
        if not unique:
            return IntakeResult(accepted=(), duplicates=())
        try:
            for _ in range(_MAX_ATTEMPTS):
                result = self._try_submit(unique)
                if result is not None:
                    return result
        except redis.RedisError as exc:
            raise IntakeUnavailableError("redis_unavailable", f"Redis refused the write: {type(exc).__name__}") from exc
        raise IntakeUnavailableError("redis_contended", "concurrent writers kept changing the same events")

    def _try_submit(self, events: list[Event]) -> IntakeResult | None:
        markers = [dedup_key(event) for event in events]
        job_keys = [Job.key_for(event.job_id) for event in events]
        with self._redis.pipeline() as pipe:
            try:
                pipe.watch(*markers, *job_keys)  # type: ignore[no-untyped-call]
                seen, backlog = self._read_state(
                    keys=[*markers, *job_keys, self._queue.key], args=[len(events)], client=pipe
                )
                fresh = [event for event, hits in zip(events, seen, strict=True) if not hits]
                old = tuple(event for event, hits in zip(events, seen, strict=True) if hits)
                if not fresh:
                    return IntakeResult(accepted=(), duplicates=old)
                if backlog >= self._policy.backlog_high_water:
                    raise IntakeUnavailableError(
                        "backlog_full", f"{backlog} events are waiting, above the high-water mark"
                    )
                pipe.multi()
                for event in fresh:
                    pipe.set(dedup_key(event), event.job_id, ex=self._policy.dedup_ttl)
                    self._enqueue(event, pipe)
                pipe.execute()
            except redis.WatchError:
                return None
        return IntakeResult(accepted=tuple(fresh), duplicates=old)

    def _enqueue(self, event: Event, pipe: redis.client.Pipeline) -> None:
        policy = self._policy
        self._queue.enqueue_call(
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
        )
