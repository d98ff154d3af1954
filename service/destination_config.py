"""The ``destinations:`` section: one model per destination ``type:``, and what they all share.

Every type has the same delivery knobs (``timeout``, ``rate_limit``, ``schedule``, ``breaker``),
because retries, rate limits and the breaker are the delivery engine's and not the sink's. What
each type adds is where and how to send: a URL and signing secrets, a database table, a stream,
an exchange, a subject or a topic. Anything that may carry a credential (a DSN, a broker URL,
librdkafka properties) is a ``Secret``, so it never reaches a repr, a log line or an error.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from service.configmodel import ConfigModel, Duration, HttpsUrl, Rate, RedisUrl, SecretStr, one_or_list
from service.secret import Secret

# Names of destinations and routes: they appear in metric labels, keys and log fields.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_STANDARD_WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]+={0,2}$")
# A PostgreSQL table, optionally schema-qualified: plain lower-case identifiers only, so that the
# name needs no quoting and means the same in the config, in psql and in the shipped SQL.
_TABLE = r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$"
# What a routing key or subject template may name: values of the delivery, never record values.
TEMPLATE_FIELDS = ("event_type", "entity_type", "destination")


def _signing_secret(value: object) -> object:
    if not isinstance(value, str) or not _STANDARD_WEBHOOK_SECRET.match(value):
        # The value itself is never repeated: it is a secret.
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
    return value


def _first_attempt_at_once(value: list[float] | None) -> list[float] | None:
    if value and value[0] != 0:
        raise ValueError("must start with 0: the first attempt is made at once, each later entry is a wait")
    return value


def _template(value: str) -> str:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"is not a valid template: {exc}") from None
    unknown = sorted({name for name in names if name not in TEMPLATE_FIELDS})
    if unknown:
        raise ValueError(
            f"names {', '.join('{' + name + '}' for name in unknown)}; a template may use only "
            + ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
        )
    return value


def _broker_url(*schemes: str) -> AfterValidator:
    def check(value: object) -> object:
        text = value.reveal() if isinstance(value, Secret) else str(value)
        if not any(text.startswith(f"{scheme}://") for scheme in schemes):
            # Not repeated: the URL may carry a password.
            raise ValueError(f"must be a {' or '.join(scheme + '://' for scheme in schemes)} URL")
        return value

    return AfterValidator(check)


SigningSecret = Annotated[SecretStr, BeforeValidator(_signing_secret)]
Schedule = Annotated[list[Duration], AfterValidator(_first_attempt_at_once)]
DestinationName = Annotated[str, Field(pattern=NAME_PATTERN)]
# A routing key or subject: text with {event_type}, {entity_type} or {destination} filled in per delivery.
Template = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_template)]


class BreakerSettings(ConfigModel):
    """When a destination's circuit breaker opens, and how it probes its way back."""

    # Opens after this many failures in a row...
    consecutive_failures: int = Field(default=5, ge=1)
    # ...or when this share of the attempts in the window failed (with at least min_attempts).
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    window: Duration = Field(default=60.0, gt=0)
    min_attempts: int = Field(default=20, ge=1)
    # How long it stays open before one probe delivery is let through (half-open).
    open_for: Duration = Field(default=30.0, gt=0)


class DestinationBase(ConfigModel):
    """What every destination type has: the delivery engine's knobs for it."""

    # How long one send may take, connecting included; past it the attempt failed and is retried.
    timeout: Duration = Field(default=10.0, gt=0)
    # Sends per second of all workers together (N/s, N/m, N/h); none by default.
    rate_limit: Rate | None = None
    # Overrides delivery.schedule / delivery.breaker for this destination.
    schedule: Schedule | None = Field(default=None, min_length=1)
    breaker: BreakerSettings | None = None


class HttpDestination(DestinationBase):
    """POST each delivery as JSON, signed as Standard Webhooks (webhook-id/-timestamp/-signature)."""

    type: Literal["http"]
    url: HttpsUrl
    # One secret, or several while the receiver rotates: each one signs, all signatures are sent.
    signing_secret: Annotated[list[SigningSecret], BeforeValidator(one_or_list)] = Field(default_factory=list)
    # Extra request headers (an API key, say); values are treated as secrets.
    headers: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")], SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _headers_not_ours(self) -> HttpDestination:
        ours = {"content-type", "webhook-id", "webhook-timestamp", "webhook-signature", "host", "content-length"}
        taken = sorted(name for name in self.headers if name.lower() in ours)
        if taken:
            raise ValueError(f"headers: {', '.join(taken)} is set by capture-relay itself")
        return self


class PostgresDestination(DestinationBase):
    """A profile mirror: one row per uuid in ``table``, upserted, never moved back to an older record."""

    type: Literal["postgres"]
    # postgresql://user:password@host:5432/dbname?sslmode=verify-full (libpq's URI or key=value form).
    dsn: SecretStr
    table: str = Field(pattern=_TABLE)
    # soft: the row stays as a tombstone (deleted_at set, record cleared); hard: the row is deleted.
    deletes: Literal["soft", "hard"] = "soft"


class RedisStreamDestination(DestinationBase):
    """XADD each delivery to a Redis stream, capped at about ``maxlen`` entries."""

    type: Literal["redis_stream"]
    # The Redis that holds the stream; capture-relay's own (redis_url) when left out.
    url: RedisUrl | None = None
    stream: str = Field(min_length=1, max_length=200, pattern=r"^[^{}\s]+$")
    # Approximate cap (XADD MAXLEN ~): the oldest entries are trimmed once the stream is longer.
    maxlen: int = Field(default=1_000_000, ge=1)
    # A delivery id already added within this window is not added again (a retry after a lost
    # answer, a replay): each delivery appears once. Longer than the retry schedule.
    dedup_window: Duration = Field(default=7 * 86400.0, ge=1)


class AmqpDestination(DestinationBase):
    """Publish each delivery to a RabbitMQ exchange, persistent, with publisher confirms."""

    type: Literal["amqp"]
    # amqp://user:password@host:5672/vhost, or amqps:// for TLS.
    url: Annotated[SecretStr, _broker_url("amqp", "amqps")]
    # Must exist already: nothing is declared. "" is the default exchange (routing key = queue name).
    exchange: str = Field(default="", max_length=255)
    routing_key: Template = "capture.{event_type}"
    # An unroutable message (no queue bound for its key) is a failed attempt, not a delivery.
    mandatory: bool = True


def _nats_subject(value: str) -> str:
    # Checked on a sample filled in: a subject the server would refuse sends every delivery to
    # the dead letter, a wildcard one publishes nowhere useful.
    sample = value.format(event_type="entityUpdated", entity_type="user", destination="d")
    tokens = sample.split(".")
    if any(not token or any(char.isspace() for char in token) for token in tokens):
        raise ValueError("is not a NATS subject: tokens separated by dots, none empty, no spaces")
    if any(token in {"*", ">"} for token in tokens):
        raise ValueError("must not contain the wildcards * or >: a message is published to one subject")
    return value


class NatsDestination(DestinationBase):
    """Publish each delivery to NATS JetStream with ``Nats-Msg-Id`` and wait for the stream's ack."""

    type: Literal["nats"]
    # nats://[user:password@]host:4222, tls:// for TLS; several servers separated by commas.
    url: Annotated[SecretStr, _broker_url("nats", "tls")]
    subject: Annotated[Template, AfterValidator(_nats_subject)] = "capture.{event_type}"
    # A NATS credentials file (JWT and NKey seed), when the server asks for one.
    credentials_file: str | None = None


class KafkaDestination(DestinationBase):
    """Produce each delivery to a Kafka topic with an idempotent producer, keyed by uuid."""

    type: Literal["kafka"]
    bootstrap_servers: Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(one_or_list)] = Field(
        min_length=1
    )
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    # Further librdkafka properties (security.protocol, sasl.mechanism, sasl.username,
    # sasl.password, ssl.ca.location, ...); values are secrets. The delivery guarantees are ours.
    options: dict[Annotated[str, Field(pattern=r"^[a-z0-9._]+$")], SecretStr] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _guarantees_not_overridden(self) -> KafkaDestination:
        taken = sorted(name for name in self.options if name in KAFKA_FIXED_OPTIONS)
        if taken:
            raise ValueError(
                f"options: {', '.join(taken)} is set by capture-relay itself "
                "(idempotent, acks=all, keyed by uuid, each delivery report awaited)"
            )
        return self


# librdkafka properties the kafka sink sets itself: they carry the delivery guarantees (the
# partitioner keeps one profile in one partition, hence in order; the callbacks report deliveries).
KAFKA_FIXED_OPTIONS = frozenset(
    {
        "partitioner",
        "partitioner_cb",
        "delivery.report.only.error",
        "dr_cb",
        "dr_msg_cb",
        "on_delivery",
        "error_cb",
        "logger",
        "log_cb",
        "stats_cb",
        "throttle_cb",
        "oauth_cb",
        "bootstrap.servers",
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "max.in.flight.requests.per.connection",
        "max.in.flight",
        "retries",
        "message.send.max.retries",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "transactional.id",
    }
)

Destination = Annotated[
    HttpDestination
    | PostgresDestination
    | RedisStreamDestination
    | AmqpDestination
    | NatsDestination
    | KafkaDestination,
    Field(discriminator="type"),
]
# Every destination type by its ``type:`` tag.
DESTINATION_TYPES: dict[str, type[DestinationBase]] = {
    "http": HttpDestination,
    "postgres": PostgresDestination,
    "redis_stream": RedisStreamDestination,
    "amqp": AmqpDestination,
    "nats": NatsDestination,
    "kafka": KafkaDestination,
}
