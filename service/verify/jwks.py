"""A cache of the RS256 public keys that Capture signs Security Event Tokens with.

The keys come only from the configured URL, never from a URL named in a token. An unknown
``kid`` triggers at most one refetch per cool-down, so a flood of forged tokens cannot turn
this service into a load generator against the key endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httpx2
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from service.verify.errors import KeysUnavailableError, UnauthenticDeliveryError, shown

log = structlog.get_logger(__name__)

MIN_RSA_BITS = 2048


class JwksCache:
    """Keys by ``kid``, fetched from one URL, refreshed after ``ttl`` or on an unknown ``kid``.

    Every method takes ``now`` (epoch seconds) rather than reading the clock, so the cache's
    timing rules can be tested without sleeping.
    """

    def __init__(self, url: str, http: httpx2.AsyncClient, *, cooldown: float, ttl: float, timeout: float) -> None:
        self.url = url
        self._http = http
        self._cooldown = cooldown
        self._ttl = ttl
        self._timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None
        self._fetches_done = 0
        self._last_failure: str | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        """True once a fetch has produced at least one usable key."""
        return self._loaded_at is not None

    async def key_for(self, kid: str, now: float) -> jwt.PyJWK:
        """Return the key for ``kid``, refetching the JWKS when the cool-down allows.

        Raises:
            UnauthenticDeliveryError: ``kid_unknown`` when a key set fetched for this very
                request does not hold ``kid``.
            KeysUnavailableError: when the keys cannot be fetched, or the cool-down forbids a
                refetch: the key may have been published since the last fetch, so the sender
                is asked to retry rather than told the token is bad.
        """
        key = self._keys.get(kid)
        if key is not None and not self._expired(now):
            return key
        refetched = await self._refresh(now, force=key is None)
        key = self._keys.get(kid)
        if key is not None:
            # A stale key whose refresh failed is still better than refusing Capture's events.
            return key
        if self._last_failure is not None:
            raise KeysUnavailableError(self._last_failure)
        if not refetched:
            raise KeysUnavailableError(
                f"kid {shown(kid)} is not in the cached JWKS and the refetch cool-down is running"
            )
        raise UnauthenticDeliveryError("kid_unknown", f"no key with kid {shown(kid)} in the JWKS at {self.url}")

    async def ensure_loaded(self, now: float) -> bool:
        """Load the keys if none are loaded yet; True when keys are available (for ``/readyz``)."""
        if not self.loaded:
            await self._refresh(now, force=True)
        return self.loaded

    def _expired(self, now: float) -> bool:
        return self._loaded_at is None or now - self._loaded_at >= self._ttl

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self._cooldown

    async def _refresh(self, now: float, *, force: bool) -> bool:
        """Fetch the key set if allowed; True when a fetch finished during this call."""
        fetches_before = self._fetches_done
        async with self._lock:
            if self._fetches_done != fetches_before:
                return True  # another request fetched while we waited: use its result
            if not self._may_fetch(now) or (not force and not self._expired(now)):
                return False
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except KeysUnavailableError as exc:
                self._fetches_done += 1
                self._last_failure = str(exc)
                log.warning("jwks.fetch_failed", url=self.url, reason=str(exc))
                return True
            self._fetches_done += 1
            self._keys, self._loaded_at, self._last_failure = keys, now, None
            log.info("jwks.loaded", url=self.url, count=len(keys))
            return True

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        try:
            response = await self._http.get(self.url, timeout=self._timeout, follow_redirects=False)
        except httpx2.HTTPError as exc:
            raise KeysUnavailableError(f"cannot fetch the JWKS at {self.url}: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise KeysUnavailableError(f"the JWKS at {self.url} answered HTTP {response.status_code}")
        try:
            document = response.json()
        except ValueError as exc:
            raise KeysUnavailableError(f"the JWKS at {self.url} is not JSON") from exc
        keys = parse_jwks(document)
        if not keys:
            raise KeysUnavailableError(f"the JWKS at {self.url} holds no usable RS256 signing key")
        return keys


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """Usable RS256 keys by ``kid`` from a ``{"keys": [...]}`` set, a list, or a single key.

    Capture's documentation shows single key objects as well as key sets, so all are accepted.
    Keys that are not RSA signing keys of at least 2048 bits, or have no ``kid``, are skipped.
    """
    if isinstance(document, dict) and "keys" in document:
        candidates: Iterable[Any] = document["keys"] if isinstance(document["keys"], list) else []
    elif isinstance(document, list):
        candidates = document
    else:
        candidates = [document]
    keys: dict[str, jwt.PyJWK] = {}
    for candidate in candidates:
        key = _usable_key(candidate)
        if key is not None:
            keys[candidate["kid"]] = key
    return keys


def _usable_key(candidate: Any) -> jwt.PyJWK | None:
    if not isinstance(candidate, dict) or not isinstance(candidate.get("kid"), str):
        return None
    if candidate.get("kty") != "RSA" or candidate.get("alg", "RS256") != "RS256":
        return None
    if candidate.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(candidate, algorithm="RS256")
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        return None
    public = key.key
    if not isinstance(public, RSAPublicKey) or public.key_size < MIN_RSA_BITS:
        return None
    return key
