"""A running Capture simulator over real HTTP (uvicorn in a thread), and helpers to call it as a client would.

Most tests serve only the Capture side (the Capture API and the control routes behind the fault
middleware): it starts in milliseconds, while the whole app also generates RSA keys and runs the
emitter. ``test_app.py`` checks the whole app built by ``create_app``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from simulator.app import assemble
from simulator.backend import CaptureBackend
from simulator.capture_api import capture_routes
from simulator.config import ClientCredentials, SimulatorConfig
from simulator.control import control_routes
from simulator.faults import Faults
from simulator.profiles import ProfileStore
from simulator.stats import CallStats
from simulator.webhook_registry import LegacyWebhooks
from tests.support.servers import serve_in_thread

CLIENT = ClientCredentials("test-client-id-0000000000000000", "test-client-secret-000000000000")


@dataclass
class Running:
    """A Capture simulator serving on ``url``, its state, and a client that authenticates with HTTP Basic."""

    url: str
    backend: CaptureBackend
    faults: Faults
    stats: CallStats
    http: httpx2.Client

    @property
    def store(self) -> ProfileStore:
        """The profiles behind the API."""
        return self.backend.store

    def call(self, path: str, **params: Any) -> httpx2.Response:
        """POST form-encoded ``params`` (non-strings are sent as JSON text, as Capture wants them)."""
        return self.http.post(path, data={key: form_value(value) for key, value in params.items()})

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """``call`` and decode the JSON answer."""
        body: dict[str, Any] = self.call(path, **params).json()
        return body

    def user(self, **attributes: Any) -> dict[str, Any]:
        """A new user profile, made through the store as the control API would."""
        return self.store.create("user", attributes)

    def stats_json(self) -> dict[str, Any]:
        """The simulator's ``GET /__sim/stats``."""
        body: dict[str, Any] = self.http.get("/__sim/stats").json()
        return body


def form_value(value: Any) -> str:
    """A form value as a Capture client sends it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


StartSimulator = Callable[..., Running]


@pytest.fixture
def start_simulator() -> Iterator[StartSimulator]:
    """Start Capture simulators with ``SimulatorConfig`` overrides (and ``clock=``); all stop at the end."""
    with ExitStack() as stack:

        def start(*, clock: Callable[[], float] = time.time, **overrides: Any) -> Running:
            config = SimulatorConfig(api_client=CLIENT, **overrides)
            store = ProfileStore(config.entity_types, clock)
            backend = CaptureBackend(config, store, LegacyWebhooks(config.entity_types, clock), clock)
            faults, stats = Faults(startup_limit=config.max_concurrent_calls), CallStats()
            routes = [*capture_routes(backend), *control_routes(faults, stats, store)]
            url = stack.enter_context(serve_in_thread(assemble(routes, config=config, faults=faults, stats=stats)))
            http = httpx2.Client(base_url=url, auth=(CLIENT.client_id, CLIENT.client_secret), timeout=10)
            stack.enter_context(http)
            return Running(url, backend, faults, stats, http)

        yield start


@pytest.fixture
def capture(start_simulator: StartSimulator) -> Running:
    """A Capture simulator with the default settings (errors on HTTP 200, no faults)."""
    return start_simulator()
