"""The Akamai Identity Cloud side: bearer tokens, the JWK page and the v3 subscription API.

Routes (protocol reference 3.4, 3.6)::

    POST   /{customerId}/login/token                  client credentials (HTTP Basic) -> bearer token
    GET    /{customerId}/login/jwk                    the JWK Set the tokens are signed with
    POST   /{customerId}/webhooks/subscriptions       create -> 201
    GET    /{customerId}/webhooks/subscriptions       ?page=N, HAL (_embedded.subscriptions, _links)
    GET    /{customerId}/webhooks/subscriptions/{id}
    PATCH  /{customerId}/webhooks/subscriptions/{id}  partial update, same validation
    DELETE /{customerId}/webhooks/subscriptions/{id}  -> 204
    POST   /__sim/keys/rotate                         {"retire_oldest": bool} -> the new JWK Set
    POST   /__sim/tokens/expire                       every bearer token issued so far expires now
    GET    /__sim/subscriptions                       every subscription, unpaged

Error bodies, where the reference shows none: the token endpoint answers as OAuth 2.0 does
(RFC 6749 5.2: ``{"error": "invalid_client", "error_description": ...}``); the subscription API
answers a problem document ``{"title", "status", "detail", "errors": [{"field", "message"}]}``.
A missing bearer token is 401; an unknown or expired one is 403, as Akamai answers it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from simulator.config import SimulatorConfig
from simulator.keys import KeyRing
from simulator.v3_subscriptions import SubscriptionBook, SubscriptionError, validate


class AkamaiState:
    """What the Akamai side remembers: its keys, the bearer tokens it issued and the subscriptions."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.keys = KeyRing(config.key_count)
        self.subscriptions = SubscriptionBook(config.customer_id, clock)
        self._tokens: dict[str, float] = {}  # token -> expiry
        self._lock = threading.Lock()

    def issue_token(self) -> str:
        """A new bearer token, valid for ``config.token_ttl`` seconds."""
        token = secrets.token_urlsafe(48)  # 64 characters, like Akamai's sample
        with self._lock:
            self._tokens[token] = self.clock() + self.config.token_ttl
        return token

    def token_valid(self, token: str) -> bool:
        """True for a token this state issued that has not expired."""
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and self.clock() < expiry

    def expire_tokens(self) -> int:
        """Expire every token issued so far; returns how many there were."""
        now = self.clock()
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = now
            return len(self._tokens)


def akamai_routes(state: AkamaiState) -> list[BaseRoute]:
    """The Akamai routes, bound to ``state``."""
    api = _AkamaiApi(state)
    collection = "/{customer_id}/webhooks/subscriptions"
    return [
        Route("/{customer_id}/login/token", api.token, methods=["POST"]),
        Route("/{customer_id}/login/jwk", api.jwk, methods=["GET"]),
        Route(collection, api.create, methods=["POST"]),
        Route(collection, api.list_page, methods=["GET"]),
        Route(collection + "/{subscription_id}", api.item, methods=["GET", "PATCH", "DELETE"]),
        Route("/__sim/keys/rotate", api.rotate_keys, methods=["POST"]),
        Route("/__sim/tokens/expire", api.expire_tokens, methods=["POST"]),
        Route("/__sim/subscriptions", api.all_subscriptions, methods=["GET"]),
    ]


def problem(status: int, detail: str, errors: list[dict[str, str]] | None = None) -> JSONResponse:
    """The subscription API's error body."""
    body = {"title": HTTPStatus(status).phrase, "status": status, "detail": detail, "errors": errors or []}
    return JSONResponse(body, status_code=status)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    # RFC 6749 5.2; a 401 names the scheme the client should use.
    headers = {"WWW-Authenticate": 'Basic realm="login"'} if status == 401 else None
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


class _AkamaiApi:
    def __init__(self, state: AkamaiState) -> None:
        self.state = state
        self.config = state.config

    async def token(self, request: Request) -> Response:
        if request.path_params["customer_id"] != self.config.customer_id:
            return problem(404, "unknown customer id")
        if not self._basic_auth_ok(request.headers.get("authorization", "")):
            return _oauth_error(401, "invalid_client", "unknown configuration client or wrong secret")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        if form.get("grant_type") != ["client_credentials"]:
            return _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        body = {
            "access_token": self.state.issue_token(),
            "token_type": "Bearer",
            "expires_in": int(self.config.token_ttl),
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def jwk(self, request: Request) -> Response:
        if request.path_params["customer_id"] != self.config.customer_id:
            return problem(404, "unknown customer id")
        return JSONResponse(self.state.keys.jwks())

    async def create(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        try:
            fields = validate(await _json(request), partial=False)
            subscription = self.state.subscriptions.create(fields)
        except SubscriptionError as exc:
            return problem(exc.status, exc.detail, exc.errors)
        return JSONResponse(self._rendered(subscription), status_code=201)

    async def list_page(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        raw = request.query_params.get("page", "1")
        if not raw.isdigit() or int(raw) < 1:
            return problem(400, "page must be a whole number from 1", [{"field": "page", "message": "invalid"}])
        page, size = int(raw), self.config.page_size
        everything = self.state.subscriptions.all()
        links: dict[str, dict[str, str]] = {"self": {"href": self._page_href(page)}}
        if page * size < len(everything):
            links["next"] = {"href": self._page_href(page + 1)}
        if page > 1:
            links["prev"] = {"href": self._page_href(page - 1)}
        embedded = [self._rendered(item) for item in everything[(page - 1) * size : page * size]]
        return JSONResponse({"_embedded": {"subscriptions": embedded}, "_links": links})

    async def item(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        subscription_id = request.path_params["subscription_id"]
        book = self.state.subscriptions
        try:
            if request.method == "DELETE":
                book.delete(subscription_id)
                return Response(status_code=204)
            if request.method == "PATCH":
                return JSONResponse(
                    self._rendered(book.update(subscription_id, validate(await _json(request), partial=True)))
                )
            return JSONResponse(self._rendered(book.get(subscription_id)))
        except SubscriptionError as exc:
            return problem(exc.status, exc.detail, exc.errors)

    async def rotate_keys(self, request: Request) -> Response:
        try:
            body = await _json(request) if await request.body() else {}
        except SubscriptionError as exc:
            return problem(400, exc.detail)
        retire = body.get("retire_oldest", False) if isinstance(body, dict) else None
        if not isinstance(retire, bool):
            return problem(400, 'expected {"retire_oldest": true|false}')
        self.state.keys.rotate(retire_oldest=retire)
        return JSONResponse(self.state.keys.jwks())

    async def expire_tokens(self, request: Request) -> Response:
        return JSONResponse({"expired": self.state.expire_tokens()})

    async def all_subscriptions(self, request: Request) -> Response:
        return JSONResponse({"subscriptions": [self._rendered(item) for item in self.state.subscriptions.all()]})

    def _refuse(self, request: Request) -> Response | None:
        """404 for another customer, 401 without a bearer token, 403 for an unknown or expired one."""
        if request.path_params["customer_id"] != self.config.customer_id:
            return problem(404, "unknown customer id")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            response = problem(401, "a bearer token is required")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if not self.state.token_valid(token.strip()):
            return problem(403, "the access token is unknown or expired")
        return None

    def _basic_auth_ok(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            client_id, _, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.config.config_client
        # Both comparisons always run, so the answer's timing does not tell which one failed.
        id_ok = hmac.compare_digest(client_id.encode(), expected.client_id.encode())
        secret_ok = hmac.compare_digest(secret.encode(), expected.client_secret.encode())
        return id_ok and secret_ok

    def _base(self) -> str:
        return f"{self.config.base_url.rstrip('/')}/{self.config.customer_id}/webhooks/subscriptions"

    def _page_href(self, page: int) -> str:
        return f"{self._base()}?page={page}"

    def _rendered(self, subscription: dict[str, Any]) -> dict[str, Any]:
        return {**subscription, "_links": {"self": {"href": f"{self._base()}/{subscription['id']}"}}}


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise SubscriptionError(400, "the body is not JSON", [{"field": "", "message": "not JSON"}]) from exc
