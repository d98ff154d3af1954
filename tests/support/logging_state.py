"""Undo what ``configure_logging`` did to the process, for tests that run a command in-process.

A command configures logging on pytest's captured stderr; left in place, later tests would log
into a closed stream (a server thread still logs while it shuts down).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from service.logs import QUIETED_LOGGERS

# Loggers configure_logging changes besides the root.
TOUCHED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "rq.worker", "rq", *QUIETED_LOGGERS)


@contextmanager
def logging_restored() -> Iterator[None]:
    """The root logger and ``TOUCHED_LOGGERS`` as they were before the block: handlers, levels, flags."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    named = {name: logging.getLogger(name) for name in TOUCHED_LOGGERS}
    saved = {
        name: (list(logger.handlers), logger.level, logger.propagate, logger.disabled) for name, logger in named.items()
    }
    try:
        yield
    finally:
        structlog.reset_defaults()
        root.handlers[:] = saved_root[0]
        root.setLevel(saved_root[1])
        for name, (handlers, level, propagate, disabled) in saved.items():
            named[name].handlers[:] = handlers
            named[name].setLevel(level)
            named[name].propagate, named[name].disabled = propagate, disabled
