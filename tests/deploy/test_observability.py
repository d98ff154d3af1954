"""The Grafana dashboard and the Prometheus alert rules refer only to what the code exports.

Every PromQL expression (dashboard targets, variable queries, alert rules) is parsed with
``promql-parser`` (tests/deploy/promql.py); each metric it selects must be a sample the real
registries produce, each label it matches or groups by must exist on those samples, and label
values written out in a matcher (reasons, outcomes, states) must be tokens the code emits. Every
exported metric is documented, and the Helm chart carries identical copies of both files. The
provisioning conventions of each file are checked in test_dashboard.py and test_alert_rules.py.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import QueueCollector, ServiceMetrics, WorkerMetrics
from tests.deploy.observability import (
    DASHBOARD,
    DOCS,
    QUEUE,
    ROOT,
    RULES,
    all_panels,
    all_rules,
    load_dashboard,
    query_variables,
    rule_id,
    variable_query,
)
from tests.deploy.promql import Exported, Series, promql_problems, variable_query_problems
from workers.capture_calls import CaptureApiMetrics
from workers.delivery_metrics import DeliveryStateCollector
from workers.health import PoolCollector, PoolStatus, ThreadStatus

HELM_COPIES = {
    DASHBOARD: ROOT / "helm/capture-relay/dashboards/capture-relay.json",
    RULES: ROOT / "helm/capture-relay/rules/capture-relay.rules.yaml",
}
# Where the values of a fixed-vocabulary label are written out: string constants of these files.
VALUE_SOURCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("capture_relay_webhooks_received", "source"): ("service/webhooks.py",),
    ("capture_relay_webhooks_received", "outcome"): ("service/webhooks.py",),
    ("capture_relay_webhook_rejections", "source"): ("service/webhooks.py",),
    ("capture_relay_webhook_rejections", "reason"): ("service/webhooks.py", "service/verify/*.py"),
    ("capture_relay_ingest_duration_seconds", "source"): ("service/webhooks.py",),
    ("capture_relay_events_processed", "outcome"): ("workers/pipeline.py",),
    ("capture_relay_capture_api_requests", "outcome"): ("workers/capture_calls.py", "workers/capture_errors.py"),
    ("capture_relay_deliveries", "outcome"): ("workers/delivery.py",),
}
PROBE = "probe"
# Labels whose values come from the configuration, not from the code.
CONFIGURED_LABELS = frozenset({"queue", "destination"})
# The destination the delivery-state gauges are read for (nothing of it is in Redis: closed, empty).
DESTINATION = "crm"
SNAKE = re.compile(r"[a-z][a-z0-9_]*")


@functools.cache
def _string_constants(patterns: tuple[str, ...]) -> frozenset[str]:
    found: set[str] = set()
    for path in sorted(path for pattern in patterns for path in ROOT.glob(pattern)):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found.update(
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SNAKE.fullmatch(node.value)
        )
    return frozenset(found)


def exported_series(connection: redis.Redis) -> dict[str, Series]:
    """Sample names, labels and known label values, as a scrape of ingress and worker would see them."""
    registry = CollectorRegistry()
    holders = (ServiceMetrics(registry), WorkerMetrics(registry), CaptureApiMetrics(registry))
    # A labelled metric has no sample until a child exists: make one per metric. Its label
    # names are only reachable through the wrapper's attribute.
    for metric in (value for holder in holders for value in vars(holder).values()):
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            metric.labels(*[PROBE] * len(metric._labelnames))
    # The collectors read at scrape time: the ingress's queue gauges, and each worker's delivery
    # state (from Redis) and thread pool (from a snapshot of one idle and one busy thread).
    registry.register(QueueCollector(connection, [QUEUE]))
    registry.register(DeliveryStateCollector(connection, [DESTINATION], retention=86400))
    threads = (ThreadStatus("t1", alive=True, busy=False, last_heartbeat=0.0), ThreadStatus("t2", True, True, 0.0))
    registry.register(PoolCollector(lambda: PoolStatus(QUEUE, started=True, stopping=False, threads=threads)))
    families: dict[str, str] = {}
    labels: dict[str, set[str]] = defaultdict(set)
    values: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for family in registry.collect():
        for sample in family.samples:
            families[sample.name] = family.name
            labels[sample.name].update(sample.labels)
            for label, value in sample.labels.items():
                # Values the collector read (states, bucket bounds) are the real vocabulary.
                if value != PROBE and label not in CONFIGURED_LABELS:
                    values[sample.name][label].add(value)
            for label in sample.labels:
                if (family.name, label) in VALUE_SOURCES:
                    values[sample.name][label].update(_string_constants(VALUE_SOURCES[(family.name, label)]))
    return {
        name: Series(family, frozenset(labels[name]), {k: frozenset(v) for k, v in values[name].items()})
        for name, family in families.items()
    }


@pytest.fixture
def exported(redis_client: redis.Redis) -> Exported:
    """What the code exports, the queue and delivery-state gauges read from a real (empty) Redis."""
    return exported_series(redis_client)


def expressions() -> list[Any]:
    """Every PromQL expression of both files, with a readable id."""
    found = [
        pytest.param(target["expr"], id=f"panel {panel['id']} {panel['title']} {target['refId']}")
        for panel in all_panels(load_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]
    found += [pytest.param(rule["expr"], id=f"rule {rule_id(rule)}") for rule in all_rules()]
    return found


# ------------------------------------------------------------------ (a) names exist


@pytest.mark.parametrize("expr", expressions())
def test_expression_uses_only_exported_metrics_and_labels(expr: str, exported: Exported) -> None:
    """Each metric, label and label value of the expression is one the code exports."""
    assert promql_problems(expr, exported) == []


@pytest.mark.parametrize("variable", query_variables(), ids=lambda v: str(v["name"]))
def test_variable_query_uses_an_exported_metric(variable: dict[str, Any], exported: Exported) -> None:
    """The dashboard's variables list label values of a metric that carries that label."""
    assert variable_query_problems(variable_query(variable), exported) == []


def test_every_exported_metric_is_documented(exported: Exported) -> None:
    """docs/observability.md names every metric family the code exports."""
    docs = DOCS.read_text(encoding="utf-8")

    missing = sorted({s.family for s in exported.values() if f"`{s.family}" not in docs})

    assert missing == []


# ------------------------------------------------------------------ (b) the check can fail


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        pytest.param(
            "sum(rate(capture_relay_made_up_total[5m]))", "unknown metric capture_relay_made_up_total", id="metric"
        ),
        pytest.param(
            "capture_relay_events_processed{outcome='x'}",
            "unknown metric capture_relay_events_processed",
            id="no-suffix",
        ),
        pytest.param(
            'capture_relay_queue_depth{reason="x"}', "capture_relay_queue_depth has no label reason", id="label"
        ),
        pytest.param(
            "sum by (reason) (capture_relay_queue_depth)",
            "grouping by reason: no series it groups has that label",
            id="grouping",
        ),
        pytest.param(
            'capture_relay_webhook_rejections_total{reason=~"kid_unknown|kid_unknwn"}',
            "capture_relay_webhook_rejections_total{reason}: the code never emits 'kid_unknwn'",
            id="value",
        ),
        pytest.param(
            'capture_relay_queue_jobs{state="queued"}',
            "capture_relay_queue_jobs{state}: the code never emits 'queued'",
            id="state",
        ),
        pytest.param("rate(capture_relay_queue_depth[5m]", "not PromQL: unclosed left parenthesis", id="syntax"),
    ],
)
def test_a_wrong_reference_is_reported(expr: str, problem: str, exported: Exported) -> None:
    """The check names what is wrong instead of passing quietly."""
    assert promql_problems(expr, exported) == [problem]


def test_a_wrong_variable_label_is_reported(exported: Exported) -> None:
    """A variable listing a label its metric lacks is reported."""
    problems = variable_query_problems("label_values(capture_relay_queue_depth, reason)", exported)

    assert problems == ["capture_relay_queue_depth has no label reason"]


# ------------------------------------------------------------------ (c) the Helm chart's copies


@pytest.mark.parametrize("source", sorted(HELM_COPIES), ids=lambda p: p.name)
def test_helm_chart_carries_an_identical_copy(source: Path) -> None:
    """The chart loads the files raw with .Files.Get; they must be the deploy/ files byte for byte."""
    copy = HELM_COPIES[source]

    assert copy.read_bytes() == source.read_bytes(), f"run: cp {source.relative_to(ROOT)} {copy.relative_to(ROOT)}"


# ------------------------------------------------------------------ (d) the outcomes an alert counts


def test_the_intake_outcomes_counted_include_error(exported: Exported) -> None:
    """The alert's outcomes are ones the code emits: ``error`` (500) is one of them."""
    assert {"unavailable", "error"} <= exported["capture_relay_webhooks_received_total"].values["outcome"]


def test_the_delivery_state_gauges_are_exported(exported: Exported) -> None:
    """Dead-letter size and breaker state come from a real Redis read, one series per destination."""
    assert exported["capture_relay_dead_letter_size"].labels == {"destination"}
    assert exported["capture_relay_breaker_state"].labels == {"destination"}


def test_the_delivery_outcomes_the_rules_count_are_emitted(exported: Exported) -> None:
    """The outcomes CaptureRelayDeliveryErrors and the dashboard tell apart are all ones the engine emits."""
    outcomes = exported["capture_relay_deliveries_total"].values["outcome"]

    assert {"delivered", "retry", "dead_letter", "deferred", "stale", "duplicate"} <= outcomes
