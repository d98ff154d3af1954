"""The whole system on one machine for pipeline tests: simulator (as Capture and as the sender of
webhooks), the real ingress, Redis, a recording receiver, and workers.

Workers run in this process (:meth:`Stack.drain`: rq's ``SimpleWorker`` in burst mode on each
queue, and rq's scheduler for delayed retries) or as real ``capture-relay worker`` processes
(:meth:`Stack.start_worker`), which the crash tests kill.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml
from prometheus_client import CollectorRegistry
from rq import Queue, SimpleWorker
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from capture_relay.embedded_redis import free_port
from service.app import create_app
from service.settings import Settings, from_mapping
from tests.support.receiver import Receiver, running_receiver
from tests.support.servers import serve_in_thread
from tests.support.simulator import API_CLIENT, RunningSimulator, running_simulator
from workers import context

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Stack:
    """A running system; ``settings`` is what the workers and the ingress were started with."""

    redis: redis.Redis
    redis_url: str
    sim: RunningSimulator
    receiver: Receiver
    ingress: str
    settings: Settings
    config: dict[str, Any]
    config_path: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    # --- Capture side: profile changes, announced by the simulator's emitter to the ingress ---

    def create(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """Create a profile in the simulator; returns the record."""
        answer = self.sim.control.post("/__sim/profiles", json={"attributes": attributes})
        answer.raise_for_status()
        record: dict[str, Any] = answer.json()
        return record

    def update(self, uuid: str, changes: dict[str, Any]) -> None:
        """Change a profile."""
        self.sim.control.patch(f"/__sim/profiles/{uuid}", json={"changes": changes}).raise_for_status()

    def delete(self, uuid: str) -> None:
        """Delete a profile."""
        self.sim.control.delete(f"/__sim/profiles/{uuid}").raise_for_status()

    def wait_emitted(self, timeout: float = 30) -> None:
        """Until the emitter has sent every webhook (and the ingress has answered)."""
        self.sim.control.post("/__sim/emitter/wait", json={"timeout": timeout}).raise_for_status()

    # --- workers ---

    def queue(self, name: str) -> Queue:
        """The rq queue ``events`` or ``deliveries``."""
        key = self.settings.ingest.queue if name == "events" else self.settings.delivery.queue
        return Queue(key, connection=self.redis, serializer=JSONSerializer)

    def pending(self, queues: tuple[str, ...] = ("events", "deliveries")) -> int:
        """Jobs waiting, running or scheduled on ``queues``."""
        total = 0
        for name in queues:
            queue = self.queue(name)
            total += queue.count
            total += StartedJobRegistry(queue.name, connection=self.redis).count
            total += ScheduledJobRegistry(queue.name, connection=self.redis).count  # type: ignore[no-untyped-call]
        return total

    def drain(
        self, timeout: float = 60, *, queues: tuple[str, ...] = ("events", "deliveries"), until: Any = None
    ) -> None:
        """Work ``queues`` in this process until nothing is waiting or scheduled there (or ``until()``).

        Raises:
            AssertionError: when work remains after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        chosen = [self.queue(name) for name in queues]
        scheduler = RQScheduler(chosen, connection=self.redis, serializer=JSONSerializer)
        while time.monotonic() < deadline:
            scheduler.acquire_locks()  # type: ignore[no-untyped-call]
            scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
            scheduler.release_locks()  # type: ignore[no-untyped-call]
            for queue in chosen:
                if queue.count:
                    worker = SimpleWorker([queue], connection=self.redis, serializer=JSONSerializer)
                    worker.log_job_description = False
                    worker.work(burst=True)
            if until is not None and until():
                return
            if until is None and self.pending(queues) == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.pending(queues)} jobs still pending after {timeout} s")

    def start_worker(self, queue: str, *extra: str) -> subprocess.Popen[bytes]:
        """A ``capture-relay worker`` process on ``queue`` (``events`` or ``deliveries``)."""
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "capture_relay",
                "worker",
                "--config",
                str(self.config_path),
                "--queue",
                queue,
                *extra,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(process)
        return process

    def wait_for(self, predicate: Any, timeout: float = 60, what: str = "condition") -> None:
        """Poll ``predicate()`` until true.

        Raises:
            AssertionError: naming ``what`` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} not reached within {timeout} s")


def pipeline_config(
    *,
    redis_url: str,
    sim: RunningSimulator,
    ingress: str,
    receiver: str,
    destinations: dict[str, dict[str, Any]] | None = None,
    routes: list[dict[str, Any]] | None = None,
    delivery: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A whole config: v3 from the simulator, Capture = the simulator, destinations on ``receiver``."""
    customer = sim.sim.config.customer_id
    default_destinations = {
        name: {"type": "http", "url": f"{receiver}/{name}", "signing_secret": SECRET, "timeout": "5s"}
        for name in ("crm", "bus", "lake")
    }
    return {
        "redis_url": redis_url,
        "sources": {
            "v3": {
                "jwks_url": f"{sim.url}/{customer}/login/jwk",
                "issuer": f"{sim.url}/{customer}/webhooks",
                "audience": f"{ingress}/webhooks/capture/v3",
            }
        },
        "capture": {
            "base_url": sim.url,
            "client_id": API_CLIENT.client_id,
            "client_secret": API_CLIENT.client_secret,
            "max_concurrency": 16,
            "retry_deadline": "10s",
        },
        "destinations": destinations if destinations is not None else default_destinations,
        "routes": routes
        if routes is not None
        else [{"name": "everything", "on": ["entityCreated", "entityUpdated", "entityDeleted"], "to": ["crm"]}],
        "delivery": {"schedule": [0, 0.2, 0.2, 0.2], "jitter": 0, **(delivery or {})},
        "worker": {"maintenance_interval": 5, "concurrency": 4},
    }


@contextmanager
def running_stack(tmp_path: Path, redis_url: str, **config: Any) -> Iterator[Stack]:
    """Simulator, ingress, receiver and an installed worker context; subprocess workers are killed at exit."""
    with ExitStack() as stack:
        sim = stack.enter_context(running_simulator())
        receiver = stack.enter_context(running_receiver())
        port = free_port()
        ingress = f"http://127.0.0.1:{port}"
        data = pipeline_config(redis_url=redis_url, sim=sim, ingress=ingress, receiver=receiver.url, **config)
        settings = from_mapping(data, {})
        config_path = tmp_path / "capture-relay.yaml"
        config_path.write_text(yaml.safe_dump(data))
        stack.enter_context(serve_in_thread(create_app(settings), port=port))
        connection = redis.Redis.from_url(redis_url)
        stack.callback(connection.close)
        context.install(stack.enter_context(context.open_context(settings, connection, CollectorRegistry())))
        sim.control.post("/__sim/targets", json={"url": f"{ingress}/webhooks/capture/v3", "format": "v3"})
        running = Stack(connection, redis_url, sim, receiver, ingress, settings, data, config_path)
        try:
            yield running
        finally:
            for process in running.workers:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
