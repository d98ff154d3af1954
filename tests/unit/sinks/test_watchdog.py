"""The sinks' watchdog: an action runs for a block that outlives its deadline, never for one that
ended in time, and one thread serves every guarded block."""

from __future__ import annotations

import threading

from workers.sinks.watchdog import Watchdog


def test_a_block_that_outlives_its_deadline_gets_its_action() -> None:
    watchdog = Watchdog("test-watchdog")
    fired = threading.Event()

    with watchdog.guard(0.05, fired.set):
        assert fired.wait(5), "the action did not run while the block was still going"

    watchdog.close()


def test_a_block_that_ends_in_time_never_gets_its_action() -> None:
    watchdog = Watchdog("test-watchdog")
    fired = threading.Event()
    with watchdog.guard(0.2, fired.set):
        pass
    # A later block that does outlive its own deadline shows the thread has gone past the first one.
    later = threading.Event()
    with watchdog.guard(0.3, later.set):
        assert later.wait(5)

    assert not fired.is_set()
    watchdog.close()


def test_one_thread_serves_many_blocks_and_close_stops_it() -> None:
    watchdog = Watchdog("test-watchdog")
    fired = [threading.Event() for _ in range(20)]
    barrier = threading.Barrier(len(fired) + 1)

    def block(event: threading.Event) -> None:
        with watchdog.guard(0.05, event.set):
            event.wait(5)
        barrier.wait(5)

    threads = [threading.Thread(target=block, args=(event,)) for event in fired]
    for thread in threads:
        thread.start()
    barrier.wait(10)
    watchers = [thread for thread in threading.enumerate() if thread.name == "test-watchdog"]
    watchdog.close()

    assert all(event.is_set() for event in fired)
    assert len(watchers) == 1
    assert not any(thread.name == "test-watchdog" for thread in threading.enumerate())
