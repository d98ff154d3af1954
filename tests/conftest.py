"""Fixtures shared by all test layers: a private Redis, signing keys, a JWKS over real HTTP."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import structlog

from capture_relay.embedded_redis import RedisBinaryNotFoundError, RedisServer
from service import settings as settings_module
from service.logs import configure_logging
from service.settings import Settings
from tests.support.servers import JwksEndpoint, serve_in_thread
from tests.support.simulator import RunningSimulator, running_simulator
from tests.support.tokens import AUDIENCE, ISSUER, JWKS_PATH, SigningKey

ON_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only: the service runs on asyncio (uvloop)."""
    return "asyncio"


def missing_service(what: str) -> None:
    """Fail on CI, where every service must be there; skip elsewhere, saying what is missing."""
    if ON_CI:
        pytest.fail(f"{what} is not available, and CI=true requires it")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the process logs at debug level, as the JSON lines an operator would see; the
    logging set-up is undone afterwards, so later tests do not write into a closed stream."""
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    yield buffer
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port for the whole session; never the shared instance."""
    try:
        server = RedisServer()
    except RedisBinaryNotFoundError as exc:
        missing_service(f"redis-server ({exc})")
        raise  # unreachable: missing_service fails or skips
    server.start()
    yield server
    server.close()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private server, flushed before and after the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """The key tokens are signed with (generated once per run)."""
    return SigningKey.generate("kid-primary")


@pytest.fixture(scope="session")
def rogue_key() -> SigningKey:
    """A key Capture never published."""
    return SigningKey.generate("kid-primary")


@pytest.fixture
def jwks(signing_key: SigningKey) -> Iterator[tuple[JwksEndpoint, str]]:
    """A JWKS served over real HTTP; yields the endpoint (to rotate or break it) and its URL."""
    endpoint = JwksEndpoint([signing_key.public_jwk])
    with serve_in_thread(endpoint.app(JWKS_PATH)) as base_url:
        yield endpoint, base_url + JWKS_PATH


SettingsFactory = Callable[..., Settings]
LEGACY_HASH = "1234567891234567891234567891234567891234"


@pytest.fixture
def make_settings(redis_server: RedisServer, jwks: tuple[JwksEndpoint, str]) -> SettingsFactory:
    """Settings for a service on the private Redis with both sources on.

    ``v3={...}`` overrides keys of ``sources.v3``; any other keyword replaces a whole section.
    """

    def factory(*, v3: dict[str, Any] | None = None, **sections: Any) -> Settings:
        data: dict[str, Any] = {
            "redis_url": redis_server.url,
            "sources": {
                "v3": {"jwks_url": jwks[1], "issuer": ISSUER, "audience": AUDIENCE, **(v3 or {})},
                "legacy": {"callback_hashes": [LEGACY_HASH]},
            },
        }
        data.update(sections)
        return settings_module.from_mapping(data, {})

    return factory


@pytest.fixture
def capture_sim() -> Iterator[RunningSimulator]:
    """A whole Capture simulator over real HTTP, with the default settings."""
    with running_simulator() as running:
        yield running
