"""The whole Capture simulator (Capture API, Akamai API, JWKS, emitter) over real HTTP, for tests
of our clients: they must only ever talk to it the way they would talk to Capture."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2

from capture_relay.embedded_redis import free_port
from service.settings import CaptureApi, from_mapping
from simulator.app import create_app
from simulator.config import ClientCredentials, SimulatorConfig
from simulator.state import Simulator
from tests.support.servers import serve_in_thread

API_CLIENT = ClientCredentials("it-api-client-0000000000000000", "it-api-secret-00000000000000000")
CONFIG_CLIENT = ClientCredentials("it-config-client-000000000000", "it-config-secret-0000000000000")


def capture_config(url: str, **overrides: Any) -> CaptureApi:
    """A validated ``capture:`` section for the simulator at ``url`` with its API client."""
    section = {
        "base_url": url,
        "client_id": API_CLIENT.client_id,
        "client_secret": API_CLIENT.client_secret,
        "retry_deadline": "10s",
        **overrides,
    }
    settings = from_mapping({"capture": section}, {})
    assert settings.capture is not None
    return settings.capture


@dataclass
class RunningSimulator:
    """A simulator serving on ``url``; ``control`` talks to its ``/__sim/`` API."""

    url: str
    sim: Simulator
    control: httpx2.Client

    def faults(self, settings: dict[str, Any]) -> None:
        """Replace the fault settings (``PUT /__sim/faults``)."""
        self.control.put("/__sim/faults", json=settings).raise_for_status()

    def stats(self) -> dict[str, Any]:
        """``GET /__sim/stats``."""
        body: dict[str, Any] = self.control.get("/__sim/stats").json()
        return body

    def reset_stats(self) -> None:
        """Forget the counters (``POST /__sim/stats/reset``)."""
        self.control.post("/__sim/stats/reset").raise_for_status()


@contextmanager
def running_simulator(**overrides: Any) -> Iterator[RunningSimulator]:
    """Start a simulator with ``SimulatorConfig`` overrides on a free port."""
    port = free_port()
    config = SimulatorConfig(
        base_url=f"http://127.0.0.1:{port}", api_client=API_CLIENT, config_client=CONFIG_CLIENT, **overrides
    )
    sim = Simulator.create(config)
    with serve_in_thread(create_app(sim), port=port) as url, httpx2.Client(base_url=url, timeout=10) as control:
        yield RunningSimulator(url, sim, control)
