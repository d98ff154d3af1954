"""Small real stand-ins shared by the Capture client tests: a clock that sleeps instantly, scripted attempts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class FakeClock:
    """A monotonic clock that only moves when ``sleep`` is called, and remembers every sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The current fake time."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the wait and move the clock by it, without waiting."""
        self.sleeps.append(seconds)
        self.now += seconds


class Script(Generic[T]):
    """An attempt that plays a list of outcomes in order: an exception is raised, anything else returned."""

    def __init__(self, *outcomes: T | BaseException) -> None:
        self._outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> T:
        outcome = self._outcomes[min(self.calls, len(self._outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class RecordingLimiter:
    """A limiter that grants every slot (or raises the queued errors first) and records the deadlines asked for."""

    def __init__(self, *errors: Exception) -> None:
        self._errors = list(errors)
        self.deadlines: list[float] = []
        self.held = False

    @contextmanager
    def _held(self) -> Iterator[None]:
        self.held = True
        try:
            yield
        finally:
            self.held = False

    def slot(self, *, deadline: float) -> AbstractContextManager[None]:
        """Raise the next queued error, or hand out a slot."""
        self.deadlines.append(deadline)
        if self._errors:
            raise self._errors.pop(0)
        return self._held()
