"""The Capture API call limiter on a real Redis: threads, processes, killed holders, rate, deadlines."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from multiprocessing.synchronize import Barrier, Event
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from capture_relay.embedded_redis import RedisServer
from workers.limits import CallLimiter, LimiterTimeoutError

LimiterFactory = Callable[..., CallLimiter]

# Counts the callers inside their slot and keeps the highest count, in one step as Redis sees it.
_ENTER = """
local inside = redis.call('INCR', KEYS[1])
if inside > tonumber(redis.call('GET', KEYS[2]) or 0) then
    redis.call('SET', KEYS[2], inside)
end
redis.call('INCR', KEYS[3])
return inside
"""


def redis_time(client: redis.Redis) -> float:
    """The server's clock in seconds: the clock the limiter itself reads."""
    seconds, micros = client.time()
    return seconds + micros / 1e6


def in_a_while(seconds: float = 10.0) -> float:
    """A deadline ``seconds`` from now."""
    return time.monotonic() + seconds


@pytest.fixture
def make_limiter(redis_client: redis.Redis) -> LimiterFactory:
    """Limiters on the private Redis: ``name="test"``, no rate and a 5 s lease unless overridden."""

    def factory(**overrides: Any) -> CallLimiter:
        options: dict[str, Any] = {"name": "test", "max_concurrency": 1, "rate": None, "lease": 5.0, **overrides}
        return CallLimiter(redis_client, **options)

    return factory


def _hammer(url: str, start: Barrier, calls: int) -> None:
    """Child process: take the shared limiter ``calls`` times, counting who is inside."""
    client = redis.Redis.from_url(url)
    limiter = CallLimiter(client, name="shared", max_concurrency=2, rate=None, lease=5.0)
    enter = client.register_script(_ENTER)
    start.wait(30)
    for _ in range(calls):
        with limiter.slot(deadline=in_a_while()):
            enter(keys=["test:inside", "test:max_inside", "test:calls"])
            time.sleep(0.003)
            client.decr("test:inside")
    client.close()


def _hold_until_killed(url: str, acquired: Event) -> None:
    """Child process: take the only slot, note when (Redis time), and never give it back."""
    client = redis.Redis.from_url(url)
    limiter = CallLimiter(client, name="killed", max_concurrency=1, rate=None, lease=1.0)
    with limiter.slot(deadline=in_a_while()):
        client.set("test:acquired_at", repr(redis_time(client)))
        acquired.set()
        time.sleep(60)


def test_threads_never_exceed_the_cap_and_reach_it(make_limiter: LimiterFactory) -> None:
    """16 threads x 20 calls through a cap of 3: at most 3 inside at once, and 3 are reached."""
    limiter = make_limiter(max_concurrency=3)
    lock = threading.Lock()
    inside, most = 0, 0

    def caller(seed: int) -> None:
        nonlocal inside, most
        rng = random.Random(seed)
        for _ in range(20):
            with limiter.slot(deadline=in_a_while()):
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(rng.uniform(0.005, 0.010))
                with lock:
                    inside -= 1

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(caller, seed) for seed in range(16)]:
            future.result()

    assert most == 3
    assert limiter.holders() == 0


def test_processes_share_one_cap(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    """Four spawned processes x 25 calls through a cap of 2: Redis never counts more than 2 inside."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(4)
    processes = [spawn.Process(target=_hammer, args=(redis_server.url, start, 25)) for _ in range(4)]

    for process in processes:
        process.start()
    for process in processes:
        process.join(30)

    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    assert int(redis_client.get("test:calls") or 0) == 100
    assert int(redis_client.get("test:max_inside") or 0) == 2


def test_slot_of_a_killed_holder_frees_when_its_lease_expires(
    redis_server: RedisServer, redis_client: redis.Redis, make_limiter: LimiterFactory
) -> None:
    """A holder SIGKILLed mid-call blocks the only slot until its 1 s lease runs out, and no longer."""
    limiter = make_limiter(name="killed", lease=1.0)
    spawn = multiprocessing.get_context("spawn")
    acquired = spawn.Event()
    holder = spawn.Process(target=_hold_until_killed, args=(redis_server.url, acquired))
    holder.start()
    try:
        assert acquired.wait(20)
        holder.kill()
        holder.join(5)

        with pytest.raises(LimiterTimeoutError) as early, limiter.slot(deadline=in_a_while(0.3)):
            pass
        with limiter.slot(deadline=in_a_while(3.0)):
            got_at = redis_time(redis_client)
    finally:
        holder.kill()
        holder.join(5)

    held_for = got_at - float(redis_client.get("test:acquired_at") or 0)
    assert early.value.reason == "concurrency"
    # The 1 s lease, less 20 ms for reading Redis time around it, and well before 2 s.
    assert 0.98 <= held_for <= 2.0


def test_rate_admits_no_more_than_burst_plus_rate_times_elapsed(
    make_limiter: LimiterFactory, redis_client: redis.Redis
) -> None:
    """40 calls from 4 threads at 20/s with burst 1: no window of the run holds more than the bucket allows."""
    limiter = make_limiter(max_concurrency=4, rate=20.0, burst=1)
    started: list[float] = []

    def caller() -> None:
        for _ in range(10):
            with limiter.slot(deadline=in_a_while()):
                started.append(redis_time(redis_client))

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(caller) for _ in range(4)]:
            future.result()

    # Times are read just after each acquisition, so two of them can be a few ms closer than the tokens were.
    slack = 0.02
    started.sort()
    excess = [
        (first, last)
        for first in range(len(started))
        for last in range(first, len(started))
        if last - first + 1 > 1 + 20.0 * (started[last] - started[first] + slack)
    ]
    assert len(started) == 40
    assert excess == []
    assert started[-1] - started[0] >= 39 / 20.0 - slack


def test_deadline_raises_with_the_concurrency_reason(make_limiter: LimiterFactory) -> None:
    """With the only slot held, a caller with a 0.2 s deadline gives up after about 0.2 s."""
    limiter = make_limiter(max_concurrency=1)

    with limiter.slot(deadline=in_a_while()):
        began = time.monotonic()
        with pytest.raises(LimiterTimeoutError) as caught, limiter.slot(deadline=began + 0.2):
            pass
        gave_up_after = time.monotonic() - began

    assert caught.value.reason == "concurrency"
    assert 0.2 <= gave_up_after < 0.4
    assert 0.15 <= caught.value.waited <= gave_up_after


def test_slot_is_released_when_the_call_raises(make_limiter: LimiterFactory) -> None:
    """An exception inside ``with slot()`` propagates, and the slot is free again at once."""
    limiter = make_limiter(max_concurrency=1)

    with pytest.raises(ValueError, match="capture said no"), limiter.slot(deadline=in_a_while()):
        raise ValueError("capture said no")

    assert limiter.holders() == 0
    with limiter.slot(deadline=time.monotonic()):
        assert limiter.holders() == 1


def test_rate_deadline_fails_fast_with_the_rate_reason(make_limiter: LimiterFactory) -> None:
    """At 1 call/s, a second call with a 0.2 s deadline is refused at once: its token is due too late."""
    limiter = make_limiter(max_concurrency=5, rate=1.0)
    with limiter.slot(deadline=in_a_while()):
        pass

    with pytest.raises(LimiterTimeoutError) as caught, limiter.slot(deadline=in_a_while(0.2)):
        pass

    assert caught.value.reason == "rate"
    assert caught.value.waited < 0.1
    assert limiter.holders() == 0


def test_holders_counts_live_slots_and_drops_expired_ones(make_limiter: LimiterFactory) -> None:
    """A slot past its 0.3 s lease stops counting and can be taken again, while a 5 s one still counts."""
    short = make_limiter(max_concurrency=2, lease=0.3)
    long = make_limiter(max_concurrency=2, lease=5.0)

    with capture_logs() as logs, ExitStack() as stack:
        stack.enter_context(short.slot(deadline=in_a_while()))
        stack.enter_context(long.slot(deadline=in_a_while()))
        both = short.holders()
        time.sleep(0.35)
        # Taken before anything else looks: the acquisition itself must see the expired lease.
        with short.slot(deadline=time.monotonic()):
            after_reuse = short.holders()
        after_expiry = short.holders()
    after_all = long.holders()

    assert (both, after_reuse, after_expiry, after_all) == (2, 2, 1, 0)
    assert [log["event"] for log in logs] == ["limiter.lease_expired"]


def test_idle_limiter_keys_expire(make_limiter: LimiterFactory, redis_client: redis.Redis) -> None:
    """Every key a limiter writes has a TTL no longer than the lease (or the rate's next token)."""
    limiter = make_limiter(max_concurrency=2, rate=5.0, lease=0.3)

    with limiter.slot(deadline=in_a_while()):
        with limiter.slot(deadline=in_a_while()):
            pass
        ttls = {key: redis_client.pttl(key) for key in redis_client.keys("capture-relay:limits:*")}

    assert set(ttls) == {b"capture-relay:limits:{test}:" + part for part in (b"holders", b"rate", b"wake")}
    assert all(0 < ttl <= 400 for ttl in ttls.values())


def test_waiter_takes_a_released_slot_at_once(make_limiter: LimiterFactory) -> None:
    """A waiter blocked on a full limiter is woken by the release, well before any poll would find it."""
    limiter = make_limiter(max_concurrency=1)
    holding = threading.Event()
    released_at: list[float] = []

    def holder() -> None:
        with limiter.slot(deadline=in_a_while()):
            holding.set()
            time.sleep(0.3)
            released_at.append(time.monotonic())

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(5)
    with limiter.slot(deadline=in_a_while()):
        acquired_at = time.monotonic()
    thread.join(5)

    assert acquired_at - released_at[0] < 0.05


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"max_concurrency": 0}, "max_concurrency=0", id="no-slots"),
        pytest.param({"rate": 0.0}, "rate=0.0", id="zero-rate"),
        pytest.param({"rate": 5.0, "burst": 0}, "burst=0", id="zero-burst"),
        pytest.param({"lease": 0.0}, "lease=0.0", id="zero-lease"),
        pytest.param({"name": ""}, "name is empty", id="no-name"),
    ],
)
def test_out_of_range_settings_are_refused(
    make_limiter: LimiterFactory, overrides: dict[str, Any], message: str
) -> None:
    """Each impossible setting is refused with its name and value."""
    with pytest.raises(ValueError, match=message):
        make_limiter(**overrides)


def test_a_replayed_acquisition_keeps_its_slot_instead_of_waiting(make_limiter: LimiterFactory) -> None:
    """redis-py may send the acquire script again after a lost reply; the token already holds a slot."""
    limiter = make_limiter(max_concurrency=1, rate=None)
    keys = [limiter._holders_key, limiter._rate_key]
    args: list[str | float] = ["token-1", 1, 5_000_000, 0, 1]

    first = limiter._acquire_script(keys=keys, args=args)
    replay = limiter._acquire_script(keys=keys, args=args)

    assert [int(part) for part in first] == [0, 0]
    assert [int(part) for part in replay] == [0, 0]
    assert limiter.holders() == 1


def test_a_failed_release_does_not_replace_the_calls_outcome(
    make_limiter: LimiterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Redis goes away after the call, the call's result stands; the lease frees the slot later."""
    limiter = make_limiter(max_concurrency=1, rate=None)

    def unavailable(**kwargs: Any) -> int:
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(limiter, "_release_script", unavailable)
    with capture_logs() as logs, limiter.slot(deadline=in_a_while()):
        result = "the answer"

    assert result == "the answer"
    assert [entry["event"] for entry in logs] == ["limiter.release_failed"]
    assert limiter.holders() == 1
