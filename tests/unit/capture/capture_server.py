"""A stand-in for Capture's API played through ``httpx2.MockTransport``: it checks every request as Capture would.

The handler refuses (with a failing assertion, which the test surfaces) any request that is not a form-encoded
POST on a known path with each field given once, whose credentials do not match the configured mode. In signed
mode it recomputes the janrain-signed HMAC from the received fields and ``Date`` header on its own, so a wrong
field name or a value encoded differently from what was signed fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx2

BASE_URL = "https://my-app.janraincapture.com"
CLIENT_ID = "abcdefghijklmnopqrstuvwxyz012345"
CLIENT_SECRET = "0123456789abcdefghijklmnopqrstuv"
PATHS = frozenset(
    {
        "/entity",
        "/entity.find",
        "/versions/entity",
        "/entityType",
        "/webhooks/add",
        "/webhooks/update",
        "/webhooks/list",
        "/webhooks/find",
        "/webhooks/delete",
    }
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@dataclass(frozen=True)
class Received:
    """One request as Capture saw it: the path, the call's own fields (credentials removed) and the headers."""

    path: str
    fields: dict[str, str]
    headers: httpx2.Headers


Responder = Callable[[Received], httpx2.Response]


def ok(**body: Any) -> httpx2.Response:
    """A ``stat: ok`` answer."""
    return httpx2.Response(200, json={**body, "stat": "ok"})


def error(code: int, name: str, *, status: int = 200, headers: dict[str, str] | None = None) -> httpx2.Response:
    """Capture's error envelope on the given HTTP status."""
    body = {"stat": "error", "code": code, "error": name, "error_description": "x", "request_token": "a1b2c3d4e5f6g7h8"}
    return httpx2.Response(status, json=body, headers=headers)


class FakeCapture:
    """Checks requests, records them, and answers with ``responder`` (or a queue of ready answers)."""

    def __init__(self, *, auth: str = "basic", expected_date: str | None = None) -> None:
        self.auth = auth
        self.expected_date = expected_date
        self.received: list[Received] = []
        self.answers: list[httpx2.Response] = []
        self.responder: Responder | None = None

    def transport(self) -> httpx2.MockTransport:
        """The transport for an ``httpx2.Client``."""
        return httpx2.MockTransport(self.handle)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """Check one request and answer it."""
        assert request.method == "POST", f"Capture calls are POSTs, got {request.method}"
        assert request.url.scheme == "https"
        assert request.url.host == "my-app.janraincapture.com"
        path = request.url.path
        assert path in PATHS, f"unknown Capture endpoint {path}"
        assert request.url.query == b"", "parameters travel in the form body, not the query string"
        fields = self._form(request)
        self._check_auth(request, path, fields)
        received = Received(path, fields, request.headers)
        self.received.append(received)
        if self.answers:
            return self.answers.pop(0)
        assert self.responder is not None, f"no answer prepared for {path}"
        return self.responder(received)

    @staticmethod
    def _form(request: httpx2.Request) -> dict[str, str]:
        body = request.content.decode("ascii")
        if not body:
            return {}
        assert request.headers.get("Content-Type") == "application/x-www-form-urlencoded"
        parsed = parse_qs(body, keep_blank_values=True, strict_parsing=True)
        assert all(len(values) == 1 for values in parsed.values()), f"a field was sent twice: {parsed}"
        return {key: values[0] for key, values in parsed.items()}

    def _check_auth(self, request: httpx2.Request, path: str, fields: dict[str, str]) -> None:
        authorization = request.headers.get("Authorization")
        if self.auth == "basic":
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            assert authorization == f"Basic {expected}"
            assert "client_secret" not in fields
        elif self.auth == "params":
            assert authorization is None
            assert fields.pop("client_id") == CLIENT_ID
            assert fields.pop("client_secret") == CLIENT_SECRET
        else:
            date = request.headers.get("Date", "")
            assert _DATE.match(date), f"Date {date!r} is not YYYY-MM-DD HH:MM:SS"
            if self.expected_date is not None:
                assert date == self.expected_date
            assert "client_id" not in fields
            assert "client_secret" not in fields
            lines = sorted(f"{key}={value}" for key, value in fields.items())
            text = "".join(f"{line}\n" for line in [path, date, *lines])
            digest = hmac.new(CLIENT_SECRET.encode(), text.encode(), hashlib.sha1).digest()
            assert authorization == f"Signature {CLIENT_ID}:{base64.b64encode(digest).decode()}"
