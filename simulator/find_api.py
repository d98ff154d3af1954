"""``/entity.find``: live records matching a filter, sorted and paged.

Decisions where the reference is silent: without ``max_results`` at most 100 records come back
(a client that forgets to page notices); ``first_result`` is a 0-based offset into the sorted
matches; without ``sort_on`` the order is by ``id``; ``show_total_count`` takes ``true`` or
``false``. Paging on ``id`` (``filter=id > <last>``, ``sort_on=["id"]``) works as Akamai
recommends for large sets.
"""

from __future__ import annotations

from typing import Any

from simulator.backend import CaptureBackend
from simulator.entity_api import check_known, requested_attributes
from simulator.envelope import CaptureError
from simulator.filters import Expr, FilterError, filter_paths, matches, parse_filter
from simulator.params import Params
from simulator.records import select, sort_records

DEFAULT_MAX_RESULTS = 100
LIMIT_MAX_RESULTS = 10_000


def find(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/entity.find``: ``{"result_count", "results"}`` (+ ``total_count`` when asked)."""
    type_name = backend.entity_type(params)
    condition = _filter(params)
    attributes = requested_attributes(params)
    sort_on = _sort_on(params)
    max_results = params.integer("max_results", DEFAULT_MAX_RESULTS)
    if max_results is None or not 1 <= max_results <= LIMIT_MAX_RESULTS:
        raise CaptureError(200, f"max_results must be from 1 to {LIMIT_MAX_RESULTS}", argument_name="max_results")
    first_result = params.integer("first_result", 0) or 0
    if first_result < 0:
        raise CaptureError(200, "first_result must be >= 0", argument_name="first_result")
    show_total = _boolean(params, "show_total_count")

    matched = [record for record in backend.store.live(type_name) if condition is None or matches(condition, record)]
    page = sort_records(matched, sort_on)[first_result : first_result + max_results]
    results = page if attributes is None else [select(record, attributes) for record in page]
    payload: dict[str, Any] = {"result_count": len(results), "results": results}
    if show_total:
        payload["total_count"] = len(matched)
    return payload


def _filter(params: Params) -> Expr | None:
    text = params.get("filter")
    if not text:
        return None
    try:
        condition = parse_filter(text)
    except FilterError as exc:
        raise CaptureError(exc.code, f"invalid filter: {exc.reason}", argument_name="filter") from None
    check_known(sorted(filter_paths(condition)))
    return condition


def _sort_on(params: Params) -> list[str]:
    keys = params.json("sort_on")
    if keys is None:
        return []
    if not isinstance(keys, list) or not all(isinstance(key, str) and key.lstrip("-") for key in keys):
        raise CaptureError(200, 'sort_on must be a JSON array of attribute names, e.g. ["-lastUpdated"]')
    check_known([key.removeprefix("-") for key in keys])
    return keys


def _boolean(params: Params, name: str) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return False
    if value.lower() not in ("true", "false"):
        raise CaptureError(200, f"{name} must be true or false, got {value!r}", argument_name=name)
    return value.lower() == "true"
