"""What the WeChat callback remembers: deliveries already handled (WeChat retries a slow answer)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from eacct.db import Base, UtcDateTime, utcnow

__all__ = ["WechatDelivery"]


class WechatDelivery(Base):
    """One message or event WeChat delivered (MsgId, or FromUserName+CreateTime for events)."""

    __tablename__ = "wechat_deliveries"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
