"""``/webhooks/add|update|list|find|delete``: managing legacy webhooks (protocol reference §1.2).

Answers: ``add``, ``update`` and ``find`` give ``{"result": <webhook>}``, ``list`` gives
``{"webhooks": [...]}``, ``delete`` gives ``{}``; each with ``"stat": "ok"``. An unknown webhook
``uuid`` is 310 ``record_not_found``. The webhook fields are described in ``webhook_registry``.
"""

from __future__ import annotations

from typing import Any

from simulator.backend import CaptureBackend
from simulator.envelope import CaptureError
from simulator.params import Params
from simulator.webhook_registry import WebhookChanges


def add(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/webhooks/add``: ``callback``, ``event_type``, ``entity_type`` (+ ``attributes`` for update)."""
    return {"result": backend.webhooks.add(_changes(params)).as_json()}


def update(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/webhooks/update``: ``uuid`` and the values to overwrite."""
    uuid = params.require("uuid")
    return {"result": backend.webhooks.update(uuid, _changes(params)).as_json()}


def find(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/webhooks/find``: one webhook by ``uuid``."""
    return {"result": backend.webhooks.find(params.require("uuid")).as_json()}


def list_all(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/webhooks/list``: every webhook of the application."""
    return {"webhooks": [webhook.as_json() for webhook in backend.webhooks.all()]}


def delete(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/webhooks/delete``: remove the webhook ``uuid``."""
    backend.webhooks.delete(params.require("uuid"))
    return {}


def _changes(params: Params) -> WebhookChanges:
    attributes = params.json("attributes")
    if attributes is not None and (
        not isinstance(attributes, list) or not all(isinstance(name, str) and name for name in attributes)
    ):
        raise CaptureError(200, 'attributes must be a JSON array of attribute names, e.g. ["email"]')
    return WebhookChanges(
        callback=params.get("callback") or None,
        event_type=params.get("event_type") or None,
        entity_type=params.get("entity_type") or None,
        attributes=attributes,
    )
