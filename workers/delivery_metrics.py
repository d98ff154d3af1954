"""Gauges of the delivery state kept in Redis, read at scrape time: dead-letter size and breaker state.

They describe shared state, not this process: every worker exports the same values, so
dashboards and alerts take ``max`` over workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.metrics import PREFIX
from workers.breaker import breaker_states
from workers.deadletter import DeadLetter

log = structlog.get_logger(__name__)

# The numbers of capture_relay_breaker_state; docs/observability.md documents them.
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class DeliveryStateCollector(Collector):
    """``capture_relay_dead_letter_size`` and ``capture_relay_breaker_state`` per destination."""

    def __init__(self, connection: redis.Redis, destinations: Sequence[str], retention: int) -> None:
        self._redis = connection
        self._destinations = tuple(destinations)
        self._dead_letter = DeadLetter(connection, retention)

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily(
            f"{PREFIX}dead_letter_size", "Deliveries in the dead letter, by destination.", labels=["destination"]
        )
        state = GaugeMetricFamily(
            f"{PREFIX}breaker_state",
            "Circuit breaker of each destination: 0 closed, 1 half-open, 2 open.",
            labels=["destination"],
        )
        try:
            # Also destinations removed from the config: their deliveries wait in the dead letter too.
            with_entries = sorted(set(self._destinations) | set(self._dead_letter.destinations()))
            sizes = self._dead_letter.sizes(with_entries)
            states = breaker_states(self._redis, self._destinations)
        except redis.RedisError as exc:
            # A scrape must not fail because Redis is down; the gauges are left out instead.
            log.warning("metrics.delivery_state_read_failed", reason=type(exc).__name__)
            return
        for destination, count in sizes.items():
            size.add_metric([destination], count)
        for destination in self._destinations:
            state.add_metric([destination], BREAKER_STATE_VALUES[states.get(destination, "closed")])
        yield from (size, state)
