"""The Capture API client against the simulator over real HTTP: every endpoint, the three auth
modes, every error class, retries under injected 510s and 500s, and shared limits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from capture_relay.embedded_redis import free_port
from tests.support.simulator import RunningSimulator, capture_config, running_simulator
from workers.capture_api import CaptureClient
from workers.capture_calls import CaptureApiMetrics
from workers.capture_errors import (
    CaptureApiError,
    CaptureAuthError,
    CaptureHttpError,
    CaptureLimitError,
    CaptureOutcomeUnknownError,
    CaptureProtocolError,
    CaptureUnavailableError,
    RecordNotFoundError,
)
from workers.capture_setup import capture_client

OpenClient = Callable[..., AbstractContextManager[CaptureClient]]


@pytest.fixture
def open_client(capture_sim: RunningSimulator, redis_client: redis.Redis) -> OpenClient:
    """Open a client of the running simulator with ``capture:`` overrides."""

    @contextmanager
    def open_(*, registry: CollectorRegistry | None = None, **overrides: Any) -> Iterator[CaptureClient]:
        config = capture_config(capture_sim.url, **overrides)
        metrics = CaptureApiMetrics(registry) if registry is not None else None
        with capture_client(config, connection=redis_client, metrics=metrics) as client:
            yield client

    return open_


def new_user(sim: RunningSimulator, **attributes: Any) -> dict[str, Any]:
    """A profile created in the simulator the way Capture users appear: through its own store."""
    record: dict[str, Any] = sim.sim.store.create("user", attributes)
    return record


# -- every endpoint, every auth mode ------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "signed", "params"])
def test_entity_by_uuid_id_and_key_in_every_auth_mode(
    capture_sim: RunningSimulator, open_client: OpenClient, auth: str
) -> None:
    user = new_user(capture_sim, email="ada@example.com", givenName="Ada")
    with open_client(auth=auth) as client:
        by_uuid = client.entity(uuid=user["uuid"])
        by_id = client.entity(id=user["id"])
        by_key = client.entity(key=("email", "ada@example.com"))
        subset = client.entity(uuid=user["uuid"], attributes=["email", "lastUpdated"])
    assert by_uuid["email"] == by_id["email"] == by_key["email"] == "ada@example.com"
    assert by_uuid["uuid"] == by_key["uuid"] == user["uuid"]
    assert set(subset) == {"email", "lastUpdated"}
    recent = capture_sim.stats()["recent"]
    assert {call["auth"] for call in recent} == {auth}


def test_find_pages_on_id_through_every_record(capture_sim: RunningSimulator, open_client: OpenClient) -> None:
    for n in range(23):
        new_user(capture_sim, email=f"user{n}@example.com", givenName="Grace" if n % 2 else "Alan")
    with open_client() as client:
        page = client.find(filter="givenName = 'Grace'", max_results=5, show_total_count=True, sort_on=["-id"])
        everyone = list(client.find_all(attributes=["email"], page_size=5))
        graces = list(client.find_all(filter="givenName = 'Grace'", page_size=4))
    assert page.result_count == 5
    assert page.total_count == 11
    assert [r["id"] for r in page.results] == sorted((r["id"] for r in page.results), reverse=True)
    assert len(everyone) == 23
    assert [r["id"] for r in everyone] == sorted(r["id"] for r in everyone)
    assert {r["email"] for r in everyone} == {f"user{n}@example.com" for n in range(23)}
    assert len(graces) == 11
    assert all(r["givenName"] == "Grace" for r in graces)
    # 23 records in pages of 5: five pages, the last one short.
    assert capture_sim.stats()["calls"]["/entity.find"] == 1 + 5 + 3


def test_version_returns_the_record_as_it_was(capture_sim: RunningSimulator, open_client: OpenClient) -> None:
    user = new_user(capture_sim, email="old@example.com")
    between = datetime.now(UTC)
    capture_sim.sim.store.update("user", user["uuid"], {"email": "new@example.com"})
    with open_client() as client:
        before = client.version(user["id"], between)
        now = client.entity(uuid=user["uuid"])
        with pytest.raises(RecordNotFoundError):
            client.version(user["id"], datetime(2000, 1, 1, tzinfo=UTC))
    assert before["email"] == "old@example.com"
    assert now["email"] == "new@example.com"


def test_schema(open_client: OpenClient) -> None:
    with open_client() as client:
        schema = client.schema()
    assert schema["name"] == "user"
    assert "email" in {attribute["name"] for attribute in schema["attr_defs"]}


@pytest.mark.parametrize("auth", ["basic", "signed"])
def test_legacy_webhooks_lifecycle(open_client: OpenClient, auth: str) -> None:
    with open_client(auth=auth) as client:
        added = client.add_webhook(
            callback="https://hooks.example.com/webhooks/capture/legacy",
            event_type="update",
            entity_type="user",
            attributes=["email", "givenName"],
        )
        listed = client.list_webhooks()
        client.update_webhook(added["uuid"], attributes=["email"])
        found = client.find_webhook(added["uuid"])
        client.delete_webhook(added["uuid"])
        after = client.list_webhooks()
        with pytest.raises(RecordNotFoundError):
            client.find_webhook(added["uuid"])
    assert [w["uuid"] for w in listed] == [added["uuid"]]
    assert found["attributes"] == ["email"]
    assert found["callback"] == "https://hooks.example.com/webhooks/capture/legacy"
    assert after == []


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["basic", "signed", "params"])
def test_wrong_secret_is_an_auth_error_with_capture_details(open_client: OpenClient, auth: str) -> None:
    with open_client(auth=auth, client_secret="not-the-secret") as client, pytest.raises(CaptureAuthError) as caught:
        client.entity(uuid="6b004bc5-179c-45c2-815d-31b06169371d")
    assert caught.value.code == 402
    assert caught.value.error == "invalid_client_credentials"
    assert caught.value.request_token
    assert not caught.value.retryable
    assert "not-the-secret" not in str(caught.value)


@pytest.mark.parametrize("error_http_status", ["ok", "mapped"])
def test_error_envelopes_whatever_the_http_status(redis_client: redis.Redis, error_http_status: str) -> None:
    with running_simulator(error_http_status=error_http_status) as sim:
        config = capture_config(sim.url)
        user = new_user(sim, email="x@example.com")
        with capture_client(config, connection=redis_client) as client:
            with pytest.raises(RecordNotFoundError) as missing:
                client.entity(uuid="00000000-0000-0000-0000-000000000000")
            with pytest.raises(CaptureApiError) as unknown:
                client.entity(uuid=user["uuid"], attributes=["noSuchAttribute"])
    assert missing.value.code == 310
    assert missing.value.http_status == (200 if error_http_status == "ok" else 404)
    assert unknown.value.code == 223
    assert not unknown.value.retryable
    assert type(unknown.value) is CaptureApiError


def test_a_510_storm_is_retried_until_it_passes(capture_sim: RunningSimulator, open_client: OpenClient) -> None:
    user = new_user(capture_sim, email="storm@example.com")
    capture_sim.faults({"rules": [{"kind": "capture_error", "code": 510, "times": 3, "paths": ["/entity"]}]})
    registry = CollectorRegistry()
    with open_client(registry=registry) as client:
        record = client.entity(uuid=user["uuid"])
    assert record["email"] == "storm@example.com"
    assert capture_sim.stats()["calls"]["/entity"] == 4
    labels = {"endpoint": "/entity"}
    assert (
        registry.get_sample_value("capture_relay_capture_api_requests_total", {**labels, "outcome": "api_limit"}) == 3
    )
    assert registry.get_sample_value("capture_relay_capture_api_requests_total", {**labels, "outcome": "ok"}) == 1
    assert registry.get_sample_value("capture_relay_capture_api_in_flight") == 0


def test_500s_and_gateway_errors_are_retried(capture_sim: RunningSimulator, open_client: OpenClient) -> None:
    user = new_user(capture_sim, email="flaky@example.com")
    capture_sim.faults(
        {
            "rules": [
                {"kind": "capture_error", "code": 500, "times": 1},
                {"kind": "http_status", "status": 502, "times": 1, "body": "<html>bad gateway</html>"},
                {"kind": "http_status", "status": 503, "times": 1, "retry_after": 1},
            ]
        }
    )
    with open_client() as client:
        record = client.entity(uuid=user["uuid"])
    assert record["email"] == "flaky@example.com"
    assert capture_sim.stats()["calls"]["/entity"] == 4


def test_a_storm_longer_than_the_deadline_surfaces_the_limit_error(
    capture_sim: RunningSimulator, open_client: OpenClient
) -> None:
    capture_sim.faults({"rules": [{"kind": "capture_error", "code": 510}]})
    with open_client(retry_deadline="1s") as client, pytest.raises(CaptureLimitError) as caught:
        client.entity(uuid="6b004bc5-179c-45c2-815d-31b06169371d")
    assert caught.value.retryable
    assert caught.value.code == 510
    assert capture_sim.stats()["calls"]["/entity"] >= 2


def test_permanent_http_error_is_not_retried(capture_sim: RunningSimulator, open_client: OpenClient) -> None:
    capture_sim.faults({"rules": [{"kind": "http_status", "status": 403, "body": "<html>forbidden</html>"}]})
    with open_client() as client, pytest.raises(CaptureHttpError) as caught:
        client.entity(uuid="6b004bc5-179c-45c2-815d-31b06169371d")
    assert caught.value.http_status == 403
    assert not caught.value.retryable
    assert capture_sim.stats()["calls"]["/entity"] == 1


def test_a_success_status_without_an_envelope_is_a_protocol_error(
    capture_sim: RunningSimulator, open_client: OpenClient
) -> None:
    capture_sim.faults({"rules": [{"kind": "http_status", "status": 200, "body": "<html>captive portal</html>"}]})
    with open_client() as client, pytest.raises(CaptureProtocolError):
        client.entity(uuid="6b004bc5-179c-45c2-815d-31b06169371d")


def test_timeouts_are_retried_then_surface(capture_sim: RunningSimulator, open_client: OpenClient) -> None:
    user = new_user(capture_sim, email="slow@example.com")
    capture_sim.faults({"rules": [{"kind": "delay", "seconds": 1.0, "times": 1}]})
    with open_client(timeout="0.3s") as client:
        assert client.entity(uuid=user["uuid"])["email"] == "slow@example.com"
    capture_sim.faults({"latency": 1.0})
    with open_client(timeout="0.2s", retry_deadline="1s") as client, pytest.raises(CaptureUnavailableError) as caught:
        client.entity(uuid=user["uuid"])
    assert caught.value.reason == "timeout"


def test_connection_refused_is_unavailable(redis_client: redis.Redis) -> None:
    config = capture_config(f"http://127.0.0.1:{free_port()}", retry_deadline="0.5s")
    with capture_client(config, connection=redis_client) as client, pytest.raises(CaptureUnavailableError) as caught:
        client.entity(uuid="6b004bc5-179c-45c2-815d-31b06169371d")
    assert caught.value.reason == "connect"
    assert caught.value.retryable
    assert caught.value.repeatable  # nothing reached Capture


def test_a_timed_out_add_is_not_sent_twice(capture_sim: RunningSimulator, open_client: OpenClient) -> None:
    """Capture may still register a webhook whose answer came too late: adding again would make two."""
    capture_sim.faults({"rules": [{"kind": "delay", "seconds": 0.6, "times": 1, "paths": ["/webhooks"]}]})
    with open_client(timeout="0.3s") as client:
        with pytest.raises(CaptureOutcomeUnknownError) as caught:
            client.add_webhook(callback="https://hooks.example.com/late", event_type="add", entity_type="user")
        time.sleep(0.6)  # let the slow request finish on the simulator's side
        webhooks = client.list_webhooks()
    assert caught.value.cause.reason == "timeout"
    assert [w["callback"] for w in webhooks] == ["https://hooks.example.com/late"]
    assert capture_sim.stats()["calls"]["/webhooks/add"] == 1
