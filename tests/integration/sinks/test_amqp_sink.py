"""The amqp sink against the machine's RabbitMQ: messages read back with their properties, the
default exchange, unroutable messages, nacks and missing exchanges (nothing declared by the sink),
a cut connection and a frozen one, concurrent senders (a channel each), close() during sends, and
nothing private in the errors or the logs. Each
test declares its own exchange and queue under a unique name and deletes them afterwards; the
messages are read back with pika, a plain blocking consumer."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiormq
import orjson
import pika
import pika.exceptions
import pytest

from capture_relay.embedded_redis import free_port
from service.destination_config import AmqpDestination
from tests.support.sinks import delivery, send_failing, sending_in_threads, tcp_connections_to, wait_until
from tests.support.tcp_proxy import running_proxy
from workers.sinks import open_sink
from workers.sinks.amqp import AmqpSink
from workers.sinks.base import Outgoing, SinkError

SinkFactory = Callable[..., AmqpSink]
PASSWORD = "hunter2-amqp-s3cret"


@dataclass
class Message:
    """One message as a consumer got it."""

    routing_key: str
    properties: Any
    body: bytes


@dataclass
class Broker:
    """This test's exchange and queue (bound with ``capture.#``), and a channel to inspect them."""

    url: str
    exchange: str
    queue: str
    channel: Any

    def messages(self) -> list[Message]:
        """Every message in the queue, oldest first (acknowledged, so the queue is empty after)."""
        found: list[Message] = []
        while True:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return found
            found.append(Message(method.routing_key, properties, body))

    def exchange_exists(self, name: str) -> bool:
        """Look ``name`` up without creating it, on a channel of its own (a 404 closes the channel)."""
        channel = self.channel.connection.channel()
        try:
            channel.exchange_declare(exchange=name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return False
            raise
        channel.close()
        return True


@pytest.fixture
def broker(amqp_url: str, unique_name: str) -> Iterator[Broker]:
    """A fresh topic exchange and a queue bound to it; both deleted after the test."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(exchange=unique_name, exchange_type="topic")
    channel.queue_declare(queue=unique_name)
    channel.queue_bind(queue=unique_name, exchange=unique_name, routing_key="capture.#")
    yield Broker(amqp_url, unique_name, unique_name, channel)
    channel.queue_delete(queue=unique_name)
    channel.exchange_delete(exchange=unique_name)
    connection.close()


@pytest.fixture
def make_sink(broker: Broker) -> Iterator[SinkFactory]:
    """Open sinks to the test's exchange (or ``url``), with destination keys; closed after the test."""
    opened: list[AmqpSink] = []

    def make(*, url: str | None = None, max_connections: int = 4, **keys: Any) -> AmqpSink:
        values = {"type": "amqp", "url": url or broker.url, "exchange": broker.exchange, "timeout": 2} | keys
        sink = AmqpSink("crm", AmqpDestination.model_validate(values), max_connections=max_connections)
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def outgoing(number: int = 1, **overrides: Any) -> Outgoing:
    """Delivery ``number`` to ``crm`` (see ``delivery``)."""
    return delivery(number, "crm", **overrides)


# -- what is published ------------------------------------------------------------------------


def test_a_message_reads_back_with_its_properties(broker: Broker, make_sink: SinkFactory) -> None:
    """A consumer gets the JSON payload, persistent, with the delivery id as message_id."""
    sink = make_sink()
    delivery = outgoing()

    sink.send(delivery)

    (message,) = broker.messages()
    properties = message.properties
    assert orjson.loads(message.body) == delivery.payload
    assert message.routing_key == "capture.entityUpdated"
    assert properties.message_id == "evt-0001:crm"
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.type == "entityUpdated"
    assert properties.app_id == "capture-relay"
    assert properties.headers == {"uuid": delivery.uuid, "entity_type": "user"}
    assert abs(properties.timestamp - time.time()) < 60


def test_the_routing_key_template_is_filled_in(broker: Broker, make_sink: SinkFactory) -> None:
    """``{destination}``, ``{entity_type}`` and ``{event_type}`` come from the delivery."""
    sink = make_sink(routing_key="capture.{destination}.{entity_type}.{event_type}")

    sink.send(outgoing())

    assert [message.routing_key for message in broker.messages()] == ["capture.crm.user.entityUpdated"]


def test_the_default_exchange_routes_by_queue_name(broker: Broker, make_sink: SinkFactory) -> None:
    """With exchange "" the routing key names the queue."""
    sink = make_sink(exchange="", routing_key=broker.queue)

    sink.send(outgoing())

    assert [message.routing_key for message in broker.messages()] == [broker.queue]


def test_a_delivery_sent_twice_arrives_twice_with_one_message_id(broker: Broker, make_sink: SinkFactory) -> None:
    """RabbitMQ does not deduplicate: both copies carry the same message_id, for the consumer to drop one."""
    sink = make_sink()

    sink.send(outgoing(1))
    sink.send(outgoing(1, attempt=2))

    assert [message.properties.message_id for message in broker.messages()] == ["evt-0001:crm", "evt-0001:crm"]


def test_open_sink_opens_an_amqp_sink(broker: Broker) -> None:
    """The registry finds the amqp sink by its type."""
    config = AmqpDestination.model_validate({"type": "amqp", "url": broker.url, "exchange": broker.exchange})
    sink = open_sink("crm", config)
    try:
        sink.send(outgoing())
    finally:
        sink.close()

    assert len(broker.messages()) == 1


# -- refused ----------------------------------------------------------------------------------


def test_an_unroutable_message_fails_only_when_mandatory(broker: Broker, make_sink: SinkFactory) -> None:
    """No queue bound for the key: a retryable failure when mandatory, a confirmed publish otherwise."""
    strict = make_sink(routing_key="nowhere.{event_type}")
    lenient = make_sink(routing_key="nowhere.{event_type}", mandatory=False)

    error = send_failing(strict, outgoing())
    lenient.send(outgoing())

    assert (error.reason, error.retryable) == ("unroutable", True)
    assert "nowhere.entityUpdated" in error.detail
    assert broker.messages() == []


def test_a_missing_exchange_is_not_found_and_not_created(broker: Broker, make_sink: SinkFactory) -> None:
    """Publishing to an exchange that does not exist fails as not_found; the sink declares nothing."""
    missing = broker.exchange + "_missing"
    sink = make_sink(exchange=missing)

    error = send_failing(sink, outgoing())
    with pytest.raises(SinkError) as checked:
        sink.check()

    assert (error.reason, error.retryable) == ("not_found", True)
    assert "declares nothing" in error.detail
    assert checked.value.reason == "not_found"
    assert not broker.exchange_exists(missing)


def test_a_message_the_queue_rejects_is_a_nack(broker: Broker, make_sink: SinkFactory) -> None:
    """A full queue that rejects publishes (x-overflow reject-publish) makes the broker nack: retryable."""
    full = broker.queue + "_full"
    broker.channel.queue_declare(queue=full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    broker.channel.queue_bind(queue=full, exchange=broker.exchange, routing_key="full.#")
    try:
        error = send_failing(make_sink(routing_key="full.{event_type}"), outgoing())
    finally:
        broker.channel.queue_delete(queue=full)

    assert (error.reason, error.retryable) == ("nack", True)
    assert "jane.doe" not in str(error)


def test_a_vhost_the_broker_refuses_is_a_permission_error(broker: Broker, make_sink: SinkFactory) -> None:
    """A vhost that does not exist (or the user may not open): permission, retryable, said so."""
    upstream = urlsplit(broker.url)
    sink = make_sink(url=f"amqp://guest:guest@{upstream.hostname}:{upstream.port}/{broker.exchange}_vhost")

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("permission", True)
    assert "vhost" in error.detail


# -- connections ------------------------------------------------------------------------------


def test_a_cut_connection_fails_retryably_and_nothing_is_lost(broker: Broker, make_sink: SinkFactory) -> None:
    """While the connection is cut sends fail retryably; after it is back the same sink delivers."""
    upstream = urlsplit(broker.url)
    with running_proxy("127.0.0.1", upstream.port or 5672) as proxy:
        sink = make_sink(url=f"amqp://guest:guest@{proxy.address}/%2F")
        sink.send(outgoing(1))

        proxy.cut()
        failures = [send_failing(sink, outgoing(2)), send_failing(sink, outgoing(2, attempt=2))]
        proxy.restore()
        sink.send(outgoing(2, attempt=3))
        sink.send(outgoing(3))

    assert {(error.reason, error.retryable) for error in failures} == {("connection", True)}
    assert [message.properties.message_id for message in broker.messages()] == [
        "evt-0001:crm",
        "evt-0002:crm",
        "evt-0003:crm",
    ]


@pytest.mark.timeout(30)
def test_a_frozen_connection_fails_in_time_and_the_next_send_starts_afresh(
    broker: Broker, make_sink: SinkFactory
) -> None:
    """A broker that keeps the connection open but answers nothing (a hung peer, a half-open
    connection, a confirm held back): the send fails as a retryable timeout at its deadline, as do
    connecting anew and check() while it stays so; once it answers again the same sink delivers.

    At least once, not exactly once: the frozen publish may still reach the queue when the
    connection thaws, so delivery 2 may arrive twice (with one message_id); 1 and 3 arrive once."""
    upstream = urlsplit(broker.url)
    with running_proxy("127.0.0.1", upstream.port or 5672) as proxy:
        sink = make_sink(url=f"amqp://guest:guest@{proxy.address}/%2F", timeout=1)
        sink.send(outgoing(1))

        proxy.freeze()
        held = send_failing(sink, outgoing(2))  # published on the open connection; no confirm comes
        reconnecting = send_failing(sink, outgoing(2, attempt=2))  # a new connection; no handshake
        with pytest.raises(SinkError) as checked:
            sink.check()
        proxy.restore()
        sink.send(outgoing(2, attempt=3))
        sink.send(outgoing(3))

    assert {(error.reason, error.retryable) for error in (held, reconnecting, checked.value)} == {("timeout", True)}
    ids = [message.properties.message_id for message in broker.messages()]
    assert sorted(set(ids)) == ["evt-0001:crm", "evt-0002:crm", "evt-0003:crm"]
    assert (ids.count("evt-0001:crm"), ids.count("evt-0003:crm")) == (1, 1)
    assert ids.count("evt-0002:crm") in {1, 2}


def test_a_connection_dropped_while_idle_is_replaced_without_a_failure(broker: Broker, make_sink: SinkFactory) -> None:
    """A pooled connection the broker dropped meanwhile is noticed before publishing and replaced."""
    upstream = urlsplit(broker.url)
    with running_proxy("127.0.0.1", upstream.port or 5672) as proxy:
        sink = make_sink(url=f"amqp://guest:guest@{proxy.address}/%2F")
        sink.send(outgoing(1))
        proxy.cut()
        wait_until(lambda: tcp_connections_to(proxy.port) == 0)
        proxy.restore()

        sink.send(outgoing(2))

    assert [message.properties.message_id for message in broker.messages()] == ["evt-0001:crm", "evt-0002:crm"]


def test_concurrent_sends_are_each_confirmed_once(broker: Broker, make_sink: SinkFactory) -> None:
    """Eight threads share one sink; every message arrives once, over the sink's one connection."""
    upstream = urlsplit(broker.url)
    with running_proxy("127.0.0.1", upstream.port or 5672) as proxy:
        sink = make_sink(url=f"amqp://guest:guest@{proxy.address}/%2F", max_connections=8)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda number: sink.send(outgoing(number)), range(200)))
        held = tcp_connections_to(proxy.port)
        sink.close()
        released = tcp_connections_to(proxy.port)

    ids = sorted(message.properties.message_id for message in broker.messages())
    assert ids == [f"evt-{number:04d}:crm" for number in range(200)]
    assert held == 1
    assert released == 0


def test_a_channel_the_broker_closes_fails_only_its_own_send(
    broker: Broker, make_sink: SinkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tenth publish goes to an exchange that does not exist, so the broker closes its
    channel (404): those fail as not_found, every other send beside them is confirmed, and the
    sink keeps its one connection."""
    missing = broker.exchange + "_missing"
    misdirected = {f"evt-{number:04d}:crm" for number in range(0, 200, 10)}
    publish = aiormq.Channel.basic_publish
    connect = aiormq.connect
    connects: list[str] = []

    async def publish_some_astray(channel: aiormq.Channel, body: bytes, **options: Any) -> Any:
        if options["properties"].message_id in misdirected:
            options["exchange"] = missing
        return await publish(channel, body, **options)

    def counted_connect(*args: Any, **options: Any) -> Any:
        connects.append("connect")
        return connect(*args, **options)

    monkeypatch.setattr(aiormq.Channel, "basic_publish", publish_some_astray)
    monkeypatch.setattr(aiormq, "connect", counted_connect)
    sink = make_sink(max_connections=8)

    def attempt(number: int) -> str:
        try:
            sink.send(outgoing(number))
        except SinkError as exc:
            return exc.reason
        return "ok"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = dict(zip(range(200), pool.map(attempt, range(200)), strict=True))

    failed = {f"evt-{number:04d}:crm" for number, outcome in outcomes.items() if outcome != "ok"}
    assert failed == misdirected
    assert {outcomes[int(delivery_id[4:8])] for delivery_id in misdirected} == {"not_found"}
    ids = sorted(message.properties.message_id for message in broker.messages())
    assert ids == sorted({f"evt-{number:04d}:crm" for number in range(200)} - misdirected)
    assert connects == ["connect"]


def test_a_returned_message_fails_its_own_send_when_two_share_a_delivery_id(
    broker: Broker, make_sink: SinkFactory
) -> None:
    """Two threads send the same unroutable delivery at once: both fail as unroutable, neither is
    confirmed by the other's Return (each publish has a channel of its own)."""
    sink = make_sink(routing_key="nowhere.{event_type}", max_connections=2)
    outcomes: list[str] = []
    together = threading.Barrier(2)

    def attempt(number: int) -> str:
        together.wait(timeout=5)
        return send_failing(sink, outgoing(number)).reason

    with ThreadPoolExecutor(max_workers=2) as pool:
        for number in range(20):
            outcomes += pool.map(attempt, [number, number])

    assert outcomes == ["unroutable"] * 40
    assert broker.messages() == []


def test_close_during_sends_fails_each_retryably(broker: Broker, make_sink: SinkFactory) -> None:
    """close() while eight threads send: every send that does not return is a retryable SinkError
    (none a bare Exception or a CancelledError), and what returned was confirmed."""
    sink = make_sink(max_connections=8)
    shares = [[outgoing(number) for number in range(first, first + 500)] for first in range(0, 4000, 500)]

    with sending_in_threads(sink, shares, join_timeout=10) as senders:
        wait_until(lambda: len(senders.sent) >= 40)
        sink.close()

    assert len(senders.failures) == 8
    assert {(type(exc), getattr(exc, "retryable", None)) for exc in senders.failures} == {(SinkError, True)}
    assert set(senders.sent) <= {message.properties.message_id for message in broker.messages()}


def test_a_bare_exception_from_aiormq_is_a_retryable_connection_error(
    make_sink: SinkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiormq rejects what is pending on a connection that closes under it with ``Exception()``
    (no message, no type of its own): the send fails as a retryable connection error."""

    async def rejected(channel: aiormq.Channel, body: bytes, **options: Any) -> Any:
        raise Exception  # what aiormq's FutureStore.reject_all raises

    sink = make_sink()
    sink.check()  # connected, so that only the publish meets the patch
    monkeypatch.setattr(aiormq.Channel, "basic_publish", rejected)

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("connection", True)


@pytest.mark.timeout(30)
def test_close_while_sends_wait_on_a_frozen_broker_fails_them_retryably(broker: Broker, make_sink: SinkFactory) -> None:
    """Sends waiting for confirms on a connection that answers nothing, when close() gives up
    on it and cancels them: each raises a retryable SinkError naming the closed sink."""
    upstream = urlsplit(broker.url)
    with running_proxy("127.0.0.1", upstream.port or 5672) as proxy:
        sink = make_sink(url=f"amqp://guest:guest@{proxy.address}/%2F", timeout=10)
        sink.send(outgoing(0))
        proxy.freeze()
        with sending_in_threads(sink, [[outgoing(number)] for number in range(1, 5)], join_timeout=15) as senders:
            time.sleep(0.3)  # the four publishes are written (the proxy holds them); no confirm comes
            sink.close()
        proxy.restore()

    assert len(senders.failures) == 4
    assert {(type(exc), getattr(exc, "reason", None)) for exc in senders.failures} == {(SinkError, "connection")}
    assert all(isinstance(exc, SinkError) and exc.retryable for exc in senders.failures)


def test_close_releases_the_connection_and_the_loop_thread(broker: Broker, make_sink: SinkFactory) -> None:
    """After close() no connection and no loop thread is left; close() twice is fine; a send then fails retryably."""
    upstream = urlsplit(broker.url)
    with running_proxy("127.0.0.1", upstream.port or 5672) as proxy:
        sink = make_sink(url=f"amqp://guest:guest@{proxy.address}/%2F")
        sink.send(outgoing())
        held = tcp_connections_to(proxy.port)

        sink.close()
        sink.close()

        assert (held, tcp_connections_to(proxy.port)) == (1, 0)
    assert not [thread for thread in threading.enumerate() if thread.name == "amqp-sink-crm"]
    assert (send_failing(sink, outgoing()).reason, send_failing(sink, outgoing()).retryable) == ("connection", True)


def _return_a_message_after_its_send_gave_up(broker: Broker, make_sink: SinkFactory, logged: Callable[[], str]) -> None:
    """A mandatory publish on a pooled channel whose connection freezes: the send times out; once
    the connection thaws, the broker returns the message, which aiormq can no longer match."""
    upstream = urlsplit(broker.url)
    with running_proxy("127.0.0.1", upstream.port or 5672) as proxy:
        # ``capture.entityUpdated`` is bound, ``user.entityUpdated`` is not.
        sink = make_sink(
            url=f"amqp://guest:guest@{proxy.address}/%2F", timeout=1, routing_key="{entity_type}.{event_type}"
        )
        routed = outgoing(1)
        sink.send(outgoing(1, payload=routed.payload | {"entity_type": "capture"}))
        proxy.freeze()
        assert send_failing(sink, outgoing(2)).reason == "timeout"
        proxy.restore()
        wait_until(lambda: "Unhandled message" in logged())
        sink.close()


def test_a_message_returned_after_its_send_gave_up_is_not_logged_with_its_body(
    broker: Broker, make_sink: SinkFactory, log_output: io.StringIO
) -> None:
    """aiormq logs the returned message it cannot match at ERROR: the line an operator sees keeps
    the template, not the message (whose body holds personal data)."""
    _return_a_message_after_its_send_gave_up(broker, make_sink, log_output.getvalue)

    assert "jane.doe@example.com" not in log_output.getvalue()
    assert "DeliveredMessage" not in log_output.getvalue()


def test_aiormq_logs_no_message_body_without_the_service_logging_either(
    broker: Broker, make_sink: SinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With plain standard-library logging (no configure_logging), down to aiormq's DEBUG lines
    (which show the frames it writes): no record of aiormq's carries the body."""
    caplog.set_level(logging.DEBUG, logger="aiormq")

    _return_a_message_after_its_send_gave_up(broker, make_sink, lambda: caplog.text)

    aiormq_records = [record for record in caplog.records if record.name.startswith("aiormq")]
    assert any(record.levelno == logging.ERROR for record in aiormq_records)
    assert "jane.doe@example.com" not in caplog.text
    assert all("jane.doe" not in record.getMessage() for record in aiormq_records)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"amqp://guest:{PASSWORD}@127.0.0.1:{{port}}/%2F", id="password"),
        pytest.param(f"amqp://guest:{PASSWORD}@127.0.0.1:{{port}}/%2F?heartbeat=30", id="query"),
    ],
)
def test_an_unreachable_broker_fails_without_the_password(make_sink: SinkFactory, url: str) -> None:
    """Constructing does not connect; the send fails retryably and no error text holds the password."""
    sink = make_sink(url=url.format(port=free_port()))

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("connection", True)
    assert "127.0.0.1" in error.detail
    for text in (error.detail, str(error), repr(error), sink.target):
        assert PASSWORD not in text
        assert "jane.doe" not in text


def test_a_wrong_password_is_an_auth_error(broker: Broker, make_sink: SinkFactory) -> None:
    """The real broker refusing the login fails as ``auth``, without the password."""
    upstream = urlsplit(broker.url)
    sink = make_sink(url=f"amqp://guest:{PASSWORD}@{upstream.hostname}:{upstream.port}/%2F")

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("auth", True)
    assert PASSWORD not in str(error)


# -- check ------------------------------------------------------------------------------------


def test_check_finds_the_exchange_and_the_default_exchange(broker: Broker, make_sink: SinkFactory) -> None:
    """check() succeeds for an existing exchange and for the default one."""
    assert broker.exchange in make_sink().check()
    assert "default exchange" in make_sink(exchange="", routing_key=broker.queue).check()


def test_check_fails_on_a_dead_port(make_sink: SinkFactory) -> None:
    """A broker that does not answer is a SinkError naming it, without the password."""
    sink = make_sink(url=f"amqp://guest:{PASSWORD}@127.0.0.1:{free_port()}/%2F")

    with pytest.raises(SinkError) as caught:
        sink.check()

    assert caught.value.reason == "connection"
    assert PASSWORD not in caught.value.detail
