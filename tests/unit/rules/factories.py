"""Small builders for the routing tests: a route, an event and a record, each with overrides."""

from __future__ import annotations

from typing import Any

from service.events import Event
from service.routing_config import Route

UUID = "6b004bc5-179c-45c2-815d-31b06169371d"


def make_route(**overrides: Any) -> Route:
    """A validated route named ``r`` to ``crm``, taking created/updated/deleted events."""
    return Route.model_validate({"name": "r", "to": ["crm"], **overrides})


def make_event(**overrides: Any) -> Event:
    """An ``entityUpdated`` v3 event about :data:`UUID`."""
    values: dict[str, Any] = {
        "event_id": "evt-1",
        "delivery_id": "jti-1",
        "source": "v3",
        "type": "entityUpdated",
        "entity_type": "user",
        "uuid": UUID,
        "occurred_at": 1795348800.0,
        "received_at": 1795348801.0,
        **overrides,
    }
    values["attributes"] = tuple(values.get("attributes", ()))
    return Event(**values)


def make_record(**overrides: Any) -> dict[str, Any]:
    """A user record with an object (``primaryAddress``) and a plural (``emails``)."""
    return {
        "id": 999,
        "uuid": UUID,
        "lastUpdated": "2026-11-22 12:00:00.000000 +0000",
        "email": "ann@example.com",
        "emailVerified": "2026-11-01 10:00:00 +0000",
        "givenName": "Ann",
        "familyName": "Smith",
        "primaryAddress": {"city": "Oslo", "zip": "0150", "country": "NO"},
        "emails": [{"id": 1, "value": "ann@example.com"}],
        **overrides,
    }
