"""``capture-relay sinks init`` and ``sinks check`` through the command line, against the machine's
PostgreSQL; each test writes its own config naming its own table, dropped afterwards."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from capture_relay.cli import main
from capture_relay.embedded_redis import free_port
from tests.support.logging_state import logging_restored

# Loggers configure_logging changes besides the root; each is put back after every run.


@dataclass(frozen=True)
class Outcome:
    """What one run of the command left: its exit status and what it printed."""

    status: int
    out: str
    err: str


Run = Callable[..., Outcome]
WriteConfig = Callable[..., Path]


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    """The test database's DSN (checked once per session by the fixture it comes from)."""
    return postgres_dsn


@pytest.fixture
def table(dsn: str) -> Iterator[str]:
    """A table name no one uses; dropped after the test."""
    name = f"cr_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def write_config(tmp_path: Path, dsn: str, table: str) -> WriteConfig:
    """A config with the postgres destination ``mirror`` on ``table`` and the http destination ``hook``."""

    def writer(**mirror: Any) -> Path:
        path = tmp_path / "capture-relay.yaml"
        destinations = {
            "mirror": {"type": "postgres", "dsn": dsn, "table": table, "timeout": "2s", **mirror},
            "hook": {"type": "http", "url": "https://hooks.example.com/in"},
        }
        path.write_text(yaml.safe_dump({"destinations": destinations}, sort_keys=False), encoding="utf-8")
        return path

    return writer


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``capture-relay sinks ARGS --config PATH`` through the CLI entry point."""

    def runner(path: Path, *args: str) -> Outcome:
        capsys.readouterr()
        with logging_restored():
            status = main(["sinks", *args, "--config", str(path)], {})
        captured = capsys.readouterr()
        return Outcome(status, captured.out, captured.err)

    return runner


def columns(dsn: str, table: str) -> list[tuple[str, str]]:
    """The table's columns and their types, in order."""
    with psycopg.connect(dsn) as connection:
        return [
            (name, kind)
            for name, kind in connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = %s ORDER BY ordinal_position",
                [table],
            ).fetchall()
        ]


# -- init -----------------------------------------------------------------------------------


def test_init_creates_the_table_and_a_second_run_changes_nothing(
    run: Run, write_config: WriteConfig, dsn: str, table: str
) -> None:
    """One line per destination; the table appears with the mirror's columns; running again is fine."""
    config = write_config()

    first = run(config, "init")
    second = run(config, "init")

    assert first.status == second.status == 0
    assert first.out.splitlines() == [
        f"mirror: created table {table}",
        "hook: nothing to create for http (declares nothing)",
    ]
    assert second.out.splitlines()[0] == f"mirror: table {table} exists; index ensured"
    assert [name for name, _ in columns(dsn, table)] == [
        "uuid",
        "entity_type",
        "record",
        "last_updated",
        "deleted_at",
        "updated_at",
        "delivery_id",
    ]


def test_init_print_shows_the_sql_and_connects_nowhere(run: Run, write_config: WriteConfig, table: str) -> None:
    """With --print, the SQL names the table, and a DSN to a dead port does not matter."""
    config = write_config(dsn=f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/test")

    outcome = run(config, "init", "--print")

    assert outcome.status == 0
    assert f'CREATE TABLE IF NOT EXISTS "{table}" (' in outcome.out
    assert f'CREATE INDEX IF NOT EXISTS "{table}_updated_at_idx" ON "{table}" (updated_at);' in outcome.out
    assert "-- destination hook: nothing to create for http (declares nothing)" in outcome.out
    assert "hunter2" not in outcome.out


def test_init_of_an_unreachable_database_fails_without_the_password(
    run: Run, write_config: WriteConfig, table: str
) -> None:
    """A database that does not answer: a FAILED line without the password, exit 1."""
    port = free_port()
    config = write_config(dsn=f"postgresql://postgres:hunter2@127.0.0.1:{port}/test")

    outcome = run(config, "init", "--destination", "mirror")

    assert outcome.status == 1
    assert outcome.out.startswith(f"mirror: FAILED connect: cannot connect within 2s (127.0.0.1:{port}/test;")
    assert "hunter2" not in outcome.out + outcome.err


@pytest.mark.parametrize(
    ("names", "message"),
    [
        pytest.param(
            ["nowhere"], "no destination 'nowhere' in the configuration; configured: hook, mirror", id="unknown"
        ),
        pytest.param(["hook"], "hook is http; init creates tables for postgres destinations only", id="not-postgres"),
    ],
)
def test_init_refuses_a_destination_it_cannot_create(
    run: Run, write_config: WriteConfig, dsn: str, table: str, names: list[str], message: str
) -> None:
    """An unknown name, or one that is not postgres, is bad usage (exit 2), and nothing is created."""
    config = write_config()

    outcome = run(
        config, "init", "--destination", "mirror", *[arg for name in names for arg in ("--destination", name)]
    )

    assert outcome.status == 2
    assert message in outcome.err
    assert columns(dsn, table) == []


# -- check ----------------------------------------------------------------------------------


def test_check_reports_each_destination(run: Run, write_config: WriteConfig, table: str) -> None:
    """After init, postgres is ok and http is not checked: exit 0."""
    config = write_config()
    run(config, "init")

    outcome = run(config, "check")

    assert outcome.status == 0
    assert outcome.out.splitlines() == [
        f"mirror (postgres): ok: table public.{table}: mirror columns present (127.0.0.1:5432/test)",
        "hook (http): not checked: the http sink has no check",
    ]


def test_check_fails_on_a_missing_table(run: Run, write_config: WriteConfig, table: str) -> None:
    """Without the table, the line says FAILED with the fix, and the exit status is 1."""
    config = write_config()

    outcome = run(config, "check", "--destination", "mirror")

    assert outcome.status == 1
    assert outcome.out.splitlines() == [
        f"mirror (postgres): FAILED not_found: table {table} does not exist; run `capture-relay sinks init`"
    ]


def test_check_as_json(run: Run, write_config: WriteConfig, table: str) -> None:
    """--output json gives one object per destination, with status and reason."""
    config = write_config()

    outcome = run(config, "check", "--output", "json")

    assert outcome.status == 1
    assert json.loads(outcome.out) == [
        {
            "destination": "mirror",
            "type": "postgres",
            "status": "failed",
            "reason": "not_found",
            "detail": f"table {table} does not exist; run `capture-relay sinks init`",
        },
        {
            "destination": "hook",
            "type": "http",
            "status": "not_checked",
            "reason": None,
            "detail": "the http sink has no check",
        },
    ]


def test_check_of_a_section_the_sink_cannot_use_is_bad_config(run: Run, write_config: WriteConfig) -> None:
    """A DSN libpq cannot read is named by its key, not repeated, and exits 2."""
    config = write_config(dsn="postgresql://postgres:p%zzsecret@127.0.0.1/test")

    outcome = run(config, "check", "--destination", "mirror")

    assert outcome.status == 2
    assert "FAILED config: destinations.mirror.dsn" in outcome.out
    assert "zzsecret" not in outcome.out + outcome.err
