"""Friends, shares and the message center."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from eacct.db import Base, UtcDateTime, utcnow
from eacct.formats import chinese_date
from eacct.members.models import Member, MemberRef
from eacct.netdisk.models import YearVersions

__all__ = [
    "CloudShareLedger", "FriendInfo", "Friendship", "Inbox", "Message", "MessageInfo", "MessageRead", "Share", "ShareInfo",
    "ShareOverview", "SharedLedger", "SharerInfo", "share_notice",
]


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


# --------------------------------------------------------------- what the share service answers with


def share_notice(since: date, nickname: str) -> str:
    """该账套于YYYY年M月D日开始共享给<昵称>."""
    return f"该账套于{chinese_date(since)}开始共享给{nickname}"


@dataclass(frozen=True, slots=True)
class FriendInfo:
    """A member in my friend list, and since when."""

    id: int
    account: str
    nickname: str
    added_at: datetime

    @classmethod
    def of(cls, member: Member, added_at: datetime) -> FriendInfo:
        """The friend `member`, added at `added_at`."""
        return cls(member.id, member.account, member.nickname, added_at)


@dataclass(frozen=True, slots=True)
class ShareInfo:
    """An active share of a whole ledger from its owner to one friend."""

    share_id: str
    ledger_id: str
    ledger_name: str
    owner: Member
    recipient: Member
    since: date

    @property
    def notice(self) -> str:
        """The sentence the guide shows once a ledger is shared."""
        return share_notice(self.since, self.recipient.nickname)


@dataclass(frozen=True, slots=True)
class SharedLedger:
    """One of my ledgers in 共享列表, with the friends it is shared with."""

    ledger_id: str
    name: str
    recipients: list[ShareInfo]


@dataclass(frozen=True, slots=True)
class ShareOverview:
    """共享列表: how many ledgers are shared with how many friends, and per ledger its recipients."""

    ledger_count: int
    friend_count: int
    ledgers: list[SharedLedger]


@dataclass(frozen=True, slots=True)
class CloudShareLedger:
    """A ledger shared with me: its years and their versions."""

    ledger_id: str
    name: str
    since: date
    years: list[YearVersions]


@dataclass(frozen=True, slots=True)
class SharerInfo:
    """我的云共享: one sharer and the ledgers they share with me."""

    member: MemberRef
    ledgers: list[CloudShareLedger]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """A message as one member sees it (read or not is theirs)."""

    id: int
    kind: str
    title: str
    body: str
    created_at: datetime
    read: bool


@dataclass(frozen=True, slots=True)
class Inbox:
    """消息中心: the messages asked for, newest first, and how many are unread in all."""

    unread_count: int
    messages: list[MessageInfo]
