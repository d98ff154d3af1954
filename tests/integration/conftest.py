"""The real services the destinations are tested against, as on this machine; each is checked once.

They are the machine's shared instances (PostgreSQL, RabbitMQ, NATS with JetStream), so every
test makes its own table, exchange, queue or stream under a unique name and removes it after.
With ``CI=true`` a service that does not answer fails the tests that need it; elsewhere they are
skipped with the service's name.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from tests.conftest import missing_service

POSTGRES_DSN = os.environ.get("CAPTURE_RELAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("CAPTURE_RELAY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
NATS_URL = os.environ.get("CAPTURE_RELAY_TEST_NATS", "nats://127.0.0.1:4222")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """A DSN of the test database, after checking that it accepts a query."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        missing_service(f"PostgreSQL at {POSTGRES_DSN} ({type(exc).__name__})")
    return POSTGRES_DSN


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The URL of the machine's RabbitMQ (guest/guest), after checking that it accepts a connection."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL)).close()
    except pika.exceptions.AMQPError as exc:
        missing_service(f"RabbitMQ at 127.0.0.1:5672 ({type(exc).__name__})")
    return AMQP_URL


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The URL of the machine's NATS server; JetStream itself is checked by the tests that use it."""
    if not _answers("127.0.0.1", 4222):
        missing_service("NATS at 127.0.0.1:4222")
    return NATS_URL


@pytest.fixture
def unique_name() -> str:
    """A name no other test (or earlier run) uses: for tables, exchanges, queues and streams."""
    return f"cr_test_{uuid.uuid4().hex[:12]}"
