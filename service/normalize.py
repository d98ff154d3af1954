"""Turn verified webhook payloads into ``Event`` envelopes."""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from datetime import datetime
from typing import Any

from service.events import Event
from service.verify.errors import MalformedDeliveryError

# Event types that name a record and therefore must carry its uuid in ``sub``.
RECORD_EVENTS = frozenset({"entityCreated", "entityUpdated", "entityDeleted"})
_NIL_UUID = "00000000-0000-0000-0000-000000000000"

# Legacy bodies do not name their action reliably; these are the spellings we recognise.
_LEGACY_ACTIONS = {
    "add": "entityCreated",
    "create": "entityCreated",
    "created": "entityCreated",
    "entitycreated": "entityCreated",
    "update": "entityUpdated",
    "updated": "entityUpdated",
    "entityupdated": "entityUpdated",
    "delete": "entityDeleted",
    "deleted": "entityDeleted",
    "entitydeleted": "entityDeleted",
}
_LEGACY_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f %z", "%Y-%m-%d %H:%M:%S %z")


def event_from_claims(claims: dict[str, Any], received_at: float) -> Event:
    """Build the envelope of a verified v3 Security Event Token.

    Raises:
        MalformedDeliveryError: a record event without a uuid, or ``attributes`` not a list of strings.
    """
    ((event_type, body),) = claims["events"].items()
    where = f"claim events.{event_type}"
    sub = body.get("sub")
    if event_type in RECORD_EVENTS and (not isinstance(sub, str) or not 0 < len(sub) <= 128):
        raise MalformedDeliveryError("claims_malformed", f"{where}.sub: must be the record's uuid")
    attributes = body.get("attributes", [])
    if not isinstance(attributes, list) or not all(isinstance(item, str) for item in attributes):
        raise MalformedDeliveryError("claims_malformed", f"{where}.attributes: must be a list of strings")
    # Akamai's oldest sample carries a nil event id; the jti is unique, so it stands in.
    event_id = body.get("id")
    if not isinstance(event_id, str) or not event_id or event_id == _NIL_UUID:
        event_id = claims["jti"]
    return Event(
        event_id=event_id,
        delivery_id=claims["jti"],
        source="v3",
        type=event_type,
        entity_type=_optional_str(body.get("entityType")),
        uuid=sub if isinstance(sub, str) else "",
        attributes=tuple(attributes),
        application_id=_optional_str(body.get("captureApplicationId")),
        client_id=_optional_str(body.get("captureClientId")),
        occurred_at=float(claims.get("toe", claims["iat"])),
        received_at=received_at,
    )


def events_from_legacy(batch: list[dict[str, Any]], received_at: float) -> list[Event]:
    """Build one envelope per element of a checked legacy batch."""
    return [_legacy_event(element, received_at) for element in batch]


def _legacy_event(element: dict[str, Any], received_at: float) -> Event:
    stamp = _first_str(element, "datetime", "dateTime", "timestamp")
    entity_type = _first_str(element, "entityType", "entity_type")
    action = _first_str(element, "action", "event_type", "eventType", "event") or "update"
    # An unknown action is handled as an update: the worker re-reads the record, and a record
    # that is gone is then treated as deleted, so nothing is lost by guessing.
    event_type = _LEGACY_ACTIONS.get(action.lower(), "entityUpdated")
    if stamp is not None:
        # Same element, same id: Janrain's retries of a batch are recognised as duplicates.
        material = "\x1f".join((element["uuid"], stamp, entity_type or "", event_type))
        delivery_id = hashlib.sha256(material.encode()).hexdigest()[:32]
    else:
        # Without a timestamp two real updates of one record look identical; dedup would lose
        # the second one, so each such element is its own delivery.
        delivery_id = uuidlib.uuid4().hex
    return Event(
        event_id=delivery_id,
        delivery_id=delivery_id,
        source="legacy",
        type=event_type,
        entity_type=entity_type,
        uuid=element["uuid"],
        occurred_at=_legacy_time(stamp),
        received_at=received_at,
    )


def _legacy_time(stamp: str | None) -> float | None:
    if stamp is None:
        return None
    for layout in _LEGACY_TIME_FORMATS:
        try:
            return datetime.strptime(stamp, layout).timestamp()
        except ValueError:
            continue
    return None


def _first_str(element: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = element.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
