"""rq's worker and scheduler, changed to run in threads of one process: every rq override in one place.

rq assumes a worker owns its process, and starts its scheduler in a forked process. ``workers.pool``
runs several workers and the scheduler as threads instead; this module changes exactly what that
assumption breaks, each override read against rq 3.0's ``rq/worker/base.py`` and ``rq/scheduler.py``.
They touch rq internals whose names and signatures change between releases, so ``pyproject.toml``
pins rq to its minor version: read each item below against a new rq before moving the pin.

``ThreadWorker`` (an rq ``SimpleWorker``) overrides:

- ``death_penalty_class = TimerDeathPenalty``: job timeouts raise an exception in the job's thread,
  since SIGALRM (rq's default) only reaches the main thread;
- ``_install_signal_handlers()``: does nothing, since only the main thread may install handlers;
  the pool's handlers serve every thread;
- ``get_heartbeat_ttl()``: ``SimpleWorker`` registers a running job for job_timeout + 60 s and never
  renews it, so the jobs of a SIGKILLed worker would wait that long. Here a job is registered for
  ``JOB_HEARTBEAT_TTL`` and the pool's heartbeat thread renews it (with rq's ``maintain_heartbeats()``,
  which rq itself calls only from a forking worker's monitor loop). A killed process's jobs expire
  within ``JOB_HEARTBEAT_TTL``, and the next maintenance of a live worker on the queue retries them
  (rq retries abandoned jobs that have retries left);
- ``dequeue_job_and_maintain_ttl()``: rq's dequeue loop only ends with a job, so each call is bounded
  to one blocking pop of ``WORKER_TTL`` - 15 s (by passing ``max_idle_time``), after which an idle
  thread sees a stop request (rq's ``_stop_requested`` flag, set by ``stop_after_current_job()``);
- ``should_run_maintenance_tasks``: each rq worker runs the registry maintenance on its own clock; the
  pool's threads share one ``MaintenanceClock``, so the process runs it once per interval (by whichever
  thread is free first), not N times.

``ThreadScheduler`` (an rq ``RQScheduler``) overrides:

- ``_install_signal_handlers()``: does nothing; the pool stops it with ``request_stop()``;
- ``should_reacquire_locks``: a standby scheduler checks every ``SCHEDULER_TAKEOVER_CHECK`` seconds
  (rq: 120 s) whether the lock of a dead one has lapsed (it reads rq's ``lock_acquisition_time``);
- its connection: rq's scheduler opens its own connection pool from the settings of the client it is
  given (``open()`` sets a socket timeout there) and keeps it in ``_connection``, which
  ``disconnect()`` closes.

Why threads, not rq's fork: a fork of a threaded process can inherit locks held by other threads, and
the forked scheduler survives a SIGKILL of its worker and keeps the queue's scheduler lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty

# rq derives from it the blocking pop (5 s) and the socket timeout of the worker connections (15 s).
WORKER_TTL = 20
JOB_HEARTBEAT_TTL = 30
SCHEDULER_TAKEOVER_CHECK = 10.0


class MaintenanceClock:
    """When the pool's next registry maintenance is due; claimed by one thread at a time."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: float | None = None
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """Whether maintenance is due; if so, the caller runs it and the clock restarts."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last < self._interval:
                return False
            self._last = now
            return True


class ThreadWorker(SimpleWorker):
    """An rq ``SimpleWorker`` that runs in one thread of a ``workers.pool.WorkerPool``."""

    death_penalty_class = TimerDeathPenalty
    # Shared by the pool's threads; None leaves rq's per-worker clock.
    maintenance_clock: MaintenanceClock | None = None

    def _install_signal_handlers(self) -> None:
        """Nothing: only the main thread may install handlers, and the pool's serve every thread."""

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """A short registration of a running job, renewed by the pool's heartbeat thread."""
        return JOB_HEARTBEAT_TTL

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """rq's dequeue, ending without a job when a stop was requested while waiting."""
        if timeout is None:  # burst: a pop that does not wait
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while not self._stop_requested:
            # Being "idle" for one pop makes rq's loop return after it.
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=timeout)
            if result is not None:
                return result
        return None

    @property
    def should_run_maintenance_tasks(self) -> bool:
        """rq asks before each dequeue; with a shared clock only the thread that claims it says yes."""
        if self.maintenance_clock is None:
            return bool(super().should_run_maintenance_tasks)
        return self.maintenance_clock.claim()

    def stop_after_current_job(self) -> None:
        """Take no further job; rq's loop checks this between jobs and the dequeue above while waiting."""
        self._stop_requested = True


class ThreadScheduler(RQScheduler):
    """rq's scheduler loop, run in a thread of the pool rather than in a forked process."""

    @classmethod
    def open(cls, queue: str, connect: Callable[[], redis.Redis], *, logging_level: str) -> ThreadScheduler:
        """A scheduler of ``queue`` with a connection pool of its own, made with the settings of ``connect()``.

        Close it with ``disconnect()``.
        """
        connection = connect()
        # The scheduler opens its own pool with these settings; a socket timeout keeps a dead
        # connection from hanging its thread (rq does the same to worker connections).
        connection.connection_pool.connection_kwargs["socket_timeout"] = WORKER_TTL - 5
        scheduler = cls([queue], connection=connection, logging_level=logging_level, serializer=JSONSerializer)
        connection.close()
        return scheduler

    def disconnect(self) -> None:
        """Close the connection pool the scheduler opened (rq leaves that to its owner)."""
        connection: redis.Redis | None = self._connection
        if connection is not None:
            connection.connection_pool.disconnect()

    def _install_signal_handlers(self) -> None:
        """Nothing: the pool stops the scheduler with ``request_stop()``."""

    @property
    def should_reacquire_locks(self) -> bool:
        """Whether to try for the locks this scheduler lacks (rq waits 120 s between tries)."""
        if self._queue_names == self.acquired_locks:
            return False
        # rq stores a naive local time here (and its annotations only know the initial None).
        acquired: datetime | None = self.lock_acquisition_time
        if acquired is None:
            return True
        return (datetime.now() - acquired).total_seconds() > SCHEDULER_TAKEOVER_CHECK
