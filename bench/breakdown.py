"""Where a request's time goes: the parts of ``POST /webhooks/capture/v3`` timed one by one, and a
py-spy profile of the server process summarised by component.

The part timings run sequentially in the calling process, without load, so they are the CPU cost
of each step (plus the Redis round trips for the intake); under load the same work competes for
one GIL, which is what the profile shows.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import io
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx2
import jwt
import redis
import redis.asyncio
import structlog
import uvloop
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from service import webhooks
from service.intake import Intake, JobPolicy
from service.logs import configure_logging
from service.metrics import ServiceMetrics
from service.normalize import event_from_claims
from service.settings import Settings
from service.verify.jwks import JwksCache
from service.verify.set_token import V3Policy, verify_token

log = structlog.get_logger("bench")
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    """The mean cost of one step per request, in microseconds: elapsed, and CPU of this process."""

    name: str
    wall: float
    cpu: float
    note: str = ""


class _Clock:
    """Elapsed and CPU time of a block, per repetition, in microseconds."""

    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.wall = self.cpu = 0.0

    def __enter__(self) -> _Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = (time.perf_counter() - self._wall) / self.repeat * 1e6
        self.cpu = (time.process_time() - self._cpu) / self.repeat * 1e6

    def part(self, name: str, note: str = "") -> Part:
        return Part(name, self.wall, self.cpu, note)


def measure_parts(settings: Settings, tokens: list[str], redis_url: str) -> list[Part]:
    """Time the steps of the v3 route on ``tokens`` (each used once for the intake), one after another."""
    v3 = settings.sources.v3
    if v3 is None:
        raise ValueError("the benchmark settings must configure sources.v3")
    policy = V3Policy.from_settings(v3)
    parts: list[Part] = []
    count = len(tokens)

    async def verified() -> list[dict[str, Any]]:
        async with httpx2.AsyncClient() as http:
            cache = JwksCache(v3.jwks_url, http, cooldown=30, ttl=3600, timeout=5)
            now = time.time()
            await verify_token(tokens[0], cache, policy, now)  # loads the keys
            key = await cache.key_for(jwt.get_unverified_header(tokens[0])["kid"], now)
            jws = jwt.PyJWS()
            with _Clock(count) as clock:
                for token in tokens:
                    jws.decode_complete(token, key=key, algorithms=["RS256"])
            parts.append(clock.part("RS256 signature check alone (PyJWS.decode_complete)"))
            with _Clock(count) as clock:
                claims = [await verify_token(token, cache, policy, now) for token in tokens]
            parts.append(clock.part("verify_token (header, key lookup, RS256, claims)", "includes the line above"))
            return claims

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        all_claims = runner.run(verified())
    now = time.time()
    with _Clock(count) as clock:
        events = [event_from_claims(claims, received_at=now) for claims in all_claims]
    parts.append(clock.part("event_from_claims"))

    connection = redis.Redis.from_url(redis_url)
    job_policy = dataclasses.replace(JobPolicy.from_settings(settings), queue="bench-parts")

    async def submits() -> Part:
        async_connection = redis.asyncio.Redis.from_url(redis_url)
        try:
            intake = Intake(async_connection, job_policy)
            await intake.submit([events[0]])  # loads the Lua script and the server version
            before = _command_calls(connection)
            with _Clock(count - 1) as clock:
                for event in events[1:]:
                    await intake.submit([event])
            calls = (_command_calls(connection) - before - 1) / (count - 1)  # minus the INFO itself
            return clock.part("Intake.submit (rq commands built, one atomic script)", f"{calls:.1f} Redis commands")
        finally:
            await async_connection.aclose()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            parts.append(runner.run(submits()))
    finally:
        connection.close()

    async def hops(repeat: int) -> Part:
        await run_in_threadpool(lambda: None)
        with _Clock(repeat) as clock:
            for _ in range(repeat):
                await run_in_threadpool(lambda: None)
        return clock.part("run_in_threadpool hop of a no-op")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        parts.append(runner.run(hops(2000)))

    configure_logging("info", "json", stream=io.StringIO())
    fields = {"source": "v3", "event_id": "e" * 36, "delivery_id": "d" * 36, "uuid": "u" * 36}
    with _Clock(2000) as clock:
        for _ in range(2000):
            log.info("webhook.accepted", **fields, type="entityUpdated", status=202)
    parts.append(clock.part("one JSON log line (structlog through logging)"))
    metrics = ServiceMetrics(CollectorRegistry())
    with _Clock(5000) as clock:
        for _ in range(5000):
            metrics.webhooks_received.labels("v3", "accepted").inc()
            metrics.ingest_duration.labels("v3").observe(0.001)
    parts.append(clock.part("metrics: counter + histogram"))
    return parts


# ---------------------------------------------------------------- timing inside the server, under load


class StepTimer:
    """Thread CPU time spent inside chosen functions of the route, summed over all requests.

    ``time.thread_time`` counts only the calling thread's CPU, so time spent waiting for the GIL,
    for Redis or for the event loop is not charged to the step.
    """

    def __init__(self) -> None:
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds
            self.calls[name] += 1

    def wrap(self, name: str, function: Callable[P, T]) -> Callable[P, T]:
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, time.thread_time() - started)

        return timed

    def wrap_async(self, name: str, function: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        # Right only for coroutines that do not suspend: verify_token suspends only to fetch keys.
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.thread_time()
            try:
                return await function(*args, **kwargs)
            finally:
                self.add(name, time.thread_time() - started)

        return timed

    def dump(self, path: Path) -> None:
        data = {name: {"seconds": self.seconds[name], "calls": self.calls[name]} for name in self.seconds}
        path.write_text(json.dumps(data), encoding="utf-8")


class _TimedLogger:
    def __init__(self, logger: Any, timer: StepTimer) -> None:
        self._logger = logger
        self._timer = timer

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._logger, name)
        return self._timer.wrap(STEP_LOG, method) if name in ("info", "warning", "error") else method


STEP_VERIFY = "verify_token (RS256 signature, header, claims)"
STEP_NORMALIZE = "event_from_claims"
STEP_INTAKE = "Intake: building rq's enqueue commands (the one Redis round trip is not counted)"
STEP_STORED = "_stored (answer, counter, log line)"
STEP_LOG = "... of which the JSON log line"
STEPS = (STEP_VERIFY, STEP_NORMALIZE, STEP_INTAKE, STEP_STORED, STEP_LOG)


def instrument_route(timer: StepTimer) -> None:
    """Charge the steps of ``POST /webhooks/capture/v3`` to ``timer`` (in the server process only)."""
    # The route looks these names up in its module at each call, so replacing them there is enough.
    webhooks.verify_token = timer.wrap_async(STEP_VERIFY, webhooks.verify_token)  # type: ignore[attr-defined]
    webhooks.event_from_claims = timer.wrap(STEP_NORMALIZE, webhooks.event_from_claims)  # type: ignore[attr-defined]
    webhooks._stored = timer.wrap(STEP_STORED, webhooks._stored)
    webhooks.log = _TimedLogger(webhooks.log, timer)
    Intake._arguments = timer.wrap(STEP_INTAKE, Intake._arguments)  # type: ignore[method-assign]


def _command_calls(connection: redis.Redis) -> int:
    stats = connection.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


# ---------------------------------------------------------------- py-spy profile

# Checked from the innermost frame outwards; the first frame that matches names the component.
_COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    ("logging (structlog, stdlib logging)", re.compile(r"structlog/|/logging/|service/logs\.py")),
    ("metrics (prometheus_client)", re.compile(r"prometheus_client/")),
    ("RS256 verify (PyJWT, cryptography)", re.compile(r"/jwt/|cryptography/")),
    ("intake: redis-py + rq (in worker threads)", re.compile(r"/redis/|/rq/|service/intake\.py")),
    ("thread pool hop (anyio, threading, futures)", re.compile(r"/anyio/|threading\.py|concurrent/futures|queue\.py")),
    ("route code (service/)", re.compile(r"service/")),
    ("Starlette (routing, request, response)", re.compile(r"/starlette/")),
    ("uvicorn + httptools (HTTP parsing, transport)", re.compile(r"/uvicorn/|httptools")),
    ("asyncio machinery", re.compile(r"asyncio/")),
]
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):\d+\)$")


@dataclass(frozen=True)
class Profile:
    """GIL-holding samples of the server process, grouped by component."""

    samples: int
    expected: int  # samples had the GIL been held all the time
    components: list[tuple[str, int]]
    top_functions: list[tuple[str, int]]

    @property
    def gil_busy(self) -> float:
        return self.samples / self.expected if self.expected else 0.0


def summarise_profile(raw: Path, rate: int, seconds: float) -> Profile:
    """Read py-spy's ``--format raw`` output (one collapsed stack and its count per line)."""
    components: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        count = int(number)
        total += count
        frames = stack.split(";")
        components[_component(frames)] += count
        leaf = _FRAME.match(frames[-1])
        functions[_short(leaf.group("function"), leaf.group("file")) if leaf else frames[-1]] += count
    return Profile(
        samples=total,
        expected=round(rate * seconds),
        components=components.most_common(),
        top_functions=functions.most_common(12),
    )


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):
        found = _FRAME.match(frame)
        where = found.group("file") if found else frame
        for name, pattern in _COMPONENTS:
            if pattern.search(where):
                return name
    return "other"


def _short(function: str, file: str) -> str:
    marker = "site-packages/"
    where = file.split(marker, 1)[1] if marker in file else "/".join(file.split("/")[-2:])
    return f"{function} ({where})"
