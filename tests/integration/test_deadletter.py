"""The dead letter on a real Redis: keeping, listing, expiring, removing, purging and replaying entries."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.support.deliveries import dead_letter_entry
from workers.deadletter import DeadLetter, DeadLetterEntry
from workers.delivery_job import DeliveryJob
from workers.delivery_queue import DeliveryPolicy, DeliveryQueue

EntryFactory = Callable[..., DeadLetterEntry]


@pytest.fixture
def now() -> float:
    """The test's start, epoch seconds: entries' times are given relative to it."""
    return time.time()


@pytest.fixture
def make_entry(now: float) -> EntryFactory:
    """Entries for ``evt-1`` to ``crm`` that failed ``now``; keywords override entry or job fields."""

    def factory(event_id: str = "evt-1", destination: str = "crm", **overrides: Any) -> DeadLetterEntry:
        defaults = {
            "failed_at": now,
            "attempts": 4,
            "version": now - 60,
            "occurred_at": now - 60,
            "received_at": now - 59,
            "first_attempt_at": now - 50,
            "seq": 3,
        }
        return dead_letter_entry(event_id, destination, **{**defaults, **overrides})

    return factory


@pytest.fixture
def dead_letter(redis_client: redis.Redis) -> DeadLetter:
    """A dead letter with a one-hour retention."""
    return DeadLetter(redis_client, retention=3600)


def ids(entries: list[DeadLetterEntry]) -> list[str]:
    """The delivery ids of ``entries``, in order."""
    return [entry.delivery_id for entry in entries]


def test_entry_round_trips_through_a_dict(make_entry: EntryFactory) -> None:
    """to_dict/from_dict keep every field, and the properties read through to the job."""
    entry = make_entry(last_status=None)

    again = DeadLetterEntry.from_dict(entry.to_dict())

    assert again == entry
    assert (again.delivery_id, again.destination, again.event_id) == ("evt-1:crm", "crm", "evt-1")


def test_added_entry_can_be_read_back(dead_letter: DeadLetter, make_entry: EntryFactory) -> None:
    """get() returns the entry as added, payload included; an unknown id gives None."""
    entry = make_entry()

    dead_letter.add(entry)

    assert dead_letter.get("evt-1:crm") == entry
    assert dead_letter.get("evt-2:crm") is None


def test_adding_the_same_delivery_again_replaces_it(
    now: float, dead_letter: DeadLetter, make_entry: EntryFactory
) -> None:
    """A delivery dead-lettered twice has one entry, the later one."""
    dead_letter.add(make_entry(failed_at=now - 10, attempts=4))
    dead_letter.add(make_entry(failed_at=now, attempts=11, reason="retries_exhausted"))

    entries = dead_letter.entries()

    assert [(entry.attempts, entry.reason) for entry in entries] == [(11, "retries_exhausted")]
    assert dead_letter.sizes(["crm"]) == {"crm": 1}


def test_entries_are_newest_first_and_filtered(now: float, dead_letter: DeadLetter, make_entry: EntryFactory) -> None:
    """Listing orders by failure time across destinations, and filters by destination, since and limit."""
    dead_letter.add(make_entry("evt-1", "crm", failed_at=now - 30))
    dead_letter.add(make_entry("evt-2", "erp", failed_at=now - 20))
    dead_letter.add(make_entry("evt-3", "crm", failed_at=now - 10))

    everything = dead_letter.entries()
    crm = dead_letter.entries("crm")
    recent = dead_letter.entries(since=now - 20)
    newest = dead_letter.entries(limit=2)
    oldest_crm = dead_letter.entries("crm", since=now - 40, limit=5)

    assert ids(everything) == ["evt-3:crm", "evt-2:erp", "evt-1:crm"]
    assert ids(crm) == ["evt-3:crm", "evt-1:crm"]
    assert ids(recent) == ["evt-3:crm", "evt-2:erp"]
    assert ids(newest) == ["evt-3:crm", "evt-2:erp"]
    assert ids(oldest_crm) == ["evt-3:crm", "evt-1:crm"]
    assert dead_letter.destinations() == ["crm", "erp"]
    assert dead_letter.delivery_ids("crm") == ["evt-1:crm", "evt-3:crm"]


def test_entries_expire_after_the_retention(redis_client: redis.Redis, make_entry: EntryFactory) -> None:
    """With a 1 s retention an entry is gone after a second: from get, listings, sizes and the index."""
    short = DeadLetter(redis_client, retention=1)
    short.add(make_entry(failed_at=time.time()))
    before = (short.get("evt-1:crm") is not None, short.sizes(["crm"]))

    time.sleep(1.1)

    assert before == (True, {"crm": 1})
    assert short.get("evt-1:crm") is None
    assert short.entries() == []
    assert short.sizes(["crm"]) == {"crm": 0}
    assert short.delivery_ids("crm") == []
    assert redis_client.zcard("capture-relay:dead-letter:index:crm") == 0


def test_index_members_whose_entry_vanished_are_dropped_lazily(
    now: float, dead_letter: DeadLetter, make_entry: EntryFactory, redis_client: redis.Redis
) -> None:
    """An entry key gone before its score says so (deleted by hand) is skipped and cleaned from the index."""
    for number in range(1, 5):
        dead_letter.add(make_entry(f"evt-{number}", failed_at=now - 10 + number))
    redis_client.delete("capture-relay:dead-letter:entry:evt-4:crm", "capture-relay:dead-letter:entry:evt-3:crm")

    newest = dead_letter.entries(limit=2)

    assert ids(newest) == ["evt-2:crm", "evt-1:crm"]
    assert redis_client.zcard("capture-relay:dead-letter:index:crm") == 2


def test_keys_carry_the_retention_as_ttl(
    dead_letter: DeadLetter, make_entry: EntryFactory, redis_client: redis.Redis
) -> None:
    """Entry, index and destination set all expire within the retention (one hour here)."""
    dead_letter.add(make_entry())

    ttls = [redis_client.ttl(key) for key in redis_client.keys("capture-relay:dead-letter:*")]

    assert len(ttls) == 3
    assert all(3500 < ttl <= 3600 for ttl in ttls)


def test_remove_deletes_one_entry(dead_letter: DeadLetter, make_entry: EntryFactory) -> None:
    """remove() is True for an existing entry and False afterwards; other entries stay."""
    dead_letter.add(make_entry("evt-1"))
    dead_letter.add(make_entry("evt-2"))

    first = dead_letter.remove("evt-1:crm")
    again = dead_letter.remove("evt-1:crm")

    assert (first, again) == (True, False)
    assert ids(dead_letter.entries()) == ["evt-2:crm"]
    assert dead_letter.sizes() == {"crm": 1}


def test_purge_by_destination_and_time(now: float, dead_letter: DeadLetter, make_entry: EntryFactory) -> None:
    """Purging one destination before a time removes exactly those, and reports how many."""
    dead_letter.add(make_entry("evt-1", "crm", failed_at=now - 30))
    dead_letter.add(make_entry("evt-2", "crm", failed_at=now - 10))
    dead_letter.add(make_entry("evt-3", "erp", failed_at=now - 30))

    removed = dead_letter.purge("crm", before=now - 20)

    assert removed == 1
    assert ids(dead_letter.entries()) == ["evt-2:crm", "evt-3:erp"]


def test_purge_everything(dead_letter: DeadLetter, make_entry: EntryFactory, redis_client: redis.Redis) -> None:
    """Purging without arguments removes every entry of every destination and leaves no keys behind."""
    for number in range(1200):
        dead_letter.add(make_entry(f"evt-{number}", "crm" if number % 2 else "erp"))

    removed = dead_letter.purge()

    assert removed == 1200
    assert dead_letter.entries() == []
    assert dead_letter.destinations() == []
    assert redis_client.keys("capture-relay:dead-letter:*") == []


def test_sizes_count_per_destination(now: float, dead_letter: DeadLetter, make_entry: EntryFactory) -> None:
    """sizes() counts the live entries of the named destinations, 0 for those without any."""
    dead_letter.add(make_entry("evt-1", "crm"))
    dead_letter.add(make_entry("evt-2", "crm"))
    dead_letter.add(make_entry("evt-3", "erp"))
    dead_letter.add(make_entry("evt-4", "erp", failed_at=now - 7200))

    assert dead_letter.sizes(["crm", "erp", "bus"]) == {"crm": 2, "erp": 1, "bus": 0}
    assert dead_letter.sizes() == {"crm": 2, "erp": 1}


def test_replay_queues_a_fresh_job_and_removes_the_entry(
    dead_letter: DeadLetter, make_entry: EntryFactory, redis_client: redis.Redis
) -> None:
    """The replayed job is on the delivery queue with attempt 1, seq 0 and replayed + 1; the entry is gone."""
    dead_letter.add(make_entry())
    queue = DeliveryQueue(redis_client, DeliveryPolicy(queue="test-deliveries", job_timeout=60, marker_ttl=60))

    replayed = dead_letter.replay("evt-1:crm", queue)
    missing = dead_letter.replay("evt-1:crm", queue)

    rq_queue = Queue("test-deliveries", connection=redis_client, serializer=JSONSerializer)
    [job_id] = rq_queue.get_job_ids()
    job = DeliveryJob.from_dict(Job.fetch(job_id, connection=redis_client, serializer=JSONSerializer).args[0])
    assert (replayed, missing) == (True, False)
    assert (job.delivery_id, job.attempt, job.seq, job.replayed, job.first_attempt_at) == ("evt-1:crm", 1, 0, 1, None)
    assert job.payload == {"email": "jane@example.com"}
    assert dead_letter.get("evt-1:crm") is None
    assert dead_letter.sizes() == {}


def test_replay_keeps_a_newer_entry_of_the_same_delivery(
    now: float, dead_letter: DeadLetter, make_entry: EntryFactory, redis_client: redis.Redis
) -> None:
    """If the delivery is dead-lettered again before the replay removes its entry, the new entry stays."""
    dead_letter.add(make_entry())
    policy = DeliveryPolicy(queue="test-deliveries", job_timeout=60, marker_ttl=60)

    class FailsAtOnce(DeliveryQueue):
        """A queue whose job is dead-lettered again the moment it is scheduled (a very fast worker)."""

        def schedule(self, job: DeliveryJob, delay: float) -> bool:
            dead_letter.add(make_entry(failed_at=now + 1, replayed=job.replayed, reason="timeout"))
            return True

    replayed = dead_letter.replay("evt-1:crm", FailsAtOnce(redis_client, policy))

    kept = dead_letter.get("evt-1:crm")
    assert replayed
    assert kept is not None
    assert (kept.reason, kept.job.replayed) == ("timeout", 1)


def test_retention_must_be_positive(redis_client: redis.Redis) -> None:
    """A zero retention would drop every entry at once; it is refused."""
    with pytest.raises(ValueError, match="retention=0"):
        DeadLetter(redis_client, retention=0)
