"""ApiCaller: shared call slots, retries with backoff until the deadline, and the Capture API metrics."""

from __future__ import annotations

import random

import httpx2
import pytest
import redis
from prometheus_client import CollectorRegistry

from tests.unit.capture.fakes import FakeClock, RecordingLimiter, Script
from workers.capture_calls import ApiCaller, CaptureApiMetrics, RetryPolicy
from workers.capture_errors import (
    CaptureApiError,
    CaptureError,
    CaptureHttpError,
    CaptureLimitError,
    CaptureUnavailableError,
)
from workers.limits import LimiterTimeoutError

ENDPOINT = "/entity"
SEED = 20240501
REQUESTS = "capture_relay_capture_api_requests_total"
DURATION_COUNT = "capture_relay_capture_api_request_duration_seconds_count"
IN_FLIGHT = "capture_relay_capture_api_in_flight"
SLOT_WAIT_COUNT = "capture_relay_capture_api_slot_wait_seconds_count"


def _limit_error(request_id: str = "a1b2c3d4e5f6g7h8") -> CaptureLimitError:
    return CaptureLimitError(endpoint=ENDPOINT, code=510, error="api_limit_error", request_token=request_id)


def _rejected() -> CaptureApiError:
    return CaptureApiError(endpoint=ENDPOINT, code=223, error="unknown_attribute")


def _request() -> httpx2.Request:
    return httpx2.Request("POST", "https://my-app.janraincapture.com/entity")


class Harness:
    """An ApiCaller on a fake clock, a seeded rng and a fresh metrics registry."""

    def __init__(self, *, deadline: float = 30.0, limiter: RecordingLimiter | None = None) -> None:
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.policy = RetryPolicy(deadline=deadline)
        self.caller = ApiCaller(
            policy=self.policy,
            limiter=limiter,
            metrics=CaptureApiMetrics(self.registry),
            sleep=self.clock.sleep,
            monotonic=self.clock.monotonic,
            rng=random.Random(SEED),
        )

    def count(self, outcome: str, endpoint: str = ENDPOINT) -> float:
        """Attempts counted with this outcome (0 when never counted)."""
        return self.registry.get_sample_value(REQUESTS, {"endpoint": endpoint, "outcome": outcome}) or 0.0

    def in_flight(self) -> float | None:
        """The in-flight gauge."""
        return self.registry.get_sample_value(IN_FLIGHT)

    def durations(self, endpoint: str = ENDPOINT) -> float:
        """How many attempts were timed."""
        return self.registry.get_sample_value(DURATION_COUNT, {"endpoint": endpoint}) or 0.0


@pytest.fixture
def harness() -> Harness:
    """The default harness: 30 s deadline, no limiter."""
    return Harness()


class TestRetries:
    def test_success_on_the_first_try(self, harness: Harness) -> None:
        """A successful attempt is returned at once, without any wait."""
        attempt = Script("record")

        result = harness.caller.call(ENDPOINT, attempt)

        assert result == "record"
        assert attempt.calls == 1
        assert harness.clock.sleeps == []

    def test_retryable_failures_then_success(self, harness: Harness) -> None:
        """Retryable errors are retried after growing waits, each within [ceiling/2, ceiling]."""
        attempt = Script(_limit_error(), _limit_error(), _limit_error(), "record")

        result = harness.caller.call(ENDPOINT, attempt)

        assert result == "record"
        assert attempt.calls == 4
        sleeps = harness.clock.sleeps
        assert len(sleeps) == 3
        for failures, slept in enumerate(sleeps, start=1):
            ceiling = 0.25 * 2 ** (failures - 1)
            assert ceiling / 2 <= slept <= ceiling
        assert sleeps == sorted(sleeps)
        assert sleeps[0] < sleeps[-1]

    def test_backoff_is_capped_by_max_delay(self) -> None:
        """Past the cap every wait stays within [max_delay/2, max_delay]."""
        policy = RetryPolicy(base_delay=0.25, max_delay=8.0)
        rng = random.Random(SEED)

        waits = [policy.backoff(failures, rng) for failures in range(1, 21)]

        assert all(4.0 <= wait <= 8.0 for wait in waits[6:])
        assert 0.125 <= waits[0] <= 0.25

    def test_backoff_is_jittered(self) -> None:
        """Waits after the same number of failures differ (equal jitter), so workers do not retry in step."""
        policy = RetryPolicy(base_delay=0.25, max_delay=8.0)
        rng = random.Random(SEED)

        waits = {policy.backoff(3, rng) for _ in range(20)}

        assert len(waits) == 20
        assert all(0.5 <= wait <= 1.0 for wait in waits)

    def test_permanent_error_raises_at_once(self, harness: Harness) -> None:
        """A permanent error surfaces after one attempt, unchanged, with no wait."""
        error = _rejected()
        attempt: Script[str] = Script(error, "never")

        with pytest.raises(CaptureApiError) as caught:
            harness.caller.call(ENDPOINT, attempt)

        assert caught.value is error
        assert attempt.calls == 1
        assert harness.clock.sleeps == []

    def test_gives_up_when_the_next_wait_passes_the_deadline(self) -> None:
        """The caller stops before a wait that would end past the deadline and raises the last error."""
        deadline = 3.0
        harness = Harness(deadline=deadline)
        errors = [_limit_error(f"t{n}") for n in range(50)]
        attempt: Script[str] = Script(*errors)
        # The same seed gives the same waits: replay them to know where the caller must stop.
        replay, expected_sleeps, elapsed = random.Random(SEED), list[float](), 0.0
        while True:
            wait = harness.policy.backoff(len(expected_sleeps) + 1, replay)
            if elapsed + wait >= deadline:
                break
            expected_sleeps.append(wait)
            elapsed += wait

        with pytest.raises(CaptureLimitError) as caught:
            harness.caller.call(ENDPOINT, attempt)

        assert harness.clock.sleeps == expected_sleeps
        assert attempt.calls == len(expected_sleeps) + 1
        assert caught.value is errors[attempt.calls - 1]
        assert sum(harness.clock.sleeps) < deadline

    def test_retry_after_is_honoured(self, harness: Harness) -> None:
        """A Retry-After longer than the backoff is waited in full."""
        error = CaptureHttpError(endpoint=ENDPOINT, http_status=429, retry_after=5.0)
        attempt = Script(error, "record")

        result = harness.caller.call(ENDPOINT, attempt)

        assert result == "record"
        assert harness.clock.sleeps == [5.0]

    def test_retry_after_shorter_than_backoff_does_not_shorten_it(self, harness: Harness) -> None:
        """The wait is at least the backoff even when the server asks for less."""
        error = CaptureHttpError(endpoint=ENDPOINT, http_status=503, retry_after=0.0)
        attempt = Script(error, "record")

        harness.caller.call(ENDPOINT, attempt)

        assert 0.125 <= harness.clock.sleeps[0] <= 0.25

    def test_retry_after_past_the_deadline_gives_up_at_once(self, harness: Harness) -> None:
        """When the server asks for a wait longer than the deadline, the error surfaces without waiting."""
        error = CaptureHttpError(endpoint=ENDPOINT, http_status=429, retry_after=120.0)
        attempt: Script[str] = Script(error, "record")

        with pytest.raises(CaptureHttpError) as caught:
            harness.caller.call(ENDPOINT, attempt)

        assert caught.value is error
        assert attempt.calls == 1
        assert harness.clock.sleeps == []


class TestTransportFailures:
    @pytest.mark.parametrize(
        ("failure", "reason"),
        [
            pytest.param(httpx2.ReadTimeout("read timed out", request=_request()), "timeout", id="read-timeout"),
            pytest.param(
                httpx2.ConnectTimeout("connect timed out", request=_request()), "connect_timeout", id="connect-to"
            ),
            pytest.param(httpx2.ConnectError("refused", request=_request()), "connect", id="connect-error"),
            pytest.param(httpx2.RemoteProtocolError("reset", request=_request()), "connection", id="reset"),
        ],
    )
    def test_become_unavailable_errors(self, failure: httpx2.TransportError, reason: str) -> None:
        """httpx timeouts and connection errors become CaptureUnavailableError with a reason, from the original."""
        harness = Harness(deadline=0.1)
        attempt: Script[str] = Script(failure)

        with pytest.raises(CaptureUnavailableError) as caught:
            harness.caller.call(ENDPOINT, attempt)

        assert caught.value.reason == reason
        assert caught.value.retryable is True
        assert caught.value.endpoint == ENDPOINT
        assert caught.value.__cause__ is failure

    def test_are_retried(self, harness: Harness) -> None:
        """A timeout and a refused connection are retried, and each attempt is counted with its reason."""
        attempt = Script(
            httpx2.ReadTimeout("read timed out", request=_request()),
            httpx2.ConnectError("refused", request=_request()),
            "record",
        )

        result = harness.caller.call(ENDPOINT, attempt)

        assert result == "record"
        assert attempt.calls == 3
        assert len(harness.clock.sleeps) == 2
        assert (harness.count("timeout"), harness.count("connect"), harness.count("ok")) == (1.0, 1.0, 1.0)


class TestLimiter:
    def test_attempt_runs_inside_a_slot_with_the_call_deadline(self) -> None:
        """The limiter is asked for a slot that must come before the call's deadline, and holds it during the call."""
        limiter = RecordingLimiter()
        harness = Harness(deadline=30.0, limiter=limiter)
        held_during_attempt: list[bool] = []

        def attempt() -> str:
            held_during_attempt.append(limiter.held)
            return "record"

        harness.caller.call(ENDPOINT, attempt)

        assert limiter.deadlines == [1030.0]
        assert held_during_attempt == [True]
        assert limiter.held is False

    def test_no_slot_becomes_unavailable_and_is_retried(self) -> None:
        """A LimiterTimeoutError is a retryable CaptureUnavailableError(no_slot); the next attempt may get a slot."""
        limiter = RecordingLimiter(LimiterTimeoutError("capture", waited=2.0, reason="concurrency"))
        harness = Harness(limiter=limiter)
        attempt = Script("record")

        result = harness.caller.call(ENDPOINT, attempt)

        assert result == "record"
        assert attempt.calls == 1
        assert len(limiter.deadlines) == 2
        assert (harness.count("no_slot"), harness.count("ok")) == (1.0, 1.0)

    def test_no_slot_until_the_deadline_raises_no_slot(self) -> None:
        """When no slot comes before the deadline the error has reason no_slot and names the limit."""
        limiter = RecordingLimiter(*[LimiterTimeoutError("capture", waited=1.0, reason="rate") for _ in range(50)])
        harness = Harness(deadline=1.0, limiter=limiter)
        attempt = Script("never")

        with pytest.raises(CaptureUnavailableError) as caught:
            harness.caller.call(ENDPOINT, attempt)

        assert caught.value.reason == "no_slot"
        assert "rate" in str(caught.value)
        assert isinstance(caught.value.__cause__, LimiterTimeoutError)
        assert attempt.calls == 0

    def test_limiter_redis_down_is_limiter_unavailable(self) -> None:
        """A Redis failure in the limiter becomes CaptureUnavailableError(limiter_unavailable), retried."""
        limiter = RecordingLimiter(redis.ConnectionError("Connection refused"))
        harness = Harness(limiter=limiter)
        attempt = Script("record")

        result = harness.caller.call(ENDPOINT, attempt)

        assert result == "record"
        assert harness.count("limiter_unavailable") == 1.0
        assert len(harness.clock.sleeps) == 1

    def test_limiter_redis_down_until_the_deadline(self) -> None:
        """When the limiter's Redis stays down the caller raises limiter_unavailable from the redis error."""
        cause = redis.ConnectionError("Connection refused")
        limiter = RecordingLimiter(*[cause for _ in range(50)])
        harness = Harness(deadline=0.5, limiter=limiter)

        with pytest.raises(CaptureUnavailableError) as caught:
            harness.caller.call(ENDPOINT, Script("never"))

        assert caught.value.reason == "limiter_unavailable"
        assert caught.value.__cause__ is cause


class TestMetrics:
    def test_each_attempt_is_counted_with_its_outcome(self, harness: Harness) -> None:
        """Two 510s, one 503 and a success give api_limit 2, http_5xx 1, ok 1, each timed once."""
        attempt = Script(_limit_error(), CaptureHttpError(endpoint=ENDPOINT, http_status=503), _limit_error(), "record")

        harness.caller.call(ENDPOINT, attempt)

        assert (harness.count("api_limit"), harness.count("http_5xx"), harness.count("ok")) == (2.0, 1.0, 1.0)
        assert harness.durations() == 4.0
        assert harness.registry.get_sample_value(SLOT_WAIT_COUNT) == 4.0

    def test_permanent_failure_is_counted(self, harness: Harness) -> None:
        """A rejected call is counted once as rejected and not as ok."""
        with pytest.raises(CaptureError):
            harness.caller.call(ENDPOINT, Script(_rejected()))

        assert (harness.count("rejected"), harness.count("ok")) == (1.0, 0.0)
        assert harness.durations() == 1.0

    def test_endpoints_are_counted_apart(self, harness: Harness) -> None:
        """The endpoint label separates calls."""
        harness.caller.call("/entity", Script("a"))
        harness.caller.call("/entity.find", Script("b"))
        harness.caller.call("/entity.find", Script("c"))

        assert (harness.count("ok", "/entity"), harness.count("ok", "/entity.find")) == (1.0, 2.0)
        assert (harness.durations("/entity"), harness.durations("/entity.find")) == (1.0, 2.0)

    def test_in_flight_during_the_call_and_back_to_zero(self, harness: Harness) -> None:
        """The gauge is 1 while the attempt runs and 0 after a success and after a failure."""
        seen: list[float | None] = []

        def succeed() -> str:
            seen.append(harness.in_flight())
            return "record"

        def fail() -> str:
            seen.append(harness.in_flight())
            raise _rejected()

        harness.caller.call(ENDPOINT, succeed)
        after_success = harness.in_flight()
        with pytest.raises(CaptureApiError):
            harness.caller.call(ENDPOINT, fail)

        assert seen == [1.0, 1.0]
        assert after_success == 0.0
        assert harness.in_flight() == 0.0

    def test_in_flight_back_to_zero_after_a_timeout(self) -> None:
        """A transport failure also releases the in-flight count."""
        harness = Harness(deadline=0.1)

        with pytest.raises(CaptureUnavailableError):
            harness.caller.call(ENDPOINT, Script(httpx2.ReadTimeout("slow", request=_request())))

        assert harness.in_flight() == 0.0
        assert harness.durations() == harness.count("timeout") >= 1.0

    def test_without_metrics(self) -> None:
        """An ApiCaller without metrics still retries and returns."""
        clock = FakeClock()
        caller = ApiCaller(policy=RetryPolicy(), sleep=clock.sleep, monotonic=clock.monotonic, rng=random.Random(1))

        result = caller.call(ENDPOINT, Script(_limit_error(), "record"))

        assert result == "record"
        assert len(clock.sleeps) == 1


class TestUntranslatedFailures:
    """httpx errors that are neither timeouts nor transport errors (a body that fails to decode)."""

    def test_decoding_error_becomes_a_capture_error(self, harness: Harness) -> None:
        """A response body that cannot be decoded surfaces as a CaptureError, like every other failure."""
        attempt: Script[str] = Script(httpx2.DecodingError("incorrect header check", request=_request()))

        with pytest.raises(CaptureError):
            harness.caller.call(ENDPOINT, attempt)

    def test_failed_attempt_is_not_counted_as_ok(self, harness: Harness) -> None:
        """An attempt that raised is never counted with outcome ok."""
        attempt: Script[str] = Script(httpx2.DecodingError("incorrect header check", request=_request()))

        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever it raises, the count is what is checked
            harness.caller.call(ENDPOINT, attempt)

        assert harness.count("ok") == 0.0
