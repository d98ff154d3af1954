"""The v3 subscription client against the simulator's Akamai API over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from service.settings import from_mapping
from tests.support.simulator import API_CLIENT, CONFIG_CLIENT, RunningSimulator, running_simulator
from workers.akamai_api import SubscriptionsClient
from workers.capture_errors import CaptureHttpError
from workers.capture_setup import subscriptions_client

ENDPOINT = "https://hooks.example.com/webhooks/capture/v3"
EVENTS = ["entityCreated", "entityUpdated", "entityDeleted"]


@pytest.fixture
def paged_sim() -> Iterator[RunningSimulator]:
    """A simulator whose subscription list has two per page, so that paging is exercised."""
    with running_simulator(page_size=2) as running:
        yield running


def open_subscriptions(sim: RunningSimulator, **api: Any) -> Any:
    section = {
        "base_url": sim.url,
        "customer_id": sim.sim.config.customer_id,
        "client_id": CONFIG_CLIENT.client_id,
        "client_secret": CONFIG_CLIENT.client_secret,
        **api,
    }
    settings = from_mapping(
        {
            "capture": {
                "base_url": sim.url,
                "client_id": API_CLIENT.client_id,
                "client_secret": API_CLIENT.client_secret,
                "retry_deadline": "5s",
                "webhooks_api": section,
            }
        },
        {},
    )
    assert settings.capture is not None
    return subscriptions_client(settings.capture)


def token_requests(sim: RunningSimulator) -> int:
    calls: dict[str, int] = sim.stats()["calls"]
    return calls.get(f"/{sim.sim.config.customer_id}/login/token", 0)


def test_create_list_get_update_delete(paged_sim: RunningSimulator) -> None:
    with open_subscriptions(paged_sim) as client:
        assert isinstance(client, SubscriptionsClient)
        created = [client.create(title=f"capture-relay {n}", endpoint=ENDPOINT, events=EVENTS) for n in range(5)]
        filtered = client.create(
            title="capture-relay filtered",
            endpoint=ENDPOINT,
            events=["entityUpdated"],
            enabled=False,
            filter={"properties": {"entityUpdated": {"properties": {"entityType": {"const": "user"}}}}},
        )
        listed = client.all()
        one = client.get(created[0].id)
        changed = client.update(created[1].id, {"events": ["entityDeleted"], "enabled": False})
        client.delete(created[2].id)
        after = client.all()
        with pytest.raises(CaptureHttpError) as missing:
            client.get(created[2].id)
    assert len(listed) == 6  # three pages of two
    assert {s.title for s in listed} == {f"capture-relay {n}" for n in range(5)} | {"capture-relay filtered"}
    assert one == created[0]
    assert one.events == tuple(EVENTS)
    assert one.enabled
    assert filtered.filter is not None
    assert not filtered.enabled
    assert changed.events == ("entityDeleted",)
    assert not changed.enabled
    assert changed.title == "capture-relay 1"
    assert created[2].id not in {s.id for s in after}
    assert len(after) == 5
    assert missing.value.http_status == 404
    assert not missing.value.retryable
    # One token for the whole session: it is cached, not fetched per call.
    assert token_requests(paged_sim) == 1


def test_an_expired_token_is_refreshed_once(capture_sim: RunningSimulator) -> None:
    with open_subscriptions(capture_sim) as client:
        client.create(title="before expiry", endpoint=ENDPOINT, events=EVENTS)
        capture_sim.control.post("/__sim/tokens/expire").raise_for_status()
        after = client.create(title="after expiry", endpoint=ENDPOINT, events=EVENTS)
        listed = client.all()
    assert after.title == "after expiry"
    assert {s.title for s in listed} == {"before expiry", "after expiry"}
    assert token_requests(capture_sim) == 2


def test_refusals_carry_the_status_and_the_reason(capture_sim: RunningSimulator) -> None:
    with open_subscriptions(capture_sim) as client:
        client.create(title="taken", endpoint=ENDPOINT, events=EVENTS)
        with pytest.raises(CaptureHttpError) as duplicate:
            client.create(title="taken", endpoint=ENDPOINT, events=EVENTS)
        with pytest.raises(CaptureHttpError) as short_title:
            client.create(title="x", endpoint=ENDPOINT, events=EVENTS)
        with pytest.raises(CaptureHttpError) as bad_event:
            client.create(title="bad event", endpoint=ENDPOINT, events=["userCredentialUpdated"])
    assert duplicate.value.http_status == 409
    assert short_title.value.http_status == 400
    assert "title" in short_title.value.detail
    assert bad_event.value.http_status == 400
    assert "events" in bad_event.value.detail
    assert not any(error.value.retryable for error in (duplicate, short_title, bad_event))


def test_wrong_configuration_client_is_refused(capture_sim: RunningSimulator) -> None:
    wrong = open_subscriptions(capture_sim, client_secret="s3cr3t-not-valid")
    with wrong as client, pytest.raises(CaptureHttpError) as caught:
        client.all()
    assert caught.value.http_status == 401
    assert "s3cr3t-not-valid" not in str(caught.value)


def test_429_is_retried(capture_sim: RunningSimulator) -> None:
    customer = capture_sim.sim.config.customer_id
    capture_sim.faults(
        {
            "rules": [
                {"kind": "http_status", "status": 429, "times": 2, "retry_after": 1, "paths": [f"/{customer}/webhooks"]}
            ]
        }
    )
    with open_subscriptions(capture_sim) as client:
        assert client.all() == []
    assert capture_sim.stats()["calls"][f"/{customer}/webhooks/subscriptions"] == 3
