"""A pool of unique signed Security Event Tokens, one per line, kept in a cache directory.

Signing costs about half a millisecond per token, so tokens are made before any measurement,
in a process pool, and kept for the next run. The pool is thrown away after ``MAX_AGE`` so that
every token's ``iat`` stays well inside the service's ``max_age`` (48 h by default). Each run
uses a fresh Redis, so reusing the pool across runs never turns a token into a duplicate.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.tokens import SigningKey, claims, sign

KID = "bench-kid"
MAX_AGE = 24 * 3600.0
_BATCH = 500


@dataclass
class TokenPool:
    """``count`` tokens in ``path`` (one per line), all signed with ``key``."""

    key: SigningKey
    path: Path
    count: int

    @classmethod
    def open(cls, directory: Path, minimum: int) -> TokenPool:
        """The cached pool in ``directory``, made anew if absent or too old, with at least ``minimum`` tokens."""
        meta_path, key_path, tokens_path = directory / "meta.json", directory / "key.pem", directory / "tokens.txt"
        pool: TokenPool | None = None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if time.time() - float(meta["created"]) < MAX_AGE and meta["kid"] == KID:
                private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                if isinstance(private, rsa.RSAPrivateKey):
                    pool = cls(SigningKey(KID, private), tokens_path, _count_lines(tokens_path))
        except (OSError, ValueError, KeyError):
            pool = None
        if pool is None:
            directory.mkdir(parents=True, exist_ok=True)
            for stale in (meta_path, key_path, tokens_path):
                stale.unlink(missing_ok=True)
            key = SigningKey.generate(KID)
            pem = key.private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            key_path.write_bytes(pem)
            tokens_path.write_bytes(b"")
            meta_path.write_text(json.dumps({"created": time.time(), "kid": KID}), encoding="utf-8")
            pool = cls(key, tokens_path, 0)
        pool.ensure(minimum)
        return pool

    def ensure(self, total: int) -> float:
        """Sign and append tokens until the pool holds ``total``; returns the seconds it took."""
        missing = total - self.count
        if missing <= 0:
            return 0.0
        started = time.perf_counter()
        pem = self.key.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        batches = [(pem, min(_BATCH, missing - start)) for start in range(0, missing, _BATCH)]
        # spawn, not fork: the caller may already run threads (the JWKS server).
        context = multiprocessing.get_context("spawn")
        with (
            ProcessPoolExecutor(max_workers=os.cpu_count() or 1, mp_context=context) as executor,
            self.path.open("a", encoding="ascii") as out,
        ):
            for tokens in executor.map(_sign_batch, batches):
                out.write("".join(token + "\n" for token in tokens))
        self.count = total
        return time.perf_counter() - started

    def read(self, first: int, count: int) -> list[str]:
        """Tokens ``first`` to ``first + count - 1``."""
        return read_tokens(self.path, first, count)


def read_tokens(path: Path, first: int, count: int) -> list[str]:
    """Lines ``first`` to ``first + count - 1`` of a token file."""
    with path.open(encoding="ascii") as lines:
        return [line.rstrip("\n") for index, line in enumerate(lines) if first <= index < first + count]


def _sign_batch(job: tuple[bytes, int]) -> list[str]:
    pem, count = job
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise TypeError("the pool's key is not an RSA key")
    key = SigningKey(KID, private)
    return [sign(claims(), key) for _ in range(count)]


def _count_lines(path: Path) -> int:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise ValueError(f"{path} ends in a partial line")  # an interrupted run: start over
    return data.count(b"\n")
