"""The Prometheus alert rules: a valid rules file whose alerts carry what an operator needs and
link to their runbook, and what the alerts do, evaluated over made-up series with the instant
evaluator of tests/deploy/promql.py (which is checked against Prometheus's matching rules first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import promql_parser
import pytest

from tests.deploy.conftest import Rendered
from tests.deploy.observability import DOCS, QUEUE, all_rules, load_rules, rule_id
from tests.deploy.promql import Sample, evaluate, evaluate_node
from workers.delivery_metrics import BREAKER_STATE_VALUES

DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")


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


# ------------------------------------------------------------------ the rules file


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
    """No two rules share an alert name and labels (Alertmanager could not tell them apart)."""
    keys = [(r["alert"], tuple(sorted(r["labels"].items()))) for r in all_rules() if "alert" in r]

    assert len(keys) == len(set(keys))


def test_the_two_dead_letters_share_an_alert_told_apart_by_a_label() -> None:
    """CaptureRelayDeadLetterGrowing covers rq's failed jobs and the delivery dead letter."""
    kinds = sorted(r["labels"]["dead_letter"] for r in all_rules() if r.get("alert") == "CaptureRelayDeadLetterGrowing")

    assert kinds == ["deliveries", "jobs"]


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


# ------------------------------------------------------------------ what the alerts do


def alert_expr(name: str, severity: str = "critical", **labels: str) -> str:
    """The expression of the one alert ``name`` with ``severity`` and ``labels``."""
    (expr,) = [
        r["expr"]
        for r in all_rules()
        if r.get("alert") == name and r["labels"] == {**r["labels"], "severity": severity, **labels}
    ]
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


def test_the_evaluator_interpolates_quantiles_as_prometheus_does() -> None:
    """histogram_quantile over cumulative buckets: linear within a bucket, the last finite bound past it."""
    buckets: list[Sample] = [
        ({"__name__": "h_bucket", "le": "1", "d": "a"}, 50.0),
        ({"__name__": "h_bucket", "le": "2", "d": "a"}, 100.0),
        ({"__name__": "h_bucket", "le": "+Inf", "d": "a"}, 100.0),
        ({"__name__": "h_bucket", "le": "1", "d": "b"}, 10.0),
        ({"__name__": "h_bucket", "le": "2", "d": "b"}, 10.0),
        ({"__name__": "h_bucket", "le": "+Inf", "d": "b"}, 20.0),
    ]

    def quantile(q: float) -> dict[str, float]:
        result = evaluate_node(promql_parser.parse(f"histogram_quantile({q}, h_bucket)"), buckets)
        assert isinstance(result, dict)
        return {dict(labels)["d"]: value for labels, value in result.items()}

    assert quantile(0.5) == {"a": 1.0, "b": 1.0}
    assert quantile(0.75) == {"a": 1.5, "b": 2.0}
    assert quantile(0.25) == {"a": 0.5, "b": 0.5}


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


# ------------------------------------------------------------------ the delivery alerts

WORKERS = ("capture-relay-worker-1", "capture-relay-worker-2")
DELIVERY_TARGET = {"namespace": "identity", "job": "identity/capture-relay-worker"}


def worker_samples(name: str, per_destination: Mapping[str, float], **labels: str) -> list[Sample]:
    """A gauge read from shared state: the same value from each of two workers, per destination."""
    return [
        ({"__name__": name, **DELIVERY_TARGET, "pod": pod, "destination": destination, **labels}, value)
        for pod in WORKERS
        for destination, value in per_destination.items()
    ]


def delivery_counts(destination: str, **counts: float) -> list[Sample]:
    """capture_relay_deliveries_total per outcome over the alert's window, split over two workers."""
    samples: list[Sample] = []
    for outcome, count in counts.items():
        for pod in WORKERS:
            labels = {"__name__": "capture_relay_deliveries_total", **DELIVERY_TARGET, "pod": pod}
            samples.append(({**labels, "destination": destination, "outcome": outcome}, count / 2))
    return samples


def test_delivery_dead_letter_growth_fires_per_destination() -> None:
    """Growth of a destination's dead letter fires once for it (max over workers), labelled by it."""
    samples = worker_samples("capture_relay_dead_letter_size", {"crm": 3.0, "warehouse": 0.0})

    fired = evaluate(alert_expr("CaptureRelayDeadLetterGrowing", "warning", dead_letter="deliveries"), samples)

    assert list(fired.values()) == [{**DELIVERY_TARGET, "destination": "crm"}]


@pytest.mark.parametrize(
    ("highest", "firing"),
    [
        pytest.param({"crm": 2.0, "warehouse": 0.0}, ["crm"], id="open"),
        pytest.param({"crm": 1.0}, [], id="half-open-only"),
        pytest.param({"crm": 0.0}, [], id="closed"),
    ],
)
def test_breaker_open_fires_for_a_breaker_that_keeps_opening(highest: dict[str, float], firing: list[str]) -> None:
    """The highest state of the window is open (2): the destination's probes keep failing."""
    samples = worker_samples("capture_relay_breaker_state", highest)

    fired = evaluate(alert_expr("CaptureRelayBreakerOpen", "warning"), samples)

    assert [labels["destination"] for labels in fired.values()] == firing


def test_breaker_open_compares_with_the_codes_open_state() -> None:
    """The alert's 2 is the value the gauge reports for an open breaker."""
    (threshold,) = re.findall(r"==\s*(\d+)", alert_expr("CaptureRelayBreakerOpen", "warning"))

    assert int(threshold) == BREAKER_STATE_VALUES["open"]


@pytest.mark.parametrize(
    ("counts", "fires"),
    [
        pytest.param({"delivered": 80, "retry": 15, "dead_letter": 5}, True, id="a-fifth-fail"),
        pytest.param({"delivered": 0, "retry": 30}, True, id="all-fail"),
        pytest.param(
            {"delivered": 95, "retry": 5, "deferred": 500, "stale": 50, "duplicate": 50}, False, id="deferred"
        ),
        pytest.param({"deferred": 400}, False, id="breaker-open-no-attempts"),
        pytest.param({"delivered": 10, "retry": 6}, False, id="too-few"),
    ],
)
def test_delivery_errors_count_failed_attempts_only(counts: dict[str, float], fires: bool) -> None:
    """retry and dead_letter among the attempts; deferred, stale and duplicate deliveries send nothing."""
    samples = delivery_counts("crm", **counts) + delivery_counts("warehouse", delivered=100)

    fired = evaluate(alert_expr("CaptureRelayDeliveryErrors", "warning"), samples)

    assert list(fired.values()) == ([{**DELIVERY_TARGET, "destination": "crm"}] if fires else [])


def end_to_end_buckets(destination: str, counts: Mapping[float, float]) -> list[Sample]:
    """End-to-end buckets (cumulative, as rates) from the observations per bucket, split over two workers."""
    samples: list[Sample] = []
    total = 0.0
    for bound in (*sorted(counts), float("inf")):
        total += counts.get(bound, 0.0)
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        for pod in WORKERS:
            labels = {"__name__": "capture_relay_end_to_end_seconds_bucket", **DELIVERY_TARGET, "pod": pod}
            samples.append(({**labels, "destination": destination, "le": le}, total / 2))
    return samples


@pytest.mark.parametrize(
    ("counts", "fires"),
    [
        pytest.param({1.0: 80, 10.0: 10, 300.0: 4, 1800.0: 6}, True, id="6-percent-over-5-min"),
        pytest.param({1.0: 90, 10.0: 6, 300.0: 2, 1800.0: 2}, False, id="2-percent-over-5-min"),
        pytest.param({}, False, id="no-deliveries"),
    ],
)
def test_end_to_end_latency_fires_on_the_95th_percentile(counts: dict[float, float], fires: bool) -> None:
    """p95 over 5 minutes per destination, the buckets of all workers summed by le."""
    samples = end_to_end_buckets("crm", counts) + end_to_end_buckets("warehouse", {1.0: 100})

    fired = evaluate(alert_expr("CaptureRelayEndToEndLatencyHigh", "warning"), samples)

    assert list(fired.values()) == ([{**DELIVERY_TARGET, "destination": "crm"}] if fires else [])
