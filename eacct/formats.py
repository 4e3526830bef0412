"""How times and dates are written in answers (API.md: ISO 8601 UTC with `Z`, dates `YYYY-MM-DD`)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

__all__ = ["BEIJING", "chinese_date", "iso"]

# The time zone our members live in: dates shown to them ("开始共享", lockouts) are Beijing dates.
BEIJING = timezone(timedelta(hours=8))


def iso(value: datetime | date | None) -> str | None:
    """`2026-11-22T08:30:00Z` for a time, `2026-11-22` for a date, None for None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


def chinese_date(value: date) -> str:
    """`2026年11月22日`, as the guide writes dates."""
    return f"{value.year}年{value.month}月{value.day}日"
