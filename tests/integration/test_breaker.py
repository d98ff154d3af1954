"""The per-destination circuit breaker on a real Redis: opening, probing, closing, shared state."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from capture_relay.embedded_redis import RedisServer
from service.destination_config import BreakerSettings
from workers.breaker import Admission, CircuitBreaker, breaker_states

BreakerFactory = Callable[..., CircuitBreaker]


@pytest.fixture
def make_breaker(redis_client: redis.Redis) -> BreakerFactory:
    """Breakers of destination ``crm`` on the private Redis; settings given as keywords."""

    def factory(destination: str = "crm", *, probe_lease: float | None = None, **settings: Any) -> CircuitBreaker:
        options: dict[str, Any] = {"consecutive_failures": 3, "min_attempts": 100, "open_for": 0.3, **settings}
        return CircuitBreaker(redis_client, destination, BreakerSettings(**options), probe_lease=probe_lease)

    return factory


def fail(breaker: CircuitBreaker, times: int) -> None:
    """Record ``times`` failed sends that were not probes."""
    for _ in range(times):
        breaker.record_failure(probe=False)


def open_and_wait(breaker: CircuitBreaker, open_for: float) -> None:
    """Open ``breaker`` (three failures in a row) and wait until it is half-open."""
    fail(breaker, 3)
    assert breaker.state() == "open"
    time.sleep(open_for + 0.05)


def test_a_new_breaker_is_closed_and_admits(make_breaker: BreakerFactory) -> None:
    """Nothing recorded yet: closed, and every send is allowed without being a probe."""
    breaker = make_breaker()

    admission = breaker.admit()

    assert breaker.state() == "closed"
    assert admission == Admission(allowed=True, probe=False, retry_in=0.0)


def test_opens_after_consecutive_failures(make_breaker: BreakerFactory) -> None:
    """Two failures keep it closed; the third in a row opens it and is logged once."""
    breaker = make_breaker(consecutive_failures=3)

    with capture_logs() as logs:
        fail(breaker, 2)
        before = breaker.state()
        fail(breaker, 1)

    assert before == "closed"
    assert breaker.state() == "open"
    assert [(log["event"], log["destination"], log["reason"]) for log in logs] == [
        ("breaker.opened", "crm", "consecutive_failures")
    ]


def test_a_success_resets_the_consecutive_count(make_breaker: BreakerFactory) -> None:
    """Failures broken up by a success never reach the consecutive threshold."""
    breaker = make_breaker(consecutive_failures=3)

    for _ in range(3):
        fail(breaker, 2)
        breaker.record_success(probe=False)

    assert breaker.state() == "closed"


def test_opens_on_the_failure_ratio_once_min_attempts_is_reached(make_breaker: BreakerFactory) -> None:
    """Alternating outcomes (50 % failures) open it at the 10th attempt, with ratio 0.5 and min_attempts 10."""
    breaker = make_breaker(consecutive_failures=100, failure_ratio=0.5, min_attempts=10, window=60)
    states = []

    with capture_logs() as logs:
        for _ in range(5):
            breaker.record_success(probe=False)
            breaker.record_failure(probe=False)
            states.append(breaker.state())

    assert states == ["closed"] * 4 + ["open"]
    assert [log["reason"] for log in logs if log["event"] == "breaker.opened"] == ["failure_ratio"]


def test_stays_closed_below_min_attempts(make_breaker: BreakerFactory) -> None:
    """Nine failures out of nine attempts do not open it when min_attempts is 10 (and the run limit is higher)."""
    breaker = make_breaker(consecutive_failures=100, failure_ratio=0.5, min_attempts=10)

    fail(breaker, 9)

    assert breaker.state() == "closed"
    assert breaker.admit().allowed


def test_the_ratio_window_starts_over_when_it_has_passed(make_breaker: BreakerFactory) -> None:
    """Failures of a window that has passed do not count towards the ratio of the next one."""
    breaker = make_breaker(consecutive_failures=100, failure_ratio=0.5, min_attempts=4, window=0.3)
    fail(breaker, 3)
    time.sleep(0.35)

    breaker.record_success(probe=False)
    breaker.record_success(probe=False)
    breaker.record_success(probe=False)
    breaker.record_failure(probe=False)

    # 1 failure of 4 attempts in this window: 0.25 < 0.5. Without the reset it would be 4 of 7.
    assert breaker.state() == "closed"


def test_open_breaker_refuses_with_the_time_left(make_breaker: BreakerFactory) -> None:
    """While open, admit() says no, not as a probe, with a wait no longer than open_for."""
    breaker = make_breaker(open_for=1.0)
    fail(breaker, 3)

    admission = breaker.admit()

    assert not admission.allowed
    assert not admission.probe
    assert 0 < admission.retry_in <= 1.0


def test_failures_while_open_do_not_extend_it(make_breaker: BreakerFactory) -> None:
    """Late failures of sends admitted before it opened leave the open period as it was."""
    breaker = make_breaker(open_for=0.3)
    fail(breaker, 3)
    time.sleep(0.2)

    fail(breaker, 5)
    time.sleep(0.15)

    assert breaker.state() == "half_open"


def test_exactly_one_probe_among_concurrent_callers(make_breaker: BreakerFactory) -> None:
    """Once open_for has passed, 20 threads admit at once and exactly one of them probes."""
    breaker = make_breaker(open_for=0.3)
    open_and_wait(breaker, 0.3)
    start = threading.Barrier(20)
    answers: list[Admission] = []
    lock = threading.Lock()

    def caller() -> None:
        start.wait(5)
        answer = breaker.admit()
        with lock:
            answers.append(answer)

    with capture_logs() as logs:
        threads = [threading.Thread(target=caller) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

    probes = [answer for answer in answers if answer.allowed]
    refused = [answer for answer in answers if not answer.allowed]
    assert len(answers) == 20
    assert [(answer.probe, answer.retry_in) for answer in probes] == [(True, 0.0)]
    assert all(not answer.probe and 0 < answer.retry_in <= 1.0 for answer in refused)
    assert breaker.state() == "half_open"
    assert [log["event"] for log in logs] == ["breaker.half_open"]


def test_probe_success_closes_and_resets_counts(make_breaker: BreakerFactory) -> None:
    """A successful probe closes the breaker; it then needs three new failures in a row to open."""
    breaker = make_breaker(open_for=0.3)
    open_and_wait(breaker, 0.3)
    probe = breaker.admit()

    with capture_logs() as logs:
        breaker.record_success(probe=probe.probe)
    after_close = breaker.state()
    fail(breaker, 2)

    assert probe.probe
    assert after_close == "closed"
    assert breaker.state() == "closed"
    assert breaker.admit() == Admission(allowed=True, probe=False, retry_in=0.0)
    assert [(log["event"], log["reason"]) for log in logs] == [("breaker.closed", "probe_succeeded")]


def test_probe_failure_reopens_for_open_for(make_breaker: BreakerFactory) -> None:
    """A failed probe opens the breaker again for a full open_for, then the next probe is allowed."""
    breaker = make_breaker(open_for=0.3)
    open_and_wait(breaker, 0.3)
    probe = breaker.admit()

    with capture_logs() as logs:
        breaker.record_failure(probe=probe.probe)
    refused = breaker.admit()
    time.sleep(0.35)
    second_probe = breaker.admit()

    assert probe.probe
    assert not refused.allowed
    assert 0.2 < refused.retry_in <= 0.3
    assert (second_probe.allowed, second_probe.probe) == (True, True)
    assert [(log["event"], log["reason"]) for log in logs] == [("breaker.opened", "probe_failed")]


def test_results_of_non_probes_while_half_open_change_nothing(make_breaker: BreakerFactory) -> None:
    """A late success of a send admitted before it opened does not close it; only the probe decides."""
    breaker = make_breaker(open_for=0.3)
    open_and_wait(breaker, 0.3)

    breaker.record_success(probe=False)

    assert breaker.state() == "half_open"


def test_an_expired_probe_lease_lets_another_probe_through(make_breaker: BreakerFactory) -> None:
    """A prober that never reports (a killed worker) holds the slot only for its 0.3 s lease."""
    breaker = make_breaker(open_for=0.2, probe_lease=0.3)
    open_and_wait(breaker, 0.2)

    with capture_logs() as logs:
        first = breaker.admit()
        during = breaker.admit()
        time.sleep(0.35)
        after = breaker.admit()

    assert first.probe
    assert not during.allowed
    assert 0 < during.retry_in <= 0.3
    assert (after.allowed, after.probe) == (True, True)
    # Half-open is announced once per opening, not once per probe.
    assert [log["event"] for log in logs] == ["breaker.half_open"]


def test_a_released_probe_slot_goes_to_the_next_caller(make_breaker: BreakerFactory) -> None:
    """A probe given back unsent leaves the breaker half-open and lets the next caller probe at once."""
    breaker = make_breaker(open_for=0.2, probe_lease=30.0)
    open_and_wait(breaker, 0.2)
    first = breaker.admit()

    breaker.release_probe()
    second = breaker.admit()

    assert first.probe
    assert (second.allowed, second.probe) == (True, True)
    assert breaker.state() == "half_open"


def test_breakers_with_the_same_destination_share_their_state(
    redis_server: RedisServer, make_breaker: BreakerFactory
) -> None:
    """Failures recorded through two connections add up, and both see it open and the one probe."""
    other_connection = redis.Redis.from_url(redis_server.url)
    settings = BreakerSettings(consecutive_failures=4, min_attempts=100, open_for=0.3)
    try:
        first = make_breaker(consecutive_failures=4, open_for=0.3)
        second = CircuitBreaker(other_connection, "crm", settings)
        fail(first, 2)
        fail(second, 2)
        seen_open = (first.state(), second.state())
        time.sleep(0.35)
        probes = [first.admit().probe, second.admit().probe]
    finally:
        other_connection.close()

    assert seen_open == ("open", "open")
    assert probes == [True, False]


def test_destinations_have_separate_breakers(make_breaker: BreakerFactory) -> None:
    """Failures of one destination leave another's breaker closed."""
    crm = make_breaker("crm")
    erp = make_breaker("erp")

    fail(crm, 3)

    assert crm.state() == "open"
    assert erp.state() == "closed"
    assert erp.admit().allowed


def test_breaker_states_reads_every_destination(make_breaker: BreakerFactory, redis_client: redis.Redis) -> None:
    """One call reports closed, open and half-open breakers, and closed for one never used."""
    make_breaker("crm", open_for=5.0).record_failure(probe=False)
    fail(make_breaker("erp", open_for=5.0), 3)
    fail(make_breaker("bus", open_for=0.2), 3)
    time.sleep(0.25)

    states = breaker_states(redis_client, ["crm", "erp", "bus", "unused"])

    assert states == {"crm": "closed", "erp": "open", "bus": "half_open", "unused": "closed"}


def test_breaker_keys_expire(make_breaker: BreakerFactory, redis_client: redis.Redis) -> None:
    """The hash a breaker writes has a TTL, so a removed destination's breaker disappears."""
    breaker = make_breaker(window=60, open_for=30)

    breaker.record_success(probe=False)
    closed_ttl = redis_client.ttl("capture-relay:breaker:crm")
    fail(breaker, 3)
    open_ttl = redis_client.ttl("capture-relay:breaker:crm")

    assert 0 < closed_ttl <= 86400
    assert 0 < open_ttl <= 86400


def test_an_idle_closed_breaker_writes_nothing(make_breaker: BreakerFactory, redis_client: redis.Redis) -> None:
    """admit() on a closed breaker is a read: no key appears until an outcome is recorded."""
    breaker = make_breaker()

    breaker.admit()

    assert redis_client.keys("capture-relay:breaker:*") == []


def test_a_non_positive_probe_lease_is_refused(make_breaker: BreakerFactory) -> None:
    """probe_lease=0 could never hold a probe; it is refused naming the value."""
    with pytest.raises(ValueError, match="probe_lease=0"):
        make_breaker(probe_lease=0)
