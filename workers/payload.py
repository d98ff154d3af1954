"""The JSON document a destination receives for one event, shaped by the route that sent it.

A route shapes the record in four steps, always in this order:

1. ``fields``: keep only these dot paths (nesting kept); without ``fields``, the whole record;
2. ``hash``: replace each value by the lowercase hex SHA-256 of its UTF-8 bytes (strings) or of
   its canonical JSON (anything else); ``null`` stays ``null``;
3. ``rename``: move each value from its old dot path to its new one (all at once, so two names
   can swap);
4. ``drop``: remove these paths (after renaming, so they name the new paths).

``changes`` (updates only) go through the same steps, so that no value left out of the record
can reach the destination through them: a change is kept only where a kept field covers it, its
old and new values are hashed under a hashed path, its path is renamed, and it is dropped under a
dropped path. A change to a whole object is split into its parts first wherever a step names a
path inside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from service.events import Event
from service.routing_config import Route
from workers.capture_api import Record
from workers.changes import Change, is_missing, is_within, pop, project, put, same, value_at
from workers.delivery_job import delivery_id_for
from workers.rules import CompiledRoute, Facts, render_changes


def build_payload(event: Event, destination: str, route: CompiledRoute, facts: Facts) -> dict[str, Any]:
    """The exact document ``destination`` receives for ``event`` through ``route``.

    ``id`` is the delivery id (``<event-id>:<destination>``), the key receivers deduplicate on;
    ``changes`` is present for ``entityUpdated`` only.
    """
    payload: dict[str, Any] = {
        "id": delivery_id_for(event.event_id, destination),
        "type": event.type,
        "event_id": event.event_id,
        "source": event.source,
        "entity_type": event.entity_type,
        "uuid": event.uuid,
        "occurred_at": iso_utc(event.occurred_at),
        "route": route.name,
        "record": shape_record(route.route, facts.record),
    }
    if event.type == "entityUpdated":
        payload["changes"] = render_changes(shape_changes(route.route, facts.changes))
    return payload


def iso_utc(moment: float | None) -> str | None:
    """Epoch seconds as ISO-8601 UTC (``2026-11-22T12:00:00Z``, milliseconds only when there are some)."""
    if moment is None:
        return None
    when = datetime.fromtimestamp(moment, UTC)
    text = when.isoformat(timespec="seconds" if when.microsecond == 0 else "milliseconds")
    return text.removesuffix("+00:00") + "Z"


def hash_value(value: Any) -> str | None:
    """SHA-256, lowercase hex, of a string's UTF-8 bytes or of any other value's canonical JSON."""
    if value is None:
        return None
    data = value.encode() if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


def shape_record(route: Route, record: Record | None) -> dict[str, Any] | None:
    """``record`` after the route's ``fields``, ``hash``, ``rename`` and ``drop``; a new object."""
    if record is None:
        return None
    document = _copy_objects(project(record, route.fields) if route.fields is not None else record)
    for path in route.hash:
        value = value_at(document, path, _ABSENT)
        if value is not _ABSENT:
            put(document, path, hash_value(value))
    _rename(document, route.rename)
    for path in route.drop:
        pop(document, path)
    return document


# Local marker for value_at: distinct from null, and from changes' own marker (never returned here).
_ABSENT: Any = object()


def _copy_objects(document: dict[str, Any]) -> dict[str, Any]:
    # Shaping only ever changes objects (paths never enter lists), so lists and scalars are shared.
    return {key: _copy_objects(value) if isinstance(value, dict) else value for key, value in document.items()}


def _rename(document: dict[str, Any], rename: dict[str, str]) -> None:
    # Deepest first, so that renaming ``a.b`` and ``a`` both moves ``a.b`` out before ``a`` goes.
    moved = []
    for old in sorted(rename, key=lambda path: -path.count(".")):
        value = pop(document, old)
        if not is_missing(value):
            moved.append((rename[old], value))
    for new, value in moved:
        put(document, new, value)


def shape_changes(route: Route, changes: dict[str, Change]) -> dict[str, Change]:
    """``changes`` shaped like the record, so that they carry nothing the record does not."""
    items = _split(changes.items(), [*(route.fields or ()), *route.hash, *route.rename])
    if route.fields is not None:
        fields = route.fields
        items = [(path, change) for path, change in items if any(is_within(path, kept) for kept in fields)]
    items = [(path, _hashed(change) if _under(path, route.hash) else change) for path, change in items]
    items = [(_renamed(path, route.rename), change) for path, change in items]
    items = _split(items, route.drop)
    return {path: change for path, change in items if not _under(path, route.drop)}


def _under(path: str, ancestors: Iterable[str]) -> bool:
    return any(is_within(path, ancestor) for ancestor in ancestors)


def _hashed(change: Change) -> Change:
    return Change(hash_value(change.old), hash_value(change.new), change.old_known)


def _renamed(path: str, rename: dict[str, str]) -> str:
    # The most specific rename wins, as in the record, where it is moved out first.
    matches = [old for old in rename if is_within(path, old)]
    if not matches:
        return path
    old = max(matches, key=lambda item: item.count("."))
    return rename[old] + path[len(old) :]


def _split(items: Iterable[tuple[str, Change]], paths: Sequence[str]) -> list[tuple[str, Change]]:
    """Split changes to whole objects into their parts wherever one of ``paths`` lies inside them.

    Afterwards each path either contains a change's path or is unrelated to it, so a step can
    treat every change as a whole.
    """
    result: list[tuple[str, Change]] = []
    for path, change in items:
        inside = any(other.startswith(f"{path}.") for other in paths)
        if inside and (isinstance(change.old, dict) or isinstance(change.new, dict)):
            result.extend(_split(_parts(path, change), paths))
        else:
            result.append((path, change))
    return result


def _parts(path: str, change: Change) -> list[tuple[str, Change]]:
    old = change.old if isinstance(change.old, dict) else {}
    new = change.new if isinstance(change.new, dict) else {}
    parts = []
    for key in (*old, *(key for key in new if key not in old)):
        part = Change(old.get(key), new.get(key), change.old_known)
        if change.old_known and same(part.old, part.new):
            continue
        parts.append((f"{path}.{key}", part))
    return parts
