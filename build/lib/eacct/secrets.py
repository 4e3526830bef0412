"""Hashing of everything secret: passwords and answers with argon2id, bearer tokens with sha256."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from eacct.config import Settings

__all__ = ["hash_secret", "hash_token", "new_token", "normalise_answer", "verify_secret"]


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def _for(settings: Settings) -> PasswordHasher:
    return _hasher(settings.argon2_time_cost, settings.argon2_memory_kib)


async def hash_secret(settings: Settings, secret: str) -> str:
    """An argon2id hash of `secret`, computed off the event loop."""
    return await asyncio.to_thread(_for(settings).hash, secret)


async def verify_secret(settings: Settings, stored_hash: str, secret: str) -> bool:
    """Whether `secret` matches `stored_hash`; a malformed hash simply does not match."""

    def _verify() -> bool:
        try:
            return _for(settings).verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(_verify)


def normalise_answer(answer: str) -> str:
    """Security answers match trimmed and case-folded (API.md)."""
    return " ".join(answer.split()).casefold()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """How a bearer token is stored and looked up: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
