"""Fixtures for driving the real app (TestClient) against the private Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings

ClientFactory = Callable[[Settings], "contextmanager[TestClient]"]


@pytest.fixture
def client_for() -> Callable[[Settings], Iterator[TestClient]]:
    """Open a TestClient (lifespan included) on an app built from the given settings."""

    @contextmanager
    def open_client(settings: Settings) -> Iterator[TestClient]:
        with TestClient(create_app(settings), raise_server_exceptions=True) as client:
            yield client

    return open_client  # type: ignore[return-value]
