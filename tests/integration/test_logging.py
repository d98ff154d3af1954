"""Log output of every webhook outcome: one JSON line each, never a secret or a record value."""

from __future__ import annotations

import base64
import io
import json

import redis
from starlette.testclient import TestClient

from service.app import create_app
from tests.conftest import SettingsFactory
from tests.support.servers import JwksEndpoint
from tests.support.tokens import SigningKey, claims, sign

SECRET_HASH = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7"
BASIC_PASSWORD = "pa55-w0rd-never-logged"
RECORD_VALUE = "alice.private@example.com"


def test_no_secret_or_record_value_in_any_outcome(
    make_settings: SettingsFactory,
    signing_key: SigningKey,
    jwks: tuple[JwksEndpoint, str],
    redis_client: redis.Redis,
    log_output: io.StringIO,
) -> None:
    """Accepted, duplicate, 400, 401, 413, 415 and 503 answers log ids and reasons, nothing private."""
    settings = make_settings(
        sources={
            "v3": {"jwks_url": jwks[1]},
            "legacy": {
                "callback_hashes": [SECRET_HASH],
                "basic_auth": {"username": "janrain", "password": BASIC_PASSWORD},
            },
        },
        ingest={"max_body_size": 4096, "backlog_high_water": 3},
    )
    basic = {"Authorization": "Basic " + base64.b64encode(f"janrain:{BASIC_PASSWORD}".encode()).decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(f"janrain:{BASIC_PASSWORD}x".encode()).decode()}
    token = sign(claims(email=RECORD_VALUE), signing_key)
    element = {"uuid": "u-1", "hash": SECRET_HASH, "email": RECORD_VALUE, "datetime": "2024-05-01 12:00:00 +0000"}

    with TestClient(create_app(settings)) as client:
        v3 = {"Content-Type": "application/secevent+jwt"}
        answers = [
            client.post("/webhooks/capture/v3", content=token, headers=v3),
            client.post("/webhooks/capture/v3", content=token, headers=v3),
            client.post("/webhooks/capture/v3", content=token[:-8] + "AAAAAAAA", headers=v3),
            client.post("/webhooks/capture/v3", content="x." + token, headers=v3),
            client.post("/webhooks/capture/legacy", json=[element], headers=basic),
            client.post("/webhooks/capture/legacy", json=[{**element, "hash": SECRET_HASH[:-1]}], headers=basic),
            client.post("/webhooks/capture/legacy", json=[element], headers=wrong),
            client.post("/webhooks/capture/legacy", json=[element] * 100, headers=basic),
            client.post("/webhooks/capture/legacy", content=RECORD_VALUE, headers={"Content-Type": "text/csv"}),
            client.post("/webhooks/capture/v3", content=sign(claims(), signing_key), headers=v3),
            client.post("/webhooks/capture/v3", content=sign(claims(), signing_key), headers=v3),
        ]

    assert [answer.status_code for answer in answers] == [202, 200, 401, 400, 200, 401, 401, 413, 415, 202, 503]
    output = log_output.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    outcomes = [line for line in lines if line["event"].startswith("webhook.")]
    assert len(outcomes) == len(answers)
    assert all("request_id" in line for line in outcomes)
    for private in (SECRET_HASH, BASIC_PASSWORD, RECORD_VALUE, token, token.split(".")[2]):
        assert private not in output
