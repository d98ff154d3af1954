"""RedactFields (the allowlist) and configure_logging: one redacted JSON object per line, from both worlds."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from _pytest.logging import LogCaptureHandler

from service.logs import NO_MESSAGE_BODIES, REDACTED, SAFE_FIELDS, NoMessageBodies, RedactFields, configure_logging

# Loggers configure_logging changes besides the root; each is put back as it was after every test.
_TOUCHED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "rq.worker", "rq")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo configure_logging: structlog's defaults, the root handlers and level, the named loggers."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved_named = {
        name: (list(logger.handlers), logger.propagate, logger.disabled)
        for name, logger in ((name, logging.getLogger(name)) for name in _TOUCHED_LOGGERS)
    }
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    # pytest swaps its per-phase capture handlers on the root itself; keep whichever are current.
    current = [handler for handler in root.handlers if isinstance(handler, LogCaptureHandler)]
    kept = [handler for handler in saved_root[0] if not isinstance(handler, LogCaptureHandler)]
    root.handlers[:] = [*kept, *current]
    root.setLevel(saved_root[1])
    for name, (handlers, propagate, disabled) in saved_named.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.propagate, logger.disabled = propagate, disabled


@pytest.fixture
def stream() -> io.StringIO:
    """Where configure_logging writes, instead of stdout."""
    return io.StringIO()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Every line of the stream parsed as one JSON object (fails on any line that is not)."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _fail_with_a_secret_in_a_local() -> None:
    api_token = "tok-" + "4f9c2a17e0d84b6b"  # built at run time, so the source text never holds it
    raise RuntimeError(f"upstream refused the request ({len(api_token)} byte token)")


SECRET_IN_LOCAL = "tok-4f9c2a17e0d84b6b"


class DeliveredMessage:
    """Stands in for aiormq's returned message, whose repr holds the body."""

    def __repr__(self) -> str:
        return 'DeliveredMessage(body=b\'{"email":"jane.doe@example.com"}\')'


def _record(name: str, msg: object, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)


class TestRedactFields:
    def test_values_outside_the_allowlist_are_replaced(self) -> None:
        """A field not on the allowlist keeps its key but loses its value."""
        processor = RedactFields()
        event_dict = {"event": "webhook.accepted", "token": "eyJhbGciOi...", "email": "jane@example.com"}

        result = processor(None, "info", event_dict)

        assert result == {"event": "webhook.accepted", "token": REDACTED, "email": REDACTED}

    def test_allowlisted_values_are_kept(self) -> None:
        """Every allowlisted field passes unchanged."""
        event_dict = {name: f"value-of-{name}" for name in SAFE_FIELDS}

        result = RedactFields()(None, "info", dict(event_dict))

        assert result == event_dict

    def test_structlog_private_keys_are_kept(self) -> None:
        """Keys starting with _ (structlog's record plumbing) are left for the formatter."""
        record = object()
        event_dict = {"event": "x", "_record": record, "_from_structlog": True}

        result = RedactFields()(None, "info", event_dict)

        assert result == {"event": "x", "_record": record, "_from_structlog": True}

    def test_custom_allowlist(self) -> None:
        """An explicit allowlist replaces the default one."""
        processor = RedactFields(allowed={"event", "attempt"})
        event_dict = {"event": "delivery.retry", "attempt": 2, "uuid": "6b004bc5"}

        result = processor(None, "info", event_dict)

        assert result == {"event": "delivery.retry", "attempt": 2, "uuid": REDACTED}

    def test_nested_values_are_redacted_whole(self) -> None:
        """A mapping under a non-allowlisted key is replaced entirely, not walked."""
        event_dict = {"event": "x", "record": {"email": "jane@example.com", "uuid": "6b004bc5"}}

        result = RedactFields()(None, "info", event_dict)

        assert result["record"] == REDACTED


class TestConfigureLogging:
    def test_structlog_lines_are_json_objects(self, stream: io.StringIO) -> None:
        """A structlog call becomes one JSON object with event, level, logger, timestamp and redacted extras."""
        configure_logging(stream=stream)

        structlog.get_logger("service.webhooks").info("webhook.accepted", source="v3", token="eyJ.secret.sig")

        (line,) = _lines(stream)
        assert line["event"] == "webhook.accepted"
        assert (line["level"], line["logger"], line["source"]) == ("info", "service.webhooks", "v3")
        assert line["token"] == REDACTED
        assert line["timestamp"].endswith("Z")

    def test_stdlib_lines_are_json_objects(self, stream: io.StringIO) -> None:
        """A standard-library logger (rq's) goes through the same chain and is one JSON object."""
        configure_logging(stream=stream)

        logging.getLogger("rq.worker").warning("Job %s: %s", "event-v3-e1", "failed")

        (line,) = _lines(stream)
        assert (line["event"], line["level"], line["logger"]) == ("Job event-v3-e1: failed", "warning", "rq.worker")

    @pytest.mark.parametrize("name", ["httpx", "httpx2", "httpcore"])
    def test_http_client_request_lines_are_not_written_even_at_debug(self, stream: io.StringIO, name: str) -> None:
        """httpx logs each request with its whole URL in the message, credentials and query token
        included; the allowlist cannot see into a message, so those lines are not written."""
        configure_logging(level="debug", stream=stream)

        logging.getLogger(name).info('HTTP Request: POST https://user:pw@crm.example.com/h?token=s3cr3t "HTTP/1.1 204"')
        logging.getLogger(name).warning("connection pool is full")

        assert [line["event"] for line in _lines(stream)] == ["connection pool is full"]

    def test_rq_per_job_lines_are_dropped_but_its_other_lines_kept(self, stream: io.StringIO) -> None:
        """rq's four INFO lines per job repeat what event.processed / delivery.* say; shutdown lines stay."""
        configure_logging(stream=stream)
        rq_log = logging.getLogger("rq.worker")

        rq_log.info("Worker %s: %s: %s", "w1", "capture-events", "event-v3-e1")
        rq_log.info("Successfully completed job %s in %ss on worker %s", "event-v3-e1", "0.01", "w1")
        rq_log.info("Worker %s: %s: %s (%s)", "w1", "capture-events", "Job OK", "event-v3-e1")
        rq_log.info("Worker %s: job %s result is kept for %s seconds", "w1", "event-v3-e1", 3600)
        rq_log.info("Worker %s: warm shut down requested", "w1")

        assert [line["event"] for line in _lines(stream)] == ["Worker w1: warm shut down requested"]

    def test_each_call_is_exactly_one_line(self, stream: io.StringIO) -> None:
        """Several calls from both worlds give as many lines, each a JSON object, in order."""
        configure_logging(stream=stream)

        structlog.get_logger().info("first")
        logging.getLogger("uvicorn.error").info("second")
        structlog.get_logger().warning("third", detail="multi\nline")

        assert [line["event"] for line in _lines(stream)] == ["first", "second", "third"]

    def test_rq_handlers_are_replaced_so_records_are_written_once(self, stream: io.StringIO) -> None:
        """A handler rq attached itself is removed; the record reaches only our stream."""
        own_stream = io.StringIO()
        logging.getLogger("rq.worker").addHandler(logging.StreamHandler(own_stream))
        configure_logging(stream=stream)

        logging.getLogger("rq.worker").info("Worker started")

        assert own_stream.getvalue() == ""
        assert len(_lines(stream)) == 1

    def test_uvicorn_access_log_is_silenced(self, stream: io.StringIO) -> None:
        """uvicorn's unredacted access line is off; our canonical line is the one per request."""
        configure_logging(stream=stream)

        logging.getLogger("uvicorn.access").info('127.0.0.1 - "POST /webhooks/capture/v3?token=x" 202')

        assert stream.getvalue() == ""

    def test_level_filters_both_worlds(self, stream: io.StringIO) -> None:
        """Below the configured level nothing is written, from structlog or stdlib."""
        configure_logging(level="warning", stream=stream)

        structlog.get_logger().info("dropped")
        logging.getLogger("rq.worker").info("dropped too")
        structlog.get_logger().warning("kept")

        assert [line["event"] for line in _lines(stream)] == ["kept"]

    def test_contextvars_are_merged_and_redacted(self, stream: io.StringIO) -> None:
        """A bound request id appears on the line; a bound unlisted value is redacted."""
        configure_logging(stream=stream)
        structlog.contextvars.bind_contextvars(request_id="req-1", email="jane@example.com")

        structlog.get_logger().info("webhook.received")

        (line,) = _lines(stream)
        assert (line["request_id"], line["email"]) == ("req-1", REDACTED)

    def test_structlog_exception_shows_no_local_values(self, stream: io.StringIO) -> None:
        """log.exception renders the traceback as data without local variables, so a secret local is absent."""
        configure_logging(stream=stream)
        log = structlog.get_logger("workers.pipeline")

        try:
            _fail_with_a_secret_in_a_local()
        except RuntimeError:
            log.exception("job.failed")

        (line,) = _lines(stream)
        assert line["exception"][0]["exc_type"] == "RuntimeError"
        assert [frame["name"] for frame in line["exception"][0]["frames"]][-1] == "_fail_with_a_secret_in_a_local"
        assert SECRET_IN_LOCAL not in stream.getvalue()
        assert "locals" not in stream.getvalue()

    def test_stdlib_exception_shows_no_local_values(self, stream: io.StringIO) -> None:
        """logger.exception from a library is rendered the same way: structured, without locals."""
        configure_logging(stream=stream)

        try:
            _fail_with_a_secret_in_a_local()
        except RuntimeError:
            logging.getLogger("rq.worker").exception("Job failed")

        (line,) = _lines(stream)
        assert line["exception"][0]["exc_type"] == "RuntimeError"
        assert SECRET_IN_LOCAL not in stream.getvalue()
        assert "Traceback (most recent call last)" not in stream.getvalue()

    def test_console_format_writes_readable_lines(self, stream: io.StringIO) -> None:
        """format=console writes one plain line per call, still redacted."""
        configure_logging(fmt="console", stream=stream)

        structlog.get_logger().info("webhook.accepted", token="eyJ.secret.sig")

        output = stream.getvalue()
        assert "webhook.accepted" in output
        assert "eyJ.secret.sig" not in output
        assert len(output.splitlines()) == 1

    @pytest.mark.parametrize("source", ["structlog", "stdlib"])
    def test_console_format_writes_exceptions_without_locals(self, stream: io.StringIO, source: str) -> None:
        """format=console renders a logged exception as text (type and message), still without locals."""
        configure_logging(fmt="console", stream=stream)

        try:
            _fail_with_a_secret_in_a_local()
        except RuntimeError:
            if source == "structlog":
                structlog.get_logger("workers.pipeline").exception("job.failed")
            else:
                logging.getLogger("rq.worker").exception("Job failed")

        output = stream.getvalue()
        assert "RuntimeError: upstream refused the request" in output
        assert SECRET_IN_LOCAL not in output


class TestNoMessageBodies:
    def test_an_aiormq_record_keeps_its_template_not_its_arguments(self) -> None:
        """The returned message aiormq logs at ERROR loses its arguments; the template stays."""
        record = _record("aiormq.channel", "Unhandled message %r returning", DeliveredMessage())

        assert NoMessageBodies().filter(record)

        assert record.getMessage() == "Unhandled message %r returning"

    def test_a_message_in_the_text_itself_is_left_out(self) -> None:
        """A line with the message already in its text (no template) is replaced."""
        record = _record("aiormq", repr(DeliveredMessage()))

        NoMessageBodies().filter(record)

        assert "jane.doe" not in record.getMessage()

    def test_an_exception_is_reduced_to_its_type(self) -> None:
        """An exception's text may quote the message too: only its type stays, on the line."""
        record = _record("aiormq.channel", "Unhandled return callback exception", exc=ValueError(DeliveredMessage()))

        NoMessageBodies().filter(record)

        assert (record.getMessage(), record.exc_info) == ("Unhandled return callback exception (ValueError)", None)

    def test_other_loggers_records_are_untouched(self) -> None:
        """Only aiormq's records change (a name that merely starts so is not aiormq's)."""
        for name in ("rq.worker", "aiormqx"):
            record = _record(name, "Job %s", "event-v3-e1")

            NoMessageBodies().filter(record)

            assert record.getMessage() == "Job event-v3-e1"

    def test_importing_the_amqp_sink_covers_plain_logging(self, caplog: pytest.LogCaptureFixture) -> None:
        """Without configure_logging (pytest's handler, a script's basicConfig) aiormq's loggers filter themselves."""
        import workers.sinks.amqp  # noqa: F401 (the import puts the filter on)

        logging.getLogger("aiormq.channel").error("Unhandled message %r returning", DeliveredMessage())
        logging.getLogger("aiormq.connection").getChild("marshall").warning("frame %r dropped", DeliveredMessage())

        assert "jane.doe" not in caplog.text
        assert [record.getMessage() for record in caplog.records] == [
            "Unhandled message %r returning",
            "frame %r dropped",
        ]

    def test_configure_logging_filters_an_aiormq_logger_of_any_name(self, stream: io.StringIO) -> None:
        """A logger aiormq may add later, which no filter of a logger covers: the handler's does."""
        configure_logging(stream=stream)

        logging.getLogger("aiormq.robust_future_module").error("Returned %r", DeliveredMessage())

        (line,) = _lines(stream)
        assert line["event"] == "Returned %r"
        assert NO_MESSAGE_BODIES in logging.getLogger("aiormq.channel").filters
