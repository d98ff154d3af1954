"""Destination types: one sink module per ``type:``, opened from its config section.

The one package that re-exports (STYLE.md): the ``Sink`` protocol, its error and the way to
open a sink, so the delivery engine needs to know no sink module by name. Each module is
imported only when a destination of its type is configured: a worker that sends only HTTP
never loads librdkafka, psycopg or the AMQP and NATS clients.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType

from service.destination_config import Destination, RedisStreamDestination
from service.secret import Secret
from workers.sinks.base import DEFAULT_MAX_CONNECTIONS, DestinationConfigError, Outgoing, Sink, SinkError

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "SINK_TYPES",
    "DestinationConfigError",
    "Outgoing",
    "Sink",
    "SinkError",
    "open_sink",
]

# Each destination ``type:`` and the class that sends to it, as "module:Class".
SINK_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "http": "workers.sinks.http:HttpSink",
        "postgres": "workers.sinks.postgres:PostgresSink",
        "redis_stream": "workers.sinks.redis_stream:RedisStreamSink",
        "amqp": "workers.sinks.amqp:AmqpSink",
        "nats": "workers.sinks.nats:NatsSink",
        "kafka": "workers.sinks.kafka:KafkaSink",
    }
)


def open_sink(
    name: str,
    config: Destination,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    relay_redis_url: Secret | None = None,
) -> Sink:
    """Open the sink of destination ``name``; the caller closes it when the worker stops.

    Opening connects to nothing: a destination that is down when the worker starts must not
    stop the worker (and the other destinations) from starting; its first send fails instead.

    Args:
        max_connections: connections the sink may hold, one per worker thread, so that no send
            waits for a free one.
        relay_redis_url: capture-relay's own Redis, where a ``redis_stream`` without ``url`` writes.

    Raises:
        DestinationConfigError: ``config.type`` has no sink (the config's validation normally stops it first),
            or the section cannot be used (named by its key).
    """
    try:
        target = SINK_TYPES[config.type]
    except KeyError:
        known = ", ".join(sorted(SINK_TYPES))
        raise DestinationConfigError(
            f"destinations.{name}.type: {config.type!r} has no sink; known types: {known}"
        ) from None
    if isinstance(config, RedisStreamDestination) and config.url is None:
        if relay_redis_url is None:
            raise DestinationConfigError(
                f"destinations.{name}.url: required here (no capture-relay Redis to default to)"
            )
        config = config.model_copy(update={"url": relay_redis_url})
    module_name, _, class_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    sink: Sink = factory(name, config, max_connections=max_connections)
    return sink
