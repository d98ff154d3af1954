"""A stand-in for the Akamai Identity Cloud v3 subscription API (protocol §3.6), checking requests as Akamai would.

The token endpoint wants a POST with the configuration client's Basic credentials and the form field
``grant_type=client_credentials``; it hands out numbered tokens. Every subscription call must carry a token
that is still valid, or it is answered 403 as Akamai answers an expired token. Tests prepare answers either as a
queue or with a responder, and expire or refuse tokens to drive the refresh path.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx2

API_URL = "https://v1.api.us.janrain.com"
CUSTOMER_ID = "b18fc81d-457e-4a40-ac87-2b78bd946fa2"
CONFIG_CLIENT_ID = "config-client-id"
CONFIG_CLIENT_SECRET = "config-client-secret"
SUBSCRIPTIONS_PATH = f"/{CUSTOMER_ID}/webhooks/subscriptions"
TOKEN_PATH = f"/{CUSTOMER_ID}/login/token"


@dataclass(frozen=True)
class ApiCall:
    """One subscription API request: method, URL, the bearer token it carried and its JSON body (if any)."""

    method: str
    url: str
    token: str
    body: Any


Responder = Callable[[ApiCall], httpx2.Response]


def subscription(ident: str, title: str = "capture-relay", **extra: Any) -> dict[str, Any]:
    """A subscription object as Akamai returns it."""
    return {
        "id": ident,
        "title": title,
        "endpoint": "https://hooks.example.com/akamai/webhooks",
        "events": ["entityCreated", "entityUpdated", "entityDeleted"],
        "enabled": True,
        "customerId": CUSTOMER_ID,
        "createdAt": "2024-05-01T12:00:00Z",
        "_links": {"self": {"href": f"{SUBSCRIPTIONS_PATH}/{ident}"}},
        **extra,
    }


class FakeAkamai:
    """Issues tokens, checks them on every call, records calls and answers them."""

    def __init__(self) -> None:
        self.expires_in: object = 3600
        self.token_requests = 0
        self.valid_tokens: set[str] = set()
        # When set, every subscription call is refused with 403 whatever its token.
        self.forbidden = False
        self.calls: list[ApiCall] = []
        self.answers: list[httpx2.Response] = []
        self.responder: Responder | None = None

    def transport(self) -> httpx2.MockTransport:
        """The transport for an ``httpx2.Client``."""
        return httpx2.MockTransport(self.handle)

    def expire_tokens(self) -> None:
        """Make every token issued so far invalid, as an hour passing would."""
        self.valid_tokens.clear()

    @property
    def tokens(self) -> list[str]:
        """The bearer token each subscription call carried, in order."""
        return [call.token for call in self.calls]

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        """Answer one request the way Akamai would."""
        assert request.url.host == "v1.api.us.janrain.com"
        assert request.url.scheme == "https"
        if request.url.path == TOKEN_PATH:
            return self._token(request)
        assert request.url.path.startswith(SUBSCRIPTIONS_PATH), f"unknown path {request.url.path}"
        assert request.headers.get("Accept") == "application/json"
        authorization = request.headers.get("Authorization", "")
        assert authorization.startswith("Bearer "), "the subscription API wants a bearer token"
        body: Any = None
        if request.content:
            assert request.headers.get("Content-Type") == "application/json"
            body = json.loads(request.content)
        call = ApiCall(request.method, str(request.url), authorization.removeprefix("Bearer "), body)
        self.calls.append(call)
        if self.forbidden or call.token not in self.valid_tokens:
            return httpx2.Response(403, json={"title": "Forbidden", "detail": "the access token is not valid"})
        if self.answers:
            return self.answers.pop(0)
        assert self.responder is not None, f"no answer prepared for {request.method} {request.url}"
        return self.responder(call)

    def _token(self, request: httpx2.Request) -> httpx2.Response:
        assert request.method == "POST"
        expected = base64.b64encode(f"{CONFIG_CLIENT_ID}:{CONFIG_CLIENT_SECRET}".encode()).decode()
        assert request.headers.get("Content-Type") == "application/x-www-form-urlencoded"
        assert parse_qs(request.content.decode(), strict_parsing=True) == {"grant_type": ["client_credentials"]}
        if request.headers.get("Authorization") != f"Basic {expected}":
            return httpx2.Response(401, json={"error": "invalid_client"})
        self.token_requests += 1
        token = f"token-{self.token_requests}"
        self.valid_tokens.add(token)
        return httpx2.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in})
