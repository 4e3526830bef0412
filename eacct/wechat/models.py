"""What the WeChat side keeps: the H5 pages' visitor sessions, the shared access token and server secrets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from eacct.db import Base, UtcDateTime, utcnow

__all__ = ["ServerSecret", "WechatPageSession", "WechatToken"]


class WechatPageSession(Base):
    """A WeChat visitor of the H5 pages, known by the openid WeChat's OAuth gave; the cookie holds the token,
    the database only its sha256."""

    __tablename__ = "wechat_page_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WechatToken(Base):
    """A value wechatpy keeps in its SessionStorage (the access token), shared by every server process.
    `lease_until` is held by the one process fetching a new value, so only one fetch runs at a time."""

    __tablename__ = "wechat_tokens"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    refreshed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ServerSecret(Base):
    """A random secret the server made for itself (e.g. the key that signs page cookies), the same for every
    process; never shown or logged."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
