"""The chart's ``fail`` guards: no secret literal in the config or extraEnv, no disruption budget
that blocks drains, and the schema's refusals repeated by the templates for
``--skip-schema-validation``. Each refusal names the key, never a secret value.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterator
from typing import Any

import helm_python
import pytest
import yaml

from tests.deploy.chart import LITERAL, at_path, config_of, pod_specs, render_error
from tests.deploy.conftest import CHART_DIR, NAMESPACE, RELEASE, Rendered, Renderer, Values, merged

SECRET_PATHS = (
    "redis_url",
    "capture.client_secret",
    "capture.webhooks_api.client_secret",
    "sources.legacy.callback_hashes[0]",
    "sources.legacy.callback_hashes[1]",
    "sources.legacy.basic_auth.password",
    "destinations.crm.signing_secret[0]",
    "destinations.crm.signing_secret[1]",
    "destinations.crm.headers.Authorization",
    "destinations.crm.headers.X-Tenant-Key",
    "destinations.mirror.dsn",
    "destinations.stream.url",
    "destinations.rabbit.url",
    "destinations.jetstream.url",
)
REFERENCE = re.compile(r"^\$\{\s*(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)\s*(:-(?P<default>[^}]*))?\}$")
# A header value may name its authentication scheme before the reference: "Bearer ${TOKEN}".
SCHEME = re.compile(r"^[A-Za-z]{1,20} +(?=\$\{)")
# Credentials in a literal, as the chart's guard sees them: a URL with a password, or password=.
CREDENTIALS = re.compile(r"://[^/@]*:[^@]+@|[?&]password=", re.IGNORECASE)


# --- No secret literal in the config or extraEnv -----------------------------------------------


def secret_literals(rendered: Rendered) -> list[str]:
    """``<ConfigMap>: <key>`` for each secret key of a rendered config that is not a ${VAR} or
    ${file:} reference (a header's after its scheme word), or whose default is a secret (any
    default, but a credential-free URL for redis_url)."""
    found = []
    for config_map in rendered.of_kind("ConfigMap"):
        text = config_map.get("data", {}).get("config.yaml")
        if text is None:
            continue
        config = yaml.safe_load(text)
        for path in SECRET_PATHS:
            value = at_path(config, path)
            if value is None:
                continue
            if isinstance(value, str) and ".headers." in path:
                value = SCHEME.sub("", value)
            match = REFERENCE.match(value) if isinstance(value, str) else None
            default = (match["default"] or "") if match else ""
            credentials = "@" in default or CREDENTIALS.search(default) is not None
            url = path == "redis_url" or path.endswith((".dsn", ".url"))
            if match is None or credentials or (default and not url):
                found.append(f"{config_map['metadata']['name']}: {path}")
    return found


def with_value_at(values: Values, path: str, value: Any) -> Values:
    """A copy of ``values`` with ``value`` at ``a.b[0].c`` (the containers on the way exist)."""
    result = copy.deepcopy(values)
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node: Any = result
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    last = parts[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return result


@pytest.mark.parametrize(
    "values_set", ["default", "everything", "worker-hpa", *(f"literal {path}" for path in SECRET_PATHS)]
)
def test_no_config_map_holds_a_secret_literal(
    render: Renderer, everything_values: Values, worker_hpa_values: Values, values_set: str
) -> None:
    """Whatever the values, no rendered ConfigMap holds a secret literal.

    The three values sets of the suite render and are inspected; a values set that writes a
    literal into one secret key must be refused by the guard, and if it renders anyway, the same
    inspection finds the literal.
    """
    values: Values = {"default": {}, "everything": everything_values, "worker-hpa": worker_hpa_values}.get(
        values_set, {}
    )
    if values_set.startswith("literal "):
        values = with_value_at({"config": everything_values["config"]}, "config." + values_set.split()[1], LITERAL)
        values = merged(everything_values, values)
    refusal = ""
    rendered: Rendered | None = None
    try:
        rendered = render(base=values)
    except (helm_python.HelmRenderError, helm_python.HelmValuesError) as failure:
        refusal = str(failure)
    if rendered is None:
        assert values_set.startswith("literal "), f"{values_set} should render: {refusal}"
        assert "hunter2" not in refusal
    else:
        assert secret_literals(rendered) == []


def test_the_secret_literal_check_finds_literals(everything_render: Rendered) -> None:
    """The inspection above can fail: fed a ConfigMap holding literals, it names each key."""
    doctored = copy.deepcopy(everything_render.one("ConfigMap", "config"))
    config = yaml.safe_load(doctored["data"]["config.yaml"])
    config["redis_url"] = "${REDIS_URL:-redis://redis:6379/0?password=" + LITERAL + "}"
    config["capture"]["client_secret"] = LITERAL
    config["capture"]["webhooks_api"]["client_secret"] = "${AKAMAI_SECRET:-" + LITERAL + "}"
    config["sources"]["legacy"]["callback_hashes"][1] = LITERAL
    config["destinations"]["crm"]["signing_secret"][0] = LITERAL
    config["destinations"]["crm"]["headers"]["Authorization"] = "Bearer " + LITERAL
    doctored["data"]["config.yaml"] = yaml.safe_dump(config)
    name = doctored["metadata"]["name"]

    found = secret_literals(Rendered(values={}, files={}, objects=[doctored], notes=""))

    assert found == [
        f"{name}: redis_url",
        f"{name}: capture.client_secret",
        f"{name}: capture.webhooks_api.client_secret",
        f"{name}: sources.legacy.callback_hashes[1]",
        f"{name}: destinations.crm.signing_secret[0]",
        f"{name}: destinations.crm.headers.Authorization",
    ]


@pytest.mark.parametrize(
    ("path", "overrides"),
    [
        ("config.redis_url", {"redis_url": "redis://:hunter2-literal@redis:6379/0"}),
        ("config.redis_url", {"redis_url": "${REDIS_URL:-redis://:hunter2-literal@redis:6379/0}"}),
        ("config.redis_url", {"redis_url": "${REDIS_URL:-redis://redis:6379/0?password=hunter2-literal}"}),
        ("config.redis_url", {"redis_url": "${REDIS_URL:-rediss://redis:6380/0?ssl=1&Password=hunter2-literal}"}),
        ("config.capture.client_secret", {"capture": {"client_secret": "hunter2-literal"}}),
        ("config.capture.client_secret", {"capture": {"client_secret": "${CAPTURE_SECRET:-hunter2-literal}"}}),
        (
            "config.capture.webhooks_api.client_secret",
            {"capture": {"webhooks_api": {"client_secret": "hunter2-literal"}}},
        ),
        (
            "config.sources.legacy.callback_hashes[1]",
            {"sources": {"legacy": {"callback_hashes": ["${LEGACY_HASH}", "hunter2-literal"]}}},
        ),
        (
            "config.sources.legacy.basic_auth.password",
            {"sources": {"legacy": {"basic_auth": {"username": "janrain", "password": "hunter2-literal"}}}},
        ),
        ("config.capture.client_secret", {"capture": {"client_secret": "prefix-${CAPTURE_SECRET}"}}),
        (
            "config.destinations.crm.signing_secret[1]",
            {"destinations": {"crm": {"signing_secret": ["${CRM_WEBHOOK_SECRET}", "whsec_hunter2-literal"]}}},
        ),
        (
            "config.destinations.eu.warehouse.signing_secret",
            {"destinations": {"eu.warehouse": {"signing_secret": "whsec_hunter2-literal"}}},
        ),
        (
            "config.destinations.eu.warehouse.signing_secret",
            {"destinations": {"eu.warehouse": {"signing_secret": "${WAREHOUSE_SECRET:-whsec_hunter2-literal}"}}},
        ),
        (
            "config.destinations.crm.headers.Authorization",
            {"destinations": {"crm": {"headers": {"Authorization": "Bearer hunter2-literal"}}}},
        ),
        (
            "config.destinations.crm.headers.Authorization",
            {"destinations": {"crm": {"headers": {"Authorization": "hunter2-literal ${CRM_API_TOKEN}"}}}},
        ),
        (
            "config.destinations.crm.headers.X-Tenant-Key",
            {"destinations": {"crm": {"headers": {"X-Tenant-Key": "hunter2-literal"}}}},
        ),
        (
            "config.destinations.mirror.dsn",
            {"destinations": {"mirror": {"dsn": "postgresql://r:hunter2-literal@db/app"}}},
        ),
        (
            "config.destinations.mirror.dsn",
            {"destinations": {"mirror": {"dsn": "${MIRROR_DSN:-postgresql://r:hunter2-literal@db/app}"}}},
        ),
        ("config.destinations.rabbit.url", {"destinations": {"rabbit": {"url": "amqp://r:hunter2-literal@mq:5672/"}}}),
        (
            "config.destinations.jetstream.url",
            {"destinations": {"jetstream": {"url": "nats://hunter2-literal@n:4222"}}},
        ),
        (
            "config.destinations.events.options.sasl.password",
            {"destinations": {"events": {"options": {"sasl.password": "hunter2-literal"}}}},
        ),
    ],
)
def test_a_literal_secret_in_the_config_fails_rendering(
    render: Renderer, everything_values: Values, path: str, overrides: Values
) -> None:
    """The guard names the key and never repeats the value."""
    message = render_error(render, {"config": overrides}, base=everything_values)
    assert path in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "redis_url",
    ["${REDIS_URL}", "${REDIS_URL:-redis://redis-master:6379/0}", "${file:/run/secrets/redis-url}"],
)
def test_references_without_credentials_pass_the_guard(render: Renderer, redis_url: str) -> None:
    """A plain reference, a credential-free default and a secret file are all accepted."""
    assert config_of(render({"config": {"redis_url": redis_url}}))["redis_url"] == redis_url


@pytest.mark.parametrize("value", ["${CRM_API_TOKEN}", "Bearer ${CRM_API_TOKEN}", "Token  ${file:/run/secrets/crm}"])
def test_a_header_may_name_its_scheme_before_the_reference(
    render: Renderer, everything_values: Values, value: str
) -> None:
    """The scheme word of an Authorization header is no secret; the credential after it is a reference."""
    rendered = render(
        {"config": {"destinations": {"crm": {"headers": {"Authorization": value}}}}}, base=everything_values
    )

    assert config_of(rendered)["destinations"]["crm"]["headers"]["Authorization"] == value


@pytest.mark.parametrize(
    ("env", "config", "complaint"),
    [
        pytest.param(
            {"name": "CAPTURE_CLIENT_SECRET", "value": LITERAL}, {}, "looks like a secret", id="named-like-a-secret"
        ),
        pytest.param(
            {"name": "REDIS_URL", "value": "redis://:hunter2@redis:6379/0"},
            {},
            "config.redis_url reads ${REDIS_URL}",
            id="redis-url-with-a-password",
        ),
        pytest.param(
            {"name": "REDIS_URL", "value": "redis://redis:6379/0"},
            {},
            "config.redis_url reads ${REDIS_URL}",
            id="redis-url-without-a-password",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"redis_url": "${RELAY_VALUE:-redis://redis:6379/0}"},
            "config.redis_url reads ${RELAY_VALUE}",
            id="redis-url-reference-with-a-default",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"capture": {"client_secret": "${RELAY_VALUE}"}},
            "config.capture.client_secret reads ${RELAY_VALUE}",
            id="capture-client-secret",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"capture": {"webhooks_api": {"client_secret": "${ RELAY_VALUE }"}}},
            "config.capture.webhooks_api.client_secret reads ${RELAY_VALUE}",
            id="webhooks-api-client-secret",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"sources": {"legacy": {"callback_hashes": ["${LEGACY_CALLBACK_HASH}", "${RELAY_VALUE}"]}}},
            "config.sources.legacy.callback_hashes[1] reads ${RELAY_VALUE}",
            id="callback-hash",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"sources": {"legacy": {"basic_auth": {"password": "${RELAY_VALUE}"}}}},
            "config.sources.legacy.basic_auth.password reads ${RELAY_VALUE}",
            id="basic-auth-password",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"destinations": {"crm": {"signing_secret": "${RELAY_VALUE}"}}},
            "config.destinations.crm.signing_secret reads ${RELAY_VALUE}",
            id="signing-secret",
        ),
        pytest.param(
            {"name": "RELAY_VALUE", "value": LITERAL},
            {"destinations": {"crm": {"headers": {"Authorization": "Bearer ${RELAY_VALUE}"}}}},
            "config.destinations.crm.headers.Authorization reads ${RELAY_VALUE}",
            id="header-after-its-scheme",
        ),
        pytest.param(
            {"name": "BROKER_URL", "value": "amqp://relay:hunter2@mq:5672/"},
            {},
            "carrying credentials",
            id="url-with-a-password",
        ),
        pytest.param(
            {"name": "CACHE_DSN", "value": "redis://cache:6379/0?password=hunter2"},
            {},
            "carrying credentials",
            id="password-parameter",
        ),
        pytest.param(
            {"name": "CACHE_DSN", "value": "redis://cache:6379/0?db=1&Password=hunter2"},
            {},
            "carrying credentials",
            id="password-parameter-any-case",
        ),
    ],
)
def test_a_literal_secret_in_extra_env_fails_rendering(
    render: Renderer, everything_values: Values, env: dict[str, str], config: Values, complaint: str
) -> None:
    """A literal extraEnv value is refused when it is a secret; the message names the variable, not the value."""
    values = merged(everything_values, {"config": config})
    values["extraEnv"] = [*everything_values["extraEnv"], env]
    index = len(everything_values["extraEnv"])

    message = render_error(render, {}, base=values)

    assert f"extraEnv[{index}] ({env['name']})" in message
    assert complaint in message
    assert "hunter2" not in message
    assert env["value"] not in message


@pytest.mark.parametrize(
    ("env", "config"),
    [
        pytest.param({"name": "REDIS_ADDRESS", "value": "redis-master.redis.svc:6379"}, {}, id="host-port"),
        pytest.param({"name": "ONCALL", "value": "identity-oncall@example.com"}, {}, id="an-address"),
        pytest.param(
            {"name": "PUBLIC_URL", "value": "https://hooks.example.com:8443/webhooks"}, {}, id="url-with-port"
        ),
        pytest.param({"name": "DOCS_URL", "value": "https://example.com/people/@identity"}, {}, id="url-with-at"),
        pytest.param(
            {"name": "REDIS_URL", "value": "redis://redis:6379/0"},
            {"redis_url": "${file:/run/secrets/capture-relay/redis-url}"},
            id="redis-url-no-secret-key-reads",
        ),
    ],
)
def test_a_literal_extra_env_value_that_is_no_secret_renders(
    render: Renderer, everything_values: Values, env: dict[str, str], config: Values
) -> None:
    """Host names, addresses and URLs without credentials, in variables no secret key reads, pass."""
    values = merged(everything_values, {"config": config})
    values["extraEnv"] = [*everything_values["extraEnv"], env]

    rendered = render(base=values)

    for where, _, spec in pod_specs(rendered):
        assert env in spec["containers"][0]["env"], where


# --- Without the schema ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart_without_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[helm_python.Chart]:
    """The chart less values.schema.json: what `helm install --skip-schema-validation` renders."""
    directory = tmp_path_factory.mktemp("chart") / CHART_DIR.name
    shutil.copytree(CHART_DIR, directory)
    (directory / "values.schema.json").unlink()
    with helm_python.Chart.load(directory) as loaded:
        yield loaded


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"worker": {"replicaCount": 0}}, "worker.replicaCount must be at least 1", id="no-workers"),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "keda", "minReplicas": 0, "keda": {"address": "redis:6379"}}}},
            "worker.autoscaling.minReplicas must be at least 1",
            id="keda-to-zero",
        ),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "keda", "keda": {"type": "redis-cluster", "address": "redis:6379"}}}},
            "does not support Redis Cluster",
            id="redis-cluster",
        ),
        pytest.param(
            {"worker": {"terminationGraceExtraSeconds": 10}},
            "worker.terminationGraceExtraSeconds (10) must be at least 30",
            id="grace-extra",
        ),
        pytest.param(
            {"deliveryWorker": {"replicaCount": 0}},
            "deliveryWorker.replicaCount must be at least 1",
            id="no-delivery-workers",
        ),
        pytest.param(
            {"deliveryWorker": {"autoscaling": {"mode": "hpa", "minReplicas": 0}}},
            "deliveryWorker.autoscaling.minReplicas must be at least 1",
            id="delivery-hpa-to-zero",
        ),
        pytest.param(
            {"deliveryWorker": {"terminationGraceExtraSeconds": 10}},
            "deliveryWorker.terminationGraceExtraSeconds (10) must be at least 30",
            id="delivery-grace-extra",
        ),
    ],
)
def test_the_templates_refuse_what_the_schema_refuses(
    chart_without_schema: helm_python.Chart, overrides: Values, complaint: str
) -> None:
    """Without the schema (--skip-schema-validation), the templates still refuse, and say why."""
    with pytest.raises(helm_python.HelmRenderError) as failure:
        chart_without_schema.render(overrides, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert complaint in str(failure.value)
    if "at least 1" in complaint:
        assert "ScheduledJobRegistry" in str(failure.value)


# --- Disruption budgets that would block drains -----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param(
            {"worker": {"replicaCount": 1, "pdb": {"minAvailable": 1}}},
            "worker.pdb.minAvailable (1) must be below worker.replicaCount (1)",
            id="worker-one-of-one",
        ),
        pytest.param(
            {"api": {"replicaCount": 2, "pdb": {"minAvailable": 3}}},
            "api.pdb.minAvailable (3) must be below api.replicaCount (2)",
            id="api-above-replicas",
        ),
        pytest.param(
            {"api": {"autoscaling": {"enabled": True, "minReplicas": 3}, "pdb": {"minAvailable": 3}}},
            "api.pdb.minAvailable (3) must be below api.autoscaling.minReplicas (3)",
            id="api-autoscaled",
        ),
        pytest.param(
            {
                "worker": {
                    "replicaCount": 5,
                    "autoscaling": {"mode": "keda", "minReplicas": 2, "keda": {"address": "redis:6379"}},
                    "pdb": {"minAvailable": 2},
                }
            },
            "worker.pdb.minAvailable (2) must be below worker.autoscaling.minReplicas (2)",
            id="worker-keda",
        ),
        pytest.param(
            {"worker": {"autoscaling": {"mode": "hpa", "minReplicas": 3}, "pdb": {"minAvailable": 4}}},
            "worker.pdb.minAvailable (4) must be below worker.autoscaling.minReplicas (3)",
            id="worker-hpa",
        ),
        pytest.param(
            {"deliveryWorker": {"replicaCount": 2, "pdb": {"minAvailable": 2}}},
            "deliveryWorker.pdb.minAvailable (2) must be below deliveryWorker.replicaCount (2)",
            id="delivery-two-of-two",
        ),
        pytest.param(
            {"deliveryWorker": {"autoscaling": {"mode": "hpa", "minReplicas": 3}, "pdb": {"minAvailable": 3}}},
            "deliveryWorker.pdb.minAvailable (3) must be below deliveryWorker.autoscaling.minReplicas (3)",
            id="delivery-hpa",
        ),
        pytest.param(
            {"deliveryWorker": {"pdb": {"maxUnavailable": 0}}},
            "deliveryWorker.pdb.maxUnavailable is 0",
            id="delivery-none-down",
        ),
        pytest.param({"api": {"pdb": {"minAvailable": "100%"}}}, "api.pdb.minAvailable is 100%", id="all-of-them"),
        pytest.param({"worker": {"pdb": {"maxUnavailable": 0}}}, "worker.pdb.maxUnavailable is 0", id="none-down"),
        pytest.param({"api": {"pdb": {"maxUnavailable": "0%"}}}, "api.pdb.maxUnavailable is 0%", id="none-down-%"),
    ],
)
def test_a_budget_that_never_allows_an_eviction_is_refused(render: Renderer, overrides: Values, complaint: str) -> None:
    """A PDB no eviction can satisfy blocks node drains forever: rendering fails, naming both values."""
    message = render_error(render, overrides)
    assert complaint in message
    assert "drains" in message


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"worker": {"replicaCount": 1}}, id="one-worker-default-budget"),
        pytest.param({"api": {"replicaCount": 3, "pdb": {"minAvailable": 2}}}, id="two-of-three"),
        pytest.param({"api": {"pdb": {"minAvailable": "50%"}}}, id="half"),
        pytest.param({"worker": {"replicaCount": 1, "pdb": {"enabled": False, "minAvailable": 1}}}, id="no-pdb"),
        pytest.param({"worker": {"replicaCount": 2, "pdb": {"minAvailable": 1}}}, id="one-of-two"),
    ],
)
def test_a_budget_that_allows_an_eviction_renders(render: Renderer, overrides: Values) -> None:
    """maxUnavailable 1 (even with one replica), or minAvailable below the replicas, is fine."""
    render(overrides)


# --- The two queues, and routes as YAML reads them ---------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"delivery": {"queue": "capture-events"}}, id="deliveries-on-the-events-queue"),
        pytest.param(
            {"ingest": {"queue": "capture-deliveries"}, "delivery": None}, id="events-on-the-default-deliveries"
        ),
    ],
)
def test_the_two_kinds_of_worker_need_two_queues(render: Renderer, config: Values) -> None:
    """One queue for both would send events to the delivery workers and deliveries to the events workers."""
    message = render_error(render, {"config": config})

    assert "config.delivery.queue and config.ingest.queue are both" in message


def test_a_bare_on_in_a_route_is_refused_with_how_to_write_it(chart: helm_python.Chart) -> None:
    """YAML 1.1 reads ``on:`` as true; the values file as Helm parses it gets a route key "true"."""
    values = helm_python.values_from_yaml(
        "config:\n  routes:\n    - name: r\n      on: [entityUpdated]\n      to: [crm]\n"
    )
    assert "true" in values["config"]["routes"][0], "Helm's YAML parser still reads a bare on as true"

    with pytest.raises(helm_python.HelmRenderError) as failure:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)

    assert 'config.routes[0] has a key "true"' in str(failure.value)
    assert '"on": [entityUpdated]' in str(failure.value)
