"""The atomic intake under failure and contention, on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
import redis
import redis.asyncio
from rq import Queue
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from capture_relay.embedded_redis import RedisServer
from service.app import create_app
from service.events import Event
from service.intake import Intake, IntakeUnavailableError, JobPolicy, dedup_key
from service.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.servers import serve_in_thread
from tests.support.tokens import SigningKey, claims, sign

pytestmark = pytest.mark.anyio

V3 = "/webhooks/capture/v3"
SET_TYPE = {"Content-Type": "application/secevent+jwt"}


def make_event(delivery_id: str = "d-1", event_id: str = "e-1") -> Event:
    """An envelope as the routes build it."""
    return Event(event_id=event_id, delivery_id=delivery_id, source="v3", type="entityUpdated",
                 entity_type="user", uuid="u-1", received_at=1.0)  # fmt: skip


@pytest.fixture
async def intake(
    make_settings: SettingsFactory, redis_server: RedisServer, redis_client: redis.Redis
) -> AsyncIterator[Intake]:
    """The intake on the private Redis with the default policy."""
    connection = redis.asyncio.Redis.from_url(redis_server.url)
    yield Intake(connection, JobPolicy.from_settings(make_settings()))
    await connection.aclose()


def _queue(connection: redis.Redis) -> Queue:
    return Queue("capture-events", connection=connection, serializer=JSONSerializer)


def _fail_at(position: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the script hit a failing command at ``position`` in the job's commands."""
    build = Intake._job_commands

    def with_failure(self: Intake, event: Event) -> list[tuple[object, ...]]:
        commands = build(self, event)
        commands.insert(position if position >= 0 else len(commands), (b"HSET", b"injected-failure"))
        return commands

    monkeypatch.setattr(Intake, "_job_commands", with_failure)


class TestAtomicity:
    async def test_failure_before_the_job_leaves_nothing(
        self, intake: Intake, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A command failing before the job is written leaves no marker and no job; the retry stores both."""
        event = make_event()
        _fail_at(0, monkeypatch)

        with pytest.raises(IntakeUnavailableError):
            await intake.submit([event])
        monkeypatch.undo()

        assert redis_client.exists(dedup_key(event)) == 0
        assert _queue(redis_client).count == 0
        assert (await intake.submit([event])).accepted == (event,)
        assert _queue(redis_client).job_ids == [event.job_id]
        assert redis_client.exists(dedup_key(event)) == 1

    async def test_failure_between_job_and_marker_leaves_no_marker(
        self, intake: Intake, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failure after the job, before its marker, never leaves a marker without a job: the
        queued job runs, and a retry is recognised by the job itself, not enqueued again."""
        event = make_event()
        _fail_at(-1, monkeypatch)

        with pytest.raises(IntakeUnavailableError):
            await intake.submit([event])
        monkeypatch.undo()
        retry = await intake.submit([event])

        assert redis_client.exists(dedup_key(event)) == 0
        assert retry.duplicates == (event,)
        assert _queue(redis_client).job_ids == [event.job_id]

    async def test_dropped_connection_is_retried_cleanly(self, intake: Intake, redis_client: redis.Redis) -> None:
        """Redis dropping every client connection before the write still ends with exactly one of each."""
        event = make_event()
        await intake.submit([make_event("warm-up", "warm-up")])

        killed = redis_client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]
        try:
            result = await intake.submit([event])
        except IntakeUnavailableError:
            result = await intake.submit([event])

        assert killed >= 1
        assert result.accepted == (event,)
        assert redis_client.exists(dedup_key(event)) == 1
        assert _queue(redis_client).job_ids == ["event-v3-warm-up", event.job_id]

    async def test_marker_and_job_written_together(self, intake: Intake, redis_client: redis.Redis) -> None:
        """After a submit the marker names the job, and the job is on the queue with rq's own fields."""
        event = make_event()

        await intake.submit([event])

        assert redis_client.get(dedup_key(event)) == event.job_id.encode()
        job = _queue(redis_client).jobs[0]
        assert (job.id, job.origin, job.get_status()) == (event.job_id, "capture-events", "queued")
        assert job.retries_left == 5

    async def test_same_event_new_delivery_is_not_enqueued_twice(
        self, intake: Intake, redis_client: redis.Redis
    ) -> None:
        """A redelivery of a queued event under a new jti does not overwrite or double-push its job."""
        first = make_event(delivery_id="d-1", event_id="e-1")
        again = make_event(delivery_id="d-2", event_id="e-1")

        await intake.submit([first])
        result = await intake.submit([again])

        assert result.duplicates == (again,)
        assert _queue(redis_client).count == 1

    async def test_builder_never_touches_redis(self, intake: Intake, redis_client: redis.Redis) -> None:
        """Building rq's commands does no I/O: the builder client points nowhere, yet submits work."""
        events = [make_event(f"d-{index}", f"e-{index}") for index in range(20)]

        result = await intake.submit(events)

        assert len(result.accepted) == 20
        assert _queue(redis_client).count == 20


class TestContention:
    async def test_fifty_concurrent_submits_one_job(self, intake: Intake, redis_client: redis.Redis) -> None:
        """Fifty concurrent submits of one event store exactly one job; the rest are duplicates."""
        event = make_event()

        results = await asyncio.gather(*(intake.submit([event]) for _ in range(50)))

        assert sum(len(result.accepted) for result in results) == 1
        assert sum(len(result.duplicates) for result in results) == 49
        assert _queue(redis_client).count == 1

    def test_fifty_concurrent_posts_of_one_token(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
    ) -> None:
        """Fifty concurrent HTTP posts of one token over real connections: one 202, 49 duplicates, one job."""
        token = sign(claims(), signing_key)

        async def fire(base_url: str) -> list[int]:
            async with httpx2.AsyncClient(base_url=base_url, limits=httpx2.Limits(max_connections=50)) as client:
                answers = await asyncio.gather(*(client.post(V3, content=token, headers=SET_TYPE) for _ in range(50)))
            return sorted(response.status_code for response in answers)

        with serve_in_thread(create_app(make_settings())) as base_url:
            codes = asyncio.run(fire(base_url))

        assert codes == [200] * 49 + [202]
        assert _queue(redis_client).count == 1


class TestRedisOutage:
    @pytest.fixture
    def own_redis(self) -> Iterator[RedisServer]:
        """A Redis of this test's own, so stopping it disturbs no other test."""
        with RedisServer() as server:
            yield server

    def test_stopped_redis_answers_503_then_recovers(
        self, make_settings: SettingsFactory, own_redis: RedisServer, signing_key: SigningKey
    ) -> None:
        """Redis down: webhooks 503 with Retry-After and /readyz 503; Redis back: accepted again."""
        settings: Settings = make_settings(redis_url=own_redis.url)

        with TestClient(create_app(settings)) as client:
            assert client.post(V3, content=sign(claims(), signing_key), headers=SET_TYPE).status_code == 202
            own_redis.stop()
            down = client.post(V3, content=sign(claims(), signing_key), headers=SET_TYPE)
            not_ready = client.get("/readyz")
            alive = client.get("/healthz")
            own_redis.start()
            back = client.post(V3, content=sign(claims(), signing_key), headers=SET_TYPE)
            ready = client.get("/readyz")

        assert down.status_code == 503
        assert down.json()["reason"] == "redis_unavailable"
        assert int(down.headers["Retry-After"]) > 0
        assert (not_ready.status_code, not_ready.json()["checks"]["redis"]) == (503, "unreachable")
        assert alive.status_code == 200
        assert back.status_code == 202
        assert ready.status_code == 200
