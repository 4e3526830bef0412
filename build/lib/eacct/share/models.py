"""Friends, shares and the message center."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from eacct.db import Base, UtcDateTime, utcnow

__all__ = ["Friendship", "Message", "MessageRead", "Share"]


class Friendship(Base):
    """`friend_id` is in `member_id`'s friend list (one direction: my list is mine)."""

    __tablename__ = "friendships"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    friend_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Share(Base):
    """An owner → recipient grant on a whole ledger; active while `cancelled_at` is empty. Kept after
    cancellation (and after the ledger is deleted) as history, so the ledger id is not a foreign key."""

    __tablename__ = "shares"
    __table_args__ = (
        Index("ix_shares_ledger_recipient", "ledger_id", "recipient_id"),
        Index("ix_shares_owner_id", "owner_id"),
        Index("ix_shares_recipient_id", "recipient_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ledger_id: Mapped[str] = mapped_column(String(36))
    owner_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    recipient_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    since: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Message(Base):
    """A message: personal (to `member_id`) or system (to everyone, `member_id` empty). Never deleted."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class MessageRead(Base):
    """That a member has read a message (system messages are shared, so read state is per member)."""

    __tablename__ = "message_reads"

    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    read_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
