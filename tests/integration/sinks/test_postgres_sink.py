"""The postgres sink against the machine's PostgreSQL: the mirror's rows read back with psycopg,
writes in any order and any number of times, deletions, outages through a cuttable proxy, and
nothing private in the errors. Each test has its own table, dropped afterwards."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from capture_relay.embedded_redis import free_port
from service.destination_config import PostgresDestination
from tests.support.sinks import EMAIL, PROFILE_UUID, delivery, send_concurrently, send_failing
from tests.support.tcp_proxy import TcpProxy, running_proxy
from workers.sinks import open_sink
from workers.sinks.base import Outgoing, SinkError
from workers.sinks.postgres import CHECK_AFTER_IDLE, PostgresSink
from workers.sinks.postgres_schema import as_text, create_sql

UUID = PROFILE_UUID
V1, V2, V3 = 1_750_000_000.123456, 1_750_000_100.5, 1_750_000_200.0
DELETED_VERSION = 9e15

SinkFactory = Callable[..., PostgresSink]


@pytest.fixture
def table(postgres_dsn: str, unique_name: str) -> Iterator[str]:
    """A table name no one uses; dropped after the test, whoever created it."""
    yield unique_name
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(unique_name)))


@pytest.fixture
def make_sink(postgres_dsn: str, table: str) -> Iterator[SinkFactory]:
    """Open sinks on ``table`` (``dsn`` and destination keys may be overridden); closed after the test."""
    opened: list[PostgresSink] = []

    def make(*, dsn: str | None = None, max_connections: int = 4, **keys: Any) -> PostgresSink:
        values = {"type": "postgres", "dsn": dsn or postgres_dsn, "table": table, "timeout": "2s", **keys}
        sink = PostgresSink("mirror", PostgresDestination.model_validate(values), max_connections=max_connections)
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


@pytest.fixture
def sink(make_sink: SinkFactory) -> PostgresSink:
    """A soft-deleting sink whose table exists."""
    sink = make_sink()
    sink.create_table()
    return sink


def outgoing(event_type: str = "entityUpdated", version: float | None = V1, **overrides: Any) -> Outgoing:
    """A delivery of ``UUID`` whose record holds personal data (``record`` may be overridden)."""
    record = overrides.pop("record", {"email": EMAIL, "givenName": "Jane", "lastUpdated": str(version)})
    uuid = overrides.pop("uuid", UUID)
    payload = {"type": event_type, "uuid": uuid, "entity_type": "user", "record": record}
    fields = {"delivery_id": f"evt-{event_type}-{version}:mirror", "event_type": event_type, "version": version}
    return delivery(1, "mirror", payload=payload, uuid=uuid, **(fields | overrides))


def rows(dsn: str, table: str) -> dict[str, dict[str, Any]]:
    """Every row of the mirror, by uuid, with ``last_updated`` as epoch seconds."""
    query = sql.SQL(
        "SELECT uuid, entity_type, record, extract(epoch FROM last_updated)::float8 AS last_updated,"
        " deleted_at, updated_at, delivery_id FROM {}"
    ).format(sql.Identifier(table))
    with psycopg.connect(dsn) as connection, connection.cursor(row_factory=dict_row) as cursor:
        return {row["uuid"]: row for row in cursor.execute(query).fetchall()}


# -- the table ------------------------------------------------------------------------------


def test_create_table_makes_the_mirror_table_once(postgres_dsn: str, table: str, make_sink: SinkFactory) -> None:
    """The table has the mirror's columns, types and index; creating it again changes nothing."""
    sink = make_sink()

    assert sink.create_table() is True
    assert sink.create_table() is False

    with psycopg.connect(postgres_dsn) as connection:
        columns = connection.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = %s ORDER BY ordinal_position",
            [table],
        ).fetchall()
        indexes = connection.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [table]).fetchall()
    assert columns == [
        ("uuid", "text", "NO"),
        ("entity_type", "text", "YES"),
        ("record", "jsonb", "YES"),
        ("last_updated", "timestamp with time zone", "YES"),
        ("deleted_at", "timestamp with time zone", "YES"),
        ("updated_at", "timestamp with time zone", "NO"),
        ("delivery_id", "text", "NO"),
    ]
    assert any("(uuid)" in index and "UNIQUE" in index for (index,) in indexes)
    assert any("(updated_at)" in index for (index,) in indexes)


def test_the_create_sql_names_the_table_quoted() -> None:
    """The SQL for a schema-qualified table quotes each part; it is composed without a connection."""
    text = as_text(create_sql("mirror.capture_profiles"))

    assert 'CREATE TABLE IF NOT EXISTS "mirror"."capture_profiles" (' in text
    assert 'CREATE INDEX IF NOT EXISTS "capture_profiles_updated_at_idx" ON "mirror"."capture_profiles"' in text


# -- writes ---------------------------------------------------------------------------------


def test_a_create_is_stored_with_its_record_and_version(postgres_dsn: str, table: str, sink: PostgresSink) -> None:
    """The row holds the record as JSONB, lastUpdated to the microsecond, and the delivery id."""
    sink.send(outgoing("entityCreated", V1, delivery_id="evt-1:mirror"))

    row = rows(postgres_dsn, table)[UUID]
    assert row["record"] == {"email": EMAIL, "givenName": "Jane", "lastUpdated": str(V1)}
    assert row["last_updated"] == pytest.approx(V1, abs=1e-6)
    assert (row["entity_type"], row["delivery_id"], row["deleted_at"]) == ("user", "evt-1:mirror", None)
    assert isinstance(row["updated_at"], datetime)


@pytest.mark.parametrize("order", [pytest.param([V1, V2], id="older-first"), pytest.param([V2, V1], id="newer-first")])
def test_the_newest_version_wins_in_either_order(
    postgres_dsn: str, table: str, sink: PostgresSink, order: list[float]
) -> None:
    """A newer version replaces the row; an older one arriving later is ignored, and still succeeds."""
    for version in order:
        sink.send(outgoing("entityUpdated", version))

    row = rows(postgres_dsn, table)[UUID]
    assert row["last_updated"] == pytest.approx(V2, abs=1e-6)
    assert row["record"]["lastUpdated"] == str(V2)


def test_a_stale_write_leaves_the_row_untouched(postgres_dsn: str, table: str, sink: PostgresSink) -> None:
    """An older version changes nothing at all, not even updated_at."""
    sink.send(outgoing("entityUpdated", V2))
    before = rows(postgres_dsn, table)

    sink.send(outgoing("entityUpdated", V1))

    assert rows(postgres_dsn, table) == before


def test_the_same_delivery_twice_gives_one_unchanged_row(postgres_dsn: str, table: str, sink: PostgresSink) -> None:
    """A retried delivery (same delivery id) changes nothing, so updated_at does not move either."""
    sink.send(outgoing("entityUpdated", V1))
    before = rows(postgres_dsn, table)

    sink.send(outgoing("entityUpdated", V1))

    assert rows(postgres_dsn, table) == before
    assert len(before) == 1


def test_an_unknown_version_never_overwrites_a_known_one(postgres_dsn: str, table: str, sink: PostgresSink) -> None:
    """Without lastUpdated a write cannot be ordered: it fills a row without a version, no other."""
    sink.send(outgoing("entityUpdated", None, record={"email": "first@example.com"}))
    sink.send(outgoing("entityUpdated", V1))
    sink.send(outgoing("entityUpdated", None, record={"email": "late@example.com"}))

    row = rows(postgres_dsn, table)[UUID]
    assert row["last_updated"] == pytest.approx(V1, abs=1e-6)
    assert row["record"]["email"] == EMAIL


def test_a_soft_delete_leaves_a_tombstone_that_nothing_revives(
    postgres_dsn: str, table: str, sink: PostgresSink
) -> None:
    """The record goes, deleted_at is set; a later update, even newer, and a second deletion change nothing."""
    sink.send(outgoing("entityUpdated", V1))
    sink.send(outgoing("entityDeleted", DELETED_VERSION, record=None))
    tombstone = rows(postgres_dsn, table)

    sink.send(outgoing("entityUpdated", V3))
    sink.send(outgoing("entityDeleted", DELETED_VERSION, record=None, delivery_id="evt-again:mirror"))

    row = tombstone[UUID]
    assert row["record"] is None
    assert row["deleted_at"] is not None
    assert row["last_updated"] == pytest.approx(V1, abs=1e-6)  # never 9e15
    assert rows(postgres_dsn, table) == tombstone


def test_a_deletion_of_an_unknown_profile_leaves_a_tombstone(postgres_dsn: str, table: str, sink: PostgresSink) -> None:
    """A deletion that arrives first still blocks the create that was delivered late."""
    sink.send(outgoing("entityDeleted", DELETED_VERSION, record=None))
    sink.send(outgoing("entityCreated", V1))

    row = rows(postgres_dsn, table)[UUID]
    assert (row["record"], row["last_updated"]) == (None, None)
    assert row["deleted_at"] is not None


def test_a_hard_delete_removes_the_row(postgres_dsn: str, table: str, make_sink: SinkFactory) -> None:
    """``deletes: hard`` leaves nothing of the profile."""
    sink = make_sink(deletes="hard")
    sink.create_table()
    sink.send(outgoing("entityCreated", V1))
    sink.send(outgoing("entityCreated", V1, uuid="other"))

    sink.send(outgoing("entityDeleted", DELETED_VERSION, record=None))

    assert list(rows(postgres_dsn, table)) == ["other"]


@pytest.mark.parametrize("deletes", ["soft", "hard"])
def test_an_update_whose_record_is_gone_is_a_deletion(
    postgres_dsn: str, table: str, make_sink: SinkFactory, deletes: str
) -> None:
    """An entityUpdated without a record (Capture answered 310) deletes, as configured."""
    sink = make_sink(deletes=deletes)
    sink.create_table()
    sink.send(outgoing("entityCreated", V1))

    sink.send(outgoing("entityUpdated", None, record=None))

    mirror = rows(postgres_dsn, table)
    if deletes == "hard":
        assert mirror == {}
    else:
        assert mirror[UUID]["record"] is None
        assert mirror[UUID]["deleted_at"] is not None


@pytest.mark.parametrize(
    "delivery",
    [
        pytest.param(outgoing("test", None), id="test-event"),
        pytest.param(outgoing("entityUpdated", V1, uuid=""), id="no-uuid"),
    ],
)
def test_what_is_no_profile_writes_nothing(make_sink: SinkFactory, delivery: Outgoing) -> None:
    """A test event, or one without uuid, succeeds without a statement: here the table does not even exist."""
    sink = make_sink()

    sink.send(delivery)


def test_concurrent_sends_end_with_the_newest_versions(postgres_dsn: str, table: str, make_sink: SinkFactory) -> None:
    """Eight threads sending shuffled versions of the same and of different profiles leave the newest of each."""
    sink = make_sink(max_connections=8)
    sink.create_table()
    uuids = [f"uuid-{number}" for number in range(4)]
    deliveries = [outgoing("entityUpdated", V1 + step, uuid=uuid) for uuid in uuids for step in range(12)]
    random.Random(7).shuffle(deliveries)

    errors = send_concurrently(sink, deliveries, threads=8)

    assert errors == []
    mirror = rows(postgres_dsn, table)
    assert {uuid: row["last_updated"] for uuid, row in mirror.items()} == pytest.approx(
        dict.fromkeys(uuids, V1 + 11), abs=1e-6
    )


# -- failures -------------------------------------------------------------------------------


def test_a_missing_table_is_retryable_and_says_to_run_init(table: str, make_sink: SinkFactory) -> None:
    """Writing into a table nobody created holds the deliveries, and tells the operator what to run."""
    sink = make_sink()

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("not_found", True)
    assert "capture-relay sinks init" in error.detail
    assert table in error.detail


def test_a_record_the_database_refuses_is_not_retried_and_not_quoted(sink: PostgresSink) -> None:
    """A NUL character, which jsonb cannot hold, fails for good, and the error quotes no value."""
    secret_value = "jane\u0000doe-4915112345678"

    error = send_failing(sink, outgoing(record={"email": secret_value}))

    assert (error.reason, error.retryable) == ("data", False)
    assert "22P05" in error.detail
    text = f"{error} {error!r} {error.args}"
    for fragment in ("jane", "4915112345678", "\\u0000", EMAIL):
        assert fragment not in text


def test_a_record_that_is_no_json_is_not_retried(sink: PostgresSink) -> None:
    """An integer beyond 64 bits cannot be sent as JSON: it fails for good, naming no value."""
    error = send_failing(sink, outgoing(record={"account": 2**70}))

    assert (error.reason, error.retryable) == ("data", False)
    assert str(2**70) not in error.detail


def test_a_table_in_a_missing_schema_is_not_found(make_sink: SinkFactory) -> None:
    """``sinks init`` would not create a schema: the error names the missing schema, not init."""
    sink = make_sink(table="no_such_schema.profiles")

    with pytest.raises(SinkError) as caught:
        sink.create_table()

    assert (caught.value.reason, caught.value.retryable) == ("not_found", True)
    assert caught.value.detail.startswith("the schema of table no_such_schema.profiles does not exist")


def test_a_statement_that_waits_too_long_times_out(postgres_dsn: str, table: str, make_sink: SinkFactory) -> None:
    """A row locked by someone else makes the write wait; statement_timeout ends it as a retryable timeout."""
    sink = make_sink(timeout="1s")
    sink.create_table()
    sink.send(outgoing("entityCreated", V1))

    with psycopg.connect(postgres_dsn) as locker:
        locker.execute(sql.SQL("SELECT 1 FROM {} WHERE uuid = %s FOR UPDATE").format(sql.Identifier(table)), [UUID])
        error = send_failing(sink, outgoing("entityUpdated", V2))

    assert (error.reason, error.retryable) == ("timeout", True)
    assert "57014" in error.detail


def test_opening_against_a_dead_port_does_not_connect(make_sink: SinkFactory) -> None:
    """Construction connects to nothing; the first send fails as a retryable connect error."""
    port = free_port()
    sink = make_sink(dsn=f"postgresql://postgres:hunter2-secret@127.0.0.1:{port}/test")

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("connect", True)
    assert f"127.0.0.1:{port}/test" in error.detail
    assert "hunter2-secret" not in f"{error} {error!r}"


def test_a_refused_role_is_an_auth_error_without_the_password(postgres_dsn: str, make_sink: SinkFactory) -> None:
    """The server refusing the login is a retryable auth error; the DSN's password appears nowhere."""
    address = urlsplit(postgres_dsn)
    sink = make_sink(dsn=f"postgresql://no_such_role:hunter2-secret@{address.hostname}:{address.port}/test")

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("auth", True)
    assert "no_such_role" in error.detail
    assert "hunter2-secret" not in f"{error} {error!r}"


def test_a_password_in_the_dsn_never_reaches_an_error(postgres_dsn: str, make_sink: SinkFactory) -> None:
    """With a password in the DSN (trust auth ignores it), a failing statement's error still omits it."""
    address = urlsplit(postgres_dsn)
    sink = make_sink(dsn=f"postgresql://postgres:hunter2-secret@{address.hostname}:{address.port}/test")

    error = send_failing(sink, outgoing())

    assert error.reason == "not_found"
    assert "hunter2-secret" not in f"{error} {error!r}"


def test_a_dsn_libpq_cannot_read_fails_at_start_without_repeating_it(postgres_dsn: str, table: str) -> None:
    """A malformed DSN is refused when the sink opens; libpq's message, which quotes it, is not passed on."""
    config = PostgresDestination.model_validate(
        {"type": "postgres", "dsn": "postgresql://postgres:p%zzsecret@127.0.0.1/test", "table": table}
    )

    with pytest.raises(ValueError, match=r"destinations\.mirror\.dsn") as caught:
        PostgresSink("mirror", config)

    assert "zzsecret" not in str(caught.value)


@pytest.mark.timeout(30)
def test_a_cut_connection_fails_retryably_and_the_sink_reconnects(
    postgres_dsn: str, table: str, make_sink: SinkFactory
) -> None:
    """Through a proxy: sends succeed, the proxy cuts, the next send raises retryable; after restore
    the same sink writes again, and every row is there."""
    address = urlsplit(postgres_dsn)
    make_sink().create_table()
    with running_proxy(address.hostname or "127.0.0.1", address.port or 5432) as proxy:
        sink = make_sink(dsn=f"postgresql://postgres@{proxy.address}/test")
        for number in range(3):
            sink.send(outgoing("entityCreated", V1, uuid=f"before-{number}"))

        proxy.cut()
        failed = outgoing("entityCreated", V1, uuid="during")
        error = send_failing(sink, failed)
        proxy.restore()
        sink.send(failed)  # the engine's retry
        sink.send(outgoing("entityCreated", V1, uuid="after"))

    assert error.retryable is True
    assert error.reason in {"connect", "connection"}
    assert sorted(rows(postgres_dsn, table)) == ["after", "before-0", "before-1", "before-2", "during"]


@pytest.mark.timeout(30)
def test_a_database_that_stops_answering_fails_the_send_within_its_time(
    postgres_dsn: str, table: str, make_sink: SinkFactory
) -> None:
    """The proxy keeps the connection open but passes nothing (a hung server, a half-open
    connection): neither the pool's check nor the statement may wait past the timeout. After
    restore the same sink writes again, and nothing is lost."""
    address = urlsplit(postgres_dsn)
    make_sink().create_table()
    with running_proxy(address.hostname or "127.0.0.1", address.port or 5432) as proxy:
        sink = make_sink(dsn=f"postgresql://postgres@{proxy.address}/test", timeout="1s")
        sink.send(outgoing("entityCreated", V1, uuid="before"))

        proxy.freeze()
        failed = outgoing("entityCreated", V1, uuid="during")
        error = send_failing(sink, failed)
        proxy.restore()
        sink.send(failed)  # the engine's retry
        sink.close()

    assert error.retryable is True
    assert error.reason in {"connection", "timeout"}
    assert sorted(rows(postgres_dsn, table)) == ["before", "during"]


def test_every_idle_connection_a_cut_killed_is_replaced(postgres_dsn: str, table: str, make_sink: SinkFactory) -> None:
    """After an outage while idle, the pool's check drops dead connections: the first send succeeds.
    (A connection that wrote less than CHECK_AFTER_IDLE ago is not checked, unless its socket shows
    the server went away: so the outage here lasts longer than that.)"""
    address = urlsplit(postgres_dsn)
    make_sink().create_table()
    with running_proxy(address.hostname or "127.0.0.1", address.port or 5432) as proxy:
        sink = make_sink(dsn=f"postgresql://postgres@{proxy.address}/test", max_connections=2)
        _fill_pool(sink, proxy)
        proxy.cut()
        time.sleep(CHECK_AFTER_IDLE)
        proxy.restore()

        sink.send(outgoing("entityCreated", V1, uuid="after"))

    assert "after" in rows(postgres_dsn, table)


def _fill_pool(sink: PostgresSink, proxy: TcpProxy) -> None:
    """Two sends at once, so that the pool holds two connections (through ``proxy``)."""
    threads = [
        threading.Thread(target=sink.send, args=(outgoing("entityCreated", V1, uuid=f"fill-{number}"),))
        for number in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)


# -- check ----------------------------------------------------------------------------------


def test_check_reports_a_ready_table(sink: PostgresSink, table: str) -> None:
    """On a table made by create_table, check names it with its schema."""
    assert sink.check() == f"table public.{table}: mirror columns present (127.0.0.1:5432/test)"


def test_check_reports_a_missing_table(make_sink: SinkFactory, table: str) -> None:
    """Without the table, check fails as not_found and names the command that creates it."""
    with pytest.raises(SinkError) as caught:
        make_sink().check()

    assert caught.value.reason == "not_found"
    assert caught.value.detail == f"table {table} does not exist; run `capture-relay sinks init`"


@pytest.mark.parametrize(
    ("alteration", "problem"),
    [
        pytest.param("ALTER COLUMN record TYPE text", "column record is text, expected jsonb", id="wrong-type"),
        pytest.param("DROP COLUMN delivery_id", "column delivery_id is missing", id="missing"),
        pytest.param("DROP CONSTRAINT {pkey}", "uuid is not unique", id="no-primary-key"),
    ],
)
def test_check_reports_a_table_shaped_otherwise(
    postgres_dsn: str, table: str, sink: PostgresSink, alteration: str, problem: str
) -> None:
    """A column of another type, a missing column or no unique uuid fails the check, named."""
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        statement = sql.SQL("ALTER TABLE {table} " + alteration)
        connection.execute(statement.format(table=sql.Identifier(table), pkey=sql.Identifier(f"{table}_pkey")))

    with pytest.raises(SinkError) as caught:
        sink.check()

    assert caught.value.reason == "schema"
    assert problem in caught.value.detail


def test_check_writes_nothing(postgres_dsn: str, table: str, sink: PostgresSink) -> None:
    """Checking leaves the table as it was."""
    sink.send(outgoing("entityCreated", V1))
    before = rows(postgres_dsn, table)

    sink.check()

    assert rows(postgres_dsn, table) == before


# -- the sink's life ------------------------------------------------------------------------


def test_close_is_idempotent_and_later_sends_are_retryable(sink: PostgresSink) -> None:
    """After close, sending fails as retryable (the worker is stopping), and closing again is fine."""
    sink.send(outgoing("entityCreated", V1))

    sink.close()
    sink.close()

    assert send_failing(sink, outgoing()).retryable is True


def test_open_sink_opens_a_postgres_sink(postgres_dsn: str, table: str, sink: PostgresSink) -> None:
    """``type: postgres`` opens a PostgresSink that writes."""
    config = PostgresDestination.model_validate({"type": "postgres", "dsn": postgres_dsn, "table": table})

    opened = open_sink("mirror", config)
    try:
        opened.send(outgoing("entityCreated", V1))
    finally:
        opened.close()

    assert isinstance(opened, PostgresSink)
    assert UUID in rows(postgres_dsn, table)
