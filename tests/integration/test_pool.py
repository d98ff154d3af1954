"""`capture-relay worker` as a real process: jobs at once in threads, warm and cold shut downs, its port.

The jobs (tests/support/pool_jobs.py) coordinate with the test through Redis keys, so the
tests observe concurrency and recovery without timing assertions.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
import yaml
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from capture_relay.embedded_redis import RedisServer, free_port
from workers.health import HEARTBEAT_STALE_AFTER, PoolStatus, ThreadStatus, assess
from workers.pool import EXIT_COLD_SHUTDOWN, REPEATED_SIGNAL_WINDOW

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "capture-events"
JOBS = "tests.support.pool_jobs"


class WorkerProcess:
    """A `capture-relay worker` subprocess logging to a file."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        with log.open("w") as output:
            # cwd: the worker imports the test jobs by their dotted path from the repository.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "capture_relay", "worker", "--config", str(config), *args],
                cwd=ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        """What the worker logged so far."""
        return self.log.read_text()

    def wait(self, timeout: float = 60) -> int:
        """Wait for the process to exit; its status."""
        return self.process.wait(timeout=timeout)


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def config(tmp_path: Path, redis_server: RedisServer) -> Callable[..., Path]:
    """Writes a worker config on the private Redis; keywords become the `worker:` section."""

    def write(**worker: Any) -> Path:
        path = tmp_path / f"worker-{len(list(tmp_path.glob('worker-*.yaml')))}.yaml"
        path.write_text(
            yaml.safe_dump({"redis_url": redis_server.url, "worker": {"maintenance_interval": "5s", **worker}})
        )
        return path

    return write


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[WorkerFactory]:
    """Starts worker processes, and kills any still running when the test ends."""
    started: list[WorkerProcess] = []

    def start(config: Path, *args: str) -> WorkerProcess:
        worker = WorkerProcess(config, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=10)


def _queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE, connection=connection, serializer=JSONSerializer)


def _job(connection: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)


def _wait_until(condition: Callable[[], bool], worker: WorkerProcess, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker.process.poll() is not None:
            raise AssertionError(f"the worker exited while waiting for {what}:\n{worker.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{worker.output()}")
        time.sleep(0.1)


def _health(port: int) -> httpx2.Response | None:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx2.HTTPError:
        return None


def test_burst_worker_runs_jobs_at_once_and_drains_the_queue(
    config: Callable[..., Path], start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    """With --concurrency 4, four jobs that can only finish together do, in one process; then the queue is empty."""
    queue = _queue(redis_client)
    meetings = [queue.enqueue(f"{JOBS}.rendezvous", "met", 4, 30, job_id=f"meet-{n}") for n in range(4)]
    tallies = [queue.enqueue(f"{JOBS}.tally", "tallied", job_id=f"tally-{n}") for n in range(8)]

    worker = start_worker(config(), "--burst", "--concurrency", "4")
    status = worker.wait()

    assert status == 0, worker.output()
    results = [_job(redis_client, job.id).return_value() for job in meetings]
    assert results == [{"arrived": 4, "pid": worker.process.pid}] * 4
    assert all(_job(redis_client, job.id).get_status() == JobStatus.FINISHED for job in tallies)
    assert redis_client.get("tallied") == b"8"
    assert queue.count == 0
    assert StartedJobRegistry(QUEUE, connection=redis_client).count == 0


def test_job_past_its_timeout_fails_in_its_thread_and_the_worker_carries_on(
    config: Callable[..., Path], start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    """A job over its timeout fails with rq's JobTimeoutException (not a signal error); the next job runs."""
    queue = _queue(redis_client)
    slow = queue.enqueue(f"{JOBS}.hold", "gate", job_id="slow", job_timeout=1)
    after = queue.enqueue(f"{JOBS}.tally", "tallied", job_id="after")

    worker = start_worker(config(), "--burst", "--concurrency", "1")
    status = worker.wait()

    assert status == 0, worker.output()
    assert slow.get_status(refresh=True) == JobStatus.FAILED
    result = slow.latest_result()
    assert result is not None
    assert "JobTimeoutException" in (result.exc_string or "")
    assert after.get_status(refresh=True) == JobStatus.FINISHED


def test_worker_port_answers_healthz_and_metrics(
    config: Callable[..., Path], start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    """The worker's port says it is healthy and exports the busy/idle threads gauge."""
    port = free_port()
    worker = start_worker(config(metrics_port=port), "--concurrency", "3")
    _wait_until(lambda: (response := _health(port)) is not None and response.status_code == 200, worker, "/healthz")

    health = httpx2.get(f"http://127.0.0.1:{port}/healthz")
    metrics = httpx2.get(f"http://127.0.0.1:{port}/metrics")
    missing = httpx2.get(f"http://127.0.0.1:{port}/nothing")
    worker.process.send_signal(signal.SIGTERM)

    assert worker.wait() == 0, worker.output()
    assert health.json() == {"status": "ok", "queue": QUEUE, "threads": 3, "busy": 0}
    assert metrics.status_code == 200
    assert f'capture_relay_worker_threads{{queue="{QUEUE}",state="idle"}} 3.0' in metrics.text
    assert "capture_relay_events_processed_total" in metrics.text
    assert missing.status_code == 404


def test_sigterm_lets_running_jobs_finish_and_takes_no_more(
    config: Callable[..., Path], start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    """SIGTERM while three jobs run: they finish with their results, the rest stay queued, exit status 0."""
    port = free_port()
    queue = _queue(redis_client)
    running = [queue.enqueue(f"{JOBS}.hold", "gate", job_id=f"hold-{n}", result_ttl=600) for n in range(3)]
    waiting = [queue.enqueue(f"{JOBS}.hold", "gate", job_id=f"later-{n}") for n in range(2)]
    worker = start_worker(config(metrics_port=port), "--concurrency", "3")
    _wait_until(lambda: redis_client.get("gate:started") == b"3", worker, "three jobs running")

    worker.process.send_signal(signal.SIGTERM)
    _wait_until(lambda: (r := _health(port)) is not None and r.json()["status"] == "stopping", worker, "stopping")
    redis_client.set("gate:open", 1)
    status = worker.wait()

    assert status == 0, worker.output()
    assert [_job(redis_client, job.id).return_value() for job in running] == ["held"] * 3
    assert [_job(redis_client, job.id).get_status() for job in waiting] == [JobStatus.QUEUED] * 2
    assert queue.count == 2
    assert StartedJobRegistry(QUEUE, connection=redis_client).count == 0
    assert FailedJobRegistry(QUEUE, connection=redis_client).count == 0
    assert "warm shut down requested" in worker.output()


def test_second_signal_exits_at_once_leaving_the_job_to_other_workers(
    config: Callable[..., Path], start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    """A second SIGTERM during the warm shut down exits with status 1 at once; the job stays started (abandoned)."""
    port = free_port()
    job = _queue(redis_client).enqueue(f"{JOBS}.hold", "gate", job_id="hold")
    worker = start_worker(config(metrics_port=port), "--concurrency", "1")
    _wait_until(lambda: redis_client.get("gate:started") == b"1", worker, "the job running")
    worker.process.send_signal(signal.SIGTERM)
    _wait_until(lambda: (r := _health(port)) is not None and r.json()["status"] == "stopping", worker, "stopping")
    time.sleep(REPEATED_SIGNAL_WINDOW)  # a repeat within this window is taken for the same signal

    worker.process.send_signal(signal.SIGTERM)
    status = worker.wait(timeout=10)

    assert status == EXIT_COLD_SHUTDOWN, worker.output()
    assert job.get_status(refresh=True) == JobStatus.STARTED
    assert StartedJobRegistry(QUEUE, connection=redis_client).get_job_ids() == ["hold"]
    assert "cold shut down" in worker.output()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_job_of_a_killed_worker_runs_again_on_another(
    config: Callable[..., Path], start_worker: WorkerFactory, redis_client: redis.Redis
) -> None:
    """A worker SIGKILLed mid-job (holding the scheduler lock too): another worker runs the job again within 2 min."""
    settings = config()
    job = _queue(redis_client).enqueue(
        f"{JOBS}.stall_first_run", "stall", job_id="stall", job_timeout=600, retry=Retry(max=2, interval=5)
    )
    first = start_worker(settings, "--concurrency", "2")
    _wait_until(lambda: redis_client.get("stall:runs") == b"1", first, "the first run")
    second = start_worker(settings, "--concurrency", "2")
    _wait_until(lambda: b"Listening on" in second.log.read_bytes(), second, "the second worker")

    first.process.kill()
    first.wait()
    killed_at = time.monotonic()
    _wait_until(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, second, "the job run again", timeout=120)
    recovered_in = time.monotonic() - killed_at
    second.process.send_signal(signal.SIGTERM)

    assert second.wait() == 0, second.output()
    assert _job(redis_client, job.id).return_value() == 2, f"recovered in {recovered_in:.0f} s"
    assert redis_client.get("stall:runs") == b"2"


def _status(**thread: Any) -> PoolStatus:
    defaults: dict[str, Any] = {"name": "w.0", "alive": True, "busy": False, "last_heartbeat": 1000.0}
    return PoolStatus(
        queue=QUEUE,
        started=True,
        stopping=False,
        threads=(ThreadStatus(**{**defaults, **thread}),),
        helpers=(("heartbeats", True),),
    )


@pytest.mark.parametrize(
    ("status", "healthy", "reason"),
    [
        pytest.param(_status(), True, None, id="ok"),
        pytest.param(_status(alive=False), False, "thread_ended", id="thread-ended"),
        pytest.param(_status(last_heartbeat=1000.0 - HEARTBEAT_STALE_AFTER - 1), False, "heartbeat_stale", id="stale"),
        pytest.param(_status(last_heartbeat=None), False, "heartbeat_stale", id="no-heartbeat"),
        pytest.param(_status(busy=True, overdue_jobs=("j",)), False, "job_overdue", id="overdue"),
        pytest.param(_status(last_heartbeat=None, suspended=True), True, None, id="suspended"),
        pytest.param(
            PoolStatus(queue=QUEUE, started=True, stopping=False, threads=(), helpers=(("scheduler", False),)),
            False,
            "thread_ended",
            id="scheduler-ended",
        ),
        pytest.param(
            PoolStatus(queue=QUEUE, started=True, stopping=True, threads=(ThreadStatus("w.0", False, False, None),)),
            True,
            None,
            id="stopping",
        ),
    ],
)
def test_health_verdict(status: PoolStatus, healthy: bool, reason: str | None) -> None:
    """/healthz is 200 while threads live and beat (or the pool is stopping), 503 naming why otherwise."""
    health = assess(status, now=1000.0)

    assert (health.healthy, health.body.get("reason")) == (healthy, reason)
