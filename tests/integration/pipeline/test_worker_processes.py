"""The pipeline with real ``capture-relay worker`` processes: volume, and a worker killed mid-job."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
import redis
from rq.registry import StartedJobRegistry

from capture_relay.embedded_redis import RedisServer
from tests.support.pipeline import running_stack

EVERYWHERE = [{"name": "everything", "to": ["crm", "bus", "lake"]}]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_thousand_events_reach_three_destinations_once_each(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url, routes=EVERYWHERE) as stack:
        uuids = {stack.create({"email": f"bulk{n}@example.com"})["uuid"] for n in range(1000)}
        stack.wait_emitted(timeout=120)
        stack.start_worker("events", "--concurrency", "8")
        stack.start_worker("deliveries", "--concurrency", "8")
        stack.start_worker("deliveries", "--concurrency", "8")
        stack.wait_for(lambda: len(stack.receiver.requests) >= 3000 and stack.pending() == 0, 180, "3000 deliveries")
        received = list(stack.receiver.requests)

    ids = Counter(r.webhook_id for r in received)
    assert len(ids) == 3000
    assert max(ids.values()) == 1  # no delivery sent twice
    for path in ("/crm", "/bus", "/lake"):
        assert {r.payload["uuid"] for r in received if r.path == path} == uuids


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_job_of_a_killed_worker_is_delivered_by_another(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url) as stack:
        # Capture hangs: the first worker will be in the middle of the fetch when it is killed.
        stack.sim.faults({"rules": [{"kind": "delay", "seconds": 60, "paths": ["/entity"], "times": 1}]})
        uuid = stack.create({"email": "killed@example.com"})["uuid"]
        stack.wait_emitted()
        doomed = stack.start_worker("events", "--concurrency", "1")
        started = StartedJobRegistry(stack.settings.ingest.queue, connection=redis_client)
        stack.wait_for(lambda: started.count == 1, 30, "the first worker taking the job")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)

        stack.start_worker("events", "--concurrency", "2")
        stack.start_worker("deliveries")
        # The bound: the event is delivered by another worker within two minutes.
        stack.wait_for(lambda: stack.receiver.delivered("/crm"), 120, "the delivery after the kill")
        [received] = stack.receiver.delivered("/crm")

    assert received.payload["uuid"] == uuid
