"""The emitter's control API, for tests, benchmarks and the demo.

::

    POST   /__sim/targets         {"url", "format"?, "audience"?, "callback_hash"?, "duplicates"?,
                                   "reorder_window"?} -> 201 the target (with its "id")
    GET    /__sim/targets         {"targets": [...]}
    DELETE /__sim/targets/{id}    204; 404 for an unknown id
    POST   /__sim/emit            {"count", "rate"?, "burst"?, "seed"?} -> 202, the workload runs on
    POST   /__sim/emit/test       {"target"?} -> 200 {"deliveries": [...]}: the test notification,
                                   to one v3 target or to every v3 target
    GET    /__sim/deliveries      {"counters", "deliveries", "errors", "idle"}
    POST   /__sim/emitter/wait    {"timeout"?: seconds, default 10} -> 200 once nothing is queued,
                                   in flight or waiting for a retry; 504 if that takes longer

Bad input answers 400 ``{"error": "bad_request", "reason": "<field>: <problem>"}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from simulator.emitter import Emitter

_NUMBER = (int, float)
_TARGET_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "url": (str, True),
    "format": (str, False),
    "audience": (str, False),
    "callback_hash": (str, False),
    "duplicates": (_NUMBER, False),
    "reorder_window": (int, False),
}
_EMIT_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "count": (int, True),
    "rate": (_NUMBER, False),
    "burst": (int, False),
    "seed": (int, False),
}


class _BadRequestError(Exception):
    pass


def emitter_routes(emitter: Emitter) -> list[BaseRoute]:
    """The control routes, bound to ``emitter``."""
    api = _ControlApi(emitter)
    return [
        Route("/__sim/targets", api.add_target, methods=["POST"]),
        Route("/__sim/targets", api.list_targets, methods=["GET"]),
        Route("/__sim/targets/{target_id}", api.remove_target, methods=["DELETE"]),
        Route("/__sim/emit", api.emit, methods=["POST"]),
        Route("/__sim/emit/test", api.emit_test, methods=["POST"]),
        Route("/__sim/deliveries", api.deliveries, methods=["GET"]),
        Route("/__sim/emitter/wait", api.wait, methods=["POST"]),
    ]


def _bad_request(reason: str) -> JSONResponse:
    return JSONResponse({"error": "bad_request", "reason": reason}, status_code=400)


def _not_found(reason: str) -> JSONResponse:
    return JSONResponse({"error": "not_found", "reason": reason}, status_code=404)


async def _body(request: Request, spec: dict[str, tuple[type | tuple[type, ...], bool]]) -> dict[str, Any]:
    """The JSON object of the request, checked against ``{name: (types, required)}``; nulls are dropped."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise _BadRequestError("the body is not JSON") from exc
    if not isinstance(body, dict):
        raise _BadRequestError("the body must be a JSON object")
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise _BadRequestError(f"{unknown[0]}: unknown field; known: {', '.join(spec)}")
    for name, (types, required) in spec.items():
        value = body.get(name)
        if value is None:
            if required:
                raise _BadRequestError(f"{name}: required")
            continue
        # bool is an int to Python, never to a JSON client.
        if isinstance(value, bool) or not isinstance(value, types):
            raise _BadRequestError(f"{name}: {value!r} has the wrong type")
    return {name: value for name, value in body.items() if value is not None}


class _ControlApi:
    def __init__(self, emitter: Emitter) -> None:
        self.emitter = emitter

    async def add_target(self, request: Request) -> Response:
        try:
            fields = await _body(request, _TARGET_FIELDS)
            target_id = self.emitter.add_target(fields.pop("url"), **fields)
        except (_BadRequestError, ValueError) as exc:
            return _bad_request(str(exc))
        target = next(target for target in self.emitter.targets if target.id == target_id)
        return JSONResponse(target.to_json(), status_code=201)

    async def list_targets(self, request: Request) -> Response:
        return JSONResponse({"targets": [target.to_json() for target in self.emitter.targets]})

    async def remove_target(self, request: Request) -> Response:
        target_id = request.path_params["target_id"]
        try:
            self.emitter.remove_target(target_id)
        except KeyError:
            return _not_found(f"no target {target_id!r}")
        return Response(status_code=204)

    async def emit(self, request: Request) -> Response:
        try:
            fields = await _body(request, _EMIT_FIELDS)
            self.emitter.start_workload(fields.pop("count"), **fields)
        except (_BadRequestError, ValueError) as exc:
            return _bad_request(str(exc))
        return JSONResponse({"status": "started", **fields}, status_code=202)

    async def emit_test(self, request: Request) -> Response:
        try:
            fields = await _body(request, {"target": (str, False)})
        except _BadRequestError as exc:
            return _bad_request(str(exc))
        chosen = fields.get("target")
        ids = [chosen] if chosen else [target.id for target in self.emitter.targets if target.format == "v3"]
        records = []
        for target_id in ids:
            try:
                records.append(await self.emitter.send_test_event(target_id))
            except KeyError:
                return _not_found(f"no target {target_id!r}")
            except ValueError as exc:
                return _bad_request(str(exc))
        return JSONResponse({"deliveries": [record.to_json() for record in records]})

    async def deliveries(self, request: Request) -> Response:
        body = {**self.emitter.log.snapshot(), "errors": self.emitter.errors, "idle": self.emitter.idle}
        return JSONResponse(body)

    async def wait(self, request: Request) -> Response:
        try:
            fields = await _body(request, {"timeout": (_NUMBER, False)})
        except _BadRequestError as exc:
            return _bad_request(str(exc))
        timeout = float(fields.get("timeout", 10.0))
        if not 0 <= timeout <= 3600:
            return _bad_request(f"timeout: {timeout!r} must be between 0 and 3600 seconds")
        idle = await self.emitter.wait_idle(timeout)
        counters = self.emitter.log.snapshot()["counters"]
        return JSONResponse({"idle": idle, "counters": counters}, status_code=200 if idle else 504)
