"""Versions of a year: the rules every upload answers to and the way in and out of the store.

The rules (Kingdee manual §3.4–3.5 and the e会计 guide): quota is checked from the headers before any body
byte and again exactly inside the commit; at most `max_versions_per_member` versions per member; an upload
naming the version it started from (If-Match) is refused once another landed; retention keeps the newest
`versions_kept_per_year` of a year and never the owner's own last backup; every commit and deletion of an
owner queues on that owner's lock. The store (`netdisk.store`) does the mechanics and calls back into
`UploadRules` inside its commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from sqlalchemy import Row, and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from eacct import errors
from eacct.config import Settings
from eacct.db import unit_of_work
from eacct.members.models import Member
from eacct.netdisk import store
from eacct.netdisk.hooks import NetdiskHooks, ledger_for_backup
from eacct.netdisk.models import Ledger, Netdisk, Version, VersionInfo
from eacct.netdisk.store import IncomingVersion
from eacct.storage import BlobStore
from eacct.text import has_unsafe_characters

__all__ = [
    "UploadRules", "YearCensus", "admission", "admit_claim", "backup_missing_chunks", "backup_upload", "backup_version",
    "check_before_upload", "check_expected_version", "check_version_cap", "clean_ledger_name", "find_version",
    "latest_version", "lock_owner", "lock_owner_if_opened", "missing_chunks", "prune", "upload", "year_census",
]


# The statements every upload and download runs are built once, with parameters: building one and working out its
# cache key costs about as much Python as running it (bench.load --cost: CPU per request).
_LOCK_OWNER = select(Netdisk).where(Netdisk.member_id == bindparam("owner_id")).with_for_update()
_LOCK_OWNER_IF_OPENED = select(Netdisk.member_id).where(Netdisk.member_id == bindparam("owner_id")).with_for_update()
_NETDISK = select(Netdisk).where(Netdisk.member_id == bindparam("owner_id"))
_MEMBER = select(Member).where(Member.id == bindparam("member_id"))
_LATEST_VERSION = (select(Version).where(Version.ledger_id == bindparam("ledger_id"), Version.year == bindparam("year"))
                   .order_by(Version.id.desc()).limit(1))
_VERSION_BY_ID = select(Version).where(Version.public_id == bindparam("public_id"),
                                       Version.ledger_id == bindparam("ledger_id"), Version.year == bindparam("year"))
_HELD = select(func.count().label("held")).where(Version.owner_id == bindparam("owner_id")).subquery()
# Joined to the one-row count, so a year without versions still yields the count (its version columns NULL).
_YEAR_CENSUS = (
    select(_HELD.c.held, Version.id, Version.public_id, Version.size, Version.via, Version.uploaded_by_id)
    .select_from(_HELD.outerjoin(Version, and_(Version.ledger_id == bindparam("ledger_id"),
                                              Version.year == bindparam("year"))))
    .order_by(Version.id.desc())
)


async def lock_owner(session: AsyncSession, owner_id: int) -> Netdisk:
    """Take the owner's write lock (their netdisk row); commits, deletes and share changes of one owner queue here."""
    netdisk = (await session.execute(_LOCK_OWNER, {"owner_id": owner_id})).scalar_one_or_none()
    if netdisk is None:
        raise errors.NotFound("云盘尚未开通")
    return netdisk


async def lock_owner_if_opened(session: AsyncSession, owner_id: int) -> None:
    """Take the owner's write lock when they have a netdisk (without one they own no ledger to race on)."""
    await session.execute(_LOCK_OWNER_IF_OPENED, {"owner_id": owner_id})


async def latest_version(session: AsyncSession, ledger_id: str, year: int) -> Version | None:
    """The newest version of a (ledger, year)."""
    return (await session.execute(_LATEST_VERSION, {"ledger_id": ledger_id, "year": year})).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class YearCensus:
    """What the upload rules read about a (ledger, year): its versions, newest first, as rows of (id, public_id,
    size, via, uploaded_by_id), and how many versions their owner holds in all."""

    versions: list[Row]
    held: int

    @property
    def latest_public_id(self) -> str | None:
        """The newest version's id, or None for a year without versions."""
        return self.versions[0].public_id if self.versions else None


async def year_census(session: AsyncSession, owner_id: int, ledger_id: str, year: int) -> YearCensus:
    """The year's versions and the owner's count in one statement: the commit reads them while SQLite's write lock
    is held, and every statement there is a trip through a busy event loop."""
    rows = (await session.execute(_YEAR_CENSUS, {"owner_id": owner_id, "ledger_id": ledger_id, "year": year})).all()
    return YearCensus([row for row in rows if row.id is not None], rows[0].held)


def clean_ledger_name(name: str) -> str:
    """A ledger name as people see it: trimmed, 1–100 characters, no control characters and nothing that
    could act as a path when the desktop program names a folder after it."""
    name = name.strip()
    if not 1 <= len(name) <= 100 or has_unsafe_characters(name) or "/" in name or "\\" in name or name in (".", ".."):
        raise errors.Invalid("账套名称应为 1 到 100 个字符，不能包含 / \\ 或控制字符")
    return name


def check_expected_version(census: YearCensus, if_match: str | None) -> None:
    """Refuse an upload based on a version that is no longer the newest (rule 16); nothing is lost."""
    if if_match is None:
        return
    current = census.latest_public_id
    if current != if_match:
        extra = {"latest_version_id": current}
        raise errors.VersionConflict(
            "云端已有更新的版本（在您开始修改之后有人上传过），请先下载最新版本再上传；您的数据未被覆盖", **extra
        )


async def check_before_upload(session: AsyncSession, settings: Settings, incoming: IncomingVersion) -> int:
    """Refuse what can be refused from the headers alone, before any body byte; return the free bytes.

    The quota check counts the whole upload as new, less what the current version of this (ledger, year)
    could share with it: a re-upload of a changed ledger is mostly known chunks. The exact count of new
    bytes is enforced again while the body streams, before any byte past the quota is stored.
    """
    netdisk = (await session.execute(_NETDISK, {"owner_id": incoming.owner_id})).scalar_one_or_none()
    if netdisk is None:
        raise errors.NotFound("共享人的云盘尚未开通")
    census = await year_census(session, incoming.owner_id, incoming.ledger_id, incoming.year)
    check_expected_version(census, incoming.if_match)
    check_version_cap(settings, census)
    free = netdisk.quota_bytes - await store.used_bytes(session, incoming.owner_id)
    reusable = census.versions[0].size if census.versions else 0
    # New bytes are at most the body (a delta body carries only new chunks) and at most what the kept
    # version cannot share.
    needed = min(incoming.size - reusable, incoming.body_bytes)
    if needed > free:
        raise errors.QuotaExceeded.for_upload(needed, free)
    return free


def check_version_cap(settings: Settings, census: YearCensus) -> None:
    """At most `max_versions_per_member` versions per member (rule 15), counting what retention will prune."""
    # Retention will prune this year's oldest version when it is full, so such an upload adds nothing.
    after = census.held + 1 - (1 if len(census.versions) >= settings.versions_kept_per_year else 0)
    if after > settings.max_versions_per_member:
        raise errors.TooManyVersions(
            f"云盘中最多保存 {settings.max_versions_per_member} 个版本，已达上限；请先删除不需要的账套或年度",
            limit=settings.max_versions_per_member,
        )


async def prune(session: AsyncSession, settings: Settings, owner_id: int,
                year_versions: list[tuple[int, str, int]]) -> None:
    """Keep the newest N of the year's versions ((id, via, uploaded_by_id), newest first); the one just committed
    (verified) is always among them, and so is the newest the owner uploaded through cloud backup (recipients'
    uploads cannot push it out)."""
    owners_latest = next((version_id for version_id, via, uploader in year_versions
                          if via == "backup" and uploader == owner_id), None)
    stale = [version_id for version_id, _, _ in year_versions[max(settings.versions_kept_per_year, 1):]]
    await store.release_versions(session, owner_id, [version_id for version_id in stale if version_id != owners_latest])


@dataclass
class UploadRules:
    """The rules the store applies inside an upload's commit transaction (see `store.CommitRules`)."""

    settings: Settings
    incoming: IncomingVersion
    # Re-checks that the uploader may still write (a share cancelled meanwhile), creates the ledger on a first
    # upload, and may add rows of its own (a notification).
    admit: Callable[[AsyncSession, Version], Awaitable[None]]
    _netdisk: Netdisk | None = None
    # The year as the owner's lock found it: nothing else changes it before this commit ends.
    _census: YearCensus | None = None

    async def before_insert(self, session: AsyncSession, version: Version) -> None:
        """Lock the owner, then re-check the expected version, the version cap and access."""
        incoming = self.incoming
        self._netdisk = await lock_owner(session, incoming.owner_id)
        self._census = await year_census(session, incoming.owner_id, incoming.ledger_id, incoming.year)
        check_expected_version(self._census, incoming.if_match)
        check_version_cap(self.settings, self._census)
        await self.admit(session, version)

    async def after_insert(self, session: AsyncSession, version: Version, new_bytes: int) -> None:
        """Prune the year to its retention, then refuse the version if the owner is now over quota."""
        year_versions = [(version.id, version.via, version.uploaded_by_id)]
        year_versions += [(row.id, row.via, row.uploaded_by_id) for row in self._census.versions]
        await prune(session, self.settings, self.incoming.owner_id, year_versions)
        used = await store.used_bytes(session, self.incoming.owner_id)
        if used > self._netdisk.quota_bytes:
            raise errors.QuotaExceeded.for_upload(new_bytes, self._netdisk.quota_bytes - (used - new_bytes))


async def upload(
    sessions: async_sessionmaker[AsyncSession],
    blobs: BlobStore,
    settings: Settings,
    claim: IncomingVersion,
    body: AsyncIterator[bytes],
    *,
    owner_id: int,
    uploader_id: int,
    via: str,
    authorize: Callable[[AsyncSession], Awaitable[Ledger | None]],
    after_commit: Callable[[AsyncSession, Ledger, Version], Awaitable[None]] | None = None,
    on_accepted: Callable[[], Awaitable[None]] | None = None,
) -> VersionInfo:
    """Receive a new version of (ledger, year) for `owner_id`; shared by cloud backup and cloud share.

    `authorize` is the path's access rule; it runs before the body is read and again inside the commit,
    so access withdrawn during the transfer (a cancelled share) refuses the version. `on_accepted` runs
    when every check that needs no body byte has passed (the HTTP side answers 100 Continue there).
    """
    incoming, free, uploader = await admit_claim(sessions, settings, claim, owner_id=owner_id,
                                                 uploader_id=uploader_id, via=via, authorize=authorize)
    if on_accepted is not None:
        await on_accepted()
    admit = admission(incoming, authorize, after_commit)
    rules = UploadRules(settings, incoming, admit)
    version = await store.receive_version(sessions, blobs, settings, incoming, body, rules, free_bytes=free)
    return VersionInfo.of(version, uploader)


async def admit_claim(sessions: async_sessionmaker[AsyncSession], settings: Settings, claim: IncomingVersion, *,
                      owner_id: int, uploader_id: int, via: str,
                      authorize: Callable[[AsyncSession], Awaitable[Ledger | None]],
                      ) -> tuple[IncomingVersion, int, Member]:
    """The checks an upload passes before any body byte (access, ledger name, expected version, version cap,
    quota); the claim as the commit will see it, the owner's free bytes, and the uploader (read here rather than
    in a unit of its own after the commit)."""
    if claim.ledger_name is not None:
        claim = replace(claim, ledger_name=clean_ledger_name(claim.ledger_name))
    incoming = replace(claim, owner_id=owner_id, uploader_id=uploader_id, via=via)
    # Reads only (the commit checks all of it again under the owner's lock): no write lock on SQLite.
    async with unit_of_work(sessions, read_only=True) as session:
        ledger = await authorize(session)
        if ledger is None and not claim.ledger_name:
            raise errors.Invalid("首次上传新账套时需要提供账套名称（X-Ledger-Name）")
        free = await check_before_upload(session, settings, incoming)
        uploader = (await session.execute(_MEMBER, {"member_id": uploader_id})).scalar_one_or_none()
    return incoming, free, uploader


def admission(incoming: IncomingVersion, authorize: Callable[[AsyncSession], Awaitable[Ledger | None]],
              after_commit: Callable[[AsyncSession, Ledger, Version], Awaitable[None]] | None = None,
              ) -> Callable[[AsyncSession, Version], Awaitable[None]]:
    """What the commit re-checks about the uploader (`UploadRules.admit`): access still holds, the ledger is
    created on its first upload (renamed by the owner's), then `after_commit` adds its rows."""

    async def admit(session: AsyncSession, version: Version) -> None:
        ledger = await authorize(session)
        if ledger is None and not incoming.ledger_name:
            # The ledger existed when the upload began and was deleted while its bytes arrived.
            raise errors.NotFound("云备份中没有这个账套（上传期间已被删除）")
        if ledger is None:
            ledger = Ledger(id=incoming.ledger_id, owner_id=incoming.owner_id, name=incoming.ledger_name)
            session.add(ledger)
            await session.flush()
        elif incoming.ledger_name and incoming.via == "backup":
            ledger.name = incoming.ledger_name
        if after_commit is not None:
            await after_commit(session, ledger, version)

    return admit


async def missing_chunks(session: AsyncSession, owner_id: int, digests: list[str]) -> list[str]:
    """Which of these chunk digests (hex) the owner's store lacks, in the order asked."""
    wanted = [bytes.fromhex(digest) for digest in dict.fromkeys(digests)]
    have = await store.stored_chunks(session, owner_id, wanted)
    return [digest.hex() for digest in wanted if digest not in have]


async def backup_missing_chunks(session: AsyncSession, hooks: NetdiskHooks, member_id: int, ledger_id: str, digests: list[str]) -> list[str]:
    """Before a delta 上传云备份: the chunks the owner's store lacks."""
    await ledger_for_backup(session, hooks, member_id, ledger_id, may_be_new=True)
    return await missing_chunks(session, member_id, digests)


async def find_version(session: AsyncSession, ledger_id: str, year: int, version_ref: str) -> Version:
    """A version of (ledger, year) by its id, or the newest for `latest`."""
    if version_ref == "latest":
        version = await latest_version(session, ledger_id, year)
    else:
        version = (await session.execute(_VERSION_BY_ID, {"public_id": version_ref, "ledger_id": ledger_id,
                                                           "year": year})).scalar_one_or_none()
    if version is None:
        raise errors.NotFound("没有这个版本")
    return version


async def backup_upload(sessions, blobs: BlobStore, settings: Settings, hooks: NetdiskHooks, member_id: int, claim: IncomingVersion,
                        body: AsyncIterator[bytes], on_accepted=None) -> VersionInfo:
    """上传云备份: the owner uploads a year of their own ledger (a new ledger on its first upload)."""

    async def authorize(session: AsyncSession) -> Ledger | None:
        return await ledger_for_backup(session, hooks, member_id, claim.ledger_id, may_be_new=True)

    return await upload(sessions, blobs, settings, claim, body, owner_id=member_id, uploader_id=member_id,
                        via="backup", authorize=authorize, on_accepted=on_accepted)


async def backup_version(session: AsyncSession, hooks: NetdiskHooks, member_id: int, ledger_id: str, year: int, version_ref: str) -> Version:
    """The owner's version to download (restore = download of any kept version)."""
    await ledger_for_backup(session, hooks, member_id, ledger_id)
    return await find_version(session, ledger_id, year, version_ref)
