"""JwksCache timing rules (ttl, cool-down, failures, concurrency) and parse_jwks, with ``now`` passed in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from service.verify.errors import KeysUnavailableError, UnauthenticDeliveryError
from service.verify.jwks import parse_jwks
from tests.support.tokens import SigningKey
from tests.unit.verify.conftest import CacheFactory
from tests.unit.verify.mock_jwks import MockJwksEndpoint

NOW = 1_714_566_896.0
COOLDOWN = 30.0
TTL = 600.0

Breakage = Callable[[MockJwksEndpoint], None]


def _answer_503(endpoint: MockJwksEndpoint) -> None:
    endpoint.status = 503


def _refuse_connections(endpoint: MockJwksEndpoint) -> None:
    endpoint.error = httpx2.ConnectError


def _time_out(endpoint: MockJwksEndpoint) -> None:
    endpoint.error = httpx2.ReadTimeout


def _answer_html(endpoint: MockJwksEndpoint) -> None:
    endpoint.body = b"<html>down for maintenance</html>"


def _publish_no_usable_key(endpoint: MockJwksEndpoint) -> None:
    endpoint.document = {"keys": [{"kty": "oct", "kid": "kid-primary", "k": "c2VjcmV0"}]}


def _redirect_elsewhere(endpoint: MockJwksEndpoint) -> None:
    endpoint.status = 302
    endpoint.headers = {"location": "https://attacker.example.com/jwk"}


BREAKAGES = [
    pytest.param(_answer_503, id="http-503"),
    pytest.param(_refuse_connections, id="connection-refused"),
    pytest.param(_time_out, id="read-timeout"),
    pytest.param(_answer_html, id="not-json"),
    pytest.param(_publish_no_usable_key, id="no-usable-key"),
    pytest.param(_redirect_elsewhere, id="redirect"),
]


@pytest.fixture(scope="module")
def weak_key() -> SigningKey:
    """A 1024-bit RSA key: too short to be trusted."""
    return SigningKey.generate("kid-weak", bits=1024)


def _ec_jwk(kid: str) -> dict[str, Any]:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    return {**jwk, "kid": kid, "use": "sig"}


@pytest.mark.anyio
class TestLoading:
    async def test_first_request_fetches_the_configured_url(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """The first key_for fetches the JWKS once, with GET on the configured URL, and returns the key."""
        cache = make_cache()

        key = await cache.key_for(signing_key.kid, NOW)

        assert key.key_id == signing_key.kid
        assert cache.loaded
        assert [(request.method, str(request.url)) for request in jwks_endpoint.requests] == [
            ("GET", jwks_endpoint.url)
        ]

    async def test_fetch_uses_the_configured_timeout(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """The fetch carries jwks_timeout for every phase, so a hanging endpoint cannot hold a request."""
        cache = make_cache(timeout=2.5)

        await cache.key_for(signing_key.kid, NOW)

        timeouts = jwks_endpoint.requests[0].extensions["timeout"]
        assert timeouts == {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}

    async def test_cached_key_is_served_without_fetching(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """Within the ttl a known kid is answered from the cache."""
        cache = make_cache(ttl=TTL)
        first = await cache.key_for(signing_key.kid, NOW)

        again = await cache.key_for(signing_key.kid, NOW + TTL - 1)

        assert again is first
        assert jwks_endpoint.fetches == 1

    async def test_ttl_expiry_refreshes(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """Once the ttl has passed, the next request refetches the key set."""
        cache = make_cache(ttl=TTL, cooldown=COOLDOWN)
        await cache.key_for(signing_key.kid, NOW)

        key = await cache.key_for(signing_key.kid, NOW + TTL)

        assert key.key_id == signing_key.kid
        assert jwks_endpoint.fetches == 2

    async def test_ttl_refresh_drops_withdrawn_keys(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """A key Capture stopped publishing is no longer accepted after the ttl refresh."""
        cache = make_cache(ttl=TTL, cooldown=COOLDOWN)
        await cache.key_for(signing_key.kid, NOW)
        jwks_endpoint.document = {"keys": [SigningKey.generate("kid-successor").public_jwk]}

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await cache.key_for(signing_key.kid, NOW + TTL)

        assert caught.value.reason == "kid_unknown"
        assert jwks_endpoint.fetches == 2

    @pytest.mark.parametrize("breakage", BREAKAGES)
    async def test_failed_refresh_keeps_serving_the_cached_key(
        self,
        make_cache: CacheFactory,
        jwks_endpoint: MockJwksEndpoint,
        signing_key: SigningKey,
        breakage: Breakage,
    ) -> None:
        """When the ttl refresh fails, the stale key still verifies rather than refusing Capture's events."""
        cache = make_cache(ttl=TTL, cooldown=COOLDOWN)
        cached = await cache.key_for(signing_key.kid, NOW)
        breakage(jwks_endpoint)

        key = await cache.key_for(signing_key.kid, NOW + TTL)

        assert key is cached
        assert jwks_endpoint.fetches == 2

    async def test_failed_refresh_is_not_retried_within_the_cooldown(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """After a failed refresh, requests within the cool-down use the stale key without fetching."""
        cache = make_cache(ttl=TTL, cooldown=COOLDOWN)
        await cache.key_for(signing_key.kid, NOW)
        jwks_endpoint.status = 503
        await cache.key_for(signing_key.kid, NOW + TTL)

        for offset in (1.0, COOLDOWN / 2, COOLDOWN - 1):
            await cache.key_for(signing_key.kid, NOW + TTL + offset)

        assert jwks_endpoint.fetches == 2

    async def test_redirect_is_not_followed(self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint) -> None:
        """A redirect from the JWKS URL is a failure; the other location is never fetched."""
        _redirect_elsewhere(jwks_endpoint)
        cache = make_cache()

        with pytest.raises(KeysUnavailableError):
            await cache.key_for("kid-primary", NOW)

        assert [str(request.url) for request in jwks_endpoint.requests] == [jwks_endpoint.url]

    async def test_ensure_loaded_reports_available_keys(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint
    ) -> None:
        """ensure_loaded (behind /readyz) fetches once and then answers from the cache."""
        cache = make_cache()

        results = [await cache.ensure_loaded(NOW), await cache.ensure_loaded(NOW + 1)]

        assert results == [True, True]
        assert jwks_endpoint.fetches == 1

    @pytest.mark.parametrize("breakage", BREAKAGES)
    async def test_ensure_loaded_is_false_while_the_endpoint_is_down(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, breakage: Breakage
    ) -> None:
        """Without any usable key the service is not ready."""
        breakage(jwks_endpoint)
        cache = make_cache()

        ready = await cache.ensure_loaded(NOW)

        assert ready is False
        assert not cache.loaded


@pytest.mark.anyio
class TestUnknownKid:
    async def test_unknown_kid_is_refused_after_exactly_one_refetch(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint
    ) -> None:
        """Past the cool-down, an unknown kid triggers one refetch and then kid_unknown."""
        cache = make_cache(cooldown=COOLDOWN)
        await cache.ensure_loaded(NOW)

        with pytest.raises(UnauthenticDeliveryError) as caught:
            await cache.key_for("kid-nobody-published", NOW + COOLDOWN)

        assert caught.value.reason == "kid_unknown"
        assert jwks_endpoint.fetches == 2

    async def test_second_unknown_kid_within_the_cooldown_causes_no_fetch(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint
    ) -> None:
        """Within the cool-down an unknown kid fetches nothing and asks the sender to retry later."""
        cache = make_cache(cooldown=COOLDOWN)
        await cache.ensure_loaded(NOW)
        with pytest.raises(UnauthenticDeliveryError):
            await cache.key_for("kid-first-stranger", NOW + COOLDOWN)

        with pytest.raises(KeysUnavailableError) as caught:
            await cache.key_for("kid-second-stranger", NOW + 2 * COOLDOWN - 1)

        assert caught.value.reason == "jwks_unavailable"
        assert jwks_endpoint.fetches == 2

    async def test_refetch_happens_at_most_once_per_cooldown(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint
    ) -> None:
        """A flood of unknown kids fetches once per cool-down period, not once per token."""
        cache = make_cache(cooldown=COOLDOWN)
        await cache.ensure_loaded(NOW)

        for step in range(1, 91):
            with pytest.raises((UnauthenticDeliveryError, KeysUnavailableError)):
                await cache.key_for(f"kid-forged-{step}", NOW + step)

        assert jwks_endpoint.fetches == 1 + 3

    async def test_key_published_since_the_last_fetch_is_found(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """After a rotation, the refetch for the new kid finds it and the old key stays usable."""
        cache = make_cache(cooldown=COOLDOWN)
        await cache.ensure_loaded(NOW)
        successor = SigningKey.generate("kid-rotated")
        jwks_endpoint.document = {"keys": [signing_key.public_jwk, successor.public_jwk]}

        key = await cache.key_for(successor.kid, NOW + COOLDOWN)

        assert key.key_id == successor.kid
        assert (await cache.key_for(signing_key.kid, NOW + COOLDOWN + 1)).key_id == signing_key.kid
        assert jwks_endpoint.fetches == 2

    @pytest.mark.parametrize("breakage", BREAKAGES)
    async def test_unknown_kid_while_the_endpoint_is_down_is_unavailable(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, breakage: Breakage
    ) -> None:
        """If the keys cannot be fetched the sender is asked to retry (503), never told the token is bad."""
        breakage(jwks_endpoint)
        cache = make_cache()

        with pytest.raises(KeysUnavailableError) as caught:
            await cache.key_for("kid-primary", NOW)

        assert caught.value.reason == "jwks_unavailable"
        assert jwks_endpoint.fetches == 1

    async def test_unknown_kid_after_a_failed_refetch_is_unavailable(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint
    ) -> None:
        """With keys cached but the endpoint down, an unknown kid is a retry-later, not kid_unknown."""
        cache = make_cache(cooldown=COOLDOWN)
        await cache.ensure_loaded(NOW)
        jwks_endpoint.status = 500

        with pytest.raises(KeysUnavailableError):
            await cache.key_for("kid-rotated", NOW + COOLDOWN)

        assert jwks_endpoint.fetches == 2

    async def test_concurrent_requests_for_an_unknown_kid_share_one_fetch(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint
    ) -> None:
        """Twenty simultaneous tokens with the same unknown kid cause one fetch, and all are refused."""
        cache = make_cache(cooldown=COOLDOWN)

        outcomes = await asyncio.gather(*(cache.key_for("kid-unknown", NOW) for _ in range(20)), return_exceptions=True)

        assert jwks_endpoint.fetches == 1
        assert all(isinstance(outcome, UnauthenticDeliveryError | KeysUnavailableError) for outcome in outcomes)

    async def test_callers_waiting_on_a_fetch_get_its_answer(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint
    ) -> None:
        """Callers that waited for the in-flight fetch are judged by its result: kid_unknown for all twenty."""
        cache = make_cache(cooldown=COOLDOWN)

        outcomes = await asyncio.gather(*(cache.key_for("kid-unknown", NOW) for _ in range(20)), return_exceptions=True)

        reasons = [getattr(outcome, "reason", type(outcome).__name__) for outcome in outcomes]
        assert reasons == ["kid_unknown"] * 20

    async def test_concurrent_requests_on_a_cold_cache_share_one_fetch(
        self, make_cache: CacheFactory, jwks_endpoint: MockJwksEndpoint, signing_key: SigningKey
    ) -> None:
        """Twenty simultaneous first requests for a published kid cause one fetch and all get the key."""
        cache = make_cache(cooldown=COOLDOWN)

        keys = await asyncio.gather(*(cache.key_for(signing_key.kid, NOW) for _ in range(20)))

        assert jwks_endpoint.fetches == 1
        assert {key.key_id for key in keys} == {signing_key.kid}


class TestParseJwks:
    def test_accepts_a_key_set(self, signing_key: SigningKey) -> None:
        """A standard {"keys": [...]} document yields its keys by kid."""
        document = {"keys": [signing_key.public_jwk]}

        keys = parse_jwks(document)

        assert list(keys) == [signing_key.kid]
        assert keys[signing_key.kid].algorithm_name == "RS256"

    def test_accepts_a_bare_list(self, signing_key: SigningKey, stranger_key: SigningKey) -> None:
        """A JSON array of keys is accepted."""
        document = [signing_key.public_jwk, stranger_key.public_jwk]

        keys = parse_jwks(document)

        assert sorted(keys) == sorted([signing_key.kid, stranger_key.kid])

    def test_accepts_a_single_key(self, signing_key: SigningKey) -> None:
        """A single key object, as Capture's documentation shows, is accepted."""
        document = signing_key.public_jwk

        keys = parse_jwks(document)

        assert list(keys) == [signing_key.kid]

    def test_key_without_use_or_alg_is_accepted(self, signing_key: SigningKey) -> None:
        """use and alg are optional in a JWK; absent, they default to sig and RS256."""
        jwk = {name: value for name, value in signing_key.public_jwk.items() if name not in ("use", "alg")}

        keys = parse_jwks({"keys": [jwk]})

        assert list(keys) == [signing_key.kid]

    @pytest.mark.parametrize(
        ("change", "reason"),
        [
            pytest.param({"kty": "EC"}, "kty other than RSA", id="kty-EC"),
            pytest.param({"use": "enc"}, "an encryption key", id="use-enc"),
            pytest.param({"alg": "RS512"}, "another algorithm", id="alg-RS512"),
            pytest.param({"alg": "HS256"}, "an HMAC algorithm", id="alg-HS256"),
            pytest.param({"kid": None}, "no usable kid", id="kid-null"),
            pytest.param({"kid": 7}, "no usable kid", id="kid-number"),
            pytest.param({"n": "not base64!"}, "a broken modulus", id="bad-modulus"),
        ],
    )
    def test_skips_unusable_keys(self, signing_key: SigningKey, change: dict[str, Any], reason: str) -> None:
        """A key that is not an RS256 signing key with a kid is skipped, and the usable ones kept."""
        broken = {**signing_key.public_jwk, **change, "kid": change.get("kid", "kid-broken")}

        keys = parse_jwks({"keys": [broken, signing_key.public_jwk]})

        assert list(keys) == [signing_key.kid], reason

    def test_skips_a_key_without_kid(self, signing_key: SigningKey) -> None:
        """A key with no kid cannot be selected by a token, so it is skipped."""
        jwk = {name: value for name, value in signing_key.public_jwk.items() if name != "kid"}

        keys = parse_jwks({"keys": [jwk]})

        assert keys == {}

    def test_skips_1024_bit_keys(self, weak_key: SigningKey, signing_key: SigningKey) -> None:
        """RSA keys shorter than 2048 bits are not trusted."""
        document = {"keys": [weak_key.public_jwk, signing_key.public_jwk]}

        keys = parse_jwks(document)

        assert list(keys) == [signing_key.kid]

    def test_skips_non_rsa_keys(self, signing_key: SigningKey) -> None:
        """EC and symmetric keys are skipped even when they carry a kid."""
        document = {
            "keys": [_ec_jwk("kid-ec"), {"kty": "oct", "kid": "kid-oct", "k": "c2VjcmV0"}, signing_key.public_jwk]
        }

        keys = parse_jwks(document)

        assert list(keys) == [signing_key.kid]

    def test_skips_a_key_with_private_parameters(self, signing_key: SigningKey) -> None:
        """A published private key is not a public verification key; it is skipped."""
        private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.private))
        jwk = {**private, "kid": "kid-leaked", "use": "sig", "alg": "RS256"}

        keys = parse_jwks({"keys": [jwk, signing_key.public_jwk]})

        assert list(keys) == [signing_key.kid]

    @pytest.mark.parametrize(
        "document",
        [
            pytest.param({"keys": "not-a-list"}, id="keys-not-a-list"),
            pytest.param({"keys": []}, id="empty-set"),
            pytest.param([], id="empty-list"),
            pytest.param(["a", 1, None], id="list-of-non-objects"),
            pytest.param("a string", id="string"),
            pytest.param(None, id="null"),
        ],
    )
    def test_documents_without_keys_yield_nothing(self, document: Any) -> None:
        """Any other document shape yields no key rather than an error."""
        keys = parse_jwks(document)

        assert keys == {}
