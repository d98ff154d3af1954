"""The Kafka sink against librdkafka's mock cluster (no broker runs on this machine): what a
consumer reads back (value, key, headers), per-profile order, a resend as a second record, brokers
that are unreachable, go away and come back, refusals by the broker, a producer that fails fatally,
concurrent senders, ``check`` and ``close``, and no option value in any error or log line."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from capture_relay.embedded_redis import free_port
from service.destination_config import KafkaDestination
from service.secret import Secret
from tests.conftest import missing_service
from tests.support.kafka_mock import MockCluster, MockClusterUnavailableError, mock_cluster
from tests.support.sinks import PROFILE_UUID, delivery, send_concurrently, send_failing
from workers.sinks import open_sink
from workers.sinks.base import Outgoing, SinkError
from workers.sinks.kafka import KafkaSink

PARTITIONS = 4
PASSWORD = "s3cr3t-kafka-pw"
JANE = PROFILE_UUID
JOHN = "7d1e2f30-1111-4c1e-9d1f-0f2b5a4f7c99"


@pytest.fixture
def cluster(unique_name: str) -> Iterator[MockCluster]:
    """A one-broker mock cluster of its own, with the topic ``unique_name`` in 4 partitions."""
    try:
        with mock_cluster() as running:
            running.create_topic(unique_name, PARTITIONS)
            yield running
    except MockClusterUnavailableError as exc:
        missing_service(f"librdkafka's mock cluster ({exc})")


SinkFactory = Callable[..., KafkaSink]


@pytest.fixture
def make_sink(cluster: MockCluster, unique_name: str) -> Iterator[SinkFactory]:
    """Open sinks producing to the test's topic with a 2 s timeout; closed after the test."""
    opened: list[KafkaSink] = []

    def make(**keys: Any) -> KafkaSink:
        values = {
            "type": "kafka",
            "bootstrap_servers": cluster.bootstrap_servers,
            "topic": unique_name,
            "timeout": 2,
        } | keys
        sink = KafkaSink("stream", KafkaDestination.model_validate(values))
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def outgoing(number: int = 1, **overrides: Any) -> Outgoing:
    """Delivery ``number`` to ``stream`` (Jane's profile unless ``uuid`` says otherwise; see ``delivery``)."""
    return delivery(number, "stream", **overrides)


def read_back(cluster: MockCluster, topic: str) -> list[Message[bytes, bytes]]:
    """Every record of ``topic``, partition by partition, each in offset order."""
    consumer = Consumer(
        {"bootstrap.servers": cluster.bootstrap_servers, "group.id": f"reader-{topic}", "enable.auto.commit": False}
    )
    try:
        expected = sum(
            consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)[1]
            for partition in range(PARTITIONS)
        )
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(PARTITIONS)])
        records: list[Message[bytes, bytes]] = []
        deadline = time.monotonic() + 10
        while len(records) < expected and time.monotonic() < deadline:
            record = consumer.poll(0.2)
            if record is not None and record.error() is None:
                records.append(record)
    finally:
        consumer.close()
    assert len(records) == expected
    return sorted(records, key=lambda record: (record.partition() or 0, record.offset() or 0))


def delivery_ids(records: list[Message[bytes, bytes]]) -> list[str]:
    ids = [dict(record.headers() or [])["delivery-id"] for record in records]
    assert all(isinstance(value, bytes) for value in ids)
    return [value.decode() for value in ids if isinstance(value, bytes)]


def test_a_delivery_is_written_with_its_key_value_and_headers(
    cluster: MockCluster, make_sink: SinkFactory, unique_name: str
) -> None:
    """A consumer reads the JSON payload, the uuid as key, and the delivery's headers."""
    delivery = outgoing()

    make_sink().send(delivery)

    (record,) = read_back(cluster, unique_name)
    assert record.key() == JANE.encode()
    assert orjson.loads(record.value() or b"") == delivery.payload
    assert record.headers() == [
        ("delivery-id", b"evt-0001:stream"),
        ("event-type", b"entityUpdated"),
        ("entity-type", b"user"),
    ]


def test_the_records_of_one_profile_stay_in_one_partition_in_order(
    cluster: MockCluster, make_sink: SinkFactory, unique_name: str
) -> None:
    """Keyed by uuid: each profile's records share a partition and keep the order they were sent in."""
    sink = make_sink()

    for number in range(6):
        sink.send(outgoing(number, uuid=JANE if number % 2 == 0 else JOHN))

    records = read_back(cluster, unique_name)
    for uuid, numbers in ((JANE, [0, 2, 4]), (JOHN, [1, 3, 5])):
        mine = [record for record in records if record.key() == uuid.encode()]
        assert len({record.partition() for record in mine}) == 1
        assert delivery_ids(mine) == [f"evt-{number:04d}:stream" for number in numbers]


def test_a_delivery_sent_again_is_a_second_record_with_the_same_id(
    cluster: MockCluster, make_sink: SinkFactory, unique_name: str
) -> None:
    """Kafka has no de-duplication across sends: consumers drop repeats by the delivery-id header."""
    sink = make_sink()

    sink.send(outgoing(1))
    sink.send(outgoing(1, attempt=2))

    assert delivery_ids(read_back(cluster, unique_name)) == ["evt-0001:stream", "evt-0001:stream"]


def test_unreachable_brokers_fail_the_send_retryably(make_sink: SinkFactory) -> None:
    """Opening against a dead port connects to nothing; the send is not confirmed and is retried."""
    dead = [f"127.0.0.1:{free_port()}"]
    sink = open_sink(
        "stream", KafkaDestination.model_validate({"type": "kafka", "bootstrap_servers": dead, "topic": "t"})
    )
    sink.close()

    error = send_failing(make_sink(bootstrap_servers=dead, timeout=0.5), outgoing())

    assert error.retryable
    assert error.reason in {"timeout", "connection"}
    assert dead[0] in error.detail


def test_a_broker_that_goes_away_fails_the_send_until_it_is_back(
    cluster: MockCluster, make_sink: SinkFactory, unique_name: str
) -> None:
    """While the broker is down a send fails retryably; once it is back the same sink delivers, nothing lost."""
    # Back, librdkafka takes up to about 2 s to find the partitions' leader again (a 1 s timer, and
    # the idempotent producer's id); its reconnect back-off, up to 10 s by default, is kept short.
    sink = make_sink(timeout=3, options={"reconnect.backoff.max.ms": "100"})
    sink.send(outgoing(1))

    cluster.broker_down()
    error = send_failing(sink, outgoing(2))
    cluster.broker_up()
    sink.send(outgoing(2, attempt=2))
    sink.send(outgoing(3))

    assert error.retryable
    assert delivery_ids(read_back(cluster, unique_name)) == ["evt-0001:stream", "evt-0002:stream", "evt-0003:stream"]


def test_a_cluster_that_is_gone_fails_the_send(unique_name: str) -> None:
    """The brokers stopped for good: a retryable error, never a success."""
    try:
        running = MockCluster()
    except MockClusterUnavailableError as exc:
        missing_service(f"librdkafka's mock cluster ({exc})")
        return
    config = {"type": "kafka", "bootstrap_servers": running.bootstrap_servers, "topic": unique_name, "timeout": 1}
    sink = KafkaSink("stream", KafkaDestination.model_validate(config))
    try:
        sink.send(outgoing(1))
        running.close()

        error = send_failing(sink, outgoing(2))
    finally:
        sink.close()
        running.close()

    assert error.retryable


def test_a_record_larger_than_the_producer_allows_is_not_retried(make_sink: SinkFactory) -> None:
    """Over message.max.bytes: too_large, not retryable, the payload not quoted."""
    sink = make_sink(options={"message.max.bytes": "1000"})

    error = send_failing(sink, outgoing(payload={"record": {"email": "jane.doe@example.com" * 100}}))

    assert (error.reason, error.retryable) == ("too_large", False)
    assert "jane.doe" not in error.detail


@pytest.mark.parametrize(
    ("code", "reason", "retryable"),
    [
        (KafkaError.MSG_SIZE_TOO_LARGE, "too_large", False),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "permission", True),
    ],
    ids=["too-large", "not-authorized"],
)
def test_a_refusal_by_the_broker_is_classified(
    cluster: MockCluster, make_sink: SinkFactory, code: int, reason: str, retryable: bool
) -> None:
    """The broker's answer to the Produce request decides whether the delivery is retried."""
    sink = make_sink()
    sink.send(outgoing(1))
    cluster.fail_produce_requests(code)

    error = send_failing(sink, outgoing(2))

    assert (error.reason, error.retryable) == (reason, retryable)


def test_an_unknown_topic_is_retried(cluster: MockCluster, make_sink: SinkFactory, unique_name: str) -> None:
    """A topic the cluster does not know: a retryable not_found."""
    cluster.set_topic_error(unique_name, KafkaError.UNKNOWN_TOPIC_OR_PART)
    # librdkafka waits this long for a new topic to appear before it gives up on its records.
    sink = make_sink(options={"topic.metadata.propagation.max.ms": "100"})

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("not_found", True)


def test_a_fatal_producer_error_replaces_the_producer(
    cluster: MockCluster, make_sink: SinkFactory, unique_name: str
) -> None:
    """An idempotent producer out of sequence with the broker fails fatally; the next send uses a new one."""
    sink = make_sink()
    sink.send(outgoing(1))
    cluster.fail_produce_requests(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER)

    error = send_failing(sink, outgoing(2))
    sink.send(outgoing(2, attempt=2))

    assert (error.reason, error.retryable) == ("fatal", True)
    assert delivery_ids(read_back(cluster, unique_name)) == ["evt-0001:stream", "evt-0002:stream"]


def test_threads_share_the_sink(cluster: MockCluster, make_sink: SinkFactory, unique_name: str) -> None:
    """Eight threads sending at once through one sink: every record is confirmed and written once."""
    sink = make_sink()

    errors = send_concurrently(sink, [outgoing(number) for number in range(80)], threads=8)

    assert errors == []
    assert sorted(delivery_ids(read_back(cluster, unique_name))) == [f"evt-{number:04d}:stream" for number in range(80)]


def test_option_values_never_appear_in_errors_or_logs(make_sink: SinkFactory, log_output: io.StringIO) -> None:
    """Neither a refused connection nor an option librdkafka rejects repeats an option's value."""
    sasl = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "relay"}
    dead = [f"127.0.0.1:{free_port()}"]

    unconfirmed = send_failing(
        make_sink(bootstrap_servers=dead, timeout=0.5, options=sasl | {"sasl.password": PASSWORD}), outgoing()
    )
    rejected = send_failing(make_sink(options={"security.protocol": PASSWORD}), outgoing())

    assert rejected.reason == "config"
    for error in (unconfirmed, rejected):
        assert PASSWORD not in str(error)
    assert "kafka.error" in log_output.getvalue()
    assert PASSWORD not in log_output.getvalue()


def test_close_lets_the_producer_go(make_sink: SinkFactory) -> None:
    """After close a send fails retryably, and a second close does nothing."""
    sink = make_sink()
    sink.send(outgoing())

    sink.close()
    sink.close()

    assert send_failing(sink, outgoing()).retryable


def test_check_counts_the_partitions(make_sink: SinkFactory, unique_name: str) -> None:
    """check finds the topic and its partitions."""
    assert make_sink().check() == f"topic {unique_name} has 4 partitions on 1 broker(s)"


def test_check_creates_no_topic(make_sink: SinkFactory, unique_name: str) -> None:
    """A topic that does not exist is reported, and still does not exist afterwards."""
    sink = make_sink(topic=f"{unique_name}_missing")

    for _ in range(2):
        with pytest.raises(SinkError) as caught:
            sink.check()
        assert (caught.value.reason, caught.value.retryable) == ("not_found", True)


def test_check_fails_without_brokers(make_sink: SinkFactory) -> None:
    """Unreachable brokers: check raises a retryable error naming them."""
    dead = [f"127.0.0.1:{free_port()}"]

    with pytest.raises(SinkError) as caught:
        make_sink(bootstrap_servers=dead, timeout=0.5).check()

    assert caught.value.retryable
    assert dead[0] in caught.value.detail


def test_options_the_client_cannot_take_fail_the_send_naming_the_problem(cluster: MockCluster) -> None:
    """An option confluent-kafka itself refuses (a type it wants otherwise) is a retryable config
    error, not an internal one; the config refuses this one, so the test builds the section directly."""
    config = KafkaDestination.model_construct(
        type="kafka",
        bootstrap_servers=[cluster.bootstrap_servers],
        topic="t",
        options={"delivery.report.only.error": Secret("true")},
        timeout=2.0,
    )
    sink = KafkaSink("stream", config)

    with pytest.raises(SinkError) as caught:
        sink.send(outgoing())

    assert (caught.value.reason, caught.value.retryable) == ("config", True)
    sink.close()
