"""Ingest benchmark (DESIGN §6): verified + durably enqueued webhooks per second, as a ratio to a
bare Starlette route that answers 202 without work, measured in one run on one machine.

    .venv/bin/python -m bench.ingest            # about a minute; appends to bench/RESULTS.md
    .venv/bin/python -m bench.ingest --help     # durations, connections, generator, py-spy

Each server runs in a process of its own with uvicorn configured by
``capture_relay.cli.server_config`` (one worker; uvloop and httptools when installed):

  (a) a bare Starlette app: ``POST /webhooks/capture/v3`` answers 202 and reads nothing;
  (b) the real app (``create_app``) on a private ``redis-server``, with a JWKS served over HTTP
      from a thread of this process, logging JSON lines at info level as ``serve`` does (to a file).

Phases: warm-up and a closed loop of fixed duration for (a) and for (b) (same generator, same
connections, same request bodies), then an open loop on (b) at half of its peak rate for the
latency goal. To say what limits (b): a closed loop on ``app-timed``, a copy of (b) whose route
steps are wrapped in ``time.thread_time()``; the same steps timed one by one without load; and,
with ``--profile``, a py-spy profile of (b) under load. The closed loops use ``wrk`` with
``bench/ingest.lua`` when wrk is on the PATH, otherwise the Python generator of
``bench/loadgen.py``; the open loop always uses the Python generator (wrk has no fixed-rate mode).
Every token sent to (b) is unique and signed beforehand (``bench/tokenpool.py``, cached in /tmp).

Afterwards the run checks that Redis holds exactly one job and one dedup marker per webhook the
server accepted, that the client saw the same number of 202s, and that nothing got another status.
Exit status: 0 when the checks pass, 1 otherwise (the figures are recorded either way).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx2
import orjson
import redis
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.breakdown import (
    STEP_LOG,
    STEPS,
    Part,
    Profile,
    StepTimer,
    instrument_route,
    measure_parts,
    summarise_profile,
)
from bench.loadgen import LoadResult, LoadSpec, run_python, run_wrk
from bench.tokenpool import TokenPool, read_tokens
from capture_relay.cli import server_config
from capture_relay.embedded_redis import RedisServer, free_port
from service.intake import DEDUP_PREFIX
from service.logs import configure_logging
from service.settings import load
from tests.support.servers import JwksEndpoint, serve_in_thread
from tests.support.tokens import AUDIENCE, ISSUER, JWKS_PATH

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
CACHE_DIR = Path(tempfile.gettempdir()) / "capture-relay-bench"
V3_PATH = "/webhooks/capture/v3"
HOST = "127.0.0.1"
QUEUE = "capture-events"
GOAL_RATIO = 0.6
GOAL_P99_MS = 15.0
PROFILE_RATE = 200  # py-spy samples per second
PARTS_TOKENS = 300


# ---------------------------------------------------------------- the server processes


def bare_app() -> Starlette:
    """Baseline (a): the same path, answered 202 without reading the body or doing any work."""

    async def accept(request: Request) -> Response:
        return Response(status_code=202)

    async def healthz(request: Request) -> Response:
        return Response("ok")

    return Starlette(routes=[Route(V3_PATH, accept, methods=["POST"]), Route("/healthz", healthz)])


def serve(kind: str, config_path: str, port: int, info_path: str) -> None:
    """What ``capture-relay serve`` does (cli._serve + run_server).

    ``bare`` swaps in (a)'s app; ``app-timed`` is (b) with its steps timed (``instrument_route``).
    """
    settings = load(config_path, os.environ)
    configure_logging(settings.logging.level, settings.logging.format)
    timer = None
    if kind == "app-timed":
        timer = StepTimer()
        instrument_route(timer)
    config = server_config(settings, HOST, port)
    if kind == "bare":
        config.app = bare_app()
    config.load()
    loop_factory = config.get_loop_factory()
    info = {
        "http": f"{config.http_protocol_class.__module__}.{config.http_protocol_class.__name__}",
        "loop": f"{getattr(loop_factory, '__module__', '?')}.{getattr(loop_factory, '__qualname__', loop_factory)}",
        "workers": config.workers,
    }
    Path(info_path).write_text(json.dumps(info), encoding="utf-8")
    if timer is not None:
        # uvicorn re-raises the SIGTERM it handled once it has shut down; with the default
        # handler that would end the process before the timings are written.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.Server(config).run()
    if timer is not None:
        timer.dump(Path(info_path).with_suffix(".timings.json"))


@dataclass
class ServerProcess:
    """A server started by :func:`start_server`."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    info: dict[str, Any]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(kind: str, config_path: Path, directory: Path) -> ServerProcess:
    """Start a server process and wait until it is ready (for ``app``: Redis reachable and keys loaded)."""
    port = free_port()
    log_path, info_path = directory / f"{kind}.log", directory / f"{kind}.json"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest", "_serve", kind, str(config_path), str(port), str(info_path)],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    ready = f"http://{HOST}:{port}" + ("/healthz" if kind == "bare" else "/readyz")
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server {kind} exited with {process.returncode}; see {log_path}")
        try:
            if httpx2.get(ready, timeout=1).status_code == 200:
                break
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server {kind} did not get ready; see {log_path}")
        time.sleep(0.1)
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return ServerProcess(kind, port, process, log_path, info)


# ---------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds in user and in system mode, all threads, of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _machine_cpu() -> float:
    """CPU seconds all cores spent busy since boot."""
    values = [int(value) for value in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


@contextmanager
def cpu_window(pids: dict[str, int], into: dict[str, float]) -> Iterator[None]:
    """Record in ``into`` the CPU seconds each process (``name``: all, ``name_sys``: in the kernel) and
    the whole machine (``machine``) used in the block, and its length (``wall``)."""
    before = {name: _process_cpu(pid) for name, pid in pids.items()}
    machine, wall = _machine_cpu(), time.monotonic()
    yield
    for name, pid in pids.items():
        user, system = _process_cpu(pid)
        into[name] = user + system - sum(before[name])
        into[f"{name}_sys"] = system - before[name][1]
    into["machine"] = _machine_cpu() - machine
    into["wall"] = time.monotonic() - wall


# ---------------------------------------------------------------- phases


@dataclass
class Phase:
    """One measured load and what the processes spent on it."""

    label: str
    server: str  # the ServerProcess's name: bare, app or app-timed
    result: LoadResult
    cpu: dict[str, float]  # CPU seconds: server, redis, bench, children (generator), machine; and wall

    def cores(self, name: str) -> float:
        """CPU of ``name`` in cores, over the generator's measured duration."""
        if name == "generator":
            return self.result.cpu_seconds / self.result.duration
        return self.cpu.get(name, 0.0) / self.result.duration

    @property
    def other_cores(self) -> float:
        """Cores used by processes outside the benchmark during the window (noise)."""
        ours = sum(self.cpu.get(name, 0.0) for name in ("server", "redis", "bench", "children"))
        return max(0.0, (self.cpu["machine"] - ours) / self.cpu["wall"])


@dataclass
class Bench:
    """The state of one run."""

    args: argparse.Namespace
    pool: TokenPool
    redis: redis.Redis
    wrk: str | None
    cursor: int = 0  # next unused token
    phases: list[Phase] = field(default_factory=list)  # every load, warm-ups included

    def generate(self, spec: LoadSpec) -> LoadResult:
        if spec.rate == 0 and self.wrk is not None:
            return run_wrk(self.wrk, spec)
        finished = subprocess.run(
            [sys.executable, "-m", "bench.ingest", "_loadgen", spec.to_json()],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=spec.duration + 120,
            check=False,
        )
        if finished.returncode != 0:
            raise RuntimeError(f"the load generator failed: {finished.stderr.strip()[-2000:]}")
        return LoadResult.from_json(finished.stdout.strip().splitlines()[-1])

    def spec(self, server: ServerProcess, duration: float, *, unique: bool, rate: float = 0.0) -> LoadSpec:
        first, count = (self.cursor, self.pool.count - self.cursor) if unique else (0, min(self.pool.count, 5000))
        return LoadSpec(
            host=HOST,
            port=server.port,
            path=V3_PATH,
            tokens_file=str(self.pool.path),
            first=first,
            count=count,
            unique=unique,
            connections=self.args.connections,
            duration=duration,
            rate=rate,
        )

    def measure(self, label: str, server: ServerProcess, spec: LoadSpec) -> Phase:
        _say(f"  {label} ...")
        cpu: dict[str, float] = {}
        pids = {"server": server.pid, "redis": int(self.redis.info("server")["process_id"]), "bench": os.getpid()}
        with cpu_window(pids, cpu):
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = self.generate(spec)
            reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        # the generator's whole life (start-up included), for the noise estimate
        cpu["children"] = reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime
        if spec.unique:
            self.cursor += min(result.sent, spec.count)
        phase = Phase(label, server.name, result, cpu)
        self.phases.append(phase)
        _say(
            f"    {result.rate:8.0f} req/s  p50 {result.p50:6.2f} ms  p99 {result.p99:6.2f} ms  "
            f"statuses {result.statuses}  errors {result.errors}  server CPU {phase.cores('server'):.2f} cores"
        )
        return phase

    def ensure_tokens(self, needed: int) -> None:
        total = self.cursor + needed
        if total > self.pool.count:
            _say(f"  signing {total - self.pool.count} more tokens ...")
            self.pool.ensure(total)


# ---------------------------------------------------------------- checks


@dataclass
class Verification:
    client_202: int
    client_unanswered: int
    server_outcomes: dict[str, int]
    jobs: int
    markers: int
    non_2xx: int
    socket_errors: int
    log_levels: dict[str, int]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def server_outcomes(server: ServerProcess) -> dict[str, int]:
    """``capture_relay_webhooks_received_total`` for source v3, by outcome, from the server's /metrics."""
    text = httpx2.get(server.base_url + "/metrics", timeout=10).text
    outcomes: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("capture_relay_webhooks_received_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("source") == "v3":
                outcomes[labels["outcome"]] = int(float(line.rsplit(" ", 1)[1]))
    return outcomes


def verify(bench: Bench, outcomes: dict[str, int], log_paths: list[Path]) -> Verification:
    b_phases = [phase.result for phase in bench.phases if phase.server != "bare"]
    client_202 = sum(result.statuses.get("202", 0) for result in b_phases)
    unanswered = sum(result.unanswered for result in b_phases)
    all_results = [phase.result for phase in bench.phases]
    non_2xx = sum(result.non_2xx for result in all_results)
    socket_errors = sum(result.errors for result in all_results)
    accepted = outcomes.get("accepted", 0)
    jobs = int(bench.redis.llen(f"rq:queue:{QUEUE}"))
    markers = sum(1 for _ in bench.redis.scan_iter(match=f"{DEDUP_PREFIX}v3:*", count=5000))
    levels: dict[str, int] = {}
    for line in b"".join(path.read_bytes() for path in log_paths).splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            levels["not-json"] = levels.get("not-json", 0) + 1
            continue
        level = str(entry.get("level", "?"))
        levels[level] = levels.get(level, 0) + 1
    problems = []
    if jobs != accepted or markers != accepted:
        problems.append(f"Redis holds {jobs} jobs and {markers} dedup markers, the server accepted {accepted}")
    if not client_202 <= accepted <= client_202 + unanswered:
        problems.append(f"the clients saw {client_202} answers 202 (+{unanswered} unanswered), the server {accepted}")
    if any(count for outcome, count in outcomes.items() if outcome != "accepted"):
        problems.append(f"the server counted other outcomes: {outcomes}")
    if non_2xx or socket_errors:
        problems.append(f"{non_2xx} answers were not 2xx and {socket_errors} requests failed on the socket")
    statuses_200 = sum(result.statuses.get("200", 0) for result in b_phases)
    if statuses_200:
        problems.append(f"{statuses_200} answers 200 (duplicates): the token pool ran out")
    if levels.get("warning", 0) or levels.get("error", 0) or levels.get("critical", 0):
        problems.append(f"the server logged warnings or errors: {levels}")
    return Verification(client_202, unanswered, outcomes, jobs, markers, non_2xx, socket_errors, levels, problems)


# ---------------------------------------------------------------- the run


def machine_facts() -> dict[str, str]:
    cpu_model = "?"
    for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text(encoding="ascii").split("\n", 1)[0].split()[1]
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": nproc or str(os.cpu_count()),
        "cpu": cpu_model,
        "memory": f"{int(memory) / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def write_config(directory: Path, redis_url: str, jwks_url: str, log_level: str) -> Path:
    config = {
        "redis_url": redis_url,
        "sources": {"v3": {"jwks_url": jwks_url, "issuer": ISSUER, "audience": AUDIENCE}},
        "server": {"host": HOST},
        "logging": {"level": log_level, "format": "json"},
    }
    path = directory / "capture-relay.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class Steps:
    """Thread CPU per request of the route's steps, measured inside (b) under a closed loop."""

    phase: Phase
    micros: dict[str, float]  # step -> µs per call
    server_micros: float  # the server process's CPU per answered request
    server_sys_micros: float  # of which in the kernel


@dataclass
class Outcome:
    """Everything the report needs."""

    facts: dict[str, str]
    command: str
    generator: str
    servers: dict[str, dict[str, Any]]
    redis_version: str
    pool_note: str
    a: Phase
    b: Phase
    half: Phase
    commands_per_webhook: dict[str, float]
    redis_usec_per_webhook: float
    verification: Verification
    steps: Steps | None
    parts: list[Part]
    profile: Profile | None
    profile_phase: Phase | None
    started: datetime.datetime


def run(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.UTC)
    facts = machine_facts()
    wrk = shutil.which("wrk") if args.generator in ("auto", "wrk") else None
    if args.generator == "wrk" and wrk is None:
        raise SystemExit("--generator wrk: wrk is not on the PATH (apt-get install wrk)")
    py_spy = shutil.which("py-spy") if args.profile else None
    if args.profile and py_spy is None:
        raise SystemExit("--profile: py-spy is not on the PATH (pip install py-spy)")
    _say(f"token pool in {args.cache_dir} ...")
    sign_started = time.perf_counter()
    pool = TokenPool.open(args.cache_dir, args.tokens)
    signed = time.perf_counter() - sign_started
    pool_note = f"{pool.count} unique tokens in {args.cache_dir}" + (f", {signed:.0f} s to sign" if signed > 1 else "")

    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer())
        connection = redis.Redis.from_url(redis_server.url)
        stack.callback(connection.close)
        jwks_base = stack.enter_context(serve_in_thread(JwksEndpoint([pool.key.public_jwk]).app(JWKS_PATH)))
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="capture-relay-bench-")))
        config = write_config(directory, redis_server.url, jwks_base + JWKS_PATH, args.log_level)
        bare = start_server("bare", config, directory)
        stack.callback(bare.stop)
        app = start_server("app", config, directory)
        stack.callback(app.stop)
        bench = Bench(args, pool, connection, wrk)
        generator = (
            f"wrk ({wrk}, 1 thread, {args.connections} connections) for the closed loops"
            if wrk
            else f"Python asyncio/uvloop client ({args.connections} connections) for the closed loops"
        ) + f"; Python client ({args.connections} connections) for the open loop"
        _say(f"servers up: (a) pid {bare.pid} port {bare.port}, (b) pid {app.pid} port {app.port}; {generator}")

        duration, extra = args.duration, args.steps_seconds + (args.profile_seconds if py_spy else 0)
        bench.measure("(a) warm-up", bare, bench.spec(bare, args.warmup, unique=False))
        a = bench.measure("(a) bare Starlette 202", bare, bench.spec(bare, duration, unique=False))
        warm = bench.measure("(b) warm-up", app, bench.spec(app, args.warmup, unique=True))
        estimate = max(warm.result.rate, 100.0)
        bench.ensure_tokens(int(estimate * (1.6 * (duration + extra) + 0.55 * args.half_duration)) + PARTS_TOKENS)
        before = _commandstats(connection)
        b = bench.measure("(b) /webhooks/capture/v3", app, bench.spec(app, duration, unique=True))
        after = _commandstats(connection)
        b_202 = b.result.statuses.get("202", 0) or 1
        commands = {name: (after[name][0] - before.get(name, (0, 0))[0]) / b_202 for name in after}
        commands = {name: calls for name, calls in commands.items() if calls >= 0.01 and name != "info"}
        redis_usec = sum(after[name][1] - before.get(name, (0, 0))[1] for name in after) / b_202
        rate = b.result.rate / 2
        bench.ensure_tokens(int(rate * args.half_duration * 1.1 + b.result.rate * 1.6 * extra) + PARTS_TOKENS)
        half = bench.measure(
            f"(b) open loop at {rate:.0f} req/s", app, bench.spec(app, args.half_duration, unique=True, rate=rate)
        )
        profile = profile_phase = None
        if py_spy is not None:
            profile_phase, profile = _profiled(bench, app, py_spy, directory, args.profile_seconds)
        outcomes = server_outcomes(app)
        steps = None
        if args.steps_seconds > 0:
            steps, timed_outcomes = _timed_steps(bench, config, directory, args.steps_seconds)
            outcomes = {name: outcomes.get(name, 0) + timed_outcomes.get(name, 0) for name in outcomes | timed_outcomes}
        verification = verify(bench, outcomes, sorted(directory.glob("app*.log")))
        _say("  timing the route's steps one by one ...")
        parts = measure_parts(load(config, {}), pool.read(bench.cursor, PARTS_TOKENS), redis_server.url)
        outcome = Outcome(
            facts=facts,
            command=_command_line(),
            generator=generator,
            servers={"a": bare.info, "b": app.info},
            redis_version=str(connection.info("server")["redis_version"]),
            pool_note=pool_note,
            a=a,
            b=b,
            half=half,
            commands_per_webhook=commands,
            redis_usec_per_webhook=redis_usec,
            verification=verification,
            steps=steps,
            parts=parts,
            profile=profile,
            profile_phase=profile_phase,
            started=started,
        )
    report = render(outcome, args.note)
    sys.stdout.write(report)
    if not args.no_record:
        existing = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else _RESULTS_HEADER
        RESULTS.write_text(existing.rstrip("\n") + "\n\n" + report, encoding="utf-8")
        _say(f"appended to {RESULTS}")
    return 0 if verification.ok else 1


def _timed_steps(bench: Bench, config: Path, directory: Path, seconds: float) -> tuple[Steps, dict[str, int]]:
    """A closed loop on a copy of (b) whose steps are timed; its own process, same Redis and keys."""
    timed = start_server("app-timed", config, directory)
    try:
        phase = bench.measure("(b) with its steps timed", timed, bench.spec(timed, seconds, unique=True))
        outcomes = server_outcomes(timed)
    finally:
        timed.stop()
    data = json.loads((directory / "app-timed.timings.json").read_text(encoding="utf-8"))
    micros = {name: entry["seconds"] / entry["calls"] * 1e6 for name, entry in data.items() if entry["calls"]}
    answered = max(phase.result.completed, 1)
    return (
        Steps(
            phase=phase,
            micros=micros,
            server_micros=phase.cpu["server"] / answered * 1e6,
            server_sys_micros=phase.cpu["server_sys"] / answered * 1e6,
        ),
        outcomes,
    )


def _profiled(
    bench: Bench, app: ServerProcess, py_spy: str, directory: Path, seconds: float
) -> tuple[Phase, Profile | None]:
    raw = directory / "profile.txt"
    command = [
        py_spy, "record", "--pid", str(app.pid), "--rate", str(PROFILE_RATE), "--duration", str(round(seconds + 2)),
        "--gil", "--nonblocking", "--format", "raw", "--output", str(raw),
    ]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # let py-spy attach before the load starts
    phase = bench.measure("(b) under py-spy", app, bench.spec(app, seconds, unique=True))
    try:
        _, errors = spy.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.communicate()
        return phase, None
    if spy.returncode != 0 or not raw.exists():
        _say(f"  py-spy failed: {errors.decode(errors='replace').strip()[-500:]}")
        return phase, None
    kept = bench.args.cache_dir / "last-profile.txt"  # for flamegraph.pl or a closer look
    shutil.copyfile(raw, kept)
    return phase, summarise_profile(raw, PROFILE_RATE, phase.result.duration)


def _commandstats(connection: redis.Redis) -> dict[str, tuple[int, int]]:
    stats = connection.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(entry["calls"]), int(entry["usec"])) for name, entry in stats.items()}


def _command_line() -> str:
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(ROOT))
    except ValueError:
        shown = str(python)
    return " ".join([shown, "-m", "bench.ingest", *sys.argv[1:]])


# ---------------------------------------------------------------- the report

_RESULTS_HEADER = """# Ingest benchmark results

Produced by `bench/ingest.py` (see its docstring); each run appends a section. Goals (DESIGN §6):
(b)/(a) at least 0.6, and p99 under 15 ms at half of (b)'s peak rate. Figures from runs on a
machine that was busy with other work are noisy: see the "other processes" column.
"""


def render(outcome: Outcome, note: str) -> str:
    a, b, half, facts = outcome.a, outcome.b, outcome.half, outcome.facts
    ratio = b.result.rate / a.result.rate if a.result.rate else 0.0
    verification = outcome.verification
    server_b = outcome.servers["b"]
    lines = [
        f"## {outcome.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: `nproc` {facts['nproc']}, {facts['cpu']}, {facts['memory']} RAM, Linux {facts['kernel']};"
        f" load average at start {facts['load']}",
        f"- software: Python {facts['python']}, uvicorn {version('uvicorn')} ({_short(server_b['loop'])},"
        f" {_short(server_b['http'])}, {server_b['workers'] or 1} worker), starlette {version('starlette')},"
        f" PyJWT {version('PyJWT')}, cryptography {version('cryptography')}, redis-py {version('redis')},"
        f" rq {version('rq')}, redis-server {outcome.redis_version}",
        f"- command: `{outcome.command}` (in the repository root)",
        f"- load: {outcome.generator}; tokens: {outcome.pool_note}",
        "",
        "| phase | generator | req/s | p50 ms | p99 ms | max ms | server CPU | redis CPU | generator CPU"
        " | other processes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    extra = [phase for phase in (outcome.steps.phase if outcome.steps else None, outcome.profile_phase) if phase]
    for phase in (a, b, half, *extra):
        result = phase.result
        lines.append(
            f"| {phase.label}, {result.mode} loop {result.duration:.1f} s | {result.tool} | {result.rate:.0f} |"
            f" {result.p50:.2f} | {result.p99:.2f} | {result.max:.1f} | {phase.cores('server'):.2f} |"
            f" {phase.cores('redis'):.2f} | {phase.cores('generator'):.2f} | {phase.other_cores:.2f} |"
        )
    half_result = half.result
    lines += [
        "",
        'CPU columns are in cores (1.00 = one core busy) over the measured duration; "other processes" is'
        " what the rest of the machine used meanwhile (noise).",
        "",
        f"**Ratio (b)/(a): {ratio:.3f}** (goal ≥ {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'not met'}).",
        "",
        f"**Half rate:** {half_result.offered_rate:.0f} req/s offered, {half_result.rate:.0f} answered per second;"
        f" p50 {half_result.p50:.2f} ms, p99 {half_result.p99:.2f} ms, max {half_result.max:.1f} ms, counted from"
        f" the moment each request was due (goal p99 < {GOAL_P99_MS:.0f} ms:"
        f" {'met' if half_result.p99 < GOAL_P99_MS else 'not met'}); p99 counted from the actual send"
        f" {half_result.send_p99:.2f} ms, generator lateness p99 {half_result.lag_p99:.2f} ms,"
        f" {half_result.waited} requests waited for a free connection.",
        "",
        f"**Checks: {'passed' if verification.ok else 'FAILED'}.** The clients saw {verification.client_202}"
        f" answers 202 from (b) ({verification.client_unanswered} requests were in flight when wrk stopped);"
        f" the servers counted {verification.server_outcomes}; Redis holds {verification.jobs} jobs in"
        f" `rq:queue:{QUEUE}` and {verification.markers} dedup markers; {verification.non_2xx} non-2xx answers,"
        f" {verification.socket_errors} socket errors; server log lines by level {verification.log_levels}.",
    ]
    lines += [f"  - problem: {problem}" for problem in verification.problems]
    lines += ["", "### Where (b)'s time goes", ""]
    cpu_a, cpu_b = _cpu_per_request(a), _cpu_per_request(b)
    commands = ", ".join(f"{name} {calls:.2f}" for name, calls in sorted(outcome.commands_per_webhook.items()))
    lines += [
        f"- Server process CPU per answered request at peak: (a) {cpu_a:.0f} µs, (b) {cpu_b:.0f} µs.",
        f"- Redis per accepted webhook: {sum(outcome.commands_per_webhook.values()):.1f} commands ({commands});"
        f" {outcome.redis_usec_per_webhook:.0f} µs inside commands, {_cpu_per_request(b, 'redis'):.0f} µs of"
        " redis-server CPU.",
    ]
    steps = outcome.steps
    if steps is not None:
        lines += [
            "",
            f"Inside (b) under a closed loop of {steps.phase.result.rate:.0f} req/s (`app-timed`: the same app with"
            " its steps wrapped in `time.thread_time()`; CPU of the thread running the step, waits excluded):",
            "",
            "| step | CPU µs per request | share |",
            "|---|--:|--:|",
        ]
        accounted = sum(value for name, value in steps.micros.items() if name != STEP_LOG)
        for name in STEPS:
            value = steps.micros.get(name, 0.0)
            lines.append(f"| {name} | {value:.0f} | {value / steps.server_micros:.0%} |")
        rest = steps.server_micros - accounted
        lines += [
            f"| everything else: HTTP, Starlette and middleware, reading the body, the thread hand-off, GIL and"
            f" context switches | {rest:.0f} | {rest / steps.server_micros:.0%} |",
            f"| **server process in all** (of which in the kernel: {steps.server_sys_micros:.0f} µs) |"
            f" {steps.server_micros:.0f} | 100% |",
        ]
    lines += [
        "",
        "The steps alone (one after another, no other load, in the benchmark process):",
        "",
        "| step | elapsed µs | CPU µs | note |",
        "|---|--:|--:|---|",
    ]
    lines += [f"| {part.name} | {part.wall:.0f} | {part.cpu:.0f} | {part.note} |" for part in outcome.parts]
    profile, profile_phase = outcome.profile, outcome.profile_phase
    if profile is not None and profile_phase is not None:
        lines += [
            "",
            f"py-spy (`record --gil --nonblocking`, {PROFILE_RATE} Hz) on (b) at {profile_phase.result.rate:.0f}"
            f" req/s: a thread held the GIL in {profile.gil_busy:.0%} of the samples; by component (innermost"
            " matching frame; py-spy's GIL attribution is approximate, prefer the table above):",
            "",
            "| component | share |",
            "|---|--:|",
        ]
        lines += [f"| {name} | {count / profile.samples:.0%} |" for name, count in profile.components]
    lines += ["", "**What limits it** (derived from the figures above):", "", _limits_text(outcome, ratio)]
    if note:
        lines += ["", f"Notes: {note}"]
    return "\n".join(lines) + "\n"


def _cpu_per_request(phase: Phase, process: str = "server") -> float:
    return phase.cpu.get(process, 0.0) / phase.result.completed * 1e6 if phase.result.completed else 0.0


def _limits_text(outcome: Outcome, ratio: float) -> str:
    a, b = outcome.a, outcome.b
    cpu_a, cpu_b = _cpu_per_request(a), _cpu_per_request(b)
    server = b.cores("server")
    sentences = []
    if server >= 0.85:
        sentences.append(
            f"(b)'s server process is CPU-bound: {server:.2f} cores at peak, as much as one process with one GIL"
            f" gets, so its peak is about 1 / {cpu_b:.0f} µs of CPU per request."
        )
    else:
        sentences.append(
            f"(b)'s server process used {server:.2f} cores at peak, less than one: it also waited, for Redis"
            " round trips or for a core."
        )
    if cpu_a and cpu_b:
        sentences.append(
            f"(a) costs {cpu_a:.0f} µs of server CPU per request, so while both are CPU-bound (b)/(a) cannot exceed"
            f" about {cpu_a / cpu_b:.2f}; a ratio of {GOAL_RATIO} would need (b) to do all its work in"
            f" {cpu_a / GOAL_RATIO:.0f} µs."
        )
    steps = outcome.steps
    if steps is not None:
        shares = [(name, value) for name, value in steps.micros.items() if name != STEP_LOG]
        shares.append(("the rest (HTTP, Starlette, thread hand-off, switches)", steps.server_micros - sum(
            value for _, value in shares
        )))  # fmt: skip
        shares.sort(key=lambda item: -item[1])
        listed = "; ".join(f"{name} {value:.0f} µs" for name, value in shares[:3])
        sentences.append(f"Under load the largest parts are: {listed}.")
        if steps.server_sys_micros > 0.25 * steps.server_micros:
            sentences.append(
                f"{steps.server_sys_micros / steps.server_micros:.0%} of the server's CPU is in the kernel: socket"
                " calls for each Redis round trip and futex wake-ups between the event loop and the worker threads."
            )
    intake = next((part for part in outcome.parts if part.name.startswith("Intake.submit")), None)
    if intake is not None:
        sentences.append(
            f"Alone, one Intake.submit takes {intake.wall:.0f} µs, {intake.cpu:.0f} µs of it CPU ({intake.note});"
            " with many connections the waiting overlaps across threads, the CPU does not."
        )
    busy = a.cores("server") + a.cores("generator") + a.cores("redis") + a.other_cores
    if busy > 0.8 * float(outcome.facts["nproc"] or 1):
        sentences.append(
            f"During (a) the machine had {busy:.1f} of {outcome.facts['nproc']} cores busy (server"
            f" {a.cores('server'):.2f}, generator {a.cores('generator'):.2f}, other processes {a.other_cores:.2f}),"
            " so (a) is bounded by the machine as much as by Starlette, and the ratio is if anything flattered."
        )
    noise = max(phase.other_cores for phase in (a, b, outcome.half))
    if noise > 0.15:
        sentences.append(
            f"Other processes used up to {noise:.2f} cores during the phases: the figures are noisy; re-run on an"
            " idle machine."
        )
    return " ".join(sentences)


def _short(dotted: str) -> str:
    if "uvloop" in dotted:
        return "uvloop"
    if "httptools" in dotted:
        return "httptools"
    return dotted.rsplit(".", 1)[-1]


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each peak run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of each warm-up (default 2)")
    parser.add_argument("--half-duration", type=float, default=10.0, help="seconds of the half-rate run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto", help="closed-loop load")
    parser.add_argument(
        "--steps-seconds", type=float, default=5.0, help="closed loop on (b) with its steps timed (default 5; 0: skip)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile (b) under load with py-spy (on PATH)")
    parser.add_argument("--profile-seconds", type=float, default=5.0, help="length of the profiled run (default 5)")
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens to sign up front (more are added as needed)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help=f"token cache (default {CACHE_DIR})")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="logging.level of (b) (default info, as deployed: one JSON line per webhook)",
    )
    parser.add_argument("--note", default="", help="a sentence to add to the report")
    parser.add_argument("--no-record", action="store_true", help="print the report without appending to RESULTS.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["_serve"]:
        kind, config_path, port, info_path = arguments[1:5]
        serve(kind, config_path, int(port), info_path)
        return 0
    if arguments[:1] == ["_loadgen"]:
        spec = LoadSpec.from_json(arguments[1])
        result = run_python(spec, read_tokens(Path(spec.tokens_file), spec.first, spec.count))
        sys.stdout.write(result.to_json() + "\n")
        return 0
    return run(_parser().parse_args(arguments))


if __name__ == "__main__":
    sys.exit(main())
