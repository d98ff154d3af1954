"""The pipeline end to end into the database and bus destinations on this machine: profiles change
in the simulator, go through the real ingress and workers, and arrive in a PostgreSQL mirror (made
by ``capture-relay sinks init``), a Redis stream, a RabbitMQ queue and a JetStream stream.

The mirror sits behind a TCP proxy, so one test can cut the database away mid-run: the deliveries
must wait through retries and the breaker and all arrive once it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pika
import psycopg
import pytest
import redis
from psycopg import sql

from capture_relay.cli import main
from capture_relay.embedded_redis import RedisServer
from tests.support.pipeline import Stack, running_stack
from tests.support.tcp_proxy import TcpProxy, running_proxy
from workers.breaker import CircuitBreaker

pytestmark = pytest.mark.timeout(180)

EVERYTHING = ["entityCreated", "entityUpdated", "entityDeleted"]


@pytest.fixture
def mirror(postgres_dsn: str, unique_name: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy to the test database, and a table name; the table is dropped afterwards."""
    with running_proxy("127.0.0.1", 5432) as proxy:
        yield proxy, unique_name
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(unique_name)))


def _mirror_destination(proxy: TcpProxy, postgres_dsn: str, table: str) -> dict[str, Any]:
    dsn = postgres_dsn.replace("127.0.0.1:5432", proxy.address)
    return {"type": "postgres", "dsn": dsn, "table": table, "timeout": "3s"}


def _init_tables(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sinks", "init", "--config", str(stack.config_path)]) == 0
    capsys.readouterr()


def _rows(postgres_dsn: str, table: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(postgres_dsn) as connection:
        query = sql.SQL("SELECT uuid, record, deleted_at, delivery_id FROM {}").format(sql.Identifier(table))
        rows = connection.execute(query).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_profile_changes_reach_the_mirror_and_every_bus(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    postgres_dsn: str,
    amqp_url: str,
    nats_url: str,
    mirror: tuple[TcpProxy, str],
    unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy, table = mirror
    amqp = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = amqp.channel()
    channel.exchange_declare(unique_name, "topic", auto_delete=False)
    channel.queue_declare(unique_name)
    channel.queue_bind(unique_name, unique_name, routing_key="profile.#")
    asyncio.run(_add_jetstream(nats_url, unique_name))
    destinations = {
        "mirror": _mirror_destination(proxy, postgres_dsn, table),
        "stream": {"type": "redis_stream", "stream": f"{unique_name}.events"},
        "rabbit": {"type": "amqp", "url": amqp_url, "exchange": unique_name, "routing_key": "profile.{event_type}"},
        "jetstream": {"type": "nats", "url": nats_url, "subject": unique_name + ".{event_type}"},
    }
    routes = [
        {"name": "mirror", "on": EVERYTHING, "to": ["mirror"]},
        {"name": "buses", "on": EVERYTHING, "to": ["stream", "rabbit", "jetstream"], "fields": ["uuid", "email"]},
    ]
    try:
        with running_stack(tmp_path, redis_server.url, destinations=destinations, routes=routes) as stack:
            _init_tables(stack, capsys)
            kept = stack.create({"email": "kept@example.com", "givenName": "Kept"})["uuid"]
            gone = stack.create({"email": "gone@example.com"})["uuid"]
            stack.wait_emitted()
            stack.drain()
            stack.update(kept, {"email": "kept.new@example.com"})
            stack.delete(gone)
            stack.wait_emitted()
            stack.drain()

        rows = _rows(postgres_dsn, table)
        entries: list[tuple[bytes, dict[bytes, bytes]]] = redis_client.xrange(f"{unique_name}.events")  # type: ignore[assignment]
        queued = []
        while (message := channel.basic_get(unique_name, auto_ack=True))[0] is not None:
            queued.append(message)
        in_jetstream = asyncio.run(_jetstream_messages(nats_url, unique_name))
    finally:
        channel.exchange_delete(unique_name)
        channel.queue_delete(unique_name)
        amqp.close()
        asyncio.run(_delete_jetstream(nats_url, unique_name))

    # The mirror: the kept profile with its newest record, the deleted one as a tombstone.
    assert rows[kept][0]["email"] == "kept.new@example.com"
    assert rows[kept][1] is None
    assert rows[gone][0] is None
    assert rows[gone][1] is not None
    # Each bus: four deliveries (two creations, an update, a deletion), each once, in the route's shape.
    stream_ids = [fields[b"delivery_id"].decode() for _, fields in entries]
    amqp_ids = [properties.message_id for _, properties, _ in queued]
    nats_ids = [headers["Nats-Msg-Id"] for headers, _ in in_jetstream]
    for bus, ids in (("stream", stream_ids), ("rabbit", amqp_ids), ("jetstream", nats_ids)):
        assert len(ids) == len(set(ids)) == 4
        assert {delivery_id.rsplit(":", 1)[1] for delivery_id in ids} == {bus}
    [update] = [orjson.loads(fields[b"payload"]) for _, fields in entries if fields[b"event_type"] == b"entityUpdated"]
    assert update["record"] == {"uuid": kept, "email": "kept.new@example.com"}
    assert sorted(method.routing_key for method, _, _ in queued) == [
        "profile.entityCreated",
        "profile.entityCreated",
        "profile.entityDeleted",
        "profile.entityUpdated",
    ]


def test_a_database_cut_away_mid_run_loses_no_delivery(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    postgres_dsn: str,
    mirror: tuple[TcpProxy, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy, table = mirror
    delivery = {
        "schedule": [0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2],
        "breaker": {"consecutive_failures": 2, "open_for": "1s"},
    }
    destinations = {"mirror": _mirror_destination(proxy, postgres_dsn, table)}
    routes = [{"name": "mirror", "on": EVERYTHING, "to": ["mirror"]}]
    config = {"destinations": destinations, "routes": routes, "delivery": delivery}
    with running_stack(tmp_path, redis_server.url, **config) as stack:
        _init_tables(stack, capsys)
        first = stack.create({"email": "before@example.com"})["uuid"]
        stack.wait_emitted()
        stack.drain()
        assert set(_rows(postgres_dsn, table)) == {first}

        proxy.cut()
        during = {stack.create({"email": f"during{n}@example.com"})["uuid"] for n in range(5)}
        stack.wait_emitted()
        stack.drain(queues=("events",))
        breaker = CircuitBreaker(redis_client, "mirror", stack.settings.delivery.breaker)
        stack.drain(queues=("deliveries",), until=lambda: breaker.state() == "open")
        assert set(_rows(postgres_dsn, table)) == {first}  # nothing counted delivered while cut

        proxy.restore()
        stack.drain()
        rows = _rows(postgres_dsn, table)

    assert set(rows) == {first} | during
    assert all(record is not None for record, _, _ in rows.values())


async def _add_jetstream(url: str, name: str) -> None:
    import nats

    client = await nats.connect(url)
    try:
        await client.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
    finally:
        await client.close()


async def _jetstream_messages(url: str, name: str) -> list[tuple[dict[str, str], bytes]]:
    import nats

    client = await nats.connect(url)
    try:
        stream = client.jetstream()
        info = await stream.stream_info(name)
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await stream.get_msg(name, sequence)
            found.append((dict(message.headers or {}), message.data or b""))
        return found
    finally:
        await client.close()


async def _delete_jetstream(url: str, name: str) -> None:
    import nats

    client = await nats.connect(url)
    try:
        await client.jetstream().delete_stream(name)
    finally:
        await client.close()
