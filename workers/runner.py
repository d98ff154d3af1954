"""``capture-relay worker``: one process on one queue, several jobs at once in threads.

Choices that matter for not losing work and for throughput (reference/python-stack.md §1.5,
§1.9; workers/pool.py has the details):
- one queue per process: rq then dequeues with BLMOVE into an intermediate list, so a crash
  between dequeue and registration cannot drop the job; with several queues it uses BLPOP;
- threads, not a fork per job (a fork costs ~25 ms here): the jobs wait on Capture and on
  destinations, and the metrics stay in one process, served with ``/healthz`` on one port;
- running jobs are registered for 30 s and renewed while they run, and a short maintenance
  interval makes a live worker retry the jobs of a killed one within a minute or two.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from functools import partial

from prometheus_client import CollectorRegistry

from service.redisconn import connect_worker
from service.settings import Settings
from workers import context
from workers.health import PoolCollector, serving
from workers.pool import WorkerPool


def run_worker(settings: Settings, *, queue: str, burst: bool = False, concurrency: int | None = None) -> bool:
    """Work the rq queue named ``queue`` until SIGTERM/SIGINT (or, with ``burst``, until it is empty).

    Args:
        settings: the configuration.
        queue: the rq queue name (``settings.ingest.queue`` or ``settings.delivery.queue``).
        burst: drain the queue with every thread, then return.
        concurrency: jobs at once; ``settings.worker.concurrency`` by default.

    Returns:
        Whether any job was processed.

    Raises:
        redis.ConnectionError: when Redis cannot be reached at start-up.
        workers.pool.WorkerThreadError: when a thread ended on its own (the others were stopped).
        workers.health.HealthPortError: when ``worker.metrics_port`` is taken.
    """
    if concurrency is not None and concurrency != settings.worker.concurrency:
        # The context sizes per-thread resources (sink connection pools) from the settings.
        worker = settings.worker.model_copy(update={"concurrency": concurrency})
        settings = settings.model_copy(update={"worker": worker})
    connection = connect_worker(settings.redis_url)
    registry = CollectorRegistry()
    with ExitStack() as stack:
        stack.callback(connection.close)
        context.install(stack.enter_context(context.open_context(settings, connection, registry)))
        pool = WorkerPool(
            queue,
            connect=partial(connect_worker, settings.redis_url),
            concurrency=settings.worker.concurrency,
            maintenance_interval=settings.worker.maintenance_interval,
            logging_level=settings.logging.level.upper(),
        )
        stack.callback(pool.close)
        registry.register(PoolCollector(pool.status))
        if settings.worker.metrics_port is not None:
            stack.enter_context(serving(settings.worker.metrics_port, registry, pool.status, time.time))
        return pool.run(burst=burst)
