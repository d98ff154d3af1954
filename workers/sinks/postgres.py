"""The ``postgres`` destination: a mirror table with one row per profile, never moved back in time.

Each delivery is one autocommitted statement (see ``postgres_schema``): creates and updates are
upserts that the database itself ignores when the row is newer, a tombstone, or already this
delivery's; a deletion leaves a tombstone (``deletes: soft``: record cleared, ``deleted_at`` set)
or removes the row (``deletes: hard``). ``test`` events write nothing. An ignored write is a
success: the mirror already holds what the delivery would bring, or something newer.

Connections come from a ``psycopg_pool`` pool of up to ``max_connections``, opened on the first
send, so that a database that is down when the worker starts fails deliveries, not the worker.
A connection is checked (an empty query) before use when it has been idle for a second or more,
or has received something while idle (a server that went away: EOF or a reset), so connections a
restart left dead are dropped rather than failing deliveries. What a failure means:

    no connection in time         SinkError(connect | auth | not_found | timeout, retryable):
                                  the last connection error decides, else all were busy
    connection lost, 08xxx, 57P0x SinkError(connection, retryable)
    statement timeout (57014)     SinkError(timeout, retryable)
    no table / column / schema    SinkError(not_found, retryable): run ``capture-relay sinks init``
                                  (which creates the table, not its schema)
    wrong column type, no unique  SinkError(schema, retryable): see ``capture-relay sinks check``
    permission denied (42501)     SinkError(permission, retryable)
    28xxx                         SinkError(auth, retryable)
    22xxx, 23xxx, 54xxx           SinkError(data, not retryable): this record cannot be stored
    anything else                 SinkError(database, retryable)

Missing objects, privileges and credentials are an operator's to fix: retrying holds the
deliveries (the breaker opens) rather than dead-lettering every one. Errors name the database as
``host:port/dbname`` and the SQLSTATE; they never show the DSN's password, and for data errors
not even PostgreSQL's message, which may quote the value it refused.

A send never waits on the database past its time: besides the server's ``statement_timeout``,
a watchdog shuts the connection's socket down when the pre-use check or the statement has not
returned within ``timeout`` (a stalled server, or a proxy in front of a dead primary, keeps the
TCP connection alive but never answers). The send then fails as ``connection`` and the pool
drops that connection.

Limits: one send takes at most about three times ``timeout`` and a second (waiting for a
connection, its check, then the statement). ``statement_timeout`` is set as a startup option,
which PgBouncer refuses unless it is in ``ignore_startup_parameters``. Connection errors are told
apart by libpq's English messages.
With ``deletes: hard`` no tombstone stops a late update from re-creating the row; the delivery
engine's stale guard does, for as long as it remembers the deletion.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import threading
import time
import weakref
from typing import Any, Self

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from service.destination_config import PostgresDestination
from service.normalize import RECORD_EVENTS
from workers.sinks.base import DEFAULT_MAX_CONNECTIONS, DestinationConfigError, Outgoing, SinkError, one_line
from workers.sinks.postgres_schema import (
    COLUMNS,
    FIND_TABLE,
    MISSING_PRIVILEGES,
    TABLE_COLUMNS,
    UUID_IS_UNIQUE,
    MirrorWrites,
    create_sql,
)
from workers.sinks.watchdog import Watchdog

INIT_HINT = "run `capture-relay sinks init`"
CHECK_HINT = "`capture-relay sinks check` names what differs"
# How long past its statement_timeout a statement may go unanswered before its socket is cut.
WATCHDOG_GRACE = 1.0
# A pooled connection idle longer than this is checked (an empty query) before its next use.
CHECK_AFTER_IDLE = 1.0
# SQLSTATE classes whose messages name objects, never values: safe to quote.
_QUOTABLE_CLASSES = frozenset({"08", "28", "3D", "3F", "40", "42", "53", "55", "57", "58"})
_DATA_CLASSES = frozenset({"22", "23", "54"})
_NOT_FOUND = frozenset({"42P01", "42703"})
_SCHEMA = frozenset({"42804", "42P10"})
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03"})


class PostgresSink:
    """Writes deliveries into one ``postgres`` destination's mirror table; safe to share between threads."""

    def __init__(
        self, name: str, config: PostgresDestination, *, max_connections: int = DEFAULT_MAX_CONNECTIONS
    ) -> None:
        """Prepare the pool; nothing connects before the first send.

        Raises:
            DestinationConfigError: ``dsn`` is not a connection string libpq can read (the value is not repeated).
        """
        self.name = name
        self._config = config
        try:
            params = conninfo_to_dict(config.dsn.reveal())
        except psycopg.ProgrammingError:
            # libpq's message quotes the part it could not read, which may be the password.
            raise DestinationConfigError(
                f"destinations.{name}.dsn: not a PostgreSQL URI or key=value connection string"
            ) from None
        # The database as errors show it: no user, no password.
        self.target = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname') or ''}"
        self._secrets = frozenset(value for value in (config.dsn.reveal(), str(params.get("password") or "")) if value)
        self._kwargs = _connect_kwargs(name, config.timeout, str(params.get("options") or ""))
        self._writes = MirrorWrites.for_table(config.table)
        self._failures = _ConnectFailures()
        self._pool = ConnectionPool(
            config.dsn.reveal(),
            connection_class=_recording_connection(self._failures),
            kwargs=self._kwargs,
            min_size=0,
            max_size=max_connections,
            open=False,
            check=self._check_connection,
            name=f"capture-relay-{name}",
            timeout=config.timeout,
            # Retry a failed connect in the background only this long; the next send starts over,
            # so a database that is back is used at once rather than after a long backoff.
            reconnect_timeout=config.timeout,
        )
        self._lock = threading.Lock()
        self._state = "new"
        self._watchdog = Watchdog(f"capture-relay-{name}-watchdog")
        # When each pooled connection last completed a write, and those a deadline cut.
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection[TupleRow], float] = weakref.WeakKeyDictionary()
        self._cut: weakref.WeakSet[psycopg.Connection[TupleRow]] = weakref.WeakSet()

    def send(self, outgoing: Outgoing) -> None:
        """Write ``outgoing`` into the mirror; return when committed, or when it was stale.

        Raises:
            SinkError: the database could not be reached or refused the statement.
        """
        write = self._write_for(outgoing)
        if write is None:
            return
        statement, params = write
        try:
            with (
                self._connections().connection(timeout=self._config.timeout) as connection,
                # A moment past statement_timeout: a server that answers says "timeout" itself.
                self._deadline(connection, self._config.timeout + WATCHDOG_GRACE),
            ):
                connection.execute(statement, params)
                self._last_used[connection] = time.monotonic()
        except orjson.JSONEncodeError:
            detail = "the record cannot be written as JSON (an integer beyond 64 bits?)"
            raise SinkError(reason="data", retryable=False, detail=detail) from None
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def check(self) -> str:
        """Connect and verify the table: its columns and types, the unique uuid, the privileges; writes nothing.

        Raises:
            SinkError: what is missing or different, or why the database could not be asked.
        """
        with self._connect() as connection, self._deadline(connection, self._config.timeout):
            try:
                return self._verify(connection)
            except psycopg.Error as exc:
                raise self._error(exc) from exc

    def create_table(self) -> bool:
        """Create the table and its index unless they exist, in one transaction; whether the table was new.

        Raises:
            SinkError: the database could not be reached or refused (a missing schema, no privilege).
        """
        with self._connect() as connection, self._deadline(connection, self._config.timeout):
            try:
                with connection.transaction():
                    existed = connection.execute(FIND_TABLE, [self._config.table]).fetchone() is not None
                    connection.execute(create_sql(self._config.table))
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        return not existed

    def close(self) -> None:
        """Close the pool and its connections; later sends fail as retryable."""
        with self._lock:
            opened, self._state = self._state == "open", "closed"
        if opened:
            self._pool.close()
        self._watchdog.close()

    def _error(self, exc: psycopg.Error) -> SinkError:
        """``exc`` as the engine needs it: a reason, whether to retry, one line without secrets or values."""
        if isinstance(exc, PoolTimeout):
            return self._no_connection()
        state = exc.sqlstate or ""
        reason, retryable, what = _classify(exc, state, self._config)
        detail = f"{what} ({self.target}; {one_line(_cause(exc), self._secrets)})"
        return SinkError(reason=reason, retryable=retryable, detail=detail)

    def _check_connection(self, connection: psycopg.Connection[TupleRow]) -> None:
        # The pool's own check (an empty query), bounded: a connection that does not answer is
        # dropped. One that wrote a moment ago and has received nothing since (a server that went
        # away leaves its socket readable: EOF or a reset) works: checking it too would add a round
        # trip to every send.
        recently = time.monotonic() - self._last_used.get(connection, -CHECK_AFTER_IDLE) < CHECK_AFTER_IDLE
        if recently and connection not in self._cut and not _has_input(connection):
            return
        with self._deadline(connection, self._config.timeout):
            ConnectionPool.check_connection(connection)

    def _deadline(
        self, connection: psycopg.Connection[TupleRow], seconds: float
    ) -> contextlib.AbstractContextManager[None]:
        """Shut ``connection``'s socket down if the block has not finished within ``seconds``.

        libpq waits for an answer as long as the peer keeps the TCP connection alive; the server's
        statement_timeout and TCP's timeouts do not help when the peer itself hangs. Shutting the
        socket down (on a duplicate of its descriptor, which libpq keeps owning) makes libpq's wait
        end at once with a connection error; the pool then discards the connection.
        """
        if connection.closed:
            return contextlib.nullcontext()
        descriptor = connection.pgconn.socket

        def cut() -> None:
            # Checked before its next use, in case the cut came just as the block ended.
            self._cut.add(connection)
            with contextlib.suppress(OSError), socket.socket(fileno=os.dup(descriptor)) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)

        return self._watchdog.guard(seconds, cut)

    def _write_for(self, outgoing: Outgoing) -> tuple[sql.Composed, dict[str, Any]] | None:
        if outgoing.event_type not in RECORD_EVENTS or not outgoing.uuid:
            return None
        record = outgoing.payload.get("record")
        params: dict[str, Any] = {
            "uuid": outgoing.uuid,
            "entity_type": outgoing.payload.get("entity_type"),
            "delivery_id": outgoing.delivery_id,
        }
        # A record that is gone (Capture's 310 on fetching it) is a deletion, whatever the event said;
        # a deletion's version (above every real one) is no timestamp and is never stored.
        if outgoing.event_type == "entityDeleted" or record is None:
            if self._config.deletes == "hard":
                return self._writes.delete, {"uuid": outgoing.uuid}
            return self._writes.tombstone, params
        params.update(record=Jsonb(record, dumps=orjson.dumps), version=outgoing.version)
        return self._writes.upsert, params

    def _connections(self) -> ConnectionPool[psycopg.Connection[TupleRow]]:
        with self._lock:
            if self._state == "closed":
                raise SinkError(reason="connection", retryable=True, detail=f"the sink is closed ({self.target})")
            if self._state == "new":
                self._pool.open(wait=False)
                self._state = "open"
        return self._pool

    def _connect(self) -> psycopg.Connection[TupleRow]:
        """One connection outside the pool, with the sink's timeouts: for ``check`` and ``create_table``."""
        try:
            return psycopg.connect(self._config.dsn.reveal(), **self._kwargs)
        except psycopg.OperationalError as exc:
            raise self._connect_error(exc) from exc

    def _no_connection(self) -> SinkError:
        failure = self._failures.last
        if failure is None:
            busy = f"all {self._pool.max_size} busy"
            detail = f"no free connection within {self._config.timeout:g}s, {busy} ({self.target})"
            return SinkError(reason="timeout", retryable=True, detail=detail)
        return self._connect_error(failure)

    def _connect_error(self, exc: psycopg.OperationalError) -> SinkError:
        message = one_line(str(exc), self._secrets)
        detail = f"cannot connect within {self._config.timeout:g}s ({self.target}; {message})"
        return SinkError(reason=_connect_reason(message), retryable=True, detail=detail)

    def _verify(self, connection: psycopg.Connection[TupleRow]) -> str:
        table = self._config.table
        found = connection.execute(FIND_TABLE, [table]).fetchone()
        if found is None:
            raise SinkError(reason="not_found", retryable=True, detail=f"table {table} does not exist; {INIT_HINT}")
        oid, schema, relation = found
        shown = f"{schema}.{relation}"
        columns: dict[str, str] = {row[0]: row[1] for row in connection.execute(TABLE_COLUMNS, [oid]).fetchall()}
        for column, expected in COLUMNS.items():
            actual = columns.get(column)
            if actual != expected:
                problem = "is missing" if actual is None else f"is {actual}, expected {expected}"
                detail = f"table {shown}: column {column} {problem}; `capture-relay sinks init --print` shows the table"
                raise SinkError(reason="schema", retryable=True, detail=detail)
        unique = connection.execute(UUID_IS_UNIQUE, [oid]).fetchone()
        if unique is None or not unique[0]:
            detail = f"table {shown}: uuid is not unique (no primary key or unique index on it alone)"
            raise SinkError(reason="schema", retryable=True, detail=detail)
        wanted = ["SELECT", "INSERT", "UPDATE"] + (["DELETE"] if self._config.deletes == "hard" else [])
        missing = [row[0] for row in connection.execute(MISSING_PRIVILEGES, [wanted, oid]).fetchall()]
        if missing:
            detail = f"table {shown}: this role lacks {', '.join(missing)}"
            raise SinkError(reason="permission", retryable=True, detail=detail)
        return f"table {shown}: mirror columns present ({self.target})"


def _has_input(connection: psycopg.Connection[TupleRow]) -> bool:
    """Whether the idle connection's socket has something to read (EOF, a reset, a notice), at once."""
    poller = select.poll()
    poller.register(connection.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


class _ConnectFailures:
    """The last error of the pool's connection attempts, which run in its own threads."""

    def __init__(self) -> None:
        self.last: psycopg.OperationalError | None = None


def _recording_connection(failures: _ConnectFailures) -> type[psycopg.Connection[TupleRow]]:
    # The pool connects in its background threads and, when that fails, tells the waiting send
    # only that no connection came in time; this class keeps the reason for the error.
    class RecordingConnection(psycopg.Connection[TupleRow]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            try:
                connection = super().connect(conninfo, **kwargs)
            except psycopg.OperationalError as exc:
                failures.last = exc
                raise
            failures.last = None
            return connection

    return RecordingConnection


def _connect_kwargs(name: str, timeout: float, options: str) -> dict[str, Any]:
    milliseconds = max(1, math.ceil(timeout * 1000))
    return {
        "autocommit": True,
        # libpq counts whole seconds and treats less than 2 as 2.
        "connect_timeout": max(2, math.ceil(timeout)),
        # The server cancels a statement that runs (or waits for a lock) longer than a send may take.
        "options": f"{options} -c statement_timeout={milliseconds}".strip(),
        # Unacknowledged data for longer than that closes the connection (Linux), as does a peer
        # that stops answering keepalives: a send never waits on a dead network for hours.
        "tcp_user_timeout": milliseconds,
        "keepalives_idle": max(1, math.ceil(timeout)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "application_name": f"capture-relay {name}"[:63],
    }


def _classify(exc: psycopg.Error, state: str, config: PostgresDestination) -> tuple[str, bool, str]:
    """``(reason, retryable, what happened)`` for an error the database (or the connection) raised."""
    table = config.table
    if state == "57014":
        return "timeout", True, f"the statement took longer than {config.timeout:g}s"
    lost = not state and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    if lost or state[:2] == "08" or state in _CONNECTION_STATES:
        return "connection", True, "the connection failed"
    if state in _NOT_FOUND:
        return "not_found", True, f"table {table} is missing or lacks a column; {INIT_HINT}"
    if state == "3F000":
        # sinks init creates the table, never a schema: who owns schemas is the DBA's decision.
        return "not_found", True, f"the schema of table {table} does not exist"
    if state in _SCHEMA:
        return "schema", True, f"table {table} is not shaped as the mirror needs; {CHECK_HINT}"
    if state == "42501":
        return "permission", True, f"this role may not write table {table}"
    if state[:2] == "28":
        return "auth", True, "the database refused the credentials"
    if state[:2] in _DATA_CLASSES:
        return "data", False, "the database refused this record (values not shown)"
    return "database", True, "the database refused the statement"


def _cause(exc: psycopg.Error) -> str:
    """The exception's class and SQLSTATE, with PostgreSQL's first message line where it names no value."""
    name = type(exc).__name__
    state = exc.sqlstate
    if state is None:
        # A libpq error (connection lost, refused): no values, only its first line is kept.
        message = one_line(str(exc).splitlines()[0] if str(exc) else "")
        return f"{name}: {message}" if message else name
    # DETAIL, CONTEXT and the query's LINE may all quote values; the primary message only sometimes.
    primary = exc.diag.message_primary if state[:2] in _QUOTABLE_CLASSES else None
    return f"{name} {state}: {one_line(primary)}" if primary else f"{name} {state}"


def _connect_reason(message: str) -> str:
    lowered = message.lower()
    if "authentication" in lowered or "pg_hba.conf" in lowered or ("role" in lowered and "does not exist" in lowered):
        return "auth"
    if "database" in lowered and "does not exist" in lowered:
        return "not_found"
    return "connect"
