"""The simulator's control API (JSON), for tests, benchmarks and the demo.

Paths under ``/__sim/`` are never subject to faults or credentials::

    GET    /__sim/stats         {"in_flight", "max_in_flight", "calls": {path: n},
                                 "answers": {"status": {"200": n}, "code": {"ok": n, "310": n}},
                                 "recent": [{"at", "method", "path", "auth", "params", "values",
                                             "status", "stat", "code", "fault", "duration"}]}
    POST   /__sim/stats/reset   forget the counters and the log -> the emptied stats
    GET    /__sim/faults        the current settings; each rule with "fired" and "times" left
    PUT    /__sim/faults        replace them: {"latency", "jitter", "max_concurrent_calls",
                                 "seed", "rules": [...]} (see ``simulator.faults``); keys left
                                 out are neutral, except max_concurrent_calls, which keeps its
                                 start-up value unless given (null: no limit)
    DELETE /__sim/faults        no latency, no rules, the start-up call limit
    ...    /__sim/profiles      see ``simulator.control_profiles``

A malformed body is 400 ``{"error": "bad_request", "reason": "<what is wrong>"}``, as on the
emitter's routes. The Akamai side and the emitter add their
own routes under ``/__sim/`` (``/__sim/keys/rotate``, ``/__sim/tokens/expire``,
``/__sim/targets``, ``/__sim/emit``...).
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from simulator.control_profiles import profile_routes
from simulator.faults import Faults, FaultsError, parse_settings
from simulator.profiles import ProfileStore
from simulator.stats import CallStats


def control_routes(faults: Faults, stats: CallStats, store: ProfileStore) -> list[BaseRoute]:
    """The ``/__sim/stats``, ``/__sim/faults`` and ``/__sim/profiles`` routes."""

    async def show_stats(request: Request) -> Response:
        return JSONResponse(stats.snapshot())

    async def reset_stats(request: Request) -> Response:
        stats.reset()
        return JSONResponse(stats.snapshot())

    async def fault_settings(request: Request) -> Response:
        if request.method == "DELETE":
            faults.clear()
        elif request.method == "PUT":
            try:
                faults.configure(parse_settings(json.loads(await request.body()), startup_limit=faults.startup_limit))
            except ValueError as exc:  # FaultsError, or the JSON decoder's
                reason = str(exc) if isinstance(exc, FaultsError) else f"the body must be JSON: {exc}"
                return JSONResponse({"error": "bad_request", "reason": reason}, status_code=400)
        return JSONResponse(faults.as_json())

    return [
        Route("/__sim/stats", show_stats, methods=["GET"]),
        Route("/__sim/stats/reset", reset_stats, methods=["POST"]),
        Route("/__sim/faults", fault_settings, methods=["GET", "PUT", "DELETE"]),
        *profile_routes(store),
    ]
