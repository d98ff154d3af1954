"""structlog set-up: JSON lines on stdout, one per outcome, with nothing private in them.

``configure_logging`` is called by each CLI command, never at import. Standard-library loggers
(uvicorn, rq, redis) are rendered through the same chain, so every line is JSON and every line
passes the redaction processor.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import orjson
import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"

# Fields that may appear in a log line. Everything else is replaced by REDACTED, so a value
# bound by mistake (a token, a record attribute, a secret) never reaches the output.
SAFE_FIELDS = frozenset(
    {
        "event", "level", "timestamp", "logger", "exception",
        "request_id", "method", "path", "status", "duration_ms",
        "source", "outcome", "reason", "detail",
        "event_id", "delivery_id", "job_id", "uuid", "type", "entity_type",
        "accepted", "duplicates", "count", "queue", "queues",
        "destination", "route", "attempt",
        "url", "host", "port", "worker", "version", "config", "pid",
        "endpoint", "capture_code", "request_token", "retry_in", "limiter", "held", "lease",
        "state", "probe", "replayed", "routes", "destinations", "threads", "concurrency", "fetched", "seq",
        "action", "title", "webhook_id", "changed", "pending", "applied",
    }
)  # fmt: skip


# Client libraries whose INFO and DEBUG lines quote URLs: httpx's request lines, and aiormq's
# (RabbitMQ) lines naming the connection by its URL, user name and query string included.
QUIETED_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "aiormq")
# rq's four INFO lines per job (dequeued, completed, "Job OK", result kept): our own
# event.processed / delivery.* line is the one line per outcome, and these cost CPU per job.
_RQ_JOB_CHATTER = frozenset(
    {
        "Worker %s: %s: %s",
        "Successfully completed job %s in %ss on worker %s",
        "Worker %s: %s: %s (%s)",
        "Worker %s: job %s result is kept for %s seconds",
    }
)


def _drop_rq_job_chatter(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("rq.") and record.levelno == logging.INFO and record.msg in _RQ_JOB_CHATTER)


class RedactFields:
    """Replace the value of every field not in an allowlist; an allowlist fails safe."""

    def __init__(self, allowed: Iterable[str] = SAFE_FIELDS) -> None:
        self._allowed = frozenset(allowed)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key in event_dict:
            if key not in self._allowed and not key.startswith("_"):
                event_dict[key] = REDACTED
        return event_dict


def _json_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Route structlog and standard-library logging to ``stream`` (stdout) as JSON or console lines."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks without local variables (locals are where secrets live): as data for JSON, as plain
        # text for the console, which cannot render the data form (and whose rich default shows locals).
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        if fmt == "json"
        else structlog.processors.format_exc_info,
        RedactFields(),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_json_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn's access log would be a second, unredacted line per request; ours is the one.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error", "rq.worker", "rq"):
        # rq sets its own level (INFO) at import; the configured level must govern every line.
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    for name in QUIETED_LOGGERS:
        # Their lines put whole URLs (user info, query tokens) into the message, which the field
        # allowlist cannot see into; our own lines name the destination instead.
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    handler.addFilter(_drop_rq_job_chatter)
