"""Fixtures for unit tests: no Redis, no sockets; async tests run on anyio's asyncio backend."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only: ``JwksCache`` guards its fetch with an ``asyncio.Lock``."""
    return "asyncio"
