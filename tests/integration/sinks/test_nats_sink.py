"""The NATS sink against the machine's NATS server with JetStream: what a stream stores (payload,
``Nats-Msg-Id`` and the other headers), the stream's de-duplication, a missing stream, a message too
large, a connection cut and restored behind a proxy, concurrent senders, lazy connecting, ``check``
and ``close``, and no credential in any error."""

from __future__ import annotations

import asyncio
import io
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import orjson
import pytest
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg

from capture_relay.embedded_redis import free_port
from service.destination_config import NatsDestination
from tests.conftest import missing_service
from tests.support.sinks import delivery, send_concurrently, send_failing, sending_in_threads
from tests.support.tcp_proxy import running_proxy
from workers.sinks import open_sink
from workers.sinks.base import Outgoing, SinkError
from workers.sinks.nats import NatsSink

T = TypeVar("T")
PASSWORD = "s3cr3t-nats-pw"


def on_jetstream(url: str, work: Callable[[JetStreamContext], Coroutine[Any, Any, T]]) -> T:
    """Run ``work`` with a JetStream context of its own connection, outside any sink."""

    async def run() -> T:
        client = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            return await work(client.jetstream(timeout=2))
        finally:
            await client.close()

    return asyncio.run(run())


@dataclass
class Streams:
    """Creates JetStream streams for one test, reads them back, and deletes them afterwards."""

    url: str
    prefix: str
    created: list[str]

    def create(self, name: str | None = None, **config: Any) -> str:
        """A stream listening on ``<name>.>``; ``name`` defaults to the test's unique prefix."""
        name = name or self.prefix

        async def add(jetstream: JetStreamContext) -> None:
            await jetstream.add_stream(name=name, subjects=[f"{name}.>"], **config)

        try:
            on_jetstream(self.url, add)
        except nats.errors.NoRespondersError:
            missing_service("JetStream on the NATS server at 127.0.0.1:4222")
        self.created.append(name)
        return name

    def messages(self, name: str) -> list[RawStreamMsg]:
        """Every message the stream holds, oldest first."""

        async def read(jetstream: JetStreamContext) -> list[RawStreamMsg]:
            state = (await jetstream.stream_info(name)).state
            if state.messages == 0:
                return []
            return [await jetstream.get_msg(name, seq) for seq in range(state.first_seq, state.last_seq + 1)]

        return on_jetstream(self.url, read)

    def delete_all(self) -> None:
        async def delete(jetstream: JetStreamContext) -> None:
            for name in self.created:
                await jetstream.delete_stream(name)

        on_jetstream(self.url, delete)


@pytest.fixture
def streams(nats_url: str, unique_name: str) -> Iterator[Streams]:
    """Streams named after the test's unique name, deleted after the test."""
    made = Streams(nats_url, unique_name, [])
    yield made
    made.delete_all()


SinkFactory = Callable[..., NatsSink]


@pytest.fixture
def make_sink(nats_url: str, unique_name: str) -> Iterator[SinkFactory]:
    """Open sinks publishing to ``<unique>.<event_type>`` with a 2 s timeout; closed after the test."""
    opened: list[NatsSink] = []

    def make(**keys: Any) -> NatsSink:
        values = {"type": "nats", "url": nats_url, "subject": unique_name + ".{event_type}", "timeout": 2} | keys
        sink = NatsSink("bus", NatsDestination.model_validate(values))
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def outgoing(number: int = 1, **overrides: Any) -> Outgoing:
    """Delivery ``number`` to ``bus`` (see ``delivery``)."""
    return delivery(number, "bus", **overrides)


def message_ids(messages: list[RawStreamMsg]) -> list[str]:
    return [(message.headers or {})["Nats-Msg-Id"] for message in messages]


def test_a_delivery_is_stored_with_its_payload_and_headers(streams: Streams, make_sink: SinkFactory) -> None:
    """The stream holds the JSON payload on the templated subject, with the delivery id as Nats-Msg-Id."""
    stream = streams.create()
    delivery = outgoing()

    make_sink().send(delivery)

    (message,) = streams.messages(stream)
    assert message.subject == f"{stream}.entityUpdated"
    assert message.data is not None
    assert orjson.loads(message.data) == delivery.payload
    assert message.headers == {
        "Nats-Msg-Id": "evt-0001:bus",
        "Capture-Event-Type": "entityUpdated",
        "Capture-Uuid": delivery.uuid,
    }


def test_the_subject_template_names_entity_type_and_destination(streams: Streams, make_sink: SinkFactory) -> None:
    """{entity_type}, {event_type} and {destination} are filled in per delivery."""
    stream = streams.create()
    sink = make_sink(subject=stream + ".{destination}.{entity_type}.{event_type}")

    sink.send(outgoing(event_type="entityDeleted"))

    (message,) = streams.messages(stream)
    assert message.subject == f"{stream}.bus.user.entityDeleted"


def test_a_delivery_sent_twice_is_stored_once(streams: Streams, make_sink: SinkFactory) -> None:
    """The second send of one delivery id is acknowledged as a duplicate and not stored again."""
    stream = streams.create()
    sink = make_sink()

    sink.send(outgoing(1))
    sink.send(outgoing(1, attempt=2))
    sink.send(outgoing(2))

    assert message_ids(streams.messages(stream)) == ["evt-0001:bus", "evt-0002:bus"]


def test_without_a_stream_on_the_subject_the_send_is_retried(make_sink: SinkFactory, unique_name: str) -> None:
    """Nothing listens on the subject: a retryable not_found that names the subject."""
    error = send_failing(make_sink(), outgoing())

    assert error.reason == "not_found"
    assert error.retryable
    assert f"{unique_name}.entityUpdated" in error.detail


def test_a_message_larger_than_the_stream_allows_is_not_retried(streams: Streams, make_sink: SinkFactory) -> None:
    """The stream's max_msg_size refuses the message: too_large, not retryable, payload not quoted."""
    stream = streams.create(max_msg_size=64)

    error = send_failing(make_sink(), outgoing(payload={"record": {"email": "jane.doe@example.com" * 10}}))

    assert error.reason == "too_large"
    assert not error.retryable
    assert "jane.doe" not in error.detail
    assert streams.messages(stream) == []


def test_a_cut_connection_fails_the_send_and_the_sink_reconnects(streams: Streams, make_sink: SinkFactory) -> None:
    """While the connection is cut a send raises a retryable error; once restored, resends store
    every delivery exactly once."""
    stream = streams.create()
    with running_proxy("127.0.0.1", 4222) as proxy:
        sink = make_sink(url=f"nats://{proxy.address}")
        sink.send(outgoing(1))

        proxy.cut()
        error = send_failing(sink, outgoing(2))
        proxy.restore()
        sink.send(outgoing(2, attempt=2))
        sink.send(outgoing(1, attempt=2))  # a resend of what had been acknowledged
        sink.send(outgoing(3))

    assert error.retryable
    assert error.reason in {"connection", "timeout"}
    assert message_ids(streams.messages(stream)) == ["evt-0001:bus", "evt-0002:bus", "evt-0003:bus"]


@pytest.mark.timeout(30)
def test_a_frozen_connection_fails_in_time_and_the_sink_recovers(streams: Streams, make_sink: SinkFactory) -> None:
    """A server that keeps the connection open but answers nothing (a hung peer, a half-open
    connection): the send fails as a retryable timeout at its deadline; once it answers again the
    same sink delivers, and the stream's de-duplication stores every delivery exactly once, the
    frozen publish included (it may reach the stream when the connection thaws)."""
    stream = streams.create()
    with running_proxy("127.0.0.1", 4222) as proxy:
        sink = make_sink(url=f"nats://{proxy.address}", timeout=1)
        sink.send(outgoing(1))

        proxy.freeze()
        error = send_failing(sink, outgoing(2))
        proxy.restore()
        sink.send(outgoing(2, attempt=2))
        sink.send(outgoing(3))

    assert (error.reason, error.retryable) == ("timeout", True)
    assert message_ids(streams.messages(stream)) == ["evt-0001:bus", "evt-0002:bus", "evt-0003:bus"]


def test_threads_share_the_sink(streams: Streams, make_sink: SinkFactory) -> None:
    """Eight threads sending at once through one sink store every delivery once."""
    stream = streams.create()
    sink = make_sink()

    errors = send_concurrently(sink, [outgoing(number) for number in range(80)], threads=8)

    assert errors == []
    assert sorted(message_ids(streams.messages(stream))) == [f"evt-{number:04d}:bus" for number in range(80)]


def test_opening_against_a_dead_port_connects_to_nothing(make_sink: SinkFactory) -> None:
    """The sink opens without a server; the first send fails with a retryable connect error."""
    sink = open_sink("bus", NatsDestination.model_validate({"type": "nats", "url": f"nats://127.0.0.1:{free_port()}"}))
    assert isinstance(sink, NatsSink)
    sink.close()
    dead = make_sink(url=f"nats://127.0.0.1:{free_port()}", timeout=0.5)

    error = send_failing(dead, outgoing())

    assert error.reason == "connect"
    assert error.retryable


def test_credentials_never_appear_in_errors_or_logs(
    make_sink: SinkFactory, nats_url: str, log_output: io.StringIO
) -> None:
    """Neither a refused connection nor a missing stream repeats the URL's password."""
    dead_url = f"nats://capture:{PASSWORD}@127.0.0.1:{free_port()}"
    live_url = nats_url.replace("nats://", f"nats://capture:{PASSWORD}@", 1)

    refused = send_failing(make_sink(url=f"{dead_url},{dead_url.replace('capture', 'other')}", timeout=0.5), outgoing())
    missing = send_failing(make_sink(url=live_url), outgoing())

    assert missing.reason == "not_found"
    for error in (refused, missing):
        assert PASSWORD not in str(error)
        assert "capture" not in error.detail
    assert "127.0.0.1" in refused.detail
    assert "nats.connection_error" in log_output.getvalue()
    assert PASSWORD not in log_output.getvalue()


@pytest.fixture
def password_server() -> Iterator[str]:
    """A private nats-server (no JetStream) that only lets in ``relay`` with PASSWORD; its host:port."""
    # Where Debian's package puts it, for a PATH without /usr/sbin.
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        missing_service("the nats-server binary (to start a server that asks for a password)")
        raise AssertionError("unreachable")  # missing_service fails or skips
    port = free_port()
    command = [binary, "-a", "127.0.0.1", "-p", str(port), "--user", "relay", "--pass", PASSWORD]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not _answers(port) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(5)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_refused_credentials_are_retried_as_auth(make_sink: SinkFactory, password_server: str) -> None:
    """A wrong password: a retryable auth error that repeats neither password; the right one connects."""
    wrong = "wr0ng-nats-pw"

    error = send_failing(make_sink(url=f"nats://relay:{wrong}@{password_server}", timeout=1), outgoing())
    # No JetStream on that server: connected, the publish finds no stream.
    admitted = send_failing(make_sink(url=f"nats://relay:{PASSWORD}@{password_server}", timeout=1), outgoing())

    assert (error.reason, error.retryable) == ("auth", True)
    assert wrong not in str(error)
    assert admitted.reason == "not_found"


def test_close_stops_the_loop_thread(streams: Streams, make_sink: SinkFactory) -> None:
    """After close the sink's thread is gone, a second close does nothing, and a send fails retryably."""
    streams.create()
    sink = make_sink()
    sink.send(outgoing())

    sink.close()
    sink.close()

    assert not [thread for thread in threading.enumerate() if thread.name == "nats-sink-bus"]
    assert send_failing(sink, outgoing()).retryable


@pytest.mark.timeout(30)
def test_close_while_sends_wait_on_a_frozen_server_fails_them_retryably(
    streams: Streams, make_sink: SinkFactory
) -> None:
    """Sends waiting for their acks on a connection that answers nothing, when close() gives up
    on it and cancels them: each raises a retryable SinkError (not a CancelledError)."""
    streams.create()
    with running_proxy("127.0.0.1", 4222) as proxy:
        sink = make_sink(url=f"nats://{proxy.address}", timeout=10)
        sink.send(outgoing(0))
        proxy.freeze()
        with sending_in_threads(sink, [[outgoing(number)] for number in range(1, 5)], join_timeout=15) as senders:
            time.sleep(0.3)  # the four publishes are written (the proxy holds them); no ack comes
            sink.close()
        proxy.restore()

    assert len(senders.failures) == 4
    assert {(type(exc), getattr(exc, "reason", None)) for exc in senders.failures} == {(SinkError, "connection")}
    assert all(isinstance(exc, SinkError) and exc.retryable for exc in senders.failures)


def test_check_names_the_stream(streams: Streams, make_sink: SinkFactory) -> None:
    """check finds the stream behind the subject of every event type."""
    stream = streams.create()

    report = make_sink().check()

    assert f"{stream}.entityUpdated -> stream {stream}" in report
    assert f"{stream}.entityDeleted -> stream {stream}" in report


def test_check_fails_without_a_stream(make_sink: SinkFactory) -> None:
    """check reports a subject that no stream listens on."""
    with pytest.raises(SinkError) as caught:
        make_sink().check()

    assert caught.value.reason == "not_found"
    assert "no JetStream stream listens on" in caught.value.detail
