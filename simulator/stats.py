"""What the simulator was asked: counts per path, answers, simultaneous calls and a recent-call log.

Tests read it through ``GET /__sim/stats`` to check what a client sent (which parameters, which
auth mode) and how hard it pushed (``max_in_flight``: the most Capture API calls in progress at
once, each counted from arrival to answer, its latency included, refused ones too).
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.types import Scope

# The key under which the middleware leaves the record of the current call in the ASGI scope.
SCOPE_KEY = "simulator.call"


@dataclass(slots=True)
class CallRecord:
    """One call, as the log keeps it. Parameter values are kept, except secrets (masked)."""

    at: float
    method: str
    path: str
    auth: str
    params: list[str]
    values: dict[str, str] = field(default_factory=dict)
    status: int | None = None
    stat: str | None = None  # "ok" or "error" for a Capture envelope; None for other answers
    code: int | None = None
    fault: str | None = None  # what the fault injection did instead of (or before) answering
    duration: float = 0.0

    def answered(self, code: int | None) -> None:
        """Note a Capture answer: ``code`` None means ``stat: ok``."""
        self.stat = "ok" if code is None else "error"
        self.code = code


def current_call(scope: Scope) -> CallRecord | None:
    """The record of the call being answered, when the middleware keeps one."""
    record = scope.get(SCOPE_KEY)
    return record if isinstance(record, CallRecord) else None


class CallStats:
    """Counters and the last ``capacity`` calls; thread-safe."""

    def __init__(self, capacity: int = 1000) -> None:
        self._lock = threading.Lock()
        self._recent: deque[CallRecord] = deque(maxlen=capacity)
        self._calls: Counter[str] = Counter()
        self._statuses: Counter[str] = Counter()
        self._codes: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    def begin(self, record: CallRecord, *, capture_api: bool) -> int:
        """Count a call that arrived; returns the Capture API calls now in progress (this one included)."""
        with self._lock:
            self._calls[record.path] += 1
            self._recent.append(record)
            if capture_api:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self.in_flight

    def end(self, record: CallRecord, *, capture_api: bool) -> None:
        """Count the answer of a call ``begin`` counted."""
        with self._lock:
            if capture_api:
                self.in_flight -= 1
            if record.status is not None:
                self._statuses[str(record.status)] += 1
            if record.stat is not None:
                self._codes["ok" if record.code is None else str(record.code)] += 1

    def reset(self) -> None:
        """Forget everything but the calls still in progress."""
        with self._lock:
            self._recent.clear()
            self._calls.clear()
            self._statuses.clear()
            self._codes.clear()
            self.max_in_flight = self.in_flight

    def snapshot(self) -> dict[str, Any]:
        """The JSON of ``GET /__sim/stats``."""
        with self._lock:
            return {
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "calls": dict(self._calls),
                "answers": {"status": dict(self._statuses), "code": dict(self._codes)},
                "recent": [asdict(record) for record in self._recent],
            }
