"""Reading records the way the Capture API returns them: selected attributes, values by path, order."""

from __future__ import annotations

import copy
from typing import Any

Record = dict[str, Any]
# A selection: each name maps to the selection inside it, or to None for "all of it".
_Selection = dict[str, "_Selection | None"]


def value_at(record: Any, path: str) -> Any:
    """The value at a dot path; None when any step is missing or not an object."""
    value = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def select(record: Record, paths: list[str]) -> Record:
    """Only the attributes at ``paths``, nested paths keeping their nesting.

    ``["email", "primaryAddress.city"]`` gives ``{"email": ..., "primaryAddress": {"city": ...}}``;
    a path into a plural selects that attribute in every element.
    """
    tree: _Selection = {}
    for path in paths:
        _insert(tree, path.split("."))
    selected = _apply(record, tree)
    return selected if isinstance(selected, dict) else {}


def _insert(tree: _Selection, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if not rest:
        tree[head] = None  # the whole attribute, whatever was selected inside it before
        return
    if head in tree and tree[head] is None:
        return  # already selected whole
    child = tree.get(head)
    if child is None:
        child = tree[head] = {}
    _insert(child, rest)


def _apply(value: Any, tree: _Selection | None) -> Any:
    if tree is None:
        return copy.deepcopy(value)
    if isinstance(value, list):
        return [_apply(element, tree) for element in value]
    if not isinstance(value, dict):
        return None
    return {name: _apply(value.get(name), subtree) for name, subtree in tree.items()}


def sort_records(records: list[Record], sort_on: list[str]) -> list[Record]:
    """``records`` ordered by the ``sort_on`` paths (``-path`` descending); nulls sort after values.

    Records are in id order first, so ties keep that order.
    """
    ordered = sorted(records, key=lambda record: record.get("id", 0))
    for key in reversed(sort_on):
        descending = key.startswith("-")
        path = key.removeprefix("-")
        present = [r for r in ordered if value_at(r, path) is not None]
        missing = [r for r in ordered if value_at(r, path) is None]
        present.sort(key=lambda record: _sortable(value_at(record, path)), reverse=descending)
        ordered = present + missing
    return ordered


def _sortable(value: Any) -> tuple[int, Any]:
    # Values of different JSON types never compare with each other, so group them by type.
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, repr(value))
