"""The api and worker pods the chart renders: ports, probes, security contexts, the config they
read and its checksum, the grace periods of both kinds of worker, disruption budgets and the
Ingress.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.settings import V3Source, from_mapping
from service.timeutil import parse_duration
from tests.deploy.chart import (
    DELIVERY_WORKER,
    EVENTS_WORKER,
    PROJECT_VERSION,
    WORKER_KINDS,
    WorkerKind,
    at_path,
    config_of,
    container,
    pod_specs,
    render_error,
    workload,
)
from tests.deploy.conftest import CHART_DIR, Rendered, Renderer, merged
from workers.health import PoolStatus, ThreadStatus, health_app

CONFIG_PATH = "/etc/capture-relay/config.yaml"
# A Standard Webhooks secret (whsec_ + base64) for the signing secrets of the rendered configs.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a test signing key, not a secret").decode()
TMP_DIR = "/tmp"  # noqa: S108 - the path inside the pods, where the chart mounts an emptyDir


# --- Containers: ports, probes, config, security ----------------------------------------------


@pytest.mark.parametrize(("render_name", "port"), [("default_render", 8000), ("everything_render", 8080)])
def test_api_serves_on_the_configured_port_with_its_probes(
    request: pytest.FixtureRequest, render_name: str, port: int
) -> None:
    """Port http = config.server.port; readiness /readyz, liveness /healthz; the Service targets http."""
    rendered: Rendered = request.getfixturevalue(render_name)
    api = container(workload(rendered, "api"))
    assert api["args"][0] == "serve"
    assert {"name": "http", "containerPort": port, "protocol": "TCP"} in api["ports"]
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    (service_port,) = rendered.one("Service", "api")["spec"]["ports"]
    assert (service_port["name"], service_port["targetPort"]) == ("http", "http")
    assert config_of(rendered)["server"]["port"] == port


def test_startup_probe_is_optional(default_render: Rendered, everything_render: Rendered) -> None:
    """Off by default; when on, it waits for /healthz on the http port."""
    assert "startupProbe" not in container(workload(default_render, "api"))
    probe = container(workload(everything_render, "api"))["startupProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "http"}
    assert probe["failureThreshold"] == 60
    assert "enabled" not in probe


@pytest.mark.parametrize("kind", WORKER_KINDS, ids=lambda kind: kind.component)
def test_workers_take_their_queue_expose_metrics_and_are_probed_there(any_render: Rendered, kind: WorkerKind) -> None:
    """`worker --queue events|deliveries`, then extraArgs; port metrics = config.worker.metrics_port, probed."""
    box = container(workload(any_render, kind.component))
    extra = merged({"extraArgs": []}, any_render.values.get(kind.key, {}))["extraArgs"]
    assert box["args"] == ["worker", "--queue", kind.queue_arg, *extra]
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in box["ports"]
    assert box["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert config_of(any_render)["worker"]["metrics_port"] == 9100


@pytest.mark.parametrize("healthy", [True, False])
def test_the_worker_probe_asks_what_the_worker_port_answers(default_render: Rendered, healthy: bool) -> None:
    """The probe's path is the worker's health check: 200 for a live pool, 503 for one whose thread ended."""
    path = container(workload(default_render, "worker"))["livenessProbe"]["httpGet"]["path"]
    thread = ThreadStatus("worker-1", alive=healthy, busy=False, last_heartbeat=1000.0)
    pool = PoolStatus("capture-events", started=True, stopping=False, threads=(thread,))
    app = health_app(CollectorRegistry(), lambda: pool, lambda: 1010.0)
    answers: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None, /
    ) -> Callable[[bytes], object]:
        answers.append(status)
        return lambda data: None

    app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response)

    assert answers == ["200 OK" if healthy else "503 Service Unavailable"]


def test_delivery_workers_take_their_own_arguments(everything_render: Rendered) -> None:
    """deliveryWorker.extraArgs follow the queue argument of the delivery workers only."""
    assert container(workload(everything_render, "delivery-worker"))["args"] == [
        "worker",
        "--queue",
        "deliveries",
        "--concurrency",
        "32",
    ]
    assert container(workload(everything_render, "worker"))["args"] == ["worker", "--queue", "events"]


def test_worker_needs_a_metrics_port(render: Renderer) -> None:
    """Without config.worker.metrics_port the probe has nothing to ask: rendering says so."""
    assert "missing property 'metrics_port'" in render_error(render, {"config": {"worker": {"metrics_port": None}}})
    assert "config.worker.metrics_port must be set" in render_error(render, {"config": {"worker": None}})


def test_every_pod_is_locked_down(any_render: Rendered) -> None:
    """Non-root 10001, seccomp RuntimeDefault, read-only root, no privilege escalation, no capabilities, no token."""
    specs = list(pod_specs(any_render))
    assert specs
    for where, _, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (10001, 10001, 10001), where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, where
        for box in spec["containers"]:
            context = box["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert box["resources"]["requests"], where
            assert box["resources"]["limits"]["memory"], where


def test_every_container_reads_the_config_and_has_a_writable_tmp(any_render: Rendered) -> None:
    """The ConfigMap is mounted read-only where CAPTURE_RELAY_CONFIG points; /tmp is an emptyDir."""
    config_map = any_render.one("ConfigMap", "config")["metadata"]["name"]
    for where, _, spec in pod_specs(any_render):
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for box in spec["containers"]:
            env = {item["name"]: item for item in box["env"]}
            assert env["CAPTURE_RELAY_CONFIG"]["value"] == CONFIG_PATH, where
            mounts = {mount["mountPath"]: mount for mount in box["volumeMounts"]}
            config_mount = mounts[str(Path(CONFIG_PATH).parent)]
            assert config_mount["readOnly"] is True
            assert volumes[config_mount["name"]]["configMap"]["name"] == config_map, where
            tmp = mounts[TMP_DIR]
            assert isinstance(volumes[tmp["name"]]["emptyDir"], dict), where
            assert not tmp.get("readOnly", False), where


def test_tmp_may_have_no_size_limit(render: Renderer) -> None:
    """Without a size limit /tmp is still an emptyDir (``{}``, not a null volume source)."""
    rendered = render({"tmpVolume": {"sizeLimit": None}})
    for where, _, spec in pod_specs(rendered):
        (tmp,) = [volume for volume in spec["volumes"] if volume["name"] == "tmp"]
        assert tmp == {"name": "tmp", "emptyDir": {}}, where


def test_secrets_come_in_by_reference_only(everything_render: Rendered) -> None:
    """existingSecret as envFrom, extraEnv with secretKeyRef, a Secret volume for ${file:}; no Secret object."""
    for where, _, spec in pod_specs(everything_render):
        (box,) = spec["containers"]
        assert {"secretRef": {"name": "capture-relay-env"}} in box["envFrom"], where
        env = {item["name"]: item for item in box["env"]}
        assert env["CAPTURE_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": "capture-api",
            "key": "client-secret",
        }
        assert {"name": "capture-relay-secrets", "secret": {"secretName": "capture-relay-files"}} in spec["volumes"]
    assert not everything_render.has("Secret")


def test_image_defaults_to_the_app_version(default_render: Rendered, render: Renderer) -> None:
    """The tag defaults to appVersion; a digest pins the image instead."""
    assert container(workload(default_render, "api"))["image"] == f"capture-relay:{PROJECT_VERSION}"
    digest = "sha256:" + "0" * 64
    pinned = render({"image": {"repository": "registry.example.com/capture-relay", "digest": digest}})
    for _, _, spec in pod_specs(pinned):
        assert spec["containers"][0]["image"] == f"registry.example.com/capture-relay@{digest}"


def test_readiness_waits_longer_than_a_jwks_fetch(any_render: Rendered) -> None:
    """/readyz may fetch the signing keys, which takes up to sources.v3.jwks_timeout: the probe waits longer."""
    probe = container(workload(any_render, "api"))["readinessProbe"]
    v3 = at_path(config_of(any_render), "sources.v3") or {}
    jwks_timeout = (
        parse_duration(v3["jwks_timeout"]) if "jwks_timeout" in v3 else V3Source.model_fields["jwks_timeout"].default
    )
    assert probe["timeoutSeconds"] > jwks_timeout


# --- Config and its checksum -----------------------------------------------------------------


def test_config_map_carries_the_config_values(any_render: Rendered) -> None:
    """config: is rendered as YAML, unchanged, ${VAR} references kept for the app to resolve."""
    expected = merged(
        yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))["config"],
        any_render.values.get("config", {}),
    )
    assert config_of(any_render) == expected


def test_rendered_config_is_valid_for_capture_relay(any_render: Rendered, tmp_path: Path) -> None:
    """The app's own loader accepts the rendered config once its references resolve."""
    text = any_render.one("ConfigMap", "config")["data"]["config.yaml"]
    # A destination's signing secret must look like one (whsec_ + base64); any text does elsewhere.
    signing = {
        reference
        for destination in (yaml.safe_load(text).get("destinations") or {}).values()
        for reference in re.findall(r"\$\{([^}]+)\}", str(destination.get("signing_secret", "")))
    }
    for path in set(re.findall(r"\$\{file:/run/secrets/capture-relay/([^}]+)\}", text)):
        secret = WEBHOOK_SECRET if f"file:/run/secrets/capture-relay/{path}" in signing else "from-a-secret-file"
        (tmp_path / path).write_text(secret + "\n", encoding="utf-8")
    text = text.replace("${file:/run/secrets/capture-relay/", f"${{file:{tmp_path}/")
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    environ = {name: WEBHOOK_SECRET if name in signing else "from-the-environment" for name in names}
    environ["REDIS_URL"] = "redis://redis:6379/0"
    # Broker and database URLs must have their scheme.
    environ.update(MIRROR_DSN="postgresql://relay@db/app", STREAM_REDIS_URL="redis://events-redis:6379/0")
    environ.update(AMQP_URL="amqp://relay@rabbit:5672/%2F", NATS_URL="nats://nats:4222")
    environ["CAPTURE_CUSTOMER_ID"] = "customer-1"
    settings = from_mapping(yaml.safe_load(text), environ)
    assert settings.ingest.queue == "capture-events"
    assert settings.delivery.queue == "capture-deliveries"


def test_pods_carry_the_checksum_of_the_rendered_config_map(any_render: Rendered) -> None:
    """checksum/config on api, worker and registration pods is the sha256 of the ConfigMap as rendered."""
    expected = hashlib.sha256(any_render.template_text("configmap.yaml").encode()).hexdigest()
    specs = list(pod_specs(any_render))
    assert len(specs) >= 2
    for where, metadata, _ in specs:
        assert metadata["annotations"]["checksum/config"] == expected, where


def test_checksum_follows_the_config_only(render: Renderer, default_render: Rendered) -> None:
    """A config change rolls the pods; a change elsewhere (replicas) does not."""

    def checksum(rendered: Rendered) -> str:
        return str(workload(rendered, "worker")["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(render({"config": {"logging": {"level": "debug"}}})) != checksum(default_render)
    assert checksum(render({"api": {"replicaCount": 5}})) == checksum(default_render)


# --- Worker shutdown -------------------------------------------------------------------------


def grace_period(rendered: Rendered, kind: WorkerKind = EVENTS_WORKER) -> int:
    """The terminationGracePeriodSeconds of one kind of worker."""
    return int(workload(rendered, kind.component)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def job_timeout(rendered: Rendered, kind: WorkerKind) -> int:
    """The job timeout of the kind's queue in the rendered config, whole seconds (the default when absent)."""
    raw = at_path(config_of(rendered), f"{kind.section}.job_timeout")
    return kind.default_job_timeout if raw is None else math.ceil(parse_duration(raw))


@pytest.mark.parametrize("kind", WORKER_KINDS, ids=lambda kind: kind.component)
def test_worker_grace_period_outlasts_the_job_timeout(any_render: Rendered, kind: WorkerKind) -> None:
    """SIGTERM lets the current jobs finish: the grace period is longer than the queue's job timeout."""
    timeout = job_timeout(any_render, kind)
    assert grace_period(any_render, kind) > timeout
    extra = merged({"terminationGraceExtraSeconds": 60}, any_render.values.get(kind.key, {}))
    assert grace_period(any_render, kind) == timeout + extra["terminationGraceExtraSeconds"]


def test_each_kind_of_worker_follows_its_own_job_timeout(default_render: Rendered, everything_render: Rendered) -> None:
    """Events workers: ingest.job_timeout (10 min); delivery workers: delivery.job_timeout (2 min)."""
    assert (grace_period(default_render), grace_period(default_render, DELIVERY_WORKER)) == (660, 180)
    assert (grace_period(everything_render), grace_period(everything_render, DELIVERY_WORKER)) == (990, 135)


@pytest.mark.parametrize("kind", WORKER_KINDS, ids=lambda kind: kind.component)
@pytest.mark.parametrize("timeout", [600, 1209600, "10m", "90s", "2.5s", "2.5m", "1h", "1d", "30", "250ms"])
def test_worker_grace_period_follows_the_job_timeout(render: Renderer, kind: WorkerKind, timeout: int | str) -> None:
    """The chart reads a job timeout as the app does (parse_duration, whole seconds rounded up)."""
    rendered = render({"config": {kind.section: {"job_timeout": timeout}}})
    assert grace_period(rendered, kind) == max(1, math.ceil(parse_duration(timeout))) + 60


def test_a_job_timeout_moves_only_its_own_workers(render: Renderer, default_render: Rendered) -> None:
    """A longer delivery timeout lengthens the delivery workers' grace period, not the events workers'."""
    rendered = render({"config": {"delivery": {"job_timeout": "5m"}}})
    assert grace_period(rendered, DELIVERY_WORKER) == 360
    assert grace_period(rendered) == grace_period(default_render)


@pytest.mark.parametrize(
    ("kind", "explicit", "floor"),
    [
        (EVENTS_WORKER, 600, 630),
        (EVENTS_WORKER, 601, 630),
        (EVENTS_WORKER, 629, 630),
        (DELIVERY_WORKER, 120, 150),
        (DELIVERY_WORKER, 149, 150),
    ],
)
def test_an_explicit_grace_period_must_outlast_the_job_timeout_by_30_s(
    render: Renderer, kind: WorkerKind, explicit: int, floor: int
) -> None:
    """A stopping worker finishes its jobs, then records the results and deregisters: 30 s at least."""
    message = render_error(render, {kind.key: {"terminationGracePeriodSeconds": explicit}})
    assert (
        f"{kind.key}.terminationGracePeriodSeconds ({explicit}) must be at least 30 s above"
        f" config.{kind.section}.job_timeout ({floor - 30} s), so {floor} or more"
    ) in message


@pytest.mark.parametrize(("kind", "explicit"), [(EVENTS_WORKER, 630), (EVENTS_WORKER, 700), (DELIVERY_WORKER, 150)])
def test_an_explicit_grace_period_30_s_above_the_job_timeout_is_used(
    render: Renderer, kind: WorkerKind, explicit: int
) -> None:
    """From job timeout + 30 on, the explicit grace period is the pods'."""
    assert grace_period(render({kind.key: {"terminationGracePeriodSeconds": explicit}}), kind) == explicit


@pytest.mark.parametrize("kind", WORKER_KINDS, ids=lambda kind: kind.component)
def test_a_job_timeout_from_the_environment_needs_an_explicit_grace_period(render: Renderer, kind: WorkerKind) -> None:
    """${VAR} cannot be read at render time: the chart asks for the kind's terminationGracePeriodSeconds."""
    from_env = {"config": {kind.section: {"job_timeout": "${JOB_TIMEOUT:-10m}"}}}
    message = render_error(render, from_env)
    assert f"config.{kind.section}.job_timeout is not a literal duration" in message
    assert f"{kind.key}.terminationGracePeriodSeconds" in message
    explicit = render(merged(from_env, {kind.key: {"terminationGracePeriodSeconds": 900}}))
    assert grace_period(explicit, kind) == 900


# --- Disruption budgets and the Ingress ------------------------------------------------------


def test_pod_disruption_budgets(default_render: Rendered, everything_render: Rendered) -> None:
    """policy/v1, maxUnavailable 1 by default, one per Deployment; minAvailable wins when set."""
    budgets = default_render.of_kind("PodDisruptionBudget")
    assert len(budgets) == len(default_render.of_kind("Deployment")) == 3
    for pdb in budgets:
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]
    api = everything_render.one("PodDisruptionBudget", "api")["spec"]
    assert (api["minAvailable"], api["unhealthyPodEvictionPolicy"]) == (2, "AlwaysAllow")
    assert "maxUnavailable" not in api
    delivery = everything_render.one("PodDisruptionBudget", "delivery-worker")
    assert delivery["metadata"]["name"] == workload(everything_render, "delivery-worker")["metadata"]["name"]
    assert (delivery["spec"]["minAvailable"], delivery["spec"]["unhealthyPodEvictionPolicy"]) == (1, "AlwaysAllow")


def test_ingress_routes_webhooks_to_the_http_port(everything_render: Rendered) -> None:
    """The Ingress sends the webhook paths to the api Service's http port."""
    ingress = everything_render.one("Ingress", "api")
    service = everything_render.one("Service", "api")["metadata"]["name"]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (rule["host"], path["path"], path["pathType"]) == ("hooks.example.com", "/webhooks/capture", "Prefix")
    assert path["backend"]["service"] == {"name": service, "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"
