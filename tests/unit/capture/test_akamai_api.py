"""SubscriptionsClient against a MockTransport that plays Akamai's v3 subscription API (protocol §3.6, §6.5)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from service.secret import Secret
from tests.unit.capture.akamai_server import (
    API_URL,
    CONFIG_CLIENT_ID,
    CONFIG_CLIENT_SECRET,
    CUSTOMER_ID,
    SUBSCRIPTIONS_PATH,
    ApiCall,
    FakeAkamai,
    subscription,
)
from tests.unit.capture.fakes import FakeClock
from workers.akamai_api import Subscription, SubscriptionsClient
from workers.capture_auth import ClientCredentials
from workers.capture_calls import ApiCaller, RetryPolicy
from workers.capture_errors import CaptureHttpError, CaptureProtocolError

NOW = 1_714_564_800.0  # 2024-05-01 12:00:00 UTC
LIST_URL = API_URL + SUBSCRIPTIONS_PATH
FILTER = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "properties": {"entityUpdated": {"properties": {"captureApplicationId": {"const": "zzyn9gy9r8xdy5zkru4y54syk6"}}}},
}


@dataclass
class World:
    """A client, the fake Akamai it talks to, the retry clock and the wall clock its token expiry reads."""

    client: SubscriptionsClient
    server: FakeAkamai
    clock: FakeClock
    wall: list[float]


@pytest.fixture
def world() -> Iterator[World]:
    """A SubscriptionsClient on the fake API, with retries that wait on a fake clock."""
    clock = FakeClock()
    wall = [NOW]
    server = FakeAkamai()
    caller = ApiCaller(
        policy=RetryPolicy(deadline=30.0),
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        rng=random.Random(5),
    )
    with httpx2.Client(transport=server.transport()) as http:
        client = SubscriptionsClient(
            API_URL + "/",
            CUSTOMER_ID,
            ClientCredentials(CONFIG_CLIENT_ID, Secret(CONFIG_CLIENT_SECRET)),
            http=http,
            caller=caller,
            clock=lambda: wall[0],
        )
        yield World(client, server, clock, wall)


def _ok(status: int = 200, **body: Any) -> httpx2.Response:
    return httpx2.Response(status, json=body)


class TestToken:
    def test_first_call_fetches_a_token_then_uses_it(self, world: World) -> None:
        """The token comes from /{customer}/login/token (checked by the fake) and is sent as a bearer."""
        world.server.answers.append(_ok(**subscription("s-1")))

        world.client.get("s-1")

        assert world.server.token_requests == 1
        assert world.server.tokens == ["token-1"]

    def test_token_is_cached_across_calls(self, world: World) -> None:
        """Several calls within the hour share one token."""
        world.server.responder = lambda call: _ok(**subscription("s-1"))

        for _ in range(3):
            world.client.get("s-1")
        world.client.delete("s-1")

        assert world.server.token_requests == 1
        assert world.server.tokens == ["token-1"] * 4

    def test_refreshed_60_seconds_before_expiry(self, world: World) -> None:
        """A token is used until expires_in - 60 s and replaced from then on."""
        world.server.responder = lambda call: _ok(**subscription("s-1"))
        world.client.get("s-1")

        world.wall[0] = NOW + 3539.9
        world.client.get("s-1")
        world.wall[0] = NOW + 3540.0
        world.client.get("s-1")

        assert world.server.token_requests == 2
        assert world.server.tokens == ["token-1", "token-1", "token-2"]

    def test_short_lifetime_is_honoured(self, world: World) -> None:
        """A token announced for 120 s is replaced after 60 s."""
        world.server.expires_in = 120
        world.server.responder = lambda call: _ok(**subscription("s-1"))
        world.client.get("s-1")

        world.wall[0] = NOW + 59.0
        world.client.get("s-1")
        world.wall[0] = NOW + 60.0
        world.client.get("s-1")

        assert world.server.tokens == ["token-1", "token-1", "token-2"]

    def test_403_refreshes_once_and_repeats_the_call(self, world: World) -> None:
        """A token the server no longer accepts is replaced once and the call repeated with the new one."""
        world.server.responder = lambda call: _ok(**subscription("s-1"))
        world.client.get("s-1")
        world.server.expire_tokens()

        found = world.client.get("s-1")

        assert found.id == "s-1"
        assert world.server.token_requests == 2
        assert world.server.tokens == ["token-1", "token-1", "token-2"]
        assert world.clock.sleeps == []

    def test_second_403_raises(self, world: World) -> None:
        """When the fresh token is refused too, CaptureHttpError 403 surfaces, not retried further."""
        world.server.forbidden = True

        with pytest.raises(CaptureHttpError) as caught:
            world.client.get("s-1")

        assert (caught.value.http_status, caught.value.retryable) == (403, False)
        assert caught.value.detail == "Forbidden; the access token is not valid"
        assert world.server.tokens == ["token-1", "token-2"]

    def test_token_endpoint_refusal(self, world: World) -> None:
        """Wrong configuration-client credentials surface as the token endpoint's HTTP error."""
        wrong = ClientCredentials(CONFIG_CLIENT_ID, Secret("not-the-secret"))
        caller = ApiCaller(policy=RetryPolicy(deadline=1.0), sleep=world.clock.sleep, monotonic=world.clock.monotonic)

        with httpx2.Client(transport=world.server.transport()) as http, pytest.raises(CaptureHttpError) as caught:
            SubscriptionsClient(API_URL, CUSTOMER_ID, wrong, http=http, caller=caller).get("s-1")

        assert (caught.value.http_status, caught.value.endpoint, caught.value.detail) == (
            401,
            "v3:/login/token",
            "invalid_client",
        )
        assert world.server.token_requests == 0
        assert world.server.calls == []

    @pytest.mark.parametrize("expires_in", [pytest.param("soon", id="string"), pytest.param(None, id="null")])
    def test_token_answer_without_lifetime(self, world: World, expires_in: object) -> None:
        """A token answer whose expires_in is not a number is a protocol error."""
        world.server.expires_in = expires_in

        with pytest.raises(CaptureProtocolError, match="expires_in"):
            world.client.get("s-1")


def _page(number: int, items: list[dict[str, Any]], next_href: str | None) -> httpx2.Response:
    links: dict[str, Any] = {"self": {"href": f"{SUBSCRIPTIONS_PATH}?page={number}"}}
    if next_href is not None:
        links["next"] = {"href": next_href}
    return _ok(_embedded={"subscriptions": items}, _links=links, total=5)


def _page_number(call: ApiCall) -> int:
    return int(parse_qs(urlsplit(call.url).query)["page"][0])


class TestAll:
    def test_follows_relative_and_absolute_next_links(self, world: World) -> None:
        """Page 1 links to page 2 relatively, page 2 to page 3 absolutely, page 3 has no next."""
        pages = {
            1: _page(1, [subscription("s-1"), subscription("s-2")], f"{SUBSCRIPTIONS_PATH}?page=2"),
            2: _page(2, [subscription("s-3"), subscription("s-4")], f"{LIST_URL}?page=3"),
            3: _page(3, [subscription("s-5")], None),
        }
        world.server.responder = lambda call: pages[_page_number(call)]

        found = world.client.all()

        assert [item.id for item in found] == ["s-1", "s-2", "s-3", "s-4", "s-5"]
        assert [(call.method, call.url) for call in world.server.calls] == [
            ("GET", f"{LIST_URL}?page=1"),
            ("GET", f"{LIST_URL}?page=2"),
            ("GET", f"{LIST_URL}?page=3"),
        ]

    def test_a_loop_is_an_error_not_a_partial_list(self, world: World) -> None:
        """A next link back to a page already read is refused: a partial list would mislead a reconciler."""
        pages = {
            1: _page(1, [subscription("s-1")], f"{SUBSCRIPTIONS_PATH}?page=2"),
            2: _page(2, [subscription("s-2")], f"{SUBSCRIPTIONS_PATH}?page=1"),
        }
        world.server.responder = lambda call: pages[_page_number(call)]

        with pytest.raises(CaptureProtocolError, match="round in circles"):
            world.client.all()

        assert len(world.server.calls) == 2

    def test_stops_on_an_empty_page(self, world: World) -> None:
        """An empty page ends the walk even if it links further."""
        world.server.answers.append(_page(1, [], f"{SUBSCRIPTIONS_PATH}?page=2"))

        assert world.client.all() == []
        assert len(world.server.calls) == 1

    def test_no_embedded_is_an_empty_list(self, world: World) -> None:
        """A list answer without _embedded has no subscriptions."""
        world.server.answers.append(_ok(_links={}))

        assert world.client.all() == []

    def test_embedded_not_a_list(self, world: World) -> None:
        """_embedded.subscriptions that is not an array is a protocol error."""
        world.server.answers.append(_ok(_embedded={"subscriptions": {"id": "s-1"}}))

        with pytest.raises(CaptureProtocolError, match=r"_embedded\.subscriptions"):
            world.client.all()

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({"_embedded": ["s-1"]}, id="embedded-list"),
            pytest.param({"_embedded": {"subscriptions": []}, "_links": {"next": "?page=2"}}, id="next-string"),
            pytest.param({"_embedded": {"subscriptions": []}, "_links": ["next"]}, id="links-list"),
        ],
    )
    def test_malformed_hal_is_a_protocol_error(self, world: World, body: dict[str, Any]) -> None:
        """HAL parts of the wrong JSON type are refused as CaptureProtocolError."""
        world.server.answers.append(_ok(**body))

        with pytest.raises(CaptureProtocolError):
            world.client.all()

    def test_item_without_title(self, world: World) -> None:
        """A subscription without a title is a protocol error, not a half-filled object."""
        item = subscription("s-1")
        del item["title"]
        world.server.answers.append(_page(1, [item], None))

        with pytest.raises(CaptureProtocolError, match="title"):
            world.client.all()


class TestOne:
    def test_get(self, world: World) -> None:
        """``get`` reads /subscriptions/{id} and parses every field."""
        world.server.answers.append(_ok(**subscription("s-1", filter=FILTER, enabled=False)))

        found = world.client.get("s-1")

        assert found == Subscription(
            id="s-1",
            title="capture-relay",
            endpoint="https://hooks.example.com/akamai/webhooks",
            events=("entityCreated", "entityUpdated", "entityDeleted"),
            enabled=False,
            filter=FILTER,
        )
        assert [(call.method, call.url, call.body) for call in world.server.calls] == [("GET", f"{LIST_URL}/s-1", None)]

    def test_id_is_quoted_into_one_path_segment(self, world: World) -> None:
        """An id with a slash cannot reach another path."""
        world.server.answers.append(_ok(**subscription("a/../b")))

        world.client.get("a/../b")

        assert world.server.calls[0].url == f"{LIST_URL}/a%2F..%2Fb"

    def test_id_from_the_self_link(self, world: World) -> None:
        """Without an id field the id is the last segment of _links.self.href."""
        item = subscription("ignored")
        del item["id"]
        item["_links"] = {"self": {"href": f"{LIST_URL}/9c1f7e2a-0000-4000-8000-000000000001/"}}
        world.server.answers.append(_ok(**item))

        found = world.client.get("9c1f7e2a-0000-4000-8000-000000000001")

        assert found.id == "9c1f7e2a-0000-4000-8000-000000000001"

    def test_malformed_self_link_is_a_protocol_error(self, world: World) -> None:
        """Without id, a _links.self that is not an object is refused as CaptureProtocolError."""
        item = subscription("s-1")
        del item["id"]
        item["_links"] = {"self": f"{LIST_URL}/s-1"}
        world.server.answers.append(_ok(**item))

        with pytest.raises(CaptureProtocolError):
            world.client.get("s-1")

    def test_defaults_of_a_sparse_object(self, world: World) -> None:
        """A subscription without events, enabled or filter reads as no events, enabled, no filter."""
        world.server.answers.append(_ok(id="s-9", title="t9", endpoint="https://hooks.example.com/x"))

        found = world.client.get("s-9")

        assert (found.events, found.enabled, found.filter) == ((), True, None)

    def test_create_with_filter(self, world: World) -> None:
        """``create`` POSTs title, endpoint, events, enabled and filter as JSON and reads the 201 answer."""
        events = ["entityCreated", "entityUpdated", "entityDeleted"]
        world.server.answers.append(_ok(201, **subscription("s-new", title="capture-sync user updates")))

        created = world.client.create(
            title="capture-sync user updates",
            endpoint="https://hooks.example.com/akamai/webhooks",
            events=events,
            filter=FILTER,
        )

        assert created.id == "s-new"
        assert [(call.method, call.url, call.body) for call in world.server.calls] == [
            (
                "POST",
                LIST_URL,
                {
                    "title": "capture-sync user updates",
                    "endpoint": "https://hooks.example.com/akamai/webhooks",
                    "events": events,
                    "enabled": True,
                    "filter": FILTER,
                },
            )
        ]

    def test_create_without_filter(self, world: World) -> None:
        """Without a filter the body has no filter key; enabled=False is sent as false."""
        world.server.answers.append(_ok(201, **subscription("s-new")))

        world.client.create(title="t2", endpoint="https://h.example.com/x", events=["entityDeleted"], enabled=False)

        assert world.server.calls[0].body == {
            "title": "t2",
            "endpoint": "https://h.example.com/x",
            "events": ["entityDeleted"],
            "enabled": False,
        }

    def test_update_patches_only_the_changes(self, world: World) -> None:
        """``update`` sends a PATCH whose body is exactly the changes."""
        world.server.answers.append(_ok(**subscription("s-1", enabled=False)))

        updated = world.client.update("s-1", {"enabled": False})

        assert updated.enabled is False
        assert [(call.method, call.url, call.body) for call in world.server.calls] == [
            ("PATCH", f"{LIST_URL}/s-1", {"enabled": False})
        ]

    def test_delete(self, world: World) -> None:
        """``delete`` sends a DELETE without body and accepts 204."""
        world.server.answers.append(httpx2.Response(204))

        result = world.client.delete("s-1")  # type: ignore[func-returns-value]

        assert result is None
        assert [(call.method, call.url, call.body) for call in world.server.calls] == [
            ("DELETE", f"{LIST_URL}/s-1", None)
        ]


class TestErrors:
    @pytest.mark.parametrize(
        ("status", "body", "detail"),
        [
            pytest.param(
                400,
                {"title": "Bad Request", "errors": ["title: too short", "events[0]: not allowed"]},
                "Bad Request; title: too short; events[0]: not allowed",
                id="400-validation",
            ),
            pytest.param(404, {"title": "Not Found"}, "Not Found", id="404"),
            pytest.param(
                409,
                {"message": "a subscription with this title exists"},
                "a subscription with this title exists",
                id="409",
            ),
        ],
    )
    def test_client_errors(self, world: World, status: int, body: dict[str, Any], detail: str) -> None:
        """400, 404 and 409 raise CaptureHttpError with the status and a detail from the body, without retry."""
        world.server.answers.append(httpx2.Response(status, json=body))

        with pytest.raises(CaptureHttpError) as caught:
            world.client.create(title="x", endpoint="https://h.example.com/x", events=["entityCreated"])

        assert (caught.value.http_status, caught.value.detail, caught.value.retryable) == (status, detail, False)
        assert len(world.server.calls) == 1

    def test_detail_from_a_non_json_body(self, world: World) -> None:
        """A body that is not JSON gives its text, whitespace collapsed."""
        world.server.answers.append(httpx2.Response(404, text="<h1>Not\n   Found</h1>"))

        with pytest.raises(CaptureHttpError) as caught:
            world.client.get("s-1")

        assert caught.value.detail == "<h1>Not Found</h1>"

    def test_429_with_retry_after_is_retried(self, world: World) -> None:
        """A 429 waits the Retry-After and repeats the call with the same token."""
        world.server.answers += [
            httpx2.Response(429, json={"title": "Too Many Requests"}, headers={"Retry-After": "3"}),
            _ok(**subscription("s-1")),
        ]

        found = world.client.get("s-1")

        assert found.id == "s-1"
        assert world.clock.sleeps == [3.0]
        assert world.server.tokens == ["token-1", "token-1"]

    def test_5xx_is_retried(self, world: World) -> None:
        """A 503 is retried after a backoff."""
        world.server.answers += [httpx2.Response(503, text="unavailable"), _ok(**subscription("s-1"))]

        assert world.client.get("s-1").id == "s-1"
        assert len(world.clock.sleeps) == 1

    def test_success_without_json_object(self, world: World) -> None:
        """A 200 whose body is not a JSON object is a protocol error."""
        world.server.answers.append(httpx2.Response(200, json=["s-1"]))

        with pytest.raises(CaptureProtocolError):
            world.client.get("s-1")
