"""``/entity``, ``/versions/entity`` and ``/entityType``: reading one record, a past version, the schema.

Decisions where the reference is silent: ``id``, ``uuid`` and ``key_attribute`` exclude each
other (any two: 201 ``duplicate_argument``); ``key_attribute`` must be unique in the schema
(else 200); ``attribute_name`` answers ``{"result": <that value>}`` and wins over
``attributes``; ``/versions/entity`` takes ``id`` only (the documented primary key) and also
honours ``attributes``.
"""

from __future__ import annotations

from typing import Any

from simulator.backend import CaptureBackend
from simulator.envelope import CaptureError
from simulator.params import Params
from simulator.profiles import parse_capture_time
from simulator.records import Record, select, value_at
from simulator.schema import is_known, is_unique, schema_for


def entity(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/entity``: one live record by ``id``, ``uuid`` or ``key_attribute`` + ``key_value``."""
    type_name = backend.entity_type(params)
    record = _find_live(backend, type_name, params)
    _check_timestamp(record, params, "created", "created")
    _check_timestamp(record, params, "last_updated", "lastUpdated")
    name = params.get("attribute_name")
    if name:
        check_known([name])
        return {"result": value_at(record, name)}
    return {"result": _selected(record, params)}


def version(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/versions/entity``: the record with ``id`` as it was at ``timestamp``."""
    type_name = backend.entity_type(params)
    record_id = params.require_integer("id")
    at = _capture_time(params.require("timestamp"), "timestamp")
    record = backend.store.version_at(type_name, record_id, at)
    if record is None:
        raise CaptureError(310, f"no version of record {record_id} at {params.get('timestamp')}")
    return {"result": _selected(record, params)}


def entity_type(backend: CaptureBackend, params: Params) -> dict[str, Any]:
    """``/entityType``: the schema of ``type_name``."""
    return {"schema": schema_for(backend.entity_type(params))}


def requested_attributes(params: Params) -> list[str] | None:
    """The ``attributes`` parameter: a JSON array of known dot paths; None when not sent.

    Raises:
        CaptureError: 200 when it is not an array of strings, 223 for a path outside the schema.
    """
    paths = params.json("attributes")
    if paths is None:
        return None
    if not isinstance(paths, list) or not all(isinstance(path, str) and path for path in paths):
        raise CaptureError(200, "attributes must be a JSON array of attribute names", argument_name="attributes")
    check_known(paths)
    return paths


def check_known(paths: list[str]) -> None:
    """Refuse attribute paths outside the schema.

    Raises:
        CaptureError: 223 unknown_attribute, naming the first such path.
    """
    unknown = [path for path in paths if not is_known(path)]
    if unknown:
        raise CaptureError(223, f"unknown attribute: {unknown[0]}", attribute_name=unknown[0])


def _selected(record: Record, params: Params) -> Record:
    paths = requested_attributes(params)
    return record if paths is None else select(record, paths)


def _find_live(backend: CaptureBackend, type_name: str, params: Params) -> Record:
    given = [name for name in ("id", "uuid", "key_attribute") if params.has(name)]
    if len(given) > 1:
        raise CaptureError(201, f"give only one of id, uuid and key_attribute; got {' and '.join(given)}")
    if not given:
        raise CaptureError(100, "missing required argument: id, uuid or key_attribute", argument_name="id")
    if given == ["id"]:
        record = backend.store.get(type_name, id=params.require_integer("id"))
    elif given == ["uuid"]:
        record = backend.store.get(type_name, uuid=params.get("uuid"))
    else:
        record = backend.store.get(type_name, key=_key(params))
    if record is None:
        raise CaptureError(310, "record not found")
    return record


def _key(params: Params) -> tuple[str, Any]:
    attribute = params.require("key_attribute")
    check_known([attribute])
    if not is_unique(attribute):
        raise CaptureError(
            200, f"key_attribute must be a unique attribute; {attribute} is not", argument_name="key_attribute"
        )
    params.require("key_value")
    return attribute, params.json("key_value")


def _check_timestamp(record: Record, params: Params, name: str, attribute: str) -> None:
    # The optimistic check of /entity: a wrong created/last_updated fails the call.
    given = params.get(name)
    if not given:
        return
    if abs(_capture_time(given, name) - parse_capture_time(record[attribute])) > 1e-6:
        raise CaptureError(330, f"{name} does not match the record's {attribute}")


def _capture_time(text: str, name: str) -> float:
    try:
        return parse_capture_time(text)
    except ValueError:
        raise CaptureError(342, f"{name} must be 'YYYY-MM-DD HH:MM:SS[.ffffff] +0000', got {text!r}") from None
