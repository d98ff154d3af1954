"""The Helm chart as Helm and Kubernetes read it, checked offline: helm lint and the values schema
(Helm v4 SDK), the Kubernetes schemas (kubernetes-validate, strict), which objects are rendered,
their names, labels and selectors, for the default values, every option on, and the workers'
HPAs instead of KEDA.
"""

from __future__ import annotations

import re
import tomllib

import helm_python
import kubernetes_validate
import pytest
import yaml

from tests.deploy.chart import PROJECT_VERSION, pod_specs, render_error, selects, workload
from tests.deploy.conftest import CHART_DIR, NAMESPACE, RELEASE, REPO, Rendered, Renderer, Values

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
        pytest.param({"deliveryWorker": {"replicaCount": 0}}, "/deliveryWorker/replicaCount", id="no-delivery-workers"),
        pytest.param(
            {"deliveryWorker": {"autoscaling": {"mode": "hpa", "minReplicas": 0}}},
            "/deliveryWorker/autoscaling/minReplicas",
            id="delivery-hpa-scale-to-zero",
        ),
        pytest.param(
            {"deliveryWorker": {"autoscaling": {"keda": {"address": "redis:6379"}}}},
            "additional properties 'address'",
            id="delivery-keda-connection-is-the-workers",
        ),
        pytest.param(
            {"deliveryWorker": {"terminationGraceExtraSeconds": 10}},
            "/deliveryWorker/terminationGraceExtraSeconds",
            id="delivery-grace-extra-below-30",
        ),
        pytest.param(
            {"config": {"delivery": {"queue": "deliveries!"}}}, "/config/delivery/queue", id="bad-delivery-queue-name"
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
    """Defaults: config, service account, api and both kinds of worker with PDBs; every optional object off."""
    kinds = sorted(
        (obj["kind"], obj["metadata"]["labels"]["app.kubernetes.io/component"]) for obj in default_render.objects
    )
    assert kinds == [
        ("ConfigMap", "config"),
        ("Deployment", "api"),
        ("Deployment", "delivery-worker"),
        ("Deployment", "worker"),
        ("PodDisruptionBudget", "api"),
        ("PodDisruptionBudget", "delivery-worker"),
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
        ("ScaledObject", "delivery-worker"),
        ("TriggerAuthentication", "delivery-worker"),
        ("ServiceMonitor", "api"),
        ("PodMonitor", "worker"),
        ("PrometheusRule", "alerts"),
        ("ConfigMap", "dashboards"),
        ("Job", "registration"),
        ("CronJob", "registration"),
    ]:
        assert everything_render.has(kind, component), (kind, component)
    assert not everything_render.has("HorizontalPodAutoscaler", "worker")
    assert not everything_render.has("HorizontalPodAutoscaler", "delivery-worker")
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
        assert labels["app.kubernetes.io/version"] == PROJECT_VERSION


COMPONENTS = ("api", "worker", "delivery-worker")


def test_selectors_select_their_own_pods_only(any_render: Rendered) -> None:
    """Deployments, the Service and PDBs select exactly the pods of their component; the PodMonitor both workers'."""
    pods = {
        component: workload(any_render, component)["spec"]["template"]["metadata"]["labels"] for component in COMPONENTS
    }
    selecting = [(workload(any_render, c), c) for c in COMPONENTS]
    selecting += [
        (pdb, pdb["metadata"]["labels"]["app.kubernetes.io/component"])
        for pdb in any_render.of_kind("PodDisruptionBudget")
    ]
    assert len(selecting) == 6
    for obj, component in selecting:
        selector = obj["spec"]["selector"]
        chosen = {c for c in COMPONENTS if selects(selector, pods[c])}
        assert chosen == {component}, f"{obj['kind']}/{obj['metadata']['name']} selects {chosen}"
    service = any_render.one("Service", "api")
    assert {c for c in COMPONENTS if selects({"matchLabels": service["spec"]["selector"]}, pods[c])} == {"api"}
    for monitor in any_render.of_kind("ServiceMonitor"):
        assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    for monitor in any_render.of_kind("PodMonitor"):
        chosen = {c for c in COMPONENTS if selects(monitor["spec"]["selector"], pods[c])}
        assert chosen == {"worker", "delivery-worker"}


def test_label_selector_check_can_fail() -> None:
    """The selector check above reads matchLabels and matchExpressions as Kubernetes does."""
    selector = {
        "matchLabels": {"app.kubernetes.io/instance": "x"},
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": ["worker"]}],
    }

    assert selects(selector, {"app.kubernetes.io/instance": "x", "app.kubernetes.io/component": "worker"})
    assert not selects(selector, {"app.kubernetes.io/instance": "x", "app.kubernetes.io/component": "api"})
    assert not selects(selector, {"app.kubernetes.io/instance": "y", "app.kubernetes.io/component": "worker"})


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
    for component in COMPONENTS:
        spec = workload(everything_render, component)["spec"]["template"]
        (constraint,) = spec["spec"]["topologySpreadConstraints"]
        assert selects(constraint["labelSelector"]["matchLabels"], spec["metadata"]["labels"])
        assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
