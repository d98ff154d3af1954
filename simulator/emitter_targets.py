"""The receivers the emitter delivers to, what each one gets, and the workload ``start()`` may begin."""

from __future__ import annotations

import json
import secrets
import uuid as uuid_module
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from simulator.config import SimulatorConfig
from simulator.emitter_log import Delivery, Format
from simulator.keys import KeyRing
from simulator.profiles import ProfileChange
from simulator.setevents import LEGACY_HEADERS, V3_HEADERS, legacy_element, sign_change, sign_test_event

_FORMATS: dict[str, Format] = {"v3": "v3", "legacy": "legacy"}


@dataclass(slots=True)
class Target:
    """A receiver that gets every change, with the faults chosen for it."""

    id: str
    url: str
    format: Format
    audience: str  # the ``aud`` of v3 tokens
    callback_hash: str  # the ``hash`` of legacy elements
    duplicates: float  # probability that a delivery is sent twice
    reorder_window: int  # deliveries are shuffled in windows of this many (0 or 1: in order)
    buffer: list[Delivery] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """The target as the control API shows it."""
        names = ("id", "url", "format", "audience", "callback_hash", "duplicates", "reorder_window")
        return {name: getattr(self, name) for name in names}


def make_target(
    target_id: str,
    url: str,
    *,
    format: str = "v3",
    audience: str | None = None,
    callback_hash: str | None = None,
    duplicates: float = 0.0,
    reorder_window: int = 0,
) -> Target:
    """A checked target; ``audience`` defaults to ``url``, ``callback_hash`` to 40 random hex characters.

    Janrain generates a callback hash when none is configured, hence the random default.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url: {url!r} is not an absolute http(s) URL")
    checked_format = _FORMATS.get(format)
    if checked_format is None:
        raise ValueError(f"format: {format!r} is not v3 or legacy")
    if not 0.0 <= duplicates <= 1.0:
        raise ValueError(f"duplicates: {duplicates!r} is not a probability between 0 and 1")
    if reorder_window < 0:
        raise ValueError(f"reorder_window: {reorder_window!r} must be 0 or more")
    hash_ = callback_hash or secrets.token_hex(20)
    return Target(target_id, url, checked_format, audience or url, hash_, duplicates, reorder_window)


def change_delivery(
    target: Target, change: ProfileChange, config: SimulatorConfig, keys: KeyRing, *, now: float
) -> Delivery:
    """What ``target`` gets for one change: a token signed now, or a one-element legacy batch."""
    if target.format == "v3":
        signed = sign_change(change, config, keys, audience=target.audience, now=now)
        body = signed.token.encode()
        return Delivery(target.id, "v3", body, V3_HEADERS, signed.jti, change.kind, change.uuid, signed.event_id)
    body = json.dumps([legacy_element(change, target.callback_hash)]).encode()
    # Legacy deliveries carry no id; the simulator makes one up to tell its records apart.
    return Delivery(target.id, "legacy", body, LEGACY_HEADERS, uuid_module.uuid4().hex, change.kind, change.uuid)


def notification_delivery(target: Target, config: SimulatorConfig, keys: KeyRing, *, now: float) -> Delivery:
    """Akamai's test notification for a v3 target."""
    signed = sign_test_event(config, keys, audience=target.audience, now=now)
    return Delivery(target.id, "v3", signed.token.encode(), V3_HEADERS, signed.jti, "test", None, signed.event_id)


@dataclass(frozen=True, slots=True)
class WorkloadPlan:
    """A workload for ``Emitter.start()`` to begin (set from the command line)."""

    count: int
    rate: float | None = None
    burst: int | None = None
    seed: int | None = None
