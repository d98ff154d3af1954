"""``process_event``: the job every accepted webhook becomes.

For now it records that the event reached a worker; fetching the record, routing and delivery
are the pipeline issue's.
"""

from __future__ import annotations

from typing import Any

import structlog

from service.events import Event
from workers import context
from workers.context import WorkerContext

log = structlog.get_logger(__name__)


def process_event(event: dict[str, Any]) -> str:
    """RQ entry point: rebuild the envelope and hand it to :func:`process`."""
    return process(Event.from_dict(event), context.current())


def process(event: Event, ctx: WorkerContext) -> str:
    """Handle one event; returns its outcome."""
    outcome = "received"
    ctx.metrics.events_processed.labels(event.type, outcome).inc()
    log.info(
        "event.processed",
        event_id=event.event_id,
        delivery_id=event.delivery_id,
        source=event.source,
        type=event.type,
        uuid=event.uuid,
        outcome=outcome,
    )
    return outcome
