"""``capture-relay worker``: one RQ worker process on one queue, jobs run in-process.

Two choices matter for not losing work (see reference/python-stack.md §1.5 and §1.9):
- one queue per process: rq then dequeues with BLMOVE into an intermediate list, so a crash
  between dequeue and registration cannot drop the job; with several queues it uses BLPOP;
- ``SimpleWorker``: no fork per job (a fork costs ~25 ms here), and metrics stay in one process.
A short maintenance interval makes a live worker requeue the jobs of a killed one quickly.
"""

from __future__ import annotations

from contextlib import ExitStack

from prometheus_client import CollectorRegistry, start_http_server
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer

from service.redisconn import connect_worker
from service.settings import Settings
from workers import context


def run_worker(settings: Settings, *, burst: bool = False) -> bool:
    """Work the event queue until stopped (or, with ``burst``, until it is empty).

    Returns:
        Whether any job was processed.
    """
    connection = connect_worker(settings.redis_url)
    registry = CollectorRegistry()
    with ExitStack() as stack:
        stack.callback(connection.close)
        context.install(stack.enter_context(context.open_context(settings, connection, registry)))
        if settings.worker.metrics_port is not None:
            start_http_server(settings.worker.metrics_port, registry=registry)
        queue = Queue(settings.ingest.queue, connection=connection, serializer=JSONSerializer)
        worker = SimpleWorker(
            [queue],
            connection=connection,
            serializer=JSONSerializer,
            maintenance_interval=settings.worker.maintenance_interval,
            # Job descriptions carry ids only, but keep rq from logging them at all.
            log_job_description=False,
        )
        return bool(worker.work(burst=burst, with_scheduler=True, logging_level=settings.logging.level.upper()))
