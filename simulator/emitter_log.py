"""What the emitter sends and what it remembers about each attempt.

A ``Delivery`` is one request body for one target (a duplicate is a second ``Delivery`` with the
same body). Each attempt to send it leaves a ``DeliveryRecord``; the ``DeliveryLog`` keeps the
most recent records and counters over all of them.

Answers are judged as each protocol states it (protocol reference 2.3, 3.5):

* v3: 2xx is delivered; 5xx, a timeout or a connection error is retried; any other answer
  (4xx, and 3xx: redirects are not followed) fails the delivery for good.
* legacy: only 200 stops Janrain's retries ("any other status if webhook should retry");
  everything else is retried.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, replace
from typing import Literal

Format = Literal["v3", "legacy"]
Outcome = Literal["delivered", "retrying", "failed", "dropped"]
Verdict = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request to send to one target."""

    target: str
    format: Format
    body: bytes
    headers: dict[str, str]
    delivery_id: str  # the jti for v3; a simulator-made id for a legacy batch
    kind: str
    uuid: str | None
    event_id: str | None = None
    duplicate: bool = False
    attempt: int = 1

    def again(self) -> Delivery:
        """The same request, as the next attempt."""
        return replace(self, attempt=self.attempt + 1)

    def twin(self) -> Delivery:
        """A duplicate: the same body sent once more."""
        return replace(self, duplicate=True)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """The result of one attempt."""

    target: str
    format: Format
    kind: str
    delivery_id: str
    event_id: str | None
    uuid: str | None
    attempt: int
    duplicate: bool
    status: int | None
    error: str | None
    outcome: Outcome
    at: float

    def to_json(self) -> dict[str, object]:
        """The record as the control API shows it."""
        return asdict(self)


def judge(format: Format, status: int | None) -> Verdict:
    """What an answer means for the sender; ``status`` None is a timeout or connection error."""
    if status is None:
        return "retry"
    if format == "legacy":
        return "delivered" if status == 200 else "retry"
    if 200 <= status < 300:
        return "delivered"
    return "retry" if status >= 500 else "failed"


class DeliveryLog:
    """The last ``max_records`` attempts and counters over all of them (bounded for benchmarks)."""

    def __init__(self, max_records: int = 10_000) -> None:
        self.records: deque[DeliveryRecord] = deque(maxlen=max_records)
        self.counters: Counter[str] = Counter()

    def add(self, delivery: Delivery, outcome: Outcome, status: int | None, error: str | None) -> DeliveryRecord:
        """Remember one attempt (or a drop) and count it."""
        record = DeliveryRecord(
            target=delivery.target,
            format=delivery.format,
            kind=delivery.kind,
            delivery_id=delivery.delivery_id,
            event_id=delivery.event_id,
            uuid=delivery.uuid,
            attempt=delivery.attempt,
            duplicate=delivery.duplicate,
            status=status,
            error=error,
            outcome=outcome,
            at=time.time(),
        )
        self.records.append(record)
        if outcome != "dropped":
            self.counters["attempts"] += 1
        self.counters[outcome] += 1
        return record

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a counter that is not about an attempt (changes seen, deliveries made...)."""
        self.counters[name] += amount

    def snapshot(self) -> dict[str, object]:
        """Counters and records, for ``GET /__sim/deliveries``."""
        names = (
            "changes",
            "ignored",
            "deliveries",
            "duplicates",
            "attempts",
            "delivered",
            "retrying",
            "failed",
            "dropped",
        )
        return {
            "counters": {name: self.counters[name] for name in names},
            "deliveries": [record.to_json() for record in self.records],
        }
