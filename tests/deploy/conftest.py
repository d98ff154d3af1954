"""Rendering the Helm chart offline, for every test of what is deployed.

The chart is rendered by the Helm v4 SDK embedded in the ``helm-python-sdk`` package: no ``helm``
binary, no cluster. Each values set is rendered once per session; a test that needs a variant
calls the ``render`` fixture with overrides (a render takes milliseconds).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "capture-relay"
EVERYTHING_VALUES = Path(__file__).with_name("values-everything.yaml")
RELEASE = "capture-relay"
NAMESPACE = "identity"

Values = dict[str, Any]
Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendered:
    """One render of the chart: the manifests of every template, parsed, and NOTES.txt."""

    values: Values
    files: dict[str, str]
    objects: list[Manifest]
    notes: str

    def of_kind(self, kind: str) -> list[Manifest]:
        """Every object of ``kind``."""
        return [obj for obj in self.objects if obj["kind"] == kind]

    def find(self, kind: str, component: str | None = None) -> list[Manifest]:
        """Objects of ``kind``, optionally only those labelled with ``component``."""
        return [
            obj
            for obj in self.of_kind(kind)
            if component is None or obj["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]

    def one(self, kind: str, component: str | None = None) -> Manifest:
        """The single object of ``kind`` (and ``component``); fails when there is not exactly one."""
        found = self.find(kind, component)
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]

    def has(self, kind: str, component: str | None = None) -> bool:
        """Whether any object of ``kind`` (and ``component``) was rendered."""
        return bool(self.find(kind, component))

    def template_text(self, template: str) -> str:
        """The rendered text of ``templates/<template>``."""
        return self.files[f"{CHART_DIR.name}/templates/{template}"]


def merged(base: Values, override: Values) -> Values:
    """``base`` with ``override`` merged in, maps recursively (as Helm merges values files)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def load_values(path: Path) -> Values:
    """A values file parsed by Helm's own parser (what ``helm install -f`` reads)."""
    return helm_python.values_from_yaml(path.read_text(encoding="utf-8"))


def render_chart(chart: helm_python.Chart, values: Values, *, name: str = RELEASE) -> Rendered:
    """Render ``chart`` with ``values`` as release ``name`` in ``NAMESPACE``.

    Raises:
        helm_python.HelmRenderError: a template failed (e.g. a guard's ``fail``).
        helm_python.HelmValuesError: the values do not match values.schema.json.
    """
    files = chart.render(values, name=name, namespace=NAMESPACE, is_install=True)
    objects: list[Manifest] = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(document for document in yaml.safe_load_all(text) if document)
    return Rendered(values=values, files=files, objects=objects, notes=notes)


Renderer = Callable[..., Rendered]


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    """The chart of this repository, with the real dashboards/ and rules/ files."""
    helm_python.disable_logging()
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def everything_values() -> Values:
    """tests/deploy/values-everything.yaml: every option of the chart on."""
    return load_values(EVERYTHING_VALUES)


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Renderer:
    """``render(overrides={}, base={}, name=RELEASE)``: the chart rendered with ``base`` + ``overrides``."""

    def _render(overrides: Values | None = None, base: Values | None = None, name: str = RELEASE) -> Rendered:
        return render_chart(chart, merged(base or {}, overrides or {}), name=name)

    return _render


@pytest.fixture(scope="session")
def default_render(render: Renderer) -> Rendered:
    """The chart with its default values."""
    return render()


@pytest.fixture(scope="session")
def everything_render(render: Renderer, everything_values: Values) -> Rendered:
    """The chart with every option on (KEDA for the workers)."""
    return render(base=everything_values)


@pytest.fixture(scope="session")
def worker_hpa_values(everything_values: Values) -> Values:
    """Every option on, but both kinds of worker scaled by a HorizontalPodAutoscaler instead of KEDA."""
    hpa = {"autoscaling": {"mode": "hpa"}}
    return merged(everything_values, {"worker": hpa, "deliveryWorker": hpa})


@pytest.fixture(scope="session")
def worker_hpa_render(render: Renderer, worker_hpa_values: Values) -> Rendered:
    """The chart with the workers' HPAs instead of KEDA."""
    return render(base=worker_hpa_values)


@pytest.fixture(scope="session", params=["default", "everything", "worker-hpa"])
def any_render(
    request: pytest.FixtureRequest, default_render: Rendered, everything_render: Rendered, worker_hpa_render: Rendered
) -> Rendered:
    """Each of the three rendered values sets in turn."""
    renders = {"default": default_render, "everything": everything_render, "worker-hpa": worker_hpa_render}
    return renders[request.param]


@pytest.fixture(scope="session", params=["default", "everything", "worker-hpa"])
def any_values(request: pytest.FixtureRequest, everything_values: Values, worker_hpa_values: Values) -> Values:
    """Each of the three values sets in turn (for lint)."""
    return {"default": {}, "everything": everything_values, "worker-hpa": worker_hpa_values}[request.param]
