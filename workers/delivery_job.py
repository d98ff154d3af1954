"""``DeliveryJob``: one event's payload on its way to one destination, as stored in its RQ job.

The delivery id ``<event-id>:<destination>`` is the stable identity downstream systems
deduplicate on (``webhook-id`` on HTTP, the message id on buses). Every attempt of one delivery
is its own RQ job, numbered by ``seq``, because rq cannot reschedule a running job with a delay
of our choosing (jitter, ``Retry-After``, an open breaker).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from typing import Any

# The job target, named (not imported) wherever jobs are enqueued.
DELIVER = "workers.delivery.deliver"


def delivery_id_for(event_id: str, destination: str) -> str:
    """The delivery id of ``event_id`` to ``destination``: stable across redeliveries and reruns."""
    return f"{event_id}:{destination}"


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """What a delivery job carries.

    Attributes:
        delivery_id: ``<event-id>:<destination>``; sent as ``webhook-id`` / message id.
        destination: the destination's name in the config.
        route: the route that produced the payload.
        event_id: Capture's event id.
        event_type: ``entityCreated`` / ``entityUpdated`` / ``entityDeleted`` / ``test``.
        uuid: the record's uuid (empty for ``test``).
        version: the stale guard's clock: the record's ``lastUpdated`` as epoch seconds, or for a
            deletion the time it happened; ``None`` when unknown (the guard then lets it through).
        occurred_at: when the change happened (v3 ``toe``), epoch seconds, if known.
        received_at: when the ingress accepted the event, epoch seconds.
        payload: the exact JSON document the destination receives.
        attempt: the number of the next send attempt, from 1; breaker deferrals do not count.
        first_attempt_at: when the first attempt ran, epoch seconds.
        seq: how many times this delivery was scheduled before; part of the job id.
        replayed: how many times it was replayed from the dead letter.
    """

    delivery_id: str
    destination: str
    route: str
    event_id: str
    event_type: str
    uuid: str
    version: float | None
    occurred_at: float | None
    received_at: float
    payload: dict[str, Any] = field(repr=False)
    attempt: int = 1
    first_attempt_at: float | None = None
    seq: int = 0
    replayed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, the form stored in the RQ job and in the dead letter."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeliveryJob:
        """Rebuild a job from :meth:`to_dict` output (unknown keys, from a newer version, are ignored)."""
        return cls(**{name: data[name] for name in _FIELDS if name in data})

    @property
    def job_id(self) -> str:
        """The RQ job id of this attempt: the delivery id mapped to rq's characters, plus ``seq``."""
        return f"{delivery_key(self.delivery_id)}-{self.replayed}-{self.seq}"

    def next(self, *, counts_as_attempt: bool, first_attempt_at: float | None = None) -> DeliveryJob:
        """The job of the next scheduling of this delivery."""
        return replace(
            self,
            seq=self.seq + 1,
            attempt=self.attempt + 1 if counts_as_attempt else self.attempt,
            first_attempt_at=self.first_attempt_at if first_attempt_at is None else first_attempt_at,
        )

    def replay(self) -> DeliveryJob:
        """A fresh job for a delivery taken back from the dead letter: full schedule again."""
        return replace(self, attempt=1, first_attempt_at=None, seq=0, replayed=self.replayed + 1)


_FIELDS = tuple(item.name for item in fields(DeliveryJob))


def delivery_key(delivery_id: str) -> str:
    """``delivery-`` and 40 hex digits of the id's SHA-256, for every id: each has a ``:``, which rq does not
    allow in job ids. Also the delivery's part of its Redis keys (delivered and fan-out markers)."""
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:40]
    return f"delivery-{digest}"
