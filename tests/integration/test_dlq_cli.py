"""``capture-relay dlq`` through its parser, on a real Redis: list, show, replay, purge and their errors."""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from capture_relay import dlq_cli
from capture_relay.dlq_cli import Pacer, Progress
from capture_relay.embedded_redis import RedisServer, free_port
from tests.support.deliveries import dead_letter_entry
from workers.deadletter import DeadLetter, DeadLetterEntry
from workers.delivery_job import DeliveryJob, delivery_id_for

Run = Callable[..., int]
QUEUE = "test-deliveries"


@pytest.fixture
def config_file(tmp_path: Path, redis_server: RedisServer) -> Path:
    """A config on the private Redis with destinations ``crm`` and ``erp`` and the delivery queue QUEUE."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"redis_url: {redis_server.url}\n"
        "destinations:\n"
        "  crm: {type: http, url: 'https://crm.example/hook'}\n"
        "  erp: {type: http, url: 'https://erp.example/hook'}\n"
        f"delivery: {{queue: {QUEUE}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def run(config_file: Path) -> Run:
    """Parse ``capture-relay dlq ARGS --config <config_file>`` with the dlq parser and run it."""

    def runner(*argv: str, config: Path | None = None) -> int:
        parser = argparse.ArgumentParser(prog="capture-relay")
        commands = parser.add_subparsers(dest="command", metavar="COMMAND")
        dlq_cli.add_parser(commands)
        args = parser.parse_args(["dlq", *argv, "--config", str(config or config_file)])
        return int(args.run(args, {}))

    return runner


@pytest.fixture
def dead_letter(redis_client: redis.Redis) -> DeadLetter:
    """The dead letter the commands see (default retention)."""
    return DeadLetter(redis_client, retention=14 * 86400)


def entry(event_id: str, destination: str = "crm", *, failed_at: float | None = None) -> DeadLetterEntry:
    """An entry whose payload holds a recognisable e-mail address."""
    when = {} if failed_at is None else {"failed_at": failed_at}
    return dead_letter_entry(event_id, destination, seq=2, **when)


def queued(redis_client: redis.Redis) -> list[DeliveryJob]:
    """The delivery jobs waiting on QUEUE."""
    queue = Queue(QUEUE, connection=redis_client, serializer=JSONSerializer)
    jobs = [Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer) for job_id in queue.get_job_ids()]
    return [DeliveryJob.from_dict(job.args[0]) for job in jobs]


def test_list_shows_a_table_without_payloads(
    run: Run, dead_letter: DeadLetter, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table has one row per entry, newest first, with its columns, and no payload value."""
    dead_letter.add(entry("evt-1", failed_at=time.time() - 10))
    dead_letter.add(entry("evt-2", "erp"))

    status = run("list")

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0] == (
        "DELIVERY ID  DESTINATION  ROUTE        EVENT TYPE     ATTEMPTS  LAST STATUS  REASON       FAILED AT"
    )
    assert [line.split()[:7] for line in lines[1:]] == [
        ["evt-2:erp", "erp", "all-changes", "entityUpdated", "3", "400", "http_status"],
        ["evt-1:crm", "crm", "all-changes", "entityUpdated", "3", "400", "http_status"],
    ]
    assert "jane@example.com" not in "\n".join(lines)


def test_list_filters_and_prints_json(run: Run, dead_letter: DeadLetter, capsys: pytest.CaptureFixture[str]) -> None:
    """--destination, --since and --limit narrow the listing; --output json gives metadata without payloads."""
    dead_letter.add(entry("evt-1", failed_at=time.time() - 7200))
    dead_letter.add(entry("evt-2"))
    dead_letter.add(entry("evt-3"))
    dead_letter.add(entry("evt-4", "erp"))

    status = run("list", "--destination", "crm", "--since", "1h", "--limit", "5", "--output", "json")

    listed = json.loads(capsys.readouterr().out)
    assert status == 0
    assert sorted(item["delivery_id"] for item in listed) == ["evt-2:crm", "evt-3:crm"]
    assert all("payload" not in item and item["attempts"] == 3 for item in listed)


def test_list_since_an_iso_date(run: Run, dead_letter: DeadLetter, capsys: pytest.CaptureFixture[str]) -> None:
    """--since takes an ISO date too, read as UTC when it has no offset."""
    now = time.time()
    dead_letter.add(entry("evt-1", failed_at=now - 3 * 86400))
    dead_letter.add(entry("evt-2", failed_at=now))
    yesterday = datetime.fromtimestamp(now - 86400, UTC).replace(tzinfo=None).isoformat(timespec="seconds")

    status = run("list", "--since", yesterday, "--output", "json")

    listed = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [item["delivery_id"] for item in listed] == ["evt-2:crm"]


def test_list_of_an_empty_dead_letter(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing dead-lettered: a sentence, exit 0."""
    status = run("list")

    assert status == 0
    assert capsys.readouterr().out == "no dead-lettered deliveries\n"


def test_show_hides_the_payload_unless_asked(
    run: Run, dead_letter: DeadLetter, capsys: pytest.CaptureFixture[str]
) -> None:
    """show prints the metadata and hides the payload; --payload prints it."""
    dead_letter.add(entry("evt-1"))

    hidden_status = run("show", "evt-1:crm")
    hidden = capsys.readouterr().out
    shown_status = run("show", "evt-1:crm", "--payload")
    shown = capsys.readouterr().out

    assert (hidden_status, shown_status) == (0, 0)
    assert "delivery id:      evt-1:crm" in hidden
    assert "reason:           http_status" in hidden
    assert "detail:           HTTP 400" in hidden
    assert "jane@example.com" not in hidden
    assert "--payload" in hidden
    assert '"email": "jane@example.com"' in shown


def test_show_as_json(run: Run, dead_letter: DeadLetter, capsys: pytest.CaptureFixture[str]) -> None:
    """--output json carries the metadata, and the payload only with --payload."""
    dead_letter.add(entry("evt-1"))

    run("show", "evt-1:crm", "--output", "json")
    without = json.loads(capsys.readouterr().out)
    run("show", "evt-1:crm", "--output", "json", "--payload")
    with_payload = json.loads(capsys.readouterr().out)

    assert (without["delivery_id"], without["last_status"], without["replayed"]) == ("evt-1:crm", 400, 0)
    assert "payload" not in without
    assert with_payload["payload"] == {"email": "jane@example.com"}


def test_show_of_an_unknown_id_fails(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """An id with no entry: one line on stderr naming it, exit 1."""
    status = run("show", "evt-9:crm")

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert "no dead-lettered delivery 'evt-9:crm'" in captured.err


def test_replay_one(
    run: Run, dead_letter: DeadLetter, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaying one id queues its fresh job, removes the entry and says so."""
    dead_letter.add(entry("evt-1"))
    dead_letter.add(entry("evt-2"))

    status = run("replay", "evt-1:crm")

    captured = capsys.readouterr()
    assert status == 0
    assert [(job.delivery_id, job.attempt, job.replayed) for job in queued(redis_client)] == [("evt-1:crm", 1, 1)]
    assert dead_letter.get("evt-1:crm") is None
    assert dead_letter.get("evt-2:crm") is not None
    assert captured.out == "replayed 1 of 1 deliveries\n"
    assert "replayed 1/1" in captured.err


def test_replay_all_at_a_rate(
    run: Run, dead_letter: DeadLetter, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """--all at 1000/s replays every entry of every destination, with progress on stderr."""
    for number in range(5):
        dead_letter.add(entry(f"evt-{number}", "crm" if number % 2 else "erp"))

    status = run("replay", "--all", "--rate", "1000/s")

    captured = capsys.readouterr()
    assert status == 0
    assert sorted(job.delivery_id for job in queued(redis_client)) == sorted(
        delivery_id_for(f"evt-{number}", "crm" if number % 2 else "erp") for number in range(5)
    )
    assert dead_letter.entries() == []
    assert captured.err.splitlines() == [f"replayed {done}/5" for done in range(1, 6)]
    assert captured.out == "replayed 5 of 5 deliveries\n"


def test_replay_one_destination(run: Run, dead_letter: DeadLetter, redis_client: redis.Redis) -> None:
    """--destination replays that destination's entries only."""
    dead_letter.add(entry("evt-1", "crm"))
    dead_letter.add(entry("evt-2", "erp"))

    status = run("replay", "--destination", "erp", "--rate", "1000/s")

    assert status == 0
    assert [job.delivery_id for job in queued(redis_client)] == ["evt-2:erp"]
    assert [item.delivery_id for item in dead_letter.entries()] == ["evt-1:crm"]


def test_replay_skips_destinations_not_configured(
    run: Run, dead_letter: DeadLetter, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entries of a destination no longer in the config stay, are reported, and make the exit 1."""
    dead_letter.add(entry("evt-1", "crm"))
    dead_letter.add(entry("evt-2", "retired"))

    status = run("replay", "--all", "--rate", "1000/s")

    captured = capsys.readouterr()
    assert status == 1
    assert [job.delivery_id for job in queued(redis_client)] == ["evt-1:crm"]
    assert dead_letter.get("evt-2:retired") is not None
    assert "skipping 1 deliveries to destinations not in the configuration: retired" in captured.err
    assert captured.out == "replayed 1 of 2 deliveries; 1 skipped\n"


def test_replay_of_an_unknown_id_fails(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """Replaying an id with no entry: exit 1 and a line naming it."""
    status = run("replay", "evt-9:crm")

    assert status == 1
    assert "no dead-lettered delivery 'evt-9:crm'" in capsys.readouterr().err


def test_replay_with_nothing_to_do(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """--all on an empty dead letter succeeds and says so."""
    status = run("replay", "--all")

    assert status == 0
    assert capsys.readouterr().out == "nothing to replay\n"


def test_purge_reports_the_count(run: Run, dead_letter: DeadLetter, capsys: pytest.CaptureFixture[str]) -> None:
    """purge --destination --before removes the older entries of one destination; --all the rest."""
    dead_letter.add(entry("evt-1", "crm", failed_at=time.time() - 7200))
    dead_letter.add(entry("evt-2", "crm"))
    dead_letter.add(entry("evt-3", "erp", failed_at=time.time() - 7200))

    first = run("purge", "--destination", "crm", "--before", "1h")
    first_out = capsys.readouterr().out
    second = run("purge", "--all")
    second_out = capsys.readouterr().out

    assert (first, second) == (0, 0)
    assert first_out == "removed 1 dead-lettered deliveries\n"
    assert second_out == "removed 2 dead-lettered deliveries\n"
    assert dead_letter.entries() == []


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-subcommand"),
        pytest.param(["replay"], id="replay-needs-a-target"),
        pytest.param(["replay", "evt-1:crm", "--all"], id="replay-id-and-all"),
        pytest.param(["replay", "--all", "--destination", "crm"], id="replay-all-and-destination"),
        pytest.param(["replay", "--all", "--rate", "fast"], id="replay-bad-rate"),
        pytest.param(["purge"], id="purge-needs-a-scope"),
        pytest.param(["purge", "--all", "--before", "last tuesday"], id="purge-bad-before"),
        pytest.param(["list", "--limit", "0"], id="list-zero-limit"),
        pytest.param(["list", "--since", "yesterday"], id="list-bad-since"),
        pytest.param(["list", "--output", "yaml"], id="list-bad-output"),
        pytest.param(["show"], id="show-needs-an-id"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    """Usage errors are argparse's: exit status 2 before anything is read."""
    parser = argparse.ArgumentParser(prog="capture-relay")
    dlq_cli.add_parser(parser.add_subparsers(dest="command"))

    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["dlq", *argv])

    assert exited.value.code == 2


def test_unreachable_redis_is_one_line_and_exit_1(run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With nothing listening at redis_url, every sub-command fails with one line and no traceback."""
    config = tmp_path / "down.yaml"
    config.write_text(f"redis_url: redis://:hunter2@127.0.0.1:{free_port()}/0\n", encoding="utf-8")

    statuses = [
        run(*argv, config=config) for argv in (["list"], ["show", "evt-1:crm"], ["replay", "--all"], ["purge", "--all"])
    ]

    errors = capsys.readouterr().err.splitlines()
    assert statuses == [1, 1, 1, 1]
    assert len(errors) == 4
    assert all(line.startswith("capture-relay: cannot reach Redis at redis://:****@127.0.0.1") for line in errors)
    assert "hunter2" not in "\n".join(errors)


def test_pacer_spaces_calls_by_the_rate() -> None:
    """At 2/s, five calls with an instant clock are spaced 0.5 s apart: four sleeps of 0.5 s."""
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    pacer = Pacer(2.0, clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()

    assert slept == [0.5, 0.5, 0.5, 0.5]


def test_pacer_does_not_burst_after_a_slow_call() -> None:
    """A call that took 3 s does not earn the next ones a head start: they are still 0.5 s apart."""
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    pacer = Pacer(2.0, clock=lambda: clock[0], sleep=sleep)
    pacer.wait()
    clock[0] += 3.0
    pacer.wait()
    pacer.wait()

    assert slept == [0.5]


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        """Always a terminal."""
        return True


def test_progress_redraws_one_line_on_a_terminal() -> None:
    """On a terminal the bar is redrawn with carriage returns and ends with one newline."""
    stream = Terminal()
    progress = Progress(4, stream)

    for done in range(1, 5):
        progress.update(done)
    progress.finish()

    text = stream.getvalue()
    assert text.count("\r") == 4
    assert text.count("\n") == 1
    assert text.endswith("] 4/4\n")


def test_progress_prints_a_line_per_tenth_elsewhere() -> None:
    """Not on a terminal: a plain line every tenth of the total, and the last one."""
    stream = io.StringIO()
    progress = Progress(25, stream)

    for done in range(1, 26):
        progress.update(done)
    progress.finish()

    assert stream.getvalue().splitlines() == [
        f"replayed {done}/25" for done in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25)
    ]
