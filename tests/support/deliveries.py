"""Delivery jobs and dead-letter entries for tests, with every field settable."""

from __future__ import annotations

import time
from typing import Any

from workers.deadletter import DeadLetterEntry
from workers.delivery_job import DeliveryJob, delivery_id_for

_ENTRY_FIELDS = frozenset({"failed_at", "attempts", "last_status", "reason", "detail"})


def delivery_job(event_id: str = "evt-1", destination: str = "crm", **fields: Any) -> DeliveryJob:
    """A first attempt of ``event_id`` to ``destination`` for a changed profile; keywords override fields.

    The payload holds a recognisable e-mail address, for tests that it never leaks.
    """
    now = time.time()
    values: dict[str, Any] = {
        "route": "all-changes",
        "event_type": "entityUpdated",
        "uuid": "uuid-1",
        "version": now,
        "occurred_at": now,
        "received_at": now,
        "payload": {"email": "jane@example.com"},
        **fields,
    }
    return DeliveryJob(
        delivery_id=delivery_id_for(event_id, destination), destination=destination, event_id=event_id, **values
    )


def dead_letter_entry(event_id: str = "evt-1", destination: str = "crm", **fields: Any) -> DeadLetterEntry:
    """An entry refused with HTTP 400 after three attempts; keywords override entry or job fields."""
    entry: dict[str, Any] = {
        "failed_at": time.time(),
        "attempts": 3,
        "last_status": 400,
        "reason": "http_status",
        "detail": "HTTP 400",
    }
    entry.update({key: value for key, value in fields.items() if key in _ENTRY_FIELDS})
    job_fields = {"attempt": entry["attempts"], **{k: v for k, v in fields.items() if k not in _ENTRY_FIELDS}}
    return DeadLetterEntry(job=delivery_job(event_id, destination, **job_fields), **entry)
