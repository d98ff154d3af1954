"""The one start-up seam of the workers: a context built before ``work()`` and read by jobs.

RQ calls job functions with their arguments only, so the clients a job needs (settings,
metrics, the Capture client, the routing rules, the destinations' sinks) are installed here by
``capture-relay worker``. Only the RQ entry points call ``current()``; everything below them
takes the context as a parameter. Everything in the context is shared by the worker's threads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry

from service.metrics import WorkerMetrics
from service.settings import Settings

# A module import: workers.delivery's RQ entry point reads the context, so the two import each
# other, and only attribute access at call time works whichever is imported first.
from workers import delivery
from workers.capture_api import CaptureClient
from workers.capture_calls import CaptureApiMetrics
from workers.capture_setup import capture_client
from workers.delivery_metrics import DeliveryStateCollector
from workers.rules import RuleBook


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What jobs run with."""

    settings: Settings
    metrics: WorkerMetrics
    rules: RuleBook
    deliveries: delivery.DeliveryEngine
    # Present when the config has a ``capture:`` section.
    capture: CaptureClient | None = None


@contextmanager
def open_context(settings: Settings, connection: redis.Redis, registry: CollectorRegistry) -> Iterator[WorkerContext]:
    """Build the context of a worker process, and close its clients when the worker stops."""
    with ExitStack() as stack:
        capture = None
        if settings.capture is not None:
            capture = stack.enter_context(
                capture_client(settings.capture, connection=connection, metrics=CaptureApiMetrics(registry))
            )
        metrics = WorkerMetrics(registry)
        deliveries = stack.enter_context(delivery.delivery_engine(settings, connection, metrics))
        registry.register(
            DeliveryStateCollector(connection, list(settings.destinations), settings.delivery.dead_letter_retention)
        )
        yield WorkerContext(
            settings=settings,
            metrics=metrics,
            rules=RuleBook.from_settings(settings),
            deliveries=deliveries,
            capture=capture,
        )


_installed: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    """Make ``context`` the one jobs see; called once at worker start-up (and by tests)."""
    global _installed  # the sanctioned seam, see the module docstring
    _installed = context


def current() -> WorkerContext:
    """The installed context.

    Raises:
        RuntimeError: when a job runs in a process that was not started by ``capture-relay worker``.
    """
    if _installed is None:
        raise RuntimeError("no worker context installed; start workers with `capture-relay worker`")
    return _installed
