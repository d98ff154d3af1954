"""/healthz, /readyz, /metrics and /openapi.json on the real app."""

from __future__ import annotations

import time

import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from service.app import create_app
from service.intake import Intake
from service.metrics import QueueCollector
from tests.conftest import SettingsFactory
from tests.support.servers import JwksEndpoint
from tests.support.tokens import SigningKey, claims, sign


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_readyz_needs_redis_and_keys(make_settings: SettingsFactory, jwks: tuple[JwksEndpoint, str]) -> None:
    """Ready when Redis answers and the JWKS loads; 503 naming the JWKS when it cannot load."""
    with TestClient(create_app(make_settings())) as client:
        ready = client.get("/readyz")
    jwks[0].status = 503
    with TestClient(create_app(make_settings())) as client:
        not_ready = client.get("/readyz")

    assert ready.json() == {"status": "ready", "checks": {"redis": "ok", "jwks": "ok"}}
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["jwks"] == "unavailable"


def test_metrics_count_outcomes_and_read_the_queue(
    make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
) -> None:
    """Webhook outcomes, ingest latency, queue depth and oldest-job age appear on /metrics."""
    with TestClient(create_app(make_settings())) as client:
        token = sign(claims(), signing_key)
        for body in (token, token, "garbage"):
            client.post("/webhooks/capture/v3", content=body, headers={"Content-Type": "application/jwt"})
        time.sleep(0.05)
        response = client.get("/metrics")

    samples = _samples(response.text)
    assert response.headers["content-type"].startswith("text/plain")
    assert samples[("capture_relay_webhooks_received_total", (("outcome", "accepted"), ("source", "v3")))] == 1
    assert samples[("capture_relay_webhooks_received_total", (("outcome", "duplicate"), ("source", "v3")))] == 1
    assert samples[("capture_relay_webhooks_received_total", (("outcome", "malformed"), ("source", "v3")))] == 1
    assert samples[("capture_relay_webhook_rejections_total", (("reason", "token_malformed"), ("source", "v3")))] == 1
    assert samples[("capture_relay_ingest_duration_seconds_count", (("source", "v3"),))] == 3
    assert samples[("capture_relay_queue_depth", (("queue", "capture-events"),))] == 1
    assert samples[("capture_relay_queue_oldest_job_age_seconds", (("queue", "capture-events"),))] > 0
    assert samples[("capture_relay_queue_jobs", (("queue", "capture-events"), ("state", "failed")))] == 0


def test_healthz_and_request_id(make_settings: SettingsFactory) -> None:
    """Liveness checks nothing; a sane X-Request-Id is echoed, an unsafe one replaced."""
    with TestClient(create_app(make_settings())) as client:
        echoed = client.get("/healthz", headers={"X-Request-Id": "abc-123"})
        replaced = client.get("/healthz", headers={"X-Request-Id": "bad id;rm -rf"})

    assert echoed.json() == {"status": "ok"}
    assert echoed.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "bad id;rm -rf"


def test_openapi_document_lists_every_route(make_settings: SettingsFactory) -> None:
    """The OpenAPI document names each route with the answers the service gives."""
    with TestClient(create_app(make_settings())) as client:
        document = client.get("/openapi.json").json()

    assert set(document["paths"]) == {
        "/webhooks/capture/v3",
        "/webhooks/capture/legacy",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    answers = document["paths"]["/webhooks/capture/v3"]["post"]["responses"]
    assert {"200", "202", "400", "401", "413", "415", "503"} <= set(answers)


def test_live_workers_are_counted_and_dead_ones_are_not(redis_client: redis.Redis) -> None:
    """A registered worker counts while its key lives; one whose heartbeat expired does not."""
    registry = CollectorRegistry()
    registry.register(QueueCollector(redis_client, ["capture-events"]))
    queue = Queue("capture-events", connection=redis_client, serializer=JSONSerializer)
    alive, dead = (SimpleWorker([queue], connection=redis_client, serializer=JSONSerializer) for _ in range(2))
    alive.register_birth()  # type: ignore[no-untyped-call]
    dead.register_birth()  # type: ignore[no-untyped-call]
    assert registry.get_sample_value("capture_relay_workers", {"queue": "capture-events"}) == 2

    redis_client.delete(dead.key)  # what a SIGKILLed worker's expired heartbeat leaves behind

    assert registry.get_sample_value("capture_relay_workers", {"queue": "capture-events"}) == 1


def test_an_unexpected_failure_is_counted_logged_and_answered_500(
    make_settings: SettingsFactory, signing_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the intake path answers 500 (Capture retries), counted as outcome error and logged."""

    async def broken(self: Intake, events: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Intake, "submit", broken)
    with capture_logs() as logs, TestClient(create_app(make_settings()), raise_server_exceptions=False) as client:
        response = client.post(
            "/webhooks/capture/v3", content=sign(claims(), signing_key), headers={"Content-Type": "application/jwt"}
        )
        samples = _samples(client.get("/metrics").text)

    assert response.status_code == 500
    assert response.json() == {"status": "error", "reason": "internal_error"}
    assert samples[("capture_relay_webhooks_received_total", (("outcome", "error"), ("source", "v3")))] == 1
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["webhook.failed"]
