"""The ``webhooks:`` part of the configuration: the registrations ``capture-relay register`` keeps in Capture.

Two kinds, reconciled separately (reference/capture-protocol.md §3.6 and §1)::

    webhooks:
      v3:                           # Akamai Webhooks v3 subscriptions (capture.webhooks_api)
        title_prefix: capture-relay
        subscriptions: [{title, endpoint, events, enabled, filter}]
      legacy:                       # legacy /webhooks/* registrations (capture:)
        callback_prefix: https://hooks.example.com/webhooks/capture/
        webhooks: [{callback, event_type, entity_type, attributes}]

The prefixes mark what this tool manages: ``register --prune`` deletes only registrations whose
title (v3) or callback (legacy) starts with them, never anything else on the tenant. Every declared
registration must carry its prefix, or a later prune could never remove it once it leaves the list.
Only the shape and its validation live here (``service`` never imports ``workers``); reading and
changing Capture is ``workers/registration.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from service.configmodel import ConfigModel, HttpsUrl, one_or_list
from service.routing_config import DotPath

# Akamai's subscription events (§3.6); ``test`` notifications need no subscription.
SubscriptionEvent = Literal["entityCreated", "entityUpdated", "entityDeleted"]
# Capture stores legacy event types in lower case; its docs write them ADD / UPDATE / DELETE.
LegacyEventType = Literal["add", "update", "delete"]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class SubscriptionSpec(ConfigModel):
    """One v3 subscription as declared; it is matched to Akamai's by ``title``."""

    # Akamai: 2-200 characters, unique per customer.
    title: str = Field(min_length=2, max_length=200)
    endpoint: HttpsUrl
    events: Annotated[list[SubscriptionEvent], BeforeValidator(one_or_list)] = Field(min_length=1)
    enabled: bool = True
    # A JSON Schema (draft-07 subset) over the ``events`` claim; Akamai's filter, passed as is.
    filter: dict[str, Any] | None = None

    @field_validator("events")
    @classmethod
    def _events_once(cls, events: list[str]) -> list[str]:
        repeated = sorted({event for event in events if events.count(event) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} is listed more than once")
        return events


class LegacyWebhookSpec(ConfigModel):
    """One legacy webhook as declared; matched by ``callback`` + ``event_type`` + ``entity_type``."""

    callback: HttpsUrl
    event_type: Annotated[LegacyEventType, BeforeValidator(_lower)]
    # None: capture.entity_type.
    entity_type: str | None = Field(default=None, min_length=1)
    # The attributes whose change fires an ``update`` webhook; Capture requires them there and
    # refuses them elsewhere. Validated even when left out, so a bare update is an error here.
    attributes: Annotated[list[DotPath], BeforeValidator(one_or_list)] | None = Field(
        default=None, validate_default=True
    )

    @field_validator("attributes")
    @classmethod
    def _attributes_only_with_update(cls, attributes: list[str] | None, info: ValidationInfo) -> list[str] | None:
        event_type = info.data.get("event_type")
        if event_type is None:
            return attributes  # event_type itself is invalid, and reported as such
        if event_type == "update" and not attributes:
            raise ValueError("required with event_type update: the attributes whose change fires the webhook")
        if event_type != "update" and attributes is not None:
            raise ValueError(f"only allowed with event_type update, not {event_type}")
        return attributes


class V3Section(ConfigModel):
    """The Akamai Webhooks v3 subscriptions of ``capture.webhooks_api``'s customer."""

    # Subscriptions whose title starts with this are ours: --prune may delete them.
    title_prefix: str = Field(default="capture-relay", min_length=2, max_length=200)
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)


class LegacySection(ConfigModel):
    """The legacy ``/webhooks/*`` registrations of the ``capture:`` application."""

    # Webhooks whose callback lies under this URL are ours: --prune may delete them.
    callback_prefix: HttpsUrl
    webhooks: list[LegacyWebhookSpec] = Field(default_factory=list)


class WebhooksSection(ConfigModel):
    """Desired state for ``capture-relay register``; a kind left out is never read or changed."""

    v3: V3Section | None = None
    legacy: LegacySection | None = None


def under_prefix(url: str, prefix: str) -> bool:
    """Whether ``url`` is ``prefix`` or lies below it, on the same origin and a path boundary.

    ``https://hooks.example.com/capture`` covers ``https://hooks.example.com/capture/v3`` but not
    ``https://hooks.example.com/capture-other`` or ``https://hooks.example.com.evil.test/capture``.
    Credentials in either URL (``https://user:password@host``) play no part.
    """
    have, base = urlsplit(url), urlsplit(prefix)
    if (have.scheme.lower(), _host(have.netloc)) != (base.scheme.lower(), _host(base.netloc)):
        return False
    return have.path == base.path or have.path.startswith(base.path.rstrip("/") + "/")


def _host(netloc: str) -> str:
    return netloc.rpartition("@")[2].lower()


def webhooks_problems(
    section: WebhooksSection, *, capture_entity_type: str | None, has_webhooks_api: bool
) -> list[tuple[str, str]]:
    """``(key_path, problem)`` for what the models cannot see alone: uniqueness, prefixes, credentials.

    Args:
        section: the validated ``webhooks:`` section.
        capture_entity_type: ``capture.entity_type``, or None when ``capture:`` is not configured.
        has_webhooks_api: whether ``capture.webhooks_api`` is configured.
    """
    problems: list[tuple[str, str]] = []
    if section.v3 is not None:
        if not has_webhooks_api:
            problems.append(
                (
                    "webhooks.v3",
                    "v3 subscriptions are managed through the Akamai Webhooks v3 API: configure "
                    "capture.webhooks_api (base_url, customer_id, client_id, client_secret)",
                )
            )
        problems += _v3_problems(section.v3)
    if section.legacy is not None:
        if capture_entity_type is None:
            problems.append(
                (
                    "webhooks.legacy",
                    "legacy webhooks are managed through the Capture API: configure the capture: section",
                )
            )
        problems += _legacy_problems(section.legacy, capture_entity_type or "user")
    return problems


def _v3_problems(v3: V3Section) -> list[tuple[str, str]]:
    problems = []
    first_index: dict[str, int] = {}
    for index, subscription in enumerate(v3.subscriptions):
        path = f"webhooks.v3.subscriptions[{index}].title"
        if subscription.title in first_index:
            problems.append(
                (
                    path,
                    f"{subscription.title!r} is already the title of subscriptions[{first_index[subscription.title]}]; "
                    "Akamai requires unique titles, and register matches subscriptions by title",
                )
            )
        first_index.setdefault(subscription.title, index)
        if not subscription.title.startswith(v3.title_prefix):
            problems.append(
                (
                    path,
                    f"{subscription.title!r} does not start with webhooks.v3.title_prefix {v3.title_prefix!r}, so "
                    "register --prune could never remove it once it leaves this list; start the title with the prefix",
                )
            )
    return problems


def _legacy_problems(legacy: LegacySection, default_entity_type: str) -> list[tuple[str, str]]:
    problems = []
    first_index: dict[tuple[str, str, str], int] = {}
    for index, webhook in enumerate(legacy.webhooks):
        key = (webhook.callback, webhook.event_type, webhook.entity_type or default_entity_type)
        if key in first_index:
            problems.append(
                (
                    f"webhooks.legacy.webhooks[{index}]",
                    f"the same callback, event_type and entity_type as webhooks[{first_index[key]}]; "
                    "register matches legacy webhooks by these three, so each combination may appear once",
                )
            )
        first_index.setdefault(key, index)
        if not under_prefix(webhook.callback, legacy.callback_prefix):
            problems.append(
                (
                    f"webhooks.legacy.webhooks[{index}].callback",
                    "is not under webhooks.legacy.callback_prefix, so register --prune could never remove it once it "
                    "leaves this list; use a callback below the prefix",
                )
            )
    return problems
