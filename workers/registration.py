"""Reconcile the declared webhooks with Capture: read the current state, plan, apply.

``read_plan`` reads every registration of each declared kind (all pages) and hands them to
``workers.registration_plan``. ``apply`` carries out the pending steps in the plan's order
(creates, updates, deletes), one at a time, and stops at the first error: a later step may
depend on an earlier one, and the operator should see Capture's own answer (code, error,
request_token), not a cascade. Running it again is safe: a second run plans only what is still
missing, so an applied plan reports no changes.

Creates and deletes are not idempotent. When one fails in a way that leaves open whether it took
effect (``CaptureOutcomeUnknownError``: a timeout, a dropped connection), ``apply`` never sends
it again; it re-reads the state for up to ``settle`` seconds, accepts the step as done once the
state shows it, and otherwise stops with that error, so that the next run reconciles from what
Capture really holds instead of registering a webhook twice. Retries of retryable failures
(510, 429, 5xx) are the clients' own, bounded by ``capture.retry_deadline``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.webhooks_config import WebhooksSection
from workers.akamai_api import SubscriptionsClient
from workers.capture_api import CaptureClient
from workers.capture_errors import CaptureError, CaptureOutcomeUnknownError, CaptureProtocolError
from workers.registration_plan import LegacyWebhook, Plan, PlanStep, plan_legacy, plan_v3

log = structlog.get_logger(__name__)

# How many times the state is read while waiting for an unknown outcome to show.
_SETTLE_READS = 5
_DONE = {"create": "created", "update": "updated", "delete": "deleted"}


@dataclass(frozen=True, slots=True)
class Clients:
    """The clients of the kinds declared; a kind left out of ``webhooks:`` has none."""

    subscriptions: SubscriptionsClient | None = None
    capture: CaptureClient | None = None


@dataclass(slots=True)
class ApplyResult:
    """What ``apply`` did: the steps done, and the one that failed with its error, if any."""

    done: list[PlanStep] = field(default_factory=list)
    failed: PlanStep | None = None
    error: CaptureError | None = None
    not_attempted: list[PlanStep] = field(default_factory=list)


def read_plan(webhooks: WebhooksSection, clients: Clients, *, default_entity_type: str, prune: bool) -> Plan:
    """Read the current registrations of each declared kind and plan the steps to the declared ones.

    Raises:
        CaptureError: reading failed (after the clients' own retries).
    """
    steps: list[PlanStep] = []
    if webhooks.v3 is not None:
        steps += plan_v3(webhooks.v3, _subscriptions(clients).all(), prune=prune)
    if webhooks.legacy is not None:
        current = read_legacy(_capture(clients))
        steps += plan_legacy(webhooks.legacy, current, default_entity_type=default_entity_type, prune=prune)
    return Plan(tuple(steps), prune=prune)


def read_legacy(capture: CaptureClient) -> list[LegacyWebhook]:
    """Every legacy webhook of the application.

    Raises:
        CaptureProtocolError: an element that is not an object with a uuid (it could be neither
            matched nor deleted).
    """
    try:
        return [LegacyWebhook.from_json(_object(item)) for item in capture.list_webhooks()]
    except ValueError as exc:
        raise CaptureProtocolError(str(exc), endpoint="/webhooks/list") from exc


def apply(plan: Plan, clients: Clients, *, settle: float, sleep: Callable[[float], None] = time.sleep) -> ApplyResult:
    """Carry out the pending steps in order; stop at the first error.

    Args:
        plan: from ``read_plan``.
        clients: the same clients the plan was read with.
        settle: how long to keep re-reading after a create or delete whose outcome is unknown.
        sleep: waits between those reads (tests pass a recorder).
    """
    result = ApplyResult()
    pending = plan.pending
    for index, step in enumerate(pending):
        try:
            _carry_out(step, clients, settle=settle, sleep=sleep)
        except CaptureError as exc:
            _log_failure(step, exc)
            result.failed, result.error, result.not_attempted = step, exc, pending[index + 1 :]
            return result
        result.done.append(step)
    return result


def _carry_out(step: PlanStep, clients: Clients, *, settle: float, sleep: Callable[[float], None]) -> None:
    try:
        target_id = _send(step, clients)
    except CaptureOutcomeUnknownError:
        log.warning("registration.outcome_unknown", **_identity(step), webhook_id=step.target_id)
        if not _settled(step, clients, settle=settle, sleep=sleep):
            raise
        target_id = step.target_id
        log.info("registration.outcome_confirmed", **_identity(step), webhook_id=step.target_id)
    log.info(
        "registration.applied",
        **_identity(step),
        outcome=_DONE[step.action],
        webhook_id=target_id or step.target_id,
        changed=sorted(step.fields) if step.action == "update" else None,
    )


def _send(step: PlanStep, clients: Clients) -> str | None:
    """Make the one call of ``step``; returns the id of what it created, updated or deleted."""
    fields = step.fields
    if step.kind == "v3":
        subscriptions = _subscriptions(clients)
        if step.action == "create":
            created = subscriptions.create(
                title=fields["title"],
                endpoint=fields["endpoint"],
                events=fields["events"],
                enabled=fields["enabled"],
                filter=fields.get("filter"),
            )
            return created.id
        if step.action == "update":
            return subscriptions.update(_target(step), fields).id
        subscriptions.delete(_target(step))
        return step.target_id
    capture = _capture(clients)
    if step.action == "create":
        created_webhook = capture.add_webhook(
            callback=fields["callback"],
            event_type=fields["event_type"],
            entity_type=fields["entity_type"],
            attributes=fields.get("attributes"),
        )
        uuid = created_webhook.get("uuid")
        return uuid if isinstance(uuid, str) else None
    if step.action == "update":
        capture.update_webhook(_target(step), attributes=fields["attributes"])
    else:
        capture.delete_webhook(_target(step))
    return step.target_id


def _settled(step: PlanStep, clients: Clients, *, settle: float, sleep: Callable[[float], None]) -> bool:
    """Whether the state comes to show ``step`` done within ``settle`` seconds (read now, then at intervals).

    A request that timed out on our side may still be on its way through Capture, so one read
    right after the failure is not enough to say it did not happen.
    """
    for read in range(_SETTLE_READS):
        if read:
            sleep(settle / (_SETTLE_READS - 1))
        if _shows(step, clients):
            return True
    return False


def _shows(step: PlanStep, clients: Clients) -> bool:
    """Whether the current state shows ``step`` done: a created registration there, a deleted one gone."""
    keys: set[object]
    if step.kind == "v3":
        subscriptions = _subscriptions(clients).all()
        keys, ids = {s.title for s in subscriptions}, {s.id for s in subscriptions}
        wanted: object = step.fields.get("title")
    else:
        webhooks = read_legacy(_capture(clients))
        keys, ids = {w.key for w in webhooks}, {w.uuid for w in webhooks}
        wanted = (step.fields.get("callback"), step.fields.get("event_type"), step.fields.get("entity_type"))
    if step.action == "create":
        return wanted in keys
    # Updates are idempotent and never end with an unknown outcome; only a delete is left.
    return step.action == "delete" and step.target_id not in ids


def _object(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError("a legacy webhook that is not a JSON object")
    return item


def _log_failure(step: PlanStep, exc: CaptureError) -> None:
    # Capture's code and request token of an unknown outcome are those of the failure behind it.
    cause = exc.cause if isinstance(exc, CaptureOutcomeUnknownError) else exc
    log.error(
        "registration.failed",
        **_identity(step),
        outcome="failed",
        reason=exc.reason,
        endpoint=exc.endpoint,
        capture_code=getattr(cause, "code", None),
        request_token=getattr(cause, "request_token", None),
        status=getattr(cause, "http_status", None),
        webhook_id=step.target_id,
    )


def _identity(step: PlanStep) -> dict[str, str]:
    # The legacy name holds the callback with any password masked (registration_plan.legacy_name).
    return {"source": step.kind, "action": step.action, "title" if step.kind == "v3" else "url": step.name}


def _target(step: PlanStep) -> str:
    if step.target_id is None:
        raise ValueError(f"a {step.action} step needs the id of what it changes")
    return step.target_id


def _subscriptions(clients: Clients) -> SubscriptionsClient:
    if clients.subscriptions is None:
        raise ValueError("webhooks.v3 is declared but no subscriptions client was opened")
    return clients.subscriptions


def _capture(clients: Clients) -> CaptureClient:
    if clients.capture is None:
        raise ValueError("webhooks.legacy is declared but no Capture client was opened")
    return clients.capture
