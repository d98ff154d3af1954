"""The dead letter: deliveries that failed for good, kept for an operator to inspect, replay or purge.

A delivery lands here when its destination refused it outright (a 4xx other than 408, 409, 425,
429) or its retry schedule ran out. Each entry keeps the whole job, payload included, so a replay
sends exactly what would have been sent; the payload is personal data, so entries expire after
``retention`` seconds (``delivery.dead_letter_retention``, 14 days by default). Keys:

- ``capture-relay:dead-letter:entry:<delivery-id>``: the entry as JSON, expiring ``retention``
  seconds after ``failed_at``. Adding a delivery id again replaces its entry.
- ``capture-relay:dead-letter:index:<destination>``: sorted set of delivery ids scored by
  ``failed_at``. Members whose entry has expired are dropped lazily, when a listing meets them.
- ``capture-relay:dead-letter:destinations``: the destinations that have an index.

Index keys and the destination set carry the retention as TTL too, refreshed on every add, so
nothing outlives the entries it points at by more than one retention.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from service.redistext import as_text
from workers.delivery_job import DeliveryJob
from workers.delivery_queue import DeliveryQueue

KEY_PREFIX = "capture-relay:dead-letter:"
# Ids fetched and deleted per round trip when purging.
_BATCH = 500

# KEYS: entry, index. ARGV: the entry as it was read, its delivery id.
# Removes the entry only if it is still the one that was read: a replayed delivery that failed
# again at once has a new entry, which must stay.
_REMOVE_IF_UNCHANGED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# KEYS: index, destination set. ARGV: the destination. Forgets a destination whose index is gone,
# in one step with the check, so an entry added meanwhile keeps its destination listed.
_FORGET_IF_EMPTY = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One dead-lettered delivery.

    Attributes:
        job: the delivery job of the last attempt, payload included.
        failed_at: when it was given up, epoch seconds.
        attempts: how many send attempts were made.
        last_status: the destination's last HTTP status, if it answered at all.
        reason: a short token for why (``http_status``, ``timeout``, ``retries_exhausted``, ...).
        detail: a short, non-personal description of the last error.
    """

    job: DeliveryJob
    failed_at: float
    attempts: int
    last_status: int | None
    reason: str
    detail: str

    @property
    def delivery_id(self) -> str:
        """``<event-id>:<destination>``."""
        return self.job.delivery_id

    @property
    def destination(self) -> str:
        """The destination's name in the config."""
        return self.job.destination

    @property
    def event_id(self) -> str:
        """Capture's event id."""
        return self.job.event_id

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, the form stored in Redis."""
        return {
            "job": self.job.to_dict(),
            "failed_at": self.failed_at,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "reason": self.reason,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeadLetterEntry:
        """Rebuild an entry from :meth:`to_dict` output."""
        return cls(
            job=DeliveryJob.from_dict(data["job"]),
            failed_at=float(data["failed_at"]),
            attempts=int(data["attempts"]),
            last_status=None if data.get("last_status") is None else int(data["last_status"]),
            reason=str(data["reason"]),
            detail=str(data.get("detail", "")),
        )


class DeadLetter:
    """The dead letter in Redis.

    Args:
        connection: the Redis client.
        retention: seconds an entry is kept after it failed.
        clock: epoch seconds now; decides which index members are past retention.
        key_prefix: prefix of the Redis keys.

    Raises:
        ValueError: when ``retention`` is not positive.
    """

    def __init__(
        self,
        connection: redis.Redis,
        retention: int,
        *,
        clock: Callable[[], float] = time.time,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        if retention < 1:
            raise ValueError(f"retention={retention!r}; dead-letter entries must be kept at least 1 s")
        self.retention = retention
        self._redis = connection
        self._clock = clock
        self._prefix = key_prefix
        self._destinations_key = key_prefix + "destinations"
        self._remove_if_unchanged = connection.register_script(_REMOVE_IF_UNCHANGED)
        self._forget_if_empty = connection.register_script(_FORGET_IF_EMPTY)

    def add(self, entry: DeadLetterEntry) -> None:
        """Keep ``entry`` until ``retention`` seconds after its ``failed_at``; replaces one with the same id."""
        index = self._index_key(entry.destination)
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(
            self._entry_key(entry.delivery_id),
            orjson.dumps(entry.to_dict()),
            pxat=round((entry.failed_at + self.retention) * 1000),
        )
        pipe.zadd(index, {entry.delivery_id: entry.failed_at})
        pipe.expire(index, self.retention)
        pipe.sadd(self._destinations_key, entry.destination)
        pipe.expire(self._destinations_key, self.retention)
        pipe.execute()

    def get(self, delivery_id: str) -> DeadLetterEntry | None:
        """The entry of ``delivery_id``, or None when there is none (never was, removed or expired)."""
        raw = self._redis.get(self._entry_key(delivery_id))
        return None if raw is None else _parse(raw)

    def entries(
        self, destination: str | None = None, since: float | None = None, limit: int | None = None
    ) -> list[DeadLetterEntry]:
        """Entries, newest first.

        Args:
            destination: only this destination's.
            since: only those that failed at or after this time (epoch seconds).
            limit: at most this many.
        """
        found: list[DeadLetterEntry] = []
        for name in self._names(destination):
            found.extend(self._newest(name, since, limit))
        found.sort(key=lambda entry: entry.failed_at, reverse=True)
        return found if limit is None else found[:limit]

    def delivery_ids(self, destination: str) -> list[str]:
        """The delivery ids of ``destination``'s entries, oldest first (the order a replay follows)."""
        index = self._index_key(destination)
        self._redis.zremrangebyscore(index, "-inf", f"({self._cutoff()}")
        return [as_text(member) for member in self._redis.zrange(index, 0, -1)]

    def destinations(self) -> list[str]:
        """The destinations that have entries (or had, until a listing notices they expired), sorted."""
        return sorted(as_text(member) for member in self._redis.smembers(self._destinations_key))

    def remove(self, delivery_id: str) -> bool:
        """Delete the entry of ``delivery_id``; False when there was none."""
        entry = self.get(delivery_id)
        if entry is None:
            return False
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._entry_key(delivery_id))
        pipe.zrem(self._index_key(entry.destination), delivery_id)
        deleted, _ = pipe.execute()
        self._forget_if_empty(
            keys=[self._index_key(entry.destination), self._destinations_key], args=[entry.destination]
        )
        return bool(deleted)

    def purge(self, destination: str | None = None, before: float | None = None) -> int:
        """Delete entries: all, or one destination's, optionally only those that failed before ``before``.

        Returns:
            How many entries were deleted (entries already past retention are not counted).
        """
        removed = 0
        upper = "+inf" if before is None else f"({before}"
        for name in self._names(destination):
            index = self._index_key(name)
            while batch := self._redis.zrangebyscore(index, "-inf", upper, start=0, num=_BATCH):
                pipe = self._redis.pipeline(transaction=False)
                for member in batch:
                    pipe.delete(self._entry_key(as_text(member)))
                pipe.zrem(index, *batch)
                *deleted, _ = pipe.execute()
                removed += sum(int(count) for count in deleted)
            self._forget_if_empty(keys=[index, self._destinations_key], args=[name])
        return removed

    def sizes(self, destinations: Iterable[str] | None = None) -> dict[str, int]:
        """Entries per destination, past-retention ones excluded (for the dead-letter-size gauge).

        Args:
            destinations: the destinations to count (0 for those with none); default all that have entries.
        """
        names = self.destinations() if destinations is None else list(destinations)
        lower = f"({self._cutoff()}"
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.zcount(self._index_key(name), lower, "+inf")
        return {name: int(count) for name, count in zip(names, pipe.execute(), strict=True)}

    def replay(self, delivery_id: str, queue: DeliveryQueue) -> bool:
        """Put the delivery back on the delivery queue as a fresh job, then remove its entry.

        The job is scheduled first and the entry removed second, so a crash in between leaves the
        entry in place and a second replay may send the delivery twice. That is safe: the delivery
        id is stable, and downstream systems deduplicate on it. If the replayed job fails for good
        before the removal, its new entry is kept (only the entry that was replayed is removed).

        Returns:
            False when there is no entry for ``delivery_id``.
        """
        raw = self._redis.get(self._entry_key(delivery_id))
        if raw is None:
            return False
        entry = _parse(raw)
        # False here means this very replay job exists already (an earlier replay that crashed
        # before removing the entry): it is on the queue either way.
        queue.schedule(entry.job.replay(), 0)
        index = self._index_key(entry.destination)
        self._remove_if_unchanged(keys=[self._entry_key(delivery_id), index], args=[raw, delivery_id])
        self._forget_if_empty(keys=[index, self._destinations_key], args=[entry.destination])
        return True

    def _newest(self, destination: str, since: float | None, limit: int | None) -> list[DeadLetterEntry]:
        # Pages through the index newest first until `limit` live entries are found, dropping the
        # members whose entry expired before their score said so.
        index = self._index_key(destination)
        self._redis.zremrangebyscore(index, "-inf", f"({self._cutoff()}")
        lower = "-inf" if since is None else since
        found: list[DeadLetterEntry] = []
        gone: list[str] = []
        offset = 0
        while limit is None or len(found) < limit:
            wanted = -1 if limit is None else limit - len(found)
            page = [as_text(member) for member in self._redis.zrevrangebyscore(index, "+inf", lower, offset, wanted)]
            if not page:
                break
            offset += len(page)
            for delivery_id, raw in zip(page, self._redis.mget([self._entry_key(i) for i in page]), strict=True):
                if raw is None:
                    gone.append(delivery_id)
                else:
                    found.append(_parse(raw))
            if limit is None:
                break
        if gone:
            self._redis.zrem(index, *gone)
        if gone or not found:
            self._forget_if_empty(keys=[index, self._destinations_key], args=[destination])
        return found

    def _names(self, destination: str | None) -> list[str]:
        return self.destinations() if destination is None else [destination]

    def _cutoff(self) -> float:
        return self._clock() - self.retention

    def _entry_key(self, delivery_id: str) -> str:
        return f"{self._prefix}entry:{delivery_id}"

    def _index_key(self, destination: str) -> str:
        return f"{self._prefix}index:{destination}"


def _parse(raw: bytes | str) -> DeadLetterEntry:
    data: dict[str, Any] = orjson.loads(raw)
    return DeadLetterEntry.from_dict(data)
