"""The ``amqp`` destination: each delivery is one persistent message published to a RabbitMQ exchange.

The body is the JSON payload; the properties carry the delivery's identity: ``message_id`` (the
delivery id), ``type`` (the event type), ``content_type`` ``application/json``,
``delivery_mode`` 2 (persistent), ``timestamp``, ``app_id`` ``capture-relay`` and the headers
``uuid`` and ``entity_type``. The routing key is the ``routing_key`` template filled in. A send
returns once the broker confirmed the message (publisher confirms): for a persistent message
routed to durable queues, once they have it safely.

Nothing is declared: the exchange, the queues and their bindings are the operator's, and
``capture-relay sinks check`` only looks the exchange up (a passive declare, which creates
nothing). RabbitMQ does not deduplicate: when a connection breaks (or a send times out) after a
publish and before its confirm, the retry publishes a second copy with the same ``message_id``,
so consumers that must see each delivery once deduplicate by ``message_id``.

    confirmed                              delivered
    returned, ``mandatory`` (no queue)     SinkError(unroutable, retryable)
    nack'ed by the broker                  SinkError(nack, retryable)
    the exchange does not exist (404)      SinkError(not_found, retryable)
    access refused (403), vhost refused    SinkError(permission, retryable)
    login refused                          SinkError(auth, retryable)
    blocked (resource alarm) past timeout  SinkError(blocked, retryable)
    no connection or confirm in time       SinkError(timeout, retryable)
    over the broker's max message size     SinkError(too_large, not retryable)
    refused or lost connection, the sink
    closed during the send                 SinkError(connection, retryable)
    a routing key over 255 bytes, any
    other channel or protocol error        SinkError(protocol, retryable)

Configuration problems are retryable, so the circuit breaker holds the deliveries back while an
operator fixes them, instead of dead-lettering each. Errors name the broker by its URL without
the password and never quote the payload; nor do aiormq's own log lines, which lose their
arguments (``service.logs.NoMessageBodies``, put on aiormq's loggers when this module is imported).

aiormq is asyncio only: the sink runs one event loop on a thread of its own (``LoopThread``),
started with the first send, with one connection and a pool of channels in confirm mode on it
(at most ``max_connections``, opened as sends need them). A send has a channel to itself for
its publish and confirm, and puts it back only after a confirm: a channel the broker closes (a
missing exchange, a message too large), or any other failure, takes no other send with it, and
a returned message is matched to its own publish. ``timeout`` bounds each send as a whole,
connecting included, whatever the broker does: one that keeps the connection open but holds the
confirm (a quorum queue without its majority, a hung peer, a half-open TCP connection) fails the
send with ``timeout`` at the deadline. The connection is then dropped (closed in the background)
and the next send opens a new one, as it does after a lost connection; the other sends still
waiting on it fail with it (retryable), so a message of theirs the broker had already taken
arrives twice (consumers deduplicate by ``message_id``). The loop answers
heartbeats between sends (aiormq's default interval, or ``?heartbeat=`` in the URL).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiormq
import orjson
from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    AuthenticationError,
    ChannelAccessRefused,
    ChannelClosed,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    ConnectionNotAllowed,
    DeliveryError,
    InvalidFrameError,
    ProbableAuthenticationError,
    PublishError,
)
from pamqp import commands as spec

from service.destination_config import AmqpDestination
from service.logs import keep_message_bodies_out
from workers.sinks.base import (
    DEFAULT_MAX_CONNECTIONS,
    DestinationConfigError,
    Outgoing,
    SinkError,
    one_line,
    shown_url,
    url_secrets,
)
from workers.sinks.loop_thread import LoopThread

PERSISTENT = 2
# AMQP's limit (a short string): a longer routing key would make the broker close the connection.
MAX_ROUTING_KEY_BYTES = 255
# How long a dropped connection may take to say goodbye (Connection.Close) in the background.
CLOSE_TIMEOUT = 5.0
# How long a timed-out send looks whether the broker blocked the connection (ready() returns at once if not).
BLOCKED_PROBE = 0.05
# What aiormq raises: its own errors, socket errors it lets through, and RuntimeError for a channel
# or connection used after it closed (ChannelInvalidStateError and the like). TimeoutError is an OSError.
_AMQP_ERRORS = (AMQPError, OSError, RuntimeError)

# aiormq logs a message returned after its send gave up at ERROR, body and all: not with this filter.
keep_message_bodies_out()


class AmqpSink:
    """Publishes deliveries to one ``amqp`` destination; safe to share between threads."""

    def __init__(self, name: str, config: AmqpDestination, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        """Check the URL; the first send connects.

        Raises:
            DestinationConfigError: the URL cannot be used (named by its key, not repeated).
        """
        self.name = name
        self._config = config
        self._url = config.url.reveal()
        where = f"exchange {config.exchange}" if config.exchange else "the default exchange"
        # The broker as logs and errors may show it: the query string may carry secrets too.
        self.target = f"{where} on {shown_url(self._url)}"
        if not _usable_url(self._url):
            raise DestinationConfigError(
                f"destinations.{name}.url: is not an AMQP URL (amqp://user:password@host:port/vhost)"
            )
        self._loop = LoopThread(f"amqp-sink-{name}", self.target)
        # Used on the loop only, so they need no lock.
        self._connection: AbstractConnection | None = None
        self._opening: asyncio.Task[AbstractConnection] | None = None
        # Channels of the connection with no publish on them; at most ``max_connections`` exist at once.
        self._idle: list[AbstractChannel] = []
        self._slots = asyncio.Semaphore(max(max_connections, 1))
        self._closing: set[asyncio.Task[None]] = set()

    def send(self, outgoing: Outgoing) -> None:
        """Publish ``outgoing`` once; return when the broker confirmed it.

        Raises:
            SinkError: the broker could not be reached in time, refused or returned the message.
        """
        entity_type = outgoing.payload.get("entity_type") or ""
        routing_key = self._config.routing_key.format(
            event_type=outgoing.event_type, entity_type=entity_type, destination=self.name
        )
        if len(routing_key.encode()) > MAX_ROUTING_KEY_BYTES:
            raise SinkError(
                reason="protocol",
                retryable=True,
                detail=f"routing key longer than {MAX_ROUTING_KEY_BYTES} bytes: {routing_key[:60]!r}...",
            )
        properties = spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=outgoing.delivery_id,
            message_type=outgoing.event_type,
            timestamp=datetime.now(UTC),
            app_id="capture-relay",
            headers={"uuid": outgoing.uuid, "entity_type": entity_type},
        )
        body = orjson.dumps(outgoing.payload)
        self._loop.run(self._publish(routing_key, body, properties), self._config.timeout)

    def check(self) -> str:
        """Connect and make sure the exchange exists, declaring nothing.

        Raises:
            SinkError: the broker cannot be reached or refuses the login, or the exchange is missing.
        """
        self._loop.run(self._check(), self._config.timeout)
        if not self._config.exchange:
            return f"connected: {self.target} routes each message to the queue its routing key names"
        return f"{self.target} exists"

    def close(self) -> None:
        """Close the connection and stop the loop thread; later calls do nothing."""
        with contextlib.suppress(TimeoutError):
            # A broker that does not answer the goodbye: the connection went with the loop.
            self._loop.close(self._shut_down, self._config.timeout)

    async def _publish(self, routing_key: str, body: bytes, properties: spec.Basic.Properties) -> None:
        deadline = asyncio.get_running_loop().time() + self._config.timeout
        connection: AbstractConnection | None = None
        try:
            # One deadline over every await: a free channel, connecting, the write and the confirm.
            async with asyncio.timeout_at(deadline), self._slots:
                connection = await self._ready_connection()
                channel = await self._checkout(connection)
                try:
                    confirm = await channel.basic_publish(
                        body,
                        exchange=self._config.exchange,
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=self._config.mandatory,
                    )
                except BaseException:
                    self._discard(channel)
                    raise
                if isinstance(confirm, spec.Basic.Ack):
                    self._checkin(channel)
                else:
                    self._discard(channel)
        except TimeoutError:
            raise await self._timed_out(connection) from None
        except _AMQP_ERRORS as exc:
            raise self._error(exc, routing_key) from exc
        except Exception as exc:
            # aiormq fails what is pending on a connection that closes under it (close() during
            # the send, say) with a bare Exception: the send is retried.
            raise self._closed_under(exc) from exc
        if not isinstance(confirm, spec.Basic.Ack):
            raise SinkError(
                reason="nack", retryable=True, detail=f"the broker did not confirm the message ({self.target})"
            )

    async def _check(self) -> None:
        deadline = asyncio.get_running_loop().time() + self._config.timeout
        connection: AbstractConnection | None = None
        try:
            async with asyncio.timeout_at(deadline):
                connection = await self._ready_connection()
                # A channel of its own, not one of the pool's: a passive declare of a missing exchange closes it (404).
                probe = await connection.channel(publisher_confirms=False)
                try:
                    if self._config.exchange:
                        await probe.exchange_declare(self._config.exchange, passive=True)
                finally:
                    await probe.close()
        except TimeoutError:
            raise await self._timed_out(connection) from None
        except _AMQP_ERRORS as exc:
            raise self._error(exc) from exc
        except Exception as exc:
            raise self._closed_under(exc) from exc

    async def _ready_connection(self) -> AbstractConnection:
        """The open connection, opened first when there is none (or it was lost)."""
        while True:
            connection = self._connection
            if connection is not None and connection.is_opened:
                return connection
            opening, started = self._opening, False
            if opening is None or opening.done():
                opening = self._opening = asyncio.get_running_loop().create_task(self._open())
                opening.add_done_callback(_seen)
                started = True
            try:
                # Shielded: a send that gives up leaves the opening (bounded by ``timeout`` itself) to the next.
                return await asyncio.shield(opening)
            except TimeoutError:
                # An opening an earlier send started ran out of time (the broker may be back since):
                # this send tries one of its own, until its own deadline.
                if started:
                    raise

    async def _open(self) -> AbstractConnection:
        # A connection the broker closed or that was lost goes, with its channels.
        self._drop(self._connection)
        async with asyncio.timeout(self._config.timeout):
            connection = await aiormq.connect(
                self._url, client_properties={"connection_name": f"capture-relay:{self.name}"}
            )
        self._connection = connection
        return connection

    async def _checkout(self, connection: AbstractConnection) -> AbstractChannel:
        """A channel in confirm mode for one publish: an idle one of ``connection``, or a new one."""
        while self._idle:
            channel = self._idle.pop()
            # Closed meanwhile (by the broker, or with an earlier connection): forgotten.
            if not channel.is_closed and channel.connection is connection:
                return channel
        return await connection.channel(publisher_confirms=True)

    def _checkin(self, channel: AbstractChannel) -> None:
        """Put a channel whose publish was confirmed back for the next send, if it is still usable."""
        if channel.is_closed or channel.connection is not self._connection:
            return
        self._idle.append(channel)

    def _discard(self, channel: AbstractChannel) -> None:
        """Close in the background a channel whose publish failed: whatever state it is in dies with it."""
        if not channel.is_closed and channel.connection is self._connection:
            self._in_background(channel.close())

    async def _timed_out(self, connection: AbstractConnection | None) -> SinkError:
        timeout = self._config.timeout
        if connection is None:
            return SinkError(
                reason="timeout", retryable=True, detail=f"not connected within {timeout:g}s ({self.target})"
            )
        blocked = await _blocked(connection)
        # The connection may be hung (no confirm, no answer): the next send must not wait on it too.
        # The other sends on it fail with it, and are retried.
        self._drop(connection)
        if blocked:
            return SinkError(
                reason="blocked",
                retryable=True,
                detail=f"the broker blocked publishing for over {timeout:g}s, a resource alarm ({self.target})",
            )
        return SinkError(
            reason="timeout", retryable=True, detail=f"the broker did not answer within {timeout:g}s ({self.target})"
        )

    def _closed_under(self, exc: Exception) -> SinkError:
        return SinkError(
            reason="connection",
            retryable=True,
            detail=f"the connection closed during the send ({self.target}; {self._cause(exc)})",
        )

    def _drop(self, connection: AbstractConnection | None) -> None:
        """Forget ``connection`` (if it is the sink's) and its idle channels, and close it in the background."""
        if connection is None:
            return
        if connection is self._connection:
            self._connection = None
            self._idle.clear()
        if not connection.is_closed:
            self._in_background(connection.close())

    def _in_background(self, closing: Awaitable[Any]) -> None:
        task = asyncio.get_running_loop().create_task(_close_quietly(closing))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _shut_down(self) -> None:
        opening = self._opening
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait([opening], timeout=self._config.timeout)
        self._drop(self._connection)
        if self._closing:
            await asyncio.wait(self._closing, timeout=self._config.timeout)

    def _error(self, exc: BaseException, routing_key: str = "") -> SinkError:
        retryable = True
        if isinstance(exc, PublishError):
            reason, what = "unroutable", f"no queue is bound for routing key {routing_key!r} (mandatory)"
        elif isinstance(exc, DeliveryError):
            reason, what = "nack", "the broker refused the message (nack)"
        elif isinstance(exc, ChannelClosed):
            reason, what, retryable = _channel_closed(exc, self._config.exchange)
        elif isinstance(exc, ProbableAuthenticationError | AuthenticationError):
            reason, what = "auth", "the broker refused the login"
        elif isinstance(exc, ConnectionNotAllowed) or (
            # aiormq reports a Connection.Close in answer to Connection.Open (vhost refused) so.
            isinstance(exc, InvalidFrameError) and "Connection.Close" in str(exc)
        ):
            reason, what = "permission", "the broker refused access to the vhost (missing, or not permitted)"
        elif isinstance(exc, AMQPConnectionError | OSError | RuntimeError):
            reason, what = "connection", "cannot reach the broker, or lost the connection"
        else:
            reason, what = "protocol", "the broker and the client disagree"
        return SinkError(reason=reason, retryable=retryable, detail=f"{what} ({self.target}; {self._cause(exc)})")

    def _cause(self, exc: BaseException) -> str:
        text = str(exc)
        described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return one_line(described, url_secrets(self._url))


def _usable_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return False
    return bool(parts.hostname)


def _channel_closed(exc: ChannelClosed, exchange: str) -> tuple[str, str, bool]:
    if isinstance(exc, ChannelNotFoundEntity):
        return "not_found", f"exchange {exchange} does not exist; capture-relay declares nothing: create it", True
    if isinstance(exc, ChannelAccessRefused):
        return "permission", "the broker refused access (the user may not publish to this exchange)", True
    if isinstance(exc, ChannelPreconditionFailed) and "max size" in str(exc):
        return "too_large", "the message is larger than the broker's max_message_size", False
    return "protocol", "the broker closed the channel", True


async def _blocked(connection: AbstractConnection) -> bool:
    """Whether the broker has blocked the connection's publishers (Connection.Blocked, a resource alarm)."""
    try:
        await asyncio.wait_for(connection.ready(), BLOCKED_PROBE)
    except TimeoutError:
        return True
    return False


async def _close_quietly(closing: Awaitable[Any]) -> None:
    # A connection's or a channel's goodbye. Its sends have failed already: whatever it runs into changes nothing.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, CLOSE_TIMEOUT)


def _seen(task: asyncio.Task[AbstractConnection]) -> None:
    # An opening that failed after every send waiting on it gave up: retrieved, so that asyncio
    # does not log it as never retrieved; the next send opens anew.
    if not task.cancelled():
        task.exception()
