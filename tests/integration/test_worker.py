"""The worker consumes what the ingress stored: one queue, jobs run in-process, JSON payloads."""

from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from service.app import create_app
from tests.conftest import SettingsFactory
from tests.support.simulator import API_CLIENT, RunningSimulator
from tests.support.tokens import SigningKey, claims, sign
from workers import context
from workers.capture_api import CaptureClient
from workers.pipeline import process_event
from workers.runner import run_worker


def test_accepted_event_is_processed_by_a_burst_worker(
    make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
) -> None:
    """An event accepted over HTTP is run by `capture-relay worker` and finishes."""
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/webhooks/capture/v3",
            content=sign(claims(), signing_key),
            headers={"Content-Type": "application/secevent+jwt"},
        )
    event_id = response.json()["event_ids"][0]

    worked = run_worker(settings, queue=settings.ingest.queue, burst=True)

    job = Job.fetch(f"event-v3-{event_id}", connection=redis_client, serializer=JSONSerializer)
    assert worked
    assert job.get_status() == JobStatus.FINISHED
    # No route takes it: the settings have none.
    assert job.return_value() == "unrouted"
    assert Queue("capture-events", connection=redis_client, serializer=JSONSerializer).count == 0
    registry = context.current().metrics.registry
    assert (
        registry.get_sample_value(
            "capture_relay_events_processed_total", {"type": "entityUpdated", "outcome": "unrouted"}
        )
        == 1
    )


def test_process_event_counts_by_type(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    """The job target rebuilds the envelope and counts it by type and outcome."""
    registry = CollectorRegistry()
    envelope = {"event_id": "e", "delivery_id": "d", "source": "v3", "type": "entityDeleted",
                "entity_type": "user", "uuid": "u", "attributes": [], "received_at": 1.0}  # fmt: skip

    with context.open_context(make_settings(), redis_client, registry) as opened:
        context.install(opened)
        outcome = process_event(envelope)

    assert outcome == "unrouted"
    assert (
        registry.get_sample_value(
            "capture_relay_events_processed_total", {"type": "entityDeleted", "outcome": "unrouted"}
        )
        == 1
    )


def test_worker_opens_the_capture_client_when_configured(
    make_settings: SettingsFactory, redis_client: redis.Redis, capture_sim: RunningSimulator
) -> None:
    """With a ``capture:`` section the worker's context carries a client and its metrics are exported."""
    capture = {
        "base_url": capture_sim.url,
        "client_id": API_CLIENT.client_id,
        "client_secret": API_CLIENT.client_secret,
    }
    settings = make_settings(capture=capture)

    run_worker(settings, queue=settings.ingest.queue, burst=True)

    installed = context.current()
    assert isinstance(installed.capture, CaptureClient)
    assert installed.metrics.registry.get_sample_value("capture_relay_capture_api_in_flight") == 0


def test_worker_without_capture_has_no_client(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    settings = make_settings()

    run_worker(settings, queue=settings.ingest.queue, burst=True)

    assert context.current().capture is None


def test_the_concurrency_option_also_sizes_what_the_threads_share(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    """--concurrency overrides worker.concurrency everywhere, the sinks' connection pools included,
    so that no thread waits for a connection."""
    settings = make_settings()

    run_worker(settings, queue=settings.ingest.queue, burst=True, concurrency=3)

    assert context.current().settings.worker.concurrency == 3
