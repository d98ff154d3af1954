"""Webhooks v3 subscriptions: validation as Akamai's create schema states it, and their storage.

Protocol reference 3.6: ``title`` 2-200 characters and unique per customer, ``endpoint`` an https
URL on a public address, ``events`` a non-empty array of ``entityCreated | entityUpdated |
entityDeleted``, ``enabled`` a boolean (default true), ``filter`` an optional JSON Schema object.

Two choices where the reference is silent: unknown members are refused (a JSON-schema validator
with ``additionalProperties: false`` would), and, unlike Akamai, an endpoint on 127.0.0.1,
``::1`` or ``localhost`` is accepted, over http too, so that local tests and the demo can
subscribe a receiver running beside them.
"""

from __future__ import annotations

import ipaddress
import threading
import uuid as uuid_module
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

EVENT_TYPES = ("entityCreated", "entityUpdated", "entityDeleted")
_FIELDS = ("title", "endpoint", "events", "enabled", "filter")
_REQUIRED = ("title", "endpoint", "events")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class SubscriptionError(Exception):
    """A refused request; ``errors`` name the fields (``[{"field", "message"}]``)."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []


def validate(body: Any, *, partial: bool) -> dict[str, Any]:
    """The accepted members of a create (``partial=False``) or PATCH body.

    Raises:
        SubscriptionError: 400, naming every field that is missing, unknown or invalid.
    """
    if not isinstance(body, dict):
        raise SubscriptionError(400, "the body must be a JSON object", [{"field": "", "message": "not an object"}])
    errors = [{"field": name, "message": "unknown member"} for name in body if name not in _FIELDS]
    if not partial:
        errors += [{"field": name, "message": "required"} for name in _REQUIRED if name not in body]
    for name in _FIELDS:
        if name in body:
            problem = _CHECKS[name](body[name])
            if problem:
                errors.append({"field": name, "message": problem})
    if errors:
        raise SubscriptionError(400, "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors)
    fields = {name: body[name] for name in _FIELDS if name in body}
    if not partial:
        fields.setdefault("enabled", True)
        fields.setdefault("filter", None)
    return fields


def _check_title(value: Any) -> str | None:
    if not isinstance(value, str) or not 2 <= len(value) <= 200:
        return "must be a string of 2 to 200 characters"
    return None


def _check_endpoint(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be an https URL"
    parts = urlsplit(value)
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        return "must be an absolute https URL"
    local = host in _LOCAL_HOSTS
    if parts.scheme == "http" and not local:
        return "must use https (the simulator accepts http only for 127.0.0.1, ::1 and localhost)"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: Akamai would resolve it; the simulator does not
    if not local and not address.is_global:
        return "must be a public address"
    return None


def _check_events(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty array"
    unknown = [item for item in value if item not in EVENT_TYPES]
    if unknown:
        return f"{unknown[0]!r} is not one of {', '.join(EVENT_TYPES)}"
    return None


def _check_enabled(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _check_filter(value: Any) -> str | None:
    return None if value is None or isinstance(value, dict) else "must be a JSON Schema object"


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "title": _check_title,
    "endpoint": _check_endpoint,
    "events": _check_events,
    "enabled": _check_enabled,
    "filter": _check_filter,
}


def _timestamp(at: float) -> str:
    # Akamai's samples carry nanoseconds: 2020-01-01T00:00:00.000000001Z.
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


class SubscriptionBook:
    """The subscriptions of one customer, in creation order. Thread-safe."""

    def __init__(self, customer_id: str, clock: Callable[[], float]) -> None:
        self._customer_id = customer_id
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}

    def create(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a validated subscription; returns it with ``id``, ``customerId`` and timestamps.

        Raises:
            SubscriptionError: 409 when the title is taken.
        """
        now = _timestamp(self._clock())
        with self._lock:
            self._check_title_free(fields["title"], None)
            subscription = {"id": str(uuid_module.uuid4()), **fields}
            subscription.update(customerId=self._customer_id, createdAt=now, updatedAt=now)
            self._items[subscription["id"]] = subscription
            return dict(subscription)

    def get(self, subscription_id: str) -> dict[str, Any]:
        """One subscription.

        Raises:
            SubscriptionError: 404 for an unknown id.
        """
        with self._lock:
            return dict(self._find(subscription_id))

    def update(self, subscription_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Apply a validated partial update.

        Raises:
            SubscriptionError: 404 for an unknown id, 409 when the new title is taken.
        """
        now = _timestamp(self._clock())
        with self._lock:
            subscription = self._find(subscription_id)
            if "title" in fields:
                self._check_title_free(fields["title"], subscription_id)
            subscription.update(fields, updatedAt=now)
            return dict(subscription)

    def delete(self, subscription_id: str) -> None:
        """Remove a subscription.

        Raises:
            SubscriptionError: 404 for an unknown id.
        """
        with self._lock:
            self._find(subscription_id)
            del self._items[subscription_id]

    def all(self) -> list[dict[str, Any]]:
        """Every subscription, oldest first."""
        with self._lock:
            return [dict(item) for item in self._items.values()]

    def _find(self, subscription_id: str) -> dict[str, Any]:
        subscription = self._items.get(subscription_id)
        if subscription is None:
            raise SubscriptionError(404, f"no subscription with id {subscription_id!r}")
        return subscription

    def _check_title_free(self, title: str, own_id: str | None) -> None:
        if any(item["title"] == title and item["id"] != own_id for item in self._items.values()):
            raise SubscriptionError(
                409, f"a subscription titled {title!r} exists", [{"field": "title", "message": "taken"}]
            )
