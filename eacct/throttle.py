"""Failure counters and lockouts kept in the database, so several server processes agree on them.

A guarded action (netdisk password, security answers, adding friends) has a key. Failures in a row are
counted; from the threshold on, each failure locks the key for a period that doubles with every further
failure (up to a cap). Success clears the count; where a success is cheap to come by (adding friends), the
count runs in a fixed window instead. Counters are written in their own short transaction,
so that a refused request, whose own transaction rolls back, still leaves its failure counted.

Where a check is expensive (argon2), the attempt is *claimed* before it is evaluated: `claim` counts it as a
failure (and starts the lockout it would start) in a transaction the caller commits before verifying, and a
success then clears or refunds it. So parallel guesses cannot all pass the lock check before any is counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from eacct import errors
from eacct.db import Base, UtcDateTime, dialect_insert, unit_of_work, utcnow
from eacct.formats import BEIJING, iso

__all__ = [
    "AttemptCounter", "Claim", "Policy", "check_not_locked", "claim", "clear", "record_failure", "refund", "with_lockout",
]


class AttemptCounter(Base):
    """Failures in a row for one guarded action (e.g. `netdisk_unlock:42`), shared by every server process."""

    __tablename__ = "attempt_counters"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

KEY_LENGTH = 100  # AttemptCounter.key; longer keys (a long account plus an address) are cut, not refused


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
    """Add one to the counter atomically and return the new count: one upsert, so a concurrent `clear`
    deleting the row between an insert and an update cannot leave this attempt uncounted."""
    failures, started = AttemptCounter.failures, AttemptCounter.window_started_at
    if window is not None:
        # A counting window that has run out starts again from zero.
        expired = started <= now - window
        values = {"failures": case((expired, 1), else_=failures + 1), "window_started_at": case((expired, now), else_=started)}
    else:
        values = {"failures": failures + 1}
    statement = (
        dialect_insert(session, AttemptCounter)
        .values(key=key, failures=1, window_started_at=now)
        .on_conflict_do_update(index_elements=["key"], set_=values)
        .returning(AttemptCounter.failures)
    )
    return await session.scalar(statement)


async def record_failure(sessions: async_sessionmaker[AsyncSession], key: str, policy: Policy,
                         window_seconds: int | None = None) -> datetime | None:
    """Count one failure in its own transaction; return the lockout end if this failure set one.

    With `window_seconds`, failures count within a fixed window that starts again once it has run out,
    instead of in a row until a success clears them."""
    key = key[:KEY_LENGTH]
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


@dataclass(frozen=True, slots=True)
class Claim:
    """An attempt counted in advance: its key, and the lockout it started (to undo on a refund)."""

    key: str
    until: datetime | None
    previous_until: datetime | None


async def claim(session: AsyncSession, key: str, policy: Policy, window_seconds: int | None = None) -> Claim:
    """Count one attempt as a failure before it is evaluated; TooManyAttempts while `key` is locked.

    The caller commits `session` before the expensive check, then calls `clear` or `refund` on success.
    The row is updated (and so locked) before the lock is read, so concurrent claims queue on it and each
    sees the count and lockout of the ones before it."""
    key = key[:KEY_LENGTH]
    now = utcnow()
    window = timedelta(seconds=window_seconds) if window_seconds is not None else None
    failures = await _bump(session, key, now, window)
    previous = await session.scalar(select(AttemptCounter.locked_until).where(AttemptCounter.key == key))
    if previous is not None and previous > now:
        # Locked: this attempt is refused, not counted (the caller rolls back or we undo the bump).
        await session.execute(update(AttemptCounter).where(AttemptCounter.key == key)
                              .values(failures=AttemptCounter.failures - 1))
        raise _too_many(previous, now)
    seconds = policy.lock_seconds(failures)
    until = None
    if seconds:
        until = now + timedelta(seconds=seconds)
        await session.execute(update(AttemptCounter).where(AttemptCounter.key == key).values(locked_until=until))
    return Claim(key=key, until=until, previous_until=previous)


async def refund(session: AsyncSession, claimed: Claim) -> None:
    """The claimed attempt did not fail: take it back (and the lockout it started), keeping other failures."""
    await session.execute(
        update(AttemptCounter)
        .where(AttemptCounter.key == claimed.key, AttemptCounter.failures > 0)
        .values(failures=AttemptCounter.failures - 1)
    )
    if claimed.until is not None:
        # Only if no later claim has replaced it with a lockout of its own.
        await session.execute(
            update(AttemptCounter)
            .where(AttemptCounter.key == claimed.key, AttemptCounter.locked_until == claimed.until)
            .values(locked_until=claimed.previous_until)
        )


async def clear(session: AsyncSession, key: str) -> None:
    """A success: forget the failures."""
    await session.execute(delete(AttemptCounter).where(AttemptCounter.key == key[:KEY_LENGTH]))
