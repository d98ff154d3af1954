"""``capture-relay sinks``: create what the destinations need, and check that each one is usable.

::

    sinks init  [--config FILE] [--destination NAME ...] [--print]
    sinks check [--config FILE] [--destination NAME ...] [--output text|json]

``init`` creates the mirror table (and its index) of each ``postgres`` destination, in one
transaction each; running it again changes nothing. With ``--print`` it prints that SQL and
connects nowhere, for those who run migrations themselves. Workers never create tables, and
nothing is created for the other types: their exchanges, streams and topics are the operator's.

``check`` opens each destination's sink and lets it verify its target without writing (the table
and its columns, the exchange, the stream); a type without such a check is reported as not
checked. One line per destination either way.

Exit status: 0 ok, 1 a destination failed, 2 bad usage or configuration (a ``--destination``
that is not configured, ``init --destination`` naming one that is not ``postgres``, a section
the sink cannot use).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import orjson

from capture_relay.config_args import config_option, settings_from
from service.destination_config import Destination, PostgresDestination
from service.logs import configure_logging
from service.settings import ConfigError, Settings
from workers.sinks import SinkError, open_sink

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


@runtime_checkable
class Checkable(Protocol):
    """A sink that can verify its target; not every type can (``http`` would have to send)."""

    def check(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``sinks check`` found for one destination."""

    destination: str
    type: str
    # ok, failed, invalid (the sink could not be opened from its section), or not_checked.
    status: str
    detail: str
    reason: str | None = None

    @property
    def exit_status(self) -> int:
        return {"failed": EXIT_FAILURE, "invalid": EXIT_USAGE}.get(self.status, EXIT_OK)

    def line(self) -> str:
        """The verdict as one line of text."""
        head = f"{self.destination} ({self.type}):"
        if self.status == "ok":
            return f"{head} ok: {self.detail}"
        if self.status == "not_checked":
            return f"{head} not checked: {self.detail}"
        reason = self.reason or "config"
        return f"{head} FAILED {reason}: {self.detail}"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``sinks`` and its sub-commands on the top-level ``commands``."""
    sinks = commands.add_parser(
        "sinks",
        help="create the postgres mirror tables, and check that each destination is usable",
        description="Create what the destinations need (postgres tables only), and check each destination.",
        epilog="Exit status: 0 ok, 1 a destination failed, 2 bad usage or configuration.",
    )
    sub = sinks.add_subparsers(dest="sinks_command", metavar="SUBCOMMAND", required=True)

    init = sub.add_parser(
        "init",
        help="create the mirror table of each postgres destination (if it does not exist)",
        description="CREATE TABLE IF NOT EXISTS and its index, in one transaction per destination.",
    )
    config_option(init)
    _destination_option(init)
    init.add_argument(
        "--print", dest="print_sql", action="store_true", help="print the SQL instead of running it; connects nowhere"
    )
    init.set_defaults(run=_init)

    check = sub.add_parser(
        "check",
        help="verify each destination's target without writing anything",
        description="Connect to each destination and verify its target: the table and its columns, the "
        "exchange, the stream. Writes nothing.",
    )
    config_option(check)
    _destination_option(check)
    check.add_argument("--output", choices=("text", "json"), default="text", help="output format (default text)")
    check.set_defaults(run=_check)


def _destination_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--destination",
        action="append",
        metavar="NAME",
        help="only this destination (repeat for several); default: every configured one",
    )


def _init(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = settings_from(args, environ)
    selected = _selected(settings, args.destination)
    others = sorted(name for name in args.destination or [] if not isinstance(selected[name], PostgresDestination))
    if others:
        kinds = ", ".join(f"{name} is {selected[name].type}" for name in others)
        raise ConfigError([("--destination", f"{kinds}; init creates tables for postgres destinations only")])
    if args.print_sql:
        # Imported here, as in _create: only these commands load psycopg, not every capture-relay start.
        from workers.sinks.postgres_schema import as_text, create_sql

        # The output stays SQL a DBA can pipe into psql: everything else is a comment.
        for name, config in selected.items():
            if isinstance(config, PostgresDestination):
                _out(f"-- destination {name}\n{as_text(create_sql(config.table))}")
            else:
                _out(f"-- destination {name}: nothing to create for {config.type} (declares nothing)")
        return EXIT_OK
    configure_logging(settings.logging.level, settings.logging.format, stream=sys.stderr)
    return max((_create(name, config) for name, config in selected.items()), default=EXIT_OK)


def _create(name: str, config: Destination) -> int:
    if not isinstance(config, PostgresDestination):
        _out(f"{name}: nothing to create for {config.type} (declares nothing)")
        return EXIT_OK
    from workers.sinks.postgres import PostgresSink

    try:
        sink = PostgresSink(name, config, max_connections=1)
    except ValueError as exc:
        _out(f"{name}: FAILED config: {exc}")
        return EXIT_USAGE
    try:
        created = sink.create_table()
    except SinkError as exc:
        _out(f"{name}: FAILED {exc.reason}: {exc.detail}")
        return EXIT_FAILURE
    finally:
        sink.close()
    _out(f"{name}: created table {config.table}" if created else f"{name}: table {config.table} exists; index ensured")
    return EXIT_OK


def _check(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = settings_from(args, environ)
    selected = _selected(settings, args.destination)
    # stdout carries the verdicts (JSON with --output json); a sink's log lines go to stderr.
    configure_logging(settings.logging.level, settings.logging.format, stream=sys.stderr)
    verdicts = [_verdict(name, config, settings) for name, config in selected.items()]
    if args.output == "json":
        _out(orjson.dumps([asdict(verdict) for verdict in verdicts]).decode())
    else:
        _out("\n".join(verdict.line() for verdict in verdicts) if verdicts else "no destinations configured")
    return max((verdict.exit_status for verdict in verdicts), default=EXIT_OK)


def _verdict(name: str, config: Destination, settings: Settings) -> Verdict:
    try:
        sink = open_sink(name, config, max_connections=1, relay_redis_url=settings.redis_url)
    except ValueError as exc:
        return Verdict(name, config.type, "invalid", str(exc))
    except ImportError as exc:
        # A sink module, or the client library it needs, is not installed.
        return Verdict(name, config.type, "failed", f"cannot load the {config.type} sink: {exc}", reason="import")
    try:
        if not isinstance(sink, Checkable):
            return Verdict(name, config.type, "not_checked", f"the {config.type} sink has no check")
        return Verdict(name, config.type, "ok", sink.check())
    except SinkError as exc:
        return Verdict(name, config.type, "failed", exc.detail, reason=exc.reason)
    finally:
        sink.close()


def _selected(settings: Settings, names: list[str] | None) -> dict[str, Destination]:
    """The destinations named (in the order given), or all of them; an unknown name is a usage error."""
    if not names:
        return dict(settings.destinations)
    unknown = [name for name in names if name not in settings.destinations]
    if unknown:
        known = ", ".join(sorted(settings.destinations)) or "none"
        problem = f"no destination {', '.join(map(repr, unknown))} in the configuration; configured: {known}"
        raise ConfigError([("--destination", problem)])
    return {name: settings.destinations[name] for name in dict.fromkeys(names)}


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
