"""The Helm chart, checked offline: helm lint and render (Helm v4 SDK), the Kubernetes schemas
(kubernetes-validate, strict), and what the objects say, for the default values, every option on,
and the worker HPA instead of KEDA.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import promql_parser
import pytest
import redis
import rq
import yaml

from service.settings import ConfigError, V3Source, from_mapping
from service.timeutil import parse_duration
from tests.deploy.conftest import (
    CHART_DIR,
    NAMESPACE,
    RELEASE,
    REPO,
    Manifest,
    Rendered,
    Renderer,
    Values,
    merged,
)

RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
# Custom resources: kubernetes-validate has no schema for them, so their shape is asserted here.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# 1.27: the oldest with every field the chart can render (PDB unhealthyPodEvictionPolicy is
# rendered for >= 1.26); the chart's floor, 1.25, is checked with the default values.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
CONFIG_PATH = "/etc/capture-relay/config.yaml"
TMP_DIR = "/tmp"  # noqa: S108 - the path inside the pods, where the chart mounts an emptyDir
SECRET_PATHS = (
    "redis_url",
    "capture.client_secret",
    "capture.webhooks_api.client_secret",
    "sources.legacy.callback_hashes[0]",
    "sources.legacy.callback_hashes[1]",
    "sources.legacy.basic_auth.password",
)
REFERENCE = re.compile(r"^\$\{\s*(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)\s*(:-(?P<default>[^}]*))?\}$")
# Credentials in a literal, as the chart's guard sees them: a URL with a password, or password=.
CREDENTIALS = re.compile(r"://[^/@]*:[^@]+@|[?&]password=", re.IGNORECASE)
# The literal secret the refusal tests write; no message may repeat it.
LITERAL = "hunter2-literal"
DIGEST = "sha256:" + "0" * 64
# The first capture-relay with the `register` command the registration Job runs.
REGISTER_RELEASE: Values = {"image": {"tag": "0.2.0"}}


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(description, pod metadata, pod spec)`` of every pod template rendered."""
    for obj in rendered.objects:
        template = None
        if obj["kind"] in ("Deployment", "Job"):
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        if template is not None:
            yield f"{obj['kind']}/{obj['metadata']['name']}", template["metadata"], template["spec"]


def workload(rendered: Rendered, component: str) -> Manifest:
    """The Deployment of ``component`` (api or worker)."""
    return rendered.one("Deployment", component)


def container(deployment: Manifest) -> dict[str, Any]:
    """The one container of a Deployment's pods."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def config_of(rendered: Rendered) -> dict[str, Any]:
    """The capture-relay config the ConfigMap carries, parsed."""
    config_map = rendered.one("ConfigMap", "config")
    parsed: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return parsed


def at_path(tree: Any, path: str) -> Any:
    """The value at ``a.b[0].c`` in ``tree``, or None."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            tree = tree[index] if isinstance(tree, list) and index < len(tree) else None
        else:
            tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def render_error(render: Renderer, overrides: Values, base: Values | None = None) -> str:
    """The message of the render failure ``overrides`` cause."""
    with pytest.raises((helm_python.HelmRenderError, helm_python.HelmValuesError)) as failure:
        render(overrides, base=base)
    return str(failure.value)


def queue_key(queue: str) -> str:
    """The Redis list rq keeps the waiting jobs of ``queue`` in (no connection is made)."""
    return str(rq.Queue(queue, connection=redis.Redis()).key)


# --- Helm: lint, schema, Kubernetes schemas -------------------------------------------------


@pytest.mark.parametrize("kube_version", [None, "v1.25.0"])
def test_helm_lint_finds_no_errors_or_warnings(any_values: Values, kube_version: str | None) -> None:
    """`helm lint --strict` (Helm's own linter, schema included) reports nothing above INFO."""
    report = helm_python.lint(CHART_DIR, any_values, strict=True, kube_version=kube_version, namespace=NAMESPACE)
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == []
    assert problems == []


def test_rendered_objects_pass_the_kubernetes_schemas_strictly(any_render: Rendered) -> None:
    """Every built-in object validates (unknown fields refused) on the oldest and newest Kubernetes."""
    custom = []
    for obj in any_render.objects:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                custom.append((obj["apiVersion"], obj["kind"]))
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(part) for part in exc.path)
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against {version}: {where}: {exc.message}")
    assert set(custom) <= CUSTOM_KINDS


def test_default_objects_pass_the_schemas_of_the_oldest_supported_kubernetes(default_render: Rendered) -> None:
    """Chart.yaml says kubeVersion >= 1.25: the default objects validate against 1.25."""
    for obj in default_render.objects:
        kubernetes_validate.validate(obj, "1.25.0", strict=True)


def test_chart_metadata_follows_the_project() -> None:
    """apiVersion v2, an application chart, appVersion = the package version, kubeVersion >= 1.25."""
    metadata = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert metadata["apiVersion"] == "v2"
    assert metadata["type"] == "application"
    assert metadata["appVersion"] == project["version"]
    assert metadata["kubeVersion"].startswith(">=1.25")


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"api": {"replicaCount": "two"}}, "/api/replicaCount", id="replicas-not-a-number"),
        pytest.param({"replicas": 2}, "additional properties 'replicas'", id="unknown-top-level-key"),
        pytest.param({"worker": {"autoscaling": {"mode": "both"}}}, "/worker/autoscaling/mode", id="two-autoscalers"),
        pytest.param({"api": {"resource": {}}}, "additional properties 'resource'", id="misspelt-key"),
        pytest.param({"config": {"ingest": {"queue": "a queue"}}}, "/config/ingest/queue", id="bad-queue-name"),
        pytest.param({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", id="bad-enum"),
        pytest.param({"worker": {"replicaCount": 0}}, "/worker/replicaCount", id="no-workers"),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "keda", "minReplicas": 0, "keda": {"address": "redis:6379"}}}},
            "/worker/autoscaling/minReplicas",
            id="keda-scale-to-zero",
        ),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "hpa", "minReplicas": 0}}},
            "/worker/autoscaling/minReplicas",
            id="hpa-scale-to-zero",
        ),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "keda", "keda": {"type": "redis-cluster", "address": "redis:6379"}}}},
            "/worker/autoscaling/keda/type",
            id="redis-cluster",
        ),
        pytest.param(
            {"worker": {"terminationGraceExtraSeconds": 29}},
            "/worker/terminationGraceExtraSeconds",
            id="grace-extra-below-30",
        ),
    ],
)
def test_values_schema_refuses_bad_values(
    chart: helm_python.Chart, render: Renderer, overrides: Values, complaint: str
) -> None:
    """values.schema.json refuses wrong types, unknown keys and bad choices, naming where."""
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(complaint)):
        chart.validate_schema(overrides)
    assert complaint in render_error(render, overrides)


def test_values_schema_accepts_the_defaults_and_every_option(
    chart: helm_python.Chart, everything_values: Values, worker_hpa_values: Values
) -> None:
    """The values files the tests render are valid, so the refusals above are the schema's doing."""
    chart.validate_schema({})
    chart.validate_schema(everything_values)
    chart.validate_schema(worker_hpa_values)


# --- What is rendered -------------------------------------------------------------------------


def test_defaults_render_the_core_objects_only(default_render: Rendered) -> None:
    """Defaults: config, service account, api and workers with PDBs; every optional object off."""
    kinds = sorted(
        (obj["kind"], obj["metadata"]["labels"]["app.kubernetes.io/component"]) for obj in default_render.objects
    )
    assert kinds == [
        ("ConfigMap", "config"),
        ("Deployment", "api"),
        ("Deployment", "worker"),
        ("PodDisruptionBudget", "api"),
        ("PodDisruptionBudget", "worker"),
        ("Service", "api"),
        ("ServiceAccount", "serviceaccount"),
    ]
    assert not [obj for obj in default_render.objects if obj["kind"] == "Secret"]


def test_everything_renders_every_optional_object(everything_render: Rendered) -> None:
    """Every option on: ingress, both autoscalers, monitors, rules, dashboards, registration."""
    for kind, component in [
        ("Ingress", "api"),
        ("HorizontalPodAutoscaler", "api"),
        ("ScaledObject", "worker"),
        ("TriggerAuthentication", "worker"),
        ("ServiceMonitor", "api"),
        ("PodMonitor", "worker"),
        ("PrometheusRule", "alerts"),
        ("ConfigMap", "dashboards"),
        ("Job", "registration"),
        ("CronJob", "registration"),
    ]:
        assert everything_render.has(kind, component), (kind, component)
    assert not everything_render.has("HorizontalPodAutoscaler", "worker")
    assert not everything_render.has("Secret")


def test_names_stay_within_63_characters(render: Renderer, everything_values: Values) -> None:
    """A long release name is cut so that every object name (with its suffix) is a valid label."""
    rendered = render(base=everything_values, name="a-very-long-release-name-for-the-identity-platform-prod")
    for obj in rendered.objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63


# --- Labels and selectors ---------------------------------------------------------------------


def test_every_object_and_pod_carries_the_recommended_labels(any_render: Rendered) -> None:
    """app.kubernetes.io/* and helm.sh/chart on every object and every pod template."""
    labelled = [(f"{obj['kind']}/{obj['metadata']['name']}", obj["metadata"]) for obj in any_render.objects]
    labelled += [(where, metadata) for where, metadata, _ in pod_specs(any_render)]
    for where, metadata in labelled:
        labels = metadata.get("labels", {})
        missing = [label for label in RECOMMENDED_LABELS if label not in labels]
        assert not missing, f"{where} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector selects ``labels``."""
    return all(labels.get(key) == value for key, value in selector.items())


def test_selectors_select_their_own_pods_only(any_render: Rendered) -> None:
    """Deployments, the Service, PDBs and monitors select exactly the pods of their component."""
    pods = {
        component: workload(any_render, component)["spec"]["template"]["metadata"]["labels"]
        for component in ("api", "worker")
    }
    for component, deployment in ((c, workload(any_render, c)) for c in pods):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selects(selector, pods[component])
        assert not selects(selector, pods["worker" if component == "api" else "api"])
    service = any_render.one("Service", "api")
    assert selects(service["spec"]["selector"], pods["api"])
    assert not selects(service["spec"]["selector"], pods["worker"])
    for pdb in any_render.of_kind("PodDisruptionBudget"):
        component = pdb["metadata"]["labels"]["app.kubernetes.io/component"]
        assert selects(pdb["spec"]["selector"]["matchLabels"], pods[component])
        other = "worker" if component == "api" else "api"
        assert not selects(pdb["spec"]["selector"]["matchLabels"], pods[other])
    for monitor in any_render.of_kind("ServiceMonitor"):
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    for monitor in any_render.of_kind("PodMonitor"):
        assert selects(monitor["spec"]["selector"]["matchLabels"], pods["worker"])
        assert not selects(monitor["spec"]["selector"]["matchLabels"], pods["api"])


def test_scalers_target_their_deployment(any_render: Rendered) -> None:
    """HPAs and the ScaledObject name the Deployment of their component, which then has no replicas."""
    for scaler in any_render.of_kind("HorizontalPodAutoscaler") + any_render.of_kind("ScaledObject"):
        component = scaler["metadata"]["labels"]["app.kubernetes.io/component"]
        deployment = workload(any_render, component)
        target = scaler["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"], target["name"]) == (
            "apps/v1",
            "Deployment",
            deployment["metadata"]["name"],
        )
        assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"


def test_topology_spread_constraints_get_the_component_selector(everything_render: Rendered) -> None:
    """A constraint written without labelSelector spreads the component's own pods."""
    for component in ("api", "worker"):
        spec = workload(everything_render, component)["spec"]["template"]
        (constraint,) = spec["spec"]["topologySpreadConstraints"]
        assert selects(constraint["labelSelector"]["matchLabels"], spec["metadata"]["labels"])
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component


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


def test_worker_exposes_metrics_and_is_probed_there(any_render: Rendered) -> None:
    """Port metrics = config.worker.metrics_port (9100); liveness GETs /metrics on it."""
    worker = container(workload(any_render, "worker"))
    assert worker["args"][0] == "worker"
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in worker["ports"]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    assert config_of(any_render)["worker"]["metrics_port"] == 9100


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
    assert container(workload(default_render, "api"))["image"] == "capture-relay:0.1.0"
    digest = "sha256:" + "0" * 64
    pinned = render({"image": {"repository": "registry.example.com/capture-relay", "digest": digest}})
    for _, _, spec in pod_specs(pinned):
        assert spec["containers"][0]["image"] == f"registry.example.com/capture-relay@{digest}"


# --- Config, checksum, secrets guard -------------------------------------------------------------


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
    for name in ("legacy-callback-hash-next", "akamai-config-client-secret"):
        (tmp_path / name).write_text("from-a-secret-file\n", encoding="utf-8")
    text = text.replace("${file:/run/secrets/capture-relay/", f"${{file:{tmp_path}/")
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    environ = dict.fromkeys(names, "from-the-environment")
    environ["REDIS_URL"] = "redis://redis:6379/0"
    environ["CAPTURE_CUSTOMER_ID"] = "customer-1"
    settings = from_mapping(yaml.safe_load(text), environ)
    assert settings.ingest.queue == "capture-events"


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


def secret_literals(rendered: Rendered) -> list[str]:
    """``<ConfigMap>: <key>`` for each secret key of a rendered config that is not a ${VAR} or
    ${file:} reference, or whose default is a secret (any default, but a credential-free URL for
    redis_url)."""
    found = []
    for config_map in rendered.of_kind("ConfigMap"):
        text = config_map.get("data", {}).get("config.yaml")
        if text is None:
            continue
        config = yaml.safe_load(text)
        for path in SECRET_PATHS:
            value = at_path(config, path)
            if value is None:
                continue
            match = REFERENCE.match(value) if isinstance(value, str) else None
            default = (match["default"] or "") if match else ""
            credentials = "@" in default or CREDENTIALS.search(default) is not None
            if match is None or credentials or (default and path != "redis_url"):
                found.append(f"{config_map['metadata']['name']}: {path}")
    return found


def with_value_at(values: Values, path: str, value: Any) -> Values:
    """A copy of ``values`` with ``value`` at ``a.b[0].c`` (the containers on the way exist)."""
    result = copy.deepcopy(values)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = result
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return result


@pytest.mark.parametrize(
    "values_set", ["default", "everything", "worker-hpa", *(f"literal {path}" for path in SECRET_PATHS)]
)
def test_no_config_map_holds_a_secret_literal(
    render: Renderer, everything_values: Values, worker_hpa_values: Values, values_set: str
) -> None:
    """Whatever the values, no rendered ConfigMap holds a secret literal.

    The three values sets of the suite render and are inspected; a values set that writes a
    literal into one secret key must be refused by the guard, and if it renders anyway, the same
    inspection finds the literal.
    """
    values: Values = {"default": {}, "everything": everything_values, "worker-hpa": worker_hpa_values}.get(
        values_set, {}
    )
    if values_set.startswith("literal "):
        values = with_value_at({"config": everything_values["config"]}, "config." + values_set.split()[1], LITERAL)
        values = merged(everything_values, values)
    refusal = ""
    rendered: Rendered | None = None
    try:
        rendered = render(base=values)
    except (helm_python.HelmRenderError, helm_python.HelmValuesError) as failure:
        refusal = str(failure)
    if rendered is None:
        assert values_set.startswith("literal "), f"{values_set} should render: {refusal}"
        assert "hunter2" not in refusal
    else:
        assert secret_literals(rendered) == []


def test_the_secret_literal_check_finds_literals(everything_render: Rendered) -> None:
    """The inspection above can fail: fed a ConfigMap holding literals, it names each key."""
    doctored = copy.deepcopy(everything_render.one("ConfigMap", "config"))
    config = yaml.safe_load(doctored["data"]["config.yaml"])
    config["redis_url"] = "${REDIS_URL:-redis://redis:6379/0?password=" + LITERAL + "}"
    config["capture"]["client_secret"] = LITERAL
    config["capture"]["webhooks_api"]["client_secret"] = "${AKAMAI_SECRET:-" + LITERAL + "}"
    config["sources"]["legacy"]["callback_hashes"][1] = LITERAL
    doctored["data"]["config.yaml"] = yaml.safe_dump(config)
    name = doctored["metadata"]["name"]

    found = secret_literals(Rendered(values={}, files={}, objects=[doctored], notes=""))

    assert found == [
        f"{name}: redis_url",
        f"{name}: capture.client_secret",
        f"{name}: capture.webhooks_api.client_secret",
        f"{name}: sources.legacy.callback_hashes[1]",
    ]


@pytest.mark.parametrize(
    ("path", "overrides"),
    [
        ("config.redis_url", {"redis_url": "redis://:hunter2-literal@redis:6379/0"}),
        ("config.redis_url", {"redis_url": "${REDIS_URL:-redis://:hunter2-literal@redis:6379/0}"}),
        ("config.redis_url", {"redis_url": "${REDIS_URL:-redis://redis:6379/0?password=hunter2-literal}"}),
        ("config.redis_url", {"redis_url": "${REDIS_URL:-rediss://redis:6380/0?ssl=1&Password=hunter2-literal}"}),
        ("config.capture.client_secret", {"capture": {"client_secret": "hunter2-literal"}}),
        ("config.capture.client_secret", {"capture": {"client_secret": "${CAPTURE_SECRET:-hunter2-literal}"}}),
        (
            "config.capture.webhooks_api.client_secret",
            {"capture": {"webhooks_api": {"client_secret": "hunter2-literal"}}},
        ),
        (
            "config.sources.legacy.callback_hashes[1]",
            {"sources": {"legacy": {"callback_hashes": ["${LEGACY_HASH}", "hunter2-literal"]}}},
        ),
        (
            "config.sources.legacy.basic_auth.password",
            {"sources": {"legacy": {"basic_auth": {"username": "janrain", "password": "hunter2-literal"}}}},
        ),
        ("config.capture.client_secret", {"capture": {"client_secret": "prefix-${CAPTURE_SECRET}"}}),
    ],
)
def test_a_literal_secret_in_the_config_fails_rendering(
    render: Renderer, everything_values: Values, path: str, overrides: Values
) -> None:
    """The guard names the key and never repeats the value."""
    message = render_error(render, {"config": overrides}, base=everything_values)
    assert path in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "redis_url",
    ["${REDIS_URL}", "${REDIS_URL:-redis://redis-master:6379/0}", "${file:/run/secrets/redis-url}"],
)
def test_references_without_credentials_pass_the_guard(render: Renderer, redis_url: str) -> None:
    """A plain reference, a credential-free default and a secret file are all accepted."""
    assert config_of(render({"config": {"redis_url": redis_url}}))["redis_url"] == redis_url


@pytest.mark.parametrize(
    ("env", "config", "complaint"),
    [
        pytest.param(
            {"name": "CAPTURE_CLIENT_SECRET", "value": LITERAL}, {}, "looks like a secret", id="named-like-a-secret"
        ),
        pytest.param(
            {"name": "REDIS_URL", "value": "redis://:hunter2@redis:6379/0"},
            {},
            "config.redis_url reads ${REDIS_URL}",
            id="redis-url-with-a-password",
        ),
        pytest.param(
            {"name": "REDIS_URL", "value": "redis://redis:6379/0"},
            {},
            "config.redis_url reads ${REDIS_URL}",
            id="redis-url-without-a-password",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"redis_url": "${RELAY_VALUE:-redis://redis:6379/0}"},
            "config.redis_url reads ${RELAY_VALUE}",
            id="redis-url-reference-with-a-default",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"capture": {"client_secret": "${RELAY_VALUE}"}},
            "config.capture.client_secret reads ${RELAY_VALUE}",
            id="capture-client-secret",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"capture": {"webhooks_api": {"client_secret": "${ RELAY_VALUE }"}}},
            "config.capture.webhooks_api.client_secret reads ${RELAY_VALUE}",
            id="webhooks-api-client-secret",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"sources": {"legacy": {"callback_hashes": ["${LEGACY_CALLBACK_HASH}", "${RELAY_VALUE}"]}}},
            "config.sources.legacy.callback_hashes[1] reads ${RELAY_VALUE}",
            id="callback-hash",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"sources": {"legacy": {"basic_auth": {"password": "${RELAY_VALUE}"}}}},
            "config.sources.legacy.basic_auth.password reads ${RELAY_VALUE}",
            id="basic-auth-password",
        ),
        pytest.param(
            {"name": "BROKER_URL", "value": "amqp://relay:hunter2@mq:5672/"},
            {},
            "carrying credentials",
            id="url-with-a-password",
        ),
        pytest.param(
            {"name": "CACHE_DSN", "value": "redis://cache:6379/0?password=hunter2"},
            {},
            "carrying credentials",
            id="password-parameter",
        ),
        pytest.param(
            {"name": "CACHE_DSN", "value": "redis://cache:6379/0?db=1&Password=hunter2"},
            {},
            "carrying credentials",
            id="password-parameter-any-case",
        ),
    ],
)
def test_a_literal_secret_in_extra_env_fails_rendering(
    render: Renderer, everything_values: Values, env: dict[str, str], config: Values, complaint: str
) -> None:
    """A literal extraEnv value is refused when it is a secret; the message names the variable, not the value."""
    values = merged(everything_values, {"config": config})
    values["extraEnv"] = [*everything_values["extraEnv"], env]
    index = len(everything_values["extraEnv"])

    message = render_error(render, {}, base=values)

    assert f"extraEnv[{index}] ({env['name']})" in message
    assert complaint in message
    assert "hunter2" not in message
    assert env["value"] not in message


@pytest.mark.parametrize(
    ("env", "config"),
    [
        pytest.param({"name": "REDIS_ADDRESS", "value": "redis-master.redis.svc:6379"}, {}, id="host-port"),
        pytest.param({"name": "ONCALL", "value": "identity-oncall@example.com"}, {}, id="an-address"),
        pytest.param(
            {"name": "PUBLIC_URL", "value": "https://hooks.example.com:8443/webhooks"}, {}, id="url-with-port"
        ),
        pytest.param({"name": "DOCS_URL", "value": "https://example.com/people/@identity"}, {}, id="url-with-at"),
        pytest.param(
            {"name": "REDIS_URL", "value": "redis://redis:6379/0"},
            {"redis_url": "${file:/run/secrets/capture-relay/redis-url}"},
            id="redis-url-no-secret-key-reads",
        ),
    ],
)
def test_a_literal_extra_env_value_that_is_no_secret_renders(
    render: Renderer, everything_values: Values, env: dict[str, str], config: Values
) -> None:
    """Host names, addresses and URLs without credentials, in variables no secret key reads, pass."""
    values = merged(everything_values, {"config": config})
    values["extraEnv"] = [*everything_values["extraEnv"], env]

    rendered = render(base=values)

    for where, _, spec in pod_specs(rendered):
        assert env in spec["containers"][0]["env"], where


# --- Worker shutdown and autoscaling ----------------------------------------------------------


def grace_period(rendered: Rendered) -> int:
    """The workers' terminationGracePeriodSeconds."""
    return int(workload(rendered, "worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def test_worker_grace_period_outlasts_the_job_timeout(any_render: Rendered) -> None:
    """SIGTERM lets the current job finish: the grace period is longer than ingest.job_timeout."""
    timeout = math.ceil(parse_duration(config_of(any_render)["ingest"]["job_timeout"]))
    assert grace_period(any_render) > timeout
    extra = merged({"terminationGraceExtraSeconds": 60}, any_render.values.get("worker", {}))
    assert grace_period(any_render) == timeout + extra["terminationGraceExtraSeconds"]


@pytest.mark.parametrize("job_timeout", [600, 1209600, "10m", "90s", "2.5s", "2.5m", "1h", "1d", "30", "250ms"])
def test_worker_grace_period_follows_the_job_timeout(render: Renderer, job_timeout: int | str) -> None:
    """The chart reads a job timeout as the app does (parse_duration, whole seconds rounded up)."""
    rendered = render({"config": {"ingest": {"job_timeout": job_timeout}}})
    assert grace_period(rendered) == max(1, math.ceil(parse_duration(job_timeout))) + 60


@pytest.mark.parametrize("explicit", [600, 601, 629])
def test_an_explicit_grace_period_must_outlast_the_job_timeout_by_30_s(render: Renderer, explicit: int) -> None:
    """A stopping worker finishes its job, then records the result and deregisters: 30 s at least."""
    message = render_error(render, {"worker": {"terminationGracePeriodSeconds": explicit}})
    assert (
        f"worker.terminationGracePeriodSeconds ({explicit}) must be at least 30 s above config.ingest.job_timeout"
        " (600 s), so 630 or more"
    ) in message


@pytest.mark.parametrize("explicit", [630, 700])
def test_an_explicit_grace_period_30_s_above_the_job_timeout_is_used(render: Renderer, explicit: int) -> None:
    """From job timeout + 30 on, the explicit grace period is the pods'."""
    assert grace_period(render({"worker": {"terminationGracePeriodSeconds": explicit}})) == explicit


def test_a_job_timeout_from_the_environment_needs_an_explicit_grace_period(render: Renderer) -> None:
    """${VAR} cannot be read at render time: the chart asks for worker.terminationGracePeriodSeconds."""
    from_env = {"config": {"ingest": {"job_timeout": "${JOB_TIMEOUT:-10m}"}}}
    assert "worker.terminationGracePeriodSeconds" in render_error(render, from_env)
    assert grace_period(render(merged(from_env, {"worker": {"terminationGracePeriodSeconds": 900}}))) == 900


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


def test_pod_disruption_budgets(default_render: Rendered, everything_render: Rendered) -> None:
    """policy/v1, maxUnavailable 1 by default; minAvailable wins when set."""
    for pdb in default_render.of_kind("PodDisruptionBudget"):
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert "minAvailable" not in pdb["spec"]
    api = everything_render.one("PodDisruptionBudget", "api")["spec"]
    assert (api["minAvailable"], api["unhealthyPodEvictionPolicy"]) == (2, "AlwaysAllow")
    assert "maxUnavailable" not in api


def test_ingress_routes_webhooks_to_the_http_port(everything_render: Rendered) -> None:
    """The Ingress sends the webhook paths to the api Service's http port."""
    ingress = everything_render.one("Ingress", "api")
    service = everything_render.one("Service", "api")["metadata"]["name"]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (rule["host"], path["path"], path["pathType"]) == ("hooks.example.com", "/webhooks/capture", "Prefix")
    assert path["backend"]["service"] == {"name": service, "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"


# --- Monitoring -------------------------------------------------------------------------------


def test_service_monitor_and_pod_monitor(everything_render: Rendered) -> None:
    """/metrics on the named ports, with the interval and the labels Prometheus selects on."""
    service_monitor = everything_render.one("ServiceMonitor", "api")
    (endpoint,) = service_monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    pod_monitor = everything_render.one("PodMonitor", "worker")
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")
    for monitor in (service_monitor, pod_monitor):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_prometheus_rule_carries_the_rules_file_unchanged(everything_render: Rendered) -> None:
    """The groups of rules/capture-relay.rules.yaml, Prometheus templates ({{ $labels }}) intact;
    only the absent() of CaptureRelayIngressMetricsAbsent gains the release namespace."""
    rules_file = yaml.safe_load((CHART_DIR / "rules" / "capture-relay.rules.yaml").read_text(encoding="utf-8"))
    expected = copy.deepcopy(rules_file["groups"])
    scoped = 0
    for group in expected:
        for entry in group["rules"]:
            if entry.get("alert") == "CaptureRelayIngressMetricsAbsent":
                unscoped = "absent(capture_relay_queue_depth)"
                assert unscoped in entry["expr"], "the rules file keeps the unscoped absent() for file users"
                entry["expr"] = entry["expr"].replace(
                    unscoped, f'absent(capture_relay_queue_depth{{namespace="{NAMESPACE}"}})'
                )
                scoped += 1
    rule = everything_render.one("PrometheusRule", "alerts")
    assert scoped == 1
    assert rule["spec"] == {"groups": expected}
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["labels"]["role"] == "alert-rules"
    assert "{{ $labels." in yaml.safe_dump(rule["spec"])


def test_dashboard_config_map_for_the_grafana_sidecar(everything_render: Rendered) -> None:
    """Every dashboards/*.json, byte for byte, labelled for the sidecar, in its namespace and folder."""
    dashboards = everything_render.one("ConfigMap", "dashboards")
    files = {path.name: path.read_text(encoding="utf-8") for path in (CHART_DIR / "dashboards").glob("*.json")}
    assert files
    assert dashboards["data"] == files
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["namespace"] == "monitoring"
    assert dashboards["metadata"]["annotations"]["grafana_folder"] == "Identity"


def test_dashboard_label_is_configurable(render: Renderer) -> None:
    """Label key and value follow the sidecar's settings; no folder annotation unless asked."""
    rendered = render({"monitoring": {"dashboards": {"enabled": True, "label": "dashboards", "labelValue": "capture"}}})
    metadata = rendered.one("ConfigMap", "dashboards")["metadata"]
    assert metadata["labels"]["dashboards"] == "capture"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["namespace"] == NAMESPACE
    assert "annotations" not in metadata


# --- Registration -----------------------------------------------------------------------------


def test_registration_hook_job(everything_render: Rendered) -> None:
    """A post-install/upgrade/rollback hook Job, replaced on each run, removed once it succeeds, bounded."""
    assert everything_render.values["image"] == merged(everything_render.values["image"], REGISTER_RELEASE["image"])
    job = everything_render.one("Job", "registration")
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "post-install,post-upgrade,post-rollback",
        "helm.sh/hook-weight": "5",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    assert (job["spec"]["backoffLimit"], job["spec"]["activeDeadlineSeconds"]) == (3, 600)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["register", "--apply", "--prune"]


def test_registration_cron_job(everything_render: Rendered) -> None:
    """The optional CronJob reconciles on a schedule, never two at once, with its own args."""
    cron = everything_render.one("CronJob", "registration")["spec"]
    assert (cron["schedule"], cron["timeZone"], cron["concurrencyPolicy"]) == ("*/30 * * * *", "Etc/UTC", "Forbid")
    assert cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["register", "--apply"]


def test_registration_is_off_by_default(default_render: Rendered, render: Renderer) -> None:
    """No Job or CronJob until registration.enabled (the register command comes with 0.2.0)."""
    assert not default_render.has("Job")
    assert not default_render.has("CronJob")
    rendered = render({"registration": {"enabled": True}}, base=REGISTER_RELEASE)
    assert rendered.one("Job", "registration")["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "register",
        "--apply",
    ]
    assert not rendered.has("CronJob")


def test_notes_warn_about_a_config_without_sources(default_render: Rendered, everything_render: Rendered) -> None:
    """NOTES.txt tells the operator when `serve` would refuse to start."""
    assert "config.sources configures no webhook source" in default_render.notes
    assert "config.sources configures no webhook source" not in everything_render.notes
    assert "rq:queue:capture-events" in everything_render.notes


def test_the_install_notes_show_only_the_registration_subcommand(render: Renderer) -> None:
    """registration.args may carry anything (a token, a URL): the notes print the subcommand alone."""
    args = ["register", "--apply", "--token=" + LITERAL, "--prune"]
    rendered = render({"registration": {"enabled": True, "args": args}}, base=REGISTER_RELEASE)

    assert rendered.one("Job", "registration")["spec"]["template"]["spec"]["containers"][0]["args"] == args
    assert "`capture-relay register`" in rendered.notes
    assert "hunter2" not in rendered.notes
    assert "--apply" not in rendered.notes


# --- The register command's release -------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "version"),
    [
        pytest.param({}, "0.1.0", id="appVersion"),
        pytest.param({"tag": "0.1.0"}, "0.1.0", id="tag"),
        pytest.param({"tag": "v0.1.9"}, "v0.1.9", id="v-prefix"),
        pytest.param({"tag": "0.1"}, "0.1", id="short"),
        pytest.param({"tag": "0.2.0-rc.1"}, "0.2.0-rc.1", id="pre-release-of-0.2.0"),
        pytest.param({"tag": "0.1.0", "digest": DIGEST}, "0.1.0", id="digest-with-its-tag"),
    ],
)
def test_registration_needs_a_release_with_the_register_command(render: Renderer, image: Values, version: str) -> None:
    """Before 0.2.0 there is no `register` command: the hook would fail every install and upgrade."""
    for registration in ({"enabled": True}, {"enabled": True, "cronJob": {"enabled": True}}):
        message = render_error(render, {"registration": registration, "image": image})
        assert (
            f"capture-relay {version} has no `register` command; leave registration.enabled off until a release"
            " that has it"
        ) in message


@pytest.mark.parametrize("tag", ["0.2.0", "0.2", "v0.2.1", "0.2.0+build.7", "0.10.0", "1.0.0"])
def test_registration_renders_from_0_2_0_on(render: Renderer, tag: str) -> None:
    """0.2.0 and later (compared as versions, not as text: 0.10.0 is later) render the hook, no warning."""
    rendered = render({"registration": {"enabled": True, "cronJob": {"enabled": True}}, "image": {"tag": tag}})

    assert rendered.has("Job", "registration")
    assert rendered.has("CronJob", "registration")
    assert "not a semantic" not in rendered.notes


@pytest.mark.parametrize(
    ("image", "shown"),
    [
        pytest.param({"tag": "latest"}, 'image.tag "latest"', id="latest"),
        pytest.param({"tag": "main-3f2a9c1"}, 'image.tag "main-3f2a9c1"', id="branch"),
        pytest.param({"tag": "0.2.0-01"}, 'image.tag "0.2.0-01"', id="not-quite-semver"),
        pytest.param({"digest": DIGEST}, "image.digest alone", id="digest-only"),
    ],
)
def test_registration_with_an_unversioned_image_renders_with_a_warning(
    render: Renderer, image: Values, shown: str
) -> None:
    """A version the chart cannot compare passes, and the install notes say what is at stake."""
    rendered = render({"registration": {"enabled": True}, "image": image})

    assert rendered.has("Job", "registration")
    notes = " ".join(rendered.notes.split())
    assert f"WARNING: the image version ({shown}) is not a semantic version" in notes
    assert "capture-relay 0.2.0 or later" in notes


def test_no_registration_section_is_promised_in_the_config() -> None:
    """capture-relay refuses unknown keys: a `webhooks:` section would crash-loop every pod."""
    with pytest.raises(ConfigError, match="webhooks: unknown key"):
        from_mapping({"redis_url": "redis://redis:6379/0", "webhooks": {}}, {})
    texts = [CHART_DIR / "values.yaml", REPO / "docs" / "kubernetes.md", *sorted(CHART_DIR.glob("templates/*"))]
    for path in texts:
        assert "config.webhooks" not in path.read_text(encoding="utf-8"), path


def test_the_cron_job_name_leaves_room_for_the_job_suffix(render: Renderer) -> None:
    """The CronJob controller appends -<11 digits> to its Jobs: the CronJob name is 52 characters at most."""
    values = merged(REGISTER_RELEASE, {"registration": {"enabled": True, "cronJob": {"enabled": True}}})
    for fullname in ("f" * 60, "f" * 42 + "-" + "g" * 17, "capture-relay"):
        rendered = render(merged(values, {"fullnameOverride": fullname}))
        name = rendered.one("CronJob", "registration")["metadata"]["name"]
        assert len(name) <= 52, name
        assert name.endswith("-register")
        assert "--" not in name
        for obj in rendered.objects:
            assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
    assert name == "capture-relay-register"


# --- Workers never scale to zero -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kind", "field"),
    [("keda", "ScaledObject", "minReplicaCount"), ("hpa", "HorizontalPodAutoscaler", "minReplicas")],
)
def test_autoscaled_workers_keep_two_by_default(render: Renderer, mode: str, kind: str, field: str) -> None:
    """Without a minReplicas of their own, autoscaled workers never go below two."""
    overrides = {"worker": {"autoscaling": {"mode": mode, "keda": {"address": "redis:6379"}}}}
    assert render(overrides).one(kind, "worker")["spec"][field] == 2


@pytest.fixture(scope="module")
def chart_without_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[helm_python.Chart]:
    """The chart less values.schema.json: what `helm install --skip-schema-validation` renders."""
    directory = tmp_path_factory.mktemp("chart") / CHART_DIR.name
    shutil.copytree(CHART_DIR, directory)
    (directory / "values.schema.json").unlink()
    with helm_python.Chart.load(directory) as loaded:
        yield loaded


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"worker": {"replicaCount": 0}}, "worker.replicaCount must be at least 1", id="no-workers"),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "keda", "minReplicas": 0, "keda": {"address": "redis:6379"}}}},
            "worker.autoscaling.minReplicas must be at least 1",
            id="keda-to-zero",
        ),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "keda", "keda": {"type": "redis-cluster", "address": "redis:6379"}}}},
            "does not support Redis Cluster",
            id="redis-cluster",
        ),
        pytest.param(
            {"worker": {"terminationGraceExtraSeconds": 10}},
            "worker.terminationGraceExtraSeconds (10) must be at least 30",
            id="grace-extra",
        ),
    ],
)
def test_the_templates_refuse_what_the_schema_refuses(
    chart_without_schema: helm_python.Chart, overrides: Values, complaint: str
) -> None:
    """Without the schema (--skip-schema-validation), the templates still refuse, and say why."""
    with pytest.raises(helm_python.HelmRenderError) as failure:
        chart_without_schema.render(overrides, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert complaint in str(failure.value)
    if "at least 1" in complaint:
        assert "ScheduledJobRegistry" in str(failure.value)


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


# --- Disruption budgets that would block drains -----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param(
            {"worker": {"replicaCount": 1, "pdb": {"minAvailable": 1}}},
            "worker.pdb.minAvailable (1) must be below worker.replicaCount (1)",
            id="worker-one-of-one",
        ),
        pytest.param(
            {"api": {"replicaCount": 2, "pdb": {"minAvailable": 3}}},
            "api.pdb.minAvailable (3) must be below api.replicaCount (2)",
            id="api-above-replicas",
        ),
        pytest.param(
            {"api": {"autoscaling": {"enabled": True, "minReplicas": 3}, "pdb": {"minAvailable": 3}}},
            "api.pdb.minAvailable (3) must be below api.autoscaling.minReplicas (3)",
            id="api-autoscaled",
        ),
        pytest.param(
            {
                "worker": {
                    "replicaCount": 5,
                    "autoscaling": {"mode": "keda", "minReplicas": 2, "keda": {"address": "redis:6379"}},
                    "pdb": {"minAvailable": 2},
                }
            },
            "worker.pdb.minAvailable (2) must be below worker.autoscaling.minReplicas (2)",
            id="worker-keda",
        ),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "hpa", "minReplicas": 3}, "pdb": {"minAvailable": 4}}},
            "worker.pdb.minAvailable (4) must be below worker.autoscaling.minReplicas (3)",
            id="worker-hpa",
        ),
        pytest.param({"api": {"pdb": {"minAvailable": "100%"}}}, "api.pdb.minAvailable is 100%", id="all-of-them"),
        pytest.param({"worker": {"pdb": {"maxUnavailable": 0}}}, "worker.pdb.maxUnavailable is 0", id="none-down"),
        pytest.param({"api": {"pdb": {"maxUnavailable": "0%"}}}, "api.pdb.maxUnavailable is 0%", id="none-down-%"),
    ],
)
def test_a_budget_that_never_allows_an_eviction_is_refused(render: Renderer, overrides: Values, complaint: str) -> None:
    """A PDB no eviction can satisfy blocks node drains forever: rendering fails, naming both values."""
    message = render_error(render, overrides)
    assert complaint in message
    assert "drains" in message


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"worker": {"replicaCount": 1}}, id="one-worker-default-budget"),
        pytest.param({"api": {"replicaCount": 3, "pdb": {"minAvailable": 2}}}, id="two-of-three"),
        pytest.param({"api": {"pdb": {"minAvailable": "50%"}}}, id="half"),
        pytest.param({"worker": {"replicaCount": 1, "pdb": {"enabled": False, "minAvailable": 1}}}, id="no-pdb"),
        pytest.param({"worker": {"replicaCount": 2, "pdb": {"minAvailable": 1}}}, id="one-of-two"),
    ],
)
def test_a_budget_that_allows_an_eviction_renders(render: Renderer, overrides: Values) -> None:
    """maxUnavailable 1 (even with one replica), or minAvailable below the replicas, is fine."""
    render(overrides)


# --- Probes and the PrometheusRule -------------------------------------------------------------------


def test_readiness_waits_longer_than_a_jwks_fetch(any_render: Rendered) -> None:
    """/readyz may fetch the signing keys, which takes up to sources.v3.jwks_timeout: the probe waits longer."""
    probe = container(workload(any_render, "api"))["readinessProbe"]
    v3 = at_path(config_of(any_render), "sources.v3") or {}
    jwks_timeout = (
        parse_duration(v3["jwks_timeout"]) if "jwks_timeout" in v3 else V3Source.model_fields["jwks_timeout"].default
    )
    assert probe["timeoutSeconds"] > jwks_timeout


def absent_expressions(rule: Manifest) -> list[str]:
    """The expressions of a PrometheusRule that call absent()."""
    return [
        entry["expr"].strip()
        for group in rule["spec"]["groups"]
        for entry in group["rules"]
        if "absent(" in entry["expr"]
    ]


@pytest.mark.parametrize("namespace", [NAMESPACE, "identity-staging"])
def test_prometheus_rule_scopes_absent_to_the_release_namespace(
    chart: helm_python.Chart, everything_values: Values, namespace: str
) -> None:
    """absent() has no labels to group by: the chart's copy looks at its own namespace only."""
    files = chart.render(everything_values, name=RELEASE, namespace=namespace, is_install=True)
    (text,) = [text for path, text in files.items() if path.endswith("/prometheusrule.yaml")]
    rule = yaml.safe_load(text)

    (expr,) = absent_expressions(rule)
    assert expr == f'absent(capture_relay_queue_depth{{namespace="{namespace}"}})'
    (call,) = [node for node in [promql_parser.parse(expr)] if isinstance(node, promql_parser.Call)]
    (selector,) = call.args
    assert isinstance(selector, promql_parser.VectorSelector)
    assert [(m.name, m.value) for m in selector.matchers.matchers] == [("namespace", namespace)]
