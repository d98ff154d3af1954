"""The Capture domain's API routes (protocol reference §1 and §4).

Each route takes ``POST`` with ``application/x-www-form-urlencoded`` fields, or ``GET`` with
query parameters, and any of the three credential modes (``simulator.credentials``)::

    /entity            one record: type_name + id | uuid | key_attribute & key_value
    /entity.find       records matching a filter, sorted and paged
    /versions/entity   a record as it was at a timestamp
    /entityType        the schema of an entity type
    /webhooks/add      configure a legacy webhook     /webhooks/update   overwrite its values
    /webhooks/list     every legacy webhook           /webhooks/find     one, by uuid
    /webhooks/delete   remove one, by uuid

Answers are ``{..., "stat": "ok"}`` or the error envelope (``simulator.envelope``).
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from simulator import entity_api, find_api, webhooks_api
from simulator.backend import CaptureBackend, Handler, capture_route

ROUTES: dict[str, Handler] = {
    "/entity": entity_api.entity,
    "/entity.find": find_api.find,
    "/versions/entity": entity_api.version,
    "/entityType": entity_api.entity_type,
    "/webhooks/add": webhooks_api.add,
    "/webhooks/update": webhooks_api.update,
    "/webhooks/list": webhooks_api.list_all,
    "/webhooks/find": webhooks_api.find,
    "/webhooks/delete": webhooks_api.delete,
}


def capture_routes(backend: CaptureBackend) -> list[BaseRoute]:
    """Every Capture API route, answered from ``backend``."""
    return [capture_route(path, handler, backend) for path, handler in ROUTES.items()]
