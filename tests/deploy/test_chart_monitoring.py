"""What the chart gives Prometheus and Grafana: the ServiceMonitor and PodMonitor, the
PrometheusRule (a copy of the rules file, absent() scoped to the release namespace) and the
dashboards ConfigMap for the Grafana sidecar.
"""

from __future__ import annotations

import copy

import helm_python
import promql_parser
import pytest
import yaml

from tests.deploy.chart import container, selects, workload
from tests.deploy.conftest import CHART_DIR, NAMESPACE, RELEASE, Manifest, Rendered, Renderer, Values


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


@pytest.mark.parametrize("component", ["worker", "delivery-worker"])
def test_one_pod_monitor_scrapes_both_kinds_of_worker(everything_render: Rendered, component: str) -> None:
    """Events and delivery workers share one PodMonitor, so their series share one job label."""
    (pod_monitor,) = everything_render.of_kind("PodMonitor")
    pod = workload(everything_render, component)["spec"]["template"]
    ports = {port["name"] for port in container(workload(everything_render, component))["ports"]}

    assert selects(pod_monitor["spec"]["selector"], pod["metadata"]["labels"])
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports


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
