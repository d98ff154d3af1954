"""The Grafana dashboard follows the provisioning conventions (docs/observability.md): a fixed
uid, the data source through a variable, unique panels with descriptions and units, and only
defined variables; the 503 share it shows counts 500s too, and the breaker states it names are
the code's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import promql_parser

from tests.deploy.observability import all_panels, load_dashboard, query_variables, variable_query
from tests.deploy.promql import GRAFANA_INTERVAL
from workers.delivery_metrics import BREAKER_STATE_VALUES

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own annotation source is the one datasource that is not Prometheus.
GRAFANA_BUILTIN = {"type": "grafana", "uid": "-- Grafana --"}


# ------------------------------------------------------------------ provisioning conventions


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


# ------------------------------------------------------------------ the intake outcomes it shows


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


# ------------------------------------------------------------------ the breaker states it names


def test_breaker_states_are_named_as_the_code_numbers_them() -> None:
    """The state timeline's value mappings, and any == comparison, follow BREAKER_STATE_VALUES."""
    panels = [
        panel
        for panel in all_panels(load_dashboard()["panels"])
        if any("capture_relay_breaker_state" in target["expr"] for target in panel.get("targets", []))
    ]
    (timeline,) = [panel for panel in panels if panel["type"] == "state-timeline"]
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    compared = {
        int(number)
        for panel in panels
        for target in panel["targets"]
        for number in re.findall(r"capture_relay_breaker_state\{[^}]*\}\)\s*==\s*(\d+)", target["expr"])
    }

    assert {int(value): option["text"] for value, option in mapping["options"].items()} == {
        number: state.replace("_", "-") for state, number in BREAKER_STATE_VALUES.items()
    }
    assert compared == {BREAKER_STATE_VALUES["open"]}
