"""POST /webhooks/capture/legacy through the real app and a real Redis."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.conftest import LEGACY_HASH, SettingsFactory

LEGACY = "/webhooks/capture/legacy"
UUID_A = "6b004bc5-179c-45c2-815d-31b06169371d"
UUID_B = "726087ec-35df-4041-aec8-c11ecc208efa"


def element(uuid: Any = UUID_A, **fields: Any) -> dict[str, Any]:
    """One element as Janrain sends it (§6.3 of the protocol reference)."""
    return {
        "uuid": uuid,
        "datetime": "2024-05-01 12:34:56.123456 +0000",
        "entityType": "user",
        "hash": LEGACY_HASH,
        **fields,
    }


def post(settings: Settings, body: Any, **kwargs: Any) -> Any:
    with TestClient(create_app(settings)) as client:
        return client.post(LEGACY, json=body, **kwargs)


def jobs(connection: redis.Redis) -> list[dict[str, Any]]:
    queue = Queue("capture-events", connection=connection, serializer=JSONSerializer)
    return [job.args[0] for job in queue.jobs]


def test_batch_becomes_one_job_per_element(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    """A batch of two is answered 200 (Janrain retries anything else) and stored as two events."""
    body = [element(UUID_A), element(UUID_B, datetime="2024-05-01 12:34:57.000001 +0000")]

    response = post(make_settings(), body)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    stored = jobs(redis_client)
    assert [event["uuid"] for event in stored] == [UUID_A, UUID_B]
    assert stored[0]["occurred_at"] == pytest.approx(1714566896.123456)
    assert {event["source"] for event in stored} == {"legacy"}


def test_retried_batch_is_a_duplicate(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    """Janrain retries a batch it thinks failed; the retry is a 200 duplicate and stores nothing."""
    body = [element(UUID_A), element(UUID_B)]

    with TestClient(create_app(make_settings())) as client:
        first = client.post(LEGACY, json=body)
        second = client.post(LEGACY, json=body)

    assert (first.json()["status"], second.json()["status"]) == ("accepted", "duplicate")
    assert (first.status_code, second.status_code) == (200, 200)
    assert len(jobs(redis_client)) == 2


def test_partially_seen_batch_stores_the_new_elements(
    make_settings: SettingsFactory, redis_client: redis.Redis
) -> None:
    """Elements already accepted are skipped; the new ones in the same batch are stored."""
    with TestClient(create_app(make_settings())) as client:
        client.post(LEGACY, json=[element(UUID_A)])
        response = client.post(LEGACY, json=[element(UUID_A), element(UUID_B)])

    assert response.status_code == 200
    assert response.json()["duplicates"] == 1
    assert [event["uuid"] for event in jobs(redis_client)] == [UUID_A, UUID_B]


def test_minimal_janrain_body(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    """Janrain's own tools send only uuid (and the hash); that is enough."""
    response = post(make_settings(), [{"uuid": UUID_A, "hash": LEGACY_HASH}])

    assert response.status_code == 200
    assert jobs(redis_client)[0]["type"] == "entityUpdated"


def test_empty_batch(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    """An empty array is acknowledged with 200 and stores nothing."""
    response = post(make_settings(), [])

    assert (response.status_code, response.json()["status"]) == (200, "empty")
    assert redis_client.dbsize() == 0


def test_one_bad_hash_refuses_the_whole_batch(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    """The batch is accepted or refused as a whole: one wrong hash stores nothing."""
    body = [element(UUID_A), element(UUID_B, hash="0" * 40)]

    response = post(make_settings(), body)

    assert response.status_code == 401
    assert response.json() == {
        "status": "rejected",
        "reason": "hash_mismatch",
        "detail": "[1].hash: does not match a configured hash",
    }
    assert redis_client.dbsize() == 0


def test_missing_hash_is_401(make_settings: SettingsFactory) -> None:
    """With callback hashes configured an element without one is not authentic."""
    response = post(make_settings(), [{"uuid": UUID_A}])

    assert (response.status_code, response.json()["reason"]) == (401, "hash_missing")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"uuid": UUID_A}, "the body must be a JSON array of objects"),
        ([element(), "x"], "[1]: must be a JSON object"),
        ([element(), {"hash": LEGACY_HASH}], "[1].uuid: field required"),
        ([element(uuid=42)], "[0].uuid: must be a string of 1 to 128 characters"),
    ],
    ids=["object-not-array", "element-not-object", "missing-uuid", "uuid-not-string"],
)
def test_malformed_batch_names_index_and_field(
    make_settings: SettingsFactory, redis_client: redis.Redis, body: Any, detail: str
) -> None:
    """A 400 says which element and which field is wrong, and nothing is stored."""
    response = post(make_settings(), body)

    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert redis_client.dbsize() == 0


def test_not_json_is_400(make_settings: SettingsFactory) -> None:
    """A body that is not JSON is a 400."""
    with TestClient(create_app(make_settings())) as client:
        response = client.post(LEGACY, content=b"uuid=1", headers={"Content-Type": "application/json"})

    assert (response.status_code, response.json()["reason"]) == (400, "body_malformed")


def test_form_encoded_is_415(make_settings: SettingsFactory) -> None:
    """A form post is refused as an unsupported media type."""
    with TestClient(create_app(make_settings())) as client:
        response = client.post(LEGACY, data={"uuid": UUID_A})

    assert response.status_code == 415


def test_off_when_not_configured(make_settings: SettingsFactory) -> None:
    """Without sources.legacy the route is off (404); a legacy section without credentials does not validate."""
    settings = make_settings(sources={"v3": {"jwks_url": "https://v1.api.us.janrain.com/x/login/jwk"}})

    response = post(settings, [element()])

    assert (response.status_code, response.json()["reason"]) == (404, "source_disabled")


class TestBasicAuth:
    @pytest.fixture
    def settings(self, make_settings: SettingsFactory) -> Settings:
        """Legacy source protected by HTTP Basic only."""
        return make_settings(sources={"legacy": {"basic_auth": {"username": "janrain", "password": "s3cret-pw"}}})

    @staticmethod
    def _auth(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def test_right_credentials(self, settings: Settings, redis_client: redis.Redis) -> None:
        """The right user and password are accepted, without any hash in the body."""
        response = post(settings, [{"uuid": UUID_A}], headers=self._auth("janrain", "s3cret-pw"))

        assert response.status_code == 200

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Authorization": "Bearer x"}, {"Authorization": "Basic !!!"}],
        ids=["none", "bearer", "not-base64"],
    )
    def test_missing_or_malformed(self, settings: Settings, redis_client: redis.Redis, headers: dict[str, str]) -> None:
        """No or malformed credentials are a 401 that asks for Basic."""
        response = post(settings, [{"uuid": UUID_A}], headers=headers)

        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="capture-relay"'
        assert redis_client.dbsize() == 0

    def test_wrong_password(self, settings: Settings, redis_client: redis.Redis) -> None:
        """A wrong password is a 401 that stores nothing."""
        response = post(settings, [{"uuid": UUID_A}], headers=self._auth("janrain", "guess"))

        assert (response.status_code, response.json()["reason"]) == (401, "basic_auth_invalid")
        assert redis_client.dbsize() == 0

    def test_both_checks_when_both_configured(self, make_settings: SettingsFactory) -> None:
        """With a hash and Basic configured, both must pass."""
        settings = make_settings(
            sources={"legacy": {"callback_hashes": [LEGACY_HASH], "basic_auth": {"username": "u", "password": "p"}}}
        )

        without_hash = post(settings, [{"uuid": UUID_A}], headers=self._auth("u", "p"))
        without_basic = post(settings, [element()])

        assert (without_hash.status_code, without_basic.status_code) == (401, 401)


def test_batch_over_the_element_limit_is_413(make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
    """A batch longer than ingest.max_batch_size is refused whole, naming the limit."""
    settings = make_settings(ingest={"max_batch_size": 3})

    response = post(settings, [element(f"uuid-{index}") for index in range(4)])

    assert response.status_code == 413
    assert response.json()["detail"] == "the batch has 4 elements; ingest.max_batch_size is 3"
    assert redis_client.dbsize() == 0
