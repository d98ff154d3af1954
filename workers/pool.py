"""A worker process: one rq queue, several jobs at once in threads, no fork per job.

The jobs wait on Capture and on destinations, so threads keep a CPU busy where one job at a
time would leave it idle, and no job pays for a fork. Each thread is an rq worker
(``workers.rq_threads.ThreadWorker``) with its own Redis connection, so the blocking pop (BLMOVE,
one queue: see reference/python-stack.md §1.5) of an idle thread never holds up the others. What
rq had to be changed for that is all in ``workers.rq_threads``; this module runs the threads:

- signals can only be handled by the main thread: the pool's handlers ask every thread to
  finish its current job and stop (warm shut down); a second signal exits at once;
- a running job is registered for a short TTL only, so one heartbeat thread renews the jobs of
  every worker thread every ``HEARTBEAT_INTERVAL``;
- rq's scheduler (delayed jobs, retry intervals) runs in a thread of the pool, not in a forked
  process, and is begun again after a Redis error; in burst mode the due jobs are moved once.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import redis
import structlog
from rq import Queue
from rq.executions import Execution
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from workers.health import OVERDUE_GRACE, PoolStatus, ThreadStatus
from workers.rq_threads import WORKER_TTL, MaintenanceClock, ThreadScheduler, ThreadWorker

log = structlog.get_logger(__name__)

# How often the heartbeat thread renews the running jobs, each registered for JOB_HEARTBEAT_TTL
# (workers.rq_threads).
HEARTBEAT_INTERVAL = 10.0
# After a stop request, threads still waiting for a job this long are left behind (they are in
# rq's Redis reconnect loop and hold no job): longer than a blocking pop plus a socket timeout.
IDLE_EXIT_GRACE = 25.0
# One Ctrl+C can arrive twice (terminal and supervisor), as rq's worker pool notes.
REPEATED_SIGNAL_WINDOW = 1.0
EXIT_COLD_SHUTDOWN = 1
_POLL = 0.2


class WorkerThreadError(RuntimeError):
    """A worker thread ended while the pool was not stopping; the pool stopped its other threads."""

    def __init__(self, thread: str, reason: str) -> None:
        super().__init__(f"worker thread {thread} ended unexpectedly ({reason}); the worker stopped")
        self.thread = thread
        self.reason = reason


class WorkerPool:
    """``concurrency`` rq workers on one queue, each in a thread of this process.

    Args:
        queue: the rq queue name.
        connect: makes a Redis client; every thread gets its own.
        concurrency: how many jobs run at once.
        maintenance_interval: seconds between rq's registry maintenance (which retries the jobs
            of dead workers).
        logging_level: rq's log level.

    Raises:
        redis.ConnectionError: when Redis cannot be reached (rq names each connection).
    """

    def __init__(
        self,
        queue: str,
        *,
        connect: Callable[[], redis.Redis],
        concurrency: int,
        maintenance_interval: int,
        logging_level: str = "INFO",
    ) -> None:
        self.queue = queue
        self._connect = connect
        self._logging_level = logging_level
        # The pid alone repeats across container restarts (it is 1), while rq refuses a name
        # whose previous owner has not expired yet.
        prefix = f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"
        self._workers: list[ThreadWorker] = []
        self._threads: list[threading.Thread] = []
        self._helpers: list[threading.Thread] = []
        self._scheduler: ThreadScheduler | None = None
        self._worked = [False] * concurrency
        clock = MaintenanceClock(maintenance_interval)
        try:
            for index in range(concurrency):
                worker = ThreadWorker(
                    [queue],
                    name=f"{prefix}.{index}",
                    connection=connect(),
                    serializer=JSONSerializer,
                    maintenance_interval=maintenance_interval,
                    worker_ttl=WORKER_TTL,
                    # Job descriptions carry ids only, but keep rq from logging them at all.
                    log_job_description=False,
                )
                worker.maintenance_clock = clock
                self._workers.append(worker)
        except BaseException:
            self.close()
            raise
        self._failure: WorkerThreadError | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # set by request_stop(), never by a signal handler
        self._done = threading.Event()  # the worker threads have ended
        self._started = False
        self._stop_requested_at: float | None = None
        self._signalled_at: float | None = None

    def run(self, *, burst: bool = False) -> bool:
        """Work the queue until stopped (SIGTERM, SIGINT, ``request_stop()``), or with ``burst``
        until it is empty.

        Returns:
            Whether any job was processed.

        Raises:
            WorkerThreadError: when a thread ended on its own; the other threads were stopped.
        """
        if burst:
            self._enqueue_due_jobs()
        else:
            self._scheduler = self._new_scheduler()
            self._helpers.append(threading.Thread(target=self._schedule, name="scheduler", daemon=True))
        self._helpers.append(threading.Thread(target=self._beat, name="heartbeats", daemon=True))
        self._threads = [
            threading.Thread(target=self._work, args=(index, burst), name=worker.name, daemon=True)
            for index, worker in enumerate(self._workers)
        ]
        with self._signals_handled():
            for thread in (*self._helpers, *self._threads):
                thread.start()
            self._started = True
            self._wait_for_threads()
            self._done.set()
            self._stopping.set()
            for helper in self._helpers:
                helper.join(timeout=10)
        if self._failure is not None:
            raise self._failure
        return any(self._worked)

    def request_stop(self) -> None:
        """Warm shut down: every thread finishes the job it runs, takes no other, and ends."""
        with self._lock:
            if self._stop_requested_at is not None:
                return
            self._stop_requested_at = time.monotonic()
        busy = sum(bool(worker.executions) for worker in self._workers)
        log.info("warm shut down requested", queue=self.queue, threads=len(self._workers), count=busy)
        for worker in self._workers:
            worker.stop_after_current_job()
        if self._scheduler is not None:
            self._scheduler.request_stop()  # type: ignore[no-untyped-call]
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        """Whether the threads were told to stop (after a signal, or by ``request_stop()``)."""
        return self._stop_requested_at is not None

    def status(self) -> PoolStatus:
        """A snapshot for ``/healthz`` and the threads gauge; safe to take from any thread."""
        now = time.time()
        threads: list[threading.Thread | None] = [*self._threads] or [None] * len(self._workers)
        return PoolStatus(
            queue=self.queue,
            started=self._started,
            stopping=self.stopping,
            threads=tuple(
                _thread_status(worker, thread, now) for worker, thread in zip(self._workers, threads, strict=True)
            ),
            helpers=tuple((helper.name, helper.is_alive()) for helper in self._helpers),
        )

    def close(self) -> None:
        """Close the Redis connections of the threads and the scheduler."""
        for worker in self._workers:
            worker.connection.close()
        if self._scheduler is not None:
            self._scheduler.disconnect()

    def _work(self, index: int, burst: bool) -> None:
        worker = self._workers[index]
        try:
            self._worked[index] = bool(
                worker.work(burst=burst, logging_level=self._logging_level, with_scheduler=False)
            )
        except Exception as exc:  # raised again by run(), in the main thread
            log.exception("worker thread failed", worker=worker.name, reason=type(exc).__name__)
            self._fail(WorkerThreadError(worker.name, type(exc).__name__))
            return
        if not burst and not self.stopping:
            # rq's loop logged why (it ends on an exception it does not expect).
            self._fail(WorkerThreadError(worker.name, "its rq loop ended"))

    def _fail(self, failure: WorkerThreadError) -> None:
        with self._lock:
            self._failure = self._failure or failure
        self.request_stop()

    def _wait_for_threads(self) -> None:
        """Main thread: turn a signal into a stop request, and wait for the worker threads."""
        while True:
            if self._signalled_at is not None:
                self.request_stop()
            alive = [
                (worker, thread)
                for worker, thread in zip(self._workers, self._threads, strict=True)
                if thread.is_alive()
            ]
            if not alive:
                return
            if self._only_idle_left_too_long([worker for worker, _ in alive]):
                log.warning("worker threads left waiting for redis", queue=self.queue, count=len(alive))
                return
            alive[0][1].join(timeout=_POLL)

    def _only_idle_left_too_long(self, alive: list[ThreadWorker]) -> bool:
        stop_requested_at = self._stop_requested_at
        if stop_requested_at is None or time.monotonic() - stop_requested_at < IDLE_EXIT_GRACE:
            return False
        return not any(worker.executions for worker in alive)

    def _beat(self) -> None:
        """Heartbeat thread: keep every running job registered as started, and its worker alive."""
        while not self._done.wait(HEARTBEAT_INTERVAL):
            for worker in self._workers:
                for execution in list(worker.executions.copy().values()):
                    _renew(worker, execution)

    def _schedule(self) -> None:
        """Scheduler thread: rq's loop, begun again after a Redis error, until the pool stops."""
        scheduler = self._scheduler
        assert scheduler is not None
        while not self._stopping.is_set():
            try:
                scheduler.work()  # type: ignore[no-untyped-call]  # returns once request_stop() was called
            except redis.RedisError as exc:
                log.warning("scheduler interrupted", queue=self.queue, reason=type(exc).__name__)
                self._stopping.wait(5)
        if scheduler.acquired_locks:  # it stopped on an error: let a standby take over now
            try:
                scheduler.stop()  # type: ignore[no-untyped-call]
            except redis.RedisError as exc:
                log.warning("scheduler lock not released", queue=self.queue, reason=type(exc).__name__)

    def _new_scheduler(self) -> ThreadScheduler:
        return ThreadScheduler.open(self.queue, self._connect, logging_level=self._logging_level)

    def _enqueue_due_jobs(self) -> None:
        """Burst mode: move due scheduled jobs to the queue once, as rq's burst worker does."""
        scheduler = self._new_scheduler()
        try:
            scheduler.acquire_locks()  # type: ignore[no-untyped-call]
            if scheduler.acquired_locks:
                try:
                    scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
                finally:
                    scheduler.release_locks()  # type: ignore[no-untyped-call]
        finally:
            scheduler.disconnect()

    @contextmanager
    def _signals_handled(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # embedded in a thread (tests): the caller stops the pool with request_stop()
            return
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only a flag: a signal handler runs between two bytecodes of the main thread, which may
        # hold any lock; the main thread's wait loop turns the flag into request_stop().
        now = time.monotonic()
        if self._signalled_at is None:
            self._signalled_at = now
            return
        if now - self._signalled_at < REPEATED_SIGNAL_WINDOW:
            return
        # Cold shut down: the running jobs are abandoned, and live workers retry them once
        # their registration expires, as if this process had been killed.
        log.warning("cold shut down", queue=self.queue, reason=signal.Signals(signum).name)
        os._exit(EXIT_COLD_SHUTDOWN)


def _renew(worker: ThreadWorker, execution: Execution) -> None:
    try:
        worker.maintain_heartbeats(execution.job, execution)
    except redis.RedisError as exc:
        # The next beat tries again; the registration outlives two missed beats.
        log.warning("job heartbeat failed", worker=worker.name, job_id=execution.job_id, reason=type(exc).__name__)


def _thread_status(worker: ThreadWorker, thread: threading.Thread | None, now: float) -> ThreadStatus:
    executions = list(worker.executions.copy().values())
    heartbeat = worker.last_heartbeat
    return ThreadStatus(
        name=worker.name,
        alive=thread is not None and thread.is_alive(),
        busy=bool(executions),
        suspended=worker.get_state() == WorkerStatus.SUSPENDED,
        last_heartbeat=heartbeat.timestamp() if heartbeat is not None else None,
        overdue_jobs=tuple(execution.job_id for execution in executions if _overdue(execution, now)),
    )


def _overdue(execution: Execution, now: float) -> bool:
    job = execution.job
    timeout = job.timeout or Queue.DEFAULT_TIMEOUT
    if job.started_at is None or timeout < 0:  # not started yet, or no timeout
        return False
    return bool(now - job.started_at.timestamp() > timeout + OVERDUE_GRACE)
