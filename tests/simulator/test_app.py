"""The whole simulator built by ``create_app``: every part mounted, the emitter run by the lifespan."""

from __future__ import annotations

import httpx2

from simulator.app import create_app
from simulator.capture_api import ROUTES
from simulator.config import SimulatorConfig
from simulator.faults import CAPTURE_API_PATHS, path_matches
from simulator.state import Simulator
from tests.simulator.conftest import CLIENT
from tests.support.servers import serve_in_thread


def test_every_capture_route_is_a_capture_api_path() -> None:
    """Faults and the call limit cover every Capture route by default."""
    for path in ROUTES:
        assert any(path_matches(path, prefix) for prefix in CAPTURE_API_PATHS), path


def test_create_app_serves_capture_akamai_emitter_and_control() -> None:
    """One app answers the Capture API, the JWK page, the emitter's and the simulator's control routes."""
    config = SimulatorConfig(api_client=CLIENT, max_concurrent_calls=5)
    sim = Simulator.create(config)
    sim.store.create("user", {"email": "ada@example.com"})

    with serve_in_thread(create_app(sim)) as url, httpx2.Client(base_url=url, timeout=10) as http:
        entity = http.post(
            "/entity",
            data={"type_name": "user", "key_attribute": "email", "key_value": '"ada@example.com"'},
            auth=(CLIENT.client_id, CLIENT.client_secret),
        )
        jwk = http.get(f"/{config.customer_id}/login/jwk")
        targets = http.get("/__sim/targets")
        faults = http.get("/__sim/faults")
        stats = http.get("/__sim/stats").json()

    assert entity.json()["result"]["email"] == "ada@example.com"
    assert len(jwk.json()["keys"]) == config.key_count
    assert targets.status_code == 200
    assert faults.json()["max_concurrent_calls"] == 5
    assert stats["calls"] == {"/entity": 1, f"/{config.customer_id}/login/jwk": 1}
    assert stats["max_in_flight"] == 1  # the JWK page is not a Capture API call


def test_profiles_made_through_the_control_api_reach_the_emitter() -> None:
    """A profile created with POST /__sim/profiles goes through the store the emitter listens to."""
    sim = Simulator.create(SimulatorConfig(api_client=CLIENT))
    seen: list[str] = []
    sim.store.subscribe(lambda change: seen.append(change.kind))

    with serve_in_thread(create_app(sim)) as url:
        created = httpx2.post(f"{url}/__sim/profiles", json={"attributes": {"email": "a@example.com"}}, timeout=10)
        httpx2.delete(f"{url}/__sim/profiles/{created.json()['uuid']}", timeout=10)

    assert seen == ["entityCreated", "entityDeleted"]
