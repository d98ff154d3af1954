"""Capture's key endpoint played through ``httpx2.MockTransport``: no socket is opened."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2

from tests.support.tokens import JWKS_PATH

# Where the tests' Capture tenant publishes its keys (the host of the protocol reference's samples).
JWKS_URL = "https://v1.api.us.janrain.com" + JWKS_PATH


class MockJwksEndpoint:
    """Answers ``GET`` on one URL with a JWKS, as Capture's jwk page does, and records every request.

    Tests re-key it (``document``), break it (``status``, ``error``, ``body``) and count ``fetches``.
    A request for any other URL or with another method gets a 404, so a wrong request fails the test.
    """

    def __init__(self, url: str, document: Any) -> None:
        self.url = url
        self.document = document
        self.status = 200
        self.headers: dict[str, str] = {}
        self.body: bytes | None = None
        self.error: type[httpx2.TransportError] | None = None
        self.requests: list[httpx2.Request] = []

    @property
    def fetches(self) -> int:
        """How many requests reached the endpoint."""
        return len(self.requests)

    def transport(self) -> httpx2.MockTransport:
        """A transport for an ``httpx2.AsyncClient`` that routes every request here."""
        return httpx2.MockTransport(self.handle)

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request the way the real endpoint would."""
        self.requests.append(request)
        # A real fetch gives the event loop away; concurrent callers must get to run meanwhile.
        for _ in range(3):
            await asyncio.sleep(0)
        if request.method != "GET" or str(request.url) != self.url:
            return httpx2.Response(404, text="not found")
        if self.error is not None:
            raise self.error("simulated transport failure", request=request)
        if self.body is not None:
            return httpx2.Response(self.status, content=self.body, headers=self.headers)
        if self.status != 200:
            return httpx2.Response(self.status, text="unavailable", headers=self.headers)
        return httpx2.Response(200, json=self.document, headers=self.headers)
