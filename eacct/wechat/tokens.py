"""WeChat's access token kept in the database, shared by every server process and the CLI.

WeChat issues one access token per official account at a time: a process that fetches a new one retires the
others' after five minutes, so processes that each cached their own kept refreshing in turn. Here the token
lives in `wechat_tokens`, read by everyone, and one refresh runs at a time across processes: a refresher
first claims a short lease on the row (a conditional UPDATE under the row lock — `SELECT … FOR UPDATE` on
PostgreSQL, BEGIN IMMEDIATE on SQLite), fetches from WeChat with no transaction open, then stores the token
and drops the lease. Everyone else waits for that token instead of fetching their own. Tokens are refreshed
`REFRESH_MARGIN` before WeChat's expiry, so a send never carries one about to lapse.

`DatabaseTokenStorage` is wechatpy's own `SessionStorage` interface (plus `refresh`). wechatpy calls it from
the worker threads that send; the database work runs on the event loop that owns the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from wechatpy.session import SessionStorage

from eacct.db import unit_of_work, utcnow
from eacct.wechat.models import WechatToken

__all__ = ["REFRESH_MARGIN", "DatabaseTokenStorage"]

REFRESH_MARGIN = timedelta(minutes=5)
FRESH, CLAIMED, WAIT = "fresh", "claimed", "wait"


class DatabaseTokenStorage(SessionStorage):
    """wechatpy's SessionStorage in the database; `get` only answers values with more than REFRESH_MARGIN
    left, and `refresh` makes sure one process at a time asks WeChat for a new one."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], loop: asyncio.AbstractEventLoop, *,
                 lease_seconds: float = 30.0, poll_seconds: float = 0.05) -> None:
        self.sessions = sessions
        self.loop = loop
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds

    def _run(self, coro):
        # Called from wechatpy's (worker) thread; the engine belongs to the loop.
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=self.lease.total_seconds() * 2)

    # -- SessionStorage --------------------------------------------------------------------------------

    def get(self, key, default=None):
        """The value, if it has more than REFRESH_MARGIN to live (else `default`: time to refresh)."""
        value, expires_at = self._run(self._read(key))
        if value is None or (expires_at is not None and expires_at - REFRESH_MARGIN <= utcnow()):
            return default
        return value

    def set(self, key, value, ttl=None):
        """Store a value (wechatpy does this with a token it just fetched) and end the refresh lease."""
        self._run(self._write(key, value, ttl))

    def delete(self, key):
        self._run(self._delete(key))

    # -- one refresh at a time -------------------------------------------------------------------------

    def refresh(self, key: str, fetch: Callable[[], object], stale: str | None = None) -> None:
        """Make sure a usable value is stored: fetch one (through `fetch`, which calls `set`) unless another
        process holds the lease — then wait for its value — or has already replaced `stale` (the value WeChat
        refused, or None when the value is merely near its expiry)."""
        deadline = time.monotonic() + self.lease.total_seconds() * 2
        while True:
            outcome = self._run(self._claim(key, stale))
            if outcome == FRESH:
                return
            if outcome == CLAIMED:
                try:
                    fetch()
                finally:
                    self._run(self._release(key))
                return
            if time.monotonic() > deadline:
                raise TimeoutError("another process has been fetching the WeChat access token for too long")
            time.sleep(self.poll_seconds)

    async def _read(self, key: str) -> tuple[str | None, datetime | None]:
        async with unit_of_work(self.sessions, read_only=True) as session:
            row = (await session.execute(
                select(WechatToken.value, WechatToken.expires_at).where(WechatToken.key == key))).first()
        return (row[0], row[1]) if row else (None, None)

    async def _write(self, key: str, value: str, ttl: int | None) -> None:
        now = utcnow()
        expires_at = now + timedelta(seconds=int(ttl)) if ttl else None
        async with unit_of_work(self.sessions) as session:
            await self._ensure_row(session, key)
            row = await session.get(WechatToken, key, with_for_update=True)
            row.value, row.expires_at, row.refreshed_at, row.lease_until = value, expires_at, now, None

    async def _delete(self, key: str) -> None:
        async with unit_of_work(self.sessions) as session:
            await session.execute(delete(WechatToken).where(WechatToken.key == key))

    async def _claim(self, key: str, stale: str | None) -> str:
        now = utcnow()
        async with unit_of_work(self.sessions) as session:
            await self._ensure_row(session, key)
            row = await session.get(WechatToken, key, with_for_update=True, populate_existing=True)
            usable = row.value is not None and (row.expires_at is None or row.expires_at - REFRESH_MARGIN > now)
            if usable and row.value != stale:
                return FRESH
            if row.lease_until is not None and row.lease_until > now:
                return WAIT
            row.lease_until = now + self.lease
            return CLAIMED

    async def _release(self, key: str) -> None:
        async with unit_of_work(self.sessions) as session:
            row = await session.get(WechatToken, key, with_for_update=True)
            if row is not None:
                row.lease_until = None

    @staticmethod
    async def _ensure_row(session: AsyncSession, key: str) -> None:
        insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
        await session.execute(insert(WechatToken).values(key=key).on_conflict_do_nothing(index_elements=["key"]))
