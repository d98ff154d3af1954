"""What ``capture-relay dev`` watches, so that it prints real outcomes rather than predictions.

Three sources, each a real one:

- ``Wire``: the simulator's webhooks reach the ingress through this recorder (an HTTP hop in the
  ``dev`` process, like a load balancer in front of the ingress). It keeps each token and the
  ingress's answer, status and body, and hands the answer back unchanged.
- ``Receiver``: the destinations. ``/crm`` and ``/archive`` record every delivery with its
  ``webhook-id`` and check its Standard Webhooks signature; ``/archive`` also appends the body,
  as one line, to the JSON-lines file (there is no file destination type: this is it).
- ``LogFollower``: the workers' JSON log lines (``event.processed``, ``delivery.*``), read from
  their log files as they grow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ARCHIVE = "archive"


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """One webhook and the ingress's answer to it."""

    token: bytes
    status: int
    answer: dict[str, Any]

    @property
    def outcome(self) -> str:
        """``accepted``, ``duplicate``, ``rejected``, ... (the answer's ``status``)."""
        return str(self.answer.get("status", "?"))

    @property
    def event_ids(self) -> list[str]:
        """The ids of the events the ingress stored (or had stored before, for a duplicate)."""
        return [str(event_id) for event_id in self.answer.get("event_ids", [])]

    @property
    def delivery_ids(self) -> list[str]:
        """For a duplicate: the delivery ids (v3 ``jti``) the ingress had accepted before."""
        return [str(delivery_id) for delivery_id in self.answer.get("delivery_ids", [])]

    @property
    def header(self) -> dict[str, Any]:
        """The token's JOSE header, read without verifying (for display only)."""
        return _segment(self.token, 0)

    @property
    def claims(self) -> dict[str, Any]:
        """The token's claims, read without verifying (for display only)."""
        return _segment(self.token, 1)

    @property
    def kind(self) -> str:
        """The event type the token claims, or ``?``."""
        events = self.claims.get("events")
        return str(next(iter(events))) if isinstance(events, dict) and events else "?"

    @property
    def uuid(self) -> str:
        """The profile the token names (``sub``), or an empty string."""
        events = self.claims.get("events")
        body: object = next(iter(events.values()), {}) if isinstance(events, dict) else {}
        return str(body.get("sub", "")) if isinstance(body, dict) else ""


def _segment(token: bytes, index: int) -> dict[str, Any]:
    parts = token.split(b".")
    try:
        value = json.loads(base64.urlsafe_b64decode(parts[index] + b"=" * (-len(parts[index]) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return value if isinstance(value, dict) else {}


class Wire:
    """Forwards v3 webhooks to the ingress and records each answer."""

    def __init__(self, ingress_v3_url: str) -> None:
        self.ingress_v3_url = ingress_v3_url
        self._answers: list[WebhookAnswer] = []
        self._lock = threading.Lock()

    def answers(self, start: int = 0) -> list[WebhookAnswer]:
        """The answers recorded so far, from index ``start``."""
        with self._lock:
            return self._answers[start:]

    def app(self) -> Starlette:
        """The recorder as an app: ``POST /webhooks/capture/v3``."""
        client: list[httpx2.AsyncClient] = []

        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with httpx2.AsyncClient(timeout=10) as http:
                client.append(http)
                yield

        async def forward(request: Request) -> Response:
            token = await request.body()
            headers = {name: value for name, value in request.headers.items() if name in _FORWARDED}
            try:
                answer = await client[0].post(self.ingress_v3_url, content=token, headers=headers)
            except httpx2.HTTPError as exc:
                # Answered like a gateway whose upstream is gone; the emitter retries a 5xx.
                self._record(WebhookAnswer(token, 502, {"status": "unreachable", "detail": type(exc).__name__}))
                return JSONResponse({"status": "unreachable"}, status_code=502)
            self._record(WebhookAnswer(token, answer.status_code, _json_object(answer.content)))
            content_type = answer.headers.get("content-type", "application/json")
            return Response(answer.content, status_code=answer.status_code, media_type=content_type)

        return Starlette(routes=[Route("/webhooks/capture/v3", forward, methods=["POST"])], lifespan=lifespan)

    def _record(self, answer: WebhookAnswer) -> None:
        with self._lock:
            self._answers.append(answer)


_FORWARDED = frozenset({"content-type", "user-agent", "accept"})


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"status": "?", "detail": raw[:64].decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"status": "?"}


@dataclass(frozen=True, slots=True)
class Delivered:
    """One delivery as the receiver got it."""

    destination: str
    webhook_id: str
    payload: dict[str, Any]
    signature_ok: bool
    archive_line: int | None  # its line number in the JSON-lines file, for /archive


class Receiver:
    """The local destinations: records every delivery; ``/archive`` appends it to the JSON-lines file."""

    def __init__(self, archive: Path, signing_secret: str) -> None:
        self.archive = archive
        self._key = base64.b64decode(signing_secret.removeprefix("whsec_"))
        self._deliveries: list[Delivered] = []
        self._lines = 0
        self._lock = threading.Lock()

    def deliveries(self, start: int = 0) -> list[Delivered]:
        """The deliveries received so far, from index ``start``."""
        with self._lock:
            return self._deliveries[start:]

    def app(self) -> Starlette:
        """The receiver as an app: ``POST /{destination}``, answered 204."""

        async def receive(request: Request) -> Response:
            destination = request.path_params["destination"]
            body = await request.body()
            payload = _json_object(body)
            webhook_id = request.headers.get("webhook-id", "")
            signed = self._signature_ok(webhook_id, request.headers.get("webhook-timestamp", ""), body, request)
            with self._lock:
                line = None
                if destination == ARCHIVE:
                    with self.archive.open("ab") as archive:
                        archive.write(body.replace(b"\n", b" ") + b"\n")
                    self._lines += 1
                    line = self._lines
                self._deliveries.append(Delivered(destination, webhook_id, payload, signed, line))
            return Response(status_code=204)

        return Starlette(routes=[Route("/{destination}", receive, methods=["POST"])])

    def _signature_ok(self, webhook_id: str, timestamp: str, body: bytes, request: Request) -> bool:
        # Standard Webhooks: base64 HMAC-SHA256 of "id.timestamp.body"; the header lists
        # "v1,<signature>" entries separated by spaces (one per secret while rotating).
        signed = f"{webhook_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()
        offered = request.headers.get("webhook-signature", "").split()
        return any(
            hmac.compare_digest(entry.removeprefix("v1,"), expected) for entry in offered if entry.startswith("v1,")
        )


class LogFollower:
    """Reads the JSON lines a process appends to its log file, a little at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The complete JSON lines written since the last call (other lines are skipped)."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        lines = []
        for raw in complete:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines
