"""The simulator's signing keys, its JWK page, and the bytes of the tokens it signs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jwt
import pytest

from simulator.config import ClientCredentials, SimulatorConfig
from simulator.keys import KeyRing, b64url, compact_json
from simulator.profiles import ProfileChange
from simulator.setevents import change_event, global_sub, set_claims, token_header

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "v3.json").read_text())
KID = re.compile(r"[0-9a-f]{40}")


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    """Three keys, as Akamai makes per subscriber (never rotated: rotation tests make their own)."""
    return KeyRing(3)


def verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verify with PyJWT, choosing the key by ``kid`` from ``jwks``, as a receiver does."""
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], options={"verify_aud": False})
    return claims


def test_jwks_publishes_every_key_in_akamais_shape(ring: KeyRing) -> None:
    """Each key has use, kty, alg, a 40-hex kid, n and e=AQAB, and the kids differ."""
    keys = ring.jwks()["keys"]

    assert len(keys) == 3
    for key in keys:
        assert set(key) == {"use", "kty", "alg", "kid", "n", "e"}
        assert (key["use"], key["kty"], key["alg"], key["e"]) == ("sig", "RSA", "RS256", "AQAB")
        assert KID.fullmatch(key["kid"])
        assert jwt.PyJWK(key).key.key_size == 2048
    assert len({key["kid"] for key in keys}) == 3


def test_the_newest_key_signs(ring: KeyRing) -> None:
    """The signing key is the last one published."""
    assert ring.signing_key.kid == ring.jwks()["keys"][-1]["kid"]


def test_a_signed_token_verifies_with_the_published_key(ring: KeyRing) -> None:
    """PyJWT accepts the token with the key its kid names, and reads back header and claims."""
    token = ring.sign({"typ": "secevent+jwt"}, {"jti": "abc", "iat": 1714566896})

    claims = verify(token, ring.jwks())

    assert claims == {"jti": "abc", "iat": 1714566896}
    assert jwt.get_unverified_header(token) == {"typ": "secevent+jwt", "alg": "RS256", "kid": ring.signing_key.kid}


def test_a_header_naming_another_kid_keeps_it(ring: KeyRing) -> None:
    """A fault a test may want: the header's kid stays, the signature is the signing key's."""
    token = ring.sign({"kid": "not-published"}, {"jti": "x"})

    assert jwt.get_unverified_header(token)["kid"] == "not-published"
    assert jwt.decode(token, ring.signing_key.private_key.public_key(), algorithms=["RS256"]) == {"jti": "x"}


def test_rotation_publishes_a_new_signing_key_and_keeps_the_old_ones() -> None:
    """After a rotation, tokens signed before it still verify against the new JWK page."""
    ring = KeyRing(1)
    before = ring.sign({}, {"n": 1})
    old_kid = ring.signing_key.kid

    new = ring.rotate()

    assert ring.signing_key == new
    assert [key["kid"] for key in ring.jwks()["keys"]] == [old_kid, new.kid]
    assert verify(before, ring.jwks()) == {"n": 1}
    assert jwt.get_unverified_header(ring.sign({}, {}))["kid"] == new.kid


def test_rotation_can_retire_the_oldest_key() -> None:
    """``retire_oldest`` withdraws the oldest key, so its tokens no longer find a key."""
    ring = KeyRing(2)
    oldest, middle = (key.kid for key in ring.published)

    new = ring.rotate(retire_oldest=True)

    assert [key["kid"] for key in ring.jwks()["keys"]] == [middle, new.kid]
    assert oldest not in {key["kid"] for key in ring.jwks()["keys"]}


def test_a_ring_needs_a_key() -> None:
    """Zero keys is refused with the count in the message."""
    with pytest.raises(ValueError, match="not 0"):
        KeyRing(0)


def test_the_encoding_reproduces_the_reference_token_bytes() -> None:
    """Header and claims of vector 6.4 (a), built by ``setevents``, encode to its exact segments."""
    vector = next(token for token in VECTORS["tokens"] if token["id"] == "a-entity-updated-valid")
    header_segment, payload_segment, _ = vector["token"].split(".")
    config = SimulatorConfig(
        base_url="https://v1.api.us.janrain.com",
        customer_id="b18fc81d-457e-4a40-ac87-2b78bd946fa2",
        application_id="zzyn9gy9r8xdy5zkru4y54syk6",
        api_client=ClientCredentials("elrrniux51a3nrhfwzklvz3t46lb5n2m", "unused"),
    )
    uuid = "6b004bc5-179c-45c2-815d-31b06169371d"
    change = ProfileChange(
        "entityUpdated",
        "user",
        uuid,
        {},
        ["primaryAddress.city", "primaryAddress.state", "primaryAddress.country"],
        1714566896.4,
    )

    events = change_event(change, config, event_id="e0a70b4f-1eef-4856-bcdb-f050fee66aae")
    claims = set_claims(
        config,
        "https://hooks.example.com/akamai/webhooks",
        events,
        now=1714566896.9,
        toe=change.at,
        jti="0a3b5f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
    )

    assert b64url(compact_json(token_header(config, "test-kid-0001"))) == header_segment
    assert b64url(compact_json(claims)) == payload_segment
    assert global_sub(config, "user", uuid).startswith("capture-v1://us.janraincapture.com/")


def test_global_sub_follows_the_region_of_the_base_url() -> None:
    """An EU API host gives an EU Capture host; a local simulator says ``us``."""
    eu = SimulatorConfig(base_url="https://v1.api.eu.janrain.com", application_id="app")
    local = SimulatorConfig(base_url="http://127.0.0.1:8900", application_id="app")

    assert global_sub(eu, "user", "u-1") == "capture-v1://eu.janraincapture.com/app/user/u-1"
    assert global_sub(local, "user", "u-1") == "capture-v1://us.janraincapture.com/app/user/u-1"
