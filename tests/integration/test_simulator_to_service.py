"""The simulator's emitter delivers to the real ingress over HTTP: both sides follow the protocol
independently (the simulator shares no code with ``service``), so this catches a mistake in either."""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from capture_relay.embedded_redis import RedisServer, free_port
from service.app import create_app
from service.settings import from_mapping
from tests.support.servers import serve_in_thread
from tests.support.simulator import RunningSimulator

HASH = "0f" * 20


def test_emitted_changes_are_verified_and_stored_once(
    capture_sim: RunningSimulator, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    port = free_port()
    ingress = f"http://127.0.0.1:{port}"
    customer = capture_sim.sim.config.customer_id
    settings = from_mapping(
        {
            "redis_url": redis_server.url,
            "sources": {
                "v3": {
                    "jwks_url": f"{capture_sim.url}/{customer}/login/jwk",
                    "issuer": f"{capture_sim.url}/{customer}/webhooks",
                    "audience": f"{ingress}/webhooks/capture/v3",
                },
                "legacy": {"callback_hashes": [HASH]},
            },
        },
        {},
    )
    control = capture_sim.control
    with serve_in_thread(create_app(settings), port=port):
        control.post(
            "/__sim/targets", json={"url": f"{ingress}/webhooks/capture/v3", "format": "v3", "duplicates": 1.0}
        ).raise_for_status()
        control.post(
            "/__sim/targets",
            json={"url": f"{ingress}/webhooks/capture/legacy", "format": "legacy", "callback_hash": HASH},
        ).raise_for_status()
        created = control.post("/__sim/profiles", json={"attributes": {"email": "e2e@example.com"}}).json()
        control.patch(f"/__sim/profiles/{created['uuid']}", json={"changes": {"email": "new@example.com"}})
        control.delete(f"/__sim/profiles/{created['uuid']}")
        control.post("/__sim/emitter/wait", json={"timeout": 20}).raise_for_status()
        deliveries: list[dict[str, Any]] = control.get("/__sim/deliveries").json()["deliveries"]

    v3 = [d for d in deliveries if d["format"] == "v3"]
    legacy = [d for d in deliveries if d["format"] == "legacy"]
    # Each change once per target, and every v3 delivery sent twice (duplicates: 1.0).
    assert sorted(d["kind"] for d in v3 if not d["duplicate"]) == ["entityCreated", "entityDeleted", "entityUpdated"]
    assert {d["status"] for d in v3 if not d["duplicate"]} == {202}
    assert {d["status"] for d in v3 if d["duplicate"]} == {200}
    assert len(legacy) == 3
    assert {d["status"] for d in legacy} == {200}
    assert all(d["outcome"] == "delivered" for d in deliveries)

    jobs = Queue("capture-events", connection=redis_client, serializer=JSONSerializer).jobs
    events = [job.args[0] for job in jobs]
    assert len(events) == 6  # three v3 events, three legacy ones; no duplicate stored
    assert {e["uuid"] for e in events} == {created["uuid"]}
    v3_types = sorted(e["type"] for e in events if e["source"] == "v3")
    assert v3_types == ["entityCreated", "entityDeleted", "entityUpdated"]
    updated = next(e for e in events if e["source"] == "v3" and e["type"] == "entityUpdated")
    assert updated["attributes"] == ["email"]
