"""The ``Event`` envelope: the one contract between the ingress and the workers.

It says which record changed and how we learnt of it, never the record's values: Capture's
webhooks carry none, and the workers fetch fresh state at processing time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Source = Literal["v3", "legacy"]

# rq accepts letters, digits, "_" and "-" in job ids.
_JOB_ID_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Event:
    """One profile change notification, normalised from either webhook flavour.

    Attributes:
        event_id: Capture's id of the event (stable across redeliveries of the same event).
        delivery_id: the id of this notification (v3: ``jti``); the dedup key.
        source: ``v3`` or ``legacy``.
        type: ``entityCreated``, ``entityUpdated``, ``entityDeleted``, ``test``, or whatever
            new type Capture sends (acknowledged and passed on as is).
        entity_type: the Capture schema, usually ``user``.
        uuid: the record's uuid; empty for events about no record (``test``).
        attributes: dot paths Capture says changed (v3 ``entityUpdated`` only).
        application_id: Capture application id.
        client_id: the API client that made the change.
        occurred_at: when the change happened (v3 ``toe``), epoch seconds.
        received_at: when this service accepted it, epoch seconds.
    """

    event_id: str
    delivery_id: str
    source: Source
    type: str
    entity_type: str | None
    uuid: str
    attributes: tuple[str, ...] = field(default=())
    application_id: str | None = None
    client_id: str | None = None
    occurred_at: float | None = None
    received_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, the form stored in the RQ job."""
        # Field by field rather than dataclasses.asdict, which deep-copies and costs ~70 µs.
        data = {name: getattr(self, name) for name in _FIELDS}
        data["attributes"] = list(self.attributes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output."""
        return cls(**{**data, "attributes": tuple(data.get("attributes") or ())})

    @property
    def job_id(self) -> str:
        """The RQ job id: derived from the event id, limited to the characters rq allows."""
        return job_id_for(self.source, self.event_id)


_FIELDS = tuple(item.name for item in fields(Event))


def job_id_for(source: str, event_id: str) -> str:
    """Map an event id to an RQ job id; ids with other characters are hashed, never truncated."""
    if _JOB_ID_SAFE.match(event_id):
        return f"event-{source}-{event_id}"
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:40]
    return f"event-{source}-h{digest}"
