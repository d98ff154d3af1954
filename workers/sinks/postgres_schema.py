"""The SQL of the ``postgres`` mirror: its table, the three writes, and what ``check`` looks for.

One row per profile ``uuid``. The table is created only on request (``capture-relay sinks init``,
or ``sinks init --print`` for whoever runs migrations), never by a worker: a worker that could
create tables would need more privileges than writing rows, and a typo in ``table:`` would
quietly start a second mirror.

Each write is one statement that decides by itself whether it applies, so that deliveries may
arrive in any order and any number of times, from any number of workers:

    upsert     applies unless the row is a tombstone, unless it holds a newer ``last_updated``,
               unless it has a known ``last_updated`` and the delivery does not, and unless it
               was written by this very delivery (a retry changes nothing, not even ``updated_at``)
    tombstone  clears ``record`` and sets ``deleted_at``; a row already deleted stays as it was
    delete     removes the row (``deletes: hard``)

A write that does not apply is not an error: the mirror already holds something at least as new.
Names are composed with ``sql.Identifier`` only (the config's pattern admits plain lower-case
identifiers as well), and every value is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from psycopg import sql

# Each column and its type as format_type() names it; the writes need all of them.
COLUMNS = MappingProxyType(
    {
        "uuid": "text",
        "entity_type": "text",
        "record": "jsonb",
        "last_updated": "timestamp with time zone",
        "deleted_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "delivery_id": "text",
    }
)
_INDEX_SUFFIX = "_updated_at_idx"
_MAX_IDENTIFIER = 63


def table_identifier(table: str) -> sql.Identifier:
    """``table`` (``name`` or ``schema.name``) as an identifier, each part quoted on its own."""
    return sql.Identifier(*table.split("."))


def create_sql(table: str) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS`` for the mirror ``table``, and its index on ``updated_at``.

    Two statements without parameters: they run in one ``execute`` and one transaction.
    """
    relation = table.rpartition(".")[2]
    # PostgreSQL would cut a longer name itself, with a notice; cut it here, so --print shows the real one.
    index = relation[: _MAX_IDENTIFIER - len(_INDEX_SUFFIX)] + _INDEX_SUFFIX
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} (\n"
        "    uuid text PRIMARY KEY,\n"
        "    entity_type text,\n"
        "    record jsonb,\n"
        "    last_updated timestamptz,\n"
        "    deleted_at timestamptz,\n"
        "    updated_at timestamptz NOT NULL DEFAULT now(),\n"
        "    delivery_id text NOT NULL\n"
        ");\n"
        "CREATE INDEX IF NOT EXISTS {index} ON {table} (updated_at);"
    ).format(table=table_identifier(table), index=sql.Identifier(index))


def as_text(statement: sql.Composable) -> str:
    """``statement`` as plain SQL, quoted as PostgreSQL reads it, without connecting anywhere."""
    return statement.as_string(None)


@dataclass(frozen=True, slots=True)
class MirrorWrites:
    """The statements that write one delivery into the mirror table, composed once per sink."""

    upsert: sql.Composed
    tombstone: sql.Composed
    delete: sql.Composed

    @classmethod
    def for_table(cls, table: str) -> MirrorWrites:
        """The writes for ``table``; parameters are named ``uuid``, ``entity_type``, ``record``,
        ``version`` (epoch seconds or None) and ``delivery_id``."""
        target = table_identifier(table)
        upsert = sql.SQL(
            "INSERT INTO {table} AS mirror"
            " (uuid, entity_type, record, last_updated, deleted_at, updated_at, delivery_id)"
            " VALUES (%(uuid)s, %(entity_type)s, %(record)s, to_timestamp(%(version)s::double precision),"
            " NULL, now(), %(delivery_id)s)"
            " ON CONFLICT (uuid) DO UPDATE SET entity_type = EXCLUDED.entity_type, record = EXCLUDED.record,"
            " last_updated = EXCLUDED.last_updated, updated_at = now(), delivery_id = EXCLUDED.delivery_id"
            " WHERE mirror.deleted_at IS NULL"
            " AND mirror.delivery_id <> EXCLUDED.delivery_id"
            " AND (mirror.last_updated IS NULL"
            " OR (EXCLUDED.last_updated IS NOT NULL AND mirror.last_updated <= EXCLUDED.last_updated))"
        ).format(table=target)
        # A tombstone keeps no personal data: the record goes, uuid and timestamps stay.
        tombstone = sql.SQL(
            "INSERT INTO {table} AS mirror"
            " (uuid, entity_type, record, last_updated, deleted_at, updated_at, delivery_id)"
            " VALUES (%(uuid)s, %(entity_type)s, NULL, NULL, now(), now(), %(delivery_id)s)"
            " ON CONFLICT (uuid) DO UPDATE SET record = NULL, deleted_at = now(), updated_at = now(),"
            " delivery_id = EXCLUDED.delivery_id"
            " WHERE mirror.deleted_at IS NULL"
        ).format(table=target)
        delete = sql.SQL("DELETE FROM {table} WHERE uuid = %(uuid)s").format(table=target)
        return cls(upsert=upsert, tombstone=tombstone, delete=delete)


# The table as the connection resolves ``table`` (search_path for an unqualified name), or no row.
FIND_TABLE = sql.SQL(
    "SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.oid = to_regclass(%s)"
)
# Each column's name and type.
TABLE_COLUMNS = sql.SQL(
    "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
    " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped"
)
# Whether a unique index on uuid alone exists: ON CONFLICT (uuid) needs one.
UUID_IS_UNIQUE = sql.SQL(
    "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
    " WHERE i.indrelid = %s AND i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL AND a.attname = 'uuid')"
)
# The privileges (of those asked for) the connecting role lacks on the table.
MISSING_PRIVILEGES = sql.SQL(
    "SELECT privilege FROM unnest(%s::text[]) AS privilege WHERE NOT has_table_privilege(%s::oid, privilege)"
)
