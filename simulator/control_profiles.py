"""Control API for profiles: create, change and delete records as a Capture user would.

The changes go through the ``ProfileStore``, so the emitter announces them like any other::

    POST   /__sim/profiles          {"entity_type": "user", "attributes": {...}, "uuid": "..."} -> 201 record
    GET    /__sim/profiles          ?entity_type=user -> {"profiles": [live records, by id]}
    GET    /__sim/profiles/{uuid}   -> the live record, or 404
    PATCH  /__sim/profiles/{uuid}   {"changes": {...}} -> {"record": ..., "changed": ["dot.paths"]}
    DELETE /__sim/profiles/{uuid}   -> {"deleted": the record as it was}

``entity_type`` and ``uuid`` are optional. Attributes must be in the schema (``/entityType``)
and must not be ones Capture sets itself (``id``, ``uuid``, ``created``, ``lastUpdated``);
otherwise the answer is 400 ``{"error": "bad_request", "reason": ...}``, as for any malformed
body. An unknown uuid is 404 (``"not_found"``); creating a uuid that is live is 409 (``"conflict"``).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from simulator.profiles import ProfileStore
from simulator.schema import RESERVED, unknown_paths


class _BadRequestError(Exception):
    """A control request that cannot be carried out; answered 400 (or ``status``) with the reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def profile_routes(store: ProfileStore) -> list[BaseRoute]:
    """The ``/__sim/profiles`` routes over ``store``."""

    async def collection(request: Request) -> Response:
        if request.method == "GET":
            entity_type = request.query_params.get("entity_type", "user")
            if entity_type not in store.entity_types:
                return _error(_BadRequestError(f"unknown entity_type {entity_type!r}"))
            return JSONResponse({"profiles": list(store.live(entity_type))})
        try:
            return JSONResponse(_create(store, await _json(request)), status_code=201)
        except _BadRequestError as exc:
            return _error(exc)

    async def item(request: Request) -> Response:
        uuid = request.path_params["uuid"]
        gone = _BadRequestError(f"no live profile with uuid {uuid}", status=404)
        try:
            entity_type = _locate(store, uuid)
            if entity_type is None:
                raise gone
            if request.method == "GET":
                return JSONResponse(store.get(entity_type, uuid=uuid))
            if request.method == "DELETE":
                return JSONResponse({"deleted": store.delete(entity_type, uuid)})
            record, changed = store.update(entity_type, uuid, _changes(await _json(request)))
        except _BadRequestError as exc:
            return _error(exc)
        except KeyError:
            return _error(gone)  # deleted meanwhile
        return JSONResponse({"record": record, "changed": changed})

    return [
        Route("/__sim/profiles", collection, methods=["GET", "POST"]),
        Route("/__sim/profiles/{uuid}", item, methods=["GET", "PATCH", "DELETE"]),
    ]


def _create(store: ProfileStore, body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"entity_type", "attributes", "uuid"})
    if unknown:
        raise _BadRequestError(f"unknown key {unknown[0]!r}; known keys: attributes, entity_type, uuid")
    entity_type = body.get("entity_type", "user")
    if entity_type not in store.entity_types:
        raise _BadRequestError(f"unknown entity_type {entity_type!r}; known: {', '.join(store.entity_types)}")
    uuid = body.get("uuid")
    if uuid is not None and (not isinstance(uuid, str) or not uuid):
        raise _BadRequestError("uuid must be a non-empty string")
    if uuid is not None and any(store.get(kind, uuid=uuid) for kind in store.entity_types):
        raise _BadRequestError(f"a live profile with uuid {uuid} exists", status=409)
    return store.create(entity_type, _attributes(body.get("attributes", {}), "attributes"), uuid=uuid)


def _changes(body: dict[str, Any]) -> dict[str, Any]:
    if set(body) != {"changes"}:
        raise _BadRequestError('the body must be {"changes": {...}}')
    return _attributes(body["changes"], "changes")


def _attributes(attributes: Any, where: str) -> dict[str, Any]:
    if not isinstance(attributes, dict):
        raise _BadRequestError(f"{where} must be an object of attribute values")
    reserved = sorted(RESERVED & set(attributes))
    if reserved:
        raise _BadRequestError(f"{where}.{reserved[0]} is set by Capture and cannot be given")
    unknown = unknown_paths(attributes)
    if unknown:
        raise _BadRequestError(f"{where}.{unknown[0]} is not in the schema (see /entityType)")
    return attributes


def _locate(store: ProfileStore, uuid: str) -> str | None:
    for entity_type in store.entity_types:
        if store.get(entity_type, uuid=uuid) is not None:
            return entity_type
    return None


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _BadRequestError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise _BadRequestError("the body must be a JSON object")
    return body


def _error(exc: _BadRequestError) -> JSONResponse:
    kind = {404: "not_found", 409: "conflict"}.get(exc.status, "bad_request")
    return JSONResponse({"error": kind, "reason": exc.reason}, status_code=exc.status)
