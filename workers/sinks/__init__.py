"""Destination types: one sink module per ``type:``, opened from its config section.

The one package that re-exports (STYLE.md): the ``Sink`` protocol, its error and the
type-to-factory map, so the delivery engine needs to know no sink module by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from service.routing_config import Destination
from workers.sinks.base import Outgoing, Sink, SinkError
from workers.sinks.http import DEFAULT_MAX_CONNECTIONS, HttpSink

__all__ = ["SINK_TYPES", "Outgoing", "Sink", "SinkError", "open_sink"]

# Each destination ``type:`` and what opens its sink from (name, config section).
SINK_TYPES: Mapping[str, Callable[..., Sink]] = MappingProxyType({"http": HttpSink})


def open_sink(name: str, config: Destination, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> Sink:
    """Open the sink of destination ``name``; the caller closes it when the worker stops.

    Raises:
        ValueError: ``config.type`` has no sink (the config's validation normally stops it first).
    """
    try:
        factory = SINK_TYPES[config.type]
    except KeyError:
        known = ", ".join(sorted(SINK_TYPES))
        raise ValueError(f"destinations.{name}.type: {config.type!r} has no sink; known types: {known}") from None
    # Connections per sink: one per worker thread, so no send waits for a free one.
    return factory(name, config, max_connections=max_connections)
