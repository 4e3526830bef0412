"""Every mapped class, imported once so that `Base.metadata` is complete (alembic, tests)."""

from eacct.db import Base
from eacct.members.models import AccessToken, Member, WechatBinding
from eacct.netdisk.models import (
    Chunk, Deletion, Ledger, Netdisk, Pack, SecurityQuestion, UploadLease, Version, VersionManifest,
)
from eacct.share.models import Friendship, Message, MessageRead, Share
from eacct.throttle import AttemptCounter
from eacct.wechat.models import ServerSecret, WechatPageSession, WechatToken

__all__ = [
    "AccessToken", "AttemptCounter", "Base", "Chunk", "Deletion", "Friendship", "Ledger", "Member", "Message",
    "MessageRead", "Netdisk", "Pack", "SecurityQuestion", "Share", "Version", "VersionManifest", "WechatBinding",
    "ServerSecret", "UploadLease", "WechatPageSession", "WechatToken",
]
