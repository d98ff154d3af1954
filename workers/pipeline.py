"""``process_event``: the job every accepted webhook becomes.

Capture's webhooks say which record changed, never its values, so the event is enriched here:

1. the routes that could take the event (by type and entity type) decide what to fetch;
2. the record is fetched fresh from Capture (only the attributes those routes need, when that
   is known) and, when a route needs old values, the version before the change; a record gone
   (Capture 310) on an update is handled as a deletion;
3. the changes are computed, the routes matched, and each destination's payload shaped;
4. one delivery job per destination is fanned out, once per delivery id.

Capture limits simultaneous calls, so fetching is the scarce resource; it stays behind
:func:`fetch_state` so that bursts can later be coalesced per profile without touching routing
or delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from service.events import Event
from workers import context
from workers.capture_api import CaptureClient, parse_capture_timestamp
from workers.capture_errors import RecordNotFoundError
from workers.changes import Change, diff, from_attributes
from workers.context import WorkerContext
from workers.delivery_job import DeliveryJob, delivery_id_for
from workers.payload import build_payload
from workers.rules import CompiledRoute, Facts, FetchPlan, effective_entity_type

log = structlog.get_logger(__name__)

Record = dict[str, Any]
_ONE_MICROSECOND = timedelta(microseconds=1)
_TOE_PRECISION = timedelta(seconds=1)
# Later than any lastUpdated, and exact in a double, in JSON and in Redis.
DELETED_VERSION = 9e15


def process_event(event: dict[str, Any]) -> str:
    """RQ entry point: rebuild the envelope and hand it to :func:`process`."""
    return process(Event.from_dict(event), context.current())


@dataclass(frozen=True, slots=True)
class State:
    """What Capture says about the event's record now and before the change."""

    event: Event
    record: Record | None
    previous: Record | None
    gone: bool = False


def process(event: Event, ctx: WorkerContext) -> str:
    """Enrich, route and fan out one event; returns its outcome (routed, unrouted, gone)."""
    bound = log.bind(event_id=event.event_id, delivery_id=event.delivery_id, uuid=event.uuid, type=event.type)
    try:
        outcome, deliveries = _process(event, ctx)
    except Exception:
        # Counted and re-raised: rq retries the job (see the intake's Retry), nothing is dropped.
        ctx.metrics.events_processed.labels(event.type, "failed").inc()
        raise
    ctx.metrics.events_processed.labels(event.type, outcome).inc()
    bound.info("event.processed", outcome=outcome, destinations=deliveries)
    return outcome


def _process(event: Event, ctx: WorkerContext) -> tuple[str, int]:
    rules = ctx.rules
    # Legacy events may not say their entity type: it is the one the Capture client reads.
    event = replace(event, entity_type=effective_entity_type(event.entity_type, ctx.settings))
    candidates = rules.candidates(event.type, event.entity_type)
    if not candidates:
        return "unrouted", 0
    plan = rules.fetch_plan(candidates, event)
    state = fetch_state(event, plan, ctx.capture) if plan.fetch else State(event, None, None)
    if state.gone:
        candidates = rules.candidates(state.event.type, state.event.entity_type)
    facts = Facts(
        event=state.event.to_dict(),
        record=state.record,
        previous=state.previous,
        changes=_changes(state, plan),
    )
    matches = rules.routes_for(candidates, facts)
    jobs = [
        _delivery_job(state, destination, route, facts)
        for route, destinations in matches
        for destination in destinations
    ]
    if jobs:
        ctx.deliveries.queue.fan_out(jobs)
    if state.gone:
        return "gone", len(jobs)
    return ("routed" if jobs else "unrouted"), len(jobs)


def fetch_state(event: Event, plan: FetchPlan, capture: CaptureClient | None) -> State:
    """The record now (and before the change when ``plan.previous``), from Capture.

    Raises:
        RuntimeError: no ``capture:`` section, though a route needs the record (the config
            check refuses such a file; this guards direct use).
        CaptureError: Capture could not answer; the job is retried.
    """
    if capture is None:
        raise RuntimeError("a route needs the record but no capture: section is configured")
    try:
        record = capture.entity(uuid=event.uuid, attributes=plan.attributes, entity_type=event.entity_type)
    except RecordNotFoundError:
        # Deleted since the event was sent: what the routes should see is a deletion.
        return State(replace(event, type="entityDeleted", attributes=()), None, None, gone=True)
    previous = None
    if plan.previous and event.type == "entityUpdated":
        previous = _previous_version(event, record, capture)
        # Compare like with like: the record holds only the attributes asked for.
        previous = plan.trim(previous)
    return State(event, record, previous)


def _previous_version(event: Event, record: Record, capture: CaptureClient) -> Record | None:
    # The version just before the change. The event's toe is the better anchor: the record may
    # have changed again since, and those later changes are included either way. But toe has
    # whole seconds and another clock than lastUpdated, so it is moved a second earlier: an
    # anchor too early only adds changes (a route may match once more), one too late hides them.
    anchors = [parse_capture_timestamp(record.get("lastUpdated"))]
    if event.occurred_at is not None:
        anchors.append(datetime.fromtimestamp(event.occurred_at, UTC) - _TOE_PRECISION)
    known = [anchor - _ONE_MICROSECOND for anchor in anchors if anchor is not None]
    record_id = record.get("id")
    if not known or not isinstance(record_id, int):
        return None
    try:
        return capture.version(record_id, min(known), entity_type=event.entity_type)
    except RecordNotFoundError:
        return None  # no version before this one: the record was created by this change


def _changes(state: State, plan: FetchPlan) -> dict[str, Change]:
    event = state.event
    if event.type == "entityCreated":
        return diff(None, state.record)
    if event.type != "entityUpdated":
        return {}
    if state.previous is not None:
        return diff(state.previous, state.record)
    return from_attributes(event.attributes, state.record)


def _delivery_job(state: State, destination: str, route: CompiledRoute, facts: Facts) -> DeliveryJob:
    event = state.event
    return DeliveryJob(
        delivery_id=delivery_id_for(event.event_id, destination),
        destination=destination,
        route=route.name,
        event_id=event.event_id,
        event_type=event.type,
        uuid=event.uuid,
        version=_version(state),
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        payload=build_payload(event, destination, route, facts),
    )


def _version(state: State) -> float | None:
    """The stale guard's clock: the record's ``lastUpdated``; a deletion outranks every version.

    A uuid is never reused, so nothing may follow a deletion: an update retried after it would
    bring a deleted profile back downstream. (The event's toe could not order it anyway: it has
    whole seconds, ``lastUpdated`` microseconds, and they come from different clocks.)
    """
    if state.record is not None:
        stamp = parse_capture_timestamp(state.record.get("lastUpdated"))
        return stamp.timestamp() if stamp is not None else None
    return DELETED_VERSION if state.event.type == "entityDeleted" else None
