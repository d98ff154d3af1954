"""The Grafana dashboard and the Prometheus rules file, as the observability tests read them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/capture-relay.json"
RULES = ROOT / "deploy/prometheus/capture-relay.rules.yaml"
DOCS = ROOT / "docs/observability.md"

# The queue the tests' series are labelled with (the chart's and the config's default).
QUEUE = "capture-events"


def load_dashboard() -> dict[str, Any]:
    """deploy/grafana/capture-relay.json, parsed."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def load_rules() -> dict[str, Any]:
    """deploy/prometheus/capture-relay.rules.yaml, parsed."""
    data: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels, including those inside collapsed rows."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def all_rules() -> list[dict[str, Any]]:
    """Every alerting and recording rule of the rules file, all groups together."""
    return [rule for group in load_rules()["groups"] for rule in group["rules"]]


def rule_id(rule: dict[str, Any]) -> str:
    """A readable test id for ``rule``: its alert (or record) name and its severity."""
    return f"{rule.get('alert') or rule.get('record')} {rule.get('labels', {}).get('severity', '')}".strip()


def variable_query(variable: dict[str, Any]) -> str:
    """The query text of a dashboard variable (a plain string or Grafana's ``{"query": ...}``)."""
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


def query_variables() -> list[dict[str, Any]]:
    """The dashboard's variables of type ``query`` (the ones with PromQL in them)."""
    return [v for v in load_dashboard()["templating"]["list"] if v["type"] == "query"]
