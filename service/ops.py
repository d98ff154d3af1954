"""Operations routes: liveness, readiness, metrics, and the OpenAPI document."""

from __future__ import annotations

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.deps import deps
from service.openapi import openapi_document


async def healthz(request: Request) -> Response:
    """The process is alive; no dependency is checked, so a Redis outage causes no restarts."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when Redis answers and, with v3 on, the signing keys are loaded or loadable."""
    app = deps(request)
    checks: dict[str, str] = {}
    try:
        await app.redis.ping()
        checks["redis"] = "ok"
    except redis.RedisError:
        checks["redis"] = "unreachable"
    if app.jwks is not None:
        checks["jwks"] = "ok" if await app.jwks.ensure_loaded(app.clock()) else "unavailable"
    ready = all(state == "ok" for state in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )


async def metrics(request: Request) -> Response:
    """Prometheus exposition; the queue gauges read Redis, so it runs off the event loop."""
    registry = deps(request).metrics.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 document of the routes."""
    return JSONResponse(openapi_document(deps(request).settings.ingest.max_body_size))
