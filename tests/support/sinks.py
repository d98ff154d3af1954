"""Driving a sink in tests: deliveries to send, a send that must fail, sends from many threads at
once, and waiting for what a sink does in the background (a condition, its TCP connections)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from workers.sinks.base import Outgoing, Sink, SinkError

PROFILE_UUID = "0b5c1a52-44e2-4c1e-9d1f-0f2b5a4f7c10"
EMAIL = "jane.doe@example.com"


def delivery(number: int, destination: str, *, payload: dict[str, Any] | None = None, **overrides: Any) -> Outgoing:
    """First attempt of delivery ``number`` (id ``evt-<number:04d>:<destination>``) of a changed
    profile, ``PROFILE_UUID``; keywords override fields.

    The default payload holds personal data (``EMAIL``, a given name), for tests that it never leaks.
    """
    if payload is None:
        payload = {"id": f"evt-{number:04d}", "entity_type": "user", "record": {"email": EMAIL, "givenName": "Jane"}}
    values: dict[str, Any] = {
        "delivery_id": f"evt-{number:04d}:{destination}",
        "destination": destination,
        "event_type": "entityUpdated",
        "uuid": PROFILE_UUID,
        "payload": payload,
        "attempt": 1,
    }
    return Outgoing(**(values | overrides))


def send_failing(sink: Sink, delivery: Outgoing) -> SinkError:
    """Send ``delivery`` and return the SinkError it must raise."""
    with pytest.raises(SinkError) as caught:
        sink.send(delivery)
    return caught.value


@dataclass
class Senders:
    """What threads sending through one sink saw so far."""

    # Delivery ids of the sends that returned, in the order they returned.
    sent: list[str] = field(default_factory=list)
    # What the sends raised: anything, not only SinkError, since what a send raises is often the point.
    failures: list[BaseException] = field(default_factory=list)


@contextmanager
def sending_in_threads(
    sink: Sink, shares: Iterable[Sequence[Outgoing]], *, join_timeout: float | None = 30
) -> Iterator[Senders]:
    """Start one thread per share, sending its deliveries in order until one raises; the block runs meanwhile.

    Leaving the block waits for each thread (up to ``join_timeout`` seconds).
    """
    senders = Senders()

    def send_share(share: Sequence[Outgoing]) -> None:
        for outgoing in share:
            try:
                sink.send(outgoing)
            except BaseException as exc:  # noqa: BLE001 (recorded for the test to judge)
                senders.failures.append(exc)
                return
            senders.sent.append(outgoing.delivery_id)

    threads = [threading.Thread(target=send_share, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    try:
        yield senders
    finally:
        for thread in threads:
            thread.join(join_timeout)


def send_concurrently(sink: Sink, deliveries: Sequence[Outgoing], threads: int) -> list[BaseException]:
    """Send ``deliveries`` from ``threads`` threads at once, each a consecutive run of them; what the sends raised."""
    size = -(-len(deliveries) // threads)
    shares = [deliveries[start : start + size] for start in range(0, len(deliveries), size)]
    with sending_in_threads(sink, shares) as senders:
        pass  # leaving the block waits for the threads
    return senders.failures


def wait_until(
    condition: Callable[[], bool],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    failure: str = "condition not met in time",
) -> None:
    """Return once ``condition()`` holds, asking every ``interval`` seconds; fail with ``failure`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(interval)


def tcp_connections_to(port: int) -> int:
    """Established TCP connections to 127.0.0.1:``port`` on this machine (Linux's /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    remote = f"0100007F:{port:04X}"
    return sum(1 for line in lines if line.split()[2] == remote and line.split()[3] == "01")
