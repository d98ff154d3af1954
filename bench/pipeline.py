"""Pipeline benchmark (DESIGN §6): events per second through fetch + route + 3 HTTP deliveries, as a
ratio to rq running no-op jobs on the same worker processes, measured in one run on one machine.

    .venv/bin/python -m bench.pipeline            # about five minutes; appends to bench/RESULTS.md
    .venv/bin/python -m bench.pipeline --help     # events, worker layout, latencies, py-spy

Every part of the system runs in a process of its own, as deployed: a private ``redis-server``;
the simulator (``python -m simulator``) as Capture and as the sender of webhooks; the real
ingress (``capture-relay serve``); a receiver (a small Starlette app under uvicorn) that answers
204 on ``/crm``, ``/bus`` and ``/lake`` and records each ``webhook-id`` with the time it answered;
and ``capture-relay worker`` processes, one queue each, ``--concurrency`` jobs at once in threads.

Phases:

  (0) baseline: N no-op rq jobs (``builtins.len`` of an event-sized dict, enqueued with the
      product's job options), split over the same worker processes, threads and queues;
  (1) N events with simulator latency 0: N profiles created in the simulator, whose emitter
      sends each as a signed v3 webhook to the ingress; the route ``everything`` sends each
      event to 3 HTTP destinations;
  (2) the same with 50 ms Capture latency (``PUT /__sim/faults {"latency": 0.05}``) and 20 ms
      at the receiver, with ``capture.max_concurrency`` raised and more threads, which must
      cover the waiting.

Default layout: 1 events worker with 4 threads and 2 deliveries workers with 8 (16 each in (2)):
a deliveries process is the first to be held by its GIL, and threads beyond what covers the
waiting only add contention for it.

Each phase first fills the queue (the ingress alone takes more than a thousand webhooks a
second; the emitter sends one at a time), then hides it (RENAME), starts the workers, waits
until every thread waits for a job, and puts the queue back: the drain is measured from that
moment to the last answer of the receiver, with nothing else running. Then, with the workers
still up, an open loop creates profiles at half the drain's rate for some seconds: its end-to-end
latency is counted from the moment the ingress accepted a webhook (the job's ``received_at``)
to the receiver's answer to the last of its 3 deliveries. With ``--profile`` a further drain of
phase (1) runs under py-spy (``--gil``), attached to one worker of each queue.

CPU per process group is sampled from /proc 20 times a second and interpolated to the
measured window; resident memory is each worker's VmRSS at the end of the drain (and its peak,
VmHWM). After each phase the run checks that every event reached each of the 3 destinations
exactly once (distinct ``webhook-id``), that nothing was dead-lettered and no job failed.
Exit status: 0 when the checks pass, 1 otherwise (the figures are recorded either way).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import datetime
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx2
import orjson
import redis
import uvicorn
import yaml
from rq import Queue, Retry, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bench.ingest import machine_facts
from capture_relay.embedded_redis import RedisServer, free_port
from service.events import Event
from simulator.config import SimulatorConfig
from tests.support.pipeline import SECRET
from tests.support.simulator import API_CLIENT
from workers.deadletter import DeadLetter
from workers.delivery_job import delivery_id_for

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
HOST = "127.0.0.1"
EVENTS_QUEUE = "capture-events"
DELIVERIES_QUEUE = "capture-deliveries"
DESTINATIONS = ("crm", "bus", "lake")
HELD_PREFIX = "bench:held:"
NOOP = "builtins.len"
GOAL_RATIO = 0.5
GOAL_SLOW_RATE = 200.0
SAMPLE_INTERVAL = 0.05
PROFILE_RATE = 100  # py-spy samples per second
PART_HEADING = "# Pipeline benchmark results"
# The CPU columns that are the run's own processes (the rest of the machine is "other").
_GROUPS = ("workers_events", "workers_deliveries", "simulator", "receiver", "redis", "ingress", "bench")
_TICK = os.sysconf("SC_CLK_TCK")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):\d+\)$")


# ---------------------------------------------------------------- the receiver (its own process)


class ReceiverState:
    """What the receiver answered: (destination, webhook-id, Unix time of the answer), in order."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.records: list[tuple[str, str, float]] = []


def receiver_app(state: ReceiverState) -> Starlette:
    """``POST /{destination}``: wait ``delay``, record, answer 204; ``/__bench/...``: read and steer."""

    async def deliver(request: Request) -> Response:
        await request.body()
        if state.delay:
            await asyncio.sleep(state.delay)
        state.records.append((request.path_params["name"], request.headers.get("webhook-id", ""), time.time()))
        return Response(status_code=204)

    async def records(request: Request) -> Response:
        start = int(request.query_params.get("from", "0"))
        return Response(orjson.dumps(state.records[start:]), media_type="application/json")

    async def count(request: Request) -> Response:
        return PlainTextResponse(str(len(state.records)))

    async def delay(request: Request) -> Response:
        state.delay = float(orjson.loads(await request.body())["seconds"])
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/__bench/records", records),
            Route("/__bench/count", count),
            Route("/__bench/delay", delay, methods=["PUT"]),
            Route("/{name}", deliver, methods=["POST"]),
        ]
    )


def serve_receiver(port: int) -> None:
    """Run the receiver with uvicorn (uvloop and httptools when installed) until SIGTERM."""
    config = uvicorn.Config(
        receiver_app(ReceiverState()), host=HOST, port=port, log_config=None, access_log=False, server_header=False
    )
    uvicorn.Server(config).run()


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A process the run started; ``group`` names its CPU column."""

    name: str
    group: str
    process: subprocess.Popen[bytes]
    log_path: Path
    terminated: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def terminate(self) -> None:
        """SIGTERM, once: a worker finishes its jobs (a second SIGTERM would make it exit at once)."""
        if self.process.poll() is None and not self.terminated:
            self.process.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        self.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def spawn(name: str, group: str, argv: list[str], directory: Path) -> Proc:
    """Start ``python argv`` in the repository root, its output in ``directory/name.log``."""
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    return Proc(name, group, process, log_path)


def wait_http(proc: Proc, url: str, timeout: float = 30) -> None:
    """Until ``url`` answers 200.

    Raises:
        RuntimeError: the process ended or did not get ready in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}; see {proc.log_path}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not get ready; see {proc.log_path}")
        time.sleep(0.1)


# ---------------------------------------------------------------- CPU and memory


def _process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system, system) of a live process, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / _TICK, int(fields[12]) / _TICK
    return user + system, system


def _machine_busy() -> float:
    values = [int(value) for value in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


def memory_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM (peak) of a live process, in KiB."""
    found = {"VmRSS": 0, "VmHWM": 0}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key = line.split(":", 1)[0]
        if key in found:
            found[key] = int(line.split()[1])
    return found["VmRSS"], found["VmHWM"]


class CpuSampler:
    """Samples the CPU of every tracked process and of the machine; answers for any past window."""

    def __init__(self) -> None:
        self._pids: dict[int, str] = {}  # pid -> group
        self._series: dict[int, tuple[list[float], list[tuple[float, float]]]] = {}
        self._machine: tuple[list[float], list[float]] = ([], [])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def track(self, pid: int, group: str) -> None:
        with self._lock:
            self._pids[pid] = group
            self._series.setdefault(pid, ([], []))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL)

    def sample(self) -> None:
        now = time.time()
        with self._lock:
            pids = list(self._pids)
        for pid in pids:
            try:
                value = _process_cpu(pid)
            except (OSError, ValueError, IndexError):
                continue  # ended
            times, values = self._series[pid]
            times.append(now)
            values.append(value)
        self._machine[0].append(now)
        self._machine[1].append(_machine_busy())

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds per group (``group``, and ``group_sys`` in the kernel) and ``machine`` in [start, end]."""
        self.sample()
        used: dict[str, float] = collections.defaultdict(float)
        with self._lock:
            pids = dict(self._pids)
        for pid, group in pids.items():
            times, values = self._series[pid]
            if len(times) < 2 or times[0] > start or times[-1] < end:
                continue  # not alive over the whole window
            total = _interpolate(times, [v[0] for v in values], end) - _interpolate(
                times, [v[0] for v in values], start
            )
            system = _interpolate(times, [v[1] for v in values], end) - _interpolate(
                times, [v[1] for v in values], start
            )
            used[group] += total
            used[f"{group}_sys"] += system
        times, busy = self._machine
        used["machine"] = _interpolate(times, busy, end) - _interpolate(times, busy, start)
        return dict(used)


def _interpolate(times: list[float], values: list[float], at: float) -> float:
    index = bisect.bisect_left(times, at)
    if index <= 0:
        return values[0]
    if index >= len(times):
        return values[-1]
    t0, t1 = times[index - 1], times[index]
    share = (at - t0) / (t1 - t0) if t1 > t0 else 1.0
    return values[index - 1] + share * (values[index] - values[index - 1])


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Layout:
    """Worker processes per queue and the threads (``--concurrency``) of each."""

    events_workers: int
    events_concurrency: int
    deliveries_workers: int
    deliveries_concurrency: int

    def describe(self) -> str:
        return (
            f"events {self.events_workers}x{self.events_concurrency}, "
            f"deliveries {self.deliveries_workers}x{self.deliveries_concurrency}"
        )

    @property
    def processes(self) -> int:
        return self.events_workers + self.deliveries_workers


def write_config(
    path: Path,
    *,
    redis_url: str,
    sim_url: str,
    ingress_url: str,
    receiver_url: str,
    capture_concurrency: int,
    worker_concurrency: int,
    log_level: str,
) -> Path:
    """The deployment's YAML: v3 from the simulator, Capture = the simulator, 3 destinations on the receiver.

    ``worker.concurrency`` is set as well as ``--concurrency``: the destinations' connection pools are
    sized by the setting, not by the command-line option.
    """
    customer = SimulatorConfig().customer_id
    config = {
        "redis_url": redis_url,
        "sources": {
            "v3": {
                "jwks_url": f"{sim_url}/{customer}/login/jwk",
                "issuer": f"{sim_url}/{customer}/webhooks",
                "audience": f"{ingress_url}/webhooks/capture/v3",
            }
        },
        "server": {"host": HOST},
        "capture": {
            "base_url": sim_url,
            "client_id": API_CLIENT.client_id,
            "client_secret": API_CLIENT.client_secret,
            "max_concurrency": capture_concurrency,
        },
        "destinations": {
            name: {"type": "http", "url": f"{receiver_url}/{name}", "signing_secret": SECRET, "timeout": "5s"}
            for name in DESTINATIONS
        },
        "routes": [
            {"name": "everything", "on": ["entityCreated", "entityUpdated", "entityDeleted"], "to": list(DESTINATIONS)}
        ],
        "logging": {"level": log_level, "format": "json"},
        "worker": {"concurrency": worker_concurrency},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# ---------------------------------------------------------------- results


@dataclass
class Window:
    """One measured stretch: how many items (events or jobs) went through, and what it cost."""

    label: str
    layout: Layout
    items: int
    unit: str  # "events" or "jobs"
    start: float
    end: float
    cpu: dict[str, float]
    rss: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # group -> [(rss, peak) KiB]
    commands: dict[str, int] = field(default_factory=dict)  # Redis calls by command
    redis_usec: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, open loops only
    offered: float = 0.0  # open loops: the rate asked for

    @property
    def seconds(self) -> float:
        return max(self.end - self.start, 1e-9)

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    def cores(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / self.seconds

    def per_item_us(self, group: str) -> float:
        return self.cpu.get(group, 0.0) / self.items * 1e6 if self.items else 0.0

    @property
    def other_cores(self) -> float:
        ours = sum(value for name, value in self.cpu.items() if name != "machine" and not name.endswith("_sys"))
        return max(0.0, (self.cpu.get("machine", 0.0) - ours) / self.seconds)

    def percentile(self, share: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


@dataclass
class Profile:
    """py-spy's GIL-holding samples of one worker process, grouped by component."""

    worker: str
    samples: int
    expected: int
    components: list[tuple[str, int]]
    top_functions: list[tuple[str, int]]
    in_job: int  # samples inside the job function (rq's own work around it excluded)
    in_job_components: dict[str, int]
    steps: list[tuple[str, int]]  # in the job: the innermost frame of our own code (the step it was in)


@dataclass
class PhaseSettings:
    label: str
    capture_latency: float
    destination_latency: float
    capture_concurrency: int
    layout: Layout


@dataclass
class Outcome:
    facts: dict[str, str]
    command: str
    started: datetime.datetime
    events: int
    baseline: Window
    phases: list[tuple[PhaseSettings, Window, Window | None]]
    profiled: Window | None
    profiles: list[Profile]
    problems: list[str]
    log_levels: dict[str, dict[str, int]]
    sim_calls: dict[str, dict[str, Any]]
    redis_version: str
    log_level: str
    code: str  # the commit the workers ran, and whether the tree had changes


# ---------------------------------------------------------------- the run


class Run:
    """The processes and the Redis connection of one benchmark run."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack, directory: Path) -> None:
        self.args = args
        self.stack = stack
        self.directory = directory
        self.problems: list[str] = []
        self.workers: list[Proc] = []
        self.worker_logs: list[Path] = []
        self.sampler = CpuSampler()
        self.sampler.start()
        stack.callback(self.sampler.stop)
        redis_server = stack.enter_context(RedisServer())
        self.redis_url = redis_server.url
        self.redis = redis.Redis.from_url(redis_server.url)
        stack.callback(self.redis.close)
        self.sampler.track(int(self.redis.info("server")["process_id"]), "redis")
        self.sampler.track(os.getpid(), "bench")
        self.receiver_url = self._start("receiver", ["-m", "bench.pipeline", "_receiver"], "/__bench/count")
        self.receiver = stack.enter_context(httpx2.Client(base_url=self.receiver_url, timeout=30))
        sim_port = free_port()
        self.sim_url = f"http://{HOST}:{sim_port}"
        self._start(
            "simulator",
            ["-m", "simulator", "--host", HOST, "--port", str(sim_port), "--client-id", API_CLIENT.client_id,
             "--client-secret", API_CLIENT.client_secret],
            "/__sim/stats",
            port=sim_port,
        )  # fmt: skip
        self.sim = stack.enter_context(httpx2.Client(base_url=self.sim_url, timeout=60))
        ingress_port = free_port()
        self.ingress_url = f"http://{HOST}:{ingress_port}"
        config = self.config("ingress", capture_concurrency=args.capture_concurrency)
        self._start(
            "ingress",
            ["-m", "capture_relay", "serve", "--config", str(config), "--host", HOST, "--port", str(ingress_port)],
            "/readyz",
            port=ingress_port,
        )
        target = {"url": f"{self.ingress_url}/webhooks/capture/v3", "format": "v3"}
        self.sim.post("/__sim/targets", json=target).raise_for_status()
        self.serial = 0

    def _start(self, name: str, argv: list[str], ready_path: str, port: int | None = None) -> str:
        if port is None:
            port = free_port()
            argv = [*argv, str(port)]
        proc = spawn(name, name, argv, self.directory)
        self.stack.callback(proc.stop)
        url = f"http://{HOST}:{port}"
        wait_http(proc, url + ready_path)
        self.sampler.track(proc.pid, name)
        return url

    def config(self, name: str, *, capture_concurrency: int, layout: Layout | None = None) -> Path:
        return write_config(
            self.directory / f"{name}.yaml",
            redis_url=self.redis_url,
            sim_url=self.sim_url,
            ingress_url=self.ingress_url,
            receiver_url=self.receiver_url,
            capture_concurrency=capture_concurrency,
            worker_concurrency=max(layout.events_concurrency, layout.deliveries_concurrency) if layout else 8,
            log_level=self.args.log_level,
        )

    # --- workers

    def start_workers(self, layout: Layout, config: Path) -> None:
        """Start the layout's ``capture-relay worker`` processes; return once every thread waits for a job."""
        plan = [("events", EVENTS_QUEUE, layout.events_workers, layout.events_concurrency),
                ("deliveries", DELIVERIES_QUEUE, layout.deliveries_workers, layout.deliveries_concurrency)]  # fmt: skip
        for kind, _, count, concurrency in plan:
            for _ in range(count):
                name = f"worker-{kind}-{len(self.worker_logs)}"
                argv = ["-m", "capture_relay", "worker", "--config", str(config), "--queue", kind,
                        "--concurrency", str(concurrency)]  # fmt: skip
                proc = spawn(name, f"workers_{kind}", argv, self.directory)
                self.workers.append(proc)
                self.worker_logs.append(proc.log_path)
                self.sampler.track(proc.pid, proc.group)
        deadline = time.monotonic() + 60
        for _, queue, count, concurrency in plan:
            rq_queue = Queue(queue, connection=self.redis)
            while Worker.count(queue=rq_queue) < count * concurrency:
                dead = [proc.name for proc in self.workers if proc.process.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"workers did not start ({dead or 'timeout'}); see {self.directory}")
                time.sleep(0.1)
        time.sleep(0.3)  # let the last threads reach their blocking pop

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            proc.stop()
        self.workers = []

    def worker_memory(self) -> dict[str, list[tuple[int, int]]]:
        found: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        for proc in self.workers:
            try:
                found[proc.group].append(memory_kib(proc.pid))
            except OSError:
                continue
        return dict(found)

    # --- queues

    def hold(self, queues: Iterable[str]) -> None:
        """Hide the queues' lists from the workers (they keep waiting on the empty key)."""
        for queue in queues:
            if self.redis.exists(f"rq:queue:{queue}"):
                self.redis.rename(f"rq:queue:{queue}", HELD_PREFIX + queue)

    def release(self, queues: Iterable[str]) -> float:
        """Put the held lists back in one transaction (RENAME wakes the waiting workers); returns when."""
        pipe = self.redis.pipeline(transaction=True)
        for queue in queues:
            pipe.rename(HELD_PREFIX + queue, f"rq:queue:{queue}")
        started = time.time()
        pipe.execute()
        return started

    def idle(self) -> bool:
        """No job waiting or running on either queue."""
        for queue in (EVENTS_QUEUE, DELIVERIES_QUEUE):
            if self.redis.llen(f"rq:queue:{queue}") or StartedJobRegistry(queue, connection=self.redis).count:
                return False
        return True

    # --- Capture side

    def create_profiles(self, count: int, rate: float | None = None) -> float:
        """Create ``count`` profiles in the simulator (at ``rate`` per second, or at once); returns the rate made."""
        started = time.monotonic()
        for index in range(count):
            if rate:
                pause = started + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            self.serial += 1
            attributes = {
                "email": f"bench.{self.serial}@example.com",
                "givenName": "Ada",
                "familyName": "Lovelace",
                "primaryAddress": {"city": "Leeds", "country": "GB"},
            }
            self.sim.post("/__sim/profiles", json={"attributes": attributes}).raise_for_status()
        return count / max(time.monotonic() - started, 1e-9)

    def wait_emitted(self) -> None:
        answer = self.sim.post("/__sim/emitter/wait", json={"timeout": 600})
        if answer.status_code != 200:
            self.problems.append(f"the simulator's emitter did not finish sending: {answer.text[:200]}")

    # --- the receiver

    def receiver_count(self) -> int:
        return int(self.receiver.get("/__bench/count").text)

    def records(self, start: int = 0) -> list[tuple[str, str, float]]:
        data = orjson.loads(self.receiver.get("/__bench/records", params={"from": start}).content)
        return [(str(destination), str(webhook_id), float(at)) for destination, webhook_id, at in data]

    def set_destination_latency(self, seconds: float) -> None:
        self.receiver.put("/__bench/delay", content=orjson.dumps({"seconds": seconds})).raise_for_status()

    def set_capture_latency(self, seconds: float) -> None:
        self.sim.put("/__sim/faults", json={"latency": seconds}).raise_for_status()

    # --- phases

    def baseline(self, jobs: int, layout: Layout) -> Window:
        """(0): no-op jobs, each process's share on its own queue, drained by the same worker processes."""
        self.redis.flushall()
        shares = {EVENTS_QUEUE: layout.events_workers, DELIVERIES_QUEUE: layout.deliveries_workers}
        counts = {queue: jobs * share // layout.processes for queue, share in shares.items()}
        counts[DELIVERIES_QUEUE] += jobs - sum(counts.values())
        ids = {queue: self._enqueue_noops(queue, count) for queue, count in counts.items()}
        self.hold(counts)
        config = self.config("phase-0", capture_concurrency=self.args.capture_concurrency, layout=layout)
        self.start_workers(layout, config)
        before = _commandstats(self.redis)
        release = self.release(counts)
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            done = sum(FinishedJobRegistry(q, connection=self.redis).count for q in counts)
            failed = sum(FailedJobRegistry(q, connection=self.redis).count for q in counts)
            if done + failed >= jobs:
                break
            time.sleep(0.05)
        commands, usec = _commandstats_delta(before, _commandstats(self.redis))
        ended = [
            job.ended_at.timestamp()
            for queue in ids
            for job in Job.fetch_many(ids[queue], connection=self.redis, serializer=JSONSerializer)
            if job is not None and job.ended_at is not None
        ]
        if len(ended) != jobs:
            self.problems.append(f"(0): {len(ended)} of {jobs} no-op jobs finished")
        end = max(ended) if ended else time.time()
        window = Window("(0) no-op rq jobs, drain", layout, len(ended), "jobs", release, end, {})
        window.cpu = self.sampler.window(release, end)
        window.rss = self.worker_memory()
        window.commands, window.redis_usec = commands, usec
        self.stop_workers()
        return window

    def _enqueue_noops(self, queue_name: str, count: int) -> list[str]:
        queue = Queue(queue_name, connection=self.redis, serializer=JSONSerializer)
        ids = []
        pipe = self.redis.pipeline()
        for _ in range(count):
            event = _sample_event()
            job = queue.enqueue_call(
                NOOP,
                args=(event.to_dict(),),
                job_id=f"noop-{event.event_id}",
                description=f"noop {event.event_id}",
                timeout=600,
                result_ttl=3600,
                failure_ttl=14 * 86400,
                retry=Retry(max=5, interval=[5, 30, 120, 600, 1800]),
                pipeline=pipe,
            )
            ids.append(job.id)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
        return ids

    def drain(
        self, settings: PhaseSettings, events: int, *, label: str, spy: bool = False
    ) -> tuple[Window, list[Profile]]:
        """Fill the events queue through the real path, then measure the workers draining it."""
        self.stop_workers()
        self.redis.flushall()
        self.set_capture_latency(settings.capture_latency)
        self.set_destination_latency(settings.destination_latency)
        self.sim.post("/__sim/stats/reset").raise_for_status()
        first_record = self.receiver_count()
        _say(f"  {label}: creating {events} profiles; the emitter sends them to the ingress ...")
        self.create_profiles(events)
        self.wait_emitted()
        accepted = int(self.redis.llen(f"rq:queue:{EVENTS_QUEUE}"))
        if accepted != events:
            self.problems.append(f"{label}: the ingress queued {accepted} of {events} events")
        self.hold([EVENTS_QUEUE])
        held = self.redis.lrange(HELD_PREFIX + EVENTS_QUEUE, 0, -1)
        held_ids = [raw.decode() if isinstance(raw, bytes) else raw for raw in held]
        config = self.config(settings.label, capture_concurrency=settings.capture_concurrency, layout=settings.layout)
        self.start_workers(settings.layout, config)
        spies = self._spy() if spy else []
        before = _commandstats(self.redis)
        release = self.release([EVENTS_QUEUE])
        _say(f"  {label}: draining {accepted} events ({settings.layout.describe()}) ...")
        self._wait_delivered(first_record + 3 * accepted, label)
        commands, usec = _commandstats_delta(before, _commandstats(self.redis))
        profiles = self._unspy(spies, release)
        records = self.records(first_record)
        end = max((at for _, _, at in records), default=time.time())
        window = Window(label, settings.layout, accepted, "events", release, end, {})
        window.cpu = self.sampler.window(release, end)
        window.rss = self.worker_memory()
        window.commands, window.redis_usec = commands, usec
        self.check(label, _event_ids(self.redis, held_ids), records)
        return window, profiles

    def open_loop(self, settings: PhaseSettings, rate: float, seconds: float, backlog: set[str]) -> Window:
        """Profiles created at ``rate`` for ``seconds`` (workers up); latency from acceptance to last delivery."""
        label = f"{settings.label} open loop at {rate:.0f} events/s"
        count = max(1, round(rate * seconds))
        first_record = self.receiver_count()
        _say(f"  {label}: {count} events ...")
        started = time.time()
        made = self.create_profiles(count, rate)
        self.wait_emitted()
        self._wait_delivered(first_record + 3 * count, label)
        records = self.records(first_record)
        end = max((at for _, _, at in records), default=time.time())
        registry = FinishedJobRegistry(EVENTS_QUEUE, connection=self.redis)
        ids = [job_id for job_id in registry.get_job_ids() if job_id not in backlog]
        events = _event_ids(self.redis, ids)
        self.check(label, events, records)
        window = Window(label, settings.layout, len(events), "events", started, end, {}, offered=rate)
        window.cpu = self.sampler.window(started, end)
        last: dict[str, float] = {}
        for _, webhook_id, at in records:
            event_id = webhook_id.rsplit(":", 1)[0]
            last[event_id] = max(last.get(event_id, 0.0), at)
        window.latencies = [last[event_id] - received for event_id, received in events.items() if event_id in last]
        if made < 0.9 * rate:
            self.problems.append(f"{label}: profiles were created at only {made:.0f}/s")
        return window

    def _wait_delivered(self, total: int, label: str) -> None:
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            if self.receiver_count() >= total and self.idle():
                return
            time.sleep(0.05)
        self.problems.append(f"{label}: not drained within {self.args.timeout:.0f} s")

    # --- checks

    def check(self, label: str, events: dict[str, float], records: list[tuple[str, str, float]]) -> None:
        """Every event delivered to each destination exactly once; no dead letter, no failed or waiting job."""
        seen = collections.Counter((destination, webhook_id) for destination, webhook_id, _ in records)
        expected = {(name, delivery_id_for(event_id, name)) for event_id in events for name in DESTINATIONS}
        missing = len(expected - set(seen))
        unexpected = len(set(seen) - expected)
        twice = sum(1 for count in seen.values() if count > 1)
        if missing or unexpected or twice or len(records) != len(expected):
            self.problems.append(
                f"{label}: {len(records)} deliveries for {len(events)} events x 3: {missing} missing,"
                f" {unexpected} unexpected, {twice} delivered more than once"
            )
        sizes = DeadLetter(self.redis, 14 * 86400).sizes(DESTINATIONS)
        if any(sizes.values()):
            self.problems.append(f"{label}: dead letter {sizes}")
        for queue in (EVENTS_QUEUE, DELIVERIES_QUEUE):
            failed = FailedJobRegistry(queue, connection=self.redis).count
            scheduled = ScheduledJobRegistry(queue, connection=self.redis).count  # type: ignore[no-untyped-call]
            if failed or scheduled:
                self.problems.append(f"{label}: {queue} has {failed} failed and {scheduled} scheduled jobs")

    # --- py-spy

    def _spy(self) -> list[tuple[Proc, subprocess.Popen[bytes], Path]]:
        py_spy = self.args.py_spy
        spies = []
        for group in ("workers_events", "workers_deliveries"):
            proc = next(proc for proc in self.workers if proc.group == group)
            raw = self.directory / f"profile-{proc.name}.txt"
            command = [py_spy, "record", "--pid", str(proc.pid), "--rate", str(PROFILE_RATE), "--gil",
                       "--nonblocking", "--format", "raw", "--output", str(raw)]  # fmt: skip
            spies.append((proc, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), raw))
        time.sleep(1.0)  # let py-spy attach
        return spies

    def _unspy(self, spies: list[tuple[Proc, subprocess.Popen[bytes], Path]], release: float) -> list[Profile]:
        seconds = time.time() - release
        profiles = []
        for proc, spy, raw in spies:
            spy.send_signal(signal.SIGINT)
            try:
                _, errors = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.communicate()
                continue
            if not raw.exists():
                _say(f"  py-spy on {proc.name} failed: {errors.decode(errors='replace').strip()[-300:]}")
                continue
            shutil.copyfile(raw, Path(tempfile.gettempdir()) / f"capture-relay-bench-{proc.group}.txt")
            profiles.append(summarise(proc.group, raw, seconds))
        return profiles

    def log_levels(self) -> dict[str, dict[str, int]]:
        """Log lines by level, per process kind (workers, ingress, simulator)."""
        found: dict[str, dict[str, int]] = {}
        paths = {"workers": self.worker_logs, "ingress": [self.directory / "ingress.log"]}
        for kind, files in paths.items():
            levels: collections.Counter[str] = collections.Counter()
            for path in files:
                for line in path.read_bytes().splitlines():
                    try:
                        levels[str(orjson.loads(line).get("level", "?"))] += 1
                    except (orjson.JSONDecodeError, AttributeError):
                        levels["not-json"] += 1
            found[kind] = dict(levels)
        return found


def _sample_event() -> Event:
    now = time.time()
    return Event(
        event_id=uuidlib.uuid4().hex,
        delivery_id=uuidlib.uuid4().hex,
        source="v3",
        type="entityCreated",
        entity_type="user",
        uuid=str(uuidlib.uuid4()),
        application_id="bench-application",
        client_id=API_CLIENT.client_id,
        occurred_at=float(int(now)),
        received_at=now,
    )


def _event_ids(connection: redis.Redis, job_ids: Sequence[str]) -> dict[str, float]:
    """event id -> received_at, read from the events' rq jobs."""
    found = {}
    for job in Job.fetch_many(list(job_ids), connection=connection, serializer=JSONSerializer):
        if job is not None:
            event = job.args[0]
            found[str(event["event_id"])] = float(event["received_at"])
    return found


def _commandstats(connection: redis.Redis) -> dict[str, tuple[int, int]]:
    stats = connection.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(entry["calls"]), int(entry["usec"])) for name, entry in stats.items()}


def _commandstats_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> tuple[dict[str, int], int]:
    calls = {name: after[name][0] - before.get(name, (0, 0))[0] for name in after}
    usec = sum(after[name][1] - before.get(name, (0, 0))[1] for name in after)
    return {name: count for name, count in calls.items() if count > 0 and name != "info"}, usec


# ---------------------------------------------------------------- py-spy summary

# Checked from the innermost frame outwards; the first frame that matches names the component.
_COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    ("logging (structlog, stdlib logging)", re.compile(r"(^|/)(structlog|logging)/|service/logs\.py")),
    ("metrics (prometheus_client)", re.compile(r"(^|/)prometheus_client/")),
    ("redis-py + hiredis (commands, replies, connection pool)", re.compile(r"(^|/)redis/")),
    ("rq (dequeue, job bookkeeping, registries)", re.compile(r"(^|/)rq/")),
    ("HTTP client (httpx2 and below)", re.compile(r"(^|/)(httpx2|httpcore\w*|h11|anyio)/")),
    ("routing (jmespath, rules, payload, changes)", re.compile(r"(^|/)jmespath/|workers/(rules|payload|changes)\.py")),
    ("our workers/ and service/ code", re.compile(r"(^|/)(workers|service)/")),
    ("JSON, zlib, datetime (stdlib)", re.compile(r"(^|/)json/|zlib|datetime\.py|_strptime\.py")),
    ("threads, sockets (stdlib)", re.compile(r"threading\.py|socket\.py|selectors\.py|queue\.py")),
]
_OUR_CODE = re.compile(r"(^|/)(workers|service)/")
# Frames of the job functions: a sample with one of them on its stack was spent inside the job.
_JOB_FRAMES = re.compile(r"^(process_event|deliver) \(workers/(pipeline|delivery)\.py:")


def summarise(worker: str, raw: Path, seconds: float) -> Profile:
    """Group py-spy's raw output (one collapsed stack and its count per line) by component."""
    components: collections.Counter[str] = collections.Counter()
    in_job: collections.Counter[str] = collections.Counter()
    steps: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        count, frames = int(number), stack.split(";")
        component = _component(frames)
        components[component] += count
        if any(_JOB_FRAMES.match(frame) for frame in frames):
            in_job[component] += count
            steps[_innermost(frames, _OUR_CODE)] += count
        functions[_innermost(frames, None)] += count
    return Profile(
        worker=worker,
        samples=sum(components.values()),
        expected=round(PROFILE_RATE * seconds),
        components=components.most_common(),
        top_functions=functions.most_common(8),
        in_job=sum(in_job.values()),
        in_job_components=dict(in_job),
        steps=steps.most_common(8),
    )


def _innermost(frames: list[str], pattern: re.Pattern[str] | None) -> str:
    """The innermost frame (matching ``pattern``, if given) as ``function (short path)``."""
    for frame in reversed(frames):
        found = _FRAME.match(frame)
        if found and (pattern is None or pattern.search(found.group("file"))):
            return f"{found.group('function')} ({_short_path(found.group('file'))})"
    return frames[-1] if pattern is None else "?"


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):
        found = _FRAME.match(frame)
        where = found.group("file") if found else frame
        for name, pattern in _COMPONENTS:
            if pattern.search(where):
                return name
    return "other (interpreter, stdlib)"


def _short_path(path: str) -> str:
    marker = "site-packages/"
    return path.split(marker, 1)[1] if marker in path else "/".join(path.split("/")[-2:])


# ---------------------------------------------------------------- the report

_PART_HEADER = f"""{PART_HEADING}

Produced by `bench/pipeline.py` (see its docstring); each run appends a section. Goals (DESIGN §6,
issue 4): events/s through fetch + route + 3 HTTP deliveries at simulator latency 0 at least 0.5
of rq's no-op jobs/s on the same worker processes, and at least 200 events/s end to end on 2 cores
with 50 ms Capture latency (and 20 ms at the destinations).
"""


def render(outcome: Outcome, note: str) -> str:
    facts = outcome.facts
    lines = [
        f"## Pipeline run {outcome.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: `nproc` {facts['nproc']}, {facts['cpu']}, {facts['memory']} RAM, Linux {facts['kernel']};"
        f" load average at start {facts['load']}",
        f"- software: Python {facts['python']}, rq {version('rq')}, redis-py {version('redis')}"
        f" (hiredis {_version('hiredis')}), httpx2 {version('httpx2')}, uvicorn {version('uvicorn')},"
        f" starlette {version('starlette')}, structlog {version('structlog')}, redis-server {outcome.redis_version}",
        f"- command: `{outcome.command}` (in the repository root), code at {outcome.code}",
        f"- workload: {outcome.events} events per drain, each a profile created in the simulator (entityCreated),"
        " sent by its emitter as a signed v3 webhook to the ingress; route `everything` → 3 HTTP destinations"
        " (`crm`, `bus`, `lake`) on one receiver process; each event is 1 Capture fetch (`/entity`), 1 events job"
        f" and 3 delivery jobs; worker logging at {outcome.log_level} (JSON lines to a file)",
        f"- baseline (0): {outcome.baseline.items} no-op rq jobs (`{NOOP}` of an event-sized dict, the product's"
        " job options), each queue's share proportional to its processes, same worker processes and threads",
        "",
        "| phase | workers: processesxthreads | items | s | rate /s | e2e p50 ms | e2e p99 ms | workers CPU"
        " | simulator | receiver | redis | ingress | other | worker RSS MiB (peak) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    rows = [outcome.baseline]
    for _, drained, opened in outcome.phases:
        rows += [drained] + ([opened] if opened else [])
    if outcome.profiled is not None:
        rows.append(outcome.profiled)
    lines += [_row(window) for window in rows]
    lines += [
        "",
        'CPU columns in cores (1.00 = one core busy) over the window; "other" is what the rest of the machine'
        " used meanwhile (noise). Drains run from the release of the filled queue to the receiver's last answer;"
        " open loops from the first profile created to the last answer, latency from the ingress accepting a"
        " webhook to the answer to its last of 3 deliveries.",
        "",
    ]
    lines += _goals(outcome)
    lines += ["", *_checks(outcome)]
    lines += ["", "### Where the time goes", "", *_costs(outcome)]
    if outcome.profiles:
        lines += ["", *_profile_tables(outcome)]
    lines += ["", "**What limits it** (derived from the figures above):", "", _limits(outcome)]
    if note:
        lines += ["", f"Notes: {note}"]
    return "\n".join(lines) + "\n"


def _row(window: Window) -> str:
    layout = window.layout
    workers = (
        f"{layout.events_workers}x{layout.events_concurrency} + "
        f"{layout.deliveries_workers}x{layout.deliveries_concurrency}"
    )
    p50 = f"{window.percentile(0.5) * 1000:.0f}" if window.latencies else "-"
    p99 = f"{window.percentile(0.99) * 1000:.0f}" if window.latencies else "-"
    rss = [value for values in window.rss.values() for value in values]
    memory = ", ".join(f"{now / 1024:.0f} ({peak / 1024:.0f})" for now, peak in rss) if rss else "-"
    worker_cores = window.cores("workers_events") + window.cores("workers_deliveries")
    rate = f"{window.rate:.0f} {window.unit}" + (f" (offered {window.offered:.0f})" if window.offered else "")
    return (
        f"| {window.label} | {workers} | {window.items} | {window.seconds:.1f} | {rate} | {p50} | {p99} |"
        f" {worker_cores:.2f} | {window.cores('simulator'):.2f} | {window.cores('receiver'):.2f} |"
        f" {window.cores('redis'):.2f} | {window.cores('ingress'):.2f} | {window.other_cores:.2f} | {memory} |"
    )


def _goals(outcome: Outcome) -> list[str]:
    baseline = outcome.baseline.rate
    fast = outcome.phases[0][1].rate if outcome.phases else 0.0
    ratio = fast / baseline if baseline else 0.0
    lines = [
        f"**Ratio (1)/(0): {ratio:.3f}** — {fast:.0f} events/s against {baseline:.0f} no-op jobs/s"
        f" (goal ≥ {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'not met'}). Each event is 4 rq jobs"
        f" (1 event + 3 deliveries), so (1) ran {4 * fast:.0f} jobs/s, {4 * ratio:.2f} of the no-op job rate;"
        " with one rq job per delivery the ratio cannot pass 0.25 even if the work inside the jobs were free.",
    ]
    if len(outcome.phases) > 1:
        slow = outcome.phases[1][1].rate
        met = "met" if slow >= GOAL_SLOW_RATE else "not met"
        lines += [
            "",
            f"**(2) with Capture and destination latency: {slow:.0f} events/s** (goal ≥ {GOAL_SLOW_RATE:.0f}: {met}).",
        ]
    return lines


def _checks(outcome: Outcome) -> list[str]:
    verdict = "passed" if not outcome.problems else "FAILED"
    lines = [
        f"**Checks: {verdict}.** After each drain and open loop: every event delivered to each of the 3 destinations"
        " exactly once (distinct `webhook-id` = `<event-id>:<destination>`), nothing in the dead letter, no failed or"
        f" scheduled (retried) job. Log lines by level: {outcome.log_levels}. Simulator calls per drain:"
        f" {outcome.sim_calls}.",
    ]
    lines += [f"  - problem: {problem}" for problem in outcome.problems]
    return lines


def _costs(outcome: Outcome) -> list[str]:
    lines = [
        "| window | events worker CPU µs/event | deliveries worker CPU µs/event (in kernel) | simulator µs/event"
        " | receiver µs/event | redis-server µs/event | Redis commands/event | µs inside Redis commands/event |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    windows = [outcome.baseline] + [drained for _, drained, _ in outcome.phases]
    if outcome.profiled is not None:
        windows.append(outcome.profiled)
    for window in windows:
        items = max(window.items, 1)
        commands = sum(window.commands.values()) / items
        lines.append(
            f"| {window.label} ({window.unit}) | {window.per_item_us('workers_events'):.0f} |"
            f" {window.per_item_us('workers_deliveries'):.0f} ({window.per_item_us('workers_deliveries_sys'):.0f}) |"
            f" {window.per_item_us('simulator'):.0f} | {window.per_item_us('receiver'):.0f} |"
            f" {window.per_item_us('redis'):.0f} | {commands:.1f} | {window.redis_usec / items:.0f} |"
        )
    if outcome.phases:
        window = outcome.phases[0][1]
        items = max(window.items, 1)
        top = sorted(window.commands.items(), key=lambda item: -item[1])[:14]
        listed = ", ".join(f"{name} {count / items:.1f}" for name, count in top)
        lines += ["", f"Redis commands per event in {window.label}, most frequent first: {listed}."]
    return lines


def _profile_tables(outcome: Outcome) -> list[str]:
    lines = [
        f"py-spy (`record --gil --nonblocking`, {PROFILE_RATE} Hz) on one worker of each queue during"
        f" {outcome.profiled.label if outcome.profiled else 'a drain'}: the samples in which one of its threads"
        " held the GIL, by component (the innermost frame that matches one), in all and inside the job function"
        " (`process_event` or `deliver`; the rest is rq around the job: dequeue, bookkeeping, registries, its log"
        " lines, heartbeats). py-spy finds a GIL holder in fewer samples than the CPU columns imply (its GIL"
        " detection is approximate): read the shares, not the totals.",
        "",
    ]
    for profile in outcome.profiles:
        total = max(profile.samples, 1)
        busy = profile.samples / profile.expected if profile.expected else 0.0
        lines += [
            f"**{profile.worker}**: GIL held in {busy:.0%} of the sampled time ({profile.samples} samples),"
            f" {profile.in_job / total:.0%} of it inside the job function.",
            "",
            "| component | all samples | inside the job |",
            "|---|--:|--:|",
        ]
        lines += [
            f"| {name} | {count / total:.0%} | {profile.in_job_components.get(name, 0) / total:.0%} |"
            for name, count in profile.components
        ]
        steps = "; ".join(f"{name} {count / total:.0%}" for name, count in profile.steps)
        leaves = "; ".join(f"{name} {count / total:.0%}" for name, count in profile.top_functions)
        lines += ["", f"Inside the job, by our innermost function: {steps}.", "", f"Hottest leaves: {leaves}.", ""]
    return lines[:-1]


def _limits(outcome: Outcome) -> str:
    base = outcome.baseline
    cores = float(outcome.facts["nproc"] or 1)
    job_us = (base.per_item_us("workers_events") + base.per_item_us("workers_deliveries")) or 1.0
    sentences = [
        f"In (0) one no-op rq job cost {job_us / 1000:.1f} ms of worker CPU, about"
        f" {sum(base.commands.values()) / max(base.items, 1):.0f} Redis commands: rq's own bookkeeping, paid by"
        " every job whatever it does."
    ]
    for settings, drained, _ in outcome.phases:
        events_us = drained.per_item_us("workers_events")
        deliveries_us = drained.per_item_us("workers_deliveries")
        others = sum(drained.per_item_us(group) for group in ("simulator", "receiver", "redis"))
        total = events_us + deliveries_us + others
        ours = sum(drained.cores(group) for group in _GROUPS)
        busiest = drained.cores("workers_deliveries") / max(settings.layout.deliveries_workers, 1)
        sentences.append(
            f"{settings.label}: {drained.rate:.0f} events/s. The workers spent {(events_us + deliveries_us) / 1000:.1f}"
            f" ms of CPU per event ({events_us / 1000:.1f} ms in the events job, {deliveries_us / 3000:.1f} ms per"
            f" delivery), of which rq's floor of 4 jobs is {4 * job_us / 1000:.1f} ms"
            f" ({4 * job_us / max(events_us + deliveries_us, 1):.0%}); with the simulator, the receiver and"
            f" redis-server an event cost {total / 1000:.1f} ms of CPU in all, so {cores:.0f} fully used cores would"
            f" allow about {cores / total * 1e6:.0f} events/s. The run's processes had {ours:.2f} cores (other"
            f" processes {drained.other_cores:.2f}); each deliveries process ran at {busiest:.2f} cores, where one"
            " GIL allows 1."
        )
    if len(outcome.phases) > 1:
        fast, slow = outcome.phases[0][1], outcome.phases[1][1]
        sentences.append(
            f"(2) kept {slow.rate / max(fast.rate, 1e-9):.0%} of (1)'s rate although each event waited"
            f" {outcome.phases[1][0].capture_latency * 1000:.0f} ms for Capture and"
            f" {outcome.phases[1][0].destination_latency * 1000:.0f} ms per delivery: the threads hide the waiting,"
            f" CPU decides. {GOAL_SLOW_RATE:.0f} events/s on {cores:.0f} cores leaves"
            f" {cores / GOAL_SLOW_RATE * 1000:.0f} ms of CPU per event for every process together."
        )
    return " ".join(sentences)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def record(report: str) -> None:
    """Append ``report`` to the pipeline part of RESULTS.md (the part is created when missing)."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    if PART_HEADING not in text:
        text = text.rstrip("\n") + "\n\n" + _PART_HEADER
    head, _, part = text.partition(PART_HEADING)
    # The part ends where the next top-level heading begins, if another part follows it.
    following = re.search(r"^# ", part, flags=re.MULTILINE)
    body, rest = (part[: following.start()], part[following.start() :]) if following else (part, "")
    text = head + PART_HEADING + body.rstrip("\n") + "\n\n" + report + ("\n" + rest if rest else "")
    RESULTS.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- command line


def run(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.UTC)
    facts = machine_facts()
    args.py_spy = shutil.which("py-spy") or (str(Path(sys.executable).with_name("py-spy")) if args.profile else None)
    if args.profile and (args.py_spy is None or not Path(args.py_spy).exists()):
        raise SystemExit("--profile: py-spy is not installed (.venv/bin/pip install py-spy)")
    fast = Layout(args.events_workers, args.events_concurrency, args.deliveries_workers, args.deliveries_concurrency)
    slow = Layout(
        args.events_workers,
        args.slow_events_concurrency,
        args.deliveries_workers,
        args.slow_deliveries_concurrency,
    )
    settings = [
        PhaseSettings("(1) latency 0", 0.0, 0.0, args.capture_concurrency, fast),
        PhaseSettings(
            f"(2) Capture {args.capture_latency * 1000:.0f} ms, destinations {args.destination_latency * 1000:.0f} ms",
            args.capture_latency,
            args.destination_latency,
            args.slow_capture_concurrency,
            slow,
        ),
    ]
    with ExitStack() as stack:
        if args.keep_logs:
            directory = Path(tempfile.mkdtemp(prefix="capture-relay-pipeline-"))
            _say(f"logs in {directory}")
        else:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="capture-relay-pipeline-")))
        bench = Run(args, stack, directory)
        stack.callback(bench.stop_workers)
        _say(f"up: redis, receiver, simulator, ingress; (0) {args.events} no-op jobs ({fast.describe()}) ...")
        baseline = bench.baseline(args.events, fast)
        _say(f"    {baseline.rate:.0f} jobs/s")
        phases: list[tuple[PhaseSettings, Window, Window | None]] = []
        sim_calls: dict[str, dict[str, Any]] = {}
        profiled: Window | None = None
        profiles: list[Profile] = []
        for phase in settings[: 1 if args.no_slow else 2]:
            drained, _ = bench.drain(phase, args.events, label=f"{phase.label}, drain")
            sim_calls[phase.label] = bench.sim.get("/__sim/stats").json()["calls"]
            _say(f"    {drained.rate:.0f} events/s")
            opened = None
            if args.open_seconds > 0:
                backlog = set(FinishedJobRegistry(EVENTS_QUEUE, connection=bench.redis).get_job_ids())
                opened = bench.open_loop(phase, max(1.0, drained.rate * args.open_share), args.open_seconds, backlog)
                _say(f"    p50 {opened.percentile(0.5) * 1000:.0f} ms, p99 {opened.percentile(0.99) * 1000:.0f} ms")
            phases.append((phase, drained, opened))
        if args.profile:
            phase = settings[0]
            profiled, profiles = bench.drain(
                phase, args.profile_events, label=f"{phase.label}, drain under py-spy", spy=True
            )
        bench.stop_workers()
        outcome = Outcome(
            facts=facts,
            command=_command_line(),
            started=started,
            events=args.events,
            baseline=baseline,
            phases=phases,
            profiled=profiled,
            profiles=profiles,
            problems=bench.problems,
            log_levels=bench.log_levels(),
            sim_calls=sim_calls,
            redis_version=str(bench.redis.info("server")["redis_version"]),
            log_level=args.log_level,
            code=_code_version(),
        )
    report = render(outcome, args.note)
    sys.stdout.write(report)
    if not args.no_record:
        record(report)
        _say(f"appended to {RESULTS}")
    return 0 if not outcome.problems else 1


def _code_version() -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--porcelain", "--", "workers", "service", "capture_relay", "simulator")
    return f"commit {commit}" + (" with uncommitted changes to the product" if changed else "")


def _command_line() -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(ROOT))
    except ValueError:
        shown = str(python)
    return " ".join([shown, "-m", "bench.pipeline", *sys.argv[1:]])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per drain, and no-op jobs (default 2000)")
    layout = parser.add_argument_group("worker layout")
    layout.add_argument("--events-workers", type=int, default=1, help="processes on the events queue (default 1)")
    layout.add_argument("--deliveries-workers", type=int, default=2, help="processes on the deliveries queue (2)")
    layout.add_argument("--events-concurrency", type=int, default=4, help="threads per events process (4)")
    layout.add_argument("--deliveries-concurrency", type=int, default=8, help="threads per deliveries process (8)")
    layout.add_argument("--capture-concurrency", type=int, default=16, help="capture.max_concurrency in (1) (16)")
    slow = parser.add_argument_group("phase (2)")
    slow.add_argument("--capture-latency", type=float, default=0.05, help="seconds added to each Capture call (0.05)")
    slow.add_argument("--destination-latency", type=float, default=0.02, help="seconds the receiver waits (0.02)")
    slow.add_argument("--slow-events-concurrency", type=int, default=16, help="threads per events process (16)")
    slow.add_argument("--slow-deliveries-concurrency", type=int, default=16, help="threads per deliveries process (16)")
    slow.add_argument("--slow-capture-concurrency", type=int, default=32, help="capture.max_concurrency (32)")
    loop = parser.add_argument_group("open loop (latency)")
    loop.add_argument("--open-share", type=float, default=0.5, help="its rate as a share of the drain's (0.5)")
    loop.add_argument("--open-seconds", type=float, default=10.0, help="its length in seconds (10; 0: skip)")
    slow.add_argument("--no-slow", action="store_true", help="skip phase (2)")
    parser.add_argument("--profile", action="store_true", help="one more drain of (1) under py-spy")
    parser.add_argument("--profile-events", type=int, default=1000, help="events of the profiled drain (1000)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a drain may take (600)")
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info", help="logging.level (info)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (the path is printed)")
    parser.add_argument("--note", default="", help="a sentence to add to the report")
    parser.add_argument("--no-record", action="store_true", help="print the report without appending to RESULTS.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["_receiver"]:
        serve_receiver(int(arguments[1]))
        return 0
    return run(_parser().parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
