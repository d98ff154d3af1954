"""Sink benchmark: deliveries per second through each destination type's sink, as a ratio to the
same client library writing the same thing as plainly as it can, measured in one run.

    .venv/bin/python -m bench.sinks                      # about a minute; appends to bench/RESULTS.md
    .venv/bin/python -m bench.sinks --types postgres,redis_stream --deliveries 5000 --no-record

For each type, with the same number of sending threads (a delivery worker's ``concurrency``):

  baseline  the client library alone: one confirmed write per delivery, nothing else
            (postgres: a plain upsert by uuid through a psycopg pool; redis_stream: XADD with
            MAXLEN ~; amqp: aiormq publish with confirms; nats: nats-py JetStream publish;
            kafka: confluent-kafka produce, waiting for each delivery report);
  sink      ``Sink.send`` of ``workers/sinks``: the same write plus what the sink adds (the
            staleness rule in SQL, the dedup marker script, the loop-thread hand-over, the
            watchdog, the error mapping).

Both write N distinct deliveries of an event-sized payload (about 1 KiB) for distinct profiles,
into their own table, stream, queue or topic, after a warm-up. The ratio says what the sink
costs over its library; absolute rates depend on the machine and on services shared with
everything else on it (PostgreSQL, RabbitMQ and NATS of this machine; Kafka is librdkafka's
in-process mock cluster, so its rates say nothing about a real broker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from capture_relay.embedded_redis import RedisServer
from service.destination_config import DESTINATION_TYPES
from workers.sinks import open_sink
from workers.sinks.base import Outgoing, Sink

RESULTS = Path(__file__).with_name("RESULTS.md")
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
NATS_URL = "nats://127.0.0.1:4222"
TYPES = ("postgres", "redis_stream", "amqp", "nats", "kafka")


@dataclass(frozen=True)
class Rate:
    """One measured phase: deliveries, seconds, and each send's latency."""

    deliveries: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


@dataclass(frozen=True)
class Result:
    kind: str
    baseline: Rate
    sink: Rate

    @property
    def ratio(self) -> float:
        return self.sink.per_second / self.baseline.per_second


def outgoing(number: int, destination: str) -> Outgoing:
    """An event-sized delivery for a profile of its own."""
    profile = str(uuid.uuid4())
    record = {
        "uuid": profile,
        "email": f"user{number}@example.com",
        "givenName": "Ada",
        "familyName": "Lovelace",
        "lastUpdated": "2026-11-22 12:00:00.123456 +0000",
        "primaryAddress": {"city": "London", "zip": "NW1", "address1": "12 Example Street" * 4},
        "consents": [{"type": f"consent-{n}", "granted": True} for n in range(8)],
    }
    delivery_id = f"bench-{number}:{destination}"
    payload: dict[str, Any] = {
        "id": delivery_id,
        "type": "entityUpdated",
        "event_id": f"bench-{number}",
        "source": "v3",
        "entity_type": "user",
        "uuid": profile,
        "occurred_at": "2026-11-22T12:00:00Z",
        "route": "bench",
        "record": record,
        "changes": {"email": {"new": record["email"]}},
    }
    return Outgoing(
        delivery_id=delivery_id,
        destination=destination,
        event_type="entityUpdated",
        uuid=profile,
        payload=payload,
        attempt=1,
        version=1_763_812_800.123456 + number,
    )


def measure(send: Callable[[Outgoing], None], deliveries: list[Outgoing], threads: int) -> Rate:
    """Send every delivery from ``threads`` threads; the wall time and each send's latency."""
    latencies: list[float] = []
    lock = threading.Lock()

    def one(delivery: Outgoing) -> None:
        started = time.perf_counter()
        send(delivery)
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, deliveries))
    return Rate(len(deliveries), time.perf_counter() - started, latencies)


# --- each type: its destination section, its baseline sender, and the clean-up --------------


@contextlib.contextmanager
def postgres(name: str, threads: int) -> Iterator[tuple[dict[str, Any], Callable[[Outgoing], None]]]:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool

    from workers.sinks.postgres_schema import create_sql

    baseline_table = f"{name}_baseline"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
        connection.execute(create_sql(name))
        connection.execute(create_sql(baseline_table))
    upsert = sql.SQL(
        "INSERT INTO {} (uuid, entity_type, record, last_updated, delivery_id) "
        "VALUES (%s, %s, %s, to_timestamp(%s), %s) ON CONFLICT (uuid) "
        "DO UPDATE SET record = EXCLUDED.record, last_updated = EXCLUDED.last_updated"
    ).format(sql.Identifier(baseline_table))
    pool = ConnectionPool(POSTGRES_DSN, min_size=threads, max_size=threads, kwargs={"autocommit": True})

    def send(delivery: Outgoing) -> None:
        with pool.connection() as connection:
            connection.execute(
                upsert,
                [delivery.uuid, "user", orjson.dumps(delivery.payload["record"]).decode(), delivery.version,
                 delivery.delivery_id],
            )  # fmt: skip

    try:
        yield {"type": "postgres", "dsn": POSTGRES_DSN, "table": name}, send
    finally:
        pool.close()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            for table in (name, baseline_table):
                connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@contextlib.contextmanager
def redis_stream(name: str, threads: int) -> Iterator[tuple[dict[str, Any], Callable[[Outgoing], None]]]:
    import redis

    server = RedisServer()
    server.start()
    client = redis.Redis.from_url(server.url, max_connections=threads)

    def send(delivery: Outgoing) -> None:
        fields = {
            "delivery_id": delivery.delivery_id,
            "event_type": delivery.event_type,
            "uuid": delivery.uuid,
            "entity_type": "user",
            "payload": orjson.dumps(delivery.payload),
        }
        client.xadd(f"{name}.baseline", fields, maxlen=1_000_000, approximate=True)  # type: ignore[arg-type]

    try:
        yield {"type": "redis_stream", "url": server.url, "stream": name}, send
    finally:
        client.close()
        server.close()


class _LoopClient:
    """A loop on a thread for the asyncio baselines; ``call`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, work: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@contextlib.contextmanager
def amqp(name: str, threads: int) -> Iterator[tuple[dict[str, Any], Callable[[Outgoing], None]]]:
    import aiormq

    loop = _LoopClient()

    async def open_channel() -> tuple[Any, Any]:
        connection = await aiormq.connect(AMQP_URL)
        channel = await connection.channel(publisher_confirms=True)
        await channel.exchange_declare(name, exchange_type="topic")
        for queue in (name, f"{name}.baseline"):
            await channel.queue_declare(queue)
        await channel.queue_bind(name, name, routing_key="sink.#")
        await channel.queue_bind(f"{name}.baseline", name, routing_key="baseline.#")
        return connection, channel

    connection, channel = loop.call(open_channel())

    def send(delivery: Outgoing) -> None:
        body = orjson.dumps(delivery.payload)
        properties = aiormq.spec.Basic.Properties(
            delivery_mode=2, content_type="application/json", message_id=delivery.delivery_id
        )
        loop.call(channel.basic_publish(body, exchange=name, routing_key="baseline.x", properties=properties))

    async def clean_up() -> None:
        for queue in (name, f"{name}.baseline"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(name)
        await connection.close()

    try:
        yield {"type": "amqp", "url": AMQP_URL, "exchange": name, "routing_key": "sink.{event_type}"}, send
    finally:
        loop.call(clean_up())
        loop.stop()


@contextlib.contextmanager
def nats(name: str, threads: int) -> Iterator[tuple[dict[str, Any], Callable[[Outgoing], None]]]:
    import nats as nats_client

    loop = _LoopClient()

    async def open_stream() -> Any:
        client = await nats_client.connect(NATS_URL)
        await client.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
        return client

    client = loop.call(open_stream())
    stream = client.jetstream()

    def send(delivery: Outgoing) -> None:
        headers = {"Nats-Msg-Id": delivery.delivery_id}
        loop.call(stream.publish(f"{name}.baseline", orjson.dumps(delivery.payload), headers=headers))

    async def clean_up() -> None:
        await stream.delete_stream(name)
        await client.close()

    try:
        yield {"type": "nats", "url": NATS_URL, "subject": name + ".sink.{event_type}"}, send
    finally:
        loop.call(clean_up())
        loop.stop()


@contextlib.contextmanager
def kafka(name: str, threads: int) -> Iterator[tuple[dict[str, Any], Callable[[Outgoing], None]]]:
    from confluent_kafka import Producer

    from tests.support.kafka_mock import mock_cluster

    with mock_cluster() as cluster:
        cluster.create_topic(name, partitions=4)
        cluster.create_topic(f"{name}.baseline", partitions=4)
        producer = Producer(
            {"bootstrap.servers": cluster.bootstrap_servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )

        def send(delivery: Outgoing) -> None:
            done = threading.Event()
            failure: list[Any] = []

            def report(error: Any, _message: Any) -> None:
                if error is not None:
                    failure.append(error)
                done.set()

            producer.produce(
                f"{name}.baseline", key=delivery.uuid, value=orjson.dumps(delivery.payload), on_delivery=report
            )
            while not done.is_set():
                producer.poll(0.05)
            if failure:
                raise RuntimeError(str(failure[0]))

        try:
            yield {"type": "kafka", "bootstrap_servers": cluster.bootstrap_servers, "topic": name}, send
        finally:
            producer.flush(10)


Bench = Callable[[str, int], contextlib.AbstractContextManager[tuple[dict[str, Any], Callable[[Outgoing], None]]]]
BENCHES: dict[str, Bench] = {
    "postgres": postgres,
    "redis_stream": redis_stream,
    "amqp": amqp,
    "nats": nats,
    "kafka": kafka,
}


def run_one(kind: str, deliveries: int, threads: int, warmup: int) -> Result:
    name = f"bench_{kind}_{uuid.uuid4().hex[:8]}"
    with BENCHES[kind](name, threads) as (section, baseline_send):
        config = DESTINATION_TYPES[kind].model_validate({**section, "timeout": "10s"})
        sink: Sink = open_sink("bench", config, max_connections=threads)  # type: ignore[arg-type]
        try:
            batches = [[outgoing(n + offset, "bench") for n in range(count)] for offset, count in
                       ((0, warmup), (10**6, warmup), (2 * 10**6, deliveries), (3 * 10**6, deliveries))]  # fmt: skip
            measure(baseline_send, batches[0], threads)
            measure(sink.send, batches[1], threads)
            # Alternate which goes first would need two more phases; baseline first, as a cold start
            # is already paid by the warm-up.
            baseline = measure(baseline_send, batches[2], threads)
            measured = measure(sink.send, batches[3], threads)
        finally:
            sink.close()
    return Result(kind, baseline, measured)


def render(results: list[Result], args: argparse.Namespace, note: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    lines = [
        f"## Sinks run {now}",
        "",
        f"- change: {note}",
        f"- command: `.venv/bin/python -m bench.sinks {' '.join(sys.argv[1:])}`".rstrip(),
        f"- machine: `nproc` {_nproc()}, Python {platform.python_version()}; load average at start {' '.join(load)}",
        f"- {args.deliveries} deliveries per phase after {args.warmup} of warm-up, {args.threads} sending threads",
        "",
        "| type | baseline /s | sink /s | sink / baseline | baseline p50 / p99 ms | sink p50 / p99 ms |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        lines.append(
            f"| {result.kind} | {result.baseline.per_second:,.0f} | {result.sink.per_second:,.0f} | "
            f"{result.ratio:.2f} | {result.baseline.percentile(0.5):.1f} / {result.baseline.percentile(0.99):.1f} | "
            f"{result.sink.percentile(0.5):.1f} / {result.sink.percentile(0.99):.1f} |"
        )
    lines.append("")
    return "\n".join(lines) + "\n"


def _nproc() -> str:
    return subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()


def record(section: str) -> None:
    """Append ``section`` under the sinks heading of RESULTS.md (created on the first run)."""
    text = RESULTS.read_text(encoding="utf-8")
    heading = "# Sink benchmark results"
    if heading not in text:
        text += (
            f"\n{heading}\n\nProduced by `bench/sinks.py` (see its docstring); each run appends a section. "
            "The ratio is deliveries per second through the sink over its client library alone, in the same run.\n\n"
        )
    RESULTS.write_text(text + section, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sinks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--types", default=",".join(TYPES), help=f"comma-separated, of {', '.join(TYPES)}")
    parser.add_argument("--deliveries", type=int, default=2000, help="deliveries per measured phase (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="deliveries per warm-up phase (default 200)")
    parser.add_argument("--threads", type=int, default=8, help="sending threads (default 8, a worker's concurrency)")
    parser.add_argument("--note", default="", help="what changed, for the results table")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    results = []
    for kind in args.types.split(","):
        print(f"{kind}: measuring...", flush=True)
        result = run_one(kind, args.deliveries, args.threads, args.warmup)
        print(
            f"{kind}: baseline {result.baseline.per_second:,.0f}/s, sink {result.sink.per_second:,.0f}/s, "
            f"ratio {result.ratio:.2f}; sink p99 {result.sink.percentile(0.99):.1f} ms",
            flush=True,
        )
        results.append(result)
    section = render(results, args, args.note or "-")
    print(section)
    if not args.no_record:
        record(section)
    return 0 if results and statistics.fmean(r.ratio for r in results) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
