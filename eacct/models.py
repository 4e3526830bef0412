"""Every mapped class, imported once so that `Base.metadata` is complete (alembic, tests)."""

from eacct.db import Base
from eacct.members.models import AccessToken, Member, WechatBinding
from eacct.netdisk.models import (
    AttemptCounter, Chunk, Deletion, Ledger, Netdisk, Pack, SecurityQuestion, Version, VersionManifest,
)
from eacct.share.models import Friendship, Message, MessageRead, Share
from eacct.wechat.models import ServerSecret, WechatDelivery, WechatPageSession, WechatToken

__all__ = [
    "AccessToken", "AttemptCounter", "Base", "Chunk", "Deletion", "Friendship", "Ledger", "Member", "Message",
    "MessageRead", "Netdisk", "Pack", "SecurityQuestion", "Share", "Version", "VersionManifest", "WechatBinding", "WechatDelivery",
    "ServerSecret", "WechatPageSession", "WechatToken",
]
