"""A destination for tests: an HTTP receiver that records what it gets and answers as told.

Each path is one destination (``/crm``, ``/bus``, ...). By default every request is answered
204; ``plan(path, [503, 503, 200])`` answers the next requests with those statuses in turn
(then 204 again), and ``down(path)`` answers 503 until ``up(path)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.servers import serve_in_thread


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        """The body as JSON."""
        document: dict[str, Any] = orjson.loads(self.body)
        return document

    @property
    def webhook_id(self) -> str:
        """The ``webhook-id`` header."""
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """The recording state behind the app."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    _plans: dict[str, list[int]] = field(default_factory=dict)
    _down: set[str] = field(default_factory=set)
    _headers: dict[int, dict[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, path: str, statuses: list[int], headers: dict[int, dict[str, str]] | None = None) -> None:
        """Answer the next requests on ``path`` with ``statuses`` in turn (extra headers per status)."""
        with self._lock:
            self._plans[path] = list(statuses)
            self._headers.update(headers or {})

    def down(self, path: str) -> None:
        """Answer 503 on ``path`` until :meth:`up`."""
        with self._lock:
            self._down.add(path)

    def up(self, path: str) -> None:
        """Answer normally on ``path`` again."""
        with self._lock:
            self._down.discard(path)

    def delivered(self, path: str) -> list[Received]:
        """The requests on ``path`` that were answered 2xx."""
        with self._lock:
            return [r for r in self.requests if r.path == path and 200 <= r.status < 300]

    def on(self, path: str) -> list[Received]:
        """Every request on ``path``, whatever its answer."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _answer(self, path: str) -> int:
        with self._lock:
            if path in self._down:
                return 503
            plan = self._plans.get(path)
            return plan.pop(0) if plan else 204

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        status = self._answer(path)
        with self._lock:
            self.requests.append(Received(path, dict(request.headers), body, status))
        return Response(status_code=status, headers=self._headers.get(status, {}))


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    """A receiver on a free port; its ``url`` is set while it runs."""
    receiver = Receiver()
    app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST"])])
    with serve_in_thread(app) as url:
        receiver.url = url
        yield receiver
