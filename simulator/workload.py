"""Random profile activity: creates, updates and deletes, made through the ``ProfileStore``.

The changes go through the store like an API client's, so the emitter announces them the same
way, and a Capture API fetch that follows a webhook finds the record the webhook names.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from simulator.profiles import ProfileStore

_GIVEN = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Donald", "Frances", "Niklaus")
_FAMILY = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Knuth", "Allen", "Wirth")
_CITIES = (("Portland", "US"), ("Lyon", "FR"), ("Leeds", "GB"), ("Graz", "AT"), ("Osaka", "JP"), ("Perth", "AU"))
BURST_GAP = 1.0  # seconds between two bursts when no rate is given
# Weights of create, update and delete once some profiles exist.
_ACTIONS = ("create", "update", "delete")
_WEIGHTS = (0.35, 0.5, 0.15)


class _Workload:
    def __init__(self, store: ProfileStore, entity_type: str, rng: random.Random) -> None:
        self.store = store
        self.entity_type = entity_type
        self.rng = rng
        self.live: dict[str, dict[str, Any]] = {}  # uuid -> the values this workload last wrote
        self.uuids: list[str] = []  # the keys of ``live``, for an O(1) random pick ...
        self.position: dict[str, int] = {}  # ... and O(1) removal
        self.serial = 0
        # Emails are unique in Capture's schema; the tag keeps two workloads' addresses apart.
        self.tag = f"{rng.getrandbits(32):08x}"

    def step(self) -> None:
        """One change; updates and deletes only touch profiles this workload created."""
        action = self.rng.choices(_ACTIONS, _WEIGHTS)[0] if self.live else "create"
        uuid = self.uuids[self.rng.randrange(len(self.uuids))] if self.uuids else ""
        try:
            if action == "update":
                self.store.update(self.entity_type, uuid, self._changes(self.live[uuid]))
                return
            if action == "delete":
                self.store.delete(self.entity_type, uuid)
                self._forget(uuid)
                return
        except KeyError:
            self._forget(uuid)  # someone else deleted it; make a new one instead
        self._create()

    def _forget(self, uuid: str) -> None:
        del self.live[uuid]
        index = self.position.pop(uuid)
        last = self.uuids.pop()
        if last != uuid:
            self.uuids[index] = last
            self.position[last] = index

    def _create(self) -> None:
        self.serial += 1
        given, family = self.rng.choice(_GIVEN), self.rng.choice(_FAMILY)
        city, country = self.rng.choice(_CITIES)
        values: dict[str, Any] = {
            "email": f"{given.lower()}.{family.lower()}.{self.tag}.{self.serial}@example.com",
            "givenName": given,
            "familyName": family,
            "primaryAddress": {"city": city, "country": country},
        }
        record = self.store.create(self.entity_type, values)
        self.live[record["uuid"]] = values
        self.position[record["uuid"]] = len(self.uuids)
        self.uuids.append(record["uuid"])

    def _changes(self, values: dict[str, Any]) -> dict[str, Any]:
        # Each update changes at least one attribute, so entityUpdated always names some.
        self.serial += 1
        field = self.rng.choice(("email", "givenName", "familyName", "primaryAddress.city"))
        if field == "email":
            change: dict[str, Any] = {"email": f"user.{self.tag}.{self.serial}@example.org"}
        elif field == "primaryAddress.city":
            city, country = self.rng.choice([c for c in _CITIES if c[0] != values["primaryAddress"]["city"]])
            change = {"primaryAddress": {"city": city, "country": country}}
        else:
            pool = _GIVEN if field == "givenName" else _FAMILY
            change = {field: self.rng.choice([name for name in pool if name != values[field]])}
        _merge(values, change)
        return change


def _merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def check_arguments(count: int, rate: float | None, burst: int | None) -> None:
    """Refuse a workload that cannot run.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    if count < 0:
        raise ValueError(f"count: {count!r} must be 0 or more")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate: {rate!r} must be more than 0 changes per second")
    if burst is not None and burst < 1:
        raise ValueError(f"burst: {burst!r} must be 1 or more")


async def run_workload(
    store: ProfileStore,
    count: int,
    *,
    entity_type: str = "user",
    rate: float | None = None,
    burst: int | None = None,
    seed: int | None = None,
) -> int:
    """Make ``count`` random changes and return how many were made.

    ``rate`` spaces them evenly at that many per second. ``burst`` makes them in groups of that
    size, back to back, one group per second, or at ``rate`` changes per second on average when
    both are given. With neither, they are made as fast as the store takes them, yielding to the
    event loop every 100 changes so that deliveries start meanwhile.

    Raises:
        ValueError: for a negative count, a rate that is not positive or a burst below 1.
    """
    check_arguments(count, rate, burst)
    # Not for security: a seeded generator makes a workload repeatable.
    workload = _Workload(store, entity_type, random.Random(seed))  # noqa: S311
    group = burst or (1 if rate else 100)
    started = time.monotonic()
    made = 0
    while made < count:
        for _ in range(min(group, count - made)):
            workload.step()
            made += 1
        if made >= count:
            break
        if rate:
            await asyncio.sleep(max(0.0, started + made / rate - time.monotonic()))
        else:
            await asyncio.sleep(BURST_GAP if burst else 0)
    return made
