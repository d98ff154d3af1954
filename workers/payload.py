"""The JSON document a destination receives for one event, shaped by the route that sent it.

A route shapes the record in four steps, always in this order:

1. ``fields``: keep only these dot paths (nesting kept); without ``fields``, the whole record;
2. ``hash``: replace each value by the lowercase hex SHA-256 of its UTF-8 bytes (strings) or of
   its canonical JSON (anything else); ``null`` stays ``null``;
3. ``rename``: move each value from its old dot path to its new one (all at once, so two names
   can swap);
4. ``drop``: remove these paths (after renaming, so they name the new paths).

A path through a plural (``profiles.identifier``) applies to each element of it. Where a path
meets something else than it expects (a scalar where it needs an object), the step leaves that
value as it is: it is not at the path, so it is not what the step names.

``changes`` (updates only) go through the same steps, so that no value left out of the record
can reach the destination through them: a change is kept only where a kept field covers it, its
old and new values are hashed under a hashed path, its path is renamed, and it is dropped under a
dropped path. A change to a whole object is split into its parts first wherever a step names a
path inside it; a change to a whole plural (change paths never go into one) has the step applied
to each element of its old and new lists, exactly as in the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson

from service.events import Event
from service.routing_config import Route
from workers.capture_api import Record
from workers.changes import Change, is_missing, is_within, path_tree, project, project_value, put, same, value_at
from workers.delivery_job import delivery_id_for
from workers.rules import CompiledRoute, Facts, render_changes

# Marks "nothing there", distinct from null (and from changes' own marker, which is_missing knows).
_ABSENT: Any = object()


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
    document: dict[str, Any] = _copy(project(record, route.fields) if route.fields is not None else record)
    for path in route.hash:
        _replace(document, path.split("."), hash_value)
    rename_in(document, route.rename)
    for path in route.drop:
        _discard(document, path.split("."))
    return document


def _copy(value: Any) -> Any:
    # Every step changes objects and plurals in place; scalars are immutable and shared.
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _replace(value: Any, names: Sequence[str], change: Callable[[Any], Any]) -> None:
    """Replace the value at ``names`` by ``change(value)``, in each element of every plural on the way."""
    if isinstance(value, list):
        for item in value:
            _replace(item, names, change)
    elif isinstance(value, dict) and names[0] in value:
        if len(names) == 1:
            value[names[0]] = change(value[names[0]])
        else:
            _replace(value[names[0]], names[1:], change)


def _discard(value: Any, names: Sequence[str]) -> bool:
    """Remove the value at ``names`` (from each element of every plural on the way); whether any was there.

    An object the removal empties goes too; an element of a plural stays, even empty.
    """
    if isinstance(value, list):
        return any([_discard(item, names) for item in value])  # a list, so that every element is visited
    if not isinstance(value, dict) or names[0] not in value:
        return False
    if len(names) == 1:
        del value[names[0]]
        return True
    child = value[names[0]]
    removed = _discard(child, names[1:])
    if removed and isinstance(child, dict) and not child:
        del value[names[0]]
    return removed


@dataclass(frozen=True, slots=True)
class _Each:
    """What a rename took out of each element of a plural, with the element it came from.

    Attributes:
        depth: how many names of the old path lead to the plural (1 for ``profiles.identifier``).
        taken: ``(element, value taken from it)``, the value being ``_ABSENT``, a value or an ``_Each``.
    """

    depth: int
    taken: list[tuple[Any, Any]]


def rename_in(document: dict[str, Any], rename: dict[str, str]) -> None:
    """Apply ``rename`` (old dot path -> new) to ``document`` in place, all at once.

    An old path through a plural renames inside each element when the new path goes through the
    same plural (``profiles.identifier`` -> ``profiles.id``); otherwise the elements' values are
    gathered into one list at the new path (``profiles.identifier`` -> ``profileIds``).
    """
    moved: list[tuple[list[str], list[str], Any]] = []
    # Deepest first, so that renaming ``a.b`` and ``a`` both moves ``a.b`` out before ``a`` goes.
    for old in sorted(rename, key=lambda path: -path.count(".")):
        taken = _take(document, old.split("."), 0)
        if taken is not _ABSENT:
            moved.append((old.split("."), rename[old].split("."), taken))
    for old_names, new_names, taken in moved:
        _place(document, old_names, new_names, taken)


def _take(value: Any, names: Sequence[str], depth: int) -> Any:
    """Remove and return the value at ``names`` (an ``_Each`` through a plural); objects it empties go."""
    if isinstance(value, list):
        return _Each(depth, [(item, _take(item, names, 0)) for item in value])
    if not isinstance(value, dict) or names[0] not in value:
        return _ABSENT
    if len(names) == 1:
        return value.pop(names[0])
    child = value[names[0]]
    taken = _take(child, names[1:], depth + 1)
    if taken is not _ABSENT and isinstance(child, dict) and not child:
        del value[names[0]]
    return taken


def _place(document: Any, old_names: Sequence[str], new_names: Sequence[str], taken: Any) -> None:
    if not isinstance(taken, _Each):
        if isinstance(document, dict):
            put(document, ".".join(new_names), taken)
        return
    depth = taken.depth
    if len(new_names) > depth and new_names[:depth] == old_names[:depth]:
        # Within the same plural: each element's value moves inside that element.
        for item, part in taken.taken:
            if part is not _ABSENT:
                _place(item, old_names[depth:], new_names[depth:], part)
    elif isinstance(document, dict):
        put(document, ".".join(new_names), _gathered(taken))


def _gathered(each: _Each) -> list[Any]:
    """The values taken from the elements, in order, through nested plurals too (one flat list)."""
    values: list[Any] = []
    for _, part in each.taken:
        if isinstance(part, _Each):
            values.extend(_gathered(part))
        elif part is not _ABSENT:
            values.append(part)
    return values


def shape_changes(route: Route, changes: dict[str, Change]) -> dict[str, Change]:
    """``changes`` shaped like the record, so that they carry nothing the record does not."""
    items = _split(changes.items(), [*(route.fields or ()), *route.hash, *route.rename])
    if route.fields is not None:
        items = list(_kept(items, route.fields))
    items = [(path, _hash_change(path, change, route.hash)) for path, change in items]
    items = [moved for path, change in items for moved in _rename_change(path, change, route.rename)]
    items = _split(items, route.drop)
    return dict(_undropped(items, route.drop))


def _under(path: str, ancestors: Iterable[str]) -> bool:
    return any(is_within(path, ancestor) for ancestor in ancestors)


def _inside(path: str, paths: Iterable[str]) -> list[str]:
    """The ``paths`` strictly inside ``path``, relative to it (``profiles.id`` inside ``profiles``: ``id``)."""
    return [other[len(path) + 1 :] for other in paths if other.startswith(f"{path}.")]


def _reshaped(change: Change, shape: Callable[[Any], Any]) -> Change | None:
    """``change`` with ``shape`` applied to copies of both values; ``None`` when nothing is left to tell.

    ``shape`` may return ``_ABSENT`` (or changes' missing marker) for "nothing there", which is null.
    A change whose shaped values are equal (when the old one is known) is no change any more.
    """
    old, new = shape(_copy(change.old)), shape(_copy(change.new))
    old_gone, new_gone = old is _ABSENT or is_missing(old), new is _ABSENT or is_missing(new)
    if old_gone and new_gone:
        return None
    old, new = None if old_gone else old, None if new_gone else new
    if change.old_known and same(old, new):
        return None
    return Change(old, new, change.old_known)


def _kept(items: Iterable[tuple[str, Change]], fields: Sequence[str]) -> Iterable[tuple[str, Change]]:
    for path, change in items:
        if _under(path, fields):
            yield path, change
            continue
        inner = _inside(path, fields)
        if inner:
            # A plural (or a value where an object was expected) with fields inside it.
            tree = path_tree(inner)
            kept = _reshaped(change, partial(project_value, tree=tree))
            if kept is not None:
                yield path, kept


def _hash_change(path: str, change: Change, hashed: Sequence[str]) -> Change:
    if _under(path, hashed):
        return Change(hash_value(change.old), hash_value(change.new), change.old_known)
    inner = [name.split(".") for name in _inside(path, hashed)]
    if not inner:
        return change
    old, new = _copy(change.old), _copy(change.new)
    for names in inner:
        _replace(old, names, hash_value)
        _replace(new, names, hash_value)
    return Change(old, new, change.old_known)


def _rename_change(path: str, change: Change, rename: dict[str, str]) -> list[tuple[str, Change]]:
    inner = {old: new for old, new in rename.items() if old.startswith(f"{path}.")}
    if not inner:
        return [(renamed_path(path, rename), change)]
    # Renames inside a whole plural: applied to one-value records, as to the record itself.
    old_doc, new_doc = _nested(path, _copy(change.old)), _nested(path, _copy(change.new))
    rename_in(old_doc, inner)
    rename_in(new_doc, inner)
    result = []
    for target in dict.fromkeys([path, *inner.values()]):
        moved = Change(value_at(old_doc, target, _ABSENT), value_at(new_doc, target, _ABSENT), change.old_known)
        kept = _reshaped(moved, lambda value: value)
        if kept is not None:
            result.append((renamed_path(target, rename) if target == path else target, kept))
    return result


def _nested(path: str, value: Any) -> dict[str, Any]:
    document: dict[str, Any] = {}
    put(document, path, value)
    return document


def _undropped(items: Iterable[tuple[str, Change]], dropped: Sequence[str]) -> Iterable[tuple[str, Change]]:
    for path, change in items:
        if _under(path, dropped):
            continue
        inner = [name.split(".") for name in _inside(path, dropped)]
        if not inner:
            yield path, change
            continue
        kept = _reshaped(change, partial(_without, paths=inner))
        if kept is not None:
            yield path, kept


def _without(value: Any, paths: list[list[str]]) -> Any:
    for names in paths:
        _discard(value, names)
    return value


def renamed_path(path: str, rename: dict[str, str]) -> str:
    """Where ``rename`` moves the value at ``path`` (``primaryAddress.city`` under ``primaryAddress: address``).

    The most specific rename wins, as in the record, where it is moved out first.
    """
    matches = [old for old in rename if is_within(path, old)]
    if not matches:
        return path
    old = max(matches, key=lambda item: item.count("."))
    return rename[old] + path[len(old) :]


def _split(items: Iterable[tuple[str, Change]], paths: Sequence[str]) -> list[tuple[str, Change]]:
    """Split changes to whole objects into their parts wherever one of ``paths`` lies inside them.

    Afterwards each path either contains a change's path, is unrelated to it, or lies inside a
    value that is not an object (a plural), which the steps shape element by element.
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
