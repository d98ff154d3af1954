"""Load generators for ``bench.ingest``, each meant to run in a process of its own.

* ``run_python``: HTTP/1.1 over raw asyncio protocols on uvloop, N keep-alive connections, no
  pipelining. Closed loop (each connection sends its next request as soon as the previous answer
  is in, until the duration is over, then drains) or open loop (requests due at a fixed rate,
  latency counted from the moment a request was *due*, so a slow server cannot hide its queue:
  no coordinated omission).
* ``run_wrk``: the closed loop with ``wrk`` and ``bench/ingest.lua``, when wrk is installed.

Every request is ``POST <path>`` with one token from the pool as its body. ``unique`` loads use
each token once; otherwise tokens are reused in turn.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import uvloop

LUA_SCRIPT = Path(__file__).with_name("ingest.lua")
CONTENT_TYPE = "application/secevent+jwt"


@dataclass(frozen=True)
class LoadSpec:
    """What to send, how, and for how long."""

    host: str
    port: int
    path: str
    tokens_file: str
    first: int  # index of the first token to use
    count: int  # tokens available from ``first`` on
    unique: bool  # each token at most once (the real route); else reuse them in turn
    connections: int
    duration: float  # seconds
    rate: float = 0.0  # open loop: requests per second; 0 = closed loop

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadSpec:
        return cls(**json.loads(text))


@dataclass
class LoadResult:
    """What a load generator saw; latencies in milliseconds."""

    tool: str
    mode: str  # closed | open
    connections: int
    duration: float  # seconds from the first request to the last answer
    sent: int
    completed: int
    statuses: dict[str, int]
    errors: int  # connection errors and timeouts
    unanswered: int  # requests still in flight when the generator stopped (wrk only)
    exhausted: bool  # a unique load ran out of tokens before its duration was over
    p50: float
    p90: float
    p99: float
    max: float
    offered_rate: float = 0.0  # open loop: the rate asked for
    waited: int = 0  # open loop: requests that found every connection busy
    send_p99: float = 0.0  # open loop: p99 latency counted from the actual send, not from due time
    lag_p99: float = 0.0  # open loop: p99 of how late the generator sent (timer granularity)
    cpu_seconds: float = 0.0  # the generator's own CPU time
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Answers per second."""
        return self.completed / self.duration if self.duration > 0 else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        return cls(**json.loads(text))


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------- the Python generator


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; answers must carry Content-Length (uvicorn's do)."""

    def __init__(self, on_answer: Callable[[_Connection, int], None], on_lost: Callable[[_Connection], None]) -> None:
        self._on_answer = on_answer
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._expected = -1
        self._status = 0
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.sent_at = 0.0
        self.due_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport, but has its methods.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, payload: bytes, due_at: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.due_at = due_at
        self.sent_at = time.perf_counter()
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            if self._expected < 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end]).lower()
                self._status = int(head[9:12])
                start = head.find(b"\r\ncontent-length:")
                if start < 0:
                    raise RuntimeError("an answer without Content-Length; this client reads no other framing")
                stop = head.find(b"\r\n", start + 2)
                self._expected = end + 4 + int(head[start + 17 : stop if stop > 0 else len(head)])
            if len(buffer) < self._expected:
                return
            del buffer[: self._expected]
            self._expected = -1
            self.busy = False
            self._on_answer(self, self._status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(self)


class _Driver:
    """Shared bookkeeping of both loops."""

    def __init__(self, spec: LoadSpec, tokens: list[str]) -> None:
        self.spec = spec
        head = (
            f"POST {spec.path} HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            "Content-Length: "
        )
        self._head = head.encode()
        self._tokens = [token.encode() for token in tokens]
        self._next = 0
        self.exhausted = False
        self.connections: list[_Connection] = []
        self.latencies: list[float] = []
        self.send_latencies: list[float] = []
        self.lags: list[float] = []
        self.statuses: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self.sent = 0
        self.first_send = 0.0
        self.last_answer = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def payload(self) -> bytes | None:
        if self._next >= len(self._tokens):
            if self.spec.unique:
                self.exhausted = True
                return None
            self._next = 0
        body = self._tokens[self._next]
        self._next += 1
        self.sent += 1
        return b"%s%d\r\n\r\n%s" % (self._head, len(body), body)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.spec.connections):
            _, protocol = await loop.create_connection(
                lambda: _Connection(self.on_answer, self.on_lost), self.spec.host, self.spec.port
            )
            self.connections.append(protocol)

    def record(self, connection: _Connection, status: int) -> float:
        now = time.perf_counter()
        self.latencies.append(now - connection.due_at)
        self.send_latencies.append(now - connection.sent_at)
        self.statuses[str(status)] += 1
        self.last_answer = now
        return now

    def on_answer(self, connection: _Connection, status: int) -> None:
        raise NotImplementedError

    def on_lost(self, connection: _Connection) -> None:
        if connection in self.connections:
            self.connections.remove(connection)
            if connection.busy:
                self.errors += 1
            self.check_done()

    def check_done(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def result(self, mode: str, cpu_seconds: float) -> LoadResult:
        ordered = sorted(self.latencies)
        return LoadResult(
            tool="python",
            mode=mode,
            connections=self.spec.connections,
            duration=max(self.last_answer - self.first_send, 1e-9),
            sent=self.sent,
            completed=len(self.latencies),
            statuses=dict(self.statuses),
            errors=self.errors,
            unanswered=0,
            exhausted=self.exhausted,
            p50=percentile(ordered, 0.50) * 1e3,
            p90=percentile(ordered, 0.90) * 1e3,
            p99=percentile(ordered, 0.99) * 1e3,
            max=(ordered[-1] if ordered else 0.0) * 1e3,
            offered_rate=self.spec.rate,
            send_p99=percentile(sorted(self.send_latencies), 0.99) * 1e3,
            lag_p99=percentile(sorted(self.lags), 0.99) * 1e3,
            cpu_seconds=cpu_seconds,
        )


class _ClosedLoop(_Driver):
    deadline = 0.0

    def start(self) -> None:
        self.first_send = time.perf_counter()
        self.deadline = self.first_send + self.spec.duration
        for connection in list(self.connections):
            self._send_next(connection)
        self.check_done()

    def _send_next(self, connection: _Connection) -> None:
        payload = self.payload()
        if payload is not None:
            connection.send(payload, time.perf_counter())

    def on_answer(self, connection: _Connection, status: int) -> None:
        now = self.record(connection, status)
        if now < self.deadline:
            self._send_next(connection)
        self.check_done()

    def check_done(self) -> None:
        if not any(connection.busy for connection in self.connections):
            self.finish()


class _OpenLoop(_Driver):
    def __init__(self, spec: LoadSpec, tokens: list[str]) -> None:
        super().__init__(spec, tokens)
        self._idle: list[_Connection] = []
        self._backlog: collections.deque[tuple[bytes, float]] = collections.deque()
        self._dispatching = True
        self.waited = 0

    async def run(self) -> None:
        self._idle = list(self.connections)
        interval = 1.0 / self.spec.rate
        total = int(self.spec.rate * self.spec.duration)
        start = time.perf_counter() + 0.01
        self.first_send = start
        index = 0
        while index < total:
            now = time.perf_counter()
            while index < total and start + index * interval <= now:
                payload = self.payload()
                if payload is None:
                    index = total
                    break
                self._dispatch(payload, start + index * interval)
                index += 1
            if index < total:
                await asyncio.sleep(max(0.0, start + index * interval - time.perf_counter()))
        self._dispatching = False
        self.check_done()
        await self.done

    def _dispatch(self, payload: bytes, due_at: float) -> None:
        if self._idle:
            self._send(self._idle.pop(), payload, due_at)
        else:
            self.waited += 1
            self._backlog.append((payload, due_at))

    def _send(self, connection: _Connection, payload: bytes, due_at: float) -> None:
        connection.send(payload, due_at)
        self.lags.append(connection.sent_at - due_at)

    def on_answer(self, connection: _Connection, status: int) -> None:
        self.record(connection, status)
        if self._backlog:
            payload, due_at = self._backlog.popleft()
            self._send(connection, payload, due_at)
        else:
            self._idle.append(connection)
        self.check_done()

    def on_lost(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)
        super().on_lost(connection)

    def check_done(self) -> None:
        if not self.connections:
            self.errors += len(self._backlog)
            self._backlog.clear()
            self.finish()
        elif not self._dispatching and not self._backlog and not any(c.busy for c in self.connections):
            self.finish()


async def _run(spec: LoadSpec, tokens: list[str]) -> LoadResult:
    driver: _ClosedLoop | _OpenLoop = _OpenLoop(spec, tokens) if spec.rate > 0 else _ClosedLoop(spec, tokens)
    await driver.connect()
    cpu_before = time.process_time()
    if isinstance(driver, _OpenLoop):
        await driver.run()
        result = driver.result("open", time.process_time() - cpu_before)
        result.waited = driver.waited
    else:
        driver.start()
        await driver.done
        result = driver.result("closed", time.process_time() - cpu_before)
    for connection in driver.connections:
        if connection.transport is not None:
            connection.transport.close()
    return result


def run_python(spec: LoadSpec, tokens: list[str]) -> LoadResult:
    """Run one load in this process (call it in a process of its own)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(spec, tokens))


# ---------------------------------------------------------------- wrk


def run_wrk(wrk: str, spec: LoadSpec) -> LoadResult:
    """A closed-loop load with wrk (one thread); the Lua script reports counts as JSON."""
    if spec.rate > 0:
        raise ValueError("wrk runs closed loops only; use the Python generator for a fixed rate")
    url = f"http://{spec.host}:{spec.port}{spec.path}"
    command = [
        wrk, "-t1", f"-c{spec.connections}", f"-d{max(1, round(spec.duration))}s", "--timeout", "10s",
        "-s", str(LUA_SCRIPT), url,
        "--", spec.tokens_file, str(spec.first), str(spec.count), "unique" if spec.unique else "cycle",
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=spec.duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(r"^BENCH_JSON (.*)$", finished.stdout, re.MULTILINE)
    if finished.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stderr.strip() or finished.stdout.strip()}")
    data = json.loads(found.group(1))
    errors = data["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    completed = int(data["requests"])
    return LoadResult(
        tool="wrk",
        mode="closed",
        connections=spec.connections,
        duration=data["duration_us"] / 1e6,
        sent=int(data["sent"]),
        completed=completed,
        statuses={str(status): int(count) for status, count in data["statuses"].items()},
        errors=socket_errors,
        unanswered=max(0, int(data["sent"]) - completed - socket_errors),
        exhausted=bool(data["exhausted"]),
        p50=data["p50_us"] / 1e3,
        p90=data["p90_us"] / 1e3,
        p99=data["p99_us"] / 1e3,
        max=data["max_us"] / 1e3,
        cpu_seconds=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )
