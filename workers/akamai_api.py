"""``SubscriptionsClient``: the Akamai Identity Cloud Webhooks v3 subscription API.

Authentication is a bearer token from ``POST /{customerId}/login/token``, fetched with a
configuration client's id and secret (HTTP Basic, ``grant_type=client_credentials``). Tokens
last an hour; the client caches one until shortly before it expires and, since Akamai answers
an expired token with 403, fetches a new one once when a call is refused and repeats the call.
Errors are plain HTTP statuses (400 validation, 404, 409 duplicate title, 429), raised as
``CaptureHttpError``; reference/capture-protocol.md §3.6.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx2
import orjson

from service.timeutil import parse_retry_after
from workers.capture_auth import ClientCredentials, basic_authorization
from workers.capture_calls import ApiCaller, answer_excerpt, send_bounded
from workers.capture_errors import CaptureHttpError, CaptureProtocolError

_LOGIN = "v3:/login/token"
_LIST = "v3:/webhooks/subscriptions"
_ONE = "v3:/webhooks/subscriptions/{id}"
# Refresh this long before the announced expiry, so a token never dies in flight.
_EXPIRY_MARGIN = 60.0
# A guard against a server whose "next" links go round in circles.
_MAX_PAGES = 1000


@dataclass(frozen=True, slots=True)
class Subscription:
    """A v3 subscription as Akamai describes it."""

    id: str
    title: str
    endpoint: str
    events: tuple[str, ...]
    enabled: bool
    filter: dict[str, Any] | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Subscription:
        """Parse one subscription object; the id may be ``id`` or only in ``_links.self``.

        Raises:
            ValueError: the object lacks an id, a title or an endpoint.
        """
        ident = data.get("id") or data.get("subscriptionId") or _self_id(data)
        if not ident or not isinstance(data.get("title"), str) or not isinstance(data.get("endpoint"), str):
            raise ValueError("a subscription needs an id, a title and an endpoint")
        events, enabled, filter_ = data.get("events", []), data.get("enabled", True), data.get("filter")
        if not isinstance(events, list) or not all(isinstance(event, str) for event in events):
            raise ValueError("a subscription's events must be a list of strings")
        if not isinstance(enabled, bool):
            raise ValueError("a subscription's enabled must be true or false")
        return cls(
            id=str(ident),
            title=data["title"],
            endpoint=data["endpoint"],
            events=tuple(events),
            enabled=enabled,
            filter=filter_ if isinstance(filter_, dict) else None,
        )


def _member(data: object, *path: str) -> object:
    """``data[path[0]][path[1]]...``, or None where a step is missing or not an object."""
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _self_id(data: Mapping[str, Any]) -> str | None:
    href = _member(data, "_links", "self", "href")
    return href.rstrip("/").rsplit("/", 1)[-1] if isinstance(href, str) else None


class SubscriptionsClient:
    """The subscriptions of one Akamai customer. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        customer_id: str,
        credentials: ClientCredentials,
        *,
        http: httpx2.Client,
        caller: ApiCaller,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._root = f"{base_url.rstrip('/')}/{customer_id}"
        self._timeout = timeout
        self._credentials = credentials
        self._http = http
        self._caller = caller
        self._clock = clock
        self._token: tuple[str, float] | None = None  # (token, expires at)
        self._token_lock = threading.Lock()

    def all(self) -> list[Subscription]:
        """Every subscription, following the pages until there is no ``next`` link."""
        url: str | None = f"{self._root}/webhooks/subscriptions?page=1"
        seen: set[str] = set()
        found: list[Subscription] = []
        while url is not None:
            if url in seen or len(seen) >= _MAX_PAGES:
                # Stopping here would return a partial list, and a reconciler would act on it.
                raise CaptureProtocolError("the subscription list's next links go round in circles", endpoint=_LIST)
            seen.add(url)
            body = self._request("GET", url, _LIST)
            embedded = _member(body, "_embedded", "subscriptions")
            if embedded is None and "_embedded" not in body:
                embedded = []  # an empty list may leave out _embedded altogether
            if not isinstance(embedded, list):
                raise CaptureProtocolError("the subscription list has no _embedded.subscriptions array", endpoint=_LIST)
            found.extend(_parse(item, _LIST) for item in embedded)
            following = self._next_page(url, body.get("_links"))
            url = following if embedded else None  # an empty page ends the list whatever it links to
        return found

    def _next_page(self, current: str, links: object) -> str | None:
        if links is None or (isinstance(links, Mapping) and links.get("next") is None):
            return None
        href = _member(links, "next", "href")
        if not isinstance(href, str):
            raise CaptureProtocolError("the subscription list has a malformed _links.next", endpoint=_LIST)
        url = urljoin(current, href)
        # The bearer token goes with the request: never follow a link off the API's own origin.
        if urlsplit(url)[:2] != urlsplit(self._root)[:2]:
            raise CaptureProtocolError(f"the next-page link leaves the API host: {url[:120]}", endpoint=_LIST)
        return url

    def get(self, subscription_id: str) -> Subscription:
        """One subscription; a missing one raises ``CaptureHttpError`` with status 404."""
        return _parse(self._request("GET", self._one(subscription_id), _ONE), _ONE)

    def create(
        self,
        *,
        title: str,
        endpoint: str,
        events: list[str],
        enabled: bool = True,
        filter: dict[str, Any] | None = None,
    ) -> Subscription:
        """Create a subscription (Akamai: title 2-200 characters, unique; https endpoint)."""
        body: dict[str, Any] = {"title": title, "endpoint": endpoint, "events": events, "enabled": enabled}
        if filter is not None:
            body["filter"] = filter
        # Not repeated after a failure that may have reached Akamai: it could create a second one.
        created = self._request("POST", f"{self._root}/webhooks/subscriptions", _LIST, body, idempotent=False)
        return _parse(created, _LIST)

    def update(self, subscription_id: str, changes: Mapping[str, Any]) -> Subscription:
        """Change only the given fields (``PATCH``)."""
        return _parse(self._request("PATCH", self._one(subscription_id), _ONE, dict(changes)), _ONE)

    def delete(self, subscription_id: str) -> None:
        """Remove a subscription."""
        self._request("DELETE", self._one(subscription_id), _ONE, idempotent=False)

    def _one(self, subscription_id: str) -> str:
        # Ids come from Akamai's own answers; quote them anyway so none can change the path.
        return f"{self._root}/webhooks/subscriptions/{quote(subscription_id, safe='')}"

    def _request(
        self, method: str, url: str, endpoint: str, json: dict[str, Any] | None = None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            token = self._bearer()
            response = self._send(method, url, json, token)
            if response.status_code in (401, 403):
                # An expired token is answered 403 (the request did nothing): fetch a new one once and repeat.
                response = self._send(method, url, json, self._bearer(stale=token))
            return _answer(response, endpoint, self._clock())

        return self._caller.call(endpoint, attempt, idempotent=idempotent)

    def _send(self, method: str, url: str, json: dict[str, Any] | None, token: str) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        return send_bounded(self._http, method, url, budget=self._timeout, json=json, headers=headers)

    def _bearer(self, *, stale: str | None = None) -> str:
        """The cached token, or a new one when it expired or equals ``stale`` (refused by the API).

        Threads refused with the same token fetch one new token between them, not one each.
        """
        with self._token_lock:
            now = self._clock()
            if self._token is None or self._token[1] <= now or self._token[0] == stale:
                self._token = self._fetch_token(now)
            return self._token[0]

    def _fetch_token(self, now: float) -> tuple[str, float]:
        response = send_bounded(
            self._http,
            "POST",
            f"{self._root}/login/token",
            budget=self._timeout,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": basic_authorization(self._credentials), "Accept": "application/json"},
        )
        body = _answer(response, _LOGIN, now)
        token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        if not isinstance(token, str) or not token:
            raise CaptureProtocolError("the token answer has no access_token", endpoint=_LOGIN)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise CaptureProtocolError(
                f"the token answer's expires_in is not a positive number: {lifetime!r}", endpoint=_LOGIN
            )
        # Renew a minute early, or halfway through a token that lives less than two minutes.
        return token, now + float(lifetime) - min(_EXPIRY_MARGIN, float(lifetime) / 2)


def _parse(item: Any, endpoint: str) -> Subscription:
    if not isinstance(item, dict):
        raise CaptureProtocolError("a subscription is not a JSON object", endpoint=endpoint)
    try:
        return Subscription.from_json(item)
    except ValueError as exc:
        raise CaptureProtocolError(str(exc), endpoint=endpoint) from exc


def _answer(response: httpx2.Response, endpoint: str, now: float) -> dict[str, Any]:
    if response.status_code == 204:
        return {}
    try:
        body = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        body = None
    if not response.is_success:
        raise CaptureHttpError(
            endpoint=endpoint,
            http_status=response.status_code,
            detail=_problem(body) or answer_excerpt(response),
            retry_after=parse_retry_after(response.headers.get("Retry-After"), now),
        )
    if not isinstance(body, dict):
        raise CaptureProtocolError(
            f"{endpoint} answered HTTP {response.status_code} without a JSON object", endpoint=endpoint
        )
    return body


def _problem(body: Any) -> str:
    # Akamai's error body is not documented beyond its status; take what explains the refusal.
    if not isinstance(body, dict):
        return ""
    parts = [str(body[key]) for key in ("title", "detail", "message", "error", "error_description") if body.get(key)]
    errors = body.get("errors")
    if isinstance(errors, list):
        parts.extend(str(error) for error in errors[:5])
    return "; ".join(parts)[:300]
