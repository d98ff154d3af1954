"""Typed configuration: one YAML file, ``${ENV}`` interpolation, validated as a whole at start-up.

Errors::

    ConfigError              the file cannot be read or does not validate; one line per problem,
                             each starting with the key path (``sources.v3.jwks_url: field required``)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from service.configmodel import (
    BaseUrl,
    ConfigModel,
    Duration,
    HttpsUrl,
    OneOrMany,
    Rate,
    RedisUrl,
    SecretStr,
    Size,
    Ttl,
)
from service.destination_config import DESTINATION_TYPES, Destination, DestinationName
from service.interpolate import InterpolationError, interpolate
from service.routing_config import (
    DeliverySettings,
    Route,
    duplicate_route_names,
    routes_needing_capture,
    short_stale_guards,
    unknown_destinations,
)
from service.secret import Secret
from service.webhooks_config import WebhooksSection, webhooks_problems


class ConfigLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only ``true`` and ``false``.

    PyYAML follows YAML 1.1, where ``on``, ``off``, ``yes`` and ``no`` are booleans too, so a
    route's ``on:`` key would arrive as ``True``, and a country code ``NO`` as ``False``.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds ``(key_path, problem)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {problem}" for path, problem in problems))


class V3Source(ConfigModel):
    """Akamai Webhooks v3: Security Event Tokens signed with RS256, keys from a JWKS URL."""

    jwks_url: HttpsUrl
    issuer: OneOrMany | None = None
    audience: OneOrMany | None = None
    # Akamai's last retry comes about 25 h after the event; 48 h leaves room for our own outages.
    max_age: Ttl = 48 * 3600
    clock_skew: Duration = 60.0
    jwks_refresh_cooldown: Duration = 30.0
    jwks_cache_ttl: Ttl = 3600
    jwks_timeout: Duration = 5.0


class BasicAuth(ConfigModel):
    username: str = Field(min_length=1)
    password: SecretStr


class LegacySource(ConfigModel):
    """Legacy Capture webhooks: no signature, only a shared callback hash and/or HTTP Basic."""

    callback_hashes: list[SecretStr] = Field(default_factory=list)
    basic_auth: BasicAuth | None = None

    @model_validator(mode="after")
    def _authenticated(self) -> LegacySource:
        if not self.callback_hashes and self.basic_auth is None:
            raise ValueError(
                "configure callback_hashes and/or basic_auth: the legacy protocol has no signature, "
                "so without them anyone could inject events (remove sources.legacy to turn the route off)"
            )
        return self


class Sources(ConfigModel):
    v3: V3Source | None = None
    legacy: LegacySource | None = None


class Ingest(ConfigModel):
    queue: str = Field(default="capture-events", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    max_body_size: Size = 64 * 1024
    # A legacy batch is stored in one script: its size bounds how long Redis and the event loop
    # are busy with one request.
    max_batch_size: int = Field(default=1000, gt=0)
    # With this many jobs waiting the service answers 503 so that Capture retries later.
    backlog_high_water: int = Field(default=100_000, gt=0)
    retry_after: Ttl = 30
    # How long a delivery id is remembered; defaults to max_age + 1 h so that any retry
    # Capture may still send is recognised.
    dedup_ttl: Ttl | None = None
    job_timeout: Ttl = 600
    result_ttl: Ttl = 3600
    failure_ttl: Ttl = 14 * 86400


class WebhooksApi(ConfigModel):
    """The Akamai Identity Cloud v3 subscription API, used by ``capture-relay register``."""

    # The regional API host, e.g. https://v1.api.us.janrain.com.
    base_url: BaseUrl
    customer_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9-]+$")
    # A configuration client: it may fetch a bearer token from /{customer_id}/login/token.
    client_id: str = Field(min_length=1)
    client_secret: SecretStr


class CaptureApi(ConfigModel):
    """The Capture API the workers fetch records from (and ``register`` manages webhooks with)."""

    base_url: BaseUrl
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    # basic: HTTP Basic; signed: janrain-signed HMAC-SHA1 with a Date header (the secret never
    # travels); params: client_id/client_secret as form fields, for old clients.
    auth: Literal["basic", "signed", "params"] = "basic"
    entity_type: str = Field(default="user", min_length=1)
    # Per request; Capture's own calls time out after 10 s.
    timeout: Duration = Field(default=10.0, gt=0)
    # How long one call may keep retrying 510s, 5xx and timeouts before the job gives up (and
    # RQ retries the job later).
    retry_deadline: Duration = Field(default=30.0, gt=0)
    # Simultaneous calls of all workers together: Capture answers 510 past its own limit.
    max_concurrency: int = Field(default=4, ge=1)
    # Calls per second of all workers together (N/s, N/m or N/h); none by default.
    rate_limit: Rate | None = None
    webhooks_api: WebhooksApi | None = None


class Server(ConfigModel):
    host: str = "0.0.0.0"  # noqa: S104 - a container listens on all its interfaces
    port: int = Field(default=8000, ge=1, le=65535)


class WorkerSettings(ConfigModel):
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # How often a live worker looks for jobs of dead workers; rq's default of 600 s is too slow.
    maintenance_interval: Ttl = 30
    # Jobs one worker process runs at once, each in its own thread: the work is waiting on
    # Capture and on destinations, so threads keep the CPU busy without a process per job.
    concurrency: int = Field(default=8, ge=1, le=256)


class Logging(ConfigModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


class Settings(ConfigModel):
    """The whole configuration of one deployment."""

    redis_url: RedisUrl = Secret("redis://localhost:6379/0")
    sources: Sources = Sources()
    capture: CaptureApi | None = None
    ingest: Ingest = Ingest()
    server: Server = Server()
    worker: WorkerSettings = WorkerSettings()
    logging: Logging = Logging()
    destinations: dict[DestinationName, Destination] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    delivery: DeliverySettings = DeliverySettings()
    webhooks: WebhooksSection = WebhooksSection()

    @model_validator(mode="after")
    def _routes_name_destinations(self) -> Settings:
        problems = duplicate_route_names(self.routes) + unknown_destinations(self.routes, self.destinations)
        problems += short_stale_guards(self.delivery, self.destinations)
        if self.capture is None:
            problems += routes_needing_capture(self.routes)
        _refuse_first(problems, "route_invalid")
        return self

    @model_validator(mode="after")
    def _dedup_outlives_max_age(self) -> Settings:
        v3 = self.sources.v3
        if v3 is not None and self.ingest.dedup_ttl is not None and self.ingest.dedup_ttl < v3.max_age:
            raise PydanticCustomError(
                "dedup_ttl_too_short",
                "{dedup_ttl:g} s is shorter than sources.v3.max_age ({max_age:g} s), so a retried delivery "
                "could be accepted twice; raise it to at least max_age or remove it",
                {"dedup_ttl": self.ingest.dedup_ttl, "max_age": v3.max_age, "key_path": "ingest.dedup_ttl"},
            )
        return self

    @model_validator(mode="after")
    def _webhooks_consistent(self) -> Settings:
        capture = self.capture
        problems = webhooks_problems(
            self.webhooks,
            capture_entity_type=capture.entity_type if capture is not None else None,
            has_webhooks_api=capture is not None and capture.webhooks_api is not None,
        )
        _refuse_first(problems, "webhooks_invalid")
        return self

    @property
    def dedup_window(self) -> int:
        """Seconds a delivery id is remembered: ``ingest.dedup_ttl``, or ``max_age`` + 1 h."""
        if self.ingest.dedup_ttl is not None:
            return self.ingest.dedup_ttl
        max_age = self.sources.v3.max_age if self.sources.v3 is not None else 48 * 3600
        return max_age + 3600


def _refuse_first(problems: list[tuple[str, str]], kind: str) -> None:
    """Raise the first cross-field problem under its own key path; a validator can raise only one."""
    if problems:
        path, problem = problems[0]
        more = f" (and {len(problems) - 1} more such problem(s))" if len(problems) > 1 else ""
        raise PydanticCustomError(kind, "{problem}{more}", {"problem": problem, "more": more, "key_path": path})


def load(path: str | Path, environ: Mapping[str, str]) -> Settings:
    """Read, interpolate and validate the YAML file at ``path``.

    Raises:
        ConfigError: naming the key path of every problem found.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read the config file: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([(str(path), f"not UTF-8 text (byte {exc.start})")]) from exc
    try:
        data = yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError([(str(path), f"not valid YAML{where}")]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([(str(path), "the top level must be a mapping of keys to values")])
    return from_mapping(data, environ)


def from_mapping(data: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Interpolate and validate an already parsed configuration."""
    try:
        resolved = interpolate(dict(data), environ)
    except InterpolationError as exc:
        raise ConfigError([(exc.key_path, exc.problem)]) from exc
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None


def _describe(error: Any) -> tuple[str, str]:
    # pydantic puts validator names into the location; only keys and indexes are the user's.
    loc = [
        part
        for part in error["loc"]
        if isinstance(part, int) or not str(part).startswith(("function-", "is-instance["))
    ]
    kind = error["type"]
    tag = None
    if len(loc) >= 3 and loc[0] == "destinations" and loc[2] in DESTINATION_TYPES:
        tag = loc.pop(2)  # pydantic names the member of the tagged union; the file has no such key
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    if not path and "key_path" in (error.get("ctx") or {}):
        path = error["ctx"]["key_path"]  # a cross-field rule names the key it is about
    if kind == "missing":
        return path, "field required"
    if kind == "extra_forbidden":
        return path, f"unknown key; known keys here: {', '.join(_known_keys(loc[:-1], tag))}"
    if kind == "union_tag_not_found":
        return f"{path}.type", f"field required; one of: {', '.join(DESTINATION_TYPES)}"
    if kind == "union_tag_invalid":
        tag_given = error["ctx"]["tag"]
        return f"{path}.type", f"unknown destination type {tag_given!r}; known: {', '.join(DESTINATION_TYPES)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return path or "<root>", message[:1].lower() + message[1:]


def _known_keys(loc: list[Any], tag: str | None = None) -> list[str]:
    if len(loc) == 2 and loc[0] == "destinations" and tag is not None:
        return sorted(DESTINATION_TYPES[tag].model_fields)
    model: Any = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        model = _model_of(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
