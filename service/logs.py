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


# aiormq's loggers. A filter on a logger sees only the records logged on that very logger, not on
# its children, so each is named: the modules' loggers and the child ``marshall`` creates when it logs.
AIORMQ_LOGGERS = ("aiormq", "aiormq.channel", "aiormq.connection", "aiormq.connection.marshall")


class NoMessageBodies(logging.Filter):
    """Keep what a message broker's client library sent or got back out of its log lines.

    aiormq logs a returned message it cannot match to a publish (one whose send timed out) at
    ERROR, as ``Unhandled message DeliveredMessage(... body=b'...')``, so no level keeps the
    payload out; at DEBUG it logs every frame it writes. Its records keep their template and lose
    their arguments (``%r`` stays as it is), and an exception attached to one is reduced to its
    type, since its text may quote the message too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "aiormq" and not record.name.startswith("aiormq."):
            return True
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        if "DeliveredMessage" in template or "body=" in template:
            template = "(a line that quoted a message, left out)"
        if record.exc_info and record.exc_info[1] is not None:
            template = f"{template} ({type(record.exc_info[1]).__name__})"
        record.msg, record.args = template, ()
        record.exc_info = record.exc_text = None
        return True


NO_MESSAGE_BODIES = NoMessageBodies()


def keep_message_bodies_out() -> None:
    """Put ``NoMessageBodies`` on aiormq's loggers, so that it holds with or without ``configure_logging``.

    Idempotent; the AMQP sink calls it when it is imported.
    """
    known = {name for name in logging.Logger.manager.loggerDict if name.startswith("aiormq.")}
    for name in sorted(known.union(AIORMQ_LOGGERS)):
        logging.getLogger(name).addFilter(NO_MESSAGE_BODIES)


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
    # On the loggers for records that reach any handler (pytest's, say), and on ours for those of
    # an aiormq logger no name above covers.
    keep_message_bodies_out()
    handler.addFilter(NO_MESSAGE_BODIES)
