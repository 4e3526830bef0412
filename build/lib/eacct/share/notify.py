"""One notification interface for share events, so new channels (WeChat templates) plug in without touching
share code. Notifications are written inside the caller's transaction: they happen exactly when the event does.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from eacct.db import utcnow
from eacct.share.models import Message

__all__ = ["MessageCenterNotifier", "Notifier", "PERSONAL", "SYSTEM"]

PERSONAL = "personal"
SYSTEM = "system"


class Notifier(Protocol):
    """Tells members about events that concern them."""

    async def personal(self, session: AsyncSession, member_id: int, title: str, body: str) -> None:
        """A personal message to one member."""


class MessageCenterNotifier:
    """Writes personal messages into the message center (消息中心)."""

    def __init__(self, extra_channels: list[Notifier] | None = None) -> None:
        self.extra_channels = list(extra_channels or [])

    async def personal(self, session: AsyncSession, member_id: int, title: str, body: str) -> None:
        session.add(Message(member_id=member_id, kind=PERSONAL, title=title, body=body, created_at=utcnow()))
        for channel in self.extra_channels:
            await channel.personal(session, member_id, title, body)
