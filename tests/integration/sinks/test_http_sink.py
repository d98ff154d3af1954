"""The HTTP sink against a real receiver (Starlette under uvicorn, on a loopback port): signatures
the reference ``standardwebhooks`` package verifies, every class of answer, timeouts, a receiver
that never finishes its answer, redirects not followed, connection reuse, and nothing private in
the errors."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
import pickle
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from capture_relay.embedded_redis import free_port
from service.destination_config import HttpDestination
from tests.support.servers import serve_in_thread
from tests.support.sinks import EMAIL, delivery, send_failing
from workers.sinks import open_sink
from workers.sinks.base import Outgoing, SinkError
from workers.sinks.http import HttpSink, loggable_url


def new_secret() -> str:
    """A fresh Standard Webhooks secret (24 random bytes, the spec's minimum)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]


@dataclass
class Answer:
    """What the receiver answers on ``/hook``."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """A webhook receiver that records every request and answers as the test sets it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answer = Answer()
        # Set at teardown: lets handlers that hold their answer back finish.
        self.release = threading.Event()

    def app(self) -> Starlette:
        """``/hook`` answers ``self.answer``; ``/slow`` never answers; ``/drip/{status}`` never ends its body."""

        async def record(request: Request) -> None:
            client = request.client
            assert client is not None
            body = await request.body()
            self.received.append(Received(request.url.path, dict(request.headers), body, (client.host, client.port)))

        async def hook(request: Request) -> Response:
            await record(request)
            return Response(self.answer.body, status_code=self.answer.status, headers=self.answer.headers)

        async def slow(request: Request) -> Response:
            await record(request)
            await self._held()
            return Response(status_code=200)

        async def drip(request: Request) -> Response:
            await record(request)

            async def chunks() -> AsyncIterator[bytes]:
                while not self.release.is_set():
                    yield b"x"
                    await asyncio.sleep(0.02)

            return StreamingResponse(chunks(), status_code=int(request.path_params["status"]))

        routes = [
            Route("/hook", hook, methods=["POST"]),
            Route("/elsewhere", hook, methods=["POST"]),
            Route("/slow", slow, methods=["POST"]),
            Route("/drip/{status:int}", drip, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def _held(self) -> None:
        while not self.release.is_set():
            await asyncio.sleep(0.02)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """A running receiver and its base URL."""
    receiver = Receiver()
    with serve_in_thread(receiver.app()) as base_url:
        yield receiver, base_url
        receiver.release.set()


SinkFactory = Callable[..., HttpSink]


@pytest.fixture
def make_sink(receiver: tuple[Receiver, str]) -> Iterator[SinkFactory]:
    """Open sinks to the receiver (``path`` or a full ``url``, plus destination keys); closed after the test."""
    opened: list[HttpSink] = []
    _, base_url = receiver

    def make(path: str = "/hook", *, url: str | None = None, clock: Any = None, **keys: Any) -> HttpSink:
        config = HttpDestination.model_validate({"type": "http", "url": url or base_url + path, **keys})
        sink = HttpSink("crm", config) if clock is None else HttpSink("crm", config, clock=clock)
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def outgoing(**overrides: Any) -> Outgoing:
    """Delivery 1 to ``crm``; its record is the personal data a receiver echoes in a test below."""
    record = {"email": EMAIL, "givenName": "Jane", "phone": 4915112345678}
    return delivery(1, "crm", payload={"record": record}, **overrides)


# -- signatures -----------------------------------------------------------------------------


def test_a_delivery_verifies_with_the_standardwebhooks_package(
    receiver: tuple[Receiver, str], make_sink: SinkFactory
) -> None:
    """The reference verifier accepts the request and reads back the payload."""
    secret = new_secret()
    sink = make_sink(signing_secret=secret)
    delivery = outgoing()

    sink.send(delivery)

    (request,) = receiver[0].received
    assert Webhook(secret).verify(request.body, request.headers) == delivery.payload
    assert request.headers["webhook-id"] == "evt-0001:crm"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("capture-relay/")


def test_during_rotation_both_secrets_verify(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """With two secrets, a receiver holding either the old or the new one accepts the delivery."""
    old, new = new_secret(), new_secret()
    sink = make_sink(signing_secret=[old, new])

    sink.send(outgoing())

    (request,) = receiver[0].received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(request.body, request.headers)


def test_a_wrong_secret_does_not_verify(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """A receiver with another secret rejects the signature."""
    sink = make_sink(signing_secret=new_secret())

    sink.send(outgoing())

    (request,) = receiver[0].received
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)


def test_without_a_secret_no_signature_is_sent(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """An unsigned destination gets webhook-id and webhook-timestamp, but no webhook-signature."""
    sink = make_sink()

    sink.send(outgoing())

    (request,) = receiver[0].received
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == "evt-0001:crm"
    assert request.headers["webhook-timestamp"].isdigit()


def test_configured_headers_are_sent(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """Extra headers (an API key) reach the receiver with their real values."""
    sink = make_sink(headers={"Authorization": "Bearer s3cr3t-t0ken", "X-Tenant": "acme"})

    sink.send(outgoing())

    (request,) = receiver[0].received
    assert request.headers["authorization"] == "Bearer s3cr3t-t0ken"
    assert request.headers["x-tenant"] == "acme"


def test_a_header_value_that_cannot_be_sent_fails_at_start_up(receiver: tuple[Receiver, str]) -> None:
    """A header value with a line break is refused when the sink opens, without repeating it."""
    config = HttpDestination.model_validate(
        {"type": "http", "url": receiver[1] + "/hook", "headers": {"X-Key": "abc\r\nInjected: 1"}}
    )

    with pytest.raises(ValueError, match=r"destinations\.crm\.headers\.X-Key") as caught:
        HttpSink("crm", config)

    assert "Injected" not in str(caught.value)


def test_a_secret_that_is_not_base64_fails_at_start_up(receiver: tuple[Receiver, str]) -> None:
    """A ``whsec_`` secret that passes the config's pattern but does not decode is refused when the sink opens."""
    config = HttpDestination.model_validate(
        {"type": "http", "url": receiver[1] + "/hook", "signing_secret": [new_secret(), "whsec_abcde"]}
    )

    with pytest.raises(ValueError, match=r"destinations\.crm\.signing_secret\[1\]") as caught:
        HttpSink("crm", config)

    assert "abcde" not in str(caught.value)


# -- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(receiver: tuple[Receiver, str], make_sink: SinkFactory, status: int) -> None:
    """Any 2xx answer means delivered."""
    receiver[0].answer = Answer(status, b"" if status == 204 else b'{"ok": true}')
    sink = make_sink()

    sink.send(outgoing())

    assert len(receiver[0].received) == 1


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        pytest.param(400, False, id="400-dead-letter"),
        pytest.param(401, False, id="401-dead-letter"),
        pytest.param(404, False, id="404-dead-letter"),
        pytest.param(422, False, id="422-dead-letter"),
        pytest.param(408, True, id="408-retry"),
        pytest.param(409, True, id="409-retry"),
        pytest.param(425, True, id="425-retry"),
        pytest.param(429, True, id="429-retry"),
        pytest.param(500, True, id="500-retry"),
        pytest.param(502, True, id="502-retry"),
        pytest.param(503, True, id="503-retry"),
    ],
)
def test_failing_statuses_are_classified(
    receiver: tuple[Receiver, str], make_sink: SinkFactory, status: int, retryable: bool
) -> None:
    """408, 409, 425, 429 and 5xx are retried; any other 4xx goes to the dead letter."""
    receiver[0].answer = Answer(status, b"nope")
    sink = make_sink()

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable, error.status) == ("http_status", retryable, status)
    assert error.detail == f"HTTP {status}: nope"
    assert error.retry_after is None


def test_retry_after_in_seconds_is_passed_on(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """A 429 with ``Retry-After: 120`` asks the engine to wait 120 s."""
    receiver[0].answer = Answer(429, b"slow down", {"Retry-After": "120"})
    sink = make_sink()

    error = send_failing(sink, outgoing())

    assert error.retry_after == 120.0


def test_retry_after_as_a_date_is_turned_into_seconds(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """A 503 with ``Retry-After: <HTTP date>`` gives the seconds from the sink's clock to that date."""
    now = 1_750_000_000.0
    receiver[0].answer = Answer(503, b"", {"Retry-After": email.utils.formatdate(now + 90, usegmt=True)})
    sink = make_sink(clock=lambda: now)

    error = send_failing(sink, outgoing())

    assert error.retry_after == 90.0
    assert error.detail == "HTTP 503"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(receiver: tuple[Receiver, str], make_sink: SinkFactory, status: int) -> None:
    """A redirect fails for good, names where it pointed (without its query), and is not followed."""
    receiver[0].answer = Answer(status, b"", {"Location": "/elsewhere?token=hunter2"})
    sink = make_sink()

    error = send_failing(sink, outgoing())

    assert [request.path for request in receiver[0].received] == ["/hook"]
    assert (error.reason, error.retryable, error.status) == ("redirect", False, status)
    assert f"{receiver[1]}/elsewhere" in error.detail
    assert "hunter2" not in error.detail


def test_long_answers_are_cut_and_control_characters_replaced(
    receiver: tuple[Receiver, str], make_sink: SinkFactory
) -> None:
    """The detail quotes the first 200 characters of the answer, on one line, without escapes."""
    receiver[0].answer = Answer(500, b"\x1b[31mboom\x00\r\n" + b"a" * 10_000)
    sink = make_sink()

    error = send_failing(sink, outgoing())

    assert error.detail == "HTTP 500: " + ("[31mboom " + "a" * 10_000)[:200]


def test_payload_values_never_appear_in_errors(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """A receiver that echoes the rejected payload does not get its values into the error."""
    receiver[0].answer = Answer(
        422,
        b'{"error": "invalid", "got": {"email": "jane.doe@example.com", "givenName": "Jane", "phone": 4915112345678}}',
    )
    sink = make_sink()

    error = send_failing(sink, outgoing())

    text = f"{error} {error!r} {error.detail} {error.args}"
    for value in ("jane.doe@example.com", "Jane", "4915112345678"):
        assert value not in text
    assert "[redacted]" in error.detail


def test_secrets_echoed_by_the_receiver_never_appear_in_errors(
    receiver: tuple[Receiver, str], make_sink: SinkFactory
) -> None:
    """A 401 that quotes the API key header, the signing secret or the URL's token is masked:
    the detail goes to logs and the dead letter."""
    _, base_url = receiver
    secret = new_secret()
    url = f"{base_url}/hook?token=s3cr3t-query-token"
    receiver[0].answer = Answer(401, f"invalid key sk_live_ABCDEF123456 (secret {secret}) for {url}".encode())
    sink = make_sink(url=url, headers={"Authorization": "Bearer sk_live_ABCDEF123456"}, signing_secret=secret)

    error = send_failing(sink, outgoing())

    text = f"{error} {error!r} {error.detail}"
    for value in ("sk_live_ABCDEF123456", secret.removeprefix("whsec_"), "s3cr3t-query-token"):
        assert value not in text
    assert error.detail.startswith("HTTP 401: invalid key [redacted]")


# -- no answer ------------------------------------------------------------------------------


def test_a_receiver_slower_than_the_timeout_times_out(make_sink: SinkFactory) -> None:
    """No answer within ``timeout`` is a retryable timeout."""
    sink = make_sink("/slow", timeout="300ms")

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable, error.status) == ("timeout", True, None)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("status", "raises"), [(200, False), (503, True)])
def test_an_answer_that_never_ends_does_not_hold_the_sender(make_sink: SinkFactory, status: int, raises: bool) -> None:
    """A receiver that sends its status, then trickles its body forever, is cut off; its status decides."""
    sink = make_sink(f"/drip/{status}", timeout="300ms")

    if raises:
        error = send_failing(sink, outgoing())
        assert (error.reason, error.status) == ("http_status", 503)
        assert error.detail.startswith("HTTP 503: x")
    else:
        sink.send(outgoing())


def test_a_refused_connection_is_a_connect_error(make_sink: SinkFactory) -> None:
    """Nothing listening is retryable; the error names the URL without its query string."""
    port = free_port()
    sink = make_sink(url=f"http://127.0.0.1:{port}/hook?token=hunter2", timeout="2s")

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("connect", True)
    assert f"http://127.0.0.1:{port}/hook" in error.detail
    assert "hunter2" not in str(error)


# -- connections ----------------------------------------------------------------------------


def test_deliveries_reuse_one_connection(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """Sequential deliveries through one sink arrive over a single TCP connection."""
    sink = make_sink(signing_secret=new_secret())

    for number in range(5):
        sink.send(outgoing(delivery_id=f"evt-{number}:crm"))

    clients = {request.client for request in receiver[0].received}
    assert len(receiver[0].received) == 5
    assert len(clients) == 1


def test_a_connection_survives_a_failed_delivery(receiver: tuple[Receiver, str], make_sink: SinkFactory) -> None:
    """A short error answer is read to its end, so the next delivery still reuses the connection."""
    sink = make_sink()
    receiver[0].answer = Answer(503, b"busy")
    send_failing(sink, outgoing())
    receiver[0].answer = Answer(200)

    sink.send(outgoing())

    assert len({request.client for request in receiver[0].received}) == 1


def test_open_sink_opens_an_http_sink(receiver: tuple[Receiver, str]) -> None:
    """``type: http`` opens an ``HttpSink`` that delivers."""
    config = HttpDestination.model_validate({"type": "http", "url": receiver[1] + "/hook"})

    sink = open_sink("crm", config)
    try:
        sink.send(outgoing())
    finally:
        sink.close()

    assert isinstance(sink, HttpSink)
    assert len(receiver[0].received) == 1


# -- the error and the delivery as values ---------------------------------------------------


def test_a_sink_error_survives_pickling() -> None:
    """An error that crosses a process keeps everything the engine reads."""
    error = SinkError(reason="http_status", retryable=True, status=429, retry_after=3.0, detail="HTTP 429")

    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes

    assert (copy.reason, copy.retryable, copy.status, copy.retry_after, copy.detail) == (
        "http_status",
        True,
        429,
        3.0,
        "HTTP 429",
    )


def test_the_repr_of_a_delivery_hides_its_payload() -> None:
    """A logged ``Outgoing`` shows its identity, not the record values."""
    assert "jane.doe" not in repr(outgoing())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param("https://hooks.example.com/in?token=abc", "https://hooks.example.com/in", id="query"),
        pytest.param("https://user:pw@hooks.example.com:8443/in#frag", "https://hooks.example.com:8443/in", id="auth"),
        pytest.param("http://[::1]:8080", "http://[::1]:8080/", id="ipv6-no-path"),
    ],
)
def test_loggable_url_keeps_only_scheme_host_port_and_path(url: str, shown: str) -> None:
    """Query strings, credentials and fragments never reach a log line."""
    assert loggable_url(url) == shown
