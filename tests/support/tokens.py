"""Throw-away RSA keys and Security Event Tokens signed with them, for tests and benchmarks."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

JWKS_PATH = "/b18fc81d-457e-4a40-ac87-2b78bd946fa2/login/jwk"
ISSUER = "https://v1.api.us.janrain.com/b18fc81d-457e-4a40-ac87-2b78bd946fa2/webhooks"
AUDIENCE = "https://hooks.example.com/webhooks/capture/v3"
RECORD_UUID = "6b004bc5-179c-45c2-815d-31b06169371d"


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair with its ``kid``."""

    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str, bits: int = 2048) -> SigningKey:
        """A fresh key; 2048 bits unless a test wants a weak one."""
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public half as Capture publishes it."""
        numbers = self.private.public_key().public_numbers()
        return {
            "use": "sig",
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
            "e": _b64(numbers.e.to_bytes(3, "big")),
        }

    @property
    def public_pem(self) -> bytes:
        """The public key in PEM, as an attacker would use it for a key-confusion token."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(event_type: str = "entityUpdated", *, now: float | None = None, **overrides: Any) -> dict[str, Any]:
    """Claims of a v3 token as Akamai sends them; ``overrides`` replace top-level claims."""
    issued = int(time.time() if now is None else now)
    body: dict[str, Any] = {
        "captureApplicationId": "zzyn9gy9r8xdy5zkru4y54syk6",
        "captureClientId": "elrrniux51a3nrhfwzklvz3t46lb5n2m",
        "entityType": "user",
        "globalSub": f"capture-v1://us.janraincapture.com/zzyn9gy9r8xdy5zkru4y54syk6/user/{RECORD_UUID}",
        "sub": RECORD_UUID,
        "id": str(uuid.uuid4()),
    }
    if event_type == "entityUpdated":
        body["attributes"] = ["email", "primaryAddress.city"]
    if event_type == "test":
        body = {"id": str(uuid.uuid4())}
    return {
        "aud": [AUDIENCE],
        "iat": issued,
        "iss": ISSUER,
        "toe": issued,
        "jti": str(uuid.uuid4()),
        "events": {event_type: body},
        **overrides,
    }


def sign(payload: dict[str, Any], key: SigningKey, *, jku: str | None = None, **header: Any) -> str:
    """A compact JWS over ``payload`` with RS256 and the SET header; ``header`` overrides fields."""
    fields: dict[str, Any] = {"typ": "secevent+jwt", "kid": key.kid}
    if jku is not None:
        fields["jku"] = jku
    fields.update(header)
    return jwt.encode(payload, key.private, algorithm="RS256", headers=fields)


def unsigned(payload: dict[str, Any], header: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for headers no library would produce (``alg: none``)."""
    parts = [json.dumps(header).encode(), json.dumps(payload).encode(), signature]
    return ".".join(_b64(part) for part in parts[:2]) + "." + _b64(parts[2])
