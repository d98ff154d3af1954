"""The RSA keys Akamai signs Webhooks v3 tokens with, and the JWK page that publishes them.

Akamai creates three key pairs per subscriber and publishes the public halves at
``/{customerId}/login/jwk`` (protocol reference 3.4). Key ids are 40 hex characters; here they are
the SHA-1 of the key's RFC 7638 members, so they look like Akamai's and are stable per key.

Signing uses ``cryptography`` directly rather than PyJWT: the simulator must not share a JWT
library's conventions with the receiver it tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

KEY_BITS = 2048
ALGORITHM = "RS256"


def b64url(raw: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def compact_json(value: Any) -> bytes:
    """JSON as Akamai's tokens carry it: no spaces, members in the order given."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One RSA key pair and its ``kid``."""

    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh 2048-bit key with a 40-hex ``kid``."""
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        numbers = private_key.public_key().public_numbers()
        # RFC 7638 members in lexicographic order; SHA-1 gives Akamai's 40-hex look.
        members = compact_json({"e": _uint(numbers.e), "kty": "RSA", "n": _uint(numbers.n)})
        return cls(hashlib.sha1(members, usedforsecurity=False).hexdigest(), private_key)

    def public_jwk(self) -> dict[str, str]:
        """The public half as the JWK page shows it."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "use": "sig",
            "kty": "RSA",
            "alg": ALGORITHM,
            "kid": self.kid,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
        }


class KeyRing:
    """The published keys, oldest first; the newest one signs.

    Thread-safe, because the control API may rotate while the emitter signs.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"a key ring needs at least one key, not {count}")
        self._lock = threading.Lock()
        self._keys = [SigningKey.generate() for _ in range(count)]

    @property
    def signing_key(self) -> SigningKey:
        """The key new tokens are signed with."""
        with self._lock:
            return self._keys[-1]

    @property
    def published(self) -> list[SigningKey]:
        """Every key on the JWK page, oldest first."""
        with self._lock:
            return list(self._keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK page: a JWK Set of every published key."""
        return {"keys": [key.public_jwk() for key in self.published]}

    def rotate(self, retire_oldest: bool = False) -> SigningKey:
        """Publish a new key and sign with it from now on.

        The old keys stay published, so tokens already sent (and their retries) still verify,
        unless ``retire_oldest`` withdraws the oldest one, as a receiver's cache must notice.
        """
        new = SigningKey.generate()
        with self._lock:
            self._keys.append(new)
            if retire_oldest:
                del self._keys[0]
        return new

    def sign(self, header: dict[str, Any], claims: dict[str, Any], *, key: SigningKey | None = None) -> str:
        """A compact JWS, RS256 over ``header.payload``.

        ``alg`` and ``kid`` default to RS256 and the signing key's id; a header that names
        another ``kid`` keeps it (a fault a test may want), but the signature is always made
        with ``key``, or the current signing key.
        """
        signer = key or self.signing_key
        full_header = dict(header)  # keeps the caller's member order, which is part of the bytes signed
        full_header.setdefault("alg", ALGORITHM)
        full_header.setdefault("kid", signer.kid)
        signing_input = f"{b64url(compact_json(full_header))}.{b64url(compact_json(claims))}"
        # RS256 is RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 section 3.3).
        signature = signer.private_key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"
