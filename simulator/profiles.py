"""In-memory user profiles with their version history, as Capture keeps them.

Every change is recorded as a version so that ``/versions/entity`` can answer "the record as
it was at that time", and reported to the listeners (the emitter turns changes into webhooks).
"""

from __future__ import annotations

import copy
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Record = dict[str, Any]
ChangeKind = Literal["entityCreated", "entityUpdated", "entityDeleted"]


def capture_time(at: float) -> str:
    """Capture's timestamp format: ``2016-03-13 19:39:17.856608 +0000``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000")


def parse_capture_time(text: str) -> float:
    """The inverse of ``capture_time``; also takes whole seconds and an omitted offset (UTC).

    Raises:
        ValueError: when ``text`` is in neither form.
    """
    text = text.strip()
    for pattern in ("%Y-%m-%d %H:%M:%S.%f %z", "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            parsed = datetime.strptime(text, pattern)
        except ValueError:
            continue
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    raise ValueError(f"not a Capture timestamp: {text!r}")


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """One create, update or delete, as a webhook would announce it."""

    kind: ChangeKind
    entity_type: str
    uuid: str
    record: Record  # the record after the change (before it, for a delete)
    attributes: list[str]  # dot paths that changed (updates only)
    at: float


@dataclass(slots=True)
class _Profile:
    versions: list[tuple[float, Record]]  # (lastUpdated, record), oldest first
    deleted_at: float | None = None


class ProfileStore:
    """Profiles per entity type. Thread-safe: the emitter may run beside the API handlers."""

    def __init__(self, entity_types: tuple[str, ...] = ("user",), clock: Callable[[], float] = time.time) -> None:
        self._types: dict[str, dict[str, _Profile]] = {name: {} for name in entity_types}
        self._clock = clock
        self._next_id = 1
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ProfileChange], None]] = []

    @property
    def entity_types(self) -> tuple[str, ...]:
        return tuple(self._types)

    def subscribe(self, listener: Callable[[ProfileChange], None]) -> None:
        """Call ``listener`` after every change (outside the lock)."""
        self._listeners.append(listener)

    def create(self, entity_type: str, attributes: Record, *, uuid: str | None = None) -> Record:
        """Add a record; Capture assigns ``id``, ``uuid``, ``created`` and ``lastUpdated``.

        Raises:
            KeyError: for an unknown entity type.
        """
        with self._lock:
            profiles = self._types[entity_type]
            now = self._tick()
            record: Record = copy.deepcopy(attributes)
            record.update(
                id=self._next_id,
                uuid=uuid or str(uuid_module.uuid4()),
                created=capture_time(now),
                lastUpdated=capture_time(now),
            )
            self._next_id += 1
            profiles[record["uuid"]] = _Profile(versions=[(now, record)])
            change = ProfileChange("entityCreated", entity_type, record["uuid"], copy.deepcopy(record), [], now)
        self._notify(change)
        return copy.deepcopy(record)

    def update(self, entity_type: str, uuid: str, changes: Record) -> tuple[Record, list[str]]:
        """Deep-merge ``changes`` into a live record; returns it and the dot paths that changed.

        Raises:
            KeyError: for an unknown entity type or a record that does not exist (or was deleted).
        """
        with self._lock:
            profile = self._live(entity_type, uuid)
            now = self._tick()
            before = profile.versions[-1][1]
            after = copy.deepcopy(before)
            _merge(after, copy.deepcopy(changes))
            changed = sorted(_changed_paths(before, after))
            after["lastUpdated"] = capture_time(now)
            profile.versions.append((now, after))
            change = ProfileChange("entityUpdated", entity_type, uuid, copy.deepcopy(after), changed, now)
        self._notify(change)
        return copy.deepcopy(after), changed

    def delete(self, entity_type: str, uuid: str) -> Record:
        """Delete a live record; its history stays readable through ``version_at``.

        Raises:
            KeyError: for an unknown entity type or a record that does not exist (or was deleted).
        """
        with self._lock:
            profile = self._live(entity_type, uuid)
            now = self._tick()
            profile.deleted_at = now
            last = copy.deepcopy(profile.versions[-1][1])
            change = ProfileChange("entityDeleted", entity_type, uuid, copy.deepcopy(last), [], now)
        self._notify(change)
        return last

    def get(
        self, entity_type: str, *, uuid: str | None = None, id: int | None = None, key: tuple[str, Any] | None = None
    ) -> Record | None:
        """The live record with this uuid, id, or (attribute, value); None when there is none.

        Raises:
            KeyError: for an unknown entity type.
        """
        with self._lock:
            for record_uuid, profile in self._types[entity_type].items():
                if profile.deleted_at is not None:
                    continue
                record = profile.versions[-1][1]
                if (
                    (uuid is not None and record_uuid == uuid)
                    or (id is not None and record["id"] == id)
                    or (key is not None and _lookup(record, key[0]) == key[1])
                ):
                    return copy.deepcopy(record)
        return None

    def version_at(self, entity_type: str, id: int, at: float) -> Record | None:
        """The record with this id as it was at time ``at`` (None before it existed or after its delete).

        Raises:
            KeyError: for an unknown entity type.
        """
        with self._lock:
            for profile in self._types[entity_type].values():
                if profile.versions[0][1]["id"] != id:
                    continue
                if profile.deleted_at is not None and at >= profile.deleted_at:
                    return None
                found = [record for stamp, record in profile.versions if stamp <= at]
                return copy.deepcopy(found[-1]) if found else None
        return None

    def live(self, entity_type: str) -> Iterator[Record]:
        """Copies of all live records, in id order.

        Raises:
            KeyError: for an unknown entity type.
        """
        with self._lock:
            records = [p.versions[-1][1] for p in self._types[entity_type].values() if p.deleted_at is None]
            snapshot = copy.deepcopy(sorted(records, key=lambda record: record["id"]))
        return iter(snapshot)

    def _live(self, entity_type: str, uuid: str) -> _Profile:
        profile = self._types[entity_type].get(uuid)
        if profile is None or profile.deleted_at is not None:
            raise KeyError(uuid)
        return profile

    def _tick(self) -> float:
        # Strictly increasing, so that two changes in the same microsecond stay ordered.
        now = self._clock()
        last = max((p.versions[-1][0] for ps in self._types.values() for p in ps.values()), default=0.0)
        return max(now, last + 1e-6)

    def _notify(self, change: ProfileChange) -> None:
        for listener in self._listeners:
            listener(change)


def _merge(target: Record, changes: Record) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _changed_paths(before: Any, after: Any, prefix: str = "") -> set[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        paths: set[str] = set()
        for key in before.keys() | after.keys():
            if key == "lastUpdated" and not prefix:
                continue
            paths |= _changed_paths(before.get(key), after.get(key), f"{prefix}{key}.")
        return paths
    return set() if before == after else {prefix.rstrip(".")}


def _lookup(record: Record, path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
