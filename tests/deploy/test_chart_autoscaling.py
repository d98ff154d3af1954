"""How the chart scales the pods: the workers' KEDA ScaledObject (Redis, Redis Sentinel) or HPA,
the api HPA, and the floor of two autoscaled workers.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import rq

from tests.deploy.chart import container, render_error, workload
from tests.deploy.conftest import Rendered, Renderer, Values, merged


def queue_key(queue: str) -> str:
    """The Redis list rq keeps the waiting jobs of ``queue`` in (no connection is made)."""
    return str(rq.Queue(queue, connection=redis.Redis()).key)


# --- KEDA and the HPAs -----------------------------------------------------------------------


def scaled_object_trigger(rendered: Rendered) -> dict[str, Any]:
    """The one trigger of the workers' ScaledObject."""
    (trigger,) = rendered.one("ScaledObject", "worker")["spec"]["triggers"]
    result: dict[str, Any] = trigger
    return result


def test_keda_watches_the_queue_list_rq_uses(everything_render: Rendered) -> None:
    """listName is rq's own key for the configured queue; every metadata value is a string."""
    trigger = scaled_object_trigger(everything_render)
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == queue_key("capture-events")
    assert trigger["metadata"] == {
        "listName": "rq:queue:capture-events",
        "listLength": "25",
        "activationListLength": "5",
        "addressFromEnv": "REDIS_ADDRESS",
        "databaseIndex": "0",
        "enableTLS": "false",
        "unsafeSsl": "false",
    }
    env = {item["name"] for item in container(workload(everything_render, "worker"))["env"]}
    assert "REDIS_ADDRESS" in env, "addressFromEnv names a variable of the scaled container"


@pytest.mark.parametrize("queue", ["capture-events", "priority.events_2", "EU-events"])
def test_keda_list_follows_a_changed_queue(render: Renderer, everything_values: Values, queue: str) -> None:
    """Changing config.ingest.queue moves the trigger to that queue's list."""
    rendered = render({"config": {"ingest": {"queue": queue}}}, base=everything_values)
    assert scaled_object_trigger(rendered)["metadata"]["listName"] == queue_key(queue)


def test_keda_authenticates_with_a_secret_reference(everything_render: Rendered) -> None:
    """The password (and username) reach KEDA through a TriggerAuthentication's secretTargetRef."""
    authentication = everything_render.one("TriggerAuthentication", "worker")
    assert authentication["spec"] == {
        "secretTargetRef": [
            {"parameter": "password", "name": "redis-auth", "key": "redis-password"},
            {"parameter": "username", "name": "redis-auth", "key": "redis-username"},
        ]
    }
    trigger = scaled_object_trigger(everything_render)
    assert trigger["authenticationRef"] == {"name": authentication["metadata"]["name"]}


def test_keda_scaled_object_shape(everything_render: Rendered) -> None:
    """Replica bounds, polling, cool-down and the HPA behaviour reach the ScaledObject."""
    spec = everything_render.one("ScaledObject", "worker")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 20)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (10, 600)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 600
    }


def test_keda_with_an_address_and_no_password(render: Renderer) -> None:
    """A literal address and no secret: no TriggerAuthentication, no authenticationRef."""
    rendered = render({"worker": {"autoscaling": {"mode": "keda", "keda": {"address": "redis:6379"}}}})
    trigger = scaled_object_trigger(rendered)
    assert trigger["metadata"]["address"] == "redis:6379"
    assert "addressFromEnv" not in trigger["metadata"]
    assert "authenticationRef" not in trigger
    assert not rendered.has("TriggerAuthentication")
    assert "replicas" not in workload(rendered, "worker")["spec"]


def test_keda_needs_to_know_where_redis_is(render: Renderer) -> None:
    """mode keda without address or addressFromEnv fails with what to set."""
    message = render_error(render, {"worker": {"autoscaling": {"mode": "keda"}}})
    assert "worker.autoscaling.keda.address" in message


def test_worker_hpa_replaces_keda(worker_hpa_render: Rendered) -> None:
    """mode hpa: an autoscaling/v2 HPA on CPU and memory, and no KEDA objects."""
    assert not worker_hpa_render.has("ScaledObject")
    assert not worker_hpa_render.has("TriggerAuthentication")
    hpa = worker_hpa_render.one("HorizontalPodAutoscaler", "worker")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 20)
    targets = {
        metric["resource"]["name"]: metric["resource"]["target"]["averageUtilization"]
        for metric in hpa["spec"]["metrics"]
    }
    assert targets == {"cpu": 75, "memory": 85}


def test_api_hpa(everything_render: Rendered) -> None:
    """The api HPA scales on CPU and memory with the configured behaviour."""
    spec = everything_render.one("HorizontalPodAutoscaler", "api")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 12)
    assert spec["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}


# --- Workers never scale to zero -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kind", "field"),
    [("keda", "ScaledObject", "minReplicaCount"), ("hpa", "HorizontalPodAutoscaler", "minReplicas")],
)
def test_autoscaled_workers_keep_two_by_default(render: Renderer, mode: str, kind: str, field: str) -> None:
    """Without a minReplicas of their own, autoscaled workers never go below two."""
    overrides = {"worker": {"autoscaling": {"mode": mode, "keda": {"address": "redis:6379"}}}}
    assert render(overrides).one(kind, "worker")["spec"][field] == 2


# --- Redis Sentinel for KEDA -----------------------------------------------------------------------


SENTINEL: Values = {"worker": {"autoscaling": {"mode": "keda", "keda": {"type": "redis-sentinel"}}}}


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({}, id="nothing"),
        pytest.param({"sentinelMaster": "mymaster"}, id="no-sentinels"),
        pytest.param({"addresses": "a:26379, b:26379"}, id="no-master"),
        pytest.param({"sentinelMaster": "mymaster", "hosts": "a, b"}, id="hosts-without-ports"),
    ],
)
def test_keda_sentinel_needs_the_master_and_the_sentinels(render: Renderer, metadata: Values) -> None:
    """type redis-sentinel without sentinelMaster and the sentinels' addresses is refused."""
    message = render_error(render, merged(SENTINEL, {"worker": {"autoscaling": {"keda": {"extraMetadata": metadata}}}}))
    assert "extraMetadata.sentinelMaster" in message
    assert "extraMetadata.addresses" in message


def test_keda_sentinel_takes_no_single_server_address(render: Renderer) -> None:
    """address/addressFromEnv name one server; with Sentinel they would be ignored by KEDA, so they are refused."""
    metadata = {"sentinelMaster": "mymaster", "addresses": "a:26379"}
    keda = {"address": "redis:6379", "extraMetadata": metadata}
    message = render_error(render, merged(SENTINEL, {"worker": {"autoscaling": {"keda": keda}}}))
    assert "leave address and addressFromEnv empty" in message


@pytest.mark.parametrize(
    "metadata",
    [
        {"sentinelMaster": "mymaster", "addresses": "a:26379, b:26379"},
        {"sentinelMasterFromEnv": "SENTINEL_MASTER", "addressesFromEnv": "SENTINEL_ADDRESSES"},
        {"sentinelMaster": "mymaster", "hosts": "a, b", "ports": "26379, 26379"},
    ],
)
def test_keda_sentinel_with_master_and_sentinels(render: Renderer, metadata: Values) -> None:
    """Master and sentinels given: they reach the trigger, as strings, with the queue's list."""
    rendered = render(merged(SENTINEL, {"worker": {"autoscaling": {"keda": {"extraMetadata": metadata}}}}))
    trigger = scaled_object_trigger(rendered)
    assert trigger["type"] == "redis-sentinel"
    assert metadata.items() <= trigger["metadata"].items()
    assert trigger["metadata"]["listName"] == queue_key("capture-events")


def test_the_notes_tie_keda_to_redis_url(everything_render: Rendered, render: Renderer) -> None:
    """KEDA cannot read REDIS_URL: the notes repeat its database and TLS and say they must match."""
    notes = " ".join(everything_render.notes.split())
    assert "KEDA reads the queue length from Redis itself: $REDIS_ADDRESS, database 0, no TLS." in notes
    assert "Keep worker.autoscaling.keda.databaseIndex and enableTLS in step with REDIS_URL" in notes
    keda = {"address": "redis:6380", "databaseIndex": 3, "enableTLS": True}
    tls = " ".join(render({"worker": {"autoscaling": {"mode": "keda", "keda": keda}}}).notes.split())
    assert "from Redis itself: redis:6380, database 3, TLS." in tls
    assert "KEDA" not in render({}).notes
