"""The delivery-state gauges read Redis at scrape time: dead-letter sizes and breaker states."""

from __future__ import annotations

import redis
from prometheus_client import CollectorRegistry

from service.destination_config import BreakerSettings
from tests.support.deliveries import dead_letter_entry
from workers.breaker import CircuitBreaker
from workers.deadletter import DeadLetter
from workers.delivery_metrics import DeliveryStateCollector


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    return {
        sample.labels["destination"]: sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name
    }


def test_sizes_and_states_per_destination(redis_client: redis.Redis) -> None:
    dead_letter = DeadLetter(redis_client, 3600)
    dead_letter.add(dead_letter_entry("evt-1", "crm"))
    dead_letter.add(dead_letter_entry("evt-2", "crm"))
    dead_letter.add(dead_letter_entry("evt-3", "retired"))  # no longer in the config: still counted
    breaker = CircuitBreaker(redis_client, "bus", BreakerSettings(consecutive_failures=1))
    breaker.record_failure(probe=False)
    registry = CollectorRegistry()
    registry.register(DeliveryStateCollector(redis_client, ["crm", "bus"], retention=3600))

    assert _samples(registry, "capture_relay_dead_letter_size") == {"bus": 0.0, "crm": 2.0, "retired": 1.0}
    assert _samples(registry, "capture_relay_breaker_state") == {"crm": 0.0, "bus": 2.0}


def test_a_redis_outage_leaves_the_gauges_out(redis_client: redis.Redis) -> None:
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2)
    registry = CollectorRegistry()
    registry.register(DeliveryStateCollector(unreachable, ["crm"], retention=3600))

    assert _samples(registry, "capture_relay_dead_letter_size") == {}
