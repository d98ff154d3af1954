"""A worker process's own HTTP port: ``/metrics`` for Prometheus and ``/healthz`` for probes.

``/healthz`` answers 200 while every thread of the worker pool is alive and its rq heartbeat
is recent, and 503 otherwise, with a one-line JSON body naming the reason. A thread can be
alive and still be stuck: a job still running a minute past its own timeout means the job's
thread did not take the timeout exception (it waits in C code), and only a restart frees it.
While the pool stops after SIGTERM, threads that finished are expected: the answer is 200.

The server is the standard library's WSGI server, one thread per request, with prometheus
client's WSGI app for ``/metrics``; it binds every interface because the kubelet and
Prometheus reach the pod by its address.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Beyond this a thread's last rq heartbeat is stale. Idle threads beat every few seconds and
# busy ones every 10 s; during a Redis outage rq's reconnect back-off waits up to 60 s.
HEARTBEAT_STALE_AFTER = 90.0
# rq's forking worker kills a job's process at its timeout + 60 s; a thread cannot be killed.
OVERDUE_GRACE = 60.0


@dataclass(frozen=True, slots=True)
class ThreadStatus:
    """One worker thread as the health check sees it."""

    name: str
    alive: bool
    busy: bool
    # Unix time of the thread's last rq heartbeat; None before its first.
    last_heartbeat: float | None
    # Jobs running past their timeout + OVERDUE_GRACE.
    overdue_jobs: tuple[str, ...] = ()
    # Paused by `rq suspend`: rq sends no heartbeats then, and a restart would not help.
    suspended: bool = False


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A snapshot of a worker pool, taken when a probe or a scrape asks."""

    queue: str
    started: bool
    stopping: bool
    threads: tuple[ThreadStatus, ...]
    # The pool's own helper threads (heartbeats, scheduler) and whether each is alive.
    helpers: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, slots=True)
class Health:
    """The verdict of ``/healthz``."""

    healthy: bool
    body: dict[str, object]


def assess(status: PoolStatus, now: float) -> Health:
    """Judge a pool's snapshot at Unix time ``now``."""
    busy = sum(thread.busy for thread in status.threads)
    summary: dict[str, object] = {"queue": status.queue, "threads": len(status.threads), "busy": busy}
    if status.stopping:
        return Health(True, {"status": "stopping", **summary})
    if not status.started:
        return Health(False, {"status": "starting", **summary})
    problem = _problem(status, now)
    if problem is not None:
        return Health(False, {"status": "unhealthy", **problem, **summary})
    return Health(True, {"status": "ok", **summary})


def _problem(status: PoolStatus, now: float) -> dict[str, object] | None:
    for helper, alive in status.helpers:
        if not alive:
            return {"reason": "thread_ended", "thread": helper}
    for thread in status.threads:
        if not thread.alive:
            return {"reason": "thread_ended", "thread": thread.name}
        stale = thread.last_heartbeat is None or now - thread.last_heartbeat > HEARTBEAT_STALE_AFTER
        if stale and not thread.suspended:
            return {"reason": "heartbeat_stale", "thread": thread.name}
        if thread.overdue_jobs:
            return {"reason": "job_overdue", "thread": thread.name, "job_id": thread.overdue_jobs[0]}
    return None


class PoolCollector(Collector):
    """``capture_relay_worker_threads{queue, state}``: how many of the pool's threads are busy."""

    def __init__(self, status: Callable[[], PoolStatus]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        """One gauge per state, read from the pool at scrape time."""
        status = self._status()
        family = GaugeMetricFamily(
            "capture_relay_worker_threads",
            "Threads of this worker process running a job (busy) or waiting for one (idle).",
            labels=["queue", "state"],
        )
        busy = sum(thread.busy for thread in status.threads if thread.alive)
        alive = sum(thread.alive for thread in status.threads)
        family.add_metric([status.queue, "busy"], busy)
        family.add_metric([status.queue, "idle"], alive - busy)
        yield family


class _Server(ThreadingMixIn, WSGIServer):
    # A probe stuck on a slow client must not keep the process from exiting.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """No access log: probes every few seconds would drown the job lines (and bypass structlog)."""


_WsgiApp = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


def health_app(registry: CollectorRegistry, status: Callable[[], PoolStatus], clock: Callable[[], float]) -> _WsgiApp:
    """The WSGI app of the port: ``/metrics``, ``/healthz``, 404 for anything else."""
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            health = assess(status(), clock())
            return _json(start_response, "200 OK" if health.healthy else "503 Service Unavailable", health.body)
        return _json(start_response, "404 Not Found", {"status": "not_found"})

    return app


def _json(start_response: StartResponse, status: str, body: dict[str, object]) -> list[bytes]:
    data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class HealthPortError(OSError):
    """The worker's port cannot be served (taken, or not allowed)."""

    def __init__(self, port: int, exc: OSError) -> None:
        super().__init__(f"cannot serve worker.metrics_port {port}: {exc.strerror or exc}")
        self.port = port


@contextmanager
def serving(
    port: int, registry: CollectorRegistry, status: Callable[[], PoolStatus], clock: Callable[[], float]
) -> Iterator[int]:
    """Serve the port in a background thread until the block ends; yields the bound port.

    Raises:
        HealthPortError: when the port is taken.
    """
    try:
        server = make_server(
            "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
            port,
            health_app(registry, status, clock),
            server_class=_Server,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise HealthPortError(port, exc) from exc
    thread = threading.Thread(target=server.serve_forever, name="worker-http", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
