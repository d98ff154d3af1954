"""The legacy webhooks a Capture application has configured (``/webhooks/*``, protocol reference §1).

Parameter names come from two client libraries (§1.2); response shapes beyond ``stat`` and the
``uuid``/``callback_hash`` of list elements are not documented (§1.3, §7.1). The simulator
answers a webhook as ``{"uuid", "callback", "event_type", "entity_type", "attributes",
"callback_hash", "created"}``. ``event_type`` is taken case-insensitively and stored in lower
case; ``attributes`` is required for ``update`` and refused for the other event types.
"""

from __future__ import annotations

import secrets
import threading
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from simulator.envelope import CaptureError
from simulator.profiles import capture_time
from simulator.schema import is_known

EVENT_TYPES = ("add", "update", "delete")


@dataclass(frozen=True, slots=True)
class LegacyWebhook:
    """One configured webhook."""

    uuid: str
    callback: str
    event_type: str
    entity_type: str
    attributes: list[str] = field(default_factory=list)
    callback_hash: str = ""
    created: str = ""

    def as_json(self) -> dict[str, Any]:
        """The webhook as the API answers it."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """What ``add`` or ``update`` was asked to set (None: not sent)."""

    callback: str | None = None
    event_type: str | None = None
    entity_type: str | None = None
    attributes: list[str] | None = None


class LegacyWebhooks:
    """The configured webhooks, in memory; thread-safe."""

    def __init__(self, entity_types: tuple[str, ...], clock: Callable[[], float]) -> None:
        self._entity_types = entity_types
        self._clock = clock
        self._webhooks: dict[str, LegacyWebhook] = {}
        self._lock = threading.Lock()

    def add(self, changes: WebhookChanges) -> LegacyWebhook:
        """Configure a webhook; Capture assigns its uuid and callback hash.

        Raises:
            CaptureError: 100 for a missing parameter, 200/222/223 for an invalid one.
        """
        for name in ("callback", "event_type", "entity_type"):
            if getattr(changes, name) is None:
                raise CaptureError(100, f"missing required argument: {name}", argument_name=name)
        webhook = LegacyWebhook(
            uuid=str(uuid_module.uuid4()),
            callback="",
            event_type="",
            entity_type="",
            callback_hash=secrets.token_hex(20),
            created=capture_time(self._clock()),
        )
        webhook = self._validated(webhook, changes)
        with self._lock:
            self._webhooks[webhook.uuid] = webhook
        return webhook

    def update(self, uuid: str, changes: WebhookChanges) -> LegacyWebhook:
        """Overwrite the values sent; the others stay.

        Raises:
            CaptureError: 310 for an unknown uuid, 100/200/222/223 as for ``add``.
        """
        with self._lock:
            webhook = self._validated(self._get(uuid), changes)
            self._webhooks[uuid] = webhook
        return webhook

    def find(self, uuid: str) -> LegacyWebhook:
        """The webhook with this uuid.

        Raises:
            CaptureError: 310 record_not_found.
        """
        with self._lock:
            return self._get(uuid)

    def all(self) -> list[LegacyWebhook]:
        """Every webhook, oldest first."""
        with self._lock:
            return list(self._webhooks.values())

    def delete(self, uuid: str) -> LegacyWebhook:
        """Remove a webhook.

        Raises:
            CaptureError: 310 record_not_found.
        """
        with self._lock:
            webhook = self._get(uuid)
            del self._webhooks[uuid]
        return webhook

    def _get(self, uuid: str) -> LegacyWebhook:
        webhook = self._webhooks.get(uuid)
        if webhook is None:
            raise CaptureError(310, f"no webhook with uuid {uuid}")
        return webhook

    def _validated(self, webhook: LegacyWebhook, changes: WebhookChanges) -> LegacyWebhook:
        if changes.callback is not None:
            parts = urlsplit(changes.callback)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise CaptureError(200, f"callback must be an http or https URL, got {changes.callback!r}")
            webhook = replace(webhook, callback=changes.callback)
        if changes.entity_type is not None:
            if changes.entity_type not in self._entity_types:
                raise CaptureError(222, f"unknown entity type: {changes.entity_type}")
            webhook = replace(webhook, entity_type=changes.entity_type)
        if changes.event_type is not None:
            event_type = changes.event_type.lower()
            if event_type not in EVENT_TYPES:
                raise CaptureError(200, f"event_type must be add, update or delete, got {changes.event_type!r}")
            # Attributes only mean something for update; a webhook that stops being one drops them.
            kept = webhook.attributes if event_type == "update" else []
            webhook = replace(webhook, event_type=event_type, attributes=kept)
        if changes.attributes is not None:
            webhook = replace(webhook, attributes=_attributes(changes.attributes, webhook.event_type))
        if webhook.event_type == "update" and not webhook.attributes:
            raise CaptureError(
                100, "missing required argument: attributes (required for update)", argument_name="attributes"
            )
        return webhook


def _attributes(attributes: list[str], event_type: str) -> list[str]:
    if event_type != "update":
        raise CaptureError(200, "attributes is only allowed with event_type update")
    unknown = [path for path in attributes if not is_known(path)]
    if unknown:
        raise CaptureError(223, f"unknown attribute: {unknown[0]}", attribute_name=unknown[0])
    return list(attributes)
