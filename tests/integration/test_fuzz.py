"""Fuzzing the webhook routes: whatever arrives, the answer is documented, and bad input never gets a 5xx.

Hypothesis drives the real app (TestClient, private Redis, JWKS over HTTP) with arbitrary bodies,
content types, headers, JSON and JWS-shaped tokens; schemathesis drives the app served by uvicorn
through its own ``/openapi.json``.

Every run is derandomized (``derandomize=True``, no example database): the examples are a function of
each test's source, so CI and a laptop try the same inputs, and a failure seen once reproduces
everywhere instead of living only in one machine's ``.hypothesis/`` directory.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx2
import orjson
import pytest
import redis
import requests
import schemathesis
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from service.webhooks import LEGACY_CONTENT_TYPES, V3_CONTENT_TYPES
from tests.conftest import SettingsFactory
from tests.support.servers import JwksEndpoint, serve_in_thread
from tests.support.tokens import AUDIENCE, ISSUER, RECORD_UUID, SigningKey, claims

V3 = "/webhooks/capture/v3"
LEGACY = "/webhooks/capture/legacy"
ACCEPTED_TYPES = {V3: V3_CONTENT_TYPES, LEGACY: LEGACY_CONTENT_TYPES}
CALLBACK_HASH = "b6f1a0c4d2e8f7a9b3c5d1e0f2a4b6c8d0e2f4a6"
BASIC_USER, BASIC_PASSWORD = "capture", "s3cret:with:colons"
# Small enough that oversized bodies are cheap to generate, large enough for a signed token.
BODY_LIMIT = 4096
REFUSED = frozenset({400, 401, 413, 415})
STORED = frozenset({200, 202})
SIGNING_KID = "kid-primary"  # the kid of the session's signing_key (tests/conftest.py)
SET_HEADER = {"alg": "RS256", "typ": "secevent+jwt", "kid": SIGNING_KID}
# Stands for the configured JWKS URL, whose port is only known once the JWKS server runs.
CONFIGURED_JKU = "<configured jwks_url>"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# The explain phase traces every line with sys.settrace on Python < 3.12; on a failure here that slowed
# the run past pytest-timeout and hid the falsifying example, so failures are shrunk but not explained.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    phases=PHASES,
    # One app per test function, shared by its examples, is deliberate: starting the app, its Redis
    # connection and its JWKS client per example would dominate the run and test nothing more.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# --- the app under test ---------------------------------------------------------------------------


def _settings(make_settings: SettingsFactory, jwks_url: str, *, basic_auth: bool) -> Settings:
    legacy: dict[str, Any] = {"callback_hashes": [CALLBACK_HASH]}
    if basic_auth:
        legacy["basic_auth"] = {"username": BASIC_USER, "password": BASIC_PASSWORD}
    return make_settings(
        sources={"v3": {"jwks_url": jwks_url, "issuer": ISSUER, "audience": AUDIENCE}, "legacy": legacy},
        ingest={"max_body_size": BODY_LIMIT},
    )


@pytest.fixture
def relay(
    make_settings: SettingsFactory, jwks: tuple[JwksEndpoint, str], redis_client: redis.Redis
) -> Iterator[TestClient]:
    """The app on the private Redis, both sources on, legacy guarded by a callback hash only."""
    with TestClient(create_app(_settings(make_settings, jwks[1], basic_auth=False))) as client:
        yield client


@pytest.fixture
def relay_with_basic_auth(
    make_settings: SettingsFactory, jwks: tuple[JwksEndpoint, str], redis_client: redis.Redis
) -> Iterator[TestClient]:
    """As ``relay``, with HTTP Basic credentials required on the legacy route as well."""
    with TestClient(create_app(_settings(make_settings, jwks[1], basic_auth=True))) as client:
        yield client


@pytest.fixture
def served_relay(
    make_settings: SettingsFactory, jwks: tuple[JwksEndpoint, str], redis_client: redis.Redis
) -> Iterator[str]:
    """The app served by uvicorn on loopback (hash-only legacy); yields its base URL."""
    with serve_in_thread(create_app(_settings(make_settings, jwks[1], basic_auth=False))) as base_url:
        yield base_url


def _check_answer(response: httpx2.Response, allowed: frozenset[int]) -> dict[str, Any]:
    """The shared property: a documented status, a JSON object, and a ``reason`` on every refusal."""
    assert response.status_code in allowed, f"{response.status_code} not in {sorted(allowed)}: {response.text}"
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert isinstance(answer, dict)
    event(f"{response.status_code} {answer.get('reason', answer.get('status'))}")  # --hypothesis-show-statistics
    if 400 <= response.status_code < 500:
        assert isinstance(answer.get("reason"), str), answer
        assert answer["reason"], answer
    return answer


def _check_keys_unavailable(response: httpx2.Response, kid: Any) -> None:
    """The one 503 a hostile token may get: its kid is unknown while the JWKS refetch cool-down runs.

    That is by design (service/verify/jwks.py): the key may have been published since the last fetch,
    so Capture is asked to retry rather than told its event is forged.
    """
    assert kid != SIGNING_KID, response.text
    event("503 jwks_unavailable")
    assert response.json()["reason"] == "jwks_unavailable", response.text
    assert response.headers["retry-after"].isdigit()


# --- strategies ---------------------------------------------------------------------------------------

_text = st.text(max_size=24)
# Lone surrogates included: json.dumps escapes them, and the routes must refuse them cleanly.
_any_text = st.text(st.characters(exclude_categories=()), max_size=24)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
    | _any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text | _any_text, children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(_text, json_values, max_size=5)

# What a real server lets through as a header value: visible ASCII, space and tab (RFC 9110 field-value).
# TestClient re-encodes non-ASCII values, so only ASCII reaches the app byte for byte.
_ascii_field_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"), max_size=40)
_field_value = st.binary(max_size=40).map(
    lambda raw: bytes(byte for byte in raw if byte == 0x09 or 0x20 <= byte <= 0x7E or byte >= 0x80)
)


@st.composite
def _media_types(draw: st.DrawFn) -> str | None:
    """No Content-Type, an accepted one dressed up (case, parameters), a near miss, or any value."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return None
    if choice == 1:
        base = draw(st.sampled_from(sorted(V3_CONTENT_TYPES | LEGACY_CONTENT_TYPES)))
        cased = "".join(c.upper() if draw(st.booleans()) else c for c in base)
        params = draw(st.sampled_from(["", "; charset=utf-8", ";charset=latin-1", " ; x=y", "  "]))
        return draw(st.sampled_from(["", " ", "\t"])) + cased + params
    if choice == 2:
        return draw(
            st.sampled_from(
                [
                    "application/jose",
                    "application/jwt+json",
                    "text/json",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/jsonp",
                    "text/plain2",
                    "*/*",
                    ";",
                    "",
                ]
            )
        )
    return draw(_ascii_field_value)


def _oversized(prefix: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(1, 2 * BODY_LIMIT).map(lambda extra: prefix + b" " * (BODY_LIMIT - len(prefix) + extra))


any_bodies = st.one_of(st.binary(max_size=600), st.binary(max_size=32).flatmap(_oversized))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _legacy_stamp(moment: datetime, offset_minutes: int, fraction: bool) -> str:
    sign_ = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    layout = "%Y-%m-%d %H:%M:%S.%f" if fraction else "%Y-%m-%d %H:%M:%S"
    return f"{moment.strftime(layout)} {sign_}{hours:02d}{minutes:02d}"


@st.composite
def _mostly(draw: st.DrawFn, value: Any, otherwise: st.SearchStrategy[Any]) -> Any:
    """Usually ``value`` (about four times in five), so that most examples get past the check it is for."""
    return draw(otherwise) if draw(st.sampled_from((False, False, False, True))) else value


_legacy_stamps = st.builds(_legacy_stamp, st.datetimes(), st.integers(-(23 * 60 + 59), 23 * 60 + 59), st.booleans())
_legacy_element = st.tuples(
    st.fixed_dictionaries(
        {"uuid": st.one_of(st.uuids().map(str), _any_text, st.text(min_size=120, max_size=140), json_values)},
        optional={
            "hash": _mostly(CALLBACK_HASH, st.one_of(_any_text, json_values)),
            "datetime": st.one_of(_legacy_stamps, _any_text, json_values),
            "action": st.one_of(st.sampled_from(["add", "UPDATE", "deleted", "entityCreated", "merge"]), json_values),
            "entityType": st.one_of(st.just("user"), json_values),
        },
    ),
    json_objects,
).map(lambda parts: {**parts[1], **parts[0]})
# Mostly shaped like a batch, so the hash and normalisation code is reached, not only the JSON parser.
legacy_documents = st.one_of(json_values, st.lists(_legacy_element, max_size=4))


_NOT_JSON = object()


def _parse(body: bytes) -> Any:
    """The document as strict JSON reads it (no lone surrogates, no 65-bit integers), else ``_NOT_JSON``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _NOT_JSON


def _authentic_batch(document: Any) -> bool:
    """Every element is an object with a usable uuid and the configured hash: the legacy route's contract."""
    return isinstance(document, list) and all(
        isinstance(element, dict)
        and element.get("hash") == CALLBACK_HASH
        and isinstance(element.get("uuid"), str)
        and 0 < len(element["uuid"]) <= 128
        for element in document
    )


@st.composite
def _authorizations(draw: st.DrawFn) -> tuple[bytes | None, bool]:
    """An Authorization header value (or none) and whether it carries the configured credentials."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return None, False
    if choice == 1:
        return draw(_field_value), False
    scheme = draw(st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "Digest", ""]))
    if choice == 2:
        user, password = draw(_any_text), draw(_any_text)
        pair = f"{user}:{password}".encode("utf-8", "surrogatepass")
        correct = scheme.lower() == "basic" and f"{user}:{password}" == f"{BASIC_USER}:{BASIC_PASSWORD}"
        return f"{scheme} {base64.b64encode(pair).decode()}".encode(), correct
    if choice == 3:
        return f"{scheme} {draw(_ascii_field_value)}".encode(), False
    right = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    return f"{scheme} {right}".encode(), scheme.lower() == "basic"


_extra_headers = st.dictionaries(
    st.sampled_from(
        [
            b"x-request-id",
            b"accept",
            b"accept-encoding",
            b"content-encoding",
            b"expect",
            b"cookie",
            b"x-forwarded-for",
            b"x-forwarded-proto",
            b"user-agent",
            b"x-capture-signature",
        ]
    ),
    st.one_of(_field_value, st.from_regex(_SAFE_REQUEST_ID, fullmatch=True).map(str.encode)),
    max_size=4,
)

_HEADER_MUTATIONS: dict[str, st.SearchStrategy[Any]] = {
    "alg": st.one_of(
        st.sampled_from(["none", "None", "HS256", "HS512", "ES256", "PS256", "RS512", "rs256", ""]), json_values
    ),
    "typ": st.one_of(
        st.sampled_from(["application/secevent+jwt", "SecEvent+JWT", "JWT", "jwt", "secevent+jwt ", ""]), json_values
    ),
    "kid": st.one_of(st.sampled_from(["kid-rotated", "", "KID-PRIMARY"]), _any_text, json_values),
    "jku": st.one_of(st.sampled_from([CONFIGURED_JKU, "https://attacker.example/jwk"]), json_values),
    "crit": st.one_of(st.just(["exp"]), json_values),
    "jwk": json_values,
    "x5u": st.just("https://attacker.example/cert"),
    "x5c": st.lists(_any_text, max_size=2),
}


@st.composite
def _jws_headers(draw: st.DrawFn) -> dict[str, Any]:
    """The header Capture sends with up to three parameters removed, replaced or added."""
    header: dict[str, Any] = dict(SET_HEADER)
    for name in draw(st.lists(st.sampled_from([*_HEADER_MUTATIONS, "other"]), max_size=3, unique=True)):
        if name == "other":
            header[draw(_text)] = draw(json_values)
        elif name in header and draw(st.booleans()):
            del header[name]
        else:
            header[name] = draw(_HEADER_MUTATIONS[name])
    return header


@st.composite
def _jws_payloads(draw: st.DrawFn) -> bytes:
    """Believable claims with some replaced, any JSON, or any bytes."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        overrides = draw(
            st.dictionaries(st.sampled_from(["jti", "iat", "iss", "aud", "toe", "events", "sub"]), json_values)
        )
        return json.dumps({**claims(), **overrides}).encode()
    if choice == 1:
        return json.dumps(draw(json_values)).encode()
    return draw(st.binary(min_size=1, max_size=200))


# How the third segment is made: the real key over the first two, a key Capture never published, an
# HMAC keyed with the public PEM (the RS256/HS256 confusion attack), random bytes, or nothing.
_signature_kinds = st.sampled_from(["real", "rogue", "hmac_pem", "random", "empty"])


# --- hypothesis: the webhook routes through TestClient --------------------------------------------------


@FUZZ
@given(route=st.sampled_from([V3, LEGACY]), media_type=_media_types(), body=any_bodies)
def test_any_body_with_any_content_type_gets_a_documented_refusal(
    relay: TestClient, route: str, media_type: str | None, body: bytes
) -> None:
    """Arbitrary bytes under any Content-Type: 415, 413 or a 4xx with a reason; never stored, never a 5xx."""
    headers = {} if media_type is None else {"content-type": media_type}

    response = relay.post(route, content=body, headers=headers)

    given_type = (media_type or "").split(";", 1)[0].strip().lower()
    if given_type not in ACCEPTED_TYPES[route]:
        expected = frozenset({415})
    elif len(body) > BODY_LIMIT:
        expected = frozenset({413})
    else:
        # Random bytes are neither a signed token nor a batch carrying the hash; only an empty batch is stored.
        expected = REFUSED | (STORED if route == LEGACY and _authentic_batch(_parse(body)) else frozenset())
    _check_answer(response, expected)


@FUZZ
@given(document=legacy_documents, media_type=st.sampled_from(["application/json", "text/plain; charset=utf-8"]))
def test_any_json_to_the_legacy_route_is_stored_only_when_every_element_is_authentic(
    relay: TestClient, document: Any, media_type: str
) -> None:
    """A JSON document is stored (200/202) exactly when it is a batch whose every element has a uuid and the hash."""
    body = json.dumps(document).encode()

    response = relay.post(LEGACY, content=body, headers={"content-type": media_type})

    if len(body) > BODY_LIMIT:  # escaped surrogates take six bytes each, so some documents are too large
        _check_answer(response, frozenset({413}))
        return
    parsed = _parse(body)
    if parsed is _NOT_JSON:
        _check_answer(response, frozenset({400}))
        return
    if not _authentic_batch(parsed):
        _check_answer(response, frozenset({400, 401}))
        return
    answer = _check_answer(response, STORED)
    if answer["status"] == "accepted":
        assert 0 < len(answer["event_ids"]) <= len(parsed)


@FUZZ
@given(authorization=_authorizations(), extra=_extra_headers)
def test_any_authorization_header_is_honoured_only_with_the_configured_credentials(
    relay_with_basic_auth: TestClient, authorization: tuple[bytes | None, bool], extra: dict[bytes, bytes]
) -> None:
    """With Basic configured, a correct batch is stored iff the credentials match; the request id is echoed."""
    value, correct = authorization
    headers = {**extra, b"content-type": b"application/json"}
    if value is not None:
        headers[b"authorization"] = value
    batch = [{"uuid": RECORD_UUID, "hash": CALLBACK_HASH}]

    response = relay_with_basic_auth.post(LEGACY, content=json.dumps(batch).encode(), headers=headers)

    if correct:
        assert _check_answer(response, frozenset({200}))["status"] == "accepted"
    else:
        assert _check_answer(response, frozenset({401}))["reason"].startswith("basic_auth_")
        assert response.headers["www-authenticate"] == 'Basic realm="capture-relay"'
    sent_id = extra.get(b"x-request-id", b"").decode("latin-1")
    echoed = response.headers["x-request-id"]
    assert echoed == sent_id if _SAFE_REQUEST_ID.match(sent_id) else re.fullmatch(r"[0-9a-f]{32}", echoed)


def _policy_allows(header: dict[str, Any], jwks_url: str) -> bool:
    """DESIGN 3.1's header rules: RS256, typ secevent+jwt, our kid, no foreign key source, no crit."""
    typ = header.get("typ")
    return (
        header.get("alg") == "RS256"
        and isinstance(typ, str)
        and typ.lower() in {"secevent+jwt", "application/secevent+jwt"}
        and header.get("kid") == SIGNING_KID
        and header.get("jku", jwks_url) == jwks_url
        and not any(name in header for name in ("jwk", "x5u", "x5c"))
        and not header.get("crit")
    )


def _signature(kind: str, signing_input: bytes, signing_key: SigningKey, rogue_key: SigningKey) -> bytes:
    """The third segment of a compact JWS, made the way ``kind`` names (see ``_signature_kinds``)."""
    if kind in ("real", "rogue"):
        key = signing_key if kind == "real" else rogue_key
        return key.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if kind == "hmac_pem":
        mac = hmac.HMAC(signing_key.public_pem, hashes.SHA256())
        mac.update(signing_input)
        return mac.finalize()
    return b"\x00\x01" * 64 if kind == "random" else b""


@FUZZ
@given(
    header=_jws_headers(),
    header_as_bytes=_mostly(None, st.binary(min_size=1, max_size=40)),
    payload=_jws_payloads(),
    signature_kind=_signature_kinds,
    dressing=_mostly("", st.sampled_from(["\n", " \t", ".", ".x"])),
)
def test_a_jws_shaped_body_is_stored_only_with_our_key_and_an_allowed_header(
    relay: TestClient,
    jwks: tuple[JwksEndpoint, str],
    signing_key: SigningKey,
    rogue_key: SigningKey,
    header: dict[str, Any],
    header_as_bytes: bytes | None,
    payload: bytes,
    signature_kind: str,
    dressing: str,
) -> None:
    """Forged, confused or mangled tokens get 400/401 (503 only for an unknown kid); none is ever stored."""
    jwks_url = jwks[1]
    if header.get("jku") == CONFIGURED_JKU:
        header = {**header, "jku": jwks_url}
    raw_header = header_as_bytes if header_as_bytes is not None else json.dumps(header).encode()
    signing_input = f"{_b64(raw_header)}.{_b64(payload)}".encode()
    signature = _signature(signature_kind, signing_input, signing_key, rogue_key)
    token = signing_input.decode() + "." + _b64(signature) + dressing

    response = relay.post(V3, content=token, headers={"content-type": "application/secevent+jwt"})

    sent_header = _parse(raw_header)
    may_be_authentic = (
        isinstance(sent_header, dict)
        and _policy_allows(sent_header, jwks_url)
        and signature_kind == "real"
        and dressing.strip(" \t\n") == ""  # the route strips surrounding whitespace
    )
    if response.status_code == 503:
        _check_keys_unavailable(response, sent_header.get("kid") if isinstance(sent_header, dict) else None)
        return
    _check_answer(response, REFUSED | (STORED if may_be_authentic else frozenset()))


@FUZZ
@given(
    overrides=st.dictionaries(
        st.sampled_from(["jti", "iat", "iss", "aud", "toe", "events", "extra"]),
        st.one_of(json_values, st.sampled_from([ISSUER, AUDIENCE, [AUDIENCE, "x"], 0, "", {"test": {}}])),
        max_size=3,
    ),
    iat_shift=st.one_of(st.none(), st.integers(-3 * 86400, 3 * 86400)),
    event_type=st.sampled_from(["entityCreated", "entityUpdated", "entityDeleted", "test", "somethingNew"]),
    event_overrides=st.dictionaries(st.sampled_from(["sub", "attributes", "id", "entityType"]), json_values),
)
def test_a_genuinely_signed_token_with_any_claims_gets_a_documented_answer(
    relay: TestClient,
    signing_key: SigningKey,
    overrides: dict[str, Any],
    iat_shift: int | None,
    event_type: str,
    event_overrides: dict[str, Any],
) -> None:
    """Our key, any claims: stored only when iss, aud, iat, jti and events hold; refused with a reason otherwise."""
    payload = claims(event_type)
    payload["events"][event_type].update(event_overrides)
    if iat_shift is not None:
        payload["iat"] = int(time.time()) + iat_shift
    payload.update(overrides)
    # Assembled by hand: PyJWT refuses to sign some claims (a non-string iss) that a sender could still send.
    signing_input = f"{_b64(json.dumps(SET_HEADER).encode())}.{_b64(json.dumps(payload).encode())}".encode()
    token = f"{signing_input.decode()}.{_b64(_signature('real', signing_input, signing_key, signing_key))}"

    response = relay.post(V3, content=token, headers={"content-type": "application/secevent+jwt"})

    answer = _check_answer(response, REFUSED | STORED)
    if response.status_code in STORED:
        aud = payload["aud"]
        assert payload["iss"] == ISSUER
        assert aud == AUDIENCE or (isinstance(aud, list) and AUDIENCE in aud)
        assert isinstance(payload["jti"], str)
        assert abs(time.time() - payload["iat"]) <= 48 * 3600 + 60
    if not overrides and not event_overrides and iat_shift is None:
        assert answer["status"] == "accepted", answer


# --- schemathesis: every operation of /openapi.json against the served app --------------------------------

CONTRACT_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Schema-valid data cannot carry a valid RS256 signature, so a v3 token from the schema is always refused.
SIGNED_OPERATIONS = {f"POST {V3}"}
CONTRACT = settings(max_examples=100, deadline=None, derandomize=True, database=None, phases=PHASES)
# A byte limit on a JSON array cannot be written in JSON Schema, so a schema-valid batch may still be
# refused as too large (413, a documented answer); schemathesis' default lists do not know that status.
CONTRACT_CONFIG = {
    "checks": {
        "negative_data_rejection": {
            "expected-statuses": ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
        },
        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "413"]},
    }
}


Operation = schemathesis.APIOperation[Any, Any, Any, Any]
EXPECTED_OPERATIONS = {
    f"POST {V3}",
    f"POST {LEGACY}",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
}


def _takes_input(operation: Operation) -> bool:
    return len(operation.body) > 0 or next(iter(operation.iter_parameters()), None) is not None


def _exercise(operation: Operation, mode: GenerationMode, session: requests.Session) -> int:
    """Run schemathesis' cases for one operation and mode through the checks; returns how many were sent."""
    checks = list(CONTRACT_CHECKS)
    if operation.label not in SIGNED_OPERATIONS:
        checks.append(positive_data_acceptance)
    sent = 0

    @CONTRACT
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: schemathesis.Case[Any]) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(session=session, checks=checks)

    call()
    return sent


def test_every_operation_keeps_the_openapi_contract(served_relay: str, subtests: pytest.Subtests) -> None:
    """schemathesis, positive and negative data, against the app's own document: no 5xx and no mismatch."""
    config = schemathesis.Config.from_dict(CONTRACT_CONFIG)
    schema = schemathesis.openapi.from_url(f"{served_relay}/openapi.json", config=config)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    operations: list[Operation] = [operation for path in schema for operation in schema[path].values()]
    assert {operation.label for operation in operations} == EXPECTED_OPERATIONS

    with requests.Session() as session:
        for operation in operations:
            # Negative data only where there is input to break: a GET without parameters has none.
            takes_input = _takes_input(operation)
            modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if takes_input else [GenerationMode.POSITIVE]
            for mode in modes:
                with subtests.test(operation=operation.label, mode=mode.value):
                    sent = _exercise(operation, mode, session)

                    # A generator that produced nothing, or a filter that rejected everything, fails here.
                    assert sent >= (50 if takes_input else 1), f"{operation.label} {mode.value}: {sent} cases"
