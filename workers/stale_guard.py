"""The stale guard: per (destination, uuid), never deliver an older version over a newer one.

Deliveries of one profile can overtake each other (a retry waits 30 s while the next change goes
straight through). Each destination remembers the newest version it received per uuid (the
record's ``lastUpdated``, or the time of a deletion); a delivery of an older version is dropped.
An equal version passes: it is the same state again, and receivers deduplicate it by id.
Two deliveries of one profile sent at the very same moment are not ordered by this guard.
"""

from __future__ import annotations

import hashlib

import redis

_PREFIX = "capture-relay:stale:"

# KEYS: the guard key. ARGV: version, ttl. Keeps the larger version; returns the stored one.
_RECORD = """
local stored = tonumber(redis.call('GET', KEYS[1]))
local version = tonumber(ARGV[1])
if stored == nil or version > stored then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return tostring(stored)
"""


class StaleGuard:
    """Remembers the newest version delivered per (destination, uuid) for ``ttl`` seconds."""

    def __init__(self, connection: redis.Redis, ttl: int) -> None:
        self._redis = connection
        self._ttl = ttl
        self._record = connection.register_script(_RECORD)

    def is_stale(self, destination: str, uuid: str, version: float | None) -> bool:
        """Whether ``destination`` already received a newer version of ``uuid``."""
        if version is None or not uuid:
            return False  # nothing to compare: deliver rather than guess
        stored = self._redis.get(self._key(destination, uuid))
        return stored is not None and float(stored) > version

    def record(self, destination: str, uuid: str, version: float | None) -> None:
        """Note that ``destination`` received ``version`` of ``uuid`` (an older one never lowers it)."""
        if version is None or not uuid:
            return
        self._record(keys=[self._key(destination, uuid)], args=[repr(version), self._ttl])

    @staticmethod
    def _key(destination: str, uuid: str) -> str:
        # Hashed: a uuid comes from a webhook, and key names should not depend on its shape.
        digest = hashlib.sha256(f"{destination}\0{uuid}".encode()).hexdigest()[:32]
        return f"{_PREFIX}{digest}"
