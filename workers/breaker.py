"""A circuit breaker per destination, shared by every worker process through Redis.

While a destination is down, sending to it only burns attempts of its deliveries' retry schedules and
holds worker threads on timeouts. The breaker *opens* after ``consecutive_failures`` failures in a row,
or when at least ``min_attempts`` sends in the current window (a tumbling window of ``window``
seconds) failed at ``failure_ratio`` or more. While open, ``admit()`` says no and for how long, and
the delivery engine reschedules instead of sending. Once ``open_for`` has passed the breaker is
*half-open*: one caller at a time is let through as a probe; its success closes the breaker, its
failure opens it again for ``open_for``.

All state lives in one hash per destination, ``capture-relay:breaker:<destination>``, changed only by
Lua scripts that read the server's clock (``TIME``), so the pods' clocks never matter. Fields (times
in µs of Redis time; a missing hash is a closed breaker with nothing counted):

- ``open_until``: when the open period ends; absent or 0 while closed.
- ``probe_until``: when the current probe's lease ends. The probe slot is a lease, so a prober killed
  mid-send cannot wedge the breaker half-open: the next caller after the lease gets the probe.
- ``half_open``: set when the first probe after opening was granted (logged once per opening).
- ``consecutive``, ``window_start``, ``attempts``, ``failures``: the counts while closed.

While open, only a probe's outcome counts: sends admitted before the breaker opened may still come
back, and neither their failures (the breaker is open already) nor their successes (older news than
the failures that opened it) change anything. Every write refreshes the hash's TTL, so the breaker of
a destination removed from the config disappears.

The caller whose record or admission changed the state logs it, once: ``breaker.opened`` (reason
``consecutive_failures``, ``failure_ratio`` or ``probe_failed``), ``breaker.half_open`` and
``breaker.closed`` (reason ``probe_succeeded``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import redis
import structlog

from service.destination_config import BreakerSettings
from service.redistext import as_text
from workers.redis_clock import LUA_NOW

log = structlog.get_logger(__name__)

BreakerState = Literal["closed", "half_open", "open"]

KEY_PREFIX = "capture-relay:breaker:"
# An idle breaker's hash lasts at least this long (and at least twice its longest period).
_IDLE_TTL = 86400.0
# How long callers turned away during a probe wait before they ask again, at most.
_PROBE_RETRY = 1.0

# KEYS: the hash. ARGV: probe lease (µs), probe retry (µs), TTL (ms).
# Returns {allowed, probe, µs to wait, 1 if this admission made the breaker half-open}.
_ADMIT = (
    LUA_NOW
    + """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or 0)
if open_until == 0 then
    return {1, 0, 0, 0}
end
if now < open_until then
    return {0, 0, open_until - now, 0}
end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or 0)
if probe_until > now then
    return {0, 0, math.min(probe_until - now, tonumber(ARGV[2])), 0}
end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[1]))
local first = redis.call('HSETNX', KEYS[1], 'half_open', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, 1, 0, first}
"""
)

# KEYS: the hash. ARGV: succeeded (0/1), probe (0/1), consecutive_failures, failure_ratio, window (µs),
# min_attempts, open_for (µs), TTL (ms). Returns {transition, reason}: "opened"/"closed" or "" for none.
_RECORD = (
    LUA_NOW
    + """
local key, succeeded, probe = KEYS[1], ARGV[1] == '1', ARGV[2] == '1'
local function open()
    redis.call('HSET', key, 'open_until', now + tonumber(ARGV[7]), 'probe_until', 0,
        'consecutive', 0, 'attempts', 0, 'failures', 0, 'window_start', now)
    redis.call('HDEL', key, 'half_open')
    redis.call('PEXPIRE', key, ARGV[8])
end
local open_until = tonumber(redis.call('HGET', key, 'open_until') or 0)
if open_until > 0 then
    if not probe then
        return {'', ''}
    end
    if succeeded then
        redis.call('DEL', key)
        return {'closed', 'probe_succeeded'}
    end
    open()
    if now < open_until then
        return {'', ''}  -- another probe failed first and re-opened it already
    end
    return {'opened', 'probe_failed'}
end
if now - tonumber(redis.call('HGET', key, 'window_start') or 0) >= tonumber(ARGV[5]) then
    redis.call('HSET', key, 'window_start', now, 'attempts', 0, 'failures', 0)
end
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
if succeeded then
    redis.call('HSET', key, 'consecutive', 0)
    redis.call('PEXPIRE', key, ARGV[8])
    return {'', ''}
end
local consecutive = redis.call('HINCRBY', key, 'consecutive', 1)
local failures = redis.call('HINCRBY', key, 'failures', 1)
if consecutive >= tonumber(ARGV[3]) then
    open()
    return {'opened', 'consecutive_failures'}
end
if attempts >= tonumber(ARGV[6]) and failures / attempts >= tonumber(ARGV[4]) then
    open()
    return {'opened', 'failure_ratio'}
end
redis.call('PEXPIRE', key, ARGV[8])
return {'', ''}
"""
)

# KEYS: the hash. Frees the probe slot of a breaker that is (still) open, without an outcome.
_RELEASE_PROBE = """
if redis.call('HEXISTS', KEYS[1], 'open_until') == 1 then
    redis.call('HSET', KEYS[1], 'probe_until', 0)
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Admission:
    """The breaker's answer to "may I send now?".

    Attributes:
        allowed: send now.
        probe: this send is the half-open probe; report its outcome with ``probe=True``.
        retry_in: when not allowed, seconds until asking again is worthwhile; 0 when allowed.
    """

    allowed: bool
    probe: bool
    retry_in: float


class CircuitBreaker:
    """The breaker of one destination; every object with the same destination shares its state.

    Args:
        connection: the Redis client.
        destination: the destination's name in the config.
        settings: its thresholds and open period.
        probe_lease: seconds the probe slot is held if its outcome is never recorded (a killed
            worker); default ``open_for``. It should outlast one send, timeout included.
        key_prefix: prefix of the Redis key.

    Raises:
        ValueError: when ``probe_lease`` is not positive.
    """

    def __init__(
        self,
        connection: redis.Redis,
        destination: str,
        settings: BreakerSettings,
        *,
        probe_lease: float | None = None,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        lease = settings.open_for if probe_lease is None else probe_lease
        if not lease > 0:
            raise ValueError(f"probe_lease={probe_lease!r} for the breaker of {destination!r}; it must be > 0 s")
        self.destination = destination
        self._key_prefix = key_prefix
        self._key = key_prefix + destination
        ttl = max(_IDLE_TTL, 2 * (settings.window + settings.open_for + lease))
        self._admit_args = [_us(lease), _us(min(_PROBE_RETRY, lease)), round(ttl * 1000)]
        self._record_args: list[str | float] = [
            settings.consecutive_failures,
            settings.failure_ratio,
            _us(settings.window),
            settings.min_attempts,
            _us(settings.open_for),
            round(ttl * 1000),
        ]
        self._open_for = settings.open_for
        self._admit_script = connection.register_script(_ADMIT)
        self._record_script = connection.register_script(_RECORD)
        self._release_script = connection.register_script(_RELEASE_PROBE)
        self._redis = connection

    def admit(self) -> Admission:
        """Whether a send may go now: always while closed, one probe at a time once half-open."""
        allowed, probe, wait_us, became_half_open = (
            int(part) for part in self._admit_script(keys=[self._key], args=self._admit_args)
        )
        if became_half_open:
            log.info("breaker.half_open", destination=self.destination)
        return Admission(allowed=bool(allowed), probe=bool(probe), retry_in=wait_us / 1e6)

    def record_success(self, probe: bool) -> None:
        """Count a successful send; a probe's success closes the breaker and clears its counts."""
        self._record(succeeded=True, probe=probe)

    def record_failure(self, probe: bool) -> None:
        """Count a failed send; may open the breaker (a probe's failure always re-opens it)."""
        self._record(succeeded=False, probe=probe)

    def release_probe(self) -> None:
        """Give the probe slot back unused (the probe was never sent), so the next caller may probe.

        Recording an outcome instead would be wrong: a success closes the breaker, a failure re-opens
        it, and neither happened. Nothing changes while the breaker is closed.
        """
        self._release_script(keys=[self._key])

    def state(self) -> BreakerState:
        """The state now: ``half_open`` once the open period has passed and until a probe decides."""
        return breaker_states(self._redis, [self.destination], key_prefix=self._key_prefix)[self.destination]

    def _record(self, *, succeeded: bool, probe: bool) -> None:
        args = [int(succeeded), int(probe), *self._record_args]
        transition, reason = (as_text(part) for part in self._record_script(keys=[self._key], args=args))
        if transition == "opened":
            log.warning("breaker.opened", destination=self.destination, reason=reason, retry_in=self._open_for)
        elif transition == "closed":
            log.info("breaker.closed", destination=self.destination, reason=reason)


def breaker_states(
    connection: redis.Redis, destinations: Iterable[str], *, key_prefix: str = KEY_PREFIX
) -> dict[str, BreakerState]:
    """The state of each destination's breaker, read in one round trip (for the breaker-state gauge)."""
    names = list(destinations)
    pipe = connection.pipeline(transaction=False)
    pipe.time()
    for name in names:
        pipe.hget(key_prefix + name, "open_until")
    (seconds, micros), *open_untils = pipe.execute()
    now = int(seconds) * 1_000_000 + int(micros)
    return {name: _state(now, open_until) for name, open_until in zip(names, open_untils, strict=True)}


def _state(now: int, open_until: bytes | str | None) -> BreakerState:
    until = int(float(open_until or 0))
    if until == 0:
        return "closed"
    return "open" if now < until else "half_open"


def _us(seconds: float) -> int:
    return round(seconds * 1e6)
