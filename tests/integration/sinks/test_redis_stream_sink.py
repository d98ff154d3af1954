"""The redis_stream sink against a real Redis (the session's private server, never the shared
one): entries read back with XRANGE and a consumer group, each delivery added once, the
approximate cap, a cut connection, keys of the wrong type, a full server, and nothing private
in the errors."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import redis

from capture_relay.embedded_redis import RedisServer, find_redis_server, free_port
from service.destination_config import RedisStreamDestination
from service.secret import Secret
from tests.support.sinks import delivery, send_failing, tcp_connections_to, wait_until
from tests.support.tcp_proxy import running_proxy
from workers.sinks import open_sink
from workers.sinks.base import Outgoing, SinkError
from workers.sinks.redis_stream import MARKER_PREFIX, RedisStreamSink

SinkFactory = Callable[..., RedisStreamSink]
Fields = dict[bytes, bytes]
PASSWORD = "hunter2-redis-s3cret"


@pytest.fixture
def stream(redis_client: redis.Redis, unique_name: str) -> str:
    """A stream name of this test (the private server is flushed around each test)."""
    return unique_name


@pytest.fixture
def make_sink(redis_server: RedisServer, stream: str) -> Iterator[SinkFactory]:
    """Open sinks to the private Redis (or ``url``), with destination keys; closed after the test."""
    opened: list[RedisStreamSink] = []

    def make(*, url: str | None = None, **keys: Any) -> RedisStreamSink:
        config = RedisStreamDestination.model_validate(
            {"type": "redis_stream", "url": url or redis_server.url, "stream": stream, "timeout": 2, **keys}
        )
        sink = RedisStreamSink("audit", config, max_connections=4)
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close()


def outgoing(number: int = 1, **overrides: Any) -> Outgoing:
    """Delivery ``number`` to ``audit`` (see ``delivery``)."""
    return delivery(number, "audit", **overrides)


def entries(client: redis.Redis, stream: str) -> list[Fields]:
    """The fields of the stream's entries, oldest first."""
    return [fields for _, fields in cast("list[tuple[bytes, Fields]]", client.xrange(stream))]


def delivery_ids(client: redis.Redis, stream: str) -> list[str]:
    """The delivery ids of the stream's entries, oldest first."""
    return [fields[b"delivery_id"].decode() for fields in entries(client, stream)]


# -- what is added --------------------------------------------------------------------------


def test_an_entry_reads_back_with_xrange(redis_client: redis.Redis, stream: str, make_sink: SinkFactory) -> None:
    """The entry holds the delivery's identity and its JSON payload."""
    sink = make_sink()
    delivery = outgoing()

    sink.send(delivery)

    (fields,) = entries(redis_client, stream)
    assert fields[b"delivery_id"] == b"evt-0001:audit"
    assert fields[b"event_type"] == b"entityUpdated"
    assert fields[b"uuid"] == delivery.uuid.encode()
    assert fields[b"entity_type"] == b"user"
    assert orjson.loads(fields[b"payload"]) == delivery.payload


def test_a_consumer_group_reads_each_entry(redis_client: redis.Redis, stream: str, make_sink: SinkFactory) -> None:
    """A consumer group created before the first delivery receives every entry, in order."""
    redis_client.xgroup_create(stream, "mirror", id="0", mkstream=True)
    sink = make_sink()

    sink.send(outgoing(1))
    sink.send(outgoing(2, event_type="entityDeleted", payload={"id": "evt-0002", "record": None}))

    read = redis_client.xreadgroup("mirror", "consumer-1", {stream: ">"})
    ((_, received),) = cast("list[tuple[bytes, list[tuple[bytes, Fields]]]]", read)
    assert [fields[b"delivery_id"] for _, fields in received] == [b"evt-0001:audit", b"evt-0002:audit"]
    deleted = received[1][1]
    assert deleted[b"event_type"] == b"entityDeleted"
    assert deleted[b"entity_type"] == b""
    assert orjson.loads(deleted[b"payload"]) == {"id": "evt-0002", "record": None}


def test_open_sink_defaults_to_the_relays_redis(
    redis_server: RedisServer, redis_client: redis.Redis, stream: str
) -> None:
    """Without ``url``, the entries go to capture-relay's own Redis."""
    config = RedisStreamDestination.model_validate({"type": "redis_stream", "stream": stream})
    sink = open_sink("audit", config, relay_redis_url=Secret(redis_server.url))
    try:
        sink.send(outgoing())
    finally:
        sink.close()

    assert delivery_ids(redis_client, stream) == ["evt-0001:audit"]


# -- once -------------------------------------------------------------------------------------


def test_the_same_delivery_is_added_once(redis_client: redis.Redis, stream: str, make_sink: SinkFactory) -> None:
    """A second send of a delivery id (a retry after a lost answer) adds nothing; its marker expires."""
    sink = make_sink(dedup_window="1h")

    sink.send(outgoing(1))
    sink.send(outgoing(1, attempt=2))
    sink.send(outgoing(2))

    assert delivery_ids(redis_client, stream) == ["evt-0001:audit", "evt-0002:audit"]
    marker = f"{MARKER_PREFIX}{{{stream}}}:evt-0001:audit"
    assert 3500 < redis_client.ttl(marker) <= 3600


def test_maxlen_trims_the_stream_approximately(redis_client: redis.Redis, stream: str, make_sink: SinkFactory) -> None:
    """With MAXLEN ~ the stream keeps at least maxlen entries and far fewer than were added."""
    sink = make_sink(maxlen=10)

    for number in range(300):
        sink.send(outgoing(number))

    assert 10 <= redis_client.xlen(stream) < 300
    assert delivery_ids(redis_client, stream)[-1] == "evt-0299:audit"


# -- failures ---------------------------------------------------------------------------------


def test_a_cut_connection_fails_retryably_and_nothing_is_lost(
    redis_server: RedisServer, redis_client: redis.Redis, stream: str, make_sink: SinkFactory
) -> None:
    """While the connection is cut a send fails retryably; after it is back, the same sink delivers."""
    with running_proxy("127.0.0.1", redis_server.port) as proxy:
        sink = make_sink(url=f"redis://{proxy.address}/0")
        sink.send(outgoing(1))

        proxy.cut()
        failures = [send_failing(sink, outgoing(2)), send_failing(sink, outgoing(2, attempt=2))]
        proxy.restore()
        sink.send(outgoing(2, attempt=3))
        sink.send(outgoing(1, attempt=2))

    assert {(error.reason, error.retryable) for error in failures} <= {("connection", True), ("timeout", True)}
    assert delivery_ids(redis_client, stream) == ["evt-0001:audit", "evt-0002:audit"]


@pytest.mark.timeout(30)
def test_a_redis_that_stops_answering_fails_the_send_within_its_time(
    redis_server: RedisServer, redis_client: redis.Redis, stream: str, make_sink: SinkFactory
) -> None:
    """The proxy keeps the connection open but passes nothing: the send fails (it may have been
    written); after restore the retry adds nothing twice."""
    with running_proxy("127.0.0.1", redis_server.port) as proxy:
        sink = make_sink(url=f"redis://{proxy.address}/0", timeout=1)
        sink.send(outgoing(1))

        proxy.freeze()
        error = send_failing(sink, outgoing(2))
        proxy.restore()
        sink.send(outgoing(2, attempt=2))

    assert (error.reason, error.retryable) in {("timeout", True), ("connection", True)}
    assert delivery_ids(redis_client, stream) == ["evt-0001:audit", "evt-0002:audit"]


def test_a_closed_sink_refuses_to_send(make_sink: SinkFactory) -> None:
    sink = make_sink()
    sink.close()

    error = send_failing(sink, outgoing(1))

    assert (error.reason, error.retryable) == ("connection", True)


@pytest.mark.timeout(60)
def test_a_redis_cluster_node_is_named_as_such(tmp_path: Path, stream: str, make_sink: SinkFactory) -> None:
    """A node that does not own the stream's slot answers MOVED: the reason says cluster, not a
    generic refusal, since a single Redis server is what this destination needs."""
    with _two_node_cluster(tmp_path) as (first, second):
        slot = redis.Redis(port=first).cluster("keyslot", stream)
        elsewhere = second if int(slot) < 8192 else first
        sink = make_sink(url=f"redis://127.0.0.1:{elsewhere}/0")

        error = send_failing(sink, outgoing(1))

    assert (error.reason, error.retryable) == ("cluster", True)


@contextlib.contextmanager
def _two_node_cluster(directory: Path) -> Iterator[tuple[int, int]]:
    """Two cluster-enabled redis-servers: slots 0-8191 on the first, 8192-16383 on the second."""
    ports = [_cluster_port(), _cluster_port()]
    processes = []
    try:
        for port in ports:
            node = directory / str(port)
            node.mkdir()
            command = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            command += ["--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf")]
            processes.append(subprocess.Popen([*command, "--dir", str(node)], stdout=subprocess.DEVNULL))
        clients = [redis.Redis(port=port) for port in ports]
        _wait(lambda: all(_pings(client) for client in clients))
        clients[0].cluster("addslotsrange", 0, 8191)
        clients[1].cluster("addslotsrange", 8192, 16383)
        clients[0].cluster("meet", "127.0.0.1", ports[1])
        _wait(lambda: all(client.cluster("info")["cluster_state"] == "ok" for client in clients))
        yield ports[0], ports[1]
    finally:
        for process in processes:
            process.kill()
            process.wait(10)


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(100):
        port = random.randint(20000, 45000)
        with contextlib.ExitStack() as held:
            try:
                for candidate in (port, port + 10000):
                    listener = held.enter_context(socket.socket())
                    listener.bind(("127.0.0.1", candidate))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a cluster node")


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _wait(condition: Callable[[], bool]) -> None:
    """Wait for a cluster node, or the cluster, to be ready."""
    wait_until(condition, timeout=30, interval=0.1, failure="the cluster did not form")


def test_a_connection_dropped_while_idle_is_replaced_without_a_failure(
    redis_server: RedisServer, redis_client: redis.Redis, stream: str, make_sink: SinkFactory
) -> None:
    """A pooled connection the server dropped meanwhile is noticed before use and replaced."""
    with running_proxy("127.0.0.1", redis_server.port) as proxy:
        sink = make_sink(url=f"redis://{proxy.address}/0")
        sink.send(outgoing(1))
        proxy.cut()
        wait_until(lambda: tcp_connections_to(proxy.port) == 0)
        proxy.restore()

        sink.send(outgoing(2))

    assert delivery_ids(redis_client, stream) == ["evt-0001:audit", "evt-0002:audit"]


def test_a_key_of_another_type_fails_and_leaves_no_marker(
    redis_client: redis.Redis, stream: str, make_sink: SinkFactory
) -> None:
    """WRONGTYPE is a retryable failure; once the key is gone the retry adds the entry."""
    redis_client.set(stream, "not a stream")
    sink = make_sink()

    error = send_failing(sink, outgoing())
    redis_client.delete(stream)
    sink.send(outgoing(attempt=2))

    assert (error.reason, error.retryable) == ("wrong_type", True)
    assert "jane.doe" not in error.detail
    assert delivery_ids(redis_client, stream) == ["evt-0001:audit"]


def test_a_full_server_fails_retryably_and_leaves_no_marker(
    redis_client: redis.Redis, stream: str, make_sink: SinkFactory
) -> None:
    """At maxmemory (noeviction) the send fails as ``full``; once there is room the retry adds the entry."""
    sink = make_sink()
    previous = redis_client.config_get("maxmemory")["maxmemory"]
    redis_client.config_set("maxmemory", 1)
    try:
        error = send_failing(sink, outgoing())
    finally:
        redis_client.config_set("maxmemory", previous or 0)
    sink.send(outgoing(attempt=2))

    assert (error.reason, error.retryable) == ("full", True)
    assert delivery_ids(redis_client, stream) == ["evt-0001:audit"]


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"redis://:{PASSWORD}@127.0.0.1:{{port}}/0", id="password"),
        pytest.param(f"redis://user:{PASSWORD}@127.0.0.1:{{port}}/0", id="user-and-password"),
        pytest.param(f"redis://127.0.0.1:{{port}}/0?password={PASSWORD}", id="query"),
    ],
)
def test_an_unreachable_redis_fails_without_the_password(make_sink: SinkFactory, url: str) -> None:
    """Constructing does not connect; the send fails retryably and no error text holds the password."""
    sink = make_sink(url=url.format(port=free_port()))

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("connection", True)
    assert "127.0.0.1" in error.detail
    for text in (error.detail, str(error), repr(error), sink.target):
        assert PASSWORD not in text
        assert "jane.doe" not in text


def test_a_refused_password_is_an_auth_error(redis_server: RedisServer, make_sink: SinkFactory) -> None:
    """Credentials the server does not accept (WRONGPASS) fail as ``auth``, without the password."""
    sink = make_sink(url=f"redis://nobody:{PASSWORD}@127.0.0.1:{redis_server.port}/0")

    error = send_failing(sink, outgoing())

    assert (error.reason, error.retryable) == ("auth", True)
    assert PASSWORD not in str(error)


# -- check and close --------------------------------------------------------------------------


def test_check_reports_a_missing_then_an_existing_stream(
    redis_client: redis.Redis, stream: str, make_sink: SinkFactory
) -> None:
    """check() accepts a stream not created yet (and creates nothing), then reports its length."""
    sink = make_sink()

    before = sink.check()
    created = redis_client.exists(stream)
    sink.send(outgoing())
    after = sink.check()

    assert "does not exist yet" in before
    assert created == 0
    assert f"stream {stream}" in after
    assert ": 1 entries" in after


def test_check_fails_on_a_key_of_another_type_and_on_a_dead_port(
    redis_client: redis.Redis, stream: str, make_sink: SinkFactory
) -> None:
    """A key that is not a stream, or a Redis that does not answer, is a SinkError."""
    redis_client.rpush(stream, "x")

    with pytest.raises(SinkError) as wrong:
        make_sink().check()
    with pytest.raises(SinkError) as dead:
        make_sink(url=f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0").check()

    assert wrong.value.reason == "wrong_type"
    assert "holds a list" in wrong.value.detail
    assert dead.value.reason == "connection"
    assert PASSWORD not in dead.value.detail


def test_close_releases_the_connections(redis_client: redis.Redis, make_sink: SinkFactory) -> None:
    """After close() the server no longer lists the sink's connection; close() twice is fine."""
    sink = make_sink()
    sink.send(outgoing())

    def sink_connections() -> int:
        return sum(client["name"] == "capture-relay:audit" for client in redis_client.client_list())

    before = sink_connections()
    sink.close()
    sink.close()

    assert before == 1
    # The server notices a closed connection on its next turn of the event loop.
    wait_until(lambda: sink_connections() == 0)
