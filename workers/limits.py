"""A call limiter: one concurrency cap and one rate, shared by every worker process through Redis.

It keeps the calls of all workers together within a limit of the other side: the Capture API's (Capture answers
error 510 ``api_limit_error`` to too many *simultaneous* calls, and we also keep to a number of calls per second;
see ``workers.capture_setup``) and a destination's ``rate_limit`` (``workers.delivery``). Every attempt to get a
slot is one Lua script that reads the server's clock (``TIME``), so the clocks of the pods never matter. Keys
(``{name}`` is a Redis Cluster hash tag, so that one script's keys share a slot), each with a TTL that runs out once
the limiter is idle:

- ``<prefix>{name}:holders``: sorted set of holder tokens scored by lease expiry (µs, Redis time). A slot is a
  lease: the slot of a process killed mid-call stops counting when its lease expires.
- ``<prefix>{name}:rate``: the GCRA "theoretical arrival time" (µs): one token every ``1/rate`` seconds, at most
  ``burst`` at once. It is taken in the same script as the slot and only together with it, so neither a token
  nor a slot is held while waiting for the other.
- ``<prefix>{name}:wake``: a list that every release pushes to; a waiter blocked on it in BLPOP takes a freed
  slot at once instead of at its next poll.

Leases and call timeouts: a call that outlives its lease stops counting while it still runs, which lets one extra
caller in. That cannot happen while the caller abandons every call at its own timeout and the lease is longer than
that timeout with a margin (``workers.capture_setup`` uses three times the request timeout plus 5 s: connecting,
sending and the bounded read are each limited by it, and the process may pause between the end of the call and the
release; ``workers.delivery`` does the same with a destination's timeout). A release after its lease ran out is
logged as ``limiter.lease_expired``. An acquisition that redis-py retries after a lost reply reuses its token and is
recognised by the script, so it still holds one slot; when acquiring fails for good, the token is released anyway
in case a lost reply had granted it. A release that fails (Redis gone) is logged and leaves the slot to its lease.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import redis
import structlog

from workers.redis_clock import LUA_NOW

log = structlog.get_logger(__name__)

Reason = Literal["concurrency", "rate"]

# BLPOP times out on the server's clock tick (1/hz: 100 ms at the default hz 10), not on the dot, so a waiter
# only blocks when it can afford one tick before its deadline, and polls with sleeps for the rest.
_SERVER_TICK = 0.1
# Bounds the wait for a wake-up that never comes: a lease that expired, or a woken waiter that gave up.
_MAX_BLOCK = 0.5
# What the acquire script answers.
_ACQUIRED, _NO_SLOT, _NO_TOKEN = 0, 1, 2

# KEYS: holders, rate. ARGV: token, max_concurrency, lease (µs), interval (µs, 0 = no rate), burst.
# Returns {status, µs until the next token}; the slot is checked first so that a full limiter spends no token.
_ACQUIRE = (
    LUA_NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    return {0, 0}  -- a replay (redis-py retried after a lost reply): this token already holds a slot
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return {1, 0}
end
local interval = tonumber(ARGV[4])
if interval > 0 then
    local tat = math.max(tonumber(redis.call('GET', KEYS[2]) or 0), now) + interval
    local allowed_at = tat - tonumber(ARGV[5]) * interval
    if allowed_at > now then
        return {2, math.ceil(allowed_at - now)}
    end
    redis.call('SET', KEYS[2], tat, 'PX', math.ceil((tat - now) / 1000))
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last[2]) - now) / 1000))
return {0, 0}
"""
)

# KEYS: holders, wake. ARGV: token, max_concurrency, wake TTL (ms). Removes only this token; returns 0 when its
# lease had already run out. The wake-up is pushed either way: a spurious one costs a waiter one more attempt.
_RELEASE = (
    LUA_NOW
    + """
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if expiry and tonumber(expiry) > now then
    return 1
end
return 0
"""
)

# KEYS: holders.
_HOLDERS = LUA_NOW + "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\nreturn redis.call('ZCARD', KEYS[1])\n"


class LimiterTimeoutError(Exception):
    """No slot became free before the caller's deadline.

    Attributes:
        waited: seconds spent waiting.
        reason: the limit that was in the way last: ``"concurrency"`` or ``"rate"``.
    """

    def __init__(self, name: str, *, waited: float, reason: Reason) -> None:
        super().__init__(
            f"no slot for {name!r} before the deadline: waited {waited:.3f} s, "
            f"held back by the {reason} limit; raise it or give the call a later deadline"
        )
        self.name = name
        self.waited = waited
        self.reason: Reason = reason


class CallLimiter:
    """A concurrency cap and an optional rate limit on calls, shared through Redis by all processes.

    Args:
        redis: the client; its ``socket_timeout``, if any, must exceed half a second (waiters block in BLPOP).
        name: the limiter's name in its keys; every process that shares the limit uses the same one.
        max_concurrency: how many calls may run at once.
        rate: calls per second, or ``None`` for no rate limit.
        burst: how many calls may start at once after an idle spell; default ``max(1, ceil(rate))``.
        lease: seconds a slot lasts if its holder never releases it; must exceed the longest call.
        poll_interval: seconds between attempts when a waiter cannot block on a wake-up (near its deadline).
        key_prefix: prefix of the Redis keys.
        rng: source of the polling jitter; the default draws from the OS, so forked workers differ.

    Raises:
        ValueError: naming the argument that is out of range.
    """

    def __init__(
        self,
        redis: redis.Redis,
        *,
        name: str,
        max_concurrency: int,
        rate: float | None,
        burst: int | None = None,
        lease: float,
        poll_interval: float = 0.01,
        key_prefix: str = "capture-relay:limits:",
        rng: random.Random | None = None,
    ) -> None:
        if not name:
            raise ValueError("limiter name is empty; give every shared limit its own name")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency={max_concurrency!r} for limiter {name!r}; it must be at least 1")
        if rate is not None and not (0 < rate < math.inf):
            raise ValueError(f"rate={rate!r} for limiter {name!r}; use a positive number of calls per second")
        if burst is not None and burst < 1:
            raise ValueError(f"burst={burst!r} for limiter {name!r}; it must be at least 1")
        if not (0 < lease < math.inf and 0 < poll_interval < math.inf):
            raise ValueError(f"lease={lease!r}, poll_interval={poll_interval!r} for limiter {name!r}; both are > 0 s")
        self.name = name
        self.max_concurrency = max_concurrency
        self.lease = lease
        self._redis = redis
        self._poll_interval = poll_interval
        self._rng = rng or random.SystemRandom()
        self._interval_us = 0.0 if rate is None else 1e6 / rate
        self._burst = burst if burst is not None else (1 if rate is None else max(1, math.ceil(rate)))
        self._holders_key, self._rate_key, self._wake_key = (
            f"{key_prefix}{{{name}}}:{part}" for part in ("holders", "rate", "wake")
        )
        self._acquire_script = redis.register_script(_ACQUIRE)
        self._release_script = redis.register_script(_RELEASE)
        self._holders_script = redis.register_script(_HOLDERS)

    @contextmanager
    def slot(self, *, deadline: float) -> Iterator[None]:
        """Hold a slot for one call: wait for a rate token and a free slot, release the slot on exit.

        Args:
            deadline: a ``time.monotonic()`` value; one attempt is made even if it has passed.

        Raises:
            LimiterTimeoutError: when no slot is free by the deadline, or the rate makes that certain.
            redis.RedisError: from the client, untranslated.
        """
        token = secrets.token_hex(8)
        try:
            self._acquire(token, deadline)
        except BaseException:
            # A lost reply may have left this token holding a slot nobody will use: give it back.
            self._release(token, time.monotonic(), quiet=True)
            raise
        acquired_at = time.monotonic()
        try:
            yield
        finally:
            self._release(token, acquired_at)

    def holders(self) -> int:
        """The number of live slots, after dropping those whose lease expired."""
        return int(self._holders_script(keys=[self._holders_key]))

    def _acquire(self, token: str, deadline: float) -> None:
        started = time.monotonic()
        args: list[str | float] = [token, self.max_concurrency, round(self.lease * 1e6), self._interval_us, self._burst]
        while True:
            status, wait_us = (
                int(part) for part in self._acquire_script(keys=[self._holders_key, self._rate_key], args=args)
            )
            if status == _ACQUIRED:
                return
            reason: Reason = "rate" if status == _NO_TOKEN else "concurrency"
            now = time.monotonic()
            # Token times only move later as others take tokens, so a token due after the deadline is a sure miss.
            if now + wait_us / 1e6 >= deadline:
                raise LimiterTimeoutError(self.name, waited=now - started, reason=reason)
            self._wait(reason, wait_us / 1e6, deadline - now)

    def _wait(self, reason: Reason, token_due: float, remaining: float) -> None:
        jitter = self._rng.uniform(0, self._poll_interval / 2)
        if reason == "rate":
            # Jitter spreads the waiters that were all told the same instant.
            time.sleep(min(token_due + jitter, remaining))
            return
        block = min(_MAX_BLOCK, remaining - _SERVER_TICK)
        if block >= _SERVER_TICK:
            self._redis.blpop([self._wake_key], timeout=block)
        else:
            time.sleep(min(self._poll_interval + jitter, remaining))

    def _release(self, token: str, acquired_at: float, *, quiet: bool = False) -> None:
        wake_ttl_ms = max(1, round(self.lease * 1000))
        try:
            in_time = self._release_script(
                keys=[self._holders_key, self._wake_key], args=[token, self.max_concurrency, wake_ttl_ms]
            )
        except redis.RedisError as exc:
            # The call itself is over: its outcome must not be replaced by a Redis error. The slot
            # stays taken until its lease runs out.
            log.warning("limiter.release_failed", limiter=self.name, reason=type(exc).__name__)
            return
        if not in_time and not quiet:
            held = round(time.monotonic() - acquired_at, 3)
            log.warning("limiter.lease_expired", limiter=self.name, held=held, lease=self.lease)
