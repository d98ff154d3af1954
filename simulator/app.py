"""``create_app(sim)``: the simulator as one Starlette application.

Routes: the Capture API (``simulator.capture_api``), the Akamai side (``simulator.akamai``), the
emitter's and the simulator's control routes under ``/__sim/`` (``simulator.control``). The
``FaultMiddleware`` applies latency, injected failures and the call limit to everything outside
``/__sim``, and logs it; the lifespan starts and stops the emitter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import Lifespan

from simulator.akamai import akamai_routes
from simulator.capture_api import capture_routes
from simulator.config import SimulatorConfig
from simulator.control import control_routes
from simulator.faults import Faults
from simulator.middleware import FaultMiddleware
from simulator.state import Simulator
from simulator.stats import CallStats


def create_app(sim: Simulator) -> Starlette:
    """The whole simulator; the emitter runs while the app does."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sim.emitter.start()
        try:
            yield
        finally:
            await sim.emitter.stop()

    routes = [
        *capture_routes(sim.capture),
        *akamai_routes(sim.akamai),
        *sim.emitter.routes(),
        *control_routes(sim.faults, sim.stats, sim.store),
    ]
    return assemble(routes, config=sim.config, faults=sim.faults, stats=sim.stats, lifespan=lifespan)


def assemble(
    routes: Sequence[BaseRoute],
    *,
    config: SimulatorConfig,
    faults: Faults,
    stats: CallStats,
    lifespan: Lifespan[Starlette] | None = None,
) -> Starlette:
    """An app of ``routes`` behind the fault middleware (``create_app`` uses it; tests may too)."""
    middleware = [Middleware(FaultMiddleware, faults=faults, stats=stats, config=config)]
    return Starlette(routes=list(routes), middleware=middleware, lifespan=lifespan)
