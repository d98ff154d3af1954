"""The routing part of the configuration: ``destinations``, ``routes`` and ``delivery``.

Only the shape and its validation live here (the ingress validates the whole file too, and
``service`` never imports ``workers``); matching and payload shaping are ``workers/rules.py``,
sending is ``workers/delivery.py`` and ``workers/sinks/``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import jmespath
import jmespath.exceptions
from pydantic import BeforeValidator, Field, model_validator

from service.configmodel import ConfigModel, Duration, Ttl, one_or_list
from service.destination_config import (
    NAME_PATTERN,
    BreakerSettings,
    Destination,
    DestinationName,
    Schedule,
)

# Capture attribute paths: names of letters, digits and "_", joined by dots (``primaryAddress.city``).
_DOT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# The four Capture event types a route may ask for; Capture may add more, which no route matches.
EVENT_TYPES = ("entityCreated", "entityUpdated", "entityDeleted", "test")


def _dot_path(value: object) -> object:
    if not isinstance(value, str) or not _DOT_PATH.match(value):
        raise ValueError(f"{value!r} is not an attribute path; use names joined by dots, e.g. primaryAddress.city")
    return value


def _jmespath(value: object) -> object:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a JMESPath expression over event, record, previous and changes")
    try:
        jmespath.compile(value)
    except jmespath.exceptions.JMESPathError as exc:
        # jmespath's message points at the column; the expression is the operator's own text.
        raise ValueError(f"is not a valid JMESPath expression: {str(exc).splitlines()[0]}") from None
    return value


DotPath = Annotated[str, BeforeValidator(_dot_path)]
DotPaths = Annotated[list[DotPath], BeforeValidator(one_or_list)]
Expression = Annotated[str, BeforeValidator(_jmespath)]
EventType = Literal["entityCreated", "entityUpdated", "entityDeleted", "test"]


class Route(ConfigModel):
    """One routing rule: which events it takes, what they must look like, where they go and in what shape."""

    name: str = Field(pattern=NAME_PATTERN)
    on: Annotated[list[EventType], BeforeValidator(one_or_list)] = Field(
        default=["entityCreated", "entityUpdated", "entityDeleted"], min_length=1
    )
    entity_type: Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(one_or_list)] | None = None
    changed_any: DotPaths = Field(default_factory=list)
    changed_all: DotPaths = Field(default_factory=list)
    # JMESPath over {event, record, previous, changes}; a truthy result matches.
    when: Expression | None = None
    to: Annotated[list[DestinationName], BeforeValidator(one_or_list), Field(min_length=1)]
    # Payload shaping, applied in this order: fields (keep only these), hash, rename, drop.
    fields: DotPaths | None = None
    hash: DotPaths = Field(default_factory=list)
    rename: dict[DotPath, DotPath] = Field(default_factory=dict)
    drop: DotPaths = Field(default_factory=list)


class DeliverySettings(ConfigModel):
    """How deliveries are queued, retried and dead-lettered."""

    queue: str = Field(default="capture-deliveries", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Wait before each attempt (the first is 0: at once): about two days in all, so a receiver's
    # outage over a weekend loses nothing.
    schedule: Schedule = Field(
        default=[0, 5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600], min_length=1
    )
    # Each wait is spread by up to this share either way, so that retries of an outage do not arrive at once.
    jitter: float = Field(default=0.2, ge=0, lt=1)
    # A Retry-After longer than this is capped (a receiver cannot park a delivery for a month).
    max_retry_after: Duration = Field(default=24 * 3600.0, gt=0)
    breaker: BreakerSettings = BreakerSettings()
    # How long a rate-limited send may wait for its turn before it is rescheduled instead.
    rate_limit_wait: Duration = Field(default=5.0, ge=0)
    dead_letter_retention: Ttl = 14 * 86400
    job_timeout: Ttl = 120
    # The last delivered version per (destination, uuid) is remembered this long (the stale guard).
    stale_guard_ttl: Ttl = 30 * 86400

    @model_validator(mode="after")
    def _guard_outlives_replays(self) -> DeliverySettings:
        # A delivery replayed from the dead letter must still meet the guard, or an old update
        # replayed after a deletion was forgotten would bring the profile back downstream.
        needed = self.dead_letter_retention + sum(self.schedule) + self.max_retry_after
        if self.stale_guard_ttl < needed:
            raise ValueError(
                f"stale_guard_ttl ({self.stale_guard_ttl} s) must be at least dead_letter_retention + the "
                f"schedule + max_retry_after ({needed:.0f} s), so that a replayed delivery still meets the stale guard"
            )
        return self


def short_stale_guards(delivery: DeliverySettings, destinations: dict[str, Destination]) -> list[tuple[str, str]]:
    """``(key_path, problem)`` for destinations whose own schedule outlasts the stale guard's memory."""
    problems = []
    for name, config in destinations.items():
        if config.schedule is None:
            continue
        needed = delivery.dead_letter_retention + sum(config.schedule) + delivery.max_retry_after
        if delivery.stale_guard_ttl < needed:
            problems.append(
                (
                    f"destinations.{name}.schedule",
                    f"with this schedule delivery.stale_guard_ttl ({delivery.stale_guard_ttl} s) must be at least "
                    f"{needed:.0f} s (dead_letter_retention + the schedule + max_retry_after); shorten the schedule "
                    "or raise stale_guard_ttl",
                )
            )
    return problems


def unknown_destinations(routes: list[Route], destinations: dict[str, Destination]) -> list[tuple[str, str]]:
    """``(key_path, problem)`` for every route target that names no destination."""
    problems = []
    for index, route in enumerate(routes):
        for position, name in enumerate(route.to):
            if name not in destinations:
                known = ", ".join(sorted(destinations)) or "none configured"
                problems.append((f"routes[{index}].to[{position}]", f"unknown destination {name!r}; known: {known}"))
    return problems


def duplicate_route_names(routes: list[Route]) -> list[tuple[str, str]]:
    """``(key_path, problem)`` for every route whose name an earlier route already has."""
    seen: set[str] = set()
    problems = []
    for index, route in enumerate(routes):
        if route.name in seen:
            problems.append((f"routes[{index}].name", f"{route.name!r} is already the name of an earlier route"))
        seen.add(route.name)
    return problems


def routes_needing_capture(routes: list[Route]) -> list[tuple[str, str]]:
    """``(key_path, problem)`` for routes that need records fetched, when no ``capture:`` is configured."""
    problems = []
    for index, route in enumerate(routes):
        fetched = sorted(set(route.on) & {"entityCreated", "entityUpdated"})
        if fetched:
            problems.append(
                (
                    f"routes[{index}].on",
                    f"{', '.join(fetched)} events need their records fetched from Capture; configure the capture: "
                    "section (or route only entityDeleted and test events)",
                )
            )
    return problems
