"""``create_app(settings)``: the ingress as a Starlette application.

The lifespan opens what the caller did not pass in (Redis, the JWKS cache and its HTTP client)
and closes only what it opened, so tests and the CLI can hand in their own.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx2
import redis.asyncio
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from service import ops, webhooks
from service.deps import AppDeps
from service.intake import Intake, JobPolicy
from service.metrics import QueueCollector, ServiceMetrics
from service.middleware import RequestContextMiddleware
from service.redisconn import connect_service, connect_service_sync
from service.settings import Settings
from service.verify.jwks import JwksCache
from service.verify.set_token import V3Policy


def create_app(
    settings: Settings,
    *,
    redis_client: redis.asyncio.Redis | None = None,
    jwks: JwksCache | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build the application; nothing is connected until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            connection = redis_client
            if connection is None:
                connection = connect_service(settings.redis_url)
                stack.push_async_callback(connection.aclose)
            # The queue gauges are read by prometheus-client's synchronous collectors, in a thread.
            scrape_connection = connect_service_sync(settings.redis_url)
            stack.callback(scrape_connection.close)
            keys = jwks
            v3 = settings.sources.v3
            if keys is None and v3 is not None:
                http = await stack.enter_async_context(httpx2.AsyncClient())
                keys = JwksCache(
                    v3.jwks_url, http, cooldown=v3.jwks_refresh_cooldown, ttl=v3.jwks_cache_ttl, timeout=v3.jwks_timeout
                )
            registry = CollectorRegistry()
            registry.register(
                QueueCollector(scrape_connection, [settings.ingest.queue, settings.delivery.queue], clock=clock)
            )
            yield {
                "deps": AppDeps(
                    settings=settings,
                    redis=connection,
                    intake=Intake(connection, JobPolicy.from_settings(settings)),
                    metrics=ServiceMetrics(registry),
                    jwks=keys,
                    v3_policy=V3Policy.from_settings(v3) if v3 is not None else None,
                    clock=clock,
                )
            }

    routes = [
        Route("/webhooks/capture/v3", webhooks.receive_v3, methods=["POST"]),
        Route("/webhooks/capture/legacy", webhooks.receive_legacy, methods=["POST"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", ops.openapi, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(RequestContextMiddleware)], lifespan=lifespan)
