"""The three credential modes: the janrain-signed vectors of §6.1, a stale Date, Basic, parameters."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import NamedTuple

import httpx2
import pytest
from starlette.datastructures import Headers

from simulator.config import ClientCredentials
from simulator.credentials import authenticate, sign, string_to_sign
from simulator.envelope import CaptureError
from simulator.params import Params
from tests.simulator.conftest import CLIENT, Running, form_value

B_CLIENT = ClientCredentials("abcdefghijklmnopqrstuvwxyz012345", "0123456789abcdefghijklmnopqrstuv")


class Vector(NamedTuple):
    """One janrain-signed call of §6.1 and the Authorization header it must carry."""

    path: str
    date: str
    client: ClientCredentials
    pairs: list[tuple[str, str]]
    authorization: str


A = Vector(
    "/entity",
    "2000-01-01 01:01:01",
    ClientCredentials("foo", "bar"),
    [("param1", "this is a string"), ("param2", "10"), ("param3", "one=1\ntwo=2,three=3")],
    "Signature foo:G3N5RxCVc0d6rDLmBRGvcg2hCVY=",
)
B = Vector(
    "/entity",
    "2024-05-01 12:34:56",
    B_CLIENT,
    [
        ("type_name", "user"),
        ("uuid", "6b004bc5-179c-45c2-815d-31b06169371d"),
        ("attributes", '["email","givenName","lastUpdated"]'),
    ],
    "Signature abcdefghijklmnopqrstuvwxyz012345:TyHntwK5h7/1eKUT0Iq+k7nt1pU=",
)
C = Vector(
    "/versions/entity",
    "2024-05-01 12:35:00",
    B_CLIENT,
    [("type_name", "user"), ("id", "999"), ("timestamp", "2016-03-13 19:39:17.856608 +0000")],
    "Signature abcdefghijklmnopqrstuvwxyz012345:1ErYgLvZf5ieDvZYSfRtt5kvBng=",
)
D = Vector(
    "/webhooks/add",
    "2024-05-01 12:36:00",
    B_CLIENT,
    [
        ("callback", "https://hooks.example.com/janrain"),
        ("event_type", "update"),
        ("entity_type", "user"),
        ("attributes", '["email","givenName"]'),
    ],
    "Signature abcdefghijklmnopqrstuvwxyz012345:wUtnGIddMzvT3mOlzZsMHjC6KeI=",
)


def at(date: str) -> float:
    return datetime.strptime(date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def check(vector: Vector, now: float) -> str:
    """Authenticate the call of ``vector`` at ``now`` with a 300 s skew; returns the mode."""
    headers = Headers({"authorization": vector.authorization, "date": vector.date})
    params = Params(tuple(vector.pairs))
    return authenticate(path=vector.path, headers=headers, params=params, client=vector.client, now=now, skew=300)


@pytest.mark.parametrize(
    "vector",
    [
        pytest.param(A, id="A-pyapi-unit-test"),
        pytest.param(B, id="B-entity"),
        pytest.param(C, id="C-versions-entity"),
        pytest.param(D, id="D-webhooks-add"),
    ],
)
def test_signature_vectors_verify(vector: Vector) -> None:
    """Each §6.1 vector is what ``sign`` computes, and ``authenticate`` accepts it as janrain-signed."""
    computed = sign(vector.path, vector.date, vector.pairs, vector.client.client_secret)

    mode = check(vector, now=at(vector.date) + 10)

    assert f"Signature {vector.client.client_id}:{computed}" == vector.authorization
    assert mode == "signed"


def test_string_to_sign_of_vector_b() -> None:
    """The text signed for vector B: path, Date, sorted key=value lines, each ending in a newline."""
    pairs = [("type_name", "user"), ("client_id", "x"), ("attributes", '["email"]')]

    text = string_to_sign("/entity", "2024-05-01 12:34:56", pairs)

    assert text == '/entity\n2024-05-01 12:34:56\nattributes=["email"]\ntype_name=user\n'


@pytest.mark.parametrize(
    ("shift", "accepted"),
    [
        pytest.param(299, True, id="inside-skew"),
        pytest.param(301, False, id="late"),
        pytest.param(-301, False, id="early"),
    ],
)
def test_date_outside_the_skew_is_refused(shift: float, accepted: bool) -> None:
    """A signed Date more than ``signature_skew`` seconds from the clock is 402, however good the signature."""
    if accepted:
        assert check(B, now=at(B.date) + shift) == "signed"
        return
    with pytest.raises(CaptureError) as refused:
        check(B, now=at(B.date) + shift)
    assert refused.value.code == 402


@pytest.mark.parametrize(
    "vector",
    [
        pytest.param(B._replace(pairs=[*B.pairs[:2], ("attributes", '["password"]')]), id="tampered-parameter"),
        pytest.param(B._replace(pairs=B.pairs[:2]), id="parameter-left-out"),
        pytest.param(B._replace(path="/entity.find"), id="other-path"),
        pytest.param(B._replace(date="2024-05-01T12:34:56Z"), id="rfc-date"),
        pytest.param(B._replace(client=ClientCredentials(B_CLIENT.client_id, "other-secret")), id="wrong-secret"),
        pytest.param(B._replace(client=ClientCredentials("someone-else", B_CLIENT.client_secret)), id="wrong-id"),
    ],
)
def test_a_signature_that_does_not_match_is_402(vector: Vector) -> None:
    """Changing the path, a parameter, the Date format, the secret or the id breaks the signature."""
    with pytest.raises(CaptureError) as refused:
        check(vector, now=at(B.date))

    assert (refused.value.code, refused.value.error) == (402, "invalid_client_credentials")


def test_no_parameters_accepts_both_known_texts() -> None:
    """With no parameters, the PYAPI text (path, Date) and the doc's (an extra newline) both verify."""
    date = "2024-05-01 12:00:00"
    pyapi = base64.b64encode(_hmac(CLIENT.client_secret, f"/webhooks/list\n{date}\n")).decode()
    doc = base64.b64encode(_hmac(CLIENT.client_secret, f"/webhooks/list\n{date}\n\n")).decode()

    for signature in (pyapi, doc):
        vector = Vector("/webhooks/list", date, CLIENT, [], f"Signature {CLIENT.client_id}:{signature}")
        assert check(vector, now=at(date)) == "signed"


def _hmac(secret: str, text: str) -> bytes:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()


def signed_headers(path: str, params: dict[str, str], date: datetime | None = None) -> dict[str, str]:
    """The headers a janrain-signed client sends for ``params`` at ``date`` (now by default)."""
    stamp = (date or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
    signature = sign(path, stamp, params.items(), CLIENT.client_secret)
    return {"Date": stamp, "Authorization": f"Signature {CLIENT.client_id}:{signature}"}


def test_all_three_modes_work_over_http(capture: Running) -> None:
    """Basic, janrain-signed and parameter credentials each get the record, and the log says which was used."""
    user = capture.user(email="ada@example.com")
    params = {"type_name": "user", "uuid": user["uuid"], "attributes": form_value(["email"])}
    bare = httpx2.Client(base_url=capture.url, timeout=10)

    basic = capture.http.post("/entity", data=params)
    signed = bare.post("/entity", data=params, headers=signed_headers("/entity", params))
    as_params = bare.post(
        "/entity", data={**params, "client_id": CLIENT.client_id, "client_secret": CLIENT.client_secret}
    )

    for response in (basic, signed, as_params):
        assert response.json() == {"result": {"email": "ada@example.com"}, "stat": "ok"}
    recent = capture.stats_json()["recent"]
    assert [call["auth"] for call in recent] == ["basic", "signed", "params"]
    assert recent[2]["values"]["client_secret"] == "***"
    bare.close()


def test_signed_query_parameters_count_too(capture: Running) -> None:
    """A signed GET signs its query parameters."""
    user = capture.user(email="ada@example.com")
    params = {"type_name": "user", "uuid": user["uuid"]}

    response = httpx2.get(f"{capture.url}/entity", params=params, headers=signed_headers("/entity", params), timeout=10)

    assert response.json()["result"]["uuid"] == user["uuid"]


SIGNED_STALE = {"Authorization": f"Signature {CLIENT.client_id}:AAAA", "Date": "2024-05-01 12:00:00"}


@pytest.mark.parametrize(
    ("auth", "headers", "extra", "code"),
    [
        pytest.param(None, {}, {}, 100, id="no-credentials"),
        pytest.param((CLIENT.client_id, "wrong"), {}, {}, 402, id="basic-wrong-secret"),
        pytest.param(("someone-else", CLIENT.client_secret), {}, {}, 402, id="basic-wrong-id"),
        pytest.param(None, {"Authorization": "Basic !!!"}, {}, 402, id="basic-not-base64"),
        pytest.param(None, {"Authorization": "Bearer abc"}, {}, 205, id="unknown-scheme"),
        pytest.param(None, {"Authorization": "OAuth abc"}, {}, 402, id="oauth-token"),
        pytest.param(None, {}, {"client_id": CLIENT.client_id}, 100, id="params-without-secret"),
        pytest.param(None, {}, {"client_id": CLIENT.client_id, "client_secret": "x"}, 402, id="params-wrong-secret"),
        pytest.param(None, SIGNED_STALE, {}, 402, id="signed-stale-date"),
        pytest.param(None, {"Authorization": SIGNED_STALE["Authorization"]}, {}, 402, id="signed-without-date"),
    ],
)
def test_bad_credentials_over_http(
    capture: Running, auth: tuple[str, str] | None, headers: dict[str, str], extra: dict[str, str], code: int
) -> None:
    """Missing credentials are 100 naming client_id or client_secret; wrong ones are 402 (205: unknown scheme)."""
    data = {"type_name": "user", "uuid": "x", **extra}

    response = httpx2.post(f"{capture.url}/entity", data=data, auth=auth, headers=headers, timeout=10)

    body = response.json()
    assert (response.status_code, body["stat"], body["code"]) == (200, "error", code)
    if code == 402:
        assert body["error"] == "invalid_client_credentials"


def test_missing_credentials_name_client_id(capture: Running) -> None:
    """The 100 for a call without any credentials names ``client_id``."""
    response = httpx2.post(f"{capture.url}/entity", data={"type_name": "user", "uuid": "x"}, timeout=10)

    assert response.json()["argument_name"] == "client_id"


def test_basic_without_padding_is_accepted(capture: Running) -> None:
    """One Akamai page prints Basic credentials without ``=`` padding; the simulator takes them."""
    user = capture.user()
    token = base64.b64encode(f"{CLIENT.client_id}:{CLIENT.client_secret}".encode()).decode().rstrip("=")

    response = httpx2.post(
        f"{capture.url}/entity",
        data={"type_name": "user", "uuid": user["uuid"]},
        headers={"Authorization": f"Basic {token}"},
        timeout=10,
    )

    assert response.json()["stat"] == "ok"
