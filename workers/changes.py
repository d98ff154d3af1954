"""What changed in a record, by attribute dot path, and the path helpers routing needs.

Capture's webhooks say which record changed, at best with the list of changed attribute paths
(v3 ``entityUpdated``), never the values. The pipeline fetches the record, and the previous
version when a route needs old values; :func:`diff` turns the two into leaf changes. Objects are
walked into (``primaryAddress.city``); plurals (lists) and scalars are leaves, compared whole, so
a change's path never goes into a plural: a change inside one is a change of the whole plural.

A route's paths may go through plurals (``profiles.identifier``): they then name that attribute in
*each element* of the plural. :func:`project` keeps it in every element; :func:`changed_at` asks
whether it differs between two versions of a plural. Paths never index into a plural.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from workers.capture_api import Record

# Marks "no such path", which differs from a path whose value is null.
_MISSING: Any = object()

# Dot paths as a tree of names, in the order first given: ``None`` takes the value there whole.
PathTree: TypeAlias = dict[str, "PathTree | None"]


@dataclass(frozen=True, slots=True)
class Change:
    """One changed attribute.

    Attributes:
        old: the value before, ``None`` when it was absent or is not known.
        new: the value after, ``None`` when it is absent now.
        old_known: ``False`` when the change comes only from the event's ``attributes`` list and
            no previous version was fetched, so ``old`` is not the old value.
    """

    old: Any = None
    new: Any = None
    old_known: bool = True


def diff(previous: Record | None, record: Record | None) -> dict[str, Change]:
    """The leaf dot paths whose value differs between two versions of a record.

    ``previous`` ``None`` is a created record: every leaf of ``record`` is a change from ``None``.
    ``record`` ``None`` is a deleted one: every leaf of ``previous`` changes to ``None``. A key
    missing on one side counts as ``None`` there.
    """
    changes: dict[str, Change] = {}
    if previous is None:
        for path, value in leaves(record or {}):
            changes[path] = Change(None, value)
    elif record is None:
        for path, value in leaves(previous):
            changes[path] = Change(value, None)
    else:
        _diff_into(changes, "", previous, record)
    return changes


def _diff_into(changes: dict[str, Change], prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for key in (*old, *(key for key in new if key not in old)):
        path = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            _diff_into(changes, f"{path}.", before, after)
        elif isinstance(before, dict) and after is None:
            changes.update((leaf, Change(value, None)) for leaf, value in leaves(before, f"{path}."))
        elif before is None and isinstance(after, dict):
            changes.update((leaf, Change(None, value)) for leaf, value in leaves(after, f"{path}."))
        elif not same(before, after):
            changes[path] = Change(before, after)


def leaves(record: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dot path, value)`` of every leaf: objects are walked into, lists and scalars are leaves."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type: ``1`` and ``True`` (or ``1.0``) are different JSON values."""
    return type(a) is type(b) and bool(a == b)


def from_attributes(paths: Sequence[str], record: Record | None) -> dict[str, Change]:
    """Changes known only from an event's ``attributes`` list: the old values are unknown.

    A path through a plural (``profiles.identifier``) is a change of the whole plural
    (``profiles``), as in :func:`diff`, so that change paths never go into a plural.
    """
    changes: dict[str, Change] = {}
    for path in paths:
        cut = plural_cut(record, path)
        changes[cut] = Change(None, value_at(record, cut), old_known=False)
    return changes


def plural_cut(record: Mapping[str, Any] | None, path: str) -> str:
    """``path`` cut after the first plural it goes through in ``record`` (``profiles.identifier`` -> ``profiles``)."""
    names = path.split(".")
    value: Any = record
    for index, name in enumerate(names[:-1]):
        if not isinstance(value, dict) or name not in value:
            break
        value = value[name]
        if isinstance(value, list):
            return ".".join(names[: index + 1])
    return path


def path_covers(route_path: str, change_path: str) -> bool:
    """Whether a route's path and a change's path concern the same data.

    True when they are equal, when the change is below the route's path (``primaryAddress``
    covers ``primaryAddress.city``), or when the route's path is below the change's (a whole
    object or plural that changed includes its parts).
    """
    return (
        route_path == change_path
        or change_path.startswith(f"{route_path}.")
        or route_path.startswith(f"{change_path}.")
    )


def is_within(path: str, ancestor: str) -> bool:
    """``path`` equals ``ancestor`` or lies below it."""
    return path == ancestor or path.startswith(f"{ancestor}.")


def value_at(record: Mapping[str, Any] | None, path: str, default: Any = None) -> Any:
    """The value at a dot path, or ``default`` where the path does not exist."""
    value: Any = record
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            return default
        value = value[name]
    return value


def project(record: Mapping[str, Any] | None, paths: Iterable[str]) -> dict[str, Any]:
    """A copy of ``record`` with only ``paths``, nesting kept; paths it does not have are left out.

    A path through a plural keeps the rest of the path in each element of it: ``profiles.domain``
    gives ``{"profiles": [{"domain": ...}, ...]}``, one object per element (``{}`` for an element
    without it); elements that are not objects are left out. Values taken whole are shared with
    ``record``, not copied: copy the result before changing it in place.
    """
    projected: dict[str, Any] = project_value(dict(record or {}), path_tree(paths))
    return {} if projected is _MISSING else projected


def path_tree(paths: Iterable[str]) -> PathTree:
    """``paths`` as a tree of names; a path taken whole replaces any of its parts, in either order."""
    tree: PathTree = {}
    for path in paths:
        node, (*parents, last) = tree, path.split(".")
        for name in parents:
            child = node.setdefault(name, {})
            if child is None:
                break  # an ancestor is taken whole already
            node = child
        else:
            # In the order first given, so the payload's keys come in the order the route lists them.
            node[last] = None
    return tree


def project_value(value: Any, tree: PathTree) -> Any:
    """``value`` cut down to the paths of ``tree`` (see :func:`project`), or the missing marker.

    The marker (:func:`is_missing`) means none of the paths is there: an object without any of
    them, or a scalar or null where the paths expect an object. Never the values left out.
    """
    if isinstance(value, list):
        # A plural: the same paths in each element, which stays even when it has none of them.
        return [_project_item(item, tree) for item in value if isinstance(item, dict | list)]
    if not isinstance(value, dict):
        return _MISSING
    result: dict[str, Any] = {}
    for name, subtree in tree.items():
        if name in value:
            part = value[name] if subtree is None else project_value(value[name], subtree)
            if part is not _MISSING:
                result[name] = part
    return result or _MISSING


def _project_item(item: Any, tree: PathTree) -> Any:
    projected = project_value(item, tree)
    return {} if projected is _MISSING else projected


def changed_at(change: Change, inner: str) -> bool:
    """Whether a change of a whole value (object or plural) changed what lies at the relative path ``inner``.

    For a plural that is the attribute in any element (``identifier`` of a ``profiles`` change).
    When the old value is not known, it may have: ``True``.
    """
    if not change.old_known:
        return True
    tree = path_tree([inner])
    return not same(project_value(change.old, tree), project_value(change.new, tree))


def put(document: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at a dot path of ``document``, making objects on the way (replacing non-objects)."""
    *parents, last = path.split(".")
    target = document
    for name in parents:
        child = target.get(name)
        if not isinstance(child, dict):
            child = target[name] = {}
        target = child
    target[last] = value


def pop(document: dict[str, Any], path: str) -> Any:
    """Remove and return the value at a dot path (``_MISSING`` if absent); drops objects it empties."""
    *parents, last = path.split(".")
    chain: list[tuple[dict[str, Any], str]] = []
    target = document
    for name in parents:
        child = target.get(name)
        if not isinstance(child, dict):
            return _MISSING
        chain.append((target, name))
        target = child
    if last not in target:
        return _MISSING
    value = target.pop(last)
    # An object emptied by the removal goes too, so renaming primaryAddress.city leaves no {}.
    for parent, name in reversed(chain):
        if parent[name]:
            break
        del parent[name]
    return value


def is_missing(value: Any) -> bool:
    """Whether ``value`` is the "no such path" marker :func:`pop` returns."""
    return value is _MISSING
