"""PromQL read as Prometheus reads it, for the dashboard and alert-rule tests.

Two tools over ``promql-parser``'s syntax tree:

- **Name checks.** ``promql_problems`` and ``variable_query_problems`` walk an expression and
  report every metric, label, grouping label and written-out label value that the exported
  series (``Exported``, built by the caller from the code's registries) do not have.
- **An instant evaluator.** ``evaluate`` computes what an alert expression returns over a list of
  samples. It covers what the alert expressions use: selectors, sum/max/min/count by/without,
  comparisons with a scalar, arithmetic and set operators with on/ignoring and
  group_left/right, absent() and histogram_quantile(). A range function (rate, increase, delta,
  max_over_time, ...) returns the value given for each series, as if that value were its result.
  One-to-one matching refuses duplicate signatures, as Prometheus does: that is where a
  label-matching mistake shows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import promql_parser

# Series Prometheus makes itself, with their labels.
PROMETHEUS_SERIES = {"up": frozenset[str](), "ALERTS": frozenset({"alertname", "alertstate", "severity"})}
# Labels Prometheus attaches to every scraped series (scrape config, Kubernetes discovery).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})

# Grafana's interval variables, which the checks replace with 5m before parsing.
GRAFANA_INTERVAL = re.compile(r"\$\{?__(?:rate_interval|interval|range)\}?")

# A matcher value that is a plain token or an alternation of tokens (a|b), checked against the code.
TOKENS = re.compile(r"^[A-Za-z0-9_]+(?:\|[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class Series:
    """One exported sample name: its metric family and the labels its samples carry."""

    family: str
    labels: frozenset[str]
    values: Mapping[str, frozenset[str]] = field(default_factory=dict)


# Exported sample names (capture_relay_x_total, _bucket, ...) to their series.
Exported = Mapping[str, Series]


# ------------------------------------------------------------------ names


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
    """An unknown metric, or the labels and written-out label values of its matchers it lacks."""
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
    """Labels of by/without, on/ignoring or group_left/right that no series below ``node`` carries."""
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


# ------------------------------------------------------------------ an instant evaluator


# A series' label set, its __name__ included until an operation drops it.
Labels = frozenset[tuple[str, str]]
# An instant vector: one value per label set.
Vector = dict[Labels, float]
# One input sample: its labels (with __name__) and its value.
Sample = tuple[dict[str, str], float]

_RANGE_FUNCTIONS = frozenset(
    {"rate", "irate", "increase", "delta", "max_over_time", "min_over_time", "avg_over_time", "last_over_time"}
)
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
    """``labels`` less ``__name__`` (what an operation or a function returns)."""
    return frozenset(item for item in labels if item[0] != "__name__")


def _matches(matcher: promql_parser.Matcher, labels: dict[str, str]) -> bool:
    """Whether ``labels`` pass ``matcher`` (=, !=, =~, !~; a missing label is the empty string)."""
    value = labels.get(matcher.name, "")
    if matcher.op == promql_parser.MatchOp.Equal:
        return value == matcher.value
    if matcher.op == promql_parser.MatchOp.NotEqual:
        return value != matcher.value
    found = re.fullmatch(matcher.value, value) is not None
    return found if matcher.op == promql_parser.MatchOp.Re else not found


def _select(node: promql_parser.VectorSelector, samples: list[Sample]) -> Vector:
    """The samples a vector selector selects: its metric name and every matcher."""
    return {
        frozenset(labels.items()): value
        for labels, value in samples
        if labels["__name__"] == node.name and all(_matches(m, labels) for m in node.matchers.matchers)
    }


def _signature(labels: Labels, modifier: promql_parser.BinModifier | None) -> Labels:
    """The labels a binary operation matches series on: all but __name__, or as on/ignoring say."""
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
    """``and``, ``unless`` and ``or`` between two vectors, matched by signature."""
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
    """``vector op scalar`` (or ``scalar op vector``): a comparison without bool filters, the rest compute."""
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
    """A comparison or arithmetic between two vectors, one-to-one or with group_left/right."""
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
    """A binary expression between scalars, a vector and a scalar, or two vectors."""
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


def _bucket_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's ``bucketQuantile``: ``buckets`` are (upper bound, cumulative count), +Inf last."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or buckets[-1][0] != float("inf") or buckets[-1][1] == 0:
        return float("nan")
    rank = quantile * buckets[-1][1]
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    if index == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, (end, count) = 0.0, buckets[index]
    if index > 0:
        start = buckets[index - 1][0]
        count -= buckets[index - 1][1]
        rank -= buckets[index - 1][1]
    return start + (end - start) * (rank / count)


def _histogram_quantile(node: promql_parser.Call, samples: list[Sample]) -> Vector:
    """histogram_quantile(q, buckets): per label set without ``le``, interpolated as Prometheus does."""
    quantile, inner = (evaluate_node(argument, samples) for argument in node.args)
    assert isinstance(quantile, float)
    assert isinstance(inner, dict)
    groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, value in inner.items():
        bound = dict(labels)["le"]
        groups[frozenset(item for item in _without_name(labels) if item[0] != "le")].append((float(bound), value))
    return {labels: _bucket_quantile(quantile, buckets) for labels, buckets in groups.items()}


def _call(node: promql_parser.Call, samples: list[Sample]) -> Vector:
    """A range function (its input value taken as its result), absent() or histogram_quantile()."""
    name = node.func.name
    if name == "histogram_quantile":
        return _histogram_quantile(node, samples)
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
    """sum, max, min or count, by or without the given labels."""
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
    """The instant value of ``node`` over ``samples`` (see the module docstring)."""
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
