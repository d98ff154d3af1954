"""The Akamai side over real HTTP: bearer tokens, the JWK page and the v3 subscription API."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

from simulator.akamai import AkamaiState, akamai_routes
from simulator.config import SimulatorConfig
from tests.support.servers import serve_in_thread

CUSTOMER = "b18fc81d-457e-4a40-ac87-2b78bd946fa2"
PAGE_SIZE = 3
TTL = 60.0


class Clock:
    """A clock the test moves by hand (read from the server's thread)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Akamai:
    """A running Akamai side and a client of it."""

    state: AkamaiState
    clock: Clock
    base_url: str
    http: httpx2.Client

    @property
    def subscriptions_url(self) -> str:
        return f"{self.base_url}/{CUSTOMER}/webhooks/subscriptions"

    def token(self) -> str:
        """A fresh bearer token from the configuration client's credentials."""
        client = self.state.config.config_client
        response = self.http.post(
            f"{self.base_url}/{CUSTOMER}/login/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def authorized(self) -> dict[str, str]:
        """Headers with a fresh bearer token."""
        return {"Authorization": f"Bearer {self.token()}"}

    def create(self, **overrides: Any) -> httpx2.Response:
        """POST a subscription: a valid body unless ``overrides`` change it."""
        body = subscription_body(**overrides)
        return self.http.post(self.subscriptions_url, json=body, headers=self.authorized())


def subscription_body(**overrides: Any) -> dict[str, Any]:
    """A create body as the reference's 6.5 example, with ``overrides``."""
    body: dict[str, Any] = {
        "title": "capture-sync user updates",
        "endpoint": "https://hooks.example.com/akamai/webhooks",
        "events": ["entityCreated", "entityUpdated", "entityDeleted"],
        **overrides,
    }
    return {name: value for name, value in body.items() if value is not None}


@pytest.fixture
def akamai() -> Iterator[Akamai]:
    """The Akamai routes served on a free port, with a hand-moved clock."""
    clock = Clock()
    config = SimulatorConfig(customer_id=CUSTOMER, page_size=PAGE_SIZE, token_ttl=TTL)
    state = AkamaiState(config, clock)
    with serve_in_thread(Starlette(routes=akamai_routes(state))) as base_url, httpx2.Client() as http:
        config.base_url = base_url
        yield Akamai(state, clock, base_url, http)


def test_a_configuration_client_gets_a_bearer_token(akamai: Akamai) -> None:
    """Basic credentials and client_credentials give a Bearer token that lasts the configured TTL."""
    client = akamai.state.config.config_client

    response = akamai.http.post(
        f"{akamai.base_url}/{CUSTOMER}/login/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret),
    )

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 60
    assert len(body["access_token"]) == 64
    listing = akamai.http.get(akamai.subscriptions_url, headers={"Authorization": f"Bearer {body['access_token']}"})
    assert listing.status_code == 200


def basic(client_id: str, secret: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


@pytest.mark.parametrize(
    "headers",
    [
        basic("sim-config-client-000000000000", "wrong-secret"),
        basic("someone-else", "sim-config-secret-0000000000000"),
        {"Authorization": "Basic not-base64!"},
        {},
    ],
    ids=["wrong-secret", "unknown-client", "garbled", "no-credentials"],
)
def test_bad_client_credentials_are_refused_with_401(akamai: Akamai, headers: dict[str, str]) -> None:
    """A wrong secret, an unknown client, a garbled or missing Basic header: 401 invalid_client, no token."""
    response = akamai.http.post(
        f"{akamai.base_url}/{CUSTOMER}/login/token", data={"grant_type": "client_credentials"}, headers=headers
    )

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "access_token" not in response.json()


def test_a_grant_type_other_than_client_credentials_is_400(akamai: Akamai) -> None:
    """Only the client-credentials grant is offered."""
    client = akamai.state.config.config_client

    response = akamai.http.post(
        f"{akamai.base_url}/{CUSTOMER}/login/token",
        data={"grant_type": "password"},
        auth=(client.client_id, client.client_secret),
    )

    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_an_expired_token_is_refused_with_403(akamai: Akamai) -> None:
    """Past its TTL a token gets 403, as Akamai answers; a new one works."""
    headers = akamai.authorized()
    assert akamai.http.get(akamai.subscriptions_url, headers=headers).status_code == 200

    akamai.clock.now += TTL + 1

    response = akamai.http.get(akamai.subscriptions_url, headers=headers)
    assert response.status_code == 403
    assert response.json()["status"] == 403
    assert akamai.http.get(akamai.subscriptions_url, headers=akamai.authorized()).status_code == 200


def test_the_expire_control_expires_every_issued_token(akamai: Akamai) -> None:
    """``POST /__sim/tokens/expire`` makes every token so far answer 403, with no clock change."""
    first, second = akamai.authorized(), akamai.authorized()

    response = akamai.http.post(f"{akamai.base_url}/__sim/tokens/expire")

    assert response.json() == {"expired": 2}
    assert akamai.http.get(akamai.subscriptions_url, headers=first).status_code == 403
    assert akamai.http.get(akamai.subscriptions_url, headers=second).status_code == 403


@pytest.mark.parametrize("authorization", [None, "Bearer unknown-token", "Basic abc"], ids=["none", "unknown", "basic"])
def test_the_subscription_api_needs_a_valid_bearer_token(akamai: Akamai, authorization: str | None) -> None:
    """No bearer token is 401; an unknown one 403."""
    headers = {"Authorization": authorization} if authorization else {}

    response = akamai.http.post(akamai.subscriptions_url, json=subscription_body(), headers=headers)

    assert response.status_code == (403 if authorization == "Bearer unknown-token" else 401)
    assert akamai.state.subscriptions.all() == []


def test_create_answers_201_with_the_subscription(akamai: Akamai) -> None:
    """The stored subscription carries the body, defaults, ids, timestamps and a self link."""
    the_filter = {"properties": {"entityUpdated": {"properties": {"captureApplicationId": {"const": "app"}}}}}

    response = akamai.create(filter=the_filter)

    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "capture-sync user updates"
    assert body["endpoint"] == "https://hooks.example.com/akamai/webhooks"
    assert body["events"] == ["entityCreated", "entityUpdated", "entityDeleted"]
    assert body["enabled"] is True
    assert body["filter"] == the_filter
    assert body["customerId"] == CUSTOMER
    assert body["createdAt"] == body["updatedAt"] == "2023-11-14T22:13:20.000000000Z"
    assert body["_links"] == {"self": {"href": f"{akamai.subscriptions_url}/{body['id']}"}}


def test_the_list_is_paged_with_hal_links(akamai: Akamai) -> None:
    """Seven subscriptions with a page size of three: three pages linked by next and prev."""
    titles = [f"subscription {n}" for n in range(7)]
    for title in titles:
        assert akamai.create(title=title).status_code == 201
    headers = akamai.authorized()

    pages = []
    url: str | None = akamai.subscriptions_url
    while url is not None:
        page = akamai.http.get(url, headers=headers).json()
        pages.append(page)
        url = page["_links"].get("next", {}).get("href")

    assert [len(page["_embedded"]["subscriptions"]) for page in pages] == [3, 3, 1]
    assert [item["title"] for page in pages for item in page["_embedded"]["subscriptions"]] == titles
    assert pages[1]["_links"] == {
        "self": {"href": f"{akamai.subscriptions_url}?page=2"},
        "next": {"href": f"{akamai.subscriptions_url}?page=3"},
        "prev": {"href": f"{akamai.subscriptions_url}?page=1"},
    }
    assert "prev" not in pages[0]["_links"]


@pytest.mark.parametrize("page", ["0", "x", "-1"])
def test_a_page_that_is_not_a_positive_number_is_400(akamai: Akamai, page: str) -> None:
    """Pages count from 1."""
    response = akamai.http.get(akamai.subscriptions_url, params={"page": page}, headers=akamai.authorized())

    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "page", "message": "invalid"}]


def test_get_patch_and_delete_one_subscription(akamai: Akamai) -> None:
    """A PATCH changes only what it names; a DELETE answers 204 and the id is gone."""
    created = akamai.create().json()
    item_url = created["_links"]["self"]["href"]
    headers = akamai.authorized()
    akamai.clock.now += 5

    assert akamai.http.get(item_url, headers=headers).json() == created
    patched = akamai.http.patch(item_url, json={"enabled": False, "events": ["entityDeleted"]}, headers=headers)

    assert patched.status_code == 200
    assert patched.json() == {
        **created,
        "enabled": False,
        "events": ["entityDeleted"],
        "updatedAt": "2023-11-14T22:13:25.000000000Z",
    }
    assert akamai.http.delete(item_url, headers=headers).status_code == 204
    assert akamai.http.get(item_url, headers=headers).status_code == 404
    assert akamai.http.delete(item_url, headers=headers).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": "x"}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"endpoint": "http://hooks.example.com/akamai/webhooks"}, "endpoint"),
        ({"endpoint": "https://10.1.2.3/hooks"}, "endpoint"),
        ({"endpoint": "hooks.example.com"}, "endpoint"),
        ({"events": ["userCredentialUpdated"]}, "events"),
        ({"events": []}, "events"),
        ({"enabled": "yes"}, "enabled"),
        ({"filter": "entityUpdated"}, "filter"),
        ({"colour": "blue"}, "colour"),
    ],
    ids=[
        "title-1-char",
        "title-201-chars",
        "http-on-public-host",
        "private-address",
        "not-a-url",
        "unsubscribable-event",
        "no-events",
        "enabled-not-bool",
        "filter-not-object",
        "unknown-member",
    ],
)
def test_invalid_create_bodies_are_400_naming_the_field(akamai: Akamai, overrides: dict[str, Any], field: str) -> None:
    """Each schema violation is refused with a problem document that names the field."""
    response = akamai.create(**overrides)

    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400
    assert body["title"] == "Bad Request"
    assert [error["field"] for error in body["errors"]] == [field]
    assert akamai.state.subscriptions.all() == []


def test_a_create_body_without_required_members_names_each(akamai: Akamai) -> None:
    """title, endpoint and events are required."""
    response = akamai.http.post(akamai.subscriptions_url, json={"enabled": True}, headers=akamai.authorized())

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "title", "message": "required"},
        {"field": "endpoint", "message": "required"},
        {"field": "events", "message": "required"},
    ]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000/hooks", "http://localhost/hooks", "https://[::1]/hooks"])
def test_a_loopback_endpoint_is_accepted_for_local_tests(akamai: Akamai, endpoint: str) -> None:
    """Unlike Akamai, the simulator lets a local receiver subscribe, over http too."""
    response = akamai.create(endpoint=endpoint)

    assert response.status_code == 201
    assert response.json()["endpoint"] == endpoint


def test_a_patch_is_validated_like_a_create(akamai: Akamai) -> None:
    """A PATCH with a 1-character title is 400 and changes nothing."""
    created = akamai.create().json()
    headers = akamai.authorized()

    response = akamai.http.patch(created["_links"]["self"]["href"], json={"title": "x"}, headers=headers)

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "title"
    assert akamai.state.subscriptions.get(created["id"])["title"] == "capture-sync user updates"


def test_a_duplicate_title_is_409(akamai: Akamai) -> None:
    """Titles are unique per customer, on create and on PATCH."""
    akamai.create()
    other = akamai.create(title="another one").json()

    duplicate = akamai.create()
    renamed = akamai.http.patch(
        other["_links"]["self"]["href"], json={"title": "capture-sync user updates"}, headers=akamai.authorized()
    )

    assert duplicate.status_code == 409
    assert renamed.status_code == 409
    assert len(akamai.state.subscriptions.all()) == 2


def test_an_unknown_subscription_or_customer_is_404(akamai: Akamai) -> None:
    """An id never created, or another customer's path, is 404."""
    headers = akamai.authorized()

    unknown_id = akamai.http.get(f"{akamai.subscriptions_url}/no-such-id", headers=headers)
    other_customer = akamai.http.get(f"{akamai.base_url}/other-customer/webhooks/subscriptions", headers=headers)
    other_jwk = akamai.http.get(f"{akamai.base_url}/other-customer/login/jwk")

    assert (unknown_id.status_code, other_customer.status_code, other_jwk.status_code) == (404, 404, 404)


def test_the_jwk_page_serves_the_key_ring(akamai: Akamai) -> None:
    """``GET /{customerId}/login/jwk`` is the JWK Set of the state's keys."""
    response = akamai.http.get(f"{akamai.base_url}/{CUSTOMER}/login/jwk")

    assert response.status_code == 200
    keys = response.json()["keys"]
    assert [key["kid"] for key in keys] == [key.kid for key in akamai.state.keys.published]
    assert len(keys) == 3
    assert {tuple(sorted(key)) for key in keys} == {("alg", "e", "kid", "kty", "n", "use")}


def test_the_rotate_control_publishes_a_new_key(akamai: Akamai) -> None:
    """A rotation adds a key (and signs with it); ``retire_oldest`` also withdraws the oldest."""
    jwk_url = f"{akamai.base_url}/{CUSTOMER}/login/jwk"
    before = [key["kid"] for key in akamai.http.get(jwk_url).json()["keys"]]

    added = akamai.http.post(f"{akamai.base_url}/__sim/keys/rotate").json()
    retired = akamai.http.post(f"{akamai.base_url}/__sim/keys/rotate", json={"retire_oldest": True}).json()

    added_kids = [key["kid"] for key in added["keys"]]
    retired_kids = [key["kid"] for key in retired["keys"]]
    assert added_kids[:3] == before
    assert len(added_kids) == 4
    assert retired_kids[:3] == added_kids[1:]
    assert len(retired_kids) == 4
    assert akamai.state.keys.signing_key.kid == retired_kids[-1]
    assert [key["kid"] for key in akamai.http.get(jwk_url).json()["keys"]] == retired_kids


def test_the_rotate_control_refuses_a_bad_body(akamai: Akamai) -> None:
    """``retire_oldest`` must be a boolean; nothing rotates otherwise."""
    response = akamai.http.post(f"{akamai.base_url}/__sim/keys/rotate", json={"retire_oldest": "yes"})

    assert response.status_code == 400
    assert len(akamai.state.keys.published) == 3


def test_the_subscriptions_control_lists_everything_unpaged(akamai: Akamai) -> None:
    """``GET /__sim/subscriptions`` needs no token and ignores the page size."""
    for n in range(PAGE_SIZE + 2):
        akamai.create(title=f"subscription {n}")

    response = akamai.http.get(f"{akamai.base_url}/__sim/subscriptions")

    assert [item["title"] for item in response.json()["subscriptions"]] == [f"subscription {n}" for n in range(5)]
