"""How the chart scales the pods: a KEDA ScaledObject (Redis, Redis Sentinel) or an HPA for each
kind of worker, each on its own queue, the api HPA, and the floor of two autoscaled workers.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import rq

from tests.deploy.chart import (
    DELIVERY_WORKER,
    EVENTS_WORKER,
    WORKER_KINDS,
    WorkerKind,
    container,
    render_error,
    workload,
)
from tests.deploy.conftest import Rendered, Renderer, Values, merged


def queue_key(queue: str) -> str:
    """The Redis list rq keeps the waiting jobs of ``queue`` in (no connection is made)."""
    return str(rq.Queue(queue, connection=redis.Redis()).key)


# --- KEDA and the HPAs -----------------------------------------------------------------------


def scaled_object_trigger(rendered: Rendered, component: str = "worker") -> dict[str, Any]:
    """The one trigger of the ScaledObject of a kind of worker."""
    (trigger,) = rendered.one("ScaledObject", component)["spec"]["triggers"]
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


def test_keda_watches_the_deliveries_list_through_the_same_redis(everything_render: Rendered) -> None:
    """The delivery workers' trigger: rq's key of the deliveries queue, its own list length, the shared connection."""
    trigger = scaled_object_trigger(everything_render, "delivery-worker")
    assert trigger["metadata"]["listName"] == queue_key("capture-deliveries") == "rq:queue:capture-deliveries"
    assert trigger["metadata"] == {
        **scaled_object_trigger(everything_render)["metadata"],
        "listName": "rq:queue:capture-deliveries",
        "listLength": "100",
        "activationListLength": "10",
    }
    assert trigger["type"] == "redis"
    env = {item["name"] for item in container(workload(everything_render, "delivery-worker"))["env"]}
    assert "REDIS_ADDRESS" in env


def test_keda_list_of_the_deliveries_by_default(render: Renderer) -> None:
    """Without a delivery section the list is the default queue's, rq:queue:capture-deliveries."""
    overrides = {
        "config": {"delivery": None},
        "worker": {"autoscaling": {"keda": {"address": "redis:6379"}}},
        "deliveryWorker": {"autoscaling": {"mode": "keda"}},
    }
    rendered = render(overrides)
    assert "delivery" not in rendered.values["config"] or rendered.values["config"]["delivery"] is None
    assert scaled_object_trigger(rendered, "delivery-worker")["metadata"]["listName"] == queue_key("capture-deliveries")
    assert not rendered.has("ScaledObject", "worker"), "each kind scales by its own mode"


@pytest.mark.parametrize("kind", WORKER_KINDS, ids=lambda kind: kind.component)
@pytest.mark.parametrize("queue", ["capture-events-2", "priority.queue_2", "EU-queue"])
def test_keda_list_follows_a_changed_queue(
    render: Renderer, everything_values: Values, kind: WorkerKind, queue: str
) -> None:
    """Changing a kind's config queue (ingest.queue, delivery.queue) moves its trigger, and only its, to that list."""
    rendered = render({"config": {kind.section: {"queue": queue}}}, base=everything_values)
    assert scaled_object_trigger(rendered, kind.component)["metadata"]["listName"] == queue_key(queue)
    (other,) = [k for k in WORKER_KINDS if k != kind]
    expected = queue_key(str(everything_values["config"][other.section]["queue"]))
    assert scaled_object_trigger(rendered, other.component)["metadata"]["listName"] == expected


@pytest.mark.parametrize("kind", WORKER_KINDS, ids=lambda kind: kind.component)
def test_keda_authenticates_with_a_secret_reference(everything_render: Rendered, kind: WorkerKind) -> None:
    """The password (and username) reach KEDA through a TriggerAuthentication's secretTargetRef."""
    authentication = everything_render.one("TriggerAuthentication", kind.component)
    assert authentication["spec"] == {
        "secretTargetRef": [
            {"parameter": "password", "name": "redis-auth", "key": "redis-password"},
            {"parameter": "username", "name": "redis-auth", "key": "redis-username"},
        ]
    }
    trigger = scaled_object_trigger(everything_render, kind.component)
    assert trigger["authenticationRef"] == {"name": authentication["metadata"]["name"]}


@pytest.mark.parametrize(
    ("kind", "bounds", "timing", "window"),
    [(EVENTS_WORKER, (1, 20), (10, 600), 600), (DELIVERY_WORKER, (2, 30), (5, 120), 120)],
    ids=["worker", "delivery-worker"],
)
def test_keda_scaled_object_shape(
    everything_render: Rendered, kind: WorkerKind, bounds: tuple[int, int], timing: tuple[int, int], window: int
) -> None:
    """Replica bounds, polling, cool-down and the HPA behaviour of each kind reach its ScaledObject."""
    spec = everything_render.one("ScaledObject", kind.component)["spec"]
    assert spec["scaleTargetRef"]["name"] == workload(everything_render, kind.component)["metadata"]["name"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == bounds
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == timing
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": window
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


@pytest.mark.parametrize("kind", WORKER_KINDS, ids=lambda kind: kind.component)
def test_keda_needs_to_know_where_redis_is(render: Renderer, kind: WorkerKind) -> None:
    """mode keda without address or addressFromEnv fails with what to set: the one connection, under worker."""
    message = render_error(render, {kind.key: {"autoscaling": {"mode": "keda"}}})
    assert f"{kind.key}.autoscaling.mode is keda" in message
    assert "worker.autoscaling.keda.address" in message


def test_delivery_workers_use_the_kedas_connection_of_worker(render: Renderer) -> None:
    """The delivery workers' ScaledObject reads Redis where worker.autoscaling.keda says, whatever worker's mode."""
    connection = {"address": "redis:6380", "databaseIndex": 2, "enableTLS": True}
    overrides = {
        "worker": {"autoscaling": {"mode": "hpa", "keda": connection}},
        "deliveryWorker": {"autoscaling": {"mode": "keda"}},
    }
    rendered = render(overrides)
    metadata = scaled_object_trigger(rendered, "delivery-worker")["metadata"]
    assert (metadata["address"], metadata["databaseIndex"], metadata["enableTLS"]) == ("redis:6380", "2", "true")
    assert rendered.has("HorizontalPodAutoscaler", "worker")
    assert not rendered.has("ScaledObject", "worker")


def hpa_targets(hpa: dict[str, Any]) -> dict[str, int]:
    """Resource name -> target utilisation of an HPA."""
    return {
        metric["resource"]["name"]: metric["resource"]["target"]["averageUtilization"]
        for metric in hpa["spec"]["metrics"]
    }


def test_worker_hpa_replaces_keda(worker_hpa_render: Rendered) -> None:
    """mode hpa: an autoscaling/v2 HPA on CPU and memory per kind of worker, and no KEDA objects."""
    assert not worker_hpa_render.has("ScaledObject")
    assert not worker_hpa_render.has("TriggerAuthentication")
    hpa = worker_hpa_render.one("HorizontalPodAutoscaler", "worker")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 20)
    assert hpa_targets(hpa) == {"cpu": 75, "memory": 85}
    delivery = worker_hpa_render.one("HorizontalPodAutoscaler", "delivery-worker")
    assert (delivery["spec"]["minReplicas"], delivery["spec"]["maxReplicas"]) == (2, 30)
    assert hpa_targets(delivery) == {"cpu": 65}
    assert delivery["spec"]["behavior"] == {"scaleUp": {"stabilizationWindowSeconds": 0}}


def test_api_hpa(everything_render: Rendered) -> None:
    """The api HPA scales on CPU and memory with the configured behaviour."""
    spec = everything_render.one("HorizontalPodAutoscaler", "api")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 12)
    assert spec["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 300}}


# --- Workers never scale to zero -------------------------------------------------------------------


@pytest.mark.parametrize("worker", WORKER_KINDS, ids=lambda kind: kind.component)
@pytest.mark.parametrize(
    ("mode", "kind", "field"),
    [("keda", "ScaledObject", "minReplicaCount"), ("hpa", "HorizontalPodAutoscaler", "minReplicas")],
)
def test_autoscaled_workers_keep_two_by_default(
    render: Renderer, worker: WorkerKind, mode: str, kind: str, field: str
) -> None:
    """Without a minReplicas of their own, autoscaled workers of either kind never go below two."""
    overrides = merged(
        {"worker": {"autoscaling": {"keda": {"address": "redis:6379"}}}}, {worker.key: {"autoscaling": {"mode": mode}}}
    )
    assert render(overrides).one(kind, worker.component)["spec"][field] == 2


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
    assert (
        "the workers stay at worker.autoscaling.minReplicas (1) and deliveryWorker.autoscaling.minReplicas (2)" in notes
    )
    assert (
        "Delivery workers: Deployment capture-relay-delivery-worker on queue capture-deliveries, scaled by KEDA"
        in notes
    )
    assert "on the Redis list rq:queue:capture-deliveries; grace period 135 s." in notes
    keda = {"address": "redis:6380", "databaseIndex": 3, "enableTLS": True}
    tls = " ".join(render({"worker": {"autoscaling": {"mode": "keda", "keda": keda}}}).notes.split())
    assert "from Redis itself: redis:6380, database 3, TLS." in tls
    assert "the workers stay at worker.autoscaling.minReplicas (2) however long" in tls
    assert "KEDA" not in render({}).notes
