"""Deadlines for blocking calls that have no timeout of their own: one thread per sink runs the
action of each deadline that passed before its block ended.

A thread per deadline (``threading.Timer``) cost more than the write it guarded; here arming and
disarming are a dict operation under a lock, and the one thread sleeps until the earliest
deadline. An action may run just as its block ends (it was due at that moment): actions must be
harmless then, as cutting a connection that the next use checks is.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Watchdog:
    """Runs an action when a guarded block outlives its deadline; safe to share between threads."""

    def __init__(self, name: str) -> None:
        """Prepare the watchdog; its thread starts with the first guarded block."""
        self.name = name
        self._condition = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], None]]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    @contextmanager
    def guard(self, seconds: float, action: Callable[[], None]) -> Iterator[None]:
        """Run ``action`` (on the watchdog's thread) if the block has not ended within ``seconds``."""
        with self._condition:
            token = next(self._tokens)
            self._armed[token] = (time.monotonic() + seconds, action)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
                self._thread.start()
            self._condition.notify()
        try:
            yield
        finally:
            with self._condition:
                self._armed.pop(token, None)

    def close(self) -> None:
        """Stop the thread; blocks still guarded then are no longer watched. Idempotent."""
        with self._condition:
            self._closed = True
            thread, self._thread = self._thread, None
            self._condition.notify()
        if thread is not None:
            thread.join(timeout=5)

    def _watch(self) -> None:
        while True:
            with self._condition:
                if self._closed:
                    return
                now = time.monotonic()
                due = [token for token, (deadline, _) in self._armed.items() if deadline <= now]
                actions = [self._armed.pop(token)[1] for token in due]
                if not actions:
                    earliest = min((deadline for deadline, _ in self._armed.values()), default=None)
                    self._condition.wait(None if earliest is None else earliest - now)
                    continue
            for action in actions:
                action()
