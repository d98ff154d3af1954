"""The atomic intake under failure and contention, on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from capture_relay.embedded_redis import RedisServer
from service.app import create_app
from service.events import Event
from service.intake import Intake, JobPolicy, dedup_key
from service.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.servers import serve_in_thread
from tests.support.tokens import SigningKey, claims, sign

V3 = "/webhooks/capture/v3"
SET_TYPE = {"Content-Type": "application/secevent+jwt"}


def make_event(delivery_id: str = "d-1", event_id: str = "e-1") -> Event:
    """An envelope as the routes build it."""
    return Event(event_id=event_id, delivery_id=delivery_id, source="v3", type="entityUpdated",
                 entity_type="user", uuid="u-1", received_at=1.0)  # fmt: skip


@pytest.fixture
def intake(make_settings: SettingsFactory, redis_client: redis.Redis) -> Intake:
    """The intake on the private Redis with the default policy."""
    return Intake(redis_client, JobPolicy.from_settings(make_settings()))


def _queue(connection: redis.Redis) -> Queue:
    return Queue("capture-events", connection=connection, serializer=JSONSerializer)


class TestAtomicity:
    def test_failure_between_marker_and_job_leaves_neither(
        self, intake: Intake, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash after the marker is written into the transaction but before the job leaves no marker."""
        event = make_event()

        def crash(*args: object, **kwargs: object) -> None:
            raise ConnectionResetError("injected: process died mid-transaction")

        monkeypatch.setattr(Intake, "_enqueue", crash)
        with pytest.raises(ConnectionResetError):
            intake.submit([event])
        monkeypatch.undo()

        assert redis_client.exists(dedup_key(event)) == 0
        assert _queue(redis_client).count == 0
        assert intake.submit([event]).accepted == (event,)
        assert _queue(redis_client).count == 1

    def test_connection_killed_before_exec_is_retried_cleanly(
        self, intake: Intake, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Redis dropping the connection just before EXEC writes nothing; the retry stores exactly one of each."""
        event = make_event()
        original = redis.client.Pipeline.execute
        kills: list[int] = []

        def execute_after_kill(pipe: redis.client.Pipeline, raise_on_error: bool = True) -> object:
            if not kills:
                kills.append(
                    redis_client.execute_command(  # type: ignore[no-untyped-call]
                        "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
                    )
                )
            return original(pipe, raise_on_error)

        monkeypatch.setattr(redis.client.Pipeline, "execute", execute_after_kill)
        result = intake.submit([event])
        monkeypatch.undo()

        assert kills[0] >= 1
        assert result.accepted == (event,)
        assert redis_client.exists(dedup_key(event)) == 1
        assert _queue(redis_client).job_ids == [event.job_id]

    def test_marker_and_job_written_together(self, intake: Intake, redis_client: redis.Redis) -> None:
        """After a submit the marker names the job, and the job is on the queue."""
        event = make_event()

        intake.submit([event])

        assert redis_client.get(dedup_key(event)) == event.job_id.encode()
        assert _queue(redis_client).job_ids == [event.job_id]

    def test_same_event_new_delivery_is_not_enqueued_twice(self, intake: Intake, redis_client: redis.Redis) -> None:
        """A redelivery of a queued event under a new jti does not overwrite or double-push its job."""
        first = make_event(delivery_id="d-1", event_id="e-1")
        again = make_event(delivery_id="d-2", event_id="e-1")

        intake.submit([first])
        result = intake.submit([again])

        assert result.duplicates == (again,)
        assert _queue(redis_client).count == 1


class TestContention:
    def test_fifty_threads_one_event_one_job(self, intake: Intake, redis_client: redis.Redis) -> None:
        """Fifty concurrent submits of one event store exactly one job; the rest are duplicates."""
        event = make_event()

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(lambda _: intake.submit([event]), range(50)))

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
