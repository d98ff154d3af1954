"""The example deployment in deploy/examples: the production config, compose.yaml and .env.example.

The config is loaded by the real loader with placeholder values for its variables; compose.yaml
is read as YAML and checked for what the README and DESIGN promise (durable Redis, one image
and one config for every role, an events worker and a delivery worker each on its own queue,
hardened containers, workers that outlive their longest job); and no secret is written into any
of the three files.
"""

from __future__ import annotations

import base64
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from service.routing_config import DeliverySettings
from service.secret import Secret
from service.settings import ConfigError, Ingest, Settings, load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
CONFIG = EXAMPLES / "capture-relay.yaml"
COMPOSE = EXAMPLES / "compose.yaml"
ENV_EXAMPLE = EXAMPLES / ".env.example"

APP_SERVICES = ("ingress", "worker", "delivery-worker")
IMAGE_SERVICES = ("ingress", "worker", "delivery-worker", "simulator")
# The workers: compose service -> the queue argument of `worker --queue`.
WORKER_QUEUES = {"worker": "events", "delivery-worker": "deliveries"}
# A value the signing secrets accept (whsec_ + base64), for the placeholder environment.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a placeholder, not a secret").decode()

# ${NAME}, ${NAME:-default}, and compose's ${NAME-default}, ${NAME:?error}, ${NAME?error}; not $${.
_REFERENCE = re.compile(r"(?<!\$)\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:(:?[-?])([^}]*))?\}")
_FILE_REFERENCE = re.compile(r"(?<!\$)\$\{\s*file:([^}]+)\}")
_WHOLE_REFERENCE = re.compile(r"\$\{\s*(?:[A-Za-z_][A-Za-z0-9_]*|file:/run/secrets/[^}]+)\s*\}")


def strings(tree: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string value of a parsed YAML tree, with its key path."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from strings(value, f"{path}[{index}]")
    elif isinstance(tree, str):
        yield path, tree


def variables(tree: Any) -> dict[str, bool]:
    """The variables a tree references, each with whether it is required (no default)."""
    found: dict[str, bool] = {}
    for _, text in strings(tree):
        for match in _REFERENCE.finditer(text):
            required = match.group(2) is None or "?" in match.group(2)
            found[match.group(1)] = found.get(match.group(1), False) or required
    return found


def read_env_file(path: Path) -> dict[str, str]:
    result: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        assert equals, f"{path.name}:{number}: not NAME=value"
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{path.name}:{number}: {name!r} is not a variable name"
        assert name not in result, f"{path.name}:{number}: {name} is listed twice"
        result[name] = value
    return result


def secret_paths(model: type[Any] = Settings, prefix: str = "") -> set[str]:
    """Key paths of every field the settings treat as a secret (``[]``: a list's items, ``*``: a mapping's values)."""
    found: set[str] = set()
    for name, info in model.model_fields.items():
        found |= _secret_paths_in(info.annotation, f"{prefix}{name}")
    return found


def _secret_paths_in(annotation: Any, path: str) -> set[str]:
    origin = getattr(annotation, "__origin__", None)
    if annotation is Secret:
        return {path}
    if hasattr(annotation, "model_fields"):
        # A member of a tagged union (a destination type): its keys are secrets only under its tag.
        tag: Any = getattr(annotation.model_fields.get("type"), "annotation", None)
        if getattr(tag, "__origin__", None) is Literal:
            path = f"{path}(type={tag.__args__[0]})"
        return secret_paths(annotation, f"{path}.")
    if origin is list:
        return _secret_paths_in(annotation.__args__[0], f"{path}[]")
    if origin is dict:
        return _secret_paths_in(annotation.__args__[1], f"{path}.*")
    # Annotated[...], unions and Optional: the types inside, at the same path.
    return {found for arg in getattr(annotation, "__args__", ()) for found in _secret_paths_in(arg, path)}


def values_at(tree: Any, path: str) -> list[Any]:
    """The values at ``a.b[].c`` in a parsed tree (``[]``: every item of a list, ``*``: every value of a
    mapping, ``*(type=amqp)``: every value whose ``type`` is ``amqp``)."""
    nodes = [tree]
    for part in path.split("."):
        key, each = part.removesuffix("[]"), part.endswith("[]")
        key, _, tag = key.partition("(type=")
        if key == "*":
            nodes = [value for node in nodes if isinstance(node, dict) for value in node.values()]
            if tag:
                nodes = [node for node in nodes if isinstance(node, dict) and node.get("type") == tag[:-1]]
        else:
            nodes = [node[key] for node in nodes if isinstance(node, dict) and key in node]
        if each:
            # A list field may be written as one value (signing_secret: ${SECRET}).
            nodes = [item for node in nodes for item in (node if isinstance(node, list) else [node])]
    return nodes


def go_duration(text: str) -> float:
    """Seconds of a compose duration such as ``11m``, ``1h30m`` or ``90s``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)", text)
    assert "".join(number + unit for number, unit in parts) == text, f"not a duration: {text!r}"
    assert parts, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def config_tree() -> Any:
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> Any:
    tree = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(tree, dict)
    return tree


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture
def placeholder_environ(config_tree: Any, env_example: dict[str, str]) -> dict[str, str]:
    """A value for every variable of the config: .env.example's, or a placeholder for empty ones
    (a whsec_ one for the signing secrets, which must look like one)."""
    signing = set(variables(values_at(config_tree, "destinations.*.signing_secret[]")))
    return {
        name: env_example.get(name) or (WEBHOOK_SECRET if name in signing else f"placeholder-{name.lower()}")
        for name in variables(config_tree)
    }


@pytest.fixture
def example_config(tmp_path: Path) -> Path:
    """The example config, its ``${file:...}`` secrets (if any) pointed at placeholder files."""
    text = CONFIG.read_text(encoding="utf-8")
    for path in set(_FILE_REFERENCE.findall(text)):
        placeholder = tmp_path / path.strip().lstrip("/")
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.write_text(f"placeholder-{placeholder.name}\n", encoding="utf-8")
        text = text.replace(f"file:{path}", f"file:{placeholder}")
    copy = tmp_path / "capture-relay.yaml"
    copy.write_text(text, encoding="utf-8")
    return copy


@pytest.fixture
def settings(example_config: Path, placeholder_environ: dict[str, str]) -> Settings:
    return load(example_config, placeholder_environ)


# ---- the production config --------------------------------------------------------------------


def test_the_example_config_loads_with_placeholder_values(settings: Settings) -> None:
    # The example documents the whole path: both sources, the Capture API, the workers, and a
    # destination with routes to it.
    assert settings.sources.v3 is not None
    assert settings.sources.legacy is not None
    assert settings.capture is not None
    assert settings.worker.metrics_port is not None
    assert settings.logging.format == "json"
    assert settings.destinations
    assert settings.routes
    assert {name for route in settings.routes for name in route.to} == set(settings.destinations)


def test_the_example_config_states_the_defaults_it_documents(config_tree: Any) -> None:
    """Where the example writes out a value it calls the default, it is the code's default."""
    delivery = DeliverySettings.model_validate(config_tree["delivery"])

    assert delivery == DeliverySettings()
    assert config_tree["ingest"]["queue"] == Ingest().queue


def test_a_missing_variable_is_named(
    example_config: Path, config_tree: Any, placeholder_environ: dict[str, str]
) -> None:
    required = [name for name, needed in variables(config_tree).items() if needed]
    assert "REDIS_URL" in required, "a production config must not fall back to a Redis on localhost"
    for name in required:
        environ = {key: value for key, value in placeholder_environ.items() if key != name}
        with pytest.raises(ConfigError) as raised:
            load(example_config, environ)
        assert f"environment variable {name} is not set" in str(raised.value)


def test_every_secret_of_the_config_is_a_reference(config_tree: Any) -> None:
    paths = secret_paths()
    assert {"redis_url", "capture.client_secret", "sources.legacy.callback_hashes[]"} <= paths
    assert {"destinations.*(type=http).signing_secret[]", "destinations.*(type=http).headers.*"} <= paths
    assert {"destinations.*(type=postgres).dsn", "destinations.*(type=kafka).options.*"} <= paths
    assert "destinations.*(type=http).url" not in paths
    checked = 0
    for path in paths:
        for value in values_at(config_tree, path):
            checked += 1
            assert _WHOLE_REFERENCE.fullmatch(str(value).strip()), (
                f"{path}: a secret must be exactly ${{VAR}} or ${{file:/run/secrets/...}}, not {value!r}"
            )
    assert checked >= 4


# ---- .env.example -----------------------------------------------------------------------------


def test_env_example_lists_every_variable_and_no_other(
    config_tree: Any, compose: Any, env_example: dict[str, str]
) -> None:
    used = set(variables(config_tree)) | set(variables(compose))
    assert sorted(used - set(env_example)) == [], "used but not in .env.example"
    assert sorted(set(env_example) - used) == [], "in .env.example but used nowhere"


def test_env_example_leaves_secrets_empty(config_tree: Any, env_example: dict[str, str]) -> None:
    secret_variables = {
        match.group(1)
        for path in secret_paths()
        for value in values_at(config_tree, path)
        for match in _REFERENCE.finditer(str(value))
    }
    assert secret_variables
    for name in secret_variables - {"REDIS_URL"}:
        assert env_example[name] == "", f"{name} is a secret: leave it empty in .env.example"
    # The Redis URL of the example is compose's own Redis, which has no password.
    assert "@" not in env_example["REDIS_URL"]


# ---- compose.yaml -----------------------------------------------------------------------------


def test_compose_has_redis_the_ingress_both_workers_and_an_optional_simulator(compose: Any) -> None:
    services = compose["services"]
    assert set(services) == {"redis", "ingress", "worker", "delivery-worker", "simulator"}
    assert services["simulator"].get("profiles") == ["simulator"]
    for name in ("redis", *APP_SERVICES):
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


def test_redis_keeps_what_was_acknowledged(compose: Any) -> None:
    redis = compose["services"]["redis"]
    assert str(redis["image"]).split(":")[1].startswith("7")
    command = [str(word) for word in redis["command"]]
    arguments = dict(zip(command[1::2], command[2::2], strict=True))
    assert command[0] == "redis-server"
    assert arguments["--appendonly"] == "yes"
    assert arguments["--appendfsync"] == "everysec"
    assert arguments["--maxmemory-policy"] == "noeviction"
    # noeviction only matters with a limit: without one Redis grows until it is killed.
    assert re.fullmatch(r"\d+(mb|gb)", arguments["--maxmemory"])
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data"
    assert volume in compose["volumes"], "the AOF must live on a named volume"
    assert redis["healthcheck"]["test"]


def test_ingress_and_workers_run_one_image_with_one_config(compose: Any, settings: Settings) -> None:
    services = compose["services"]
    ingress = services["ingress"]
    assert {services[name]["image"] for name in IMAGE_SERVICES} == {ingress["image"]}
    assert ingress["command"] == ["serve"]
    for name, queue in WORKER_QUEUES.items():
        assert services[name]["command"] == ["worker", "--queue", queue], "one queue per worker process"
    for service in (services[name] for name in APP_SERVICES):
        config_path = service["environment"]["CAPTURE_RELAY_CONFIG"]
        assert f"./{CONFIG.name}:{config_path}:ro" in service["volumes"], "the example config, read-only"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"] == ingress["environment"]
    assert f"127.0.0.1:{settings.server.port}:{settings.server.port}" in ingress["ports"]


def test_the_containers_receive_every_variable_the_config_needs(compose: Any, config_tree: Any) -> None:
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert sorted(set(variables(config_tree)) - set(environment)) == [], name
        for variable in variables(config_tree):
            # Passed through from .env, never written here.
            assert re.fullmatch(rf"\$\{{{variable}(:[-?][^}}]*)?\}}", environment[variable]), (name, variable)


@pytest.mark.parametrize("name", IMAGE_SERVICES)
def test_capture_relay_containers_are_hardened(compose: Any, name: str) -> None:
    service = compose["services"][name]
    assert service["user"] == "10001:10001", "the image's numeric non-root user"
    assert service["read_only"] is True
    assert service["tmpfs"] == ["/tmp"], "the one writable place"  # noqa: S108 - a tmpfs of its own
    assert service["cap_drop"] == ["ALL"]
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    assert service["healthcheck"]["test"][0] == "CMD"
    assert not {"curl", "wget"} & set(service["healthcheck"]["test"]), "the slim image has neither"


def test_health_checks_use_the_configured_ports(compose: Any, settings: Settings) -> None:
    services = compose["services"]
    assert f"127.0.0.1:{settings.server.port}/healthz" in services["ingress"]["healthcheck"]["test"][-1]
    for name in WORKER_QUEUES:
        assert f"127.0.0.1:{settings.worker.metrics_port}/healthz" in services[name]["healthcheck"]["test"][-1]


@pytest.mark.parametrize(("name", "section"), [("worker", "ingest"), ("delivery-worker", "delivery")])
def test_a_stopping_worker_can_finish_its_longest_job(
    compose: Any, settings: Settings, name: str, section: str
) -> None:
    timeout = getattr(settings, section).job_timeout
    grace = go_duration(compose["services"][name]["stop_grace_period"])
    assert grace > timeout, (
        f"{name}: stop_grace_period {grace:g} s: Docker would kill a worker whose job may still run "
        f"{timeout} s ({section}.job_timeout)"
    )


def test_the_simulator_plays_capture_for_the_worker(compose: Any, settings: Settings) -> None:
    simulator = compose["services"]["simulator"]
    # Shares the worker's network namespace: the config accepts plain http only on loopback.
    assert simulator["network_mode"] == "service:worker"
    command = [str(word) for word in simulator["command"]]
    assert command[0] == "simulate"
    arguments = dict(zip(command[1::2], command[2::2], strict=True))
    assert arguments["--host"] == "127.0.0.1"
    # The same credentials and hash as the relay, from the same variables.
    assert arguments["--client-id"] == "${CAPTURE_CLIENT_ID}"
    assert arguments["--client-secret"] == "${CAPTURE_CLIENT_SECRET}"
    assert arguments["--callback-hash"] == "${LEGACY_CALLBACK_HASH}"
    assert arguments["--emit-format"] == "legacy"
    assert arguments["--emit-to"] == f"http://ingress:{settings.server.port}/webhooks/capture/legacy"


# ---- no secret written anywhere ---------------------------------------------------------------

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|HASH|KEY|CREDENTIAL", re.IGNORECASE)
# 24+ characters of hex or base64: what generated secrets look like.
_SECRET_LOOKING = re.compile(r"(?<![\w/.-])(?:[0-9a-f]{24,}|[A-Za-z0-9+/_-]{32,}={0,2})(?![\w/.-])")
# A URL with a password that is neither a reference nor the placeholder PASSWORD of a comment.
_URL_PASSWORD = re.compile(r"://[^/\s:@]*:(?!\$\{|PASSWORD@)[^@\s/]+@")


@pytest.mark.parametrize("path", [CONFIG, COMPOSE, ENV_EXAMPLE], ids=lambda path: path.name)
def test_no_literal_secret_is_written(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not _SECRET_LOOKING.findall(text), f"{path.name}: looks like a secret"
    assert not _URL_PASSWORD.findall(text), f"{path.name}: a URL with a password"


def test_compose_passes_secrets_only_by_reference(compose: Any) -> None:
    checked = 0
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: write environment as a mapping"
        for key, value in environment.items():
            if _SECRET_NAME.search(key):
                checked += 1
                assert _REFERENCE.fullmatch(str(value)), f"{name}.environment.{key} must be ${{{key}...}}"
        command = [str(word) for word in service.get("command", [])]
        for option, value in itertools.pairwise(command):
            if option.startswith("--") and _SECRET_NAME.search(option):
                checked += 1
                assert _REFERENCE.fullmatch(value), f"{name}: {option} must take a ${{VAR}}"
    assert checked
