"""POST /webhooks/capture/v3 through the real app, a real Redis and a JWKS served over HTTP."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from starlette.testclient import TestClient

from service.app import create_app
from service.intake import dedup_key
from service.normalize import event_from_claims
from tests.conftest import SettingsFactory
from tests.support.servers import JwksEndpoint
from tests.support.tokens import AUDIENCE, SigningKey, claims, sign, unsigned

V3 = "/webhooks/capture/v3"
SET_TYPE = {"Content-Type": "application/secevent+jwt"}


def _queue(connection: redis.Redis) -> Queue:
    return Queue("capture-events", connection=connection, serializer=JSONSerializer)


class TestAccepted:
    def test_valid_token_is_stored_as_one_job(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
    ) -> None:
        """A valid SET is answered 202 and becomes one RQ job that holds only the envelope."""
        payload = claims()
        event_id = payload["events"]["entityUpdated"]["id"]

        with TestClient(create_app(make_settings())) as client:
            response = client.post(V3, content=sign(payload, signing_key), headers=SET_TYPE)

        assert response.status_code == 202, response.text
        assert response.json() == {"status": "accepted", "event_ids": [event_id], "duplicates": 0}
        queue = _queue(redis_client)
        assert queue.job_ids == [f"event-v3-{event_id}"]
        job = queue.jobs[0]
        assert job.func_name == "workers.pipeline.process_event"
        assert job.args[0]["delivery_id"] == payload["jti"]
        assert job.args[0]["attributes"] == ["email", "primaryAddress.city"]
        assert job.description == f"process_event v3 {event_id}"
        assert (job.result_ttl, job.failure_ttl, job.timeout) == (3600, 14 * 86400, 600)

    def test_job_is_json_not_pickle(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
    ) -> None:
        """The job payload in Redis is JSON, so no pickle is ever loaded from Redis."""
        payload = claims()

        with TestClient(create_app(make_settings())) as client:
            client.post(V3, content=sign(payload, signing_key), headers=SET_TYPE)

        job_id = _queue(redis_client).job_ids[0]
        raw = redis_client.hget(Job.key_for(job_id), "data")
        assert isinstance(raw, bytes)
        function, _instance, args, _kwargs = json.loads(zlib.decompress(raw))
        assert function == "workers.pipeline.process_event"
        assert args[0]["delivery_id"] == payload["jti"]

    @pytest.mark.parametrize(
        "content_type", ["application/secevent+jwt", "application/jwt", "text/plain; charset=utf-8"]
    )
    def test_accepted_content_types(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis, content_type: str
    ) -> None:
        """Each content type Akamai or a proxy may use is accepted."""
        token = sign(claims(), signing_key) + "\n"

        with TestClient(create_app(make_settings())) as client:
            response = client.post(V3, content=token, headers={"Content-Type": content_type})

        assert response.status_code == 202, response.text

    def test_redelivery_is_a_duplicate(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
    ) -> None:
        """The same token twice: 202, then 200 duplicate, and still one job."""
        token = sign(claims(), signing_key)

        with TestClient(create_app(make_settings())) as client:
            first = client.post(V3, content=token, headers=SET_TYPE)
            second = client.post(V3, content=token, headers=SET_TYPE)

        assert (first.status_code, second.status_code) == (202, 200)
        assert second.json()["status"] == "duplicate"
        assert _queue(redis_client).count == 1

    def test_dedup_marker_outlives_max_age(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
    ) -> None:
        """The dedup marker is kept at least max_age (48 h), the window in which Akamai retries."""
        payload = claims()

        with TestClient(create_app(make_settings())) as client:
            client.post(V3, content=sign(payload, signing_key), headers=SET_TYPE)

        event = event_from_claims(payload, 0.0)
        assert redis_client.ttl(dedup_key(event)) >= 48 * 3600

    def test_test_event_is_acknowledged(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
    ) -> None:
        """A `test` notification is verified and stored like any other (routing decides later)."""
        token = sign(claims("test"), signing_key)

        with TestClient(create_app(make_settings())) as client:
            response = client.post(V3, content=token, headers=SET_TYPE)

        assert response.status_code == 202
        assert _queue(redis_client).jobs[0].args[0]["type"] == "test"

    def test_rotated_key_is_fetched_once(
        self,
        make_settings: SettingsFactory,
        jwks: tuple[JwksEndpoint, str],
        signing_key: SigningKey,
        redis_client: redis.Redis,
    ) -> None:
        """After Capture rotates keys, a token with the new kid triggers one refetch and verifies;
        within the cool-down it is answered 503 (retry), never 401, so the event is not lost."""
        endpoint, _ = jwks
        new_key = SigningKey.generate("kid-rotated")
        settings = make_settings(v3={"jwks_refresh_cooldown": 0})
        throttled = make_settings()

        with TestClient(create_app(throttled)) as client:
            assert client.post(V3, content=sign(claims(), signing_key), headers=SET_TYPE).status_code == 202
            endpoint.keys = [signing_key.public_jwk, new_key.public_jwk]
            early = client.post(V3, content=sign(claims(), new_key), headers=SET_TYPE)
        with TestClient(create_app(settings)) as client:
            endpoint.keys = [signing_key.public_jwk]
            assert client.post(V3, content=sign(claims(), signing_key), headers=SET_TYPE).status_code == 202
            endpoint.keys = [signing_key.public_jwk, new_key.public_jwk]
            response = client.post(V3, content=sign(claims(), new_key), headers=SET_TYPE)

        assert early.status_code == 503
        assert response.status_code == 202
        assert endpoint.fetches == 3


def _post(make_settings: SettingsFactory, body: str | bytes, headers: dict[str, str] | None = None) -> Any:
    with TestClient(create_app(make_settings())) as client:
        return client.post(V3, content=body, headers=SET_TYPE if headers is None else headers)


class TestRefused:
    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            ({"aud": ["https://elsewhere.example.com/hook"]}, "aud_mismatch"),
            ({"iss": "https://v1.api.eu.janrain.com/other/webhooks"}, "iss_mismatch"),
            ({"iat": int(time.time()) - 49 * 3600}, "iat_too_old"),
            ({"iat": int(time.time()) + 3600}, "iat_in_future"),
        ],
        ids=["wrong-aud", "wrong-iss", "expired", "future-iat"],
    )
    def test_claim_checks_answer_401(
        self,
        make_settings: SettingsFactory,
        signing_key: SigningKey,
        redis_client: redis.Redis,
        overrides: dict[str, Any],
        reason: str,
    ) -> None:
        """A correctly signed token with an unacceptable claim is refused 401 and stores nothing."""
        token = sign(claims(**overrides), signing_key)

        response = _post(make_settings, token)

        assert response.status_code == 401
        assert response.json()["reason"] == reason
        assert redis_client.dbsize() == 0

    def test_audience_as_plain_string(self, make_settings: SettingsFactory, signing_key: SigningKey) -> None:
        """The older documented shape, aud as a string, is accepted when it names us."""
        response = _post(make_settings, sign(claims(aud=AUDIENCE), signing_key))

        assert response.status_code == 202

    def test_alg_none(self, make_settings: SettingsFactory, signing_key: SigningKey) -> None:
        """An unsigned token is refused."""
        token = unsigned(claims(), {"alg": "none", "typ": "secevent+jwt", "kid": signing_key.kid})

        response = _post(make_settings, token)

        assert (response.status_code, response.json()["reason"]) == (401, "alg_not_allowed")

    def test_hs256_key_confusion(self, make_settings: SettingsFactory, signing_key: SigningKey) -> None:
        """HS256 keyed with the public key (the classic confusion attack) is refused."""
        import hashlib
        import hmac

        head_and_body = unsigned(claims(), {"alg": "HS256", "typ": "secevent+jwt", "kid": signing_key.kid})
        signing_input = head_and_body.rsplit(".", 1)[0]
        mac = hmac.new(signing_key.public_pem, signing_input.encode(), hashlib.sha256).digest()
        token = unsigned(claims(), {"alg": "HS256", "typ": "secevent+jwt", "kid": signing_key.kid}, mac)

        response = _post(make_settings, token)

        assert (response.status_code, response.json()["reason"]) == (401, "alg_not_allowed")

    def test_unknown_kid(self, make_settings: SettingsFactory, jwks: tuple[JwksEndpoint, str]) -> None:
        """A kid missing from a freshly fetched JWKS is a 401; within the cool-down no refetch
        happens and the sender is asked to retry (503), since the key may have been published since."""
        stranger = SigningKey.generate("kid-unknown")

        with TestClient(create_app(make_settings())) as client:
            answers = [client.post(V3, content=sign(claims(), stranger), headers=SET_TYPE) for _ in range(5)]

        assert [response.status_code for response in answers] == [401, 503, 503, 503, 503]
        assert answers[0].json()["reason"] == "kid_unknown"
        assert jwks[0].fetches == 1

    def test_same_kid_other_key(self, make_settings: SettingsFactory, rogue_key: SigningKey) -> None:
        """A token signed by a key that merely claims a published kid fails the signature check."""
        response = _post(make_settings, sign(claims(), rogue_key))

        assert (response.status_code, response.json()["reason"]) == (401, "signature_invalid")

    def test_foreign_jku(
        self, make_settings: SettingsFactory, signing_key: SigningKey, jwks: tuple[JwksEndpoint, str]
    ) -> None:
        """A jku other than the configured JWKS URL is refused, and never fetched."""
        token = sign(claims(), signing_key, jku="https://attacker.example.com/jwk")

        response = _post(make_settings, token)

        assert (response.status_code, response.json()["reason"]) == (401, "jku_not_allowed")
        assert jwks[0].fetches == 0

    def test_configured_jku_is_accepted(
        self, make_settings: SettingsFactory, signing_key: SigningKey, jwks: tuple[JwksEndpoint, str]
    ) -> None:
        """A jku equal to the configured URL (as current Akamai tokens carry) is fine."""
        response = _post(make_settings, sign(claims(), signing_key, jku=jwks[1]))

        assert response.status_code == 202

    @pytest.mark.parametrize(
        "body",
        ["eyJhbGciOiJSUzI1NiJ9.eyJ", "not a token", "a.b.c", "..", "\u00e9t\u00e9.x.y"],
        ids=["truncated", "words", "junk-segments", "empty-segments", "non-ascii"],
    )
    def test_malformed_tokens_answer_400(self, make_settings: SettingsFactory, body: str) -> None:
        """Bodies that are not a compact JWS are refused 400 with a reason."""
        response = _post(make_settings, body.encode())

        assert response.status_code == 400
        assert response.json()["status"] == "rejected"

    def test_binary_garbage(self, make_settings: SettingsFactory) -> None:
        """Random bytes are a 400, not a 500."""
        response = _post(make_settings, bytes(range(256)) * 4)

        assert response.status_code == 400

    def test_truncated_valid_token(self, make_settings: SettingsFactory, signing_key: SigningKey) -> None:
        """A real token cut short fails the signature check or the parse, never a 5xx."""
        token = sign(claims(), signing_key)

        response = _post(make_settings, token[:-20])

        assert response.status_code in (400, 401)

    def test_empty_body(self, make_settings: SettingsFactory) -> None:
        """An empty body is a 400."""
        response = _post(make_settings, b"")

        assert (response.status_code, response.json()["reason"]) == (400, "body_empty")

    def test_wrong_content_type(self, make_settings: SettingsFactory, signing_key: SigningKey) -> None:
        """JSON or no content type is a 415 naming what is accepted."""
        token = sign(claims(), signing_key)

        as_json = _post(make_settings, token, {"Content-Type": "application/json"})
        missing = _post(make_settings, token, {})

        assert as_json.status_code == 415
        assert "application/secevent+jwt" in as_json.json()["detail"]
        assert missing.status_code == 415

    def test_oversized_body(self, make_settings: SettingsFactory, redis_client: redis.Redis) -> None:
        """A body over ingest.max_body_size is a 413, checked before anything is parsed."""
        settings = make_settings(ingest={"max_body_size": "1KiB"})

        with TestClient(create_app(settings)) as client:
            declared = client.post(V3, content=b"x" * 2048, headers=SET_TYPE)

            def chunks() -> Any:
                for _ in range(8):
                    yield b"x" * 512

            streamed = client.post(V3, content=chunks(), headers=SET_TYPE)

        assert declared.status_code == 413
        assert streamed.status_code == 413
        assert redis_client.dbsize() == 0

    def test_disabled_source_is_404(self, make_settings: SettingsFactory, redis_server: Any) -> None:
        """Without sources.v3 the route does not accept anything."""
        settings = make_settings(sources={"legacy": {"callback_hashes": ["h"]}})

        response = _post(lambda: settings, b"x.y.z")

        assert (response.status_code, response.json()["reason"]) == (404, "source_disabled")


class TestUnavailable:
    def test_jwks_down_answers_503(
        self, make_settings: SettingsFactory, signing_key: SigningKey, jwks: tuple[JwksEndpoint, str]
    ) -> None:
        """When the keys cannot be fetched the answer is 503, so Akamai retries instead of dropping."""
        jwks[0].status = 500

        response = _post(make_settings, sign(claims(), signing_key))

        assert response.status_code == 503
        assert response.json()["reason"] == "jwks_unavailable"
        assert response.headers["Retry-After"] == "30"

    def test_backlog_above_high_water_answers_503(
        self, make_settings: SettingsFactory, signing_key: SigningKey, redis_client: redis.Redis
    ) -> None:
        """Above the configured backlog the service sheds load with 503 and stores nothing more."""
        settings = make_settings(ingest={"backlog_high_water": 2, "retry_after": "15s"})

        with TestClient(create_app(settings)) as client:
            codes = [client.post(V3, content=sign(claims(), signing_key), headers=SET_TYPE) for _ in range(3)]

        assert [response.status_code for response in codes] == [202, 202, 503]
        assert codes[2].json()["reason"] == "backlog_full"
        assert codes[2].headers["Retry-After"] == "15"
        assert _queue(redis_client).count == 2
