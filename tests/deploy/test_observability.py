"""The Grafana dashboard and the Prometheus alert rules refer only to what the code exports.

Every PromQL expression (dashboard targets, variable queries, alert rules) is parsed with
``promql-parser``; each metric it selects must be a sample the real registries produce, each
label it matches or groups by must exist on those samples, and label values written out in a
matcher (reasons, outcomes, states) must be tokens the code emits. The files also follow the
provisioning conventions (docs/observability.md), and the Helm chart carries identical copies.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import QueueCollector, ServiceMetrics, WorkerMetrics
from tests.deploy.conftest import Rendered
from workers.capture_calls import CaptureApiMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/capture-relay.json"
RULES = ROOT / "deploy/prometheus/capture-relay.rules.yaml"
DOCS = ROOT / "docs/observability.md"
HELM_COPIES = {
    DASHBOARD: ROOT / "helm/capture-relay/dashboards/capture-relay.json",
    RULES: ROOT / "helm/capture-relay/rules/capture-relay.rules.yaml",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own annotation source is the one datasource that is not Prometheus.
GRAFANA_BUILTIN = {"type": "grafana", "uid": "-- Grafana --"}

# Series Prometheus makes itself, with their labels.
PROMETHEUS_SERIES = {"up": frozenset[str](), "ALERTS": frozenset({"alertname", "alertstate", "severity"})}
# Labels Prometheus attaches to every scraped series (scrape config, Kubernetes discovery).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
# Where the values of a fixed-vocabulary label are written out: string constants of these files.
VALUE_SOURCES: dict[tuple[str, str], tuple[str, ...]] = {
    ("capture_relay_webhooks_received", "source"): ("service/webhooks.py",),
    ("capture_relay_webhooks_received", "outcome"): ("service/webhooks.py",),
    ("capture_relay_webhook_rejections", "source"): ("service/webhooks.py",),
    ("capture_relay_webhook_rejections", "reason"): ("service/webhooks.py", "service/verify/*.py"),
    ("capture_relay_ingest_duration_seconds", "source"): ("service/webhooks.py",),
    ("capture_relay_events_processed", "outcome"): ("workers/pipeline.py",),
    ("capture_relay_capture_api_requests", "outcome"): ("workers/capture_calls.py", "workers/capture_errors.py"),
}
QUEUE = "capture-events"
PROBE = "probe"
# Labels whose values come from the configuration, not from the code.
CONFIGURED_LABELS = frozenset({"queue"})
GRAFANA_INTERVAL = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")
SNAKE = re.compile(r"[a-z][a-z0-9_]*")
TOKENS = re.compile(r"^[A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)*$")
DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class Series:
    """One exported sample name: its metric family and the labels its samples carry."""

    family: str
    labels: frozenset[str]
    values: Mapping[str, frozenset[str]] = field(default_factory=dict)


Exported = Mapping[str, Series]


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
    registry.register(QueueCollector(connection, [QUEUE]))
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
    """What the code exports, the queue gauges read from a real (empty) Redis."""
    return exported_series(redis_client)


# ------------------------------------------------------------------ reading PromQL


def _labels_within(node: promql_parser.Expr, exported: Exported) -> frozenset[str]:
    """Every label a selector below ``node`` can carry (unknown metrics add none)."""
    labels: set[str] = set(TARGET_LABELS)

    def visit(inner: promql_parser.Expr) -> None:
        if isinstance(inner, promql_parser.VectorSelector) and inner.name is not None:
            known = exported.get(inner.name)
            labels.update(known.labels if known else PROMETHEUS_SERIES.get(inner.name, ()))

    promql_parser.walk(node, visit)
    return frozenset(labels)


def _selector_problems(node: promql_parser.VectorSelector, exported: Exported) -> list[str]:
    if node.name is None:
        return [f"{node}: select by metric name, not by a __name__ matcher"]
    series = exported.get(node.name)
    if series is None and node.name not in PROMETHEUS_SERIES:
        return [f"unknown metric {node.name}"]
    labels = series.labels if series else PROMETHEUS_SERIES[node.name]
    problems = []
    for matcher in node.matchers.matchers:
        if matcher.name not in labels | TARGET_LABELS:
            problems.append(f"{node.name} has no label {matcher.name}")
            continue
        known = series.values.get(matcher.name) if series else None
        if known is None or "$" in matcher.value or not TOKENS.match(matcher.value):
            continue
        if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.Re):
            unknown = sorted(set(matcher.value.split("|")) - known)
            problems.extend(f"{node.name}{{{matcher.name}}}: the code never emits {value!r}" for value in unknown)
    return problems


def _grouping_problems(node: promql_parser.Expr, exported: Exported) -> list[str]:
    if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
        used, available = node.modifier.labels, _labels_within(node.expr, exported)
    elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
        matching = node.modifier.matching
        used = [*(matching.labels if matching else []), *(node.modifier.group_labels or [])]
        available = _labels_within(node.lhs, exported) | _labels_within(node.rhs, exported)
    else:
        return []
    return [f"grouping by {label}: no series it groups has that label" for label in used if label not in available]


def promql_problems(expr: str, exported: Exported) -> list[str]:
    """What in one PromQL expression the code does not export (empty when all is well).

    Grafana's interval variables become ``5m`` first; other variables may appear only inside
    label values, where the parser takes them as text.
    """
    try:
        tree = promql_parser.parse(GRAFANA_INTERVAL.sub("5m", expr))
    except ValueError as exc:
        return [f"not PromQL: {exc}"]
    problems: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            problems.extend(_selector_problems(node, exported))
        problems.extend(_grouping_problems(node, exported))

    promql_parser.walk(tree, visit)
    return problems


def variable_query_problems(query: str, exported: Exported) -> list[str]:
    """``label_values(selector, label)``: the selector is checked as PromQL and must carry the label."""
    match = re.fullmatch(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)", query.strip())
    if match is None:
        return [f"{query}: expected label_values(<selector>, <label>)"]
    selector = match["selector"]
    problems = promql_problems(selector, exported)
    name = re.match(r"\w+", selector)
    series = exported.get(name[0]) if name else None
    if series is not None and match["label"] not in series.labels | TARGET_LABELS:
        problems.append(f"{series.family} has no label {match['label']}")
    return problems


# ------------------------------------------------------------------ the files


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def load_rules() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"]]


def rule_id(rule: dict[str, Any]) -> str:
    return f"{rule.get('alert') or rule.get('record')} {rule.get('labels', {}).get('severity', '')}".strip()


def variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def expressions() -> list[Any]:
    """Every PromQL expression of both files, with a readable id."""
    found = [
        pytest.param(target["expr"], id=f"panel {panel['id']} {panel['title']} {target['refId']}")
        for panel in all_panels(load_dashboard()["panels"])
        for target in panel.get("targets", [])
    ]
    found += [pytest.param(rule["expr"], id=f"rule {rule_id(rule)}") for rule in all_rules()]
    return found


def query_variables() -> list[dict[str, Any]]:
    return [v for v in load_dashboard()["templating"]["list"] if v["type"] == "query"]


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text (code blocks skipped)."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (heading := re.match(r"#{1,6}\s+(.+?)\s*#*$", line)):
            text = re.sub(r"[^\w\- ]", "", heading[1].lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


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


# ------------------------------------------------------------------ (c) dashboard conventions


def test_dashboard_is_ready_for_provisioning() -> None:
    """Fixed uid, no instance id, no import-only inputs, a recent schema."""
    dashboard = load_dashboard()

    assert dashboard["uid"] == "capture-relay"
    assert dashboard["id"] is None
    assert "__inputs" not in dashboard
    assert dashboard["schemaVersion"] >= 39


def test_dashboard_has_a_prometheus_datasource_variable() -> None:
    """Panels pick the data source through a ``datasource`` variable, never a fixed uid."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_panels_targets_and_variables_use_the_datasource_variable() -> None:
    """Each chart, target and variable query reads from ``${datasource}``."""
    dashboard = load_dashboard()
    panels = [p for p in all_panels(dashboard["panels"]) if p["type"] != "row"]
    users = [(p["title"], p) for p in panels]
    users += [(f"{p['title']} {t['refId']}", t) for p in panels for t in p.get("targets", [])]
    users += [(f"${v['name']}", v) for v in query_variables()]

    assert [name for name, user in users if user.get("datasource") != DATASOURCE] == []


def test_no_datasource_is_hard_coded() -> None:
    """Anywhere in the file a datasource is the variable (or Grafana's built-in annotations)."""

    def sources(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            if "datasource" in node:
                yield node["datasource"]
            for value in node.values():
                yield from sources(value)
        elif isinstance(node, list):
            for value in node:
                yield from sources(value)

    assert [s for s in sources(load_dashboard()) if s not in (DATASOURCE, GRAFANA_BUILTIN)] == []


def test_panels_have_unique_ids_descriptions_and_units() -> None:
    """Ids are unique; every chart says what it shows and in which unit."""
    panels = list(all_panels(load_dashboard()["panels"]))
    charts = [p for p in panels if p["type"] != "row"]

    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert [p["title"] for p in charts if not p.get("description")] == []
    assert [p["title"] for p in charts if not p["fieldConfig"]["defaults"].get("unit")] == []


def test_panels_do_not_overlap() -> None:
    """No two panels claim the same grid cell, and none is wider than the grid."""
    taken: dict[tuple[int, int], str] = {}
    clashes = []
    for panel in load_dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in taken:
                    clashes.append((taken[(x, y)], panel["title"]))
                taken[(x, y)] = panel["title"]

    assert sorted(set(clashes)) == []


def test_expressions_use_only_defined_variables() -> None:
    """Every ``$name`` in a query is a variable of the dashboard (or Grafana's own ``$__``)."""
    dashboard = load_dashboard()
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    texts = [t["expr"] for p in all_panels(dashboard["panels"]) for t in p.get("targets", [])]
    texts += [variable_query(v) for v in query_variables()]

    used = {m for text in texts for m in re.findall(r"\$\{?(\w+)", text) if not m.startswith("__")}

    assert used - defined == set()


# ------------------------------------------------------------------ (d) rules


def test_rules_file_is_a_prometheus_rules_file() -> None:
    """Top-level ``groups``, each with a unique name and a list of rules."""
    groups = load_rules()["groups"]

    names = [group["name"] for group in groups]
    assert len(names) == len(set(names))
    assert all(isinstance(group["rules"], list) and group["rules"] for group in groups)


@pytest.mark.parametrize("rule", all_rules(), ids=rule_id)
def test_rule_has_what_an_operator_needs(rule: dict[str, Any]) -> None:
    """An alert has expr, a duration ``for``, a severity, a summary, a description and a runbook."""
    if "record" in rule:
        assert set(rule) <= {"record", "expr", "labels"}
        return

    assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    assert rule["expr"].strip()
    assert DURATION.match(rule["for"])
    assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_alerts_are_distinct() -> None:
    """No two rules share an alert name and severity (Alertmanager could not tell them apart)."""
    keys = [(r["alert"], r["labels"]["severity"]) for r in all_rules() if "alert" in r]

    assert len(keys) == len(set(keys))


def test_runbook_links_point_at_headings_of_the_docs() -> None:
    """Each runbook_url is docs/observability.md#<anchor>, and the anchor is a heading there."""
    anchors = heading_anchors(DOCS.read_text(encoding="utf-8"))
    urls = {r["annotations"]["runbook_url"] for r in all_rules() if "alert" in r}

    wrong = sorted(url for url in urls if not url.startswith("docs/observability.md#"))
    missing = sorted(url for url in urls if url.partition("#")[2] not in anchors)

    assert (wrong, missing) == ([], [])


def test_heading_anchors_follow_github() -> None:
    """The anchor rule the runbook check relies on."""
    text = (
        "# Title\n```\n# not a heading\n```\n### CaptureRelayNoWorkers\n## To add: the pipeline's (delivery) metrics\n"
    )

    assert heading_anchors(text) == {"title", "capturerelaynoworkers", "to-add-the-pipelines-delivery-metrics"}


# ------------------------------------------------------------------ (e) the Helm chart's copies


@pytest.mark.parametrize("source", sorted(HELM_COPIES), ids=lambda p: p.name)
def test_helm_chart_carries_an_identical_copy(source: Path) -> None:
    """The chart loads the files raw with .Files.Get; they must be the deploy/ files byte for byte."""
    copy = HELM_COPIES[source]

    assert copy.read_bytes() == source.read_bytes(), f"run: cp {source.relative_to(ROOT)} {copy.relative_to(ROOT)}"


# ------------------------------------------------------------------ (f) what the alerts do
#
# A small evaluator of instant PromQL, enough for the alert expressions: selectors, sum/max/min/
# count by/without, comparisons with a scalar, arithmetic and set operators with on/ignoring and
# group_left/right, and absent(). A range function (rate, increase, delta) returns the value given
# for each series, as if that value were the rate. One-to-one matching refuses duplicate
# signatures, as Prometheus does: that is where a label-matching mistake shows.

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]
Sample = tuple[dict[str, str], float]

_RANGE_FUNCTIONS = frozenset({"rate", "irate", "increase", "delta"})
Operation = Callable[[float, float], float | bool]

_COMPARISONS: dict[str, Operation] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
_ARITHMETIC: dict[str, Operation] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else float("nan"),
}


def _without_name(labels: Labels) -> Labels:
    return frozenset(item for item in labels if item[0] != "__name__")


def _matches(matcher: promql_parser.Matcher, labels: dict[str, str]) -> bool:
    value = labels.get(matcher.name, "")
    if matcher.op == promql_parser.MatchOp.Equal:
        return value == matcher.value
    if matcher.op == promql_parser.MatchOp.NotEqual:
        return value != matcher.value
    found = re.fullmatch(matcher.value, value) is not None
    return found if matcher.op == promql_parser.MatchOp.Re else not found


def _select(node: promql_parser.VectorSelector, samples: list[Sample]) -> Vector:
    return {
        frozenset(labels.items()): value
        for labels, value in samples
        if labels["__name__"] == node.name and all(_matches(m, labels) for m in node.matchers.matchers)
    }


def _signature(labels: Labels, modifier: promql_parser.BinModifier | None) -> Labels:
    matching = modifier.matching if modifier is not None else None
    if matching is None:
        return _without_name(labels)
    if matching.type == promql_parser.LabelModifierType.Include:
        return frozenset(item for item in labels if item[0] in matching.labels)
    return frozenset(item for item in _without_name(labels) if item[0] not in matching.labels)


def _by_signature(vector: Vector, modifier: promql_parser.BinModifier | None, side: str) -> dict[Labels, Labels]:
    """signature -> labels, refusing two series with one signature (Prometheus: many-to-many matching)."""
    result: dict[Labels, Labels] = {}
    for labels in vector:
        signature = _signature(labels, modifier)
        if signature in result:
            raise ValueError(f"many-to-many matching not allowed: two {side} series match {sorted(signature)}")
        result[signature] = labels
    return result


def _set_operation(op: str, lhs: Vector, rhs: Vector, modifier: promql_parser.BinModifier | None) -> Vector:
    right = {_signature(labels, modifier) for labels in rhs}
    if op == "and":
        return {labels: v for labels, v in lhs.items() if _signature(labels, modifier) in right}
    if op == "unless":
        return {labels: v for labels, v in lhs.items() if _signature(labels, modifier) not in right}
    left = {_signature(labels, modifier) for labels in lhs}
    return {**lhs, **{labels: v for labels, v in rhs.items() if _signature(labels, modifier) not in left}}


def _filters(op: str, modifier: promql_parser.BinModifier | None) -> bool:
    """Whether ``op`` filters (a comparison without bool) rather than computes a value."""
    return op in _COMPARISONS and not (modifier is not None and modifier.return_bool)


def _with_scalar(
    op: str, vector: Vector, scalar: float, vector_left: bool, modifier: promql_parser.BinModifier | None
) -> Vector:
    apply = _COMPARISONS.get(op) or _ARITHMETIC[op]
    result: Vector = {}
    for labels, value in vector.items():
        outcome = apply(value, scalar) if vector_left else apply(scalar, value)
        if not _filters(op, modifier):
            result[_without_name(labels)] = float(outcome)
        elif outcome:
            result[labels] = value
    return result


def _vector_match(op: str, lhs: Vector, rhs: Vector, modifier: promql_parser.BinModifier | None) -> Vector:
    apply = _COMPARISONS.get(op) or _ARITHMETIC[op]
    card = modifier.card if modifier is not None else promql_parser.VectorMatchCardinality.OneToOne
    many_left = card != promql_parser.VectorMatchCardinality.OneToMany
    many, one = (lhs, rhs) if many_left else (rhs, lhs)
    ones = _by_signature(one, modifier, "right" if many_left else "left")
    if card == promql_parser.VectorMatchCardinality.OneToOne:
        _by_signature(many, modifier, "left")
    result: Vector = {}
    for labels, value in many.items():
        partner = ones.get(_signature(labels, modifier))
        if partner is None:
            continue
        a, b = (value, one[partner]) if many_left else (one[partner], value)
        outcome = apply(a, b)
        if not _filters(op, modifier):
            result[_without_name(labels)] = float(outcome)
        elif outcome:
            result[labels] = a
    return result


def _binary(node: promql_parser.BinaryExpr, samples: list[Sample]) -> Vector | float:
    op = str(node.op)
    lhs, rhs = evaluate_node(node.lhs, samples), evaluate_node(node.rhs, samples)
    if isinstance(lhs, float) and isinstance(rhs, float):
        return float((_COMPARISONS.get(op) or _ARITHMETIC[op])(lhs, rhs))
    if isinstance(lhs, float):
        assert isinstance(rhs, dict)
        return _with_scalar(op, rhs, lhs, False, node.modifier)
    if isinstance(rhs, float):
        return _with_scalar(op, lhs, rhs, True, node.modifier)
    if op in ("and", "or", "unless"):
        return _set_operation(op, lhs, rhs, node.modifier)
    return _vector_match(op, lhs, rhs, node.modifier)


def _call(node: promql_parser.Call, samples: list[Sample]) -> Vector:
    name = node.func.name
    (argument,) = node.args
    if name in _RANGE_FUNCTIONS:
        assert isinstance(argument, promql_parser.MatrixSelector)
        return {_without_name(labels): v for labels, v in _select(argument.vector_selector, samples).items()}
    if name == "absent":
        assert isinstance(argument, promql_parser.VectorSelector)
        if _select(argument, samples):
            return {}
        equal = [(m.name, m.value) for m in argument.matchers.matchers if m.op == promql_parser.MatchOp.Equal]
        return {frozenset(equal): 1.0}
    raise NotImplementedError(name)


def _aggregate(node: promql_parser.AggregateExpr, samples: list[Sample]) -> Vector:
    inner = evaluate_node(node.expr, samples)
    assert isinstance(inner, dict)
    groups: dict[Labels, list[float]] = defaultdict(list)
    for labels, value in inner.items():
        plain = _without_name(labels)
        if node.modifier is None:
            key: Labels = frozenset()
        elif node.modifier.type == promql_parser.AggModifierType.By:
            key = frozenset(item for item in plain if item[0] in node.modifier.labels)
        else:
            key = frozenset(item for item in plain if item[0] not in node.modifier.labels)
        groups[key].append(value)
    combine: dict[str, Callable[[list[float]], float]] = {
        "sum": sum,
        "max": max,
        "min": min,
        "count": lambda values: float(len(values)),
    }
    return {key: float(combine[str(node.op)](values)) for key, values in groups.items()}


def evaluate_node(node: promql_parser.Expr, samples: list[Sample]) -> Vector | float:
    """The instant value of ``node`` over ``samples`` (see the section comment)."""
    if isinstance(node, promql_parser.ParenExpr):
        return evaluate_node(node.expr, samples)
    if isinstance(node, promql_parser.NumberLiteral):
        return float(node.val)
    if isinstance(node, promql_parser.VectorSelector):
        return _select(node, samples)
    if isinstance(node, promql_parser.Call):
        return _call(node, samples)
    if isinstance(node, promql_parser.AggregateExpr):
        return _aggregate(node, samples)
    if isinstance(node, promql_parser.BinaryExpr):
        return _binary(node, samples)
    raise NotImplementedError(type(node).__name__)


def evaluate(expr: str, samples: list[Sample]) -> dict[str, dict[str, str]]:
    """The series an alert expression returns, as ``{readable labels: labels}``."""
    result = evaluate_node(promql_parser.parse(expr), samples)
    assert isinstance(result, dict), f"{expr} is a scalar"
    return {",".join(f"{k}={v}" for k, v in sorted(labels)): dict(labels) for labels in result}


def alert_expr(name: str, severity: str = "critical") -> str:
    (expr,) = [r["expr"] for r in all_rules() if r.get("alert") == name and r["labels"]["severity"] == severity]
    return str(expr)


def test_the_evaluator_matches_labels_as_prometheus_does() -> None:
    """Aggregation, scalar filters, matching with on/group_left, and refused many-to-many matching."""
    samples: list[Sample] = [
        ({"__name__": "a", "queue": "q", "pod": "1"}, 2.0),
        ({"__name__": "a", "queue": "q", "pod": "2"}, 3.0),
        ({"__name__": "b", "queue": "q"}, 4.0),
    ]
    assert evaluate("sum by (queue) (a) > 4", samples) == {"queue=q": {"queue": "q"}}
    assert evaluate("max by (queue) (a) > 4", samples) == {}
    assert evaluate_node(promql_parser.parse("a / on (queue) group_left b"), samples) == {
        frozenset({("queue", "q"), ("pod", "1")}): 0.5,
        frozenset({("queue", "q"), ("pod", "2")}): 0.75,
    }
    with pytest.raises(ValueError, match="many-to-many"):
        evaluate("a / on (queue) b", samples)
    assert evaluate('absent(c{namespace="x"})', samples) == {"namespace=x": {"namespace": "x"}}


def queue_gauges(
    namespace: str = "identity", *, workers: int, depth: int = 0, states: Mapping[str, int] | None = None
) -> list[Sample]:
    """The queue gauges as two ingress replicas report them: the same values, one series each."""
    samples: list[Sample] = []
    for replica in (1, 2):
        target = {
            "namespace": namespace,
            "job": "capture-relay-api",
            "instance": f"10.0.0.{replica}:8000",
            "pod": f"capture-relay-api-{replica}",
            "queue": QUEUE,
        }
        samples.append(({"__name__": "capture_relay_workers", **target}, float(workers)))
        samples.append(({"__name__": "capture_relay_queue_depth", **target}, float(depth)))
        for state in ("started", "scheduled", "failed"):
            count = float((states or {}).get(state, 0))
            samples.append(({"__name__": "capture_relay_queue_jobs", **target, "state": state}, count))
    return samples


@pytest.mark.parametrize(
    ("depth", "states"),
    [
        pytest.param(5, {}, id="waiting"),
        pytest.param(0, {"scheduled": 3}, id="scheduled-for-a-retry"),
        pytest.param(0, {"started": 1}, id="left-started"),
        pytest.param(4, {"scheduled": 2, "started": 1, "failed": 9}, id="everything"),
    ],
)
def test_no_workers_fires_for_waiting_scheduled_or_started_jobs(depth: int, states: dict[str, int]) -> None:
    """No worker, and any job that needs one: the alert fires once per queue, labelled by it."""
    fired = evaluate(alert_expr("CaptureRelayNoWorkers"), queue_gauges(workers=0, depth=depth, states=states))

    assert list(fired.values()) == [{"namespace": "identity", "job": "capture-relay-api", "queue": QUEUE}]


@pytest.mark.parametrize(
    ("workers", "depth", "states"),
    [
        pytest.param(0, 0, {}, id="idle-without-workers"),
        pytest.param(0, 0, {"failed": 7}, id="only-dead-letters"),
        pytest.param(2, 5, {"scheduled": 3, "started": 2}, id="workers-alive"),
    ],
)
def test_no_workers_stays_quiet_otherwise(workers: int, depth: int, states: dict[str, int]) -> None:
    """Failed jobs wait for a person, not a worker; live workers handle the rest."""
    samples = queue_gauges(workers=workers, depth=depth, states=states)

    assert evaluate(alert_expr("CaptureRelayNoWorkers"), samples) == {}


def test_no_workers_keeps_deployments_apart() -> None:
    """Scheduled retries in one namespace without workers fire there only, not where workers run."""
    samples = queue_gauges("prod", workers=3, states={"scheduled": 4})
    samples += queue_gauges("staging", workers=0, states={"scheduled": 4})

    fired = evaluate(alert_expr("CaptureRelayNoWorkers"), samples)

    assert [labels["namespace"] for labels in fired.values()] == ["staging"]


def webhook_rates(**rates: float) -> list[Sample]:
    """capture_relay_webhooks_received_total per outcome, split over two ingress replicas."""
    samples: list[Sample] = []
    for outcome, rate in rates.items():
        for replica in (1, 2):
            labels = {
                "__name__": "capture_relay_webhooks_received_total",
                "namespace": "identity",
                "job": "capture-relay-api",
                "instance": f"10.0.0.{replica}:8000",
                "source": "v3",
                "outcome": outcome,
            }
            samples.append((labels, rate / 2))
    return samples


@pytest.mark.parametrize(
    ("rates", "firing"),
    [
        pytest.param({"accepted": 0.7, "error": 0.3}, {"warning", "critical"}, id="500s"),
        pytest.param({"accepted": 0.7, "unavailable": 0.3}, {"warning", "critical"}, id="503s"),
        pytest.param({"accepted": 0.94, "unavailable": 0.03, "error": 0.03}, {"warning"}, id="both-together"),
        pytest.param({"accepted": 0.97, "error": 0.03}, set(), id="few-500s"),
        pytest.param({"accepted": 0.5, "unauthentic": 0.5}, set(), id="client-errors"),
    ],
)
def test_intake_alert_counts_503s_and_500s(rates: dict[str, float], firing: set[str]) -> None:
    """Both answers that make Capture retry count towards CaptureRelayIntakeUnavailable's share."""
    samples = webhook_rates(**rates)
    fired = {
        severity
        for severity in ("warning", "critical")
        if evaluate(alert_expr("CaptureRelayIntakeUnavailable", severity), samples)
    }

    assert fired == firing


def test_the_intake_outcomes_counted_include_error(exported: Exported) -> None:
    """The alert's outcomes are ones the code emits: ``error`` (500) is one of them."""
    assert {"unavailable", "error"} <= exported["capture_relay_webhooks_received_total"].values["outcome"]


def test_dashboard_shows_500s_with_the_503s() -> None:
    """Each panel that shows the 503 share counts 500s too, and one series shows 500s alone."""
    outcome_matchers = []
    for panel in all_panels(load_dashboard()["panels"]):
        for target in panel.get("targets", []):
            found: list[str] = []

            def visit(node: promql_parser.Expr, found: list[str] = found) -> None:
                if (
                    isinstance(node, promql_parser.VectorSelector)
                    and node.name == "capture_relay_webhooks_received_total"
                ):
                    found.extend(m.value for m in node.matchers.matchers if m.name == "outcome")

            promql_parser.walk(promql_parser.parse(GRAFANA_INTERVAL.sub("5m", target["expr"])), visit)
            outcome_matchers += [(panel["title"], value) for value in found]

    showing_503 = [(title, value) for title, value in outcome_matchers if "unavailable" in value.split("|")]
    assert showing_503
    assert [(title, value) for title, value in showing_503 if "error" not in value.split("|")] == []
    assert any(value == "error" for _, value in outcome_matchers)


def test_ingress_metrics_absent_is_scoped_to_its_namespace_in_the_chart(everything_render: Rendered) -> None:
    """The file's rule sees every deployment; the chart's copy fires for its own namespace alone."""
    other_deployment = queue_gauges("other-team", workers=1)
    (chart_expr,) = [
        entry["expr"]
        for group in everything_render.one("PrometheusRule", "alerts")["spec"]["groups"]
        for entry in group["rules"]
        if entry.get("alert") == "CaptureRelayIngressMetricsAbsent"
    ]

    assert evaluate(alert_expr("CaptureRelayIngressMetricsAbsent"), other_deployment) == {}
    assert list(evaluate(chart_expr, other_deployment).values()) == [{"namespace": "identity"}]
    assert evaluate(chart_expr, other_deployment + queue_gauges("identity", workers=1)) == {}
