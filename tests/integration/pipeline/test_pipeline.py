"""The pipeline end to end: a profile changes in the simulator, its webhook goes through the real
ingress into Redis, a worker fetches the record from the simulator's Capture API, matches the
routes and delivers to a recording HTTP receiver, signed as Standard Webhooks."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import redis
from standardwebhooks.webhooks import Webhook

from capture_relay.embedded_redis import RedisServer
from service.events import Event
from tests.support.pipeline import SECRET, running_stack
from workers import context
from workers.breaker import CircuitBreaker
from workers.deadletter import DeadLetter
from workers.delivery_queue import DeliveryPolicy, DeliveryQueue
from workers.pipeline import process

pytestmark = pytest.mark.timeout(180)


def test_a_created_profile_is_delivered_signed(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url) as stack:
        record = stack.create({"email": "ada@example.com", "givenName": "Ada"})
        stack.wait_emitted()
        stack.drain()
        [received] = stack.receiver.delivered("/crm")

    # The receiver's side of the contract, checked by the Standard Webhooks reference library.
    Webhook(SECRET).verify(received.body, received.headers)
    payload = received.payload
    assert payload["type"] == "entityCreated"
    assert payload["uuid"] == record["uuid"]
    assert payload["route"] == "everything"
    assert payload["record"]["email"] == "ada@example.com"
    assert payload["id"] == received.webhook_id == f"{payload['event_id']}:crm"
    assert "changes" not in payload


def test_conditions_and_payload_shaping(tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis) -> None:
    routes = [
        {
            "name": "email-to-crm",
            "on": ["entityUpdated"],
            "changed_any": ["email"],
            "fields": ["uuid", "email", "givenName"],
            "hash": ["email"],
            "rename": {"givenName": "firstName"},
            "to": ["crm"],
        },
        {
            "name": "moves-to-bus",
            "on": ["entityUpdated"],
            "when": "record.primaryAddress.country == 'FR'",
            "changed_all": ["primaryAddress"],
            "drop": ["email", "password"],
            "to": ["bus"],
        },
    ]
    with running_stack(tmp_path, redis_server.url, routes=routes) as stack:
        record = stack.create({"email": "ada@example.com", "givenName": "Ada", "primaryAddress": {"city": "Leeds"}})
        uuid = record["uuid"]
        # Each change is processed before the next: the worker sees the record as it is then.
        for changes in (
            {"givenName": "Augusta"},  # neither route: no email change, no address change
            {"email": "ada@lovelace.example"},  # crm
            {"primaryAddress": {"city": "Graz", "country": "AT"}},  # an address change, but `when` is false
            {"primaryAddress": {"city": "Lyon", "country": "FR"}},  # bus
        ):
            stack.update(uuid, changes)
            stack.wait_emitted()
            stack.drain()
        crm = stack.receiver.delivered("/crm")
        bus = stack.receiver.delivered("/bus")

    assert len(crm) == 1
    sent = crm[0].payload
    digest = hashlib.sha256(b"ada@lovelace.example").hexdigest()
    # fields keeps three attributes, hash replaces the email, rename moves givenName.
    assert sent["record"] == {"uuid": uuid, "email": digest, "firstName": "Augusta"}
    assert sent["changes"]["email"]["new"] == digest
    assert "ada@" not in crm[0].body.decode()  # not in the record, not in the changes

    assert len(bus) == 1
    moved = bus[0].payload
    assert moved["record"]["primaryAddress"]["city"] == "Lyon"
    assert "email" not in moved["record"]
    assert moved["changes"]["primaryAddress.country"]["new"] == "FR"


def test_retries_then_success_keep_the_delivery_id(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url) as stack:
        stack.receiver.plan("/crm", [503, 500, 429], headers={429: {"Retry-After": "1"}})
        stack.create({"email": "retry@example.com"})
        stack.wait_emitted()
        stack.drain()
        attempts = stack.receiver.on("/crm")

    assert [r.status for r in attempts] == [503, 500, 429, 204]
    assert len({r.webhook_id for r in attempts}) == 1
    for attempt in attempts:
        Webhook(SECRET).verify(attempt.body, attempt.headers)


def test_a_refused_delivery_is_dead_lettered_and_replayed(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url) as stack:
        stack.receiver.plan("/crm", [400])
        stack.create({"email": "refused@example.com"})
        stack.wait_emitted()
        stack.drain()
        assert [r.status for r in stack.receiver.on("/crm")] == [400]  # a 400 is not retried
        dead_letter = DeadLetter(redis_client, stack.settings.delivery.dead_letter_retention)
        [entry] = dead_letter.entries()
        assert (entry.last_status, entry.attempts, entry.destination) == (400, 1, "crm")

        queue = DeliveryQueue(redis_client, DeliveryPolicy.from_settings(stack.settings))
        assert dead_letter.replay(entry.delivery_id, queue)
        stack.drain()
        delivered = stack.receiver.delivered("/crm")

    assert dead_letter.entries() == []
    assert [r.webhook_id for r in delivered] == [entry.delivery_id]


def test_the_breaker_opens_and_recovers_without_losing_deliveries(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    delivery = {
        "schedule": [0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2],
        "breaker": {"consecutive_failures": 2, "open_for": "1s"},
    }
    with running_stack(tmp_path, redis_server.url, delivery=delivery) as stack:
        breaker = CircuitBreaker(redis_client, "crm", stack.settings.delivery.breaker)
        stack.receiver.down("/crm")
        uuids = {stack.create({"email": f"user{n}@example.com"})["uuid"] for n in range(6)}
        stack.wait_emitted()
        stack.drain(queues=("events",))
        stack.drain(queues=("deliveries",), until=lambda: breaker.state() == "open")
        tried_while_down = len(stack.receiver.on("/crm"))
        stack.receiver.up("/crm")
        stack.drain()
        delivered = stack.receiver.delivered("/crm")
        assert breaker.state() == "closed"

    # While open, deliveries waited instead of hammering the receiver or using up their attempts.
    assert tried_while_down < 6 * len(delivery["schedule"])
    assert {r.payload["uuid"] for r in delivered} == uuids
    assert len({r.webhook_id for r in delivered}) == len(delivered) == 6


def test_a_stale_record_is_not_delivered_over_a_newer_one(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url) as stack:
        uuid = stack.create({"email": "old@example.com"})["uuid"]
        stack.wait_emitted()
        stack.drain(queues=("events",))  # the created event's delivery now carries the old email
        stack.update(uuid, {"email": "new@example.com"})
        stack.wait_emitted()
        stack.drain(queues=("events",))
        # The older delivery fails once and is retried after the newer one went through.
        stack.receiver.plan("/crm", [503])
        stack.drain()
        answered = [(r.status, r.payload["record"]["email"]) for r in stack.receiver.on("/crm")]

    assert answered == [(503, "old@example.com"), (204, "new@example.com")]


def test_a_record_deleted_before_its_update_is_processed_is_delivered_as_a_deletion(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url) as stack:
        uuid = stack.create({"email": "gone@example.com"})["uuid"]
        stack.wait_emitted()
        stack.drain()
        stack.update(uuid, {"givenName": "Gone"})
        stack.wait_emitted()
        stack.delete(uuid)  # before the update is processed: Capture answers 310 for it
        stack.wait_emitted()
        stack.drain()
        kinds = [r.payload["type"] for r in stack.receiver.delivered("/crm")]

    # created; the update, found gone, as a deletion; the deletion itself.
    assert kinds == ["entityCreated", "entityDeleted", "entityDeleted"]


def test_an_update_retried_after_the_deletion_does_not_bring_the_profile_back(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with running_stack(tmp_path, redis_server.url) as stack:
        uuid = stack.create({"email": "leaving@example.com"})["uuid"]
        stack.wait_emitted()
        stack.drain()
        stack.update(uuid, {"givenName": "Leaving"})
        stack.wait_emitted()
        stack.drain(queues=("events",))  # the update's delivery carries the record
        stack.delete(uuid)
        stack.wait_emitted()
        stack.drain(queues=("events",))
        stack.receiver.plan("/crm", [503])  # the update fails once; the deletion overtakes its retry
        stack.drain()
        answered = [(r.status, r.payload["type"]) for r in stack.receiver.on("/crm")]

    assert answered == [(204, "entityCreated"), (503, "entityUpdated"), (204, "entityDeleted")]


def test_a_legacy_event_without_entity_type_is_of_the_capture_entity_type(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Legacy webhooks may not name the entity type: routes see capture.entity_type (user), so a
    route for another entity type does not take the event."""
    routes = [
        {"name": "employees", "entity_type": "employee", "to": ["bus"]},
        {"name": "users", "entity_type": "user", "to": ["crm"]},
    ]
    with running_stack(tmp_path, redis_server.url, routes=routes) as stack:
        uuid = stack.create({"email": "legacy@example.com"})["uuid"]
        event = Event(
            event_id="legacy-1",
            delivery_id="legacy-1",
            source="legacy",
            type="entityUpdated",
            entity_type=None,
            uuid=uuid,
            received_at=time.time(),
        )
        assert process(event, context.current()) == "routed"
        stack.drain()
        delivered = stack.receiver.delivered("/crm")

    assert stack.receiver.delivered("/bus") == []  # neither the legacy event nor the v3 creation
    [legacy] = [r.payload for r in delivered if r.payload["event_id"] == "legacy-1"]
    assert (legacy["entity_type"], legacy["uuid"]) == ("user", uuid)
