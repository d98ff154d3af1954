"""The stale guard: never deliver an older version of a profile over a newer one.

Deliveries of one profile can overtake each other (a retry waits 30 s while the next change
goes straight through). For each destination the guard remembers the newest version delivered
per route and profile (the record's ``lastUpdated``): a delivery of an older version is dropped.
Per route, because two routes to one destination can carry different attributes, and a newer
delivery of one route says nothing about the other's. A deletion outranks everything: once it
is delivered, no route delivers that profile to that destination again (uuids are not reused).
An equal version passes: it is the same state again, and receivers deduplicate it by id.

Check and send must not interleave with another delivery of the same profile to the same
destination, or both would pass the check and the older could land last. So a delivery holds
a lease on (destination, uuid) from the check until its outcome is recorded; another delivery
of that profile finds it ``busy`` and waits. The lease expires on its own if its holder dies.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import redis

from service.redistext import as_text

_PREFIX = "capture-relay:stale:"

# KEYS: route version, deletion marker, lease. ARGV: version ('' if unknown), token, lease ms.
# Returns {outcome, ms until the lease frees}.
_CLAIM = """
if ARGV[1] ~= '' then
  local version = tonumber(ARGV[1])
  local newest = math.max(tonumber(redis.call('GET', KEYS[1]) or '-1'), tonumber(redis.call('GET', KEYS[2]) or '-1'))
  if newest > version then return {'stale', 0} end
end
if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {'go', 0} end
return {'busy', redis.call('PTTL', KEYS[3])}
"""

# KEYS: route version, deletion marker, lease. ARGV: token, version ('' = nothing delivered),
# '1' for a deletion, ttl. Records the version (never lowering it) and frees our own lease only.
_RELEASE = """
if ARGV[2] ~= '' then
  local key = ARGV[3] == '1' and KEYS[2] or KEYS[1]
  local stored = tonumber(redis.call('GET', key))
  if stored == nil or tonumber(ARGV[2]) > stored then
    redis.call('SET', key, ARGV[2], 'EX', ARGV[4])
  else
    redis.call('EXPIRE', key, ARGV[4])
  end
end
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
"""


_OUTCOMES: dict[str, Literal["go", "stale", "busy"]] = {"go": "go", "stale": "stale", "busy": "busy"}


@dataclass(slots=True)
class Hold:
    """The guard's answer for one delivery; ``delivered()`` records its version on release."""

    outcome: Literal["go", "stale", "busy"]
    # For ``busy``: seconds until the other delivery's lease runs out at the latest.
    retry_in: float = 0.0
    _delivered: bool = False

    def delivered(self) -> None:
        """Note that the destination accepted this version."""
        self._delivered = True


class StaleGuard:
    """Remembers the newest version delivered per (destination, route, uuid) for ``ttl`` seconds."""

    def __init__(self, connection: redis.Redis, ttl: int) -> None:
        self._ttl = ttl
        self._claim = connection.register_script(_CLAIM)
        self._release = connection.register_script(_RELEASE)

    @contextmanager
    def hold(
        self, destination: str, route: str, uuid: str, version: float | None, *, lease: float, deletion: bool
    ) -> Iterator[Hold]:
        """Check ``version`` and, if it may go, hold the profile's lease until the block ends.

        ``version`` None (unknown) is never stale; a delivery without a uuid (a test event) is
        not guarded at all.
        """
        if not uuid:
            yield Hold("go")
            return
        keys = _keys(destination, route, uuid)
        token = secrets.token_hex(8)
        given = "" if version is None else repr(version)
        answer, wait_ms = self._claim(keys=keys, args=[given, token, max(1, round(lease * 1000))])
        outcome = _OUTCOMES[as_text(answer)]
        hold = Hold(outcome, max(0, int(wait_ms)) / 1000)
        if hold.outcome != "go":
            yield hold
            return
        try:
            yield hold
        finally:
            recorded = given if hold._delivered else ""
            self._release(keys=keys, args=[token, recorded, "1" if deletion else "0", self._ttl])


def _keys(destination: str, route: str, uuid: str) -> list[str]:
    # Hashed: a uuid comes from a webhook, and key names should not depend on its shape.
    def key(*parts: str) -> str:
        return _PREFIX + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    return [key("route", destination, route, uuid), key("deleted", destination, uuid), key("lease", destination, uuid)]
