"""What the route handlers work with, created in the app's lifespan and reached via ``deps()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis.asyncio
from starlette.requests import Request

from service.intake import Intake
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.verify.jwks import JwksCache
from service.verify.set_token import V3Policy


@dataclass(frozen=True, slots=True)
class AppDeps:
    """The collaborators of the route handlers."""

    settings: Settings
    redis: redis.asyncio.Redis
    intake: Intake
    metrics: ServiceMetrics
    jwks: JwksCache | None
    v3_policy: V3Policy | None
    clock: Callable[[], float]


def deps(request: Request) -> AppDeps:
    """The typed accessor that every handler uses."""
    return cast(AppDeps, request.state.deps)
