"""The ``redis_stream`` destination: each delivery is one entry of a Redis stream (XADD).

An entry has the fields ``delivery_id``, ``event_type``, ``uuid``, ``entity_type`` and
``payload`` (the JSON document); consumers read it with XREAD or a consumer group. The stream
is capped at about ``maxlen`` entries (``XADD MAXLEN ~``: Redis trims whole nodes only, so the
stream may hold somewhat more).

Each delivery is added once. One Lua script, atomic on the server, looks for the delivery's
marker, adds the entry and sets the marker (expiring after ``dedup_window``), so a retry after
a lost answer finds the marker and adds nothing. The marker is
``capture-relay:stream-dedup:{<stream>}:<delivery_id>``: the braces put it in the stream's
cluster slot, as the keys of one script must be. A delivery sent again after the window, or
after the server evicted its marker (a ``maxmemory-policy`` other than ``noeviction``), is
added again.

    entry added, or added before          delivered
    no connection, no answer in time      SinkError(connection | timeout, retryable)
    password refused (NOAUTH, WRONGPASS)  SinkError(auth, retryable)
    the key is not a stream (WRONGTYPE)   SinkError(wrong_type, retryable): an operator renames the key
    out of memory (OOM)                   SinkError(full, retryable): maxmemory reached
    ACL denies a command (NOPERM)         SinkError(permission, retryable)
    a read-only replica (READONLY)        SinkError(read_only, retryable): until the failover ends
    a Redis Cluster node (MOVED, ASK)     SinkError(cluster, retryable): not supported, see below
    anything else Redis refuses           SinkError(redis, retryable)

The client speaks to one Redis server (a primary, or one behind Sentinel's or a proxy's fixed
address), not to Redis Cluster: a cluster node answers MOVED for the slots it does not own.

Every failure is retryable: each is fixed by an operator or a failover, and meanwhile the
circuit breaker holds the deliveries back rather than dead-lettering them. Errors name the
Redis by its URL without password or query string and never quote the payload.
"""

from __future__ import annotations

import math

import orjson
import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
)
from redis.retry import Retry

from service.destination_config import RedisStreamDestination
from workers.sinks.base import (
    DEFAULT_MAX_CONNECTIONS,
    DestinationConfigError,
    Outgoing,
    SinkError,
    one_line,
    shown_url,
    url_secrets,
)

MARKER_PREFIX = "capture-relay:stream-dedup:"
# Connections idle this long are PINGed before reuse, as capture-relay's own clients are; one the
# server closed meanwhile is replaced by redis-py's pool when taken, before any command is sent.
HEALTH_CHECK_INTERVAL = 30

# KEYS: the delivery's marker, the stream. ARGV: marker lifetime (s), maxlen, the entry's fields and values.
# The entry is added before the marker is set: a script is not rolled back when a command fails,
# so a marker set before a failing XADD (WRONGTYPE, OOM) would make every retry skip the delivery.
# Once the XADD wrote, Redis lets the rest of the script write even when out of memory.
_ADD_ONCE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
"""


class RedisStreamSink:
    """Adds deliveries to one ``redis_stream`` destination; safe to share between threads."""

    def __init__(
        self, name: str, config: RedisStreamDestination, *, max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> None:
        """Prepare the connection pool; the first send connects.

        Raises:
            DestinationConfigError: ``config.url`` is unset (``open_sink`` fills in capture-relay's own Redis).
        """
        if config.url is None:
            raise DestinationConfigError(
                f"destinations.{name}.url: required (open_sink defaults it to capture-relay's Redis)"
            )
        self.name = name
        self._config = config
        self._url = config.url.reveal()
        self.target = shown_url(self._url)
        self._pool = redis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=max_connections,
            # Waiting for a free connection counts against the send's time as well.
            timeout=config.timeout,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            # CLIENT LIST shows an operator which destination a connection belongs to.
            client_name=f"capture-relay:{name}",
            # The delivery engine retries; a retry here would stretch a send past its timeout.
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.Redis(connection_pool=self._pool)
        self._add_once = self._client.register_script(_ADD_ONCE)
        self._window = math.ceil(config.dedup_window)
        self._closed = False

    def send(self, outgoing: Outgoing) -> None:
        """Add ``outgoing`` to the stream, unless it was added within the dedup window.

        Raises:
            SinkError: Redis could not be reached or refused the entry.
        """
        fields = (
            "delivery_id", outgoing.delivery_id,
            "event_type", outgoing.event_type,
            "uuid", outgoing.uuid,
            "entity_type", outgoing.payload.get("entity_type") or "",
            "payload", orjson.dumps(outgoing.payload),
        )  # fmt: skip
        if self._closed:
            raise SinkError(reason="connection", retryable=True, detail=f"the sink is closed ({self.target})")
        marker = f"{MARKER_PREFIX}{{{self._config.stream}}}:{outgoing.delivery_id}"
        try:
            self._add_once(keys=[marker, self._config.stream], args=[self._window, self._config.maxlen, *fields])
        except redis.RedisError as exc:
            raise self._error(exc) from exc

    def check(self) -> str:
        """Connect and make sure the stream is a stream or not there yet; writes nothing.

        Raises:
            SinkError: Redis cannot be reached, or the key holds something else.
        """
        stream = self._config.stream
        try:
            self._client.ping()
            kind = self._client.type(stream)
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "none":
                return f"stream {stream} does not exist yet on {self.target}; the first delivery creates it"
            if kind != "stream":
                raise SinkError(
                    reason="wrong_type", retryable=True, detail=f"{_not_a_stream(stream, kind)} ({self.target})"
                )
            length = self._client.xlen(stream)
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        return f"stream {stream} on {self.target}: {length} entries, capped at about {self._config.maxlen}"

    def close(self) -> None:
        """Close the pooled connections; later sends fail as retryable."""
        self._closed = True
        self._pool.disconnect()

    def _error(self, exc: redis.RedisError) -> SinkError:
        message = str(exc)
        if isinstance(exc, AuthenticationError):
            reason, what = "auth", "Redis refused the credentials"
        elif isinstance(exc, redis.TimeoutError):
            reason, what = "timeout", f"no answer within {self._config.timeout:g}s"
        elif isinstance(exc, redis.ConnectionError):
            reason, what = "connection", "cannot reach Redis"
        elif isinstance(exc, OutOfMemoryError):
            reason, what = "full", "Redis is out of memory (maxmemory)"
        elif "WRONGTYPE" in message:
            reason, what = "wrong_type", _not_a_stream(self._config.stream, "value of another type")
        elif isinstance(exc, NoPermissionError):
            reason, what = "permission", "the Redis user may not run EVALSHA, EXISTS, XADD or SET on these keys"
        elif isinstance(exc, ReadOnlyError):
            reason, what = "read_only", "Redis is a read-only replica"
        elif isinstance(exc, MovedError | AskError):
            reason, what = "cluster", "this Redis is a cluster node; a redis_stream needs a single Redis server"
        else:
            reason, what = "redis", "Redis refused the entry"
        cause = f"{type(exc).__name__}: {one_line(message, url_secrets(self._url))}"
        return SinkError(reason=reason, retryable=True, detail=f"{what} ({self.target}; {cause})")


def _not_a_stream(stream: str, kind: str) -> str:
    return f"key {stream} holds a {kind}, not a stream; rename the key or choose another stream"
