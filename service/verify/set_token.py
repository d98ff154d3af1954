"""Verification of Akamai Webhooks v3 deliveries: one compact JWS, a Security Event Token.

The checks follow DESIGN 3.1, in an order that never lets unauthenticated input reach the
claim checks: shape, then header (``alg`` RS256 only, ``typ``, no foreign key source), then the
signature with the key chosen by ``kid``, and only then the claims.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from service.settings import V3Source
from service.verify.errors import MalformedDeliveryError, UnauthenticDeliveryError, shown
from service.verify.jwks import JwksCache

ALGORITHM = "RS256"
# RFC 8417 names the type "secevent+jwt"; RFC 7515 lets it carry the "application/" prefix.
_ACCEPTED_TYP = {"secevent+jwt", "application/secevent+jwt"}
# An empty signature is allowed here so that the alg check refuses ``alg: none`` by name.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Header parameters that would let the token name its own key; never honoured.
_KEY_SOURCE_PARAMS = ("jwk", "x5u", "x5c")


@dataclass(frozen=True, slots=True)
class V3Policy:
    """What a v3 token must satisfy, taken from ``sources.v3``."""

    jwks_url: str
    issuers: tuple[str, ...] | None
    audiences: tuple[str, ...] | None
    max_age: float
    clock_skew: float

    @classmethod
    def from_settings(cls, source: V3Source) -> V3Policy:
        """Build the policy from the validated configuration."""
        return cls(
            jwks_url=source.jwks_url,
            issuers=tuple(source.issuer) if source.issuer else None,
            audiences=tuple(source.audience) if source.audience else None,
            max_age=source.max_age,
            clock_skew=source.clock_skew,
        )


async def verify_token(token: str, jwks: JwksCache, policy: V3Policy, now: float) -> dict[str, Any]:
    """Verify a Security Event Token and return its claims.

    Raises:
        MalformedDeliveryError: the token or its claims are not well formed.
        UnauthenticDeliveryError: signature, key, issuer, audience or age check failed.
        KeysUnavailableError: the JWKS cannot be fetched right now.
    """
    header = _header(token)
    _check_header(header, policy)
    key = await jwks.key_for(header["kid"], now)
    _check_signature(token, key.key)
    claims = _claims(token.split(".")[1])
    check_claims(claims, policy, now)
    return claims


def _check_signature(token: str, key: RSAPublicKey) -> None:
    # RS256 is RSASSA-PKCS1-v1_5 with SHA-256 over the ASCII of "header.payload" (RFC 7518 3.3).
    # The header check has pinned alg to RS256 and the JWKS cache holds only RSA keys, so the
    # algorithm never comes from the token; cryptography does the verification itself.
    signing_input, _, encoded_signature = token.rpartition(".")
    try:
        signature = _b64decode(encoded_signature)
    except binascii.Error as exc:
        raise MalformedDeliveryError("token_malformed", "the signature is not base64url") from exc
    try:
        key.verify(signature, signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise UnauthenticDeliveryError("signature_invalid", "the token's signature does not verify") from exc


def _header(token: str) -> dict[str, Any]:
    # Strict base64url: the standard decoder would skip foreign characters instead of refusing them.
    if _COMPACT_JWS.fullmatch(token) is None:
        raise MalformedDeliveryError("token_malformed", "the body is not a compact JWS (header.payload.signature)")
    try:
        header = orjson.loads(_b64decode(token.split(".", 1)[0]))
    except (ValueError, binascii.Error) as exc:
        raise MalformedDeliveryError("token_malformed", "the JWS header is not base64url-encoded JSON") from exc
    if not isinstance(header, dict):
        raise MalformedDeliveryError("token_malformed", "the JWS header is not a JSON object")
    return header


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _check_header(header: dict[str, Any], policy: V3Policy) -> None:
    if header.get("alg") != ALGORITHM:
        raise UnauthenticDeliveryError(
            "alg_not_allowed", f"alg {shown(header.get('alg'))} is not accepted; only {ALGORITHM} is"
        )
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
        raise UnauthenticDeliveryError("typ_not_allowed", f"typ {shown(typ)} is not accepted; expected secevent+jwt")
    if "jku" in header and header["jku"] != policy.jwks_url:
        raise UnauthenticDeliveryError("jku_not_allowed", "the token's jku is not the configured JWKS URL")
    if any(param in header for param in _KEY_SOURCE_PARAMS):
        raise UnauthenticDeliveryError("key_source_not_allowed", "the token names its own key; not accepted")
    if header.get("crit"):
        raise UnauthenticDeliveryError("crit_not_supported", "the token has critical header parameters")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnauthenticDeliveryError("kid_missing", "the token's header has no kid")


def _claims(encoded_payload: str) -> dict[str, Any]:
    try:
        claims = orjson.loads(_b64decode(encoded_payload))
    except binascii.Error as exc:
        raise MalformedDeliveryError("claims_malformed", "the token's payload is not base64url") from exc
    except ValueError as exc:
        raise MalformedDeliveryError("claims_malformed", "the token's payload is not JSON") from exc
    if not isinstance(claims, dict):
        raise MalformedDeliveryError("claims_malformed", "the token's payload is not a JSON object")
    return claims


def check_claims(claims: dict[str, Any], policy: V3Policy, now: float) -> None:
    """Check ``iss``, ``aud``, ``iat``, ``jti`` and the shape of ``events``."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise MalformedDeliveryError("claims_malformed", "claim jti: must be a non-empty string")
    if policy.issuers is not None and claims.get("iss") not in policy.issuers:
        raise UnauthenticDeliveryError("iss_mismatch", "claim iss: not the configured issuer")
    if policy.audiences is not None and not _audience_matches(claims.get("aud"), policy.audiences):
        raise UnauthenticDeliveryError("aud_mismatch", "claim aud: does not name the configured audience")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise MalformedDeliveryError("claims_malformed", "claim iat: must be a NumericDate")
    if now - iat > policy.max_age:
        raise UnauthenticDeliveryError("iat_too_old", f"claim iat: older than {policy.max_age:.0f} s")
    if iat - now > policy.clock_skew:
        raise UnauthenticDeliveryError("iat_in_future", "claim iat: in the future beyond the allowed clock skew")
    if "toe" in claims and not _is_number(claims["toe"]):
        raise MalformedDeliveryError("claims_malformed", "claim toe: must be a NumericDate")
    events = claims.get("events")
    if not isinstance(events, dict) or len(events) != 1:
        raise MalformedDeliveryError("claims_malformed", "claim events: must hold exactly one event")
    if not isinstance(next(iter(events.values())), dict):
        raise MalformedDeliveryError("claims_malformed", "claim events: the event must be a JSON object")


def _audience_matches(aud: Any, accepted: tuple[str, ...]) -> bool:
    if isinstance(aud, str):
        return aud in accepted
    if isinstance(aud, list):
        return any(isinstance(item, str) and item in accepted for item in aud)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
