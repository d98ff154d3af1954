"""The ``nats`` destination: each delivery is published to NATS JetStream and confirmed by its stream.

A delivery is a JetStream publish: the JSON payload on the subject the template names, with
``Nats-Msg-Id: <delivery id>``, ``Capture-Event-Type`` and ``Capture-Uuid`` headers, and it
counts as delivered only when a stream has acknowledged it (a PubAck). What happens is decided so:

    PubAck (also duplicate=True)          delivered
    no answer within ``timeout``          SinkError(timeout, retryable)
    no stream listens on the subject      SinkError(not_found, retryable)
    not connected within ``timeout``      SinkError(connect | connection | auth, retryable)
    larger than the stream or server allows
                                          SinkError(too_large, not retryable): dead-lettered
    any other refusal by the stream       SinkError(nack, retryable)
    a subject the client rejects          SinkError(subject, not retryable)

Missing streams and refused credentials are retried, not dead-lettered: an operator fixes them,
and meanwhile the breaker holds the deliveries back. A publish the account may not make is
dropped by the server without an answer: it shows as a timeout (and the client's error is logged).

Duplicates. JetStream drops a message whose ``Nats-Msg-Id`` it has seen within the stream's
``duplicate_window`` (a stream setting, two minutes by default) and acknowledges it as a
duplicate; so a retry after a lost acknowledgement is stored once. A retry later than the window
is stored again: set the window longer than the delivery schedule, or let consumers drop
repeats by the header.

nats-py is asyncio only and the delivery threads are plain threads: the sink runs one event loop
on a thread of its own, started with the first send, with one connection on it that every
thread's publishes share (``max_connections`` is not needed). The connection is opened by the
first send, not when the sink opens, and the client reconnects by itself after a loss; while it is
disconnected a send waits for it up to ``timeout`` instead of buffering the message, then fails.
Errors and log lines name the servers as ``host:port``, never the credentials of the URL, and
never quote the payload.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from service.destination_config import NatsDestination
from service.normalize import RECORD_EVENTS
from workers.sinks.base import DEFAULT_MAX_CONNECTIONS, Outgoing, SinkError, one_line
from workers.sinks.loop_thread import LoopThread

log = structlog.get_logger(__name__)

# Seconds between reconnect attempts: short, so that a send waiting for the connection sees it back soon.
RECONNECT_WAIT = 0.5
# JetStream's error code for a message larger than the stream's max_msg_size.
JS_MESSAGE_TOO_LARGE = 10054
# ``{entity_type}`` in the subject, as ``check`` fills it in: Capture's default entity type.
CHECKED_ENTITY_TYPE = "user"
_CONNECTION_ERRORS = (
    nats.errors.ConnectionClosedError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    OSError,
)
_AUTH_ERRORS = (nats.errors.AuthorizationError, nats.errors.InvalidUserCredentialsError)


class NatsSink:
    """Publishes deliveries to one ``nats`` destination; safe to share between threads."""

    def __init__(self, name: str, config: NatsDestination, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        """Prepare the sink; nothing connects until the first send."""
        self.name = name
        self._config = config
        self._servers = [server.strip() for server in config.url.reveal().split(",") if server.strip()]
        # The servers as logs and errors may show them.
        self.target = ",".join(_host_port(server) for server in self._servers)
        self._secrets = _url_secrets(self._servers)
        self._loop = LoopThread(f"nats-sink-{name}", self.target)
        # Used on the loop only, so they need no lock.
        self._client: Client | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._last_logged_error = ""
        # Resolved when the connection drops, then replaced: wakes the publishes waiting on it. One
        # future shared by every publish of a connection, rather than a waiting task per publish.
        self._lost: asyncio.Future[None] | None = None

    def send(self, outgoing: Outgoing) -> None:
        """Publish ``outgoing.payload`` once; return when a stream has acknowledged it.

        Raises:
            SinkError: not acknowledged, see the module's table.
        """
        subject = self._subject(outgoing.event_type, outgoing.payload.get("entity_type"))
        headers = {
            "Nats-Msg-Id": outgoing.delivery_id,
            "Capture-Event-Type": outgoing.event_type,
            "Capture-Uuid": outgoing.uuid,
        }
        self._loop.run(self._publish(subject, orjson.dumps(outgoing.payload), headers), self._config.timeout)

    def check(self) -> str:
        """Connect and find the stream behind the subject of each event type, writing nothing.

        Raises:
            SinkError: the servers cannot be reached, or no stream listens on one of the subjects.
        """
        return self._loop.run(self._check(), self._config.timeout)

    def close(self) -> None:
        """Close the connection and stop the loop thread; later calls do nothing."""
        try:
            self._loop.close(self._shut_down, self._config.timeout)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            # The worker is stopping: what is left of the connection went with the loop.
            log.warning("nats.close_failed", destination=self.name, host=self.target, detail=self._describe(exc))

    def _subject(self, event_type: str, entity_type: object) -> str:
        return self._config.subject.format(event_type=event_type, entity_type=entity_type or "", destination=self.name)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        deadline = asyncio.get_running_loop().time() + self._config.timeout
        jetstream = await self._jetstream(deadline)
        remaining = deadline - asyncio.get_running_loop().time()
        # The client does not fail a request whose connection was lost, it lets it time out:
        # the publish races the next disconnection, so that a cut fails the send at once.
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        lost = self._lost
        # A duplicate (the id was seen within the stream's window) is acknowledged too: stored once.
        publishing = asyncio.ensure_future(jetstream.publish(subject, body, timeout=max(remaining, 0), headers=headers))
        try:
            waiting: set[asyncio.Future[Any]] = {publishing, lost}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not publishing.done():
                raise SinkError(
                    reason="connection",
                    retryable=True,
                    detail=f"connection lost before the acknowledgement for {subject} ({self.target})",
                )
            publishing.result()
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise self._error(exc, subject) from exc
        finally:
            publishing.cancel()

    async def _check(self) -> str:
        deadline = asyncio.get_running_loop().time() + self._config.timeout
        jetstream = await self._jetstream(deadline)
        found: list[str] = []
        for event_type in sorted(RECORD_EVENTS):
            subject = self._subject(event_type, CHECKED_ENTITY_TYPE)
            try:
                stream = await jetstream.find_stream_name_by_subject(subject)
            except nats.js.errors.NotFoundError:
                raise SinkError(
                    reason="not_found", retryable=True, detail=f"no JetStream stream listens on {subject}"
                ) from None
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                raise self._error(exc, subject) from exc
            found.append(f"{subject} -> stream {stream}")
        return f"{self.target}: " + ", ".join(found)

    async def _jetstream(self, deadline: float) -> JetStreamContext:
        """The connection's JetStream context, once connected; waits for (re)connecting until ``deadline``."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.is_closed:
            # The first send, or a client that gave up: a new one, connecting (and retrying) in the
            # background, so that a send that times out leaves the next send closer to connected.
            client = self._client = Client()
            self._connecting = loop.create_task(client.connect(**self._connect_options()))
        connecting = self._connecting
        assert connecting is not None
        if connecting.done() and not connecting.cancelled() and connecting.exception() is None and client.is_connected:
            # Connected: no task to wait on (the common case, on every send).
            return client.jetstream(timeout=self._config.timeout)
        try:
            # Shielded: a send that gives up leaves the connecting (and retrying) to go on.
            await asyncio.wait_for(asyncio.shield(connecting), max(deadline - loop.time(), 0))
        except TimeoutError:
            raise self._not_connected(client, "connect") from None
        except (nats.errors.Error, OSError, ValueError) as exc:
            # Raised only by what the client cannot retry (a malformed URL, say): start over next time.
            self._client = None
            raise SinkError(
                reason="connect", retryable=True, detail=f"cannot connect ({self.target}; {type(exc).__name__})"
            ) from exc
        while not client.is_connected:
            if client.is_closed:
                self._client = None
                raise self._not_connected(client, "connection")
            if loop.time() >= deadline:
                raise self._not_connected(client, "connection")
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))
        return client.jetstream(timeout=self._config.timeout)

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "servers": self._servers,
            "name": f"capture-relay {self.name}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": RECONNECT_WAIT,
            "connect_timeout": self._config.timeout,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if self._config.credentials_file:
            options["user_credentials"] = self._config.credentials_file
        return options

    def _not_connected(self, client: Client, reason: str) -> SinkError:
        last = client.last_error
        if last is not None and _is_auth_error(last):
            reason = "auth"
        cause = f"; last error: {self._describe(last)}" if last is not None else ""
        return SinkError(
            reason=reason,
            retryable=True,
            detail=f"not connected to NATS within {self._config.timeout:g}s ({self.target}{cause})",
        )

    def _error(self, exc: BaseException, subject: str) -> SinkError:
        """What a failed publish (or stream lookup) means; see the module's table."""
        if isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError):
            return SinkError(reason="not_found", retryable=True, detail=f"no JetStream stream listens on {subject}")
        if isinstance(exc, nats.js.errors.APIError):
            description = one_line(exc.description or "")
            what = f"the stream refused the message: {description} (code {exc.code}, err_code {exc.err_code})"
            if exc.err_code == JS_MESSAGE_TOO_LARGE or "size exceeds maximum" in description:
                return SinkError(reason="too_large", retryable=False, detail=f"{what} on {subject}")
            return SinkError(reason="nack", retryable=True, detail=f"{what} on {subject}")
        if isinstance(exc, nats.errors.MaxPayloadError):
            return SinkError(
                reason="too_large", retryable=False, detail=f"larger than the server's max_payload ({self.target})"
            )
        if isinstance(exc, nats.errors.BadSubjectError):
            return SinkError(reason="subject", retryable=False, detail=f"not a valid NATS subject: {subject!r}")
        if isinstance(exc, TimeoutError):
            detail = f"no acknowledgement within {self._config.timeout:g}s for {subject} ({self.target})"
            return SinkError(reason="timeout", retryable=True, detail=detail)
        if _is_auth_error(exc):
            return SinkError(reason="auth", retryable=True, detail=f"refused: {self._describe(exc)} ({self.target})")
        reason = "connection" if isinstance(exc, _CONNECTION_ERRORS) else "protocol"
        return SinkError(reason=reason, retryable=True, detail=f"{self._describe(exc)} ({self.target})")

    def _describe(self, exc: BaseException) -> str:
        message = one_line(str(exc), self._secrets, mask="[redacted]")
        return f"{type(exc).__name__}: {message}" if message else type(exc).__name__

    async def _on_error(self, exc: Exception) -> None:
        # Called on every failed attempt while the servers are away: logged when the kind of error changes.
        if type(exc).__name__ != self._last_logged_error:
            self._last_logged_error = type(exc).__name__
            log.warning("nats.connection_error", destination=self.name, host=self.target, detail=self._describe(exc))

    async def _on_disconnected(self) -> None:
        lost, self._lost = self._lost, None
        if lost is not None and not lost.done():
            lost.set_result(None)
        if self._client is not None:  # None: the sink is closing it
            log.warning("nats.disconnected", destination=self.name, host=self.target)

    async def _on_reconnected(self) -> None:
        self._last_logged_error = ""
        log.info("nats.reconnected", destination=self.name, host=self.target)

    async def _shut_down(self) -> None:
        client, connecting = self._client, self._connecting
        self._client = self._connecting = None
        if connecting is not None and not connecting.done():
            connecting.cancel()
        elif connecting is not None and not connecting.cancelled():
            connecting.exception()  # seen, so that asyncio does not report it as never retrieved
        # Not drain(): every send has had its answer, and a drain waits for a server that may be gone.
        # Whatever the client leaves running, the loop thread cancels after this.
        if client is not None and not client.is_closed:
            await asyncio.wait_for(client.close(), self._config.timeout)


def _is_auth_error(exc: BaseException) -> bool:
    # While connecting, the client reports the server's "-ERR 'Authorization Violation'" as a plain Error.
    return isinstance(exc, _AUTH_ERRORS) or "authorization violation" in str(exc).lower()


def _host_port(server: str) -> str:
    parts = urlsplit(server if "://" in server else f"nats://{server}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"{host}:{parts.port}" if parts.port is not None else host


def _url_secrets(servers: list[str]) -> frozenset[str]:
    """The URLs themselves and their user info: what an error must never repeat."""
    found: set[str] = set()
    for server in servers:
        parts = urlsplit(server)
        found.update(value for value in (server, parts.username, parts.password) if value)
    return frozenset(value for value in found if len(value) >= 3)
