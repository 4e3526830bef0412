"""Hashing of everything secret: passwords and answers with argon2id, bearer tokens with sha256."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from eacct import errors
from eacct.config import Settings
from eacct.db import in_writing_unit

__all__ = ["PasswordHashing", "hash_secret", "hash_token", "new_token", "normalise_answer", "verify_secret"]

T = TypeVar("T")

# The PasswordHashing whose place (`reserve`) or slot (`slot`) the current task already holds.
_reserved: ContextVar["PasswordHashing | None"] = ContextVar("eacct_hashing_reserved", default=None)
_holding: ContextVar["PasswordHashing | None"] = ContextVar("eacct_hashing_holding", default=None)


class PasswordHashing:
    """Bounds argon2 work to the cores: at most `slots` (default: the cores less one) hashes run at once (in `executor`, off the
    event loop), at most `queue` more wait for a slot, and the rest are shed with 503 busy at once.

    One per application (an app dependency); argon2 is CPU- and memory-bound, so more parallel hashes than
    cores only make every request slower and let a login flood starve the rest of the service."""

    def __init__(self, slots: int | None = None, queue: int | None = None, retry_after: int = 1,
                 executor: Executor | None = None) -> None:
        """`executor`: where the hashes run (the server's low-priority bulk pool); None, the loop's default one."""
        # One core is left to the event loop (every other request) unless the machine has only one.
        self.slots = max(1, slots or (os.cpu_count() or 1) - 1)
        self.executor = executor
        self.queue = self.slots * 4 if queue is None else queue
        self.retry_after = retry_after
        self._semaphore = asyncio.Semaphore(self.slots)
        self._admitted = 0

    @asynccontextmanager
    async def reserve(self) -> AsyncIterator[None]:
        """Hold a place (running or waiting) for this task's hashes, or raise Busy at once. A login reserves
        before any database work, so a flood is shed before it costs anything; nested use is free."""
        if _reserved.get() is self:
            yield
            return
        if self._admitted >= self.slots + self.queue:
            raise errors.Busy(retry_after=self.retry_after)
        self._admitted += 1
        token = _reserved.set(self)
        try:
            yield
        finally:
            _reserved.reset(token)
            self._admitted -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Reserve a place, then hold one of the slots for this task (its hashes run in it). A login holds
        it for its short database work too, so a flood keeps no more than `slots` transactions busy."""
        async with self.reserve():
            if _holding.get() is self:
                yield
                return
            async with self._semaphore:
                token = _holding.set(self)
                try:
                    yield
                finally:
                    _holding.reset(token)

    async def run(self, work: Callable[[], T]) -> T:
        """Run `work` (a blocking argon2 call) in the executor once a slot is free; Busy when the queue is full."""
        async with self.slot():
            return await asyncio.get_running_loop().run_in_executor(self.executor, work)


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)


def _for(settings: Settings) -> PasswordHasher:
    return _hasher(settings.argon2_time_cost, settings.argon2_memory_kib)


async def _off_loop(hashing: PasswordHashing | None, work: Callable[[], T]) -> T:
    if in_writing_unit():
        # It would hold the write lock (SQLite: the process's write turn) for the whole hash, and deadlock when
        # it waits for a hashing slot that a login holds while waiting for its own turn to write.
        raise RuntimeError("argon2 inside a writing unit of work: hash before the transaction begins")
    # Without a PasswordHashing (command-line tools: one hash at a time) there is nothing to bound.
    return await (hashing.run(work) if hashing is not None else asyncio.to_thread(work))


async def hash_secret(settings: Settings, secret: str, hashing: PasswordHashing | None = None) -> str:
    """An argon2id hash of `secret`, computed off the event loop (bounded by `hashing` when given)."""
    return await _off_loop(hashing, lambda: _for(settings).hash(secret))


async def verify_secret(settings: Settings, stored_hash: str, secret: str, hashing: PasswordHashing | None = None) -> bool:
    """Whether `secret` matches `stored_hash`; a malformed hash simply does not match."""

    def _verify() -> bool:
        try:
            return _for(settings).verify(stored_hash, secret)
        except (VerificationError, InvalidHashError):
            return False

    return await _off_loop(hashing, _verify)


def normalise_answer(answer: str) -> str:
    """Security answers match trimmed and case-folded (API.md)."""
    return " ".join(answer.split()).casefold()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """How a bearer token is stored and looked up: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
