"""Small real HTTP servers for tests: uvicorn in a thread, on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from capture_relay.embedded_redis import free_port


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (on ``port``, or a free one); yields its base URL."""
    port = port if port is not None else free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class JwksEndpoint:
    """A JWKS document that tests can rotate or break, counting the fetches it serves."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        self.status = 200

    def app(self, path: str) -> Starlette:
        """An app serving the document at ``path``."""

        async def jwk(request: Request) -> Response:
            self.fetches += 1
            if self.status != 200:
                return Response("unavailable", status_code=self.status)
            return JSONResponse({"keys": self.keys})

        return Starlette(routes=[Route(path, jwk)])
