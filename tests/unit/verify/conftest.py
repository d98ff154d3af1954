"""Fixtures for the verification tests: a mocked JWKS endpoint, caches over it, and v3 policies."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest

from service.verify.jwks import JwksCache
from service.verify.set_token import V3Policy
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey
from tests.unit.verify.mock_jwks import JWKS_URL, MockJwksEndpoint

CacheFactory = Callable[..., JwksCache]
PolicyFactory = Callable[..., V3Policy]


@pytest.fixture(scope="session")
def stranger_key() -> SigningKey:
    """A key whose kid Capture never published."""
    return SigningKey.generate("kid-stranger")


@pytest.fixture
def jwks_endpoint(signing_key: SigningKey) -> MockJwksEndpoint:
    """The JWKS at ``JWKS_URL``, publishing ``signing_key`` only."""
    return MockJwksEndpoint(JWKS_URL, {"keys": [signing_key.public_jwk]})


@pytest.fixture
async def make_cache(jwks_endpoint: MockJwksEndpoint) -> AsyncIterator[CacheFactory]:
    """Build a ``JwksCache`` over a mocked endpoint (``jwks_endpoint`` unless one is passed)."""
    clients: list[httpx2.AsyncClient] = []

    def factory(
        endpoint: MockJwksEndpoint | None = None,
        *,
        cooldown: float = 30.0,
        ttl: float = 3600.0,
        timeout: float = 5.0,
    ) -> JwksCache:
        served = endpoint or jwks_endpoint
        client = httpx2.AsyncClient(transport=served.transport())
        clients.append(client)
        return JwksCache(served.url, client, cooldown=cooldown, ttl=ttl, timeout=timeout)

    yield factory
    for client in clients:
        await client.aclose()


@pytest.fixture
def make_policy() -> PolicyFactory:
    """The policy of ``sources.v3`` with issuer and audience pinned; keyword fields override."""

    def factory(**overrides: Any) -> V3Policy:
        policy = V3Policy(
            jwks_url=JWKS_URL,
            issuers=(ISSUER,),
            audiences=(AUDIENCE,),
            max_age=48 * 3600.0,
            clock_skew=60.0,
        )
        return dataclasses.replace(policy, **overrides)

    return factory
