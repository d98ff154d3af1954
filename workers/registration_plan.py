"""The registration plan: what ``register`` would change to make Capture match ``webhooks:``.

Pure functions over the declared state and the state read from Capture, so the plan can be shown
before anything changes (and tested without a network). Matching: v3 subscriptions by ``title``
(Akamai keeps titles unique); legacy webhooks by ``callback`` + ``event_type`` + ``entity_type``
(the only fields of a legacy webhook that identify it; ``attributes`` is what may change). Each
declared registration becomes ``create``, ``update`` (only the fields that differ) or
``unchanged``; everything else found is an extra: ``delete`` with ``--prune`` when it carries the
managed marker (title prefix, callback prefix), otherwise ``extra``, which is never touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from service.secret import mask_url
from service.webhooks_config import LegacySection, SubscriptionSpec, V3Section, under_prefix
from workers.akamai_api import Subscription

Kind = Literal["v3", "legacy"]
Action = Literal["create", "update", "unchanged", "delete", "extra"]
# What --apply does, in this order: a replacement exists before anything is removed, so a run
# that stops half-way never leaves Capture with less than it had.
APPLY_ORDER: tuple[Action, ...] = ("create", "update", "delete")
LegacyKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class LegacyWebhook:
    """A legacy webhook as ``/webhooks/list`` describes it; fields Capture left out are None."""

    uuid: str
    callback: str | None
    event_type: str | None
    entity_type: str | None
    attributes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LegacyWebhook:
        """Parse one element of ``/webhooks/list`` (its shape is not documented beyond ``uuid``, §1.3).

        Raises:
            ValueError: the element has no uuid, so it could be neither matched nor deleted.
        """
        uuid = data.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise ValueError("a legacy webhook without a uuid")
        attributes = data.get("attributes")
        if isinstance(attributes, str):
            # Capture takes the list as a JSON string; an answer may carry it the same way.
            try:
                attributes = json.loads(attributes)
            except ValueError:
                attributes = None
        return cls(
            uuid=uuid,
            callback=_text(data.get("callback")),
            event_type=(_text(data.get("event_type")) or "").lower() or None,
            entity_type=_text(data.get("entity_type")),
            attributes=tuple(a for a in attributes if isinstance(a, str)) if isinstance(attributes, list) else (),
        )

    @property
    def key(self) -> LegacyKey | None:
        """What it is matched by, or None when Capture did not say."""
        if self.callback is None or self.event_type is None or self.entity_type is None:
            return None
        return (self.callback, self.event_type, self.entity_type)


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One line of the plan.

    ``name`` is the title (v3) or ``callback event_type entity_type`` (legacy); ``target_id`` the
    subscription id or webhook uuid once one exists; ``fields`` what a create or update sends
    (an update only the fields that differ) and ``before`` their current values.
    """

    kind: Kind
    action: Action
    name: str
    managed: bool
    target_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    before: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        """Whether ``--apply`` would change something for this step."""
        return self.action in APPLY_ORDER


@dataclass(frozen=True, slots=True)
class Plan:
    """Every step, in display order: declared registrations first, then the extras."""

    steps: tuple[PlanStep, ...]
    prune: bool

    @property
    def pending(self) -> list[PlanStep]:
        """The steps ``--apply`` would carry out, in the order it would."""
        return [step for action in APPLY_ORDER for step in self.steps if step.action == action]

    def count(self, action: Action) -> int:
        """How many steps have ``action``."""
        return sum(1 for step in self.steps if step.action == action)


def plan_v3(spec: V3Section, current: Sequence[Subscription], *, prune: bool) -> list[PlanStep]:
    """The steps that make Akamai's subscriptions match ``spec``."""
    by_title = {subscription.title: subscription for subscription in current}
    steps = [_v3_step(wanted, by_title.get(wanted.title)) for wanted in spec.subscriptions]
    declared = {wanted.title for wanted in spec.subscriptions}
    for subscription in current:
        if subscription.title not in declared:
            managed = subscription.title.startswith(spec.title_prefix)
            steps.append(_extra("v3", subscription.title, subscription.id, managed=managed, prune=prune))
    return steps


def _v3_step(wanted: SubscriptionSpec, have: Subscription | None) -> PlanStep:
    desired: dict[str, Any] = {
        "title": wanted.title,
        "endpoint": wanted.endpoint,
        "events": list(wanted.events),
        "enabled": wanted.enabled,
    }
    if wanted.filter:
        desired["filter"] = wanted.filter
    if have is None:
        return PlanStep("v3", "create", wanted.title, managed=True, fields=desired)
    current: dict[str, Any] = {
        "endpoint": have.endpoint,
        "events": list(have.events),
        "enabled": have.enabled,
        "filter": have.filter or None,
    }
    desired["filter"] = wanted.filter or None
    changed = {
        name: desired[name]
        for name in ("endpoint", "events", "enabled", "filter")
        if not _same(name, desired[name], current[name])
    }
    action: Action = "update" if changed else "unchanged"
    before = {name: current[name] for name in changed}
    return PlanStep("v3", action, wanted.title, managed=True, target_id=have.id, fields=changed, before=before)


def plan_legacy(
    spec: LegacySection, current: Sequence[LegacyWebhook], *, default_entity_type: str, prune: bool
) -> list[PlanStep]:
    """The steps that make the application's legacy webhooks match ``spec``.

    ``default_entity_type`` (``capture.entity_type``) stands in for a declared webhook without one.
    When Capture lists the same webhook twice, the first copy is matched and the others are extras.
    """
    unmatched = list(current)
    steps = []
    for wanted in spec.webhooks:
        key: LegacyKey = (wanted.callback, wanted.event_type, wanted.entity_type or default_entity_type)
        have = next((webhook for webhook in unmatched if webhook.key == key), None)
        if have is not None:
            unmatched.remove(have)
        steps.append(_legacy_step(key, wanted.attributes, have))
    for webhook in unmatched:
        managed = webhook.callback is not None and under_prefix(webhook.callback, spec.callback_prefix)
        steps.append(_extra("legacy", legacy_name(webhook), webhook.uuid, managed=managed, prune=prune))
    return steps


def _legacy_step(key: LegacyKey, attributes: list[str] | None, have: LegacyWebhook | None) -> PlanStep:
    name = legacy_name(key)
    if have is None:
        fields: dict[str, Any] = {"callback": key[0], "event_type": key[1], "entity_type": key[2]}
        if attributes is not None:
            fields["attributes"] = list(attributes)
        return PlanStep("legacy", "create", name, managed=True, fields=fields)
    # Only an update webhook has attributes; the other three fields are what matched it.
    wanted = list(attributes or [])
    if _same("attributes", wanted, list(have.attributes)):
        return PlanStep("legacy", "unchanged", name, managed=True, target_id=have.uuid)
    return PlanStep(
        "legacy",
        "update",
        name,
        managed=True,
        target_id=have.uuid,
        fields={"attributes": wanted},
        before={"attributes": list(have.attributes)},
    )


def legacy_name(webhook: LegacyWebhook | LegacyKey) -> str:
    """``callback event_type entity_type``, with ``?`` for what Capture did not say.

    A callback may carry Basic credentials (``https://user:password@host/...``): the name, which
    is printed and logged, shows it with the password masked.
    """
    callback, event_type, entity_type = (
        (webhook.callback, webhook.event_type, webhook.entity_type) if isinstance(webhook, LegacyWebhook) else webhook
    )
    return " ".join(part or "?" for part in (mask_url(callback) if callback else None, event_type, entity_type))


def _extra(kind: Kind, name: str, target_id: str, *, managed: bool, prune: bool) -> PlanStep:
    return PlanStep(kind, "delete" if managed and prune else "extra", name, managed=managed, target_id=target_id)


def _same(name: str, wanted: Any, have: Any) -> bool:
    # Order carries no meaning in these lists: Capture may return them in its own order.
    if name in ("events", "attributes"):
        return sorted(wanted) == sorted(have)
    return bool(wanted == have)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
