"""The WeChat official account's rules: binding a follower to a member, and what the bot answers.

Answers are plain text built from the same services the REST API uses (friends, shares, netdisk), so the
phone and the desktop program always agree. Followers who are not bound are told how to bind and nothing
else (rule 3). Answers only read: the callback runs them in a read-only unit of work, so a follower's message
never queues for SQLite's write lock, and WeChat's redeliveries of a slow answer get the same answer again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors, throttle
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.formats import chinese_date
from eacct.members.models import Member, WechatBinding
from eacct.members.service import claim_login_attempt, verified_member
from eacct.secrets import PasswordHashing
from eacct.netdisk import service as netdisk
from eacct.share import service as share

__all__ = [
    "BIND_LINK_SECONDS", "Incoming", "answer", "answers", "bind", "bind_link_token", "openid_of_bind_token",
]

BIND_LINK_SECONDS = 30 * 60


# ------------------------------------------------------------------------------------------ binding


def _link_key(settings: Settings) -> bytes:
    # Derived, so the signing key is never the WeChat secret itself.
    material = (settings.wechat_secret or settings.wechat_token).encode()
    return hashlib.sha256(b"eacct-wechat-bind:" + material).digest()


def bind_link_token(settings: Settings, openid: str, now: float | None = None) -> str:
    """A short-lived signed token that proves the bot handed this bind link to `openid`."""
    expires = int((now if now is not None else time.time()) + BIND_LINK_SECONDS)
    payload = base64.urlsafe_b64encode(f"{openid}|{expires}".encode()).decode().rstrip("=")
    signature = hmac.new(_link_key(settings), payload.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{payload}.{signature}"


def openid_of_bind_token(settings: Settings, token: str) -> str:
    """The follower a bind token was made for; Forbidden when forged or expired."""
    payload, _, signature = token.partition(".")
    expected = hmac.new(_link_key(settings), payload.encode(), hashlib.sha256).hexdigest()[:32]
    if not payload or not hmac.compare_digest(signature, expected):
        raise errors.Forbidden("绑定链接无效，请在公众号中重新点击【会员中心】")
    try:
        openid, expires = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().rsplit("|", 1)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.Forbidden("绑定链接无效，请在公众号中重新点击【会员中心】") from exc
    if int(expires) < time.time():
        raise errors.Forbidden("绑定链接已过期，请在公众号中重新点击【会员中心】")
    return openid


async def bind(sessions: async_sessionmaker[AsyncSession], settings: Settings, openid: str, account: str,
               password: str, nickname: str, hashing: PasswordHashing | None = None) -> Member:
    """Rule 1: bind a follower to a member by account, password and a nickname of their own (which becomes
    the member's nickname). One openid ↔ one member: binding from a second WeChat moves the binding.

    The attempt is counted before the password is checked, per follower and (like a login) per account."""
    key = f"wechat_bind:{openid}"
    policy = throttle.Policy(settings.lockout_after_failures, settings.lockout_base_seconds,
                             settings.lockout_max_seconds)
    async with unit_of_work(sessions) as session:
        claimed = await throttle.claim(session, key, policy)
        per_account = await claim_login_attempt(session, settings, account)
        candidate = await session.scalar(select(Member).where(Member.account == account))
    member = await verified_member(settings, hashing, candidate, password)
    if member is None:
        until = max((c.until for c in (claimed, per_account) if c.until is not None), default=None)
        raise throttle.with_lockout(errors.BadCredentials(), until)
    async with unit_of_work(sessions) as session:
        member = await session.get(Member, member.id)
        member.nickname = nickname
        await session.execute(
            delete(WechatBinding).where((WechatBinding.openid == openid) | (WechatBinding.member_id == member.id))
        )
        await session.flush()
        session.add(WechatBinding(openid=openid, member_id=member.id, bound_at=utcnow()))
        await throttle.clear(session, key)
        await throttle.clear(session, per_account.key)
    return member


async def bound_member(session: AsyncSession, openid: str) -> Member | None:
    """The member this follower is bound to, if any."""
    return await session.scalar(
        select(Member).join(WechatBinding, WechatBinding.member_id == Member.id).where(WechatBinding.openid == openid)
    )


# ------------------------------------------------------------------------------------------ answers


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a follower sent: a text, a menu click (its key) or an event, from `openid`."""

    openid: str
    kind: str  # text | click | subscribe | other
    content: str = ""


Handler = Callable[[AsyncSession, Settings, str, Member | None], Awaitable[str]]


def _bind_url(settings: Settings, openid: str) -> str:
    base = settings.public_url.rstrip("/")
    return f"{base}/wechat/h5/bind?t={bind_link_token(settings, openid)}"


def how_to_bind(settings: Settings, openid: str) -> str:
    """Rule 3: what an unbound follower is told."""
    return (
        "您还没有绑定 e会计会员账号。请点击下面的链接，输入您激活软件的会员账号、密码和您自己设置的昵称完成绑定"
        f"（链接 30 分钟内有效）：\n{_bind_url(settings, openid)}"
    )


async def _member_center(session, settings, openid, member) -> str:
    if member is None:
        return how_to_bind(settings, openid)
    return (f"您已绑定会员账号 {member.account}（昵称：{member.nickname}）。如需改绑其他账号，请点击："
            f"\n{_bind_url(settings, openid)}")


async def _member_info(session, settings, openid, member) -> str:
    if member is None:
        return how_to_bind(settings, openid)
    return f"会员信息\n会员账号：{member.account}\n昵称：{member.nickname}\n会员ID：{member.id}"


async def _friends(session, settings, openid, member) -> str:
    if member is None:
        return how_to_bind(settings, openid)
    friends = await share.list_friends(session, member.id)
    if not friends:
        return "您还没有好友。添加好友需要好友的 e会计会员账号和昵称。"
    lines = [f"{index}. {friend.nickname}（{friend.account}）" for index, friend in enumerate(friends, 1)]
    return "我的好友\n" + "\n".join(lines)


async def _netdisk_list(session, settings, openid, member) -> str:
    if member is None:
        return how_to_bind(settings, openid)
    ledgers = await netdisk.list_ledgers(session, member.id)
    if not ledgers:
        return ("网盘列表是空白的：您还没有上传过云备份。请登录 e会计 软件上传云备份后，"
                "才能对云备份的账套进行共享操作。")
    status = await netdisk.netdisk_status(session, settings, member.id)
    mib = 1024 * 1024
    lines = [f"{index}. {ledger.name}（{'、'.join(str(y.year) for y in ledger.years)} 年度）"
             for index, ledger in enumerate(ledgers, 1)]
    return (f"网盘列表（已用 {status.used_bytes / mib:.2f} MB，可用 {status.free_bytes / mib:.2f} MB）\n"
            + "\n".join(lines))


async def _share_list(session, settings, openid, member) -> str:
    if member is None:
        return how_to_bind(settings, openid)
    shares = await share.list_shares(session, member.id)
    if not shares.ledgers:
        return "您还没有共享账套给好友。"
    lines = [f"您共享了 {shares.ledger_count} 个账套给 {shares.friend_count} 位好友："]
    for ledger in shares.ledgers:
        lines += [f"· 账套 {ledger.name} 于{chinese_date(r.since)}开始共享给{r.recipient.nickname}" for r in ledger.recipients]
    return "\n".join(lines)


async def _messages(session, settings, openid, member) -> str:
    if member is None:
        return how_to_bind(settings, openid)
    listing = await share.list_messages(session, member.id, set(), set())
    return f"消息中心：您有 {listing.unread_count} 条未读消息。"


async def _help(session, settings, openid, member) -> str:
    return ("欢迎使用 e会计云服务。回复以下文字或点击菜单：\n会员中心 — 绑定会员账号\n会员信息 — 查看账号、昵称和会员ID\n"
            "我的好友 — 好友列表、添加好友\n我的网盘 — 网盘列表、共享给好友\n共享列表 — 我共享的账套\n消息中心 — 我的消息")


@dataclass(frozen=True, slots=True)
class Command:
    """What the bot does for a word or menu key: a short text answer, and the page that does the rest."""

    handler: Handler
    page: str | None = None


# One table for menu keys and text commands: what a follower can ask for, who answers, and which page it opens.
_TABLE: list[tuple[tuple[str, ...], Command]] = [
    (("会员中心", "MEMBER_CENTER", "绑定"), Command(_member_center, "/wx/member")),
    (("会员信息", "MEMBER_INFO"), Command(_member_info, "/wx/info")),
    (("我的好友", "MY_FRIENDS", "添加好友"), Command(_friends, "/wx/friends")),
    (("我的网盘", "网盘列表", "MY_NETDISK"), Command(_netdisk_list, "/wx/netdisk")),
    (("共享列表", "MY_SHARES", "取消共享"), Command(_share_list, "/wx/shares")),
    (("消息中心", "MESSAGES"), Command(_messages, "/wx/messages")),
    (("帮助", "HELP"), Command(_help)),
]
COMMANDS: dict[str, Command] = {word: command for words, command in _TABLE for word in words}


def answers(incoming: Incoming) -> bool:
    """Whether the bot says anything to this (texts, menu clicks and a new follower do; other events not)."""
    return incoming.kind in ("text", "click", "subscribe")


async def answer(session: AsyncSession, settings: Settings, incoming: Incoming) -> str | None:
    """The bot's text reply to a follower, or None when nothing should be said. A bound follower also gets
    the link to the page where the same thing can be done (unbound ones only learn how to bind, rule 3).
    It only reads (handlers included): the same message always gets the same answer."""
    if not answers(incoming):
        return None
    member = await bound_member(session, incoming.openid)
    if incoming.kind == "subscribe":
        return await _help(session, settings, incoming.openid, member)
    command = COMMANDS.get(incoming.content.strip(), COMMANDS["HELP"])
    text = await command.handler(session, settings, incoming.openid, member)
    if member is not None and command.page and settings.public_url:
        text += f"\n点击打开：{settings.public_url.rstrip('/')}{command.page}"
    return text
