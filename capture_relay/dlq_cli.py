"""``capture-relay dlq``: list, show, replay and purge the deliveries that failed for good.

Sub-commands::

    dlq list    [--destination NAME] [--since WHEN] [--limit N] [--output text|json]
    dlq show    ID [--payload] [--output text|json]
    dlq replay  (ID | --all | --destination NAME) [--rate N/s]
    dlq purge   (--all | --destination NAME) [--before WHEN]

Payloads are personal data: only ``show --payload`` prints one. A replay puts each delivery back on
the delivery queue with a fresh retry schedule, at most ``--rate`` per second so that a destination
just back from an outage is not flooded, and reports progress on stderr. Exit codes: 0 ok, 1 failure
(unknown id, Redis unreachable, not everything replayed), 2 bad usage (from argparse).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
import redis

from capture_relay.config_args import config_option, settings_from
from service.redisconn import connect_service_sync
from service.secret import mask_url
from service.settings import Settings
from service.timeutil import parse_duration, parse_rate
from workers.deadletter import DeadLetter, DeadLetterEntry
from workers.delivery_queue import DeliveryPolicy, DeliveryQueue

EXIT_OK, EXIT_FAILURE = 0, 1
_DEFAULT_RATE = 10.0
_BAR_WIDTH = 30

Command = Callable[[argparse.Namespace, Settings, redis.Redis], int]


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``dlq`` and its sub-commands on the top-level ``commands``."""
    dlq = commands.add_parser(
        "dlq",
        help="list, show, replay and purge dead-lettered deliveries",
        description="Deliveries that failed for good (refused by the destination, or out of retries).",
    )
    sub = dlq.add_subparsers(dest="dlq_command", metavar="SUBCOMMAND", required=True)

    listing = sub.add_parser("list", help="list dead-lettered deliveries, newest first (no payloads)")
    config_option(listing)
    listing.add_argument("--destination", metavar="NAME", help="only this destination's")
    _when_option(listing, "--since", "only those that failed since WHEN")
    listing.add_argument("--limit", type=_positive_int, metavar="N", help="at most N entries")
    _output_option(listing)
    listing.set_defaults(run=_with_redis(_list))

    show = sub.add_parser("show", help="show one dead-lettered delivery")
    config_option(show)
    show.add_argument("id", metavar="ID", help="the delivery id, <event-id>:<destination>")
    show.add_argument("--payload", action="store_true", help="include the payload (personal data)")
    _output_option(show)
    show.set_defaults(run=_with_redis(_show))

    replay = sub.add_parser(
        "replay",
        help="send dead-lettered deliveries again, with a fresh retry schedule",
        description="Put deliveries back on the delivery queue and remove them from the dead letter.",
    )
    config_option(replay)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", metavar="ID", nargs="?", help="one delivery id")
    which.add_argument("--all", action="store_true", help="every dead-lettered delivery")
    which.add_argument("--destination", metavar="NAME", help="every delivery to this destination")
    replay.add_argument(
        "--rate", type=_rate, default=_DEFAULT_RATE, metavar="N/s", help="at most this many per second (default 10/s)"
    )
    replay.set_defaults(run=_with_redis(_replay))

    purge = sub.add_parser("purge", help="delete dead-lettered deliveries")
    config_option(purge)
    scope = purge.add_mutually_exclusive_group(required=True)
    scope.add_argument("--all", action="store_true", help="of every destination")
    scope.add_argument("--destination", metavar="NAME", help="of this destination only")
    _when_option(purge, "--before", "only those that failed before WHEN")
    purge.set_defaults(run=_with_redis(_purge))


class Pacer:
    """Spaces calls to at most ``rate`` per second: each :meth:`wait` returns at its turn.

    A slow call does not earn a burst afterwards: the next turn is counted from when it came.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        """Sleep until the next call may start."""
        now = self._clock()
        turn = now if self._next is None else max(self._next, now)
        if turn > now:
            self._sleep(turn - now)
        self._next = turn + self._interval


class Progress:
    """``replayed 40/120`` on ``stream``: a bar redrawn in place on a terminal, else a line per tenth."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._total = total
        self._stream = stream
        self._tty = stream.isatty()
        self._step = max(1, total // 10)
        self._drawn = False

    def update(self, done: int) -> None:
        """Show that ``done`` of the total are through."""
        if self._tty:
            filled = _BAR_WIDTH * done // max(1, self._total)
            bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
            self._stream.write(f"\rreplayed [{bar}] {done}/{self._total}")
            self._drawn = True
        elif done % self._step == 0 or done == self._total:
            self._stream.write(f"replayed {done}/{self._total}\n")
        self._stream.flush()

    def finish(self) -> None:
        """End the bar's line, so that what follows starts on its own."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False


@dataclass(frozen=True, slots=True)
class _When:
    """A point in time as given on the command line: some time ago, or a date."""

    seconds_ago: float | None = None
    timestamp: float | None = None

    def at(self, now: float) -> float:
        return now - self.seconds_ago if self.seconds_ago is not None else float(self.timestamp or 0.0)


def _with_redis(command: Command) -> Callable[[argparse.Namespace, Mapping[str, str]], int]:
    """Load the settings, connect, run ``command``; a Redis failure becomes one line and exit 1."""

    def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        settings = settings_from(args, environ)
        connection = connect_service_sync(settings.redis_url)
        where = mask_url(settings.redis_url.reveal())
        try:
            return command(args, settings, connection)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            _error(f"cannot reach Redis at {where}: {exc}")
        except redis.RedisError as exc:
            _error(f"Redis at {where} refused a command: {exc}")
        finally:
            connection.close()
        return EXIT_FAILURE

    return run


def _list(args: argparse.Namespace, settings: Settings, connection: redis.Redis) -> int:
    dead_letter = DeadLetter(connection, settings.delivery.dead_letter_retention)
    since = None if args.since is None else args.since.at(time.time())
    entries = dead_letter.entries(args.destination, since=since, limit=args.limit)
    if args.output == "json":
        _out(orjson.dumps([_metadata(entry, dead_letter.retention) for entry in entries]).decode())
        return EXIT_OK
    if not entries:
        _out("no dead-lettered deliveries")
        return EXIT_OK
    header = ("DELIVERY ID", "DESTINATION", "ROUTE", "EVENT TYPE", "ATTEMPTS", "LAST STATUS", "REASON", "FAILED AT")
    rows = [
        (
            entry.delivery_id,
            entry.destination,
            entry.job.route,
            entry.job.event_type,
            str(entry.attempts),
            "-" if entry.last_status is None else str(entry.last_status),
            entry.reason,
            _iso(entry.failed_at),
        )
        for entry in entries
    ]
    _out(_table([header, *rows]))
    return EXIT_OK


def _show(args: argparse.Namespace, settings: Settings, connection: redis.Redis) -> int:
    dead_letter = DeadLetter(connection, settings.delivery.dead_letter_retention)
    entry = dead_letter.get(args.id)
    if entry is None:
        _error(f"no dead-lettered delivery {args.id!r}; `capture-relay dlq list` shows the ids")
        return EXIT_FAILURE
    metadata = _metadata(entry, dead_letter.retention)
    if args.output == "json":
        if args.payload:
            metadata["payload"] = entry.job.payload
        _out(orjson.dumps(metadata, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    times = {"occurred_at", "received_at", "first_attempt_at", "failed_at", "expires_at"}
    lines = [
        f"{name.replace('_', ' ') + ':':<18}{_iso(value) if name in times and value is not None else _cell(value)}"
        for name, value in metadata.items()
    ]
    if args.payload:
        payload = orjson.dumps(entry.job.payload, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        lines.append("payload:\n" + "\n".join(f"  {line}" for line in payload.splitlines()))
    else:
        lines.append(f"{'payload:':<18}(hidden: personal data; add --payload to show it)")
    _out("\n".join(lines))
    return EXIT_OK


def _replay(args: argparse.Namespace, settings: Settings, connection: redis.Redis) -> int:
    dead_letter = DeadLetter(connection, settings.delivery.dead_letter_retention)
    if args.id is not None:
        entry = dead_letter.get(args.id)
        if entry is None:
            _error(f"no dead-lettered delivery {args.id!r}; `capture-relay dlq list` shows the ids")
            return EXIT_FAILURE
        plan = {entry.destination: [args.id]}
    else:
        names = dead_letter.destinations() if args.destination is None else [args.destination]
        plan = {name: dead_letter.delivery_ids(name) for name in names}
    # A job for a destination the workers do not know would only fail again.
    unknown = sorted(name for name, ids in plan.items() if ids and name not in settings.destinations)
    skipped = sum(len(plan[name]) for name in unknown)
    if unknown:
        _error(f"skipping {skipped} deliveries to destinations not in the configuration: {', '.join(unknown)}")
    todo = [delivery_id for name, ids in plan.items() if name not in unknown for delivery_id in ids]
    if not todo and not skipped:
        _out("nothing to replay")
        return EXIT_OK
    queue = DeliveryQueue(connection, DeliveryPolicy.from_settings(settings))
    replayed = _replay_paced(dead_letter, queue, todo, Pacer(args.rate), skipped)
    return EXIT_OK if replayed == len(todo) and not skipped else EXIT_FAILURE


def _replay_paced(dead_letter: DeadLetter, queue: DeliveryQueue, todo: list[str], pacer: Pacer, skipped: int) -> int:
    progress = Progress(len(todo), sys.stderr)
    replayed = gone = 0
    try:
        for delivery_id in todo:
            pacer.wait()
            if dead_letter.replay(delivery_id, queue):
                replayed += 1
            else:
                gone += 1
            progress.update(replayed + gone)
    except KeyboardInterrupt:
        pass  # Ctrl-C stops the replay; the summary says how far it got, and the exit status is 1
    finally:
        # Also after Ctrl-C or a lost Redis: say how far it got before the error line.
        progress.finish()
        notes = [f"{gone} no longer in the dead letter"] if gone else []
        notes += [f"{skipped} skipped"] if skipped else []
        notes += ["stopped early"] if replayed + gone < len(todo) else []
        _out(f"replayed {replayed} of {len(todo) + skipped} deliveries" + "".join(f"; {note}" for note in notes))
    return replayed


def _purge(args: argparse.Namespace, settings: Settings, connection: redis.Redis) -> int:
    dead_letter = DeadLetter(connection, settings.delivery.dead_letter_retention)
    before = None if args.before is None else args.before.at(time.time())
    removed = dead_letter.purge(args.destination, before=before)
    _out(f"removed {removed} dead-lettered deliveries")
    return EXIT_OK


def _metadata(entry: DeadLetterEntry, retention: int) -> dict[str, Any]:
    job = entry.job
    return {
        "delivery_id": entry.delivery_id,
        "destination": entry.destination,
        "route": job.route,
        "event_id": job.event_id,
        "event_type": job.event_type,
        "uuid": job.uuid,
        "version": job.version,
        "occurred_at": job.occurred_at,
        "received_at": job.received_at,
        "first_attempt_at": job.first_attempt_at,
        "attempts": entry.attempts,
        "last_status": entry.last_status,
        "reason": entry.reason,
        "detail": entry.detail,
        "failed_at": entry.failed_at,
        "replayed": job.replayed,
        "expires_at": entry.failed_at + retention,
    }


def _table(rows: list[tuple[str, ...]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(cells[0]))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _cell(value: object) -> str:
    # Ids and error details come from outside: no control characters reach the terminal.
    text = "-" if value is None else str(value)
    return "".join(char if char.isprintable() else "?" for char in text)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _when_option(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    parser.add_argument(
        flag,
        type=_point_in_time,
        metavar="WHEN",
        help=f"{what}: a duration ago (30m, 2h, 7d) or an ISO date (2026-08-01T12:00:00Z; UTC if no offset)",
    )


def _output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", choices=("text", "json"), default="text", help="format (default text)")


def _point_in_time(text: str) -> _When:
    try:
        return _When(seconds_ago=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (30m, 2h, 7d) nor an ISO date (2026-08-01 or 2026-08-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _When(timestamp=moment.timestamp())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _error(text: str) -> None:
    sys.stderr.write(f"capture-relay: {text}\n")
