"""Member accounts and their bearer tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from eacct.db import Base, UtcDateTime, utcnow

__all__ = ["AccessToken", "Member", "MemberRef", "Profile", "TokenKind", "WechatBinding"]


class Member(Base):
    """A person with a member account (会员账号), password and nickname (昵称)."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    nickname: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class TokenKind:
    """What a bearer token proves: the member (session) or the member and their netdisk password."""

    SESSION = "session"
    NETDISK = "netdisk"


class AccessToken(Base):
    """A bearer token, stored as its sha256 only; `expires_at` slides forward on use for netdisk tokens."""

    __tablename__ = "access_tokens"
    __table_args__ = (
        Index("ix_access_tokens_member_id", "member_id"),
        Index("ix_access_tokens_session_token_hash", "session_token_hash"),
    )

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Netdisk tokens: the session token they were unlocked from (its hash); logout ends them with it.
    session_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)


class WechatBinding(Base):
    """A WeChat follower (openid) bound to one member; one openid ↔ one member."""

    __tablename__ = "wechat_bindings"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), unique=True)
    bound_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True, slots=True)
class MemberRef:
    """A member as listings name them (an uploader, an owner): id, account and nickname, read without the ORM."""

    id: int
    account: str
    nickname: str

    @classmethod
    def of(cls, member: Member) -> MemberRef:
        """The reference to a loaded member row."""
        return cls(member.id, member.account, member.nickname)


@dataclass(frozen=True, slots=True)
class Profile:
    """A member as they see themselves (会员信息): who they are, and whether WeChat and the netdisk are set up."""

    id: int
    account: str
    nickname: str
    wechat_bound: bool
    netdisk_opened: bool
