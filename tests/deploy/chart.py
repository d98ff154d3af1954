"""Reading a rendered chart: the pods, containers and config the chart tests look at.

Shared by the ``test_chart_*`` modules; the rendering itself (``Rendered``, the ``render``
fixture and the values sets) lives in ``conftest.py``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.deploy.conftest import Manifest, Rendered, Renderer, Values

# The capture-relay version the chart is made for: its appVersion and the default image tag.
PROJECT_VERSION: str = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]["version"]

# The literal secret the refusal tests write; no message may repeat it.
LITERAL = "hunter2-literal"


@dataclass(frozen=True)
class WorkerKind:
    """One kind of worker the chart runs: its component label, values key, queue and job timeout."""

    component: str
    key: str
    # The argument of `capture-relay worker --queue`.
    queue_arg: str
    # The config section with its queue and job_timeout, and their defaults in service/settings.py.
    section: str
    default_queue: str
    default_job_timeout: int


EVENTS_WORKER = WorkerKind("worker", "worker", "events", "ingest", "capture-events", 600)
DELIVERY_WORKER = WorkerKind("delivery-worker", "deliveryWorker", "deliveries", "delivery", "capture-deliveries", 120)
WORKER_KINDS = (EVENTS_WORKER, DELIVERY_WORKER)


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
    """The Deployment of ``component`` (api, worker or delivery-worker)."""
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


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, and matchExpressions with In/NotIn/Exists) selects ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "NotIn" and labels.get(key) in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True
