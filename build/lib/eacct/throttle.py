"""Failure counters and lockouts kept in the database, so several server processes agree on them.

A guarded action (netdisk password, security answers, adding friends) has a key. Failures in a row are
counted; from the threshold on, each failure locks the key for a period that doubles with every further
failure (up to a cap). Success clears the count; where a success is cheap to come by (adding friends), the
count runs in a fixed window instead. Counters are written in their own short transaction,
so that a refused request, whose own transaction rolls back, still leaves its failure counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.db import unit_of_work, utcnow
from eacct.formats import iso
from eacct.netdisk.models import AttemptCounter

__all__ = ["Policy", "check_not_locked", "clear", "record_failure", "with_lockout"]

BEIJING = timezone(timedelta(hours=8))


@dataclass(frozen=True, slots=True)
class Policy:
    """How many failures are free, and how long the first lockout lasts (then doubling, up to `max_seconds`)."""

    free_failures: int
    base_seconds: int
    max_seconds: int

    def lock_seconds(self, failures: int) -> int:
        """The lockout after `failures` failures in a row; 0 while they are free."""
        if failures < self.free_failures:
            return 0
        return min(self.max_seconds, self.base_seconds * 2 ** min(failures - self.free_failures, 30))


def _until_text(until: datetime) -> str:
    # People read Beijing time; the field `locked_until` carries the exact UTC instant.
    return until.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _too_many(until: datetime, now: datetime) -> errors.TooManyAttempts:
    retry_after = max(1, math.ceil((until - now).total_seconds()))
    return errors.TooManyAttempts(
        f"错误次数过多，已暂时锁定，请于北京时间 {_until_text(until)} 之后再试（约 {retry_after} 秒）",
        retry_after=retry_after,
        locked_until=iso(until),
    )


def with_lockout(error: errors.DomainError, until: datetime | None) -> errors.DomainError:
    """The refusal for a failure; when that failure started a lockout, it says until when."""
    if until is not None:
        error.message = f"{error.message}；错误次数过多，已锁定至北京时间 {_until_text(until)}"
        error.extra["locked_until"] = iso(until)
    return error


async def check_not_locked(session: AsyncSession, key: str) -> None:
    """Raise TooManyAttempts (with Retry-After) while `key` is locked."""
    now = utcnow()
    until = await session.scalar(select(AttemptCounter.locked_until).where(AttemptCounter.key == key))
    if until is not None and until > now:
        raise _too_many(until, now)


async def _bump(session: AsyncSession, key: str, now: datetime, window: timedelta | None) -> int:
    """Add one to the counter atomically (insert or update) and return the new count."""
    dialect = session.bind.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(
        insert(AttemptCounter)
        .values(key=key, failures=0, window_started_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    if window is not None:
        # A counting window that has run out starts again from zero.
        await session.execute(
            update(AttemptCounter)
            .where(AttemptCounter.key == key, AttemptCounter.window_started_at <= now - window)
            .values(failures=0, window_started_at=now)
        )
    return await session.scalar(
        update(AttemptCounter)
        .where(AttemptCounter.key == key)
        .values(failures=AttemptCounter.failures + 1)
        .returning(AttemptCounter.failures)
    )


async def record_failure(sessions: async_sessionmaker[AsyncSession], key: str, policy: Policy,
                         window_seconds: int | None = None) -> datetime | None:
    """Count one failure in its own transaction; return the lockout end if this failure set one.

    With `window_seconds`, failures count within a fixed window that starts again once it has run out,
    instead of in a row until a success clears them."""
    now = utcnow()
    window = timedelta(seconds=window_seconds) if window_seconds is not None else None
    async with unit_of_work(sessions) as session:
        failures = await _bump(session, key, now, window)
        seconds = policy.lock_seconds(failures)
        if not seconds:
            return None
        until = now + timedelta(seconds=seconds)
        await session.execute(update(AttemptCounter).where(AttemptCounter.key == key).values(locked_until=until))
        return until


async def clear(session: AsyncSession, key: str) -> None:
    """A success: forget the failures."""
    await session.execute(delete(AttemptCounter).where(AttemptCounter.key == key))
