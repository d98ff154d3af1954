"""The ``kafka`` destination: each delivery is produced to one topic by an idempotent producer.

A delivery is one record: the JSON payload as value, the profile's uuid as key, and the headers
``delivery-id``, ``event-type`` and ``entity-type``. It counts as delivered only when librdkafka's
delivery report says that every in-sync replica has it (``acks=all``). What happens is decided so:

    delivery report without error               delivered
    no report within ``timeout``                SinkError(timeout, retryable)
    brokers unreachable, connection lost        SinkError(connection, retryable)
    the topic does not exist                    SinkError(not_found, retryable)
    authorization or authentication refused     SinkError(permission | auth, retryable)
    larger than message.max.bytes or the broker's limit
                                                SinkError(too_large, not retryable): dead-lettered
    the local queue is full                     SinkError(queue_full, retryable)
    the producer failed fatally                 SinkError(fatal, retryable), and a new producer is made
    options librdkafka refuses                  SinkError(config, retryable)
    any other error                             SinkError(nack, retryable)

``message.timeout.ms`` is set to ``timeout``, so librdkafka itself gives up on a record (and
reports it) by the time the send does; the send waits one second more for that report.
Missing topics and refused credentials are retried, not dead-lettered: an operator fixes them,
and meanwhile the breaker holds the deliveries back.

Duplicates. The idempotent producer keeps librdkafka's own retries from writing a record twice,
but Kafka has nothing that spans two sends: a delivery sent again (after a timeout whose record
did arrive, or a replay) is a second record with the same ``delivery-id`` header. Consumers drop
repeats by that header. Order: the key is the uuid, so the records of one profile go to one
partition and are read in the order they were confirmed.

One producer per destination is shared by the worker's threads (librdkafka multiplexes them over
its own broker connections, so ``max_connections`` is not needed); it is made by the first send.
librdkafka's log lines go to the debug log, its errors to warnings, never to stderr, and errors
and log lines never quote the payload or an option's value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson
import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from service.destination_config import KafkaDestination
from workers.sinks.base import DEFAULT_MAX_CONNECTIONS, Outgoing, SinkError, one_line

log = structlog.get_logger(__name__)

# librdkafka reports a record by ``timeout`` (message.timeout.ms); the send waits this much more for the report.
REPORT_MARGIN = 1.0
# How long one poll for delivery reports blocks; a report served by another thread wakes nobody here.
POLL_INTERVAL = 0.05
REDACTED = "[redacted]"

# What each error means: reason, retryable, and what happened, in words.
_TIMEOUT = ("timeout", True, "not confirmed in time")
_CONNECTION = ("connection", True, "the brokers cannot be reached")
_NOT_FOUND = ("not_found", True, "the topic does not exist")
_PERMISSION = ("permission", True, "not authorized to write to the topic")
_AUTH = ("auth", True, "authentication refused")
_TOO_LARGE = ("too_large", False, "the message is larger than the producer or broker allows")
_ERRORS: Mapping[int, tuple[str, bool, str]] = MappingProxyType(
    {
        KafkaError._MSG_TIMED_OUT: _TIMEOUT,
        KafkaError._TIMED_OUT: _TIMEOUT,
        KafkaError.REQUEST_TIMED_OUT: _TIMEOUT,
        KafkaError._TRANSPORT: _CONNECTION,
        KafkaError._ALL_BROKERS_DOWN: _CONNECTION,
        KafkaError._RESOLVE: _CONNECTION,
        KafkaError._SSL: _CONNECTION,
        KafkaError.NETWORK_EXCEPTION: _CONNECTION,
        KafkaError.BROKER_NOT_AVAILABLE: _CONNECTION,
        KafkaError.LEADER_NOT_AVAILABLE: _CONNECTION,
        KafkaError.NOT_LEADER_FOR_PARTITION: _CONNECTION,
        KafkaError.UNKNOWN_TOPIC_OR_PART: _NOT_FOUND,
        KafkaError._UNKNOWN_TOPIC: _NOT_FOUND,
        KafkaError._UNKNOWN_PARTITION: _NOT_FOUND,
        KafkaError.TOPIC_AUTHORIZATION_FAILED: _PERMISSION,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED: _PERMISSION,
        KafkaError.SASL_AUTHENTICATION_FAILED: _AUTH,
        KafkaError._AUTHENTICATION: _AUTH,
        KafkaError.MSG_SIZE_TOO_LARGE: _TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE: _TOO_LARGE,
        KafkaError._QUEUE_FULL: ("queue_full", True, "the producer's queue is full"),
    }
)


class KafkaSink:
    """Produces deliveries to one ``kafka`` destination; safe to share between threads."""

    def __init__(self, name: str, config: KafkaDestination, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        """Prepare the sink; the producer, and its connections, are made by the first send."""
        self.name = name
        # The bootstrap servers as logs and errors may show them (host:port, no credentials in them).
        self.target = ",".join(config.bootstrap_servers)
        self._config = config
        # Option values are secrets: an error or a log line that quotes one has it replaced.
        self._secrets = [value for value in (secret.reveal() for secret in config.options.values()) if len(value) >= 3]
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._closed = False
        # The last error librdkafka reported outside a delivery (a broker down, SASL refused):
        # it explains a record that timed out.
        self._last_error: KafkaError | None = None
        self._logged_errors: set[int] = set()

    def send(self, outgoing: Outgoing) -> None:
        """Produce ``outgoing.payload`` once; return when its delivery report has no error.

        Raises:
            SinkError: not confirmed, see the module's table.
        """
        producer = self._open()
        report = _Report()
        headers: list[tuple[str, str | bytes | None]] = [
            ("delivery-id", outgoing.delivery_id),
            ("event-type", outgoing.event_type),
            ("entity-type", str(outgoing.payload.get("entity_type") or "")),
        ]
        try:
            producer.produce(
                self._config.topic,
                value=orjson.dumps(outgoing.payload),
                key=outgoing.uuid.encode(),
                headers=headers,
                on_delivery=report,
            )
        except BufferError:
            raise self._failure(KafkaError(KafkaError._QUEUE_FULL), producer) from None
        except KafkaException as exc:
            raise self._failure(exc.args[0], producer) from None
        deadline = time.monotonic() + self._config.timeout + REPORT_MARGIN
        while not report.done.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SinkError(
                    reason="timeout",
                    retryable=True,
                    detail=f"no delivery report within {self._config.timeout:g}s ({self._where()})",
                )
            try:
                producer.poll(min(POLL_INTERVAL, remaining))
            except KafkaException as exc:  # a fatal error is raised by poll() too
                raise self._failure(exc.args[0], producer) from None
        if report.error is not None:
            raise self._failure(report.error, producer)
        self._last_error = None
        self._logged_errors.clear()

    def check(self) -> str:
        """Connect and find the topic among the cluster's topics, writing nothing.

        All topics are listed rather than the one: asking for a topic by name creates it on a
        cluster with ``auto.create.topics.enable``.

        Raises:
            SinkError: the brokers cannot be reached, or the topic is not there (or not visible to this client).
        """
        producer = self._open()
        try:
            metadata = producer.list_topics(timeout=self._config.timeout)
        except KafkaException as exc:
            raise self._failure(exc.args[0], producer) from None
        topic = metadata.topics.get(self._config.topic)
        if topic is None:
            raise SinkError(
                reason="not_found",
                retryable=True,
                detail=f"no topic {self._config.topic} among the {len(metadata.topics)} this client may see "
                f"({self.target})",
            )
        if topic.error is not None:
            raise self._failure(topic.error, producer)
        return f"topic {self._config.topic} has {len(topic.partitions)} partitions on {len(metadata.brokers)} broker(s)"

    def close(self) -> None:
        """Wait up to ``timeout`` for records still in flight, then let the producer go; later calls do nothing."""
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            left = producer.flush(self._config.timeout)
            if left:
                log.warning("kafka.unconfirmed_at_close", destination=self.name, count=left)

    def _open(self) -> Producer:
        with self._lock:
            if self._closed:
                raise SinkError(reason="connection", retryable=True, detail=f"the sink is closed ({self.target})")
            if self._producer is None:
                try:
                    self._producer = Producer(self._producer_config())
                except KafkaException as exc:
                    error: KafkaError = exc.args[0]
                    raise SinkError(
                        reason="config",
                        retryable=True,
                        detail=f"librdkafka refused the options: {self._describe(error)}",
                    ) from None
                except (TypeError, ValueError) as exc:
                    # confluent-kafka's own checks (a property it wants as a bool, say); its message
                    # names the property, and the value is scrubbed as for librdkafka's.
                    detail = f"the options cannot be used: {self._scrub(str(exc))}"
                    raise SinkError(reason="config", retryable=True, detail=detail) from None
            return self._producer

    def _producer_config(self) -> dict[str, Any]:
        # The options may name the client; what carries the delivery guarantees, and the callbacks, are ours.
        config: dict[str, Any] = {"client.id": f"capture-relay-{self.name}"}
        config.update((name, value.reveal()) for name, value in self._config.options.items())
        config.update(
            {
                "bootstrap.servers": self.target,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": max(1, round(self._config.timeout * 1000)),
                "error_cb": self._on_error,
                "logger": _LibrdkafkaLog(self.name, self._scrub),
            }
        )
        return config

    def _failure(self, error: KafkaError, producer: Producer) -> SinkError:
        """What ``error`` means for the delivery; see the module's table."""
        if error.fatal():
            # An idempotent producer that failed fatally refuses every later record: make a new one.
            self._discard(producer)
            return SinkError(
                reason="fatal",
                retryable=True,
                detail=f"the producer failed and is replaced ({self._where()}; {self._describe(error)})",
            )
        reason, retryable, what = _ERRORS.get(error.code(), ("nack", True, "refused"))
        last = self._last_error
        if reason == "timeout" and last is not None and _ERRORS.get(last.code(), _TIMEOUT)[0] == "auth":
            reason = "auth"  # records time out while the brokers refuse the credentials
        cause = self._describe(error)
        if reason in {"timeout", "auth"} and last is not None:
            cause += f"; last broker error: {self._describe(last)}"
        return SinkError(reason=reason, retryable=retryable, detail=f"{what} ({self._where()}; {cause})")

    def _discard(self, producer: Producer) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
        # Serves the reports it still has; the threads still polling it hold it until they are done.
        producer.flush(0)

    def _on_error(self, error: KafkaError) -> None:
        # librdkafka reports a down broker again on every reconnect attempt: each kind of error is
        # logged once until a record gets through.
        self._last_error = error
        if error.code() not in self._logged_errors:
            self._logged_errors.add(error.code())
            log.warning("kafka.error", destination=self.name, reason=error.name(), detail=self._describe(error))

    def _where(self) -> str:
        return f"{self.target}, topic {self._config.topic}"

    def _describe(self, error: KafkaError) -> str:
        return f"{error.name()}: {self._scrub(error.str())}"

    def _scrub(self, text: str) -> str:
        return one_line(text, self._secrets, mask=REDACTED)


class _Report:
    """The delivery report of one record, as the thread that produced it waits for it."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: KafkaError | None = None

    def __call__(self, error: KafkaError | None, message: Message[Any, Any]) -> None:
        self.error = error
        self.done.set()


class _LibrdkafkaLog:
    """Takes librdkafka's log lines (instead of stderr) to the debug log, scrubbed of option values."""

    def __init__(self, destination: str, scrub: Callable[[str], str]) -> None:
        self._destination = destination
        self._scrub = scrub

    def log(self, level: int, message: str, *args: object) -> None:
        """Called by confluent-kafka as ``logging.Logger.log`` would be."""
        log.debug("kafka.librdkafka", destination=self._destination, detail=self._scrub(message % args))
