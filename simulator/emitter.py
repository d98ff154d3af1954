"""Turns profile changes into webhook deliveries and POSTs them, as Akamai (or Janrain) does.

Every change the ``ProfileStore`` reports becomes one delivery per registered target: a signed
Security Event Token for a ``v3`` target, a one-element JSON array for a ``legacy`` one. The
store may report from any thread; changes cross into the event loop with
``call_soon_threadsafe``. One dispatcher task builds the deliveries, ``concurrency`` sender tasks
POST them (one sender keeps them in order).

Faults a receiver must survive, per target: ``duplicates`` is the probability that a delivery is
sent twice (same body, same ``jti``); ``reorder_window`` buffers deliveries in windows of that
many and shuffles each window (a partial window goes out after ``reorder_linger`` seconds
without new changes).

Retries: a failed attempt (see ``emitter_log.judge``) is tried again after the next delay of the
schedule, until it runs out. Akamai waits 3 s, 30 s, 5 min, 1 h and 24 h (``AKAMAI_RETRY_DELAYS``),
Janrain retries three times a few seconds apart (``JANRAIN_RETRY_DELAYS``); the defaults here are
the same shapes in fractions of a second, so that tests finish quickly.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import httpx2
from starlette.routing import BaseRoute

from simulator import workload
from simulator.config import SimulatorConfig
from simulator.emitter_cli import add_cli_arguments, apply_cli_arguments
from simulator.emitter_log import Delivery, DeliveryLog, DeliveryRecord, Format, judge
from simulator.emitter_routes import emitter_routes
from simulator.emitter_targets import Target, WorkloadPlan, change_delivery, make_target, notification_delivery
from simulator.keys import KeyRing
from simulator.profiles import ProfileChange, ProfileStore

# The command-line functions are defined beside their argparse helpers and offered from here.
__all__ = [
    "AKAMAI_RETRY_DELAYS",
    "FAST_LEGACY_RETRY_DELAYS",
    "FAST_RETRY_DELAYS",
    "JANRAIN_RETRY_DELAYS",
    "Emitter",
    "add_cli_arguments",
    "apply_cli_arguments",
]

_T = TypeVar("_T")

AKAMAI_RETRY_DELAYS = (3.0, 30.0, 300.0, 3600.0, 86400.0)
JANRAIN_RETRY_DELAYS = (3.0, 3.0, 3.0)
FAST_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)
FAST_LEGACY_RETRY_DELAYS = (0.05, 0.1, 0.2)


class Emitter:
    """Delivers the store's changes to registered targets; see the module docstring."""

    def __init__(
        self,
        config: SimulatorConfig,
        store: ProfileStore,
        keys: KeyRing,
        *,
        retry_delays: Sequence[float] = FAST_RETRY_DELAYS,
        legacy_retry_delays: Sequence[float] = FAST_LEGACY_RETRY_DELAYS,
        timeout: float = 10.0,  # Janrain's documented wait; Akamai's is not documented
        concurrency: int = 1,
        reorder_linger: float = 0.2,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: {concurrency!r} must be 1 or more")
        self.config, self.store, self.keys = config, store, keys
        self.retry_delays, self.legacy_retry_delays = tuple(retry_delays), tuple(legacy_retry_delays)
        self.timeout, self.concurrency, self.reorder_linger = timeout, concurrency, reorder_linger
        self.clock = clock
        self.log = DeliveryLog()
        self.errors: list[str] = []  # crashes of background tasks, shown by the control API
        self.startup_workload: WorkloadPlan | None = None
        # Not for security: a seeded generator makes duplicates and shuffles repeatable.
        self._rng = random.Random(seed)  # noqa: S311
        self._targets: dict[str, Target] = {}
        self._serial = itertools.count(1)
        self._lock = threading.Lock()  # guards _pending and the "ignored" counter: the listener runs in any thread
        self._pending = 0  # changes not yet fanned out + deliveries without a final outcome
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changes: asyncio.Queue[ProfileChange] = asyncio.Queue()
        self._sends: asyncio.Queue[Delivery] = asyncio.Queue()
        self._http: httpx2.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._workloads: set[asyncio.Task[Any]] = set()
        store.subscribe(self._on_change)

    async def start(self) -> None:
        """Start the dispatcher and senders (and the ``startup_workload``, if any)."""
        if self._loop is not None:
            raise RuntimeError("the emitter is already running")
        self._changes, self._sends = asyncio.Queue(), asyncio.Queue()
        self._http = httpx2.AsyncClient(timeout=self.timeout, follow_redirects=False)
        self._loop = asyncio.get_running_loop()  # last: from here on the listener hands changes over
        self._spawn(self._dispatch(), self._tasks)
        for _ in range(self.concurrency):
            self._spawn(self._sender(), self._tasks)
        if self.startup_workload is not None:
            plan = self.startup_workload
            self.start_workload(plan.count, rate=plan.rate, burst=plan.burst, seed=plan.seed)

    async def stop(self, *, drain: float = 1.0) -> None:
        """Stop workloads, give deliveries ``drain`` seconds to finish, cancel the rest, close the client."""
        if self._loop is None:
            return
        workloads = list(self._workloads)
        for task in workloads:
            task.cancel()
        await asyncio.gather(*workloads, return_exceptions=True)
        for target in self._targets.values():
            self._flush(target)
        await self.wait_idle(drain)
        self._loop = None  # changes from now on are ignored
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with self._lock:
            self._pending = 0
        if self._http is not None:
            await self._http.aclose()

    @property
    def idle(self) -> bool:
        """True when no change or delivery is waiting, in flight or due for a retry, and no workload runs."""
        with self._lock:
            pending = self._pending
        return pending == 0 and not self._workloads

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``idle``; returns whether it was reached."""
        deadline = time.monotonic() + timeout
        while not self.idle:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    @property
    def targets(self) -> list[Target]:
        """The registered targets, oldest first."""
        return list(self._targets.values())

    def add_target(
        self,
        url: str,
        *,
        format: Format = "v3",
        audience: str | None = None,
        callback_hash: str | None = None,
        duplicates: float = 0.0,
        reorder_window: int = 0,
    ) -> str:
        """Register a receiver and return its id.

        ``audience`` (v3) defaults to ``url``; ``callback_hash`` (legacy) defaults to 40 random hex
        characters, as Janrain generates one when none is configured.

        Raises:
            ValueError: naming the argument that is out of range.
        """
        target = make_target(
            f"target-{next(self._serial)}",
            url,
            format=format,
            audience=audience,
            callback_hash=callback_hash,
            duplicates=duplicates,
            reorder_window=reorder_window,
        )
        self._targets[target.id] = target
        return target.id

    def remove_target(self, target_id: str) -> None:
        """Forget a target; its queued deliveries are dropped when their turn comes.

        Raises:
            KeyError: for an unknown id.
        """
        target = self._targets.pop(target_id)
        self._flush(target)

    async def send_test_event(self, target_id: str) -> DeliveryRecord:
        """Send Akamai's test notification to a v3 target now; returns the first attempt's record.

        Raises:
            KeyError: for an unknown id.
            ValueError: for a legacy target (the legacy protocol has no test notification).
        """
        target = self._targets[target_id]
        if target.format != "v3":
            raise ValueError(f"{target_id} is a legacy target; only v3 has a test notification")
        delivery = notification_delivery(target, self.config, self.keys, now=self.clock())
        self._hold(1)
        return await self._attempt(delivery)

    async def run_workload(
        self, count: int, *, rate: float | None = None, burst: int | None = None, seed: int | None = None
    ) -> int:
        """Make ``count`` random profile changes through the store (see ``workload.run_workload``)."""
        entity_type = self.config.entity_types[0]
        return await workload.run_workload(
            self.store, count, entity_type=entity_type, rate=rate, burst=burst, seed=seed
        )

    def start_workload(
        self, count: int, *, rate: float | None = None, burst: int | None = None, seed: int | None = None
    ) -> asyncio.Task[int]:
        """``run_workload`` in the background; ``idle`` stays false until it ends.

        Raises:
            ValueError: for a negative count, a rate that is not positive or a burst below 1.
        """
        workload.check_arguments(count, rate, burst)
        return self._spawn(self.run_workload(count, rate=rate, burst=burst, seed=seed), self._workloads)

    def routes(self) -> list[BaseRoute]:
        """The control API (``/__sim/targets``, ``/__sim/emit``, ``/__sim/deliveries`` ...)."""
        return emitter_routes(self)

    def _on_change(self, change: ProfileChange) -> None:
        # Called by the store, from whichever thread made the change.
        loop = self._loop
        with self._lock:
            if loop is None:
                self.log.count("ignored")
                return
            self._pending += 1
        try:
            loop.call_soon_threadsafe(self._changes.put_nowait, change)
        except RuntimeError:  # the loop closed in between
            self._hold(-1)

    async def _dispatch(self) -> None:
        while True:
            lingering = any(target.buffer for target in self._targets.values())
            try:
                change = await asyncio.wait_for(self._changes.get(), self.reorder_linger if lingering else None)
            except TimeoutError:
                for target in self._targets.values():
                    self._flush(target)
                continue
            self.log.count("changes")
            for target in list(self._targets.values()):
                self._offer(target, change_delivery(target, change, self.config, self.keys, now=self.clock()))
            self._hold(-1)

    def _offer(self, target: Target, delivery: Delivery) -> None:
        copies = [delivery, delivery.twin()] if self._rng.random() < target.duplicates else [delivery]
        self._hold(len(copies))
        self.log.count("deliveries", len(copies))
        self.log.count("duplicates", len(copies) - 1)
        if target.reorder_window > 1:
            target.buffer.extend(copies)
            if len(target.buffer) >= target.reorder_window:
                self._flush(target)
            return
        for copy in copies:
            self._sends.put_nowait(copy)

    def _flush(self, target: Target) -> None:
        self._rng.shuffle(target.buffer)
        for delivery in target.buffer:
            self._sends.put_nowait(delivery)
        target.buffer.clear()

    async def _sender(self) -> None:
        while True:
            await self._attempt(await self._sends.get())

    async def _attempt(self, delivery: Delivery) -> DeliveryRecord:
        target = self._targets.get(delivery.target)
        if target is None:
            self._hold(-1)
            return self.log.add(delivery, "dropped", None, "the target was removed")
        status, error = await self._post(target.url, delivery)
        delays = self.retry_delays if delivery.format == "v3" else self.legacy_retry_delays
        verdict = judge(delivery.format, status)
        if verdict == "retry" and delivery.attempt <= len(delays):
            self._spawn(self._retry_later(delivery.again(), delays[delivery.attempt - 1]), self._tasks)
            return self.log.add(delivery, "retrying", status, error)
        self._hold(-1)
        return self.log.add(delivery, "delivered" if verdict == "delivered" else "failed", status, error)

    async def _post(self, url: str, delivery: Delivery) -> tuple[int | None, str | None]:
        if self._http is None:
            raise RuntimeError("the emitter is not running; call start() first")
        try:
            response = await self._http.post(url, content=delivery.body, headers=delivery.headers)
        except httpx2.TimeoutException:
            return None, "timeout"
        except httpx2.HTTPError as exc:
            return None, type(exc).__name__
        return response.status_code, None

    async def _retry_later(self, delivery: Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        self._sends.put_nowait(delivery)

    def _hold(self, amount: int) -> None:
        with self._lock:
            self._pending += amount

    def _spawn(self, coroutine: Coroutine[Any, Any, _T], group: set[asyncio.Task[Any]]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coroutine)
        group.add(task)
        task.add_done_callback(group.discard)
        task.add_done_callback(self._record_crash)
        return task

    def _record_crash(self, task: asyncio.Task[Any]) -> None:
        # A crashed task would otherwise vanish silently; the control API shows these.
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(f"{task.get_coro()!r}: {task.exception()!r}")
