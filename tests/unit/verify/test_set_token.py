"""verify_token and check_claims: the protocol reference's vectors, then attacks built with our own keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from service.settings import V3Source
from service.verify.errors import KeysUnavailableError, MalformedDeliveryError, UnauthenticDeliveryError
from service.verify.set_token import V3Policy, verify_token
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, claims, sign, unsigned
from tests.unit.verify.conftest import CacheFactory, PolicyFactory
from tests.unit.verify.mock_jwks import MockJwksEndpoint

V3_VECTORS: dict[str, Any] = json.loads((Path(__file__).parents[2] / "vectors" / "v3.json").read_text("utf-8"))
NOW = 1_714_566_896
MAX_AGE = 48 * 3600
SKEW = 60
OLD_ISSUER = "Akamai Identity Cloud"


def _vector_policy() -> V3Policy:
    policy = V3_VECTORS["policy"]
    return V3Policy(
        jwks_url=V3_VECTORS["jwks_url"],
        issuers=(policy["issuer"],),
        audiences=(policy["audience"],),
        max_age=policy["max_age"],
        clock_skew=policy["clock_skew"],
    )


def _without(payload: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != name}


def _sign_raw(payload: bytes, key: SigningKey, **header: Any) -> str:
    """An RS256 JWS over arbitrary payload bytes, for payloads tokens.sign cannot express."""
    return jwt.PyJWS().encode(payload, key.private, algorithm="RS256", headers={"typ": "secevent+jwt", **header})


@pytest.mark.anyio
class TestVectors:
    @pytest.mark.parametrize("vector", V3_VECTORS["tokens"], ids=[vector["id"] for vector in V3_VECTORS["tokens"]])
    async def test_reference_tokens(self, make_cache: CacheFactory, vector: dict[str, Any]) -> None:
        """Each token of capture-protocol.md 6.4 verifies, or is refused, as the reference says."""
        endpoint = MockJwksEndpoint(V3_VECTORS["jwks_url"], V3_VECTORS["jwks"])
        cache = make_cache(endpoint)
        expected = vector["expected"]

        if expected["outcome"] == "verified":
            verified = await verify_token(vector["token"], cache, _vector_policy(), now=V3_VECTORS["now"])
            assert verified == expected["claims"]
        else:
            with pytest.raises(UnauthenticDeliveryError) as caught:
                await verify_token(vector["token"], cache, _vector_policy(), now=V3_VECTORS["now"])
            assert type(caught.value).__name__ == expected["error"]
            assert caught.value.reason == expected["reason"]

        assert endpoint.fetches == 1


@pytest.mark.anyio
class TestAccepted:
    async def test_valid_token_returns_its_claims(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A token signed by a published key, with matching claims, returns the claims unchanged."""
        payload = claims(now=NOW)

        verified = await verify_token(sign(payload, signing_key), make_cache(), make_policy(), now=NOW)

        assert verified == payload

    async def test_configured_jku_is_accepted(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A jku equal to the configured JWKS URL, as current Akamai tokens carry, is fine."""
        policy = make_policy()
        token = sign(claims(now=NOW), signing_key, jku=policy.jwks_url)

        verified = await verify_token(token, make_cache(), policy, now=NOW)

        assert verified["iat"] == NOW

    @pytest.mark.parametrize("typ", ["secevent+jwt", "application/secevent+jwt", "SECEVENT+JWT"])
    async def test_set_media_types_are_accepted(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, typ: str
    ) -> None:
        """typ may carry the application/ prefix (RFC 7515) and is compared without case."""
        token = sign(claims(now=NOW), signing_key, typ=typ)

        verified = await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert "events" in verified

    async def test_aud_as_plain_string_is_accepted(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """aud as a single string (the oldest doc sample) matches the configured audience."""
        token = sign(claims(now=NOW, aud=AUDIENCE), signing_key)

        verified = await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert verified["aud"] == AUDIENCE

    async def test_aud_list_naming_the_audience_among_others_is_accepted(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """aud as a list is accepted when one of its entries is the configured audience."""
        token = sign(claims(now=NOW, aud=["https://other.example.com/hook", AUDIENCE]), signing_key)

        verified = await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert AUDIENCE in verified["aud"]

    @pytest.mark.parametrize("issuer", [ISSUER, OLD_ISSUER], ids=["url-form", "old-string-form"])
    async def test_any_of_several_configured_issuers_is_accepted(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, issuer: str
    ) -> None:
        """With issuer configured as a list, both forms Akamai has used are accepted."""
        policy = make_policy(issuers=(ISSUER, OLD_ISSUER))

        verified = await verify_token(sign(claims(now=NOW, iss=issuer), signing_key), make_cache(), policy, now=NOW)

        assert verified["iss"] == issuer

    async def test_unconfigured_issuer_and_audience_are_not_checked(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """Without issuer and audience in the config, any iss and aud pass."""
        policy = make_policy(issuers=None, audiences=None)
        token = sign(claims(now=NOW, iss="https://elsewhere.example.com", aud="https://x.example.com"), signing_key)

        verified = await verify_token(token, make_cache(), policy, now=NOW)

        assert verified["iss"] == "https://elsewhere.example.com"

    @pytest.mark.parametrize(
        "iat", [NOW - MAX_AGE, NOW + SKEW, NOW + SKEW - 1], ids=["exactly-max-age", "exactly-skew", "within-skew"]
    )
    async def test_iat_at_the_limits_is_accepted(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, iat: int
    ) -> None:
        """iat exactly max_age old, or ahead of our clock by no more than the skew, is accepted."""
        token = sign(claims(now=iat), signing_key)

        verified = await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert verified["iat"] == iat

    async def test_test_event_is_verified(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A test event carries no sub and is verified like any other."""
        token = sign(claims("test", now=NOW), signing_key)

        verified = await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert list(verified["events"]) == ["test"]


@pytest.mark.anyio
class TestRefusedHeader:
    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS256", "RS384", "PS256", "ES256", ""])
    async def test_alg_other_than_rs256_is_refused_before_any_key_fetch(
        self,
        make_cache: CacheFactory,
        make_policy: PolicyFactory,
        jwks_endpoint: MockJwksEndpoint,
        signing_key: SigningKey,
        alg: str,
    ) -> None:
        """Any alg but RS256 is alg_not_allowed, decided from the header alone."""
        token = unsigned(claims(now=NOW), {"alg": alg, "typ": "secevent+jwt", "kid": signing_key.kid})

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "alg_not_allowed"
        assert jwks_endpoint.fetches == 0

    async def test_alg_none_with_signature_segment_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """alg none is refused even when a signature segment is present."""
        token = unsigned(claims(now=NOW), {"alg": "none", "typ": "secevent+jwt", "kid": signing_key.kid}, b"x" * 32)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "alg_not_allowed"

    async def test_hs256_keyed_with_the_public_key_is_refused(
        self,
        make_cache: CacheFactory,
        make_policy: PolicyFactory,
        jwks_endpoint: MockJwksEndpoint,
        signing_key: SigningKey,
    ) -> None:
        """The key-confusion attack (HMAC keyed with the published RSA key PEM) is refused."""
        payload = claims(now=NOW)
        header = {"alg": "HS256", "typ": "secevent+jwt", "kid": signing_key.kid}
        signing_input = unsigned(payload, header).rsplit(".", 1)[0]
        mac = hmac.new(signing_key.public_pem, signing_input.encode(), hashlib.sha256).digest()
        token = unsigned(payload, header, mac)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "alg_not_allowed"
        assert jwks_endpoint.fetches == 0

    async def test_foreign_jku_is_refused_and_never_fetched(
        self,
        make_cache: CacheFactory,
        make_policy: PolicyFactory,
        jwks_endpoint: MockJwksEndpoint,
        signing_key: SigningKey,
    ) -> None:
        """A jku other than the configured JWKS URL is refused without any fetch."""
        token = sign(claims(now=NOW), signing_key, jku="https://attacker.example.com/jwk")

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "jku_not_allowed"
        assert jwks_endpoint.fetches == 0

    @pytest.mark.parametrize("param", ["jwk", "x5u", "x5c"])
    async def test_token_naming_its_own_key_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, param: str
    ) -> None:
        """An embedded jwk, x5u or x5c header is refused even when the signature is good."""
        values: dict[str, Any] = {
            "jwk": signing_key.public_jwk,
            "x5u": "https://attacker.example.com/cert.pem",
            "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
        }
        token = sign(claims(now=NOW), signing_key, **{param: values[param]})

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "key_source_not_allowed"

    @pytest.mark.parametrize("typ", ["JWT", "at+jwt", "secevent", 1])
    async def test_wrong_typ_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, typ: object
    ) -> None:
        """A typ other than secevent+jwt is refused (a plain JWT is not a Security Event Token)."""
        token = sign(claims(now=NOW), signing_key, typ=typ)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "typ_not_allowed"

    async def test_missing_typ_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A header without typ is refused."""
        header = {"alg": "RS256", "kid": signing_key.kid}

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(unsigned(claims(now=NOW), header, b"sig"), make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "typ_not_allowed"

    @pytest.mark.parametrize("kid", [None, "", 42], ids=["absent", "empty", "number"])
    async def test_missing_kid_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, kid: object
    ) -> None:
        """Without a usable kid no key can be chosen."""
        header: dict[str, Any] = {"alg": "RS256", "typ": "secevent+jwt"}
        if kid is not None:
            header["kid"] = kid

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(unsigned(claims(now=NOW), header, b"sig"), make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "kid_missing"

    async def test_critical_header_parameters_are_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A crit header names extensions we do not implement, so the token is refused."""
        token = sign(claims(now=NOW), signing_key, crit=["exp"])

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "crit_not_supported"


@pytest.mark.anyio
class TestRefusedKeyOrSignature:
    async def test_unknown_kid_is_refused_after_one_refetch(
        self,
        make_cache: CacheFactory,
        make_policy: PolicyFactory,
        jwks_endpoint: MockJwksEndpoint,
        signing_key: SigningKey,
        stranger_key: SigningKey,
    ) -> None:
        """A kid missing from a freshly fetched JWKS is kid_unknown, after exactly one refetch."""
        cache = make_cache(cooldown=30.0)
        await verify_token(sign(claims(now=NOW), signing_key), cache, make_policy(), now=NOW)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(sign(claims(now=NOW), stranger_key), cache, make_policy(), now=NOW + 30)

        assert caught.value.reason == "kid_unknown"
        assert jwks_endpoint.fetches == 2

    async def test_second_unknown_kid_within_the_cooldown_causes_no_fetch(
        self,
        make_cache: CacheFactory,
        make_policy: PolicyFactory,
        jwks_endpoint: MockJwksEndpoint,
        stranger_key: SigningKey,
    ) -> None:
        """A second token with an unknown kid inside the cool-down fetches nothing and asks for a retry."""
        cache = make_cache(cooldown=30.0)
        with pytest.raises(UnauthenticDeliveryError):
            await verify_token(sign(claims(now=NOW), stranger_key), cache, make_policy(), now=NOW)
        another = SigningKey.generate("kid-another-stranger")

        with pytest.raises(KeysUnavailableError) as caught:
            await verify_token(sign(claims(now=NOW), another), cache, make_policy(), now=NOW + 29)

        assert caught.value.reason == "jwks_unavailable"
        assert jwks_endpoint.fetches == 1

    async def test_same_kid_other_key_fails_the_signature(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, rogue_key: SigningKey
    ) -> None:
        """A token signed by a key that merely claims a published kid is signature_invalid."""
        token = sign(claims(now=NOW), rogue_key)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "signature_invalid"

    async def test_forged_token_never_reaches_the_claim_checks(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, rogue_key: SigningKey
    ) -> None:
        """A bad signature wins over bad claims: unauthenticated claims are never judged."""
        payload = _without(claims(now=NOW - 10 * MAX_AGE, aud="https://x.example.com"), "jti")

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(sign(payload, rogue_key), make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "signature_invalid"

    async def test_payload_swapped_under_a_valid_signature_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """Replacing the payload of a genuine token breaks the signature."""
        genuine = sign(claims(now=NOW), signing_key)
        forged_payload = sign(claims(now=NOW, jti="forged"), signing_key).split(".")[1]
        header, _, signature = genuine.split(".")

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(f"{header}.{forged_payload}.{signature}", make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "signature_invalid"

    async def test_keys_unavailable_when_the_endpoint_is_down(
        self,
        make_cache: CacheFactory,
        make_policy: PolicyFactory,
        jwks_endpoint: MockJwksEndpoint,
        signing_key: SigningKey,
    ) -> None:
        """With no key cached and the JWKS endpoint failing, the token cannot be judged yet."""
        jwks_endpoint.status = 503

        with pytest.raises(KeysUnavailableError) as caught:
            await verify_token(sign(claims(now=NOW), signing_key), make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "jwks_unavailable"


@pytest.mark.anyio
class TestRefusedClaims:
    @pytest.mark.parametrize(
        ("overrides", "reason"),
        [
            pytest.param({"aud": ["https://hooks.example.com/other"]}, "aud_mismatch", id="wrong-aud-list"),
            pytest.param({"aud": "https://hooks.example.com/other"}, "aud_mismatch", id="wrong-aud-string"),
            pytest.param({"aud": [AUDIENCE + "/"]}, "aud_mismatch", id="aud-with-trailing-slash"),
            pytest.param({"aud": [{"url": AUDIENCE}]}, "aud_mismatch", id="aud-list-of-objects"),
            pytest.param({"aud": None}, "aud_mismatch", id="aud-null"),
            pytest.param({"iss": "https://v1.api.eu.janrain.com/other/webhooks"}, "iss_mismatch", id="wrong-iss"),
            pytest.param({"iss": OLD_ISSUER}, "iss_mismatch", id="old-iss-not-configured"),
            pytest.param({"iss": [ISSUER]}, "iss_mismatch", id="iss-as-list"),
            pytest.param({"iat": NOW - MAX_AGE - 1}, "iat_too_old", id="iat-past-max-age"),
            pytest.param({"iat": NOW - 30 * 86400}, "iat_too_old", id="iat-a-month-old"),
            pytest.param({"iat": NOW + SKEW + 1}, "iat_in_future", id="iat-beyond-skew"),
        ],
    )
    async def test_unauthentic_claims_are_refused(
        self,
        make_cache: CacheFactory,
        make_policy: PolicyFactory,
        signing_key: SigningKey,
        overrides: dict[str, Any],
        reason: str,
    ) -> None:
        """A well-signed token whose issuer, audience or age does not fit the policy is unauthentic."""
        token = _sign_raw(json.dumps(claims(now=NOW, **overrides)).encode(), signing_key, kid=signing_key.kid)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == reason

    async def test_missing_aud_is_refused_when_an_audience_is_configured(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A token without aud does not name us, so it is refused."""
        token = sign(_without(claims(now=NOW), "aud"), signing_key)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "aud_mismatch"

    @pytest.mark.parametrize(
        "payload",
        [
            pytest.param(_without(claims(now=NOW), "jti"), id="missing-jti"),
            pytest.param(claims(now=NOW, jti=""), id="empty-jti"),
            pytest.param(claims(now=NOW, jti=12345), id="numeric-jti"),
            pytest.param(claims(now=NOW, jti="j" * 257), id="overlong-jti"),
            pytest.param(_without(claims(now=NOW), "iat"), id="missing-iat"),
            pytest.param(claims(now=NOW, iat=str(NOW)), id="iat-as-string"),
            pytest.param(claims(now=NOW, iat=True), id="iat-as-boolean"),
            pytest.param(claims(now=NOW, toe="yesterday"), id="toe-as-string"),
            pytest.param(_without(claims(now=NOW), "events"), id="missing-events"),
            pytest.param(claims(now=NOW, events={}), id="no-event"),
            pytest.param(
                claims(now=NOW, events={"entityUpdated": {"sub": "a"}, "entityDeleted": {"sub": "a"}}),
                id="two-events",
            ),
            pytest.param(claims(now=NOW, events={"entityUpdated": "changed"}), id="event-not-an-object"),
            pytest.param(claims(now=NOW, events=[{"entityUpdated": {}}]), id="events-as-list"),
        ],
    )
    async def test_malformed_claims_are_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, payload: dict[str, Any]
    ) -> None:
        """Claims that do not have the SET shape are claims_malformed."""
        token = sign(payload, signing_key)

        with pytest.raises(MalformedDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "claims_malformed"

    @pytest.mark.parametrize(
        "payload",
        [b"[1, 2, 3]", b'"a string"', b"42", b"null", b"not json", b"\xff\xfe"],
        ids=["array", "string", "number", "null", "not-json", "not-utf8"],
    )
    async def test_payload_that_is_not_a_json_object_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, payload: bytes
    ) -> None:
        """A signed payload that is not a JSON object is claims_malformed."""
        token = _sign_raw(payload, signing_key, kid=signing_key.kid)

        with pytest.raises(MalformedDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "claims_malformed"


@pytest.mark.anyio
class TestMalformedToken:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param("", id="empty-string"),
            pytest.param("not a token", id="words"),
            pytest.param("..", id="empty-segments"),
            pytest.param("a.b.c.d", id="four-segments"),
            pytest.param("\x00\xff\xfe.\x80\x81.\x01\x02", id="binary-garbage"),
            pytest.param("\u00e9t\u00e9.x.y", id="non-ascii"),
            pytest.param("eyJhbGciOiJSUzI1NiJ9.eyJ", id="two-segments"),
            pytest.param("e.eyJ.sig", id="header-bad-base64"),
            pytest.param("bm90IGpzb24.eyJ9.sig", id="header-not-json"),
            pytest.param("WzFd.eyJ9.sig", id="header-a-json-array"),
        ],
    )
    async def test_bodies_that_are_not_a_compact_jws_are_malformed(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, jwks_endpoint: MockJwksEndpoint, body: str
    ) -> None:
        """Anything that is not header.payload.signature is token_malformed and fetches no key."""
        policy = make_policy()

        with pytest.raises(MalformedDeliveryError) as caught:
            await verify_token(body, make_cache(), policy, now=NOW)

        assert caught.value.reason == "token_malformed"
        assert jwks_endpoint.fetches == 0

    async def test_token_cut_before_the_signature_is_malformed(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A token truncated to header.payload is token_malformed."""
        token = sign(claims(now=NOW), signing_key).rsplit(".", 1)[0]

        with pytest.raises(MalformedDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "token_malformed"

    async def test_token_cut_inside_the_payload_is_malformed(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A token truncated in the middle of its payload is token_malformed."""
        token = sign(claims(now=NOW), signing_key)
        header, payload, _ = token.split(".")

        with pytest.raises(MalformedDeliveryError) as caught:
            await verify_token(f"{header}.{payload[: len(payload) // 2]}", make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "token_malformed"

    # Cuts that leave a multiple of four characters, so the shortened signature is still canonical base64url.
    @pytest.mark.parametrize("cut", [2, 10, 170], ids=["two-characters", "ten-characters", "half"])
    async def test_token_with_a_truncated_signature_is_refused(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey, cut: int
    ) -> None:
        """A signature that lost its tail does not verify."""
        token = sign(claims(now=NOW), signing_key)[:-cut]

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "signature_invalid"

    async def test_signed_payload_that_is_not_base64url_is_malformed(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A correctly signed token whose payload segment cannot be base64url (5 characters) is a 400, not a 500."""
        header = base64.urlsafe_b64encode(
            json.dumps({"alg": "RS256", "typ": "secevent+jwt", "kid": signing_key.kid}).encode()
        )
        signing_input = header.rstrip(b"=") + b".AAAAA"
        signature = signing_key.private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        token = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()

        with pytest.raises(MalformedDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "claims_malformed"

    async def test_signature_that_is_not_base64url_is_malformed(
        self, make_cache: CacheFactory, make_policy: PolicyFactory, signing_key: SigningKey
    ) -> None:
        """A signature of 341 characters (never valid base64url) cannot be decoded: token_malformed."""
        token = sign(claims(now=NOW), signing_key)[:-1]

        with pytest.raises(MalformedDeliveryError) as caught:
            await verify_token(token, make_cache(), make_policy(), now=NOW)

        assert caught.value.reason == "token_malformed"


class TestPolicy:
    def test_policy_from_settings_takes_issuer_and_audience_as_tuples(self) -> None:
        """A single configured issuer or audience becomes a one-element tuple."""
        source = V3Source.model_validate(
            {"jwks_url": "https://v1.api.us.janrain.com/x/login/jwk", "issuer": ISSUER, "audience": [AUDIENCE]}
        )

        policy = V3Policy.from_settings(source)

        assert (policy.issuers, policy.audiences) == ((ISSUER,), (AUDIENCE,))
        assert (policy.max_age, policy.clock_skew) == (48 * 3600.0, 60.0)

    def test_policy_without_issuer_or_audience_checks_neither(self) -> None:
        """Unconfigured issuer and audience become None, which skips those checks."""
        source = V3Source.model_validate({"jwks_url": "https://v1.api.us.janrain.com/x/login/jwk"})

        policy = V3Policy.from_settings(source)

        assert (policy.issuers, policy.audiences) == (None, None)
