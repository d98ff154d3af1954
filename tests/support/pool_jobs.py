"""Job functions for the worker-pool tests, enqueued by dotted path.

A worker subprocess imports them when it runs with the repository as its working directory
(``python -m capture_relay``). They coordinate with the test through keys in Redis, reached
through the job's own connection.
"""

from __future__ import annotations

import os
import time

import redis
from rq import get_current_job

_POLL = 0.05


def _redis() -> redis.Redis:
    job = get_current_job()
    assert job is not None, "called outside an rq job"
    return job.connection


def rendezvous(key: str, parties: int, wait: float) -> dict[str, int]:
    """Arrive, then wait up to ``wait`` seconds for ``parties`` jobs in all.

    Only jobs that run at the same time can all meet: run one after another, each sees fewer.
    Returns how many had arrived, and the id of the process that ran the job.
    """
    connection = _redis()
    connection.incr(key)
    deadline = time.monotonic() + wait
    while (arrived := int(connection.get(key) or 0)) < parties and time.monotonic() < deadline:
        time.sleep(_POLL)
    return {"arrived": arrived, "pid": os.getpid()}


def tally(key: str) -> int:
    """Count one run in ``key``."""
    return int(_redis().incr(key))


def hold(key: str) -> str:
    """Count itself in ``<key>:started``, then run until the test sets ``<key>:open``."""
    connection = _redis()
    connection.incr(f"{key}:started")
    while not connection.exists(f"{key}:open"):
        time.sleep(_POLL)
    connection.incr(f"{key}:finished")
    return "held"


def stall_first_run(key: str) -> int:
    """Count its runs in ``<key>:runs``; the first never ends (the test kills its worker); returns the count."""
    connection = _redis()
    runs = int(connection.incr(f"{key}:runs"))
    while runs == 1 and not connection.exists(f"{key}:never-set"):
        time.sleep(_POLL)
    return runs
