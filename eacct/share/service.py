"""Friends, shares, the recipient's cloud share (我的云共享) and the message center.

Every share change of one owner runs under that owner's lock (their netdisk row), the same lock an upload's
commit and a ledger deletion take; so a share racing a delete, or a cancel racing a recipient's upload,
always ends in one of the two orders, never in between.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date

from sqlalchemy import and_, bindparam, delete, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors, throttle
from eacct.config import Settings
from eacct.db import unit_of_work, utcnow
from eacct.formats import BEIJING
from eacct.members.models import Member, MemberRef
from eacct.netdisk import service as netdisk
from eacct.netdisk import versions
from eacct.netdisk.downloads import Download, open_download
from eacct.netdisk.upload_sessions import UploadPath
from eacct.netdisk.store import IncomingVersion
from eacct.storage import BlobStore
from eacct.netdisk.models import Ledger, Version, VersionInfo
from eacct.netdisk.hooks import NetdiskHooks
from eacct.share.access import ledger_for_share, send_recipient_to_share
from eacct.share.models import (
    CloudShareLedger, FriendInfo, Friendship, Inbox, Message, MessageInfo, MessageRead, Share, ShareInfo, ShareOverview,
    SharedLedger, SharerInfo, share_notice,
)
from eacct.share.notify import SYSTEM, Notifier

__all__ = [
    "add_friend", "broadcast", "register", "cancel_share", "cloud_shares", "create_shares", "end_shares_of_ledger",
    "list_friends", "list_messages", "list_shares", "mark_read", "remove_friend", "share_download", "share_missing_chunks", "share_notice",
    "share_upload", "share_upload_path", "share_version",
]

SHARE_ID_LENGTH = 32  # share ids are uuid4 hex; anything longer names no share


def today_in_china() -> date:
    """The calendar date our users live in, for "开始共享" dates."""
    return utcnow().astimezone(BEIJING).date()


# -------------------------------------------------------------------------------------------- friends


async def _insert_once(session: AsyncSession, row: object) -> bool:
    """Insert a row keyed by its primary key; False (and nothing changed) if a concurrent request inserted the
    same key first. The savepoint keeps the surrounding transaction usable after the duplicate-key error."""
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


async def add_friend(sessions: async_sessionmaker[AsyncSession], settings: Settings, member_id: int, account: str,
                     nickname: str) -> tuple[FriendInfo, bool]:
    """Add a friend by account **and** nickname; any mismatch is the same `member_not_found`, and failed
    attempts are throttled per member, so accounts cannot be probed. Returns (friend, newly added).

    Failures count within a fixed window and a success does not clear them: otherwise a prober could reset
    the count between probes by adding (and removing) an account of their own."""
    key = f"add_friend:{member_id}"
    async with unit_of_work(sessions) as session:
        await throttle.check_not_locked(session, key)
        me = await session.get(Member, member_id)
        if account == me.account:
            raise errors.CannotAddSelf()
        friend = await session.scalar(select(Member).where(Member.account == account))
        if friend is not None and friend.nickname == nickname.strip():
            existing = await session.get(Friendship, (member_id, friend.id))
            if existing is not None:
                return FriendInfo.of(friend, existing.added_at), False
            friendship = Friendship(member_id=member_id, friend_id=friend.id, added_at=utcnow())
            if not await _insert_once(session, friendship):
                # The same friend added by a concurrent request (a double click): adding twice is harmless.
                existing = await session.scalar(select(Friendship).where(
                    Friendship.member_id == member_id, Friendship.friend_id == friend.id))
                return FriendInfo.of(friend, existing.added_at), False
            return FriendInfo.of(friend, friendship.added_at), True
    policy = throttle.Policy(settings.friend_attempts_per_window, settings.friend_attempt_window_seconds,
                             settings.friend_attempt_window_seconds)
    until = await throttle.record_failure(sessions, key, policy, window_seconds=settings.friend_attempt_window_seconds)
    raise throttle.with_lockout(errors.MemberNotFound(), until)


async def list_friends(session: AsyncSession, member_id: int) -> list[FriendInfo]:
    """我的好友, in the order they were added."""
    rows = await session.execute(
        select(Member, Friendship.added_at)
        .join(Friendship, Friendship.friend_id == Member.id)
        .where(Friendship.member_id == member_id)
        .order_by(Friendship.added_at, Member.id)
    )
    return [FriendInfo.of(member, added_at) for member, added_at in rows.all()]


async def remove_friend(session: AsyncSession, notifier: Notifier, member_id: int, friend_id: int) -> None:
    """Remove a friend; the shares I gave them end with it."""
    await versions.lock_owner_if_opened(session, member_id)  # first: two removals at once then find it in turn
    friendship = await session.get(Friendship, (member_id, friend_id))
    if friendship is None:
        raise errors.NotFound("该会员不在您的好友列表中")
    shares = await session.scalars(
        select(Share).where(Share.owner_id == member_id, Share.recipient_id == friend_id, Share.cancelled_at.is_(None))
    )
    for share in shares:
        await _end_share(session, notifier, share)
    removed = await session.execute(
        delete(Friendship).where(Friendship.member_id == member_id, Friendship.friend_id == friend_id)
    )
    if removed.rowcount != 1:  # removed meanwhile by a request that held no lock (a member without a netdisk)
        raise errors.NotFound("该会员不在您的好友列表中")


# --------------------------------------------------------------------------------------------- shares


async def _share_info(session: AsyncSession, share: Share, ledger_name: str | None = None) -> ShareInfo:
    owner = await session.get(Member, share.owner_id)
    recipient = await session.get(Member, share.recipient_id)
    if ledger_name is None:
        ledger = await session.get(Ledger, share.ledger_id)
        ledger_name = ledger.name if ledger else ""
    return ShareInfo(share_id=share.id, ledger_id=share.ledger_id, ledger_name=ledger_name, owner=owner,
                     recipient=recipient, since=share.since)


async def create_shares(session: AsyncSession, notifier: Notifier, owner_id: int, ledger_id: str,
                        friend_ids: list[int]) -> list[ShareInfo]:
    """共享给好友: share a ledger (all its years) with friends; only friends may be chosen. A friend who
    already has it keeps their share (and its date)."""
    if not friend_ids:
        raise errors.Invalid("请在好友列表中选中要共享的好友")
    await versions.lock_owner(session, owner_id)
    ledger = await session.get(Ledger, ledger_id)
    if ledger is None or ledger.owner_id != owner_id:
        raise errors.NotFound("云备份中没有这个账套，请先在 e会计 软件中上传云备份")
    wanted = list(dict.fromkeys(friend_ids))
    friends = set(await session.scalars(
        select(Friendship.friend_id).where(Friendship.member_id == owner_id, Friendship.friend_id.in_(wanted))
    ))
    strangers = [friend_id for friend_id in wanted if friend_id not in friends]
    if strangers:
        raise errors.NotAFriend(not_friends=strangers)
    owner = await session.get(Member, owner_id)
    views = []
    for friend_id in wanted:
        share = await session.scalar(
            select(Share).where(Share.ledger_id == ledger_id, Share.recipient_id == friend_id,
                                Share.cancelled_at.is_(None))
        )
        if share is None:
            share = Share(id=uuid.uuid4().hex, ledger_id=ledger_id, owner_id=owner_id, recipient_id=friend_id,
                          since=today_in_china(), created_at=utcnow())
            session.add(share)
            await session.flush()
            await notifier.personal(
                session, friend_id, "新的共享账套",
                f"{owner.nickname}（{owner.account}）将账套 {ledger.name} 共享给您，请在 e会计【云共享】-【我的云共享】中下载",
            )
        views.append(await _share_info(session, share, ledger.name))
    return views


async def list_shares(session: AsyncSession, owner_id: int) -> ShareOverview:
    """共享列表: how many ledgers are shared with how many friends, and per ledger its recipients."""
    rows = (await session.execute(
        select(Share, Ledger.name)
        .join(Ledger, Ledger.id == Share.ledger_id)
        .where(Share.owner_id == owner_id, Share.cancelled_at.is_(None))
        .order_by(Ledger.name, Ledger.id, Share.created_at)
    )).all()
    ledgers: dict[str, SharedLedger] = {}
    for share, name in rows:
        entry = ledgers.setdefault(share.ledger_id, SharedLedger(share.ledger_id, name, []))
        entry.recipients.append(await _share_info(session, share, name))
    friends = {share.recipient_id for share, _ in rows}
    return ShareOverview(ledger_count=len(ledgers), friend_count=len(friends), ledgers=list(ledgers.values()))


async def _end_share(session: AsyncSession, notifier: Notifier, share: Share, reason: str = "") -> None:
    share.cancelled_at = utcnow()
    owner = await session.get(Member, share.owner_id)
    ledger = await session.get(Ledger, share.ledger_id)
    name = ledger.name if ledger else share.ledger_id
    await notifier.personal(session, share.recipient_id, "共享已取消",
                            f"{owner.nickname}（{owner.account}）已取消共享账套 {name}{reason}")


async def cancel_share(session: AsyncSession, notifier: Notifier, owner_id: int, share_id: str) -> ShareInfo:
    """取消共享: the recipient loses access at once (listing, download and upload); returns the share that ended."""
    if not share_id or len(share_id) > SHARE_ID_LENGTH:  # names no share: no lock taken, nothing looked up
        raise errors.NotFound("没有这个共享")
    await versions.lock_owner_if_opened(session, owner_id)
    share = await session.get(Share, share_id)
    if share is None or share.owner_id != owner_id or share.cancelled_at is not None:
        raise errors.NotFound("没有这个共享")
    ended = await _share_info(session, share)
    await _end_share(session, notifier, share)
    return ended


def register(hooks: NetdiskHooks, notifier: Notifier) -> None:
    """Take part in the netdisk's rules: recipients are sent to cloud share, and a deleted ledger's shares end."""
    hooks.non_owner_checks.append(send_recipient_to_share)

    async def end_shares(session: AsyncSession, ledger: Ledger) -> None:
        await end_shares_of_ledger(session, notifier, ledger)

    hooks.ledger_deleted.append(end_shares)


async def end_shares_of_ledger(session: AsyncSession, notifier: Notifier, ledger: Ledger) -> None:
    """A deleted ledger's shares end (the caller holds the owner's lock)."""
    shares = await session.scalars(select(Share).where(Share.ledger_id == ledger.id, Share.cancelled_at.is_(None)))
    for share in shares:
        await _end_share(session, notifier, share, "（共享人已删除该账套）")


# ----------------------------------------------------------------------------------- the recipient


# 我的云共享 is read on every visit of the desktop dialog: a Core statement built once (see netdisk's listings).
_SHARES, _LEDGERS, _OWNERS = Share.__table__, Ledger.__table__, Member.__table__
_SHARED_WITH = (
    select(_SHARES.c.since, _LEDGERS.c.id, _LEDGERS.c.name, _OWNERS.c.id, _OWNERS.c.account, _OWNERS.c.nickname)
    .select_from(_SHARES.join(_LEDGERS, _LEDGERS.c.id == _SHARES.c.ledger_id)
                 .join(_OWNERS, _OWNERS.c.id == _SHARES.c.owner_id))
    .where(_SHARES.c.recipient_id == bindparam("recipient_id"), _SHARES.c.cancelled_at.is_(None))
    .order_by(_OWNERS.c.account, _LEDGERS.c.name, _LEDGERS.c.id)
)


async def cloud_shares(session: AsyncSession, member_id: int) -> list[SharerInfo]:
    """我的云共享: sharers → their ledgers shared with me → years → versions (newest first)."""
    rows = (await session.execute(_SHARED_WITH, {"recipient_id": member_id})).all()
    sharers: dict[int, SharerInfo] = {}
    versions_by_ledger = await netdisk.versions_of_ledgers(session, list({row[1] for row in rows}))
    for since, ledger_id, name, owner_id, owner_account, owner_nickname in rows:
        entry = sharers.setdefault(owner_id, SharerInfo(MemberRef(owner_id, owner_account, owner_nickname), []))
        entry.ledgers.append(CloudShareLedger(ledger_id, name, since, versions_by_ledger[ledger_id]))
    return list(sharers.values())


async def share_version(session: AsyncSession, member_id: int, ledger_id: str, year: int, version_ref: str) -> Version:
    """A version of a ledger shared with me, to download one year at a time."""
    await ledger_for_share(session, member_id, ledger_id)
    return await versions.find_version(session, ledger_id, year, version_ref)


async def share_download(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, member_id: int, ledger_id: str,
                         year: int, version_ref: str) -> Download:
    """A download of a year shared with me; a share cancelled meanwhile ends it (rule 11)."""

    async def find(session: AsyncSession, ref: str) -> Version:
        return await share_version(session, member_id, ledger_id, year, ref)

    return await open_download(sessions, blobs, find, version_ref)


async def share_missing_chunks(session: AsyncSession, member_id: int, ledger_id: str, digests: list[str]) -> list[str]:
    """Before a delta 上传云共享: the chunks the owner's store lacks."""
    ledger, _ = await ledger_for_share(session, member_id, ledger_id)
    return await versions.missing_chunks(session, ledger.owner_id, digests)


async def share_upload_path(sessions: async_sessionmaker[AsyncSession], notifier: Notifier, member_id: int,
                            ledger_id: str) -> UploadPath:
    """上传云共享's path: into the **owner's** backup (and quota), access re-checked at commit, owner told."""
    async with unit_of_work(sessions, read_only=True) as session:
        ledger, _ = await ledger_for_share(session, member_id, ledger_id)
        owner_id = ledger.owner_id

    async def authorize(session: AsyncSession) -> Ledger:
        ledger, _ = await ledger_for_share(session, member_id, ledger_id)
        return ledger

    async def tell_owner(session: AsyncSession, ledger: Ledger, version: Version) -> None:
        uploader = await session.get(Member, member_id)
        remark = f"（备注：{version.remark}）" if version.remark else ""
        await notifier.personal(
            session, ledger.owner_id, "好友上传了新版本",
            f"{uploader.nickname}（{uploader.account}）上传了账套 {ledger.name} {version.year} 年度的新版本{remark}，"
            "请在【云备份】中查看和下载",
        )

    return UploadPath(owner_id, member_id, "share", authorize, tell_owner)


async def share_upload(sessions: async_sessionmaker[AsyncSession], blobs: BlobStore, settings: Settings,
                       notifier: Notifier, member_id: int, claim: IncomingVersion, body: AsyncIterator[bytes],
                       on_accepted=None) -> VersionInfo:
    """上传云共享: the recipient's upload becomes a new version in the **owner's** cloud backup (and quota)."""
    path = await share_upload_path(sessions, notifier, member_id, claim.ledger_id)
    return await versions.upload(sessions, blobs, settings, claim, body, owner_id=path.owner_id, uploader_id=member_id,
                                via="share", authorize=path.authorize, after_commit=path.after_commit,
                                on_accepted=on_accepted)


# ----------------------------------------------------------------------------------- message center


# The message center is read often: its statements are over the tables and built once per filter (Core, no
# ORM objects), the member a bound parameter.
_MESSAGES, _READS = Message.__table__, MessageRead.__table__


def _visible_to(member_id):
    return or_(_MESSAGES.c.member_id == member_id, and_(_MESSAGES.c.member_id.is_(None), _MESSAGES.c.kind == SYSTEM))


def _read_by(member_id):
    return exists().where(_READS.c.message_id == _MESSAGES.c.id, _READS.c.member_id == member_id)


def _inbox_statement(status: str, by_kind: bool):
    """The listing for a read/unread filter ('' for both) and, with `by_kind`, a kinds parameter."""
    member, columns = bindparam("member_id"), _MESSAGES.c
    query = (select(columns.id, columns.kind, columns.title, columns.body, columns.created_at,
                    _read_by(member).label("read"))
             .where(_visible_to(member)))
    if by_kind:
        query = query.where(columns.kind.in_(bindparam("kinds", expanding=True)))
    if status == "read":
        query = query.where(_read_by(member))
    elif status == "unread":
        query = query.where(~_read_by(member))
    return query.order_by(columns.created_at.desc(), columns.id.desc())


_INBOX = {(status, by_kind): _inbox_statement(status, by_kind) for status in ("", "read", "unread")
          for by_kind in (False, True)}
_UNREAD_COUNT = (select(func.count()).select_from(_MESSAGES)
                 .where(_visible_to(bindparam("member_id")), ~_read_by(bindparam("member_id"))))


async def list_messages(session: AsyncSession, member_id: int, statuses: set[str], kinds: set[str]) -> Inbox:
    """消息中心: newest first, filtered by read/unread and system/personal; with the unread count."""
    status = next(iter(statuses)) if len(statuses) == 1 else ""
    parameters = {"member_id": member_id, "kinds": sorted(kinds)} if kinds else {"member_id": member_id}
    rows = (await session.execute(_INBOX[status, bool(kinds)], parameters)).all()
    unread = await session.scalar(_UNREAD_COUNT, {"member_id": member_id})
    messages = [MessageInfo(id, kind, title, body, created_at, bool(read)) for id, kind, title, body, created_at, read in rows]
    return Inbox(unread_count=unread, messages=messages)


async def mark_read(session: AsyncSession, member_id: int, message_id: int) -> None:
    """Mark a message read (again is harmless); messages are never deleted."""
    message = await session.scalar(select(Message).where(Message.id == message_id, _visible_to(member_id)))
    if message is None:
        raise errors.NotFound("没有这条消息")
    if await session.get(MessageRead, (message_id, member_id)) is None:
        await _insert_once(session, MessageRead(message_id=message_id, member_id=member_id, read_at=utcnow()))


async def broadcast(session: AsyncSession, title: str, body: str) -> MessageInfo:
    """A system message from the operator to every member."""
    title, body = title.strip(), body.strip()
    if not title or not body or len(title) > 200:
        raise errors.Invalid("系统消息需要标题（200 字以内）和正文")
    message = Message(member_id=None, kind=SYSTEM, title=title, body=body, created_at=utcnow())
    session.add(message)
    await session.flush()
    return MessageInfo(message.id, SYSTEM, title, body, message.created_at, read=False)
