"""How times and dates are written in answers (API.md: ISO 8601 UTC with `Z`, dates `YYYY-MM-DD`)."""

from __future__ import annotations

from datetime import date, datetime, timezone

__all__ = ["iso"]


def iso(value: datetime | date | None) -> str | None:
    """`2026-11-22T08:30:00Z` for a time, `2026-11-22` for a date, None for None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()
