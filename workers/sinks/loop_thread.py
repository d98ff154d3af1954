"""An asyncio event loop on a thread of its own, for the sinks whose client library is asyncio only.

The delivery threads are plain threads, and nats-py and aiormq need a running loop. Each such sink
owns one ``LoopThread``: the first ``run`` starts the loop on a daemon thread, every sending thread
hands its coroutine over and waits for the result, and ``close`` runs the sink's shutdown on the
loop, cancels whatever its client left running and stops the thread. The coroutines keep within
the destination's ``timeout`` themselves; the threads wait a little longer, only so that a loop
that is stuck cannot hold them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from workers.sinks.base import SinkError

T = TypeVar("T")

# How much longer than ``timeout`` a thread waits for the loop, which enforces ``timeout`` itself.
LOOP_MARGIN = 1.0


class LoopThread:
    """One event loop on one daemon thread, started by the first ``run``; safe to share between threads."""

    def __init__(self, name: str, target: str) -> None:
        """Prepare the loop; nothing starts until the first ``run``.

        Args:
            name: the thread's name.
            target: the destination as errors may name it (no credentials).
        """
        self.name = name
        self._target = target
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def run(self, work: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``work`` on the loop and return its result, starting the loop if need be.

        Raises:
            SinkError: ``connection`` once closed, and when ``close`` cancelled ``work``;
                ``timeout`` when the loop gave no result within ``timeout`` (plus a margin);
                and whatever ``work`` raises.
        """
        loop = self._running_loop()
        result: concurrent.futures.Future[T] | None = None
        if loop is not None:
            # RuntimeError: the loop closed since it was looked up.
            with contextlib.suppress(RuntimeError):
                result = asyncio.run_coroutine_threadsafe(work, loop)
        if result is None:
            work.close()
            raise SinkError(reason="connection", retryable=True, detail=f"the sink is closed ({self._target})")
        try:
            return result.result(timeout + LOOP_MARGIN)
        except concurrent.futures.TimeoutError:
            result.cancel()
            raise SinkError(
                reason="timeout", retryable=True, detail=f"no answer within {timeout:g}s ({self._target})"
            ) from None
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            # close() cancels what is still running on the loop: this thread is not being cancelled.
            raise SinkError(
                reason="connection",
                retryable=True,
                detail=f"the sink is closed, the send was cancelled before an answer ({self._target})",
            ) from None

    def close(self, shutdown: Callable[[], Awaitable[None]], timeout: float) -> None:
        """Run ``shutdown()`` on the loop, cancel every task still pending, and stop the thread.

        Idempotent; when the loop never started, ``shutdown`` is not called.

        Raises:
            TimeoutError: ``shutdown`` did not end within ``timeout`` (plus a margin).
            Exception: what ``shutdown`` raised. The loop and its thread are stopped either way.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        done = asyncio.run_coroutine_threadsafe(_finish(shutdown), loop)
        try:
            done.result(timeout + LOOP_MARGIN)
        except concurrent.futures.TimeoutError:
            done.cancel()
            raise
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout + LOOP_MARGIN)
            if not thread.is_alive():
                loop.close()

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        with self._lock:
            if self._closed:
                return None
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop


async def _finish(shutdown: Callable[[], Awaitable[None]]) -> None:
    try:
        await shutdown()
    finally:
        # Whatever the client left running, so that closing the loop destroys no pending task.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        # A closed transport finishes on a later turn of the loop (connection_lost is scheduled);
        # stopping first would leave it to the garbage collector, on a closed loop.
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.get_running_loop().shutdown_asyncgens()
